//! Taps for `weir tap`: sample records as they leave a stage of a pipeline, for whoever is
//! watching. A stage nobody watches pays one atomic load per batch and copies nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::record::{Record, SourcePosition};

/// The stage that names what a source produced, before any plugin.
pub const SOURCE_STAGE: &str = "source";
/// The stage that names what the sink acknowledged.
pub const SINK_STAGE: &str = "sink";
/// The stage that names what went to the dead-letter destination.
pub const DEAD_LETTER_STAGE: &str = "dead_letter";

/// Records a stage offers watchers per batch; a watcher wants samples, not the whole stream.
const SAMPLES_PER_BATCH: usize = 64;
/// Tapped records buffered per stage; a watcher that falls further behind skips records.
const BUFFERED: usize = 1024;

/// A record as a watcher sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TappedRecord {
    /// The pipeline.
    pub pipeline: String,
    /// The stage it left.
    pub stage: String,
    /// The key, as text.
    pub key: Option<String>,
    /// The value: JSON where it parses, text otherwise.
    pub value: serde_json::Value,
    /// The headers, as text.
    pub headers: BTreeMap<String, String>,
    /// The timestamp (Unix milliseconds).
    pub timestamp: Option<i64>,
    /// Where the record's input sits in its source.
    pub source: Option<TappedPosition>,
}

/// A source position, as a watcher sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TappedPosition {
    /// Topic, table or file.
    pub stream: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl TappedRecord {
    fn new(
        pipeline: &str,
        stage: &str,
        record: &Record,
        position: Option<&SourcePosition>,
    ) -> Self {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        TappedRecord {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            key: record.key.as_deref().map(text),
            value: serde_json::from_slice(&record.value)
                .unwrap_or_else(|_| serde_json::Value::String(text(&record.value))),
            headers: record
                .headers
                .iter()
                .map(|h| (h.key.clone(), text(&h.value)))
                .collect(),
            timestamp: record.timestamp,
            source: position.map(|p| TappedPosition {
                stream: p.stream.to_string(),
                partition: p.partition,
                offset: p.offset,
            }),
        }
    }
}

/// One stage's tap.
#[derive(Debug)]
pub struct TapPoint {
    pipeline: String,
    stage: String,
    watchers: AtomicUsize,
    sender: broadcast::Sender<Arc<TappedRecord>>,
}

impl TapPoint {
    fn new(pipeline: &str, stage: &str) -> Self {
        TapPoint {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            watchers: AtomicUsize::new(0),
            sender: broadcast::channel(BUFFERED).0,
        }
    }

    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// A tap that belongs to no pipeline, so nobody can watch it: what a chain step uses until
    /// it joins a pipeline. One for the whole process, so unobserved steps allocate nothing.
    pub fn unobserved() -> Arc<TapPoint> {
        static UNOBSERVED: std::sync::OnceLock<Arc<TapPoint>> = std::sync::OnceLock::new();
        Arc::clone(UNOBSERVED.get_or_init(|| Arc::new(TapPoint::new("", ""))))
    }

    /// Whether anyone watches: lets a caller skip preparing records for [`TapPoint::offer`].
    pub fn is_watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Offers a batch's records, each with its source position where known, to the watchers, if
    /// any: at most [`SAMPLES_PER_BATCH`] of them.
    pub fn offer<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a Record, Option<&'a SourcePosition>)>,
    ) {
        if !self.is_watched() {
            return;
        }
        for (record, position) in records.into_iter().take(SAMPLES_PER_BATCH) {
            let tapped = TappedRecord::new(&self.pipeline, &self.stage, record, position);
            // No receiver left between the check and now: nothing to do.
            let _ = self.sender.send(Arc::new(tapped));
        }
    }

    /// Starts watching; the watch ends when the returned subscription drops.
    pub fn watch(self: &Arc<Self>) -> TapSubscription {
        let receiver = self.sender.subscribe();
        self.watchers.fetch_add(1, Ordering::Relaxed);
        TapSubscription {
            point: Arc::clone(self),
            receiver,
        }
    }
}

/// A watcher of one stage.
#[derive(Debug)]
pub struct TapSubscription {
    point: Arc<TapPoint>,
    receiver: broadcast::Receiver<Arc<TappedRecord>>,
}

/// What a watcher receives next.
#[derive(Debug)]
pub enum Tapped {
    /// A record.
    Record(Arc<TappedRecord>),
    /// The watcher fell behind and this many records passed unseen.
    Skipped(u64),
    /// The pipeline is gone.
    Closed,
}

impl TapSubscription {
    /// Waits for the next record.
    pub async fn next(&mut self) -> Tapped {
        match self.receiver.recv().await {
            Ok(record) => Tapped::Record(record),
            Err(broadcast::error::RecvError::Lagged(skipped)) => Tapped::Skipped(skipped),
            Err(broadcast::error::RecvError::Closed) => Tapped::Closed,
        }
    }
}

impl Drop for TapSubscription {
    fn drop(&mut self) {
        self.point.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The taps of one pipeline, in stage order: source, each plugin, sink, dead letter.
#[derive(Debug, Default)]
pub struct TapHub {
    pipeline: String,
    points: Mutex<Vec<Arc<TapPoint>>>,
}

impl TapHub {
    /// The taps of `pipeline`.
    pub fn new(pipeline: &str) -> Self {
        TapHub {
            pipeline: pipeline.to_owned(),
            points: Mutex::new(Vec::new()),
        }
    }

    /// The tap of `stage`, created on first use.
    pub fn point(&self, stage: &str) -> Arc<TapPoint> {
        let mut points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(point) = points.iter().find(|p| p.stage == stage) {
            return Arc::clone(point);
        }
        let point = Arc::new(TapPoint::new(&self.pipeline, stage));
        points.push(Arc::clone(&point));
        point
    }

    /// The tap of `stage` if the pipeline has that stage.
    pub fn find(&self, stage: &str) -> Option<Arc<TapPoint>> {
        let points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        points.iter().find(|p| p.stage == stage).cloned()
    }

    /// The stages, in pipeline order.
    pub fn stages(&self) -> Vec<String> {
        let points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        let mut stages: Vec<String> = points.iter().map(|p| p.stage.clone()).collect();
        // Plugins register while the chain is built, before the pipeline registers its ends.
        let rank = |stage: &str| match stage {
            SOURCE_STAGE => 0,
            SINK_STAGE => 2,
            DEAD_LETTER_STAGE => 3,
            _ => 1,
        };
        stages.sort_by_key(|stage| rank(stage));
        stages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record::from_value(format!("{{\"n\":{i}}}")))
            .collect()
    }

    #[tokio::test]
    async fn a_watcher_receives_samples_with_positions() {
        let hub = TapHub::new("p");
        let point = hub.point("user-profile");
        let mut watch = point.watch();
        let positions: Vec<SourcePosition> = (0..3)
            .map(|offset| SourcePosition {
                stream: Arc::from("t"),
                partition: 1,
                offset,
            })
            .collect();
        let batch = records(3);
        point.offer(batch.iter().zip(positions.iter().map(Some)));
        for expected in 0..3 {
            let Tapped::Record(record) = watch.next().await else {
                panic!("expected a record");
            };
            assert_eq!(record.value["n"], expected);
            assert_eq!(record.stage, "user-profile");
            assert_eq!(record.pipeline, "p");
            assert_eq!(record.source.as_ref().map(|s| s.offset), Some(expected));
        }
    }

    #[test]
    fn unwatched_stages_copy_nothing_and_batches_are_sampled() {
        let hub = TapHub::new("p");
        let point = hub.point(SINK_STAGE);
        let unseen = records(10);
        point.offer(unseen.iter().map(|r| (r, None)));
        let mut watch = point.watch();
        let sampled = records(SAMPLES_PER_BATCH * 2);
        point.offer(sampled.iter().map(|r| (r, None)));
        let mut seen = 0;
        while watch.receiver.try_recv().is_ok() {
            seen += 1;
        }
        // The batch offered before anyone watched is not there; the later one is sampled.
        assert_eq!(seen, SAMPLES_PER_BATCH);
        drop(watch);
        assert_eq!(point.watchers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn stages_are_listed_in_pipeline_order() {
        let hub = TapHub::new("p");
        hub.point("user-profile");
        hub.point("pii-mask");
        hub.point(DEAD_LETTER_STAGE);
        hub.point(SINK_STAGE);
        hub.point(SOURCE_STAGE);
        assert_eq!(
            hub.stages(),
            ["source", "user-profile", "pii-mask", "sink", "dead_letter"]
        );
        assert!(hub.find("nope").is_none());
        assert_eq!(hub.point("pii-mask").stage(), "pii-mask");
    }
}
