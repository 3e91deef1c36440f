//! Taps for `weir tap`: sample records as they leave a stage of a pipeline, for whoever is
//! watching. A stage nobody watches pays one atomic load per batch and copies nothing. What a
//! stage buffers for slow watchers is bounded in records and in bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::record::{Record, SourcePosition};

/// The stage that names what a source produced, before any plugin.
pub const SOURCE_STAGE: &str = "source";
/// The stage that names what the sink acknowledged.
pub const SINK_STAGE: &str = "sink";
/// The stage that names what went to the dead-letter destination.
pub const DEAD_LETTER_STAGE: &str = "dead_letter";

/// Records a stage offers watchers per batch; a watcher wants samples, not the whole stream.
/// The rest of a larger batch is left out, and the watchers told how many.
const SAMPLES_PER_BATCH: usize = 64;
/// Tapped records buffered per stage; a watcher that falls further behind skips records.
const BUFFERED: usize = 1024;
/// Bytes of tapped records buffered per stage: with records of up to `max_record_bytes`,
/// [`BUFFERED`] of them alone could hold a gigabyte. Past it, samples are left out (and the
/// watchers told how many) until the watchers catch up.
const BUFFERED_BYTES: usize = 16 << 20;
/// What a tapped record costs beyond the text it stores: the struct, the strings' and the map's
/// headers.
const RECORD_OVERHEAD: usize = 256;

/// A record as a watcher sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TappedRecord {
    /// The pipeline.
    pub pipeline: String,
    /// The stage it left.
    pub stage: String,
    /// The key, as text.
    pub key: Option<String>,
    /// The value: JSON where it parses (as written, on one line), a JSON string of its text
    /// otherwise. Kept as text, so what it costs is its length.
    pub value: Box<serde_json::value::RawValue>,
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
            value: json_text(&record.value),
            headers: record
                .headers
                .iter()
                .map(|h| (h.key.to_string(), text(&h.value)))
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

impl TappedRecord {
    /// Bytes it holds: its text, plus [`RECORD_OVERHEAD`].
    fn stored_bytes(&self) -> usize {
        RECORD_OVERHEAD
            + self.pipeline.len()
            + self.stage.len()
            + self.key.as_ref().map_or(0, String::len)
            + self.value.get().len()
            + self
                .headers
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum::<usize>()
            + self.source.as_ref().map_or(0, |s| s.stream.len())
    }
}

/// `value` as one line of JSON text: itself where it is JSON on one line, compacted where it
/// spans lines (a watcher reads JSON lines), a JSON string of its text otherwise.
fn json_text(value: &[u8]) -> Box<serde_json::value::RawValue> {
    use serde_json::value::RawValue;
    let as_string = || {
        let quoted = serde_json::to_string(&String::from_utf8_lossy(value))
            .unwrap_or_else(|_| "null".to_owned());
        RawValue::from_string(quoted).unwrap_or_else(|_| RawValue::NULL.to_owned())
    };
    match serde_json::from_slice::<Box<RawValue>>(value) {
        Ok(raw) if !raw.get().contains(['\n', '\r']) => raw,
        Ok(_) => serde_json::from_slice::<serde_json::Value>(value)
            .ok()
            .and_then(|tree| serde_json::value::to_raw_value(&tree).ok())
            .unwrap_or_else(as_string),
        Err(_) => as_string(),
    }
}

/// A tapped record while a stage buffers it: its bytes count against the stage's budget until
/// every watcher has taken it or it was overwritten.
#[derive(Debug)]
struct Buffered {
    record: Arc<TappedRecord>,
    bytes: usize,
    budget: Arc<AtomicUsize>,
}

impl Drop for Buffered {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// One stage's tap.
#[derive(Debug)]
pub struct TapPoint {
    pipeline: String,
    stage: String,
    watchers: AtomicUsize,
    sender: broadcast::Sender<Arc<Buffered>>,
    /// Bytes of the records buffered now.
    buffered_bytes: Arc<AtomicUsize>,
    /// Most bytes buffered at once.
    max_bytes: usize,
    /// Records left out while watched, since the stage was created: those past
    /// [`SAMPLES_PER_BATCH`] in a batch, and samples that did not fit the buffer's bytes.
    left_out: AtomicU64,
    /// True once the pipeline ended: its watchers take what is buffered, then hear `Closed`.
    /// The point itself lives on in the pipeline's stats, so its sender never closes.
    closed: watch::Sender<bool>,
}

impl TapPoint {
    fn new(pipeline: &str, stage: &str) -> Self {
        Self::with_budget(pipeline, stage, BUFFERED_BYTES)
    }

    fn with_budget(pipeline: &str, stage: &str, max_bytes: usize) -> Self {
        TapPoint {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            watchers: AtomicUsize::new(0),
            sender: broadcast::channel(BUFFERED).0,
            buffered_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes,
            left_out: AtomicU64::new(0),
            closed: watch::channel(false).0,
        }
    }

    /// Ends every watch of this stage, now and to come, once what is buffered is read.
    fn close(&self) {
        self.closed.send_replace(true);
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
    /// any: at most [`SAMPLES_PER_BATCH`] of them; the rest are counted as left out.
    pub fn offer<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a Record, Option<&'a SourcePosition>)>,
    ) {
        if !self.is_watched() {
            return;
        }
        let mut records = records.into_iter();
        for (record, position) in records.by_ref().take(SAMPLES_PER_BATCH) {
            // The stored text is at least the record's bytes: a record that cannot fit is left
            // out before any copy is made.
            let at_least = RECORD_OVERHEAD
                + record.key.as_ref().map_or(0, |key| key.len())
                + record.value.len()
                + record
                    .headers
                    .iter()
                    .map(|h| h.key.len() + h.value.len())
                    .sum::<usize>();
            if self.buffered_bytes.load(Ordering::Relaxed) + at_least > self.max_bytes {
                self.left_out.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // Then what is stored is charged: escaping can make it several times longer.
            let tapped = TappedRecord::new(&self.pipeline, &self.stage, record, position);
            let bytes = tapped.stored_bytes();
            let before = self.buffered_bytes.fetch_add(bytes, Ordering::Relaxed);
            if before + bytes > self.max_bytes {
                self.buffered_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.left_out.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let buffered = Buffered {
                record: Arc::new(tapped),
                bytes,
                budget: Arc::clone(&self.buffered_bytes),
            };
            // No receiver left between the check and now: the record is dropped, and uncharged.
            let _ = self.sender.send(Arc::new(buffered));
        }
        let beyond = records.count() as u64;
        if beyond > 0 {
            self.left_out.fetch_add(beyond, Ordering::Relaxed);
        }
    }

    /// Starts watching; the watch ends when the returned subscription drops.
    pub fn watch(self: &Arc<Self>) -> TapSubscription {
        let receiver = self.sender.subscribe();
        self.watchers.fetch_add(1, Ordering::Relaxed);
        TapSubscription {
            point: Arc::clone(self),
            receiver,
            closed: self.closed.subscribe(),
            left_out_seen: self.left_out.load(Ordering::Relaxed),
        }
    }
}

/// A watcher of one stage.
#[derive(Debug)]
pub struct TapSubscription {
    point: Arc<TapPoint>,
    receiver: broadcast::Receiver<Arc<Buffered>>,
    /// Whether the pipeline ended.
    closed: watch::Receiver<bool>,
    /// The stage's count of samples left out, as this watcher last reported it.
    left_out_seen: u64,
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
    /// The records the stage left out since this watcher last heard, if any.
    fn newly_left_out(&mut self) -> Option<Tapped> {
        let left_out = self.point.left_out.load(Ordering::Relaxed);
        if left_out > self.left_out_seen {
            let skipped = left_out - self.left_out_seen;
            self.left_out_seen = left_out;
            return Some(Tapped::Skipped(skipped));
        }
        None
    }

    /// Waits for the next record.
    pub async fn next(&mut self) -> Tapped {
        if let Some(skipped) = self.newly_left_out() {
            return skipped;
        }
        let received = tokio::select! {
            // Records offered before the pipeline ended still come first.
            biased;
            received = self.receiver.recv() => Some(received),
            _ = self.closed.wait_for(|closed| *closed) => None,
        };
        let received = match received {
            Some(received) => received,
            None => match self.receiver.try_recv() {
                Ok(buffered) => Ok(buffered),
                Err(broadcast::error::TryRecvError::Lagged(skipped)) => {
                    Err(broadcast::error::RecvError::Lagged(skipped))
                }
                Err(_) => Err(broadcast::error::RecvError::Closed),
            },
        };
        match received {
            Ok(buffered) => Tapped::Record(Arc::clone(&buffered.record)),
            Err(broadcast::error::RecvError::Lagged(skipped)) => Tapped::Skipped(skipped),
            // What the last batches left out is told before the end.
            Err(broadcast::error::RecvError::Closed) => {
                self.newly_left_out().unwrap_or(Tapped::Closed)
            }
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
    /// Set (under `points`' lock) once the pipeline ended.
    closed: AtomicBool,
}

impl TapHub {
    /// The taps of `pipeline`.
    pub fn new(pipeline: &str) -> Self {
        TapHub {
            pipeline: pipeline.to_owned(),
            points: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// The pipeline ended: every watch of its stages ends once it has read what is buffered,
    /// and a later watch ends at once.
    pub fn close(&self) {
        let points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Relaxed);
        for point in points.iter() {
            point.close();
        }
    }

    /// The tap of `stage`, created on first use.
    pub fn point(&self, stage: &str) -> Arc<TapPoint> {
        let mut points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(point) = points.iter().find(|p| p.stage == stage) {
            return Arc::clone(point);
        }
        let point = Arc::new(TapPoint::new(&self.pipeline, stage));
        if self.closed.load(Ordering::Relaxed) {
            point.close();
        }
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
            let value: serde_json::Value = serde_json::from_str(record.value.get()).unwrap();
            assert_eq!(value["n"], expected);
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

    #[tokio::test]
    async fn records_past_a_batchs_samples_are_counted_as_left_out() {
        let hub = TapHub::new("p");
        let point = hub.point(SINK_STAGE);
        let mut watch = point.watch();
        // A batch of the default batch.size.
        let batch = records(256);
        point.offer(batch.iter().map(|r| (r, None)));
        assert_eq!(point.left_out.load(Ordering::Relaxed), 256 - 64);
        let Tapped::Skipped(left_out) = watch.next().await else {
            panic!("expected the count of records left out");
        };
        assert_eq!(left_out, 192);
        for expected in 0..SAMPLES_PER_BATCH {
            let Tapped::Record(record) = watch.next().await else {
                panic!("expected a record");
            };
            let value: serde_json::Value = serde_json::from_str(record.value.get()).unwrap();
            assert_eq!(value["n"], expected);
        }
        // A batch within the samples leaves nothing out.
        point.offer(batch[..SAMPLES_PER_BATCH].iter().map(|r| (r, None)));
        assert_eq!(point.left_out.load(Ordering::Relaxed), 192);
        // Nobody watching: nothing is counted.
        drop(watch);
        point.offer(batch.iter().map(|r| (r, None)));
        assert_eq!(point.left_out.load(Ordering::Relaxed), 192);
    }

    #[tokio::test]
    async fn what_the_last_batch_left_out_is_told_before_the_watch_ends() {
        let hub = TapHub::new("p");
        let point = hub.point(SINK_STAGE);
        let mut watch = point.watch();
        let batch = records(SAMPLES_PER_BATCH + 10);
        point.offer(batch.iter().map(|r| (r, None)));
        hub.close();
        let mut seen = 0;
        let mut skipped = 0;
        loop {
            match watch.next().await {
                Tapped::Record(_) => seen += 1,
                Tapped::Skipped(count) => skipped += count,
                Tapped::Closed => break,
            }
        }
        assert_eq!((seen, skipped), (SAMPLES_PER_BATCH, 10));
    }

    #[tokio::test]
    async fn a_slow_watcher_never_makes_a_stage_buffer_more_than_its_bytes() {
        const BUDGET: usize = 4 << 20;
        let point = Arc::new(TapPoint::with_budget("p", SINK_STAGE, BUDGET));
        let mut watch = point.watch();
        // 1 MiB records, far more of them than the budget holds, and nobody reading.
        let big: Vec<Record> = (0..SAMPLES_PER_BATCH)
            .map(|i| Record::from_value(format!("\"{i}{}\"", "x".repeat(1 << 20))))
            .collect();
        for _ in 0..4 {
            point.offer(big.iter().map(|r| (r, None)));
            assert!(point.buffered_bytes.load(Ordering::Relaxed) <= BUDGET);
        }
        // The watcher hears how many it missed, then reads what fitted.
        let Tapped::Skipped(left_out) = watch.next().await else {
            panic!("expected the count of samples left out");
        };
        // Each stores its value as written, plus the pipeline's and the stage's names.
        let fitted = BUDGET / ((1 << 20) + 2 + RECORD_OVERHEAD + "p".len() + SINK_STAGE.len());
        assert_eq!(left_out as usize, 4 * SAMPLES_PER_BATCH - fitted);
        for _ in 0..fitted {
            assert!(matches!(watch.next().await, Tapped::Record(_)));
        }
        // Everything read: nothing stays charged, and new samples fit again.
        assert_eq!(point.buffered_bytes.load(Ordering::Relaxed), 0);
        point.offer(big.iter().take(1).map(|r| (r, None)));
        assert!(matches!(watch.next().await, Tapped::Record(_)));
    }

    #[tokio::test]
    async fn a_watch_ends_when_the_pipeline_ends_after_what_is_buffered() {
        let hub = TapHub::new("p");
        let point = hub.point(SINK_STAGE);
        let mut watch = point.watch();
        point.offer(records(2).iter().map(|r| (r, None)));
        hub.close();
        for _ in 0..2 {
            assert!(matches!(watch.next().await, Tapped::Record(_)));
        }
        // Bounded, so that a watch that never ends fails the test instead of hanging it.
        let next = |mut watch: TapSubscription| async move {
            tokio::time::timeout(std::time::Duration::from_secs(30), watch.next())
                .await
                .expect("the watch should end with the pipeline")
        };
        assert!(matches!(next(watch).await, Tapped::Closed));
        // The point outlives the pipeline in its stats; a later watch ends at once too.
        assert!(matches!(next(point.watch()).await, Tapped::Closed));
        assert!(matches!(
            next(hub.point("late").watch()).await,
            Tapped::Closed
        ));
    }

    #[tokio::test]
    async fn a_stage_charges_what_it_stores_not_the_records_bytes() {
        // Control bytes take six times their size as a JSON string: 6,000 bytes stored from a
        // 1,000-byte value.
        let escaped = Record::from_value(vec![1u8; 1000]);
        let budget = RECORD_OVERHEAD + 2_000;
        let point = Arc::new(TapPoint::with_budget("p", SINK_STAGE, budget));
        let mut watch = point.watch();
        point.offer([(&escaped, None)]);
        assert_eq!(point.buffered_bytes.load(Ordering::Relaxed), 0);
        assert!(matches!(watch.next().await, Tapped::Skipped(1)));

        // JSON is stored as written, on one line; what is charged is what is held.
        let point = Arc::new(TapPoint::new("p", SINK_STAGE));
        let mut watch = point.watch();
        let pretty = Record::from_value("{\n  \"n\": 1\n}");
        let text = Record::from_value(vec![1u8; 10]);
        point.offer([(&pretty, None), (&text, None)]);
        let stored = [
            "{\"n\":1}".to_owned(),
            format!("\"{}\"", "\\u0001".repeat(10)),
        ];
        let held = |value: &str| RECORD_OVERHEAD + "p".len() + SINK_STAGE.len() + value.len();
        assert_eq!(
            point.buffered_bytes.load(Ordering::Relaxed),
            stored.iter().map(|value| held(value)).sum::<usize>()
        );
        for expected in &stored {
            let Tapped::Record(record) = watch.next().await else {
                panic!("expected a record");
            };
            assert_eq!(record.value.get(), expected);
        }
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
