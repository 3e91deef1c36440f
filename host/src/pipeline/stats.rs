//! Live counters of a pipeline, shared by its stages, and the summary printed when it ends.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters updated by the pipeline's stages.
#[derive(Debug)]
pub struct PipelineStats {
    started: Instant,
    records_in: AtomicU64,
    records_out: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
}

impl Default for PipelineStats {
    fn default() -> Self {
        PipelineStats {
            started: Instant::now(),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }
}

impl PipelineStats {
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
}

/// What a pipeline did: acknowledged counts only, so the numbers are what reached a store.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
