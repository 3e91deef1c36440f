//! Live counters of a pipeline, shared by its stages, the summary printed when it ends, and the
//! detailed status the admin server serves.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::connectors::LagHandle;
use crate::connectors::kafka::{GroupMetrics, GroupStatus};
use crate::observe::{
    DeadLetterSummary, HistogramSnapshot, LatencyHistogram, PartitionLag, PluginStepStats,
    QueueDepth, RateWindow, Rates, RecentDeadLetters, TapHub,
};

/// Counters and gauges updated by the pipeline's stages.
#[derive(Debug)]
pub struct PipelineStats {
    started: Instant,
    records_polled: AtomicU64,
    records_in: AtomicU64,
    records_out: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
    sink_retries: AtomicU64,
    dead_letter_retries: AtomicU64,
    /// Commits of acknowledged positions the source refused for now (retried later).
    commit_failures: AtomicU64,
    /// Polls of the source that failed for now and were retried.
    source_retries: AtomicU64,
    /// From a batch leaving the source to its acknowledgement.
    batch_latency: LatencyHistogram,
    /// One sink write, retries included.
    sink_write_latency: LatencyHistogram,
    /// Where a batch waited or worked, one histogram per [`BatchStage`].
    stage_latency: [LatencyHistogram; BatchStage::ALL.len()],
    transform_queue: QueueDepth,
    sink_queue: QueueDepth,
    queue_capacity: AtomicU64,
    workers: AtomicU64,
    plugins: Mutex<Vec<(String, Arc<PluginStepStats>)>>,
    /// The source's live lag (Kafka sources), read at each look.
    lag: Mutex<Option<LagHandle>>,
    consumer_group: Mutex<Option<Arc<GroupMetrics>>>,
    rates: Mutex<RateWindow>,
    dead_letters: RecentDeadLetters,
    taps: TapHub,
}

impl Default for PipelineStats {
    fn default() -> Self {
        PipelineStats::new("")
    }
}

impl PipelineStats {
    /// Fresh counters for pipeline `name`.
    pub fn new(name: &str) -> Self {
        PipelineStats {
            started: Instant::now(),
            records_polled: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            sink_retries: AtomicU64::new(0),
            dead_letter_retries: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            source_retries: AtomicU64::new(0),
            batch_latency: LatencyHistogram::default(),
            sink_write_latency: LatencyHistogram::default(),
            stage_latency: Default::default(),
            transform_queue: QueueDepth::default(),
            sink_queue: QueueDepth::default(),
            queue_capacity: AtomicU64::new(0),
            workers: AtomicU64::new(0),
            plugins: Mutex::new(Vec::new()),
            lag: Mutex::new(None),
            consumer_group: Mutex::new(None),
            rates: Mutex::new(RateWindow::default()),
            dead_letters: RecentDeadLetters::default(),
            taps: TapHub::new(name),
        }
    }

    /// Counts records the source handed to the pipeline, acknowledged or not.
    pub fn record_polled(&self, records: usize) {
        self.records_polled
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Records the source handed to the pipeline so far; minus `records_in`, what is in flight.
    pub fn records_polled(&self) -> u64 {
        self.records_polled.load(Ordering::Relaxed)
    }

    /// Counts a batch acknowledged by the sink.
    pub fn record_batch(&self, records_in: usize, records_out: usize, dead_lettered: usize) {
        self.records_in
            .fetch_add(records_in as u64, Ordering::Relaxed);
        self.records_out
            .fetch_add(records_out as u64, Ordering::Relaxed);
        self.dead_lettered
            .fetch_add(dead_lettered as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of retried sink writes.
    pub fn sink_retries(&self) -> &AtomicU64 {
        &self.sink_retries
    }

    /// The counter of retried dead-letter writes.
    pub fn dead_letter_retries(&self) -> &AtomicU64 {
        &self.dead_letter_retries
    }

    /// The counter of the source stage's commits that failed for now (a full disk under a
    /// checkpoint, an offsets table that takes no writes): records go on flowing, and a restart
    /// would read them again.
    pub fn commit_failures(&self) -> &AtomicU64 {
        &self.commit_failures
    }

    /// The counter of source polls that failed for now and were retried (an outage, a journal
    /// on a full disk).
    pub fn source_retries(&self) -> &AtomicU64 {
        &self.source_retries
    }

    /// Every failed commit: the source stage's, and a Kafka source's interval commits, which
    /// its consumer sends and answers on its own thread.
    pub fn commit_failures_total(&self) -> u64 {
        let group = self
            .consumer_group
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |metrics| metrics.commit_failures());
        self.commit_failures.load(Ordering::Relaxed) + group
    }

    /// Source-to-acknowledgement time of each batch.
    pub fn batch_latency(&self) -> &LatencyHistogram {
        &self.batch_latency
    }

    /// Time of each sink write, retries included.
    pub fn sink_write_latency(&self) -> &LatencyHistogram {
        &self.sink_write_latency
    }

    /// Time batches spent in `stage`.
    pub fn stage_latency(&self, stage: BatchStage) -> &LatencyHistogram {
        &self.stage_latency[stage as usize]
    }

    /// Batches waiting for a transform worker.
    pub fn transform_queue(&self) -> &QueueDepth {
        &self.transform_queue
    }

    /// Batches waiting for the sink.
    pub fn sink_queue(&self) -> &QueueDepth {
        &self.sink_queue
    }

    /// Sets how many batches the queues hold at most, all workers together.
    pub fn set_queue_capacity(&self, batches: usize) {
        self.queue_capacity.store(batches as u64, Ordering::Relaxed);
    }

    /// Sets how many transform workers run.
    pub fn set_workers(&self, workers: usize) {
        self.workers.store(workers as u64, Ordering::Relaxed);
    }

    /// How many transform workers run.
    pub fn workers(&self) -> u64 {
        self.workers.load(Ordering::Relaxed)
    }

    /// How many batches the queues hold at most.
    pub fn queue_capacity(&self) -> u64 {
        self.queue_capacity.load(Ordering::Relaxed)
    }

    /// The counters of plugin `name`, created on first use; every worker shares them.
    pub fn plugin(&self, name: &str) -> Arc<PluginStepStats> {
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, stats)) = plugins.iter().find(|(n, _)| n == name) {
            return Arc::clone(stats);
        }
        let stats = Arc::new(PluginStepStats::default());
        plugins.push((name.to_owned(), Arc::clone(&stats)));
        stats
    }

    /// Follows the source's consumer lag (Kafka sources): read at every scrape and status
    /// request, so it keeps moving while the source stage waits on a stalled sink.
    pub fn set_lag_handle(&self, lag: LagHandle) {
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = Some(lag);
    }

    /// Follows the source's consumer-group membership (Kafka sources).
    pub fn set_consumer_group(&self, metrics: Arc<GroupMetrics>) {
        *self
            .consumer_group
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(metrics);
    }

    /// The source's consumer-group membership now, for sources that join a group.
    pub fn consumer_group(&self) -> Option<GroupStatus> {
        self.consumer_group
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|metrics| metrics.status())
    }

    /// The source's consumer lag, per partition.
    pub fn lag(&self) -> Vec<PartitionLag> {
        let handle = self.lag.lock().unwrap_or_else(|e| e.into_inner()).clone();
        handle.and_then(|lag| lag.read()).unwrap_or_default()
    }

    /// Samples the counters for the rates; called once a second.
    pub fn sample_rates(&self) {
        let counters = [
            self.records_in.load(Ordering::Relaxed),
            self.records_out.load(Ordering::Relaxed),
            self.dead_lettered.load(Ordering::Relaxed),
        ];
        self.rates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(Instant::now(), counters);
    }

    /// The latest dead letters.
    pub fn dead_letters(&self) -> &RecentDeadLetters {
        &self.dead_letters
    }

    /// The taps of the pipeline's stages.
    pub fn taps(&self) -> &TapHub {
        &self.taps
    }

    /// The counters now.
    pub fn snapshot(&self, pipeline: &str) -> PipelineReport {
        PipelineReport {
            pipeline: pipeline.to_owned(),
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
        }
    }

    /// Everything known about the pipeline now, for the JSON API and the status page.
    pub fn status(&self, pipeline: &str) -> PipelineStatus {
        let lag = self.lag();
        let plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        PipelineStatus {
            report: self.snapshot(pipeline),
            rates: self.rates.lock().unwrap_or_else(|e| e.into_inner()).rates(),
            workers: self.workers(),
            records_polled: self.records_polled(),
            sink_retries: self.sink_retries.load(Ordering::Relaxed),
            dead_letter_retries: self.dead_letter_retries.load(Ordering::Relaxed),
            commit_failures: self.commit_failures_total(),
            source_retries: self.source_retries.load(Ordering::Relaxed),
            queues: QueueStatus {
                transform: self.transform_queue.get(),
                sink: self.sink_queue.get(),
                capacity: self.queue_capacity(),
            },
            lag_total: lag.iter().map(|p| p.lag.max(0)).sum(),
            lag,
            kafka: self.consumer_group(),
            batch_latency: LatencySummary::of(&self.batch_latency.snapshot()),
            sink_write_latency: LatencySummary::of(&self.sink_write_latency.snapshot()),
            plugins: plugins
                .iter()
                .map(|(name, stats)| PluginStatus {
                    name: name.clone(),
                    records_in: stats.records_in.load(Ordering::Relaxed),
                    records_out: stats.records_out.load(Ordering::Relaxed),
                    records_failed: stats.records_failed.load(Ordering::Relaxed),
                    call_latency: LatencySummary::of(&stats.call_latency.snapshot()),
                    cpu_seconds: stats.cpu().as_secs_f64(),
                })
                .collect(),
            stages: self.taps.stages(),
            recent_dead_letters: self.dead_letters.list(),
        }
    }

    /// Each plugin's counters, in chain order.
    pub fn plugin_stats(&self) -> Vec<(String, Arc<PluginStepStats>)> {
        self.plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Each step's name in metrics, the status page and `weir tap`, for a chain of `plugins` in
/// order: the plugin's name, and `NAME#2`, `NAME#3`, ... for a plugin used again (two `filter`
/// steps, each with its own predicate), so that no two steps share their counters or tap.
pub fn step_labels<'a>(plugins: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    plugins
        .into_iter()
        .map(|name| {
            let count = seen.entry(name).or_default();
            *count += 1;
            if *count == 1 {
                name.to_owned()
            } else {
                format!("{name}#{count}")
            }
        })
        .collect()
}

/// The parts of a batch's way from the source to its acknowledgement, besides the sink write
/// itself (`sink_write_latency`): together they say where a slow batch spent its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStage {
    /// From the source returning it to a transform worker taking it.
    TransformQueue,
    /// The transform chain over it.
    Transform,
    /// From the chain's end to the sink starting its write (every write slot busy).
    SinkQueue,
    /// From its write's end to its acknowledgement: earlier batches still writing (batches are
    /// acknowledged in order) and its own dead letters.
    InOrder,
}

impl BatchStage {
    /// Every stage, in a batch's order.
    pub const ALL: [BatchStage; 4] = [
        BatchStage::TransformQueue,
        BatchStage::Transform,
        BatchStage::SinkQueue,
        BatchStage::InOrder,
    ];

    /// The stage's name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStage::TransformQueue => "transform_queue",
            BatchStage::Transform => "transform",
            BatchStage::SinkQueue => "sink_queue",
            BatchStage::InOrder => "in_order",
        }
    }
}

/// A pipeline in detail: counters, rates, queues, lag, latencies, plugins and dead letters.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    /// The counters.
    #[serde(flatten)]
    pub report: PipelineReport,
    /// Records per second over the last ten seconds.
    pub rates: Rates,
    /// Transform workers running.
    pub workers: u64,
    /// Records the source handed to the pipeline, acknowledged or not.
    pub records_polled: u64,
    /// Sink writes retried after a transient failure.
    pub sink_retries: u64,
    /// Dead-letter writes retried after a transient failure.
    pub dead_letter_retries: u64,
    /// Commits of acknowledged source positions that failed for now and were retried.
    pub commit_failures: u64,
    /// Source polls that failed for now and were retried.
    pub source_retries: u64,
    /// Batches waiting between stages.
    pub queues: QueueStatus,
    /// Consumer lag per partition (Kafka sources).
    pub lag: Vec<PartitionLag>,
    /// Consumer lag over every partition.
    pub lag_total: i64,
    /// This process's consumer-group membership (Kafka sources): rebalances, partitions owned,
    /// seconds without partitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<GroupStatus>,
    /// Source-to-acknowledgement time of a batch.
    pub batch_latency: LatencySummary,
    /// Time of a sink write, retries included.
    pub sink_write_latency: LatencySummary,
    /// The plugins, in chain order.
    pub plugins: Vec<PluginStatus>,
    /// The stages `weir tap` can watch.
    pub stages: Vec<String>,
    /// The latest dead letters, newest first.
    pub recent_dead_letters: Vec<DeadLetterSummary>,
}

/// Batches waiting between stages.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueueStatus {
    /// Waiting for a transform worker.
    pub transform: u64,
    /// Waiting for the sink.
    pub sink: u64,
    /// The most both queues hold together.
    pub capacity: u64,
}

/// One plugin of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The plugin.
    pub name: String,
    /// Records given to it.
    pub records_in: u64,
    /// Records it returned.
    pub records_out: u64,
    /// Records it failed.
    pub records_failed: u64,
    /// Time of one call (a batch).
    pub call_latency: LatencySummary,
    /// CPU time of the worker threads inside its calls, record copies in and out included.
    pub cpu_seconds: f64,
}

/// Quantiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    /// Durations recorded.
    pub count: u64,
    /// Median estimate.
    pub p50_ms: Option<f64>,
    /// 99th percentile estimate.
    pub p99_ms: Option<f64>,
}

impl LatencySummary {
    fn of(snapshot: &HistogramSnapshot) -> Self {
        LatencySummary {
            count: snapshot.count,
            p50_ms: snapshot.quantile(0.5).map(|s| s * 1000.0),
            p99_ms: snapshot.quantile(0.99).map(|s| s * 1000.0),
        }
    }
}

/// What a pipeline did: acknowledged counts only, so the numbers are what reached a store.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PipelineReport {
    /// The pipeline.
    pub pipeline: String,
    /// Source records whose batch was acknowledged.
    pub records_in: u64,
    /// Records written to the sink.
    pub records_out: u64,
    /// Records written to the dead-letter destination.
    pub dead_lettered: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Time since the pipeline started.
    #[serde(with = "seconds")]
    pub elapsed: Duration,
}

impl PipelineReport {
    /// Input records per second over the whole run.
    pub fn records_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.records_in as f64 / seconds
        } else {
            0.0
        }
    }
}

impl fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pipeline {}: {} in, {} out, {} dead-lettered, {} batches in {:.2}s ({:.0} records/s)",
            self.pipeline,
            self.records_in,
            self.records_out,
            self.dead_lettered,
            self.batches,
            self.elapsed.as_secs_f64(),
            self.records_per_second()
        )
    }
}

mod seconds {
    //! Durations as fractional seconds in the JSON API.
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod commit_tests {
    use super::*;

    #[test]
    fn failed_commits_count_the_stages_and_a_kafka_consumers_own() {
        let stats = PipelineStats::new("p");
        stats.commit_failures().fetch_add(2, Ordering::Relaxed);
        assert_eq!(stats.commit_failures_total(), 2);
        let group = Arc::new(GroupMetrics::default());
        group.commit_failed();
        stats.set_consumer_group(Arc::clone(&group));
        assert_eq!(stats.commit_failures_total(), 3);
        assert_eq!(stats.status("p").commit_failures, 3);
    }
}

#[cfg(test)]
mod step_label_tests {
    #[test]
    fn a_plugin_used_again_in_a_chain_gets_a_numbered_name() {
        assert_eq!(
            super::step_labels(["filter", "user-profile", "filter", "filter"]),
            ["filter", "user-profile", "filter#2", "filter#3"]
        );
    }
}
