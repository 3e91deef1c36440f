//! What a running pipeline shows about itself: latency histograms, per-plugin counters, queue
//! depths, consumer lag, rates, the latest dead letters and taps. Stages record into these; the
//! admin server renders them as Prometheus metrics, JSON, the status page and `weir tap`.

pub mod dead_letters;
pub mod histogram;
pub mod tap;
pub mod thread_cpu;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use dead_letters::{DeadLetterSummary, RecentDeadLetters};
pub use histogram::{HistogramSnapshot, LatencyHistogram};
pub use tap::{TapHub, TapPoint, TapSubscription, Tapped, TappedRecord};

/// What one plugin of a pipeline did, summed over the pipeline's workers.
#[derive(Debug, Default)]
pub struct PluginStepStats {
    /// Records given to the plugin.
    pub records_in: AtomicU64,
    /// Records the plugin returned.
    pub records_out: AtomicU64,
    /// Records the plugin failed (each one a dead letter).
    pub records_failed: AtomicU64,
    /// Duration of each `transform` call (one batch).
    pub call_latency: LatencyHistogram,
    /// CPU time of the worker threads inside this plugin's calls, in nanoseconds: the guest's
    /// work plus the host's copying of records into and out of it.
    pub cpu_nanos: AtomicU64,
}

impl PluginStepStats {
    /// Counts one call on a batch.
    pub fn record_call(
        &self,
        records_in: usize,
        records_out: usize,
        failed: usize,
        took: Duration,
        cpu: Duration,
    ) {
        self.records_in
            .fetch_add(records_in as u64, Ordering::Relaxed);
        self.records_out
            .fetch_add(records_out as u64, Ordering::Relaxed);
        self.records_failed
            .fetch_add(failed as u64, Ordering::Relaxed);
        self.call_latency.observe(took);
        self.cpu_nanos.fetch_add(
            u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// CPU time spent in this plugin's calls so far.
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed))
    }
}

/// Batches waiting in one of the pipeline's bounded queues.
#[derive(Debug, Default)]
pub struct QueueDepth {
    depth: AtomicI64,
}

impl QueueDepth {
    /// A batch is about to be queued. Counted before the send so the depth never dips below 0.
    pub fn entering(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
    }

    /// A batch left the queue, or never entered it because the send failed.
    pub fn left(&self) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
    }

    /// Batches queued now.
    pub fn get(&self) -> u64 {
        self.depth.load(Ordering::Relaxed).max(0) as u64
    }
}

/// How far a consumer is behind one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Messages on the broker after the last committed offset.
    pub lag: i64,
}

/// Records per second over the last few seconds, from counters sampled once a second.
#[derive(Debug, Default)]
pub struct RateWindow {
    samples: VecDeque<(Instant, [u64; 3])>,
}

/// How far back rates look.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Records per second in, out and dead-lettered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Source records acknowledged per second.
    pub records_in: f64,
    /// Records written to the sink per second.
    pub records_out: f64,
    /// Records dead-lettered per second.
    pub dead_lettered: f64,
}

impl RateWindow {
    /// Adds a sample of the `[in, out, dead-lettered]` counters taken at `now`.
    pub fn sample(&mut self, now: Instant, counters: [u64; 3]) {
        self.samples.push_back((now, counters));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Rates between the oldest and the newest sample; zero until two samples exist.
    pub fn rates(&self) -> Rates {
        let (Some((first_at, first)), Some((last_at, last))) =
            (self.samples.front(), self.samples.back())
        else {
            return Rates::default();
        };
        let seconds = last_at.duration_since(*first_at).as_secs_f64();
        if seconds <= 0.0 {
            return Rates::default();
        }
        let rate = |i: usize| last[i].saturating_sub(first[i]) as f64 / seconds;
        Rates {
            records_in: rate(0),
            records_out: rate(1),
            dead_lettered: rate(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_window_and_forget_older_samples() {
        let start = Instant::now();
        let mut window = RateWindow::default();
        assert_eq!(window.rates(), Rates::default());
        window.sample(start, [0, 0, 0]);
        window.sample(start + Duration::from_secs(2), [200, 180, 20]);
        let rates = window.rates();
        assert_eq!(rates.records_in, 100.0);
        assert_eq!(rates.records_out, 90.0);
        assert_eq!(rates.dead_lettered, 10.0);
        // Idle for longer than the window: the early burst no longer counts.
        window.sample(start + Duration::from_secs(20), [200, 180, 20]);
        window.sample(start + Duration::from_secs(21), [200, 180, 20]);
        assert_eq!(window.rates(), Rates::default());
    }

    #[test]
    fn queue_depth_counts_batches_in_between() {
        let depth = QueueDepth::default();
        depth.entering();
        depth.entering();
        depth.left();
        assert_eq!(depth.get(), 1);
    }
}
