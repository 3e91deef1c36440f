//! The monitor beside a running pipeline: samples its counters for the rates the status page
//! and metrics show, and logs progress, without touching any record.

use std::sync::Arc;
use std::time::Duration;

use crate::pipeline::stats::PipelineStats;

/// How often a running pipeline samples its counters for the rates.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often a running pipeline logs its progress, in samples.
const PROGRESS_EVERY_SAMPLES: u32 = 5;

/// Samples the counters every second for the rates, and logs progress every few seconds.
pub(super) async fn run(pipeline: String, stats: Arc<PipelineStats>) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    let mut last_in = 0;
    let mut samples = 0u32;
    loop {
        ticker.tick().await;
        stats.sample_rates();
        samples += 1;
        if !samples.is_multiple_of(PROGRESS_EVERY_SAMPLES) {
            continue;
        }
        let report = stats.snapshot(&pipeline);
        let period = SAMPLE_EVERY * PROGRESS_EVERY_SAMPLES;
        let rate = (report.records_in - last_in) as f64 / period.as_secs_f64();
        last_in = report.records_in;
        tracing::info!(
            pipeline,
            records_in = report.records_in,
            records_out = report.records_out,
            dead_lettered = report.dead_lettered,
            records_per_second = rate.round() as u64,
            "Progress."
        );
    }
}
