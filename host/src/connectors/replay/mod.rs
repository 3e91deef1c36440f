//! Dead letters as a source, for `weir replay`: a reader per store (`file`, `kafka`,
//! `postgres`) yields the entries present when it opened, and [`DeadLetterSource`] turns the
//! ones a [`Filter`] selects back into the records that failed, so a replay is an ordinary
//! pipeline run (transform stage, sink stage, commits after acknowledgement). A reader's commit
//! is its store's form of progress (a checkpoint file, a consumer group, a `replayed_at`
//! column), so a replay resumes and never replays an entry twice.

mod file;
mod kafka;
mod postgres;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{ConnectorError, SinkConfig, Source};
use crate::record::{Headers, Record, SourcePosition, SourceRecord, headers};

/// Headers the host sets on a dead letter to say why and where it failed; stripped before the
/// record is replayed (the replay sets them again if it fails again).
const FAILURE_HEADERS: [&str; 11] = [
    headers::ERROR,
    headers::RECORD_TIMESTAMP,
    headers::ERROR_KIND,
    headers::PLUGIN,
    headers::STEP,
    headers::PLUGIN_VERSION,
    headers::STAGE,
    headers::PIPELINE,
    headers::SOURCE_STREAM,
    headers::SOURCE_PARTITION,
    headers::SOURCE_OFFSET,
];

/// Where a replayed record first came from (the source coordinates of its dead letter), kept
/// across replays so a record that fails again still names its original source.
pub mod origin {
    /// The original source stream.
    pub const STREAM: &str = "weir.origin.stream";
    /// The original source partition.
    pub const PARTITION: &str = "weir.origin.partition";
    /// The original source offset.
    pub const OFFSET: &str = "weir.origin.offset";
}

/// One dead letter as its store holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The dead letter: the failed record with the reason in headers.
    pub record: Record,
    /// Where it sits in the dead-letter store; what committing it names.
    pub position: SourcePosition,
    /// When it was dead-lettered as far as the store knows (a PostgreSQL row's `created_at`),
    /// else the record's own timestamp (Kafka message time, the file envelope's `timestamp`), in
    /// milliseconds since the Unix epoch.
    pub time: Option<i64>,
}

impl Entry {
    /// A header of the dead letter, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.record.header_str(name)
    }

    /// Whether the entry keeps only an excerpt of its record (a record too large for the
    /// source or the destination): it cannot be replayed, the original is in the source.
    pub fn is_excerpt(&self) -> bool {
        self.record.header(headers::RECORD_SHA256).is_some()
    }

    /// The record to replay: the dead letter without the host's failure headers, with its
    /// original source coordinates under `weir.origin.*` (kept from an earlier replay) and its
    /// own timestamp where the destination had to store the dead letter under another.
    pub fn original(&self) -> Record {
        let mut record = self.record.clone();
        if let Some(timestamp) = record
            .header_str(headers::RECORD_TIMESTAMP)
            .and_then(|text| text.parse::<i64>().ok())
        {
            record.timestamp = Some(timestamp);
        }
        if record.header(origin::STREAM).is_none()
            && let Some(stream) = record.header(headers::SOURCE_STREAM).map(<[u8]>::to_vec)
        {
            record.set_header(origin::STREAM, stream);
            for (from, to) in [
                (headers::SOURCE_PARTITION, origin::PARTITION),
                (headers::SOURCE_OFFSET, origin::OFFSET),
            ] {
                if let Some(value) = record.header(from).map(<[u8]>::to_vec) {
                    record.set_header(to, value);
                }
            }
        }
        record
            .headers
            .retain(|h| !FAILURE_HEADERS.contains(&h.key.as_str()));
        record
    }
}

/// Reads the dead letters of one store, from its committed progress up to what the store held
/// when the reader opened (entries that fail again during the replay land after that, and wait
/// for the next replay).
#[async_trait]
pub trait DeadLetterReader: Send {
    /// Up to `max` further entries; `Ok(None)` once every entry present at opening was read.
    async fn read(&mut self, max: usize) -> Result<Option<Vec<Entry>>, ConnectorError>;

    /// Records that these entries were replayed (sink and dead-letter destination
    /// acknowledged them). `replayed` lists each one; `highest` is the highest position per
    /// stream and partition, covering entries the filter passed over, for stores whose progress
    /// is a position.
    async fn commit(
        &mut self,
        replayed: &[SourcePosition],
        highest: &[SourcePosition],
    ) -> Result<(), ConnectorError>;

    /// Entries between the committed progress and the end, before any filter, when known.
    fn remaining(&self) -> u64;

    /// The store, for messages.
    fn describe(&self) -> String;
}

/// Where a replay keeps its progress, by store: a consumer group for Kafka, a checkpoint file
/// for a file; a PostgreSQL table marks its rows.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// The Kafka consumer group.
    pub group: String,
    /// The checkpoint file of a file dead-letter destination.
    pub checkpoint: std::path::PathBuf,
}

impl Cursor {
    /// The default cursor of a pipeline's replays of `dead_letter`, for the chain step
    /// `pass` (0: the whole chain) so each pass keeps its own progress.
    pub fn default_for(pipeline: &str, dead_letter: &SinkConfig, pass: &str) -> Self {
        let checkpoint = match dead_letter {
            SinkConfig::File(file) => {
                let mut path = file.path.clone().into_os_string();
                path.push(format!(".replay-{pipeline}{pass}.checkpoint"));
                path.into()
            }
            _ => std::path::PathBuf::new(),
        };
        Cursor {
            group: format!("weir-replay-{pipeline}{pass}"),
            checkpoint,
        }
    }
}

/// Opens the reader of a pipeline's dead-letter destination. Only stores a replay can read back
/// and mark are accepted (a `dry_run` changes nothing in the store); `stdout`, `blackhole`
/// and `cassandra` are refused with the reason.
pub async fn open(
    dead_letter: &SinkConfig,
    cursor: &Cursor,
    dry_run: bool,
) -> Result<Box<dyn DeadLetterReader>, ConnectorError> {
    let name = format!("dead-letter destination {}", dead_letter.describe());
    match dead_letter {
        SinkConfig::File(config) => Ok(Box::new(
            file::FileReader::open(config, &cursor.checkpoint).await?,
        )),
        SinkConfig::Kafka(config) => Ok(Box::new(
            kafka::KafkaReader::open(config, &cursor.group).await?,
        )),
        SinkConfig::Postgres(config) => Ok(Box::new(
            postgres::PostgresReader::open(config, dry_run).await?,
        )),
        SinkConfig::Stdout(_) | SinkConfig::Blackhole(_) | SinkConfig::Cassandra(_) => {
            Err(ConnectorError::fatal(
                name,
                "cannot be read back: replay reads dead letters from a file, a Kafka topic or a PostgreSQL table",
            ))
        }
    }
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only entries of this pipeline (`weir.pipeline`); entries without the header match.
    pub pipeline: Option<String>,
    /// Only these error kinds (`bad-record`, `trap`, ...); empty: any.
    pub kinds: Vec<String>,
    /// Only entries failed by these plugins; empty: any.
    pub plugins: Vec<String>,
    /// Only entries failed by plugin versions starting with one of these; empty: any.
    pub versions: Vec<String>,
    /// Only entries at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// Only entries before this time (ms since the epoch).
    pub until: Option<i64>,
    /// Only entries that `step_of` sends to this chain step.
    pub step: Option<usize>,
    /// The pipeline's chain, for [`Filter::step_of`].
    pub chain: Vec<Step>,
}

/// One step of the pipeline's chain, as dead letters name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The plugin (`weir.plugin`).
    pub plugin: String,
    /// The step's label (`weir.step`): the plugin's name, `NAME#2` for its second use
    /// (`pipeline::step_labels`).
    pub label: String,
}

impl Filter {
    /// Where in the chain an entry's record re-enters: a record a plugin failed goes back to the
    /// step that failed it (the steps before it already ran on it), one the sink refused goes
    /// straight to the sink (`chain.len()`), and one the source could not decode, or whose plugin
    /// is no longer in the chain, goes through the whole chain.
    ///
    /// The step is the entry's `weir.step` (`filter#2`: the second use of `filter`). An entry
    /// without it (written before Weir recorded the step), or whose step the chain no longer
    /// has, goes back to the use of its `weir.plugin`; when the chain uses that plugin more than
    /// once, which use failed it is unknown and the error says why it cannot be replayed:
    /// putting it back in at the wrong use would run plugins on it twice, or skip them, and
    /// write the result to the sink as if it were right.
    pub fn step_of(&self, entry: &Entry) -> Result<usize, String> {
        match entry.header(headers::STAGE) {
            Some("sink") => Ok(self.chain.len()),
            Some("plugin") => {
                if let Some(at) = entry
                    .header(headers::STEP)
                    .and_then(|step| self.chain.iter().position(|s| s.label == step))
                {
                    return Ok(at);
                }
                let Some(plugin) = entry.header(headers::PLUGIN) else {
                    return Ok(0);
                };
                let uses: Vec<&str> = self
                    .chain
                    .iter()
                    .filter(|step| step.plugin == plugin)
                    .map(|step| step.label.as_str())
                    .collect();
                match uses.as_slice() {
                    [] => Ok(0),
                    [_] => Ok(self
                        .chain
                        .iter()
                        .position(|step| step.plugin == plugin)
                        .unwrap_or(0)),
                    several => Err(format!(
                        "it was failed by plugin `{plugin}`, which the chain uses {} times ({}), and its `{}` header {}, so which use failed it is unknown; it is not replayed. Its record is in the source at the coordinates in its headers",
                        several.len(),
                        several.join(", "),
                        headers::STEP,
                        match entry.header(headers::STEP) {
                            Some(step) => {
                                format!("names step `{step}`, which the chain no longer has")
                            }
                            None =>
                                "is missing (it was written by a Weir that did not record the step)"
                                    .to_owned(),
                        },
                    )),
                }
            }
            _ => Ok(0),
        }
    }

    /// Whether the replay takes `entry`.
    pub fn matches(&self, entry: &Entry) -> bool {
        let any_of = |wanted: &[String], header: &str, prefix: bool| {
            wanted.is_empty()
                || entry.header(header).is_some_and(|value| {
                    wanted.iter().any(|w| {
                        if prefix {
                            value.starts_with(w.as_str())
                        } else {
                            value == w
                        }
                    })
                })
        };
        self.pipeline
            .as_deref()
            .is_none_or(|name| entry.header(headers::PIPELINE).is_none_or(|p| p == name))
            && any_of(&self.kinds, headers::ERROR_KIND, false)
            && any_of(&self.plugins, headers::PLUGIN, false)
            && any_of(&self.versions, headers::PLUGIN_VERSION, true)
            && self
                .since
                .is_none_or(|since| entry.time.is_some_and(|t| t >= since))
            && self
                .until
                .is_none_or(|until| entry.time.is_some_and(|t| t < until))
            // An entry whose step is unknown falls to the first pass, which reports it.
            && self
                .step
                .is_none_or(|step| self.step_of(entry).unwrap_or(0) == step)
    }
}

/// What a replay has done so far, shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct ReplayCounters {
    /// Entries read from the store.
    pub scanned: AtomicU64,
    /// Entries the filter took and that went into the pipeline.
    pub selected: AtomicU64,
    /// Entries that keep only an excerpt of their record, which cannot be replayed.
    pub excerpts: AtomicU64,
    /// Entries whose step in the chain is unknown ([`Filter::step_of`]), which are not
    /// replayed.
    pub unknown_step: AtomicU64,
}

/// A [`Source`] over a [`DeadLetterReader`]: yields the selected entries' original records.
pub struct DeadLetterSource {
    reader: Box<dyn DeadLetterReader>,
    filter: Filter,
    counters: Arc<ReplayCounters>,
    /// Positions yielded and not yet committed, per stream and partition, in order.
    yielded: BTreeMap<(Arc<str>, i32), VecDeque<i64>>,
}

impl DeadLetterSource {
    /// A source over `reader` taking what `filter` selects.
    pub fn new(
        reader: Box<dyn DeadLetterReader>,
        filter: Filter,
        counters: Arc<ReplayCounters>,
    ) -> Self {
        DeadLetterSource {
            reader,
            filter,
            counters,
            yielded: BTreeMap::new(),
        }
    }

    /// Whether `entry` is replayed, counting excerpts that cannot be.
    fn select(&self, entry: &Entry) -> bool {
        if !self.filter.matches(entry) {
            return false;
        }
        if entry.is_excerpt() {
            self.counters.excerpts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = %self.reader.describe(),
                stream = %entry.position.stream,
                partition = entry.position.partition,
                offset = entry.position.offset,
                "Dead letter keeps only an excerpt of its record; it cannot be replayed. Find the record in the source at the coordinates in its headers."
            );
            return false;
        }
        if let Err(reason) = self.filter.step_of(entry) {
            self.counters.unknown_step.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = %self.reader.describe(),
                stream = %entry.position.stream,
                partition = entry.position.partition,
                offset = entry.position.offset,
                "Dead letter cannot be replayed: {reason}."
            );
            return false;
        }
        true
    }
}

#[async_trait]
impl Source for DeadLetterSource {
    async fn poll_batch(
        &mut self,
        max: usize,
        _linger: Duration,
    ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
        loop {
            let Some(entries) = self.reader.read(max).await? else {
                return Ok(None);
            };
            if entries.is_empty() {
                // Nothing arrived in time: hand back, so the pipeline can commit and see a
                // shutdown.
                return Ok(Some(Vec::new()));
            }
            self.counters
                .scanned
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            let mut batch = Vec::new();
            for entry in entries {
                if !self.select(&entry) {
                    continue;
                }
                self.yielded
                    .entry((Arc::clone(&entry.position.stream), entry.position.partition))
                    .or_default()
                    .push_back(entry.position.offset);
                batch.push(SourceRecord::new(entry.original(), entry.position));
            }
            if !batch.is_empty() {
                self.counters
                    .selected
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                return Ok(Some(batch));
            }
            tokio::task::yield_now().await;
        }
    }

    async fn commit(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        let mut replayed = Vec::new();
        for position in positions {
            let key = (Arc::clone(&position.stream), position.partition);
            if let Some(offsets) = self.yielded.get(&key) {
                replayed.extend(
                    offsets
                        .iter()
                        .take_while(|&&offset| offset <= position.offset)
                        .map(|&offset| SourcePosition {
                            stream: Arc::clone(&position.stream),
                            partition: position.partition,
                            offset,
                        }),
                );
            }
        }
        self.reader.commit(&replayed, positions).await?;
        // Forgotten only once committed: a failed commit is retried with later positions.
        for position in positions {
            let key = (Arc::clone(&position.stream), position.partition);
            if let Some(offsets) = self.yielded.get_mut(&key) {
                while offsets.front().is_some_and(|&o| o <= position.offset) {
                    offsets.pop_front();
                }
            }
        }
        Ok(())
    }
}

/// Decodes a stored header map (the envelope's `headers`: text, or `{"hex": ...}` for bytes
/// that are not text) back into headers.
fn headers_from_json(value: Option<&serde_json::Value>) -> Result<Headers, String> {
    let Some(value) = value else {
        return Ok(Headers::new());
    };
    let map = value
        .as_object()
        .ok_or_else(|| "`headers` is not an object".to_owned())?;
    map.iter()
        .map(|(name, value)| {
            let key = match name.strip_prefix("hex:") {
                Some(hexed) => String::from_utf8(
                    hex::decode(hexed).map_err(|e| format!("header name `{name}`: {e}"))?,
                )
                .map_err(|e| format!("header name `{name}`: {e}"))?,
                None => name.clone(),
            };
            let value = match value {
                serde_json::Value::String(text) => text.clone().into_bytes(),
                other => match other.get("hex").and_then(serde_json::Value::as_str) {
                    Some(hexed) => {
                        hex::decode(hexed).map_err(|e| format!("header `{name}`: {e}"))?
                    }
                    None => return Err(format!("header `{name}` is neither text nor hex")),
                },
            };
            Ok(crate::record::Header {
                key: key.into(),
                value: value.into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of steps by label (`NAME#2` for a second use).
    fn chain(labels: &[&str]) -> Vec<Step> {
        labels
            .iter()
            .map(|label| Step {
                plugin: label.split('#').next().unwrap_or(label).to_owned(),
                label: (*label).to_owned(),
            })
            .collect()
    }

    fn entry(headers: &[(&'static str, &'static str)]) -> Entry {
        let mut record = Record::from_value("{}");
        for &(name, value) in headers {
            record.set_header(name, value);
        }
        Entry {
            record,
            position: SourcePosition {
                stream: Arc::from("dlq"),
                partition: 0,
                offset: 1,
            },
            time: Some(1_000),
        }
    }

    #[test]
    fn the_original_record_loses_the_failure_and_keeps_its_origin() {
        let failed = entry(&[
            ("app", "1"),
            (headers::ERROR, "boom"),
            (headers::ERROR_KIND, "bad-record"),
            (headers::PLUGIN, "p"),
            (headers::STAGE, "plugin"),
            (headers::SOURCE_STREAM, "users"),
            (headers::SOURCE_PARTITION, "3"),
            (headers::SOURCE_OFFSET, "42"),
        ]);
        let original = failed.original();
        let names: Vec<&str> = original.headers.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(
            names,
            ["app", origin::STREAM, origin::PARTITION, origin::OFFSET]
        );
        assert_eq!(original.header_str(origin::OFFSET), Some("42"));
        // A second failure keeps naming the first source.
        let again = entry(&[
            (origin::STREAM, "users"),
            (headers::SOURCE_STREAM, "dlq-topic"),
        ]);
        assert_eq!(again.original().header_str(origin::STREAM), Some("users"));
    }

    #[test]
    fn a_dead_letter_stored_under_another_timestamp_is_replayed_with_its_own() {
        let mut restamped = entry(&[(headers::RECORD_TIMESTAMP, "1000000000000")]);
        restamped.record.timestamp = Some(1_800_000_000_000);
        let original = restamped.original();
        assert_eq!(original.timestamp, Some(1_000_000_000_000));
        assert_eq!(original.header(headers::RECORD_TIMESTAMP), None);
        let mut kept = entry(&[]);
        kept.record.timestamp = Some(5);
        assert_eq!(kept.original().timestamp, Some(5));
    }

    #[test]
    fn filters_and_chain_steps() {
        let filter = Filter {
            pipeline: Some("p1".into()),
            kinds: vec!["bad-record".into()],
            versions: vec!["abc".into()],
            since: Some(500),
            chain: chain(&["first", "second"]),
            ..Filter::default()
        };
        let base = [
            (headers::PIPELINE, "p1"),
            (headers::ERROR_KIND, "bad-record"),
            (headers::PLUGIN, "second"),
            (headers::PLUGIN_VERSION, "abcdef"),
            (headers::STAGE, "plugin"),
        ];
        assert!(filter.matches(&entry(&base)));
        assert_eq!(filter.step_of(&entry(&base)), Ok(1));
        let mut other = base;
        other[0] = (headers::PIPELINE, "p2");
        assert!(!filter.matches(&entry(&other)));
        let mut other = base;
        other[3] = (headers::PLUGIN_VERSION, "0123");
        assert!(!filter.matches(&entry(&other)));
        let mut late = entry(&base);
        late.time = Some(100);
        assert!(!filter.matches(&late));
        assert_eq!(filter.step_of(&entry(&[(headers::STAGE, "sink")])), Ok(2));
        assert_eq!(filter.step_of(&entry(&[(headers::STAGE, "source")])), Ok(0));
        let stepped = Filter {
            step: Some(0),
            ..filter.clone()
        };
        assert!(!stepped.matches(&entry(&base)));
    }

    #[test]
    fn a_plugin_the_chain_repeats_is_re_entered_at_the_use_that_failed() {
        let filter = Filter {
            chain: chain(&["filter", "user-profile", "filter#2"]),
            ..Filter::default()
        };
        let at = |step: Option<&'static str>, plugin: &'static str| {
            let mut given = vec![(headers::STAGE, "plugin"), (headers::PLUGIN, plugin)];
            given.extend(step.map(|step| (headers::STEP, step)));
            filter.step_of(&entry(&given))
        };
        assert_eq!(at(Some("filter"), "filter"), Ok(0));
        assert_eq!(at(Some("filter#2"), "filter"), Ok(2));
        assert_eq!(at(Some("user-profile"), "user-profile"), Ok(1));
        // Without the step (an entry written before it was recorded): by the plugin's name
        // when the chain uses it once, and not at all when it uses it more than once.
        assert_eq!(at(None, "user-profile"), Ok(1));
        let unknown = at(None, "filter").unwrap_err();
        assert!(
            unknown.contains("`filter`")
                && unknown.contains("2 times (filter, filter#2)")
                && unknown.contains("`weir.step` header is missing")
                && unknown.contains("not replayed"),
            "{unknown}"
        );
        // A step the chain no longer has: by the name, as an entry without one.
        assert_eq!(at(Some("user-profile#2"), "user-profile"), Ok(1));
        assert!(
            at(Some("filter#3"), "filter")
                .unwrap_err()
                .contains("names step `filter#3`, which the chain no longer has")
        );
        // A plugin no longer in the chain: the whole chain.
        assert_eq!(at(Some("gone"), "gone"), Ok(0));
        // The step is a failure header: the replayed record does not carry it.
        let failed = entry(&[(headers::STEP, "filter#2"), ("app", "1")]);
        assert_eq!(failed.original().header(headers::STEP), None);
    }

    #[tokio::test]
    async fn an_entry_whose_step_is_unknown_is_counted_and_not_replayed() {
        let entries: Vec<Entry> = [Some("filter#2"), None]
            .into_iter()
            .zip(1..)
            .map(|(step, offset)| {
                let mut given = vec![(headers::STAGE, "plugin"), (headers::PLUGIN, "filter")];
                given.extend(step.map(|step| (headers::STEP, step)));
                let mut entry = entry(&given);
                entry.position.offset = offset;
                entry
            })
            .collect();
        let steps = chain(&["filter", "user-profile", "filter#2"]);
        let counters = Arc::new(ReplayCounters::default());
        let mut taken = Vec::new();
        for step in 0..=3 {
            let mut source = DeadLetterSource::new(
                Box::new(Memory {
                    entries: entries.clone(),
                    committed: Arc::default(),
                }),
                Filter {
                    step: Some(step),
                    chain: steps.clone(),
                    ..Filter::default()
                },
                Arc::clone(&counters),
            );
            while let Some(batch) = source.poll_batch(4, Duration::ZERO).await.unwrap() {
                taken.extend(batch.iter().map(|r| (step, r.position.offset)));
            }
        }
        assert_eq!(
            taken,
            [(2, 1)],
            "only the entry with its step, at that step"
        );
        assert_eq!(counters.unknown_step.load(Ordering::Relaxed), 1);
    }

    /// Each commit's replayed offsets and highest offsets.
    type Commits = Arc<std::sync::Mutex<Vec<(Vec<i64>, Vec<i64>)>>>;

    /// A store of entries in memory that records what was committed.
    struct Memory {
        entries: Vec<Entry>,
        committed: Commits,
    }

    #[async_trait]
    impl DeadLetterReader for Memory {
        async fn read(&mut self, max: usize) -> Result<Option<Vec<Entry>>, ConnectorError> {
            if self.entries.is_empty() {
                return Ok(None);
            }
            let take = max.min(self.entries.len());
            Ok(Some(self.entries.drain(..take).collect()))
        }

        async fn commit(
            &mut self,
            replayed: &[SourcePosition],
            highest: &[SourcePosition],
        ) -> Result<(), ConnectorError> {
            self.committed.lock().unwrap().push((
                replayed.iter().map(|p| p.offset).collect(),
                highest.iter().map(|p| p.offset).collect(),
            ));
            Ok(())
        }

        fn remaining(&self) -> u64 {
            self.entries.len() as u64
        }

        fn describe(&self) -> String {
            "memory".into()
        }
    }

    #[tokio::test]
    async fn the_source_yields_selected_records_and_commits_exactly_those() {
        let entries: Vec<Entry> = (1..=6)
            .map(|offset| {
                let kind = if offset % 2 == 0 {
                    "trap"
                } else {
                    "bad-record"
                };
                let mut entry = entry(&[(headers::ERROR_KIND, kind), ("app", "x")]);
                entry.position.offset = offset;
                if offset == 5 {
                    entry.record.set_header(headers::RECORD_SHA256, "00");
                }
                entry
            })
            .collect();
        let committed = Arc::default();
        let counters = Arc::new(ReplayCounters::default());
        let mut source = DeadLetterSource::new(
            Box::new(Memory {
                entries,
                committed: Arc::clone(&committed),
            }),
            Filter {
                kinds: vec!["bad-record".into()],
                ..Filter::default()
            },
            Arc::clone(&counters),
        );
        let batch = source.poll_batch(4, Duration::ZERO).await.unwrap().unwrap();
        let offsets: Vec<i64> = batch.iter().map(|r| r.position.offset).collect();
        assert_eq!(offsets, [1, 3]);
        assert!(
            batch
                .iter()
                .all(|r| r.record.header(headers::ERROR_KIND).is_none())
        );
        assert_eq!(batch[0].record.header_str("app"), Some("x"));
        // 5 keeps only an excerpt: counted, not replayed; 6 is another kind.
        assert!(
            source
                .poll_batch(4, Duration::ZERO)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(counters.scanned.load(Ordering::Relaxed), 6);
        assert_eq!(counters.selected.load(Ordering::Relaxed), 2);
        assert_eq!(counters.excerpts.load(Ordering::Relaxed), 1);
        let at = |offset| SourcePosition {
            stream: Arc::from("dlq"),
            partition: 0,
            offset,
        };
        source.commit(&[at(1)]).await.unwrap();
        source.commit(&[at(3)]).await.unwrap();
        assert_eq!(
            *committed.lock().unwrap(),
            [(vec![1], vec![1]), (vec![3], vec![3])],
            "each replayed entry is committed once"
        );
    }

    #[test]
    fn stored_headers_decode_text_and_hex() {
        let json = serde_json::json!({
            "a": "text",
            "b": {"hex": "ff00"},
            format!("hex:{}", hex::encode("n\0")): "x",
        });
        let decoded = headers_from_json(Some(&json)).unwrap();
        assert_eq!(decoded.len(), 3);
        assert!(
            decoded
                .iter()
                .any(|h| h.key == "b" && *h.value == [0xff, 0])
        );
        assert!(decoded.iter().any(|h| h.key == "n\0" && *h.value == *b"x"));
        assert!(headers_from_json(Some(&serde_json::json!({"c": 1}))).is_err());
    }
}
