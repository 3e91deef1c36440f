//! A latency histogram that many threads record into without a lock, exposed as a Prometheus
//! histogram and summarised as quantiles for the status page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from half a millisecond (one plugin call on a small
/// batch) to ten seconds (a sink retrying through an outage).
pub const BUCKET_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counts of durations per bucket, plus their sum; the count is the buckets' total.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last slot counts durations above every bound.
    buckets: [AtomicU64; BUCKET_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = BUCKET_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKET_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts now. The count is the sum of the buckets as read, never a separate counter
    /// read a moment later: a duration recorded in between would put the count above the
    /// buckets, and quantiles near 1 into the overflow bucket.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().sum(),
            buckets,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Per bucket of [`BUCKET_BOUNDS`], then the overflow bucket.
    pub buckets: Vec<u64>,
    /// Durations recorded.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// `(upper bound, cumulative count)` per bucket, ending with `+Inf`: Prometheus' `le` series.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                total += count;
                (
                    BUCKET_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY),
                    total,
                )
            })
            .collect()
    }

    /// An estimate of quantile `q` (0 to 1) in seconds, interpolated linearly inside its bucket
    /// as Prometheus' `histogram_quantile` does; `None` before anything was recorded. A quantile
    /// in the overflow bucket is reported as the largest bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, &count) in self.buckets.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let Some(&upper) = BUCKET_BOUNDS.get(i) else {
                    return BUCKET_BOUNDS.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { BUCKET_BOUNDS[i - 1] };
                let within = (rank - below as f64) / count as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += count;
        }
        BUCKET_BOUNDS.last().copied()
    }

    /// The share (0 to 1) of the durations above `bound` seconds, counted by whole buckets: exact
    /// when `bound` is one of [`BUCKET_BOUNDS`], an undercount between two; `None` before
    /// anything was recorded. Unlike a quantile, shares of the same batches in different stages
    /// can be compared: a tail spread thinly over several stages shows in none of their p99s.
    pub fn share_above(&self, bound: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let above: u64 = self
            .buckets
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(i, _)| BUCKET_BOUNDS[i - 1] >= bound)
            .map(|(_, count)| count)
            .sum();
        Some(above as f64 / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_infinity() {
        let histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(30));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert!((snapshot.sum_seconds - 30.0033).abs() < 1e-6);
        let cumulative = snapshot.cumulative();
        assert_eq!(cumulative.first(), Some(&(0.0005, 1)));
        assert_eq!(cumulative[3], (0.005, 2));
        assert_eq!(cumulative[BUCKET_BOUNDS.len() - 1], (10.0, 2));
        assert_eq!(cumulative.last(), Some(&(f64::INFINITY, 3)));
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.snapshot().quantile(0.5), None);
        // 100 durations in (5 ms, 10 ms]: the median sits halfway through that bucket.
        for _ in 0..100 {
            histogram.observe(Duration::from_millis(7));
        }
        let median = histogram.snapshot().quantile(0.5).unwrap();
        assert!((median - 0.0075).abs() < 1e-9, "{median}");
        // One slow outlier moves p99 into the overflow bucket only above 99%.
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert!(snapshot.quantile(0.99).unwrap() <= 0.01);
        assert_eq!(snapshot.quantile(1.0), Some(10.0));
    }

    #[test]
    fn a_snapshot_taken_while_threads_record_counts_what_its_buckets_hold() {
        let histogram = LatencyHistogram::default();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        histogram.observe(Duration::from_millis(7));
                    }
                });
            }
            let mut checked = 0;
            while checked < 20_000 {
                let snapshot = histogram.snapshot();
                if snapshot.count == 0 {
                    continue;
                }
                checked += 1;
                let in_buckets: u64 = snapshot.buckets.iter().sum();
                let slowest = snapshot.quantile(1.0);
                if snapshot.count != in_buckets || slowest > Some(0.01) {
                    stop.store(true, Ordering::Relaxed);
                    panic!(
                        "count {} with {in_buckets} in the buckets; every duration was 7 ms, yet the slowest is {slowest:?}",
                        snapshot.count
                    );
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    #[test]
    fn the_share_above_a_bound_counts_whole_buckets() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.snapshot().share_above(0.01), None);
        for millis in [1, 3, 9, 10, 12, 30, 30, 20_000] {
            histogram.observe(Duration::from_millis(millis));
        }
        let snapshot = histogram.snapshot();
        // 10 ms itself falls in the bucket that ends at 10 ms, so it is not above it.
        assert_eq!(snapshot.share_above(0.01), Some(4.0 / 8.0));
        assert_eq!(snapshot.share_above(0.025), Some(3.0 / 8.0));
        assert_eq!(snapshot.share_above(10.0), Some(1.0 / 8.0));
        assert_eq!(snapshot.share_above(0.0), Some(1.0));
        // Between two bounds, only the buckets wholly above it count: 12 ms is in (10, 25].
        assert_eq!(snapshot.share_above(0.011), Some(3.0 / 8.0));
    }
}
