//! The host's view of records: the record itself, where each one came from (what commits and
//! dead letters need), and what a failed record carries to its dead letter. The plugin
//! contract's generated record type stays inside `runtime/`, which converts at the boundary, so
//! connectors and stages never depend on generated bindings.

mod header;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

pub use header::{Header, HeaderName, Headers};

/// A time as a user writes it, in the unit of [`Record::timestamp`] (milliseconds since the
/// epoch): RFC 3339 with its offset (`2026-12-01T10:00:00Z`), or a number of milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    if let Ok(millis) = trimmed.parse::<i64>() {
        return Ok(millis);
    }
    chrono::DateTime::parse_from_rfc3339(trimmed)
        .map(|time| time.timestamp_millis())
        .map_err(|e| {
            format!("`{text}` is not a time ({e}); give RFC 3339 like 2026-12-01T10:00:00Z, or milliseconds since the epoch")
        })
}

/// A plugin's outputs for one input record: most plugins give one, which is held inline, so a
/// batch's results need no allocation per record to hold them.
pub type Outputs = smallvec::SmallVec<[Record; 1]>;

/// One record of a stream; the same fields as the contract's `record` in wit/plugin.wit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The record's key, used for partitioning and idempotent writes; absent for keyless streams.
    pub key: Option<Bytes>,
    /// The record's payload, usually one UTF-8 JSON document.
    pub value: Bytes,
    /// Headers in the order they were set; a name may repeat.
    pub headers: Headers,
    /// Event time in milliseconds since the Unix epoch, when the source knows it.
    pub timestamp: Option<i64>,
}

/// Names of the headers the host sets. Users match on these downstream, so they are stable.
pub mod headers {
    /// Why a record was dead-lettered.
    pub const ERROR: &str = "weir.error";
    /// The error's kind: bad-record, plugin-failure, trap, timeout.
    pub const ERROR_KIND: &str = "weir.error.kind";
    /// The plugin that failed the record.
    pub const PLUGIN: &str = "weir.plugin";
    /// The chain step that failed the record, as metrics and `weir tap` label it: the plugin's
    /// name, `NAME#2` for its second use in the chain, and so on. Tells apart the uses of a
    /// plugin the chain repeats, so a replay puts the record back in where it failed.
    pub const STEP: &str = "weir.step";
    /// The version (sha256 prefix) of that plugin.
    pub const PLUGIN_VERSION: &str = "weir.plugin.version";
    /// Prefix of the header naming the version of each plugin an output passed through:
    /// `weir.version.user-profile = 090ff39429c0`.
    pub const VERSION_PREFIX: &str = "weir.version.";
    /// The full size of a record whose dead letter keeps only part of it.
    pub const RECORD_BYTES: &str = "weir.record.bytes";
    /// The sha256 of the full value of such a record.
    pub const RECORD_SHA256: &str = "weir.record.sha256";
    /// The timestamp (ms since the Unix epoch) of a record whose dead letter had to be stored
    /// with the time it was written instead, because its destination refused the original.
    pub const RECORD_TIMESTAMP: &str = "weir.record.timestamp";
    /// Where the record failed: `source`, `plugin` or `sink`.
    pub const STAGE: &str = "weir.stage";
    /// The pipeline the record was in.
    pub const PIPELINE: &str = "weir.pipeline";
    /// The source stream (topic, table, file) the record came from.
    pub const SOURCE_STREAM: &str = "weir.source.stream";
    /// The source partition.
    pub const SOURCE_PARTITION: &str = "weir.source.partition";
    /// The source offset (Kafka offset, row id, line number).
    pub const SOURCE_OFFSET: &str = "weir.source.offset";
}

/// Where a record sits in its source: what a commit names and a dead letter reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePosition {
    /// Topic, table or file.
    pub stream: Arc<str>,
    /// Partition within the stream; 0 where the source has none.
    pub partition: i32,
    /// Offset within the partition; increasing.
    pub offset: i64,
}

impl SourcePosition {
    /// The highest position per stream and partition among `positions`: what acknowledging
    /// all of them commits.
    pub fn highest<'a>(positions: impl IntoIterator<Item = &'a SourcePosition>) -> Vec<Self> {
        let mut highest: BTreeMap<(&Arc<str>, i32), i64> = BTreeMap::new();
        for position in positions {
            let offset = highest
                .entry((&position.stream, position.partition))
                .or_insert(position.offset);
            *offset = (*offset).max(position.offset);
        }
        highest
            .into_iter()
            .map(|((stream, partition), offset)| SourcePosition {
                stream: Arc::clone(stream),
                partition,
                offset,
            })
            .collect()
    }
}

/// A record as a source produced it.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// The record.
    pub record: Record,
    /// Where it came from.
    pub position: SourcePosition,
    /// Why the source could not decode it, if it could not: such a record goes straight to the
    /// dead-letter destination with this reason.
    pub malformed: Option<String>,
}

impl SourceRecord {
    /// A well-formed record.
    pub fn new(record: Record, position: SourcePosition) -> Self {
        SourceRecord {
            record,
            position,
            malformed: None,
        }
    }

    /// Input the source could not decode, carried to the dead-letter destination with `reason`.
    pub fn malformed(record: Record, position: SourcePosition, reason: impl Into<String>) -> Self {
        SourceRecord {
            record,
            position,
            malformed: Some(reason.into()),
        }
    }
}

/// Why one record failed; the kind decides the dead-letter header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// The plugin judged the input malformed.
    BadRecord,
    /// The plugin reported its own failure.
    PluginFailure,
    /// The plugin trapped (panic, memory cap, stack overflow, ...).
    Trap,
    /// The call ran past its deadline.
    Timeout,
    /// The source could not decode the input (a response that is not JSON, say).
    Malformed,
    /// The sink refused the record's content (a type mismatch, say).
    SinkRejected,
}

impl RecordErrorKind {
    /// The kebab-case name used in headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordErrorKind::BadRecord => "bad-record",
            RecordErrorKind::PluginFailure => "plugin-failure",
            RecordErrorKind::Trap => "trap",
            RecordErrorKind::Timeout => "timeout",
            RecordErrorKind::Malformed => "malformed",
            RecordErrorKind::SinkRejected => "sink-rejected",
        }
    }
}

impl fmt::Display for RecordErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record's failure: in a plugin, at the source or at the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Who is to blame.
    pub kind: RecordErrorKind,
    /// For a human.
    pub message: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// The longest reason a dead letter carries, in bytes. A reason can quote the record (the value
/// a column refused, a plugin's own message); unbounded, one large field could make the dead
/// letter larger than its destination takes (a Kafka topic's 1 MB), and that would stop the
/// pipeline at the same record after every restart.
pub const MAX_REASON_BYTES: usize = 4096;

impl RecordError {
    /// The message as a dead letter carries it: whole up to [`MAX_REASON_BYTES`], else its
    /// start (cut at a character boundary) and the full length.
    pub fn bounded_message(&self) -> std::borrow::Cow<'_, str> {
        let message = self.message.as_str();
        if message.len() <= MAX_REASON_BYTES {
            return message.into();
        }
        let mut end = MAX_REASON_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}… (the reason is {} bytes; the first {end} are kept)",
            &message[..end],
            message.len()
        )
        .into()
    }

    /// [`RecordError::bounded_message`], keeping the message itself when it is within bounds.
    pub fn into_bounded_message(self) -> String {
        match self.bounded_message() {
            std::borrow::Cow::Owned(cut) => cut,
            std::borrow::Cow::Borrowed(_) => self.message,
        }
    }
}

/// Where a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailedAt {
    /// The source could not decode it.
    Source,
    /// A plugin failed it: its name, its step in the chain and its version.
    Plugin {
        /// The plugin's name.
        name: String,
        /// The step's label in the chain (`NAME`, `NAME#2` for the plugin's second use).
        step: String,
        /// The plugin's version.
        version: String,
    },
    /// The sink refused its content.
    Sink,
}

/// A record that failed, with everything a dead-letter entry needs.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The record as the failing stage received it.
    pub record: Record,
    /// Where its input came from.
    pub position: SourcePosition,
    /// Why it failed.
    pub error: RecordError,
    /// Which stage failed it.
    pub at: FailedAt,
}

impl Failure {
    /// The dead-letter entry: the record with the reason, the failing stage (plugin and version)
    /// and the source coordinates in headers.
    pub fn into_dead_letter(self, pipeline: &str) -> Record {
        let mut record = self.record;
        let kind = self.error.kind;
        record.set_header(headers::ERROR, self.error.into_bounded_message());
        record.set_header(headers::ERROR_KIND, kind.as_str());
        let stage = match self.at {
            FailedAt::Source => "source",
            FailedAt::Sink => "sink",
            FailedAt::Plugin {
                name,
                step,
                version,
            } => {
                record.set_header(headers::PLUGIN, name);
                record.set_header(headers::STEP, step);
                record.set_header(headers::PLUGIN_VERSION, version);
                "plugin"
            }
        };
        record.set_header(headers::STAGE, stage);
        record.set_header(headers::PIPELINE, pipeline.to_owned());
        record.set_header(headers::SOURCE_STREAM, self.position.stream.to_string());
        record.set_header(
            headers::SOURCE_PARTITION,
            self.position.partition.to_string(),
        );
        record.set_header(headers::SOURCE_OFFSET, self.position.offset.to_string());
        record
    }
}

impl Record {
    /// A record with this value and nothing else.
    pub fn from_value(value: impl Into<Vec<u8>>) -> Self {
        Record {
            key: None,
            value: Bytes::from(value.into()),
            headers: Headers::new(),
            timestamp: None,
        }
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key == name)
            .map(|h| h.value.as_ref())
    }

    /// The first header called `name` as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Cuts the value down to its first `keep` bytes for a destination that cannot hold it
    /// whole, recording the full size (key and value) and the value's sha256 in headers so the
    /// excerpt still identifies the record. A record cut before keeps its original's figures.
    pub fn keep_excerpt(&mut self, keep: usize) {
        if self.header(headers::RECORD_BYTES).is_none() {
            let size = self.value.len() + self.key.as_ref().map_or(0, Bytes::len);
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&self.value));
            self.set_header(headers::RECORD_BYTES, size.to_string());
            self.set_header(headers::RECORD_SHA256, digest);
        }
        self.value.truncate(keep);
    }

    /// Sets header `name`, replacing every earlier value: a record that arrived with the name
    /// repeated (a forged `weir.error`, say) keeps none of them. A static or shared name and a
    /// shared value (`Bytes::clone`) are stored without copying their text.
    pub fn set_header(&mut self, name: impl Into<HeaderName>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = value.into();
        self.headers.retain(|h| h.key != name);
        self.headers.push(Header { key: name, value });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(parse_time("1000"), Ok(1000));
        assert_eq!(parse_time(" 1970-01-01T00:00:01Z "), Ok(1000));
        assert_eq!(parse_time("1970-01-01T01:00:01+01:00"), Ok(1000));
        let naive = parse_time("2026-12-01T00:00:00").unwrap_err();
        assert!(naive.contains("RFC 3339"), "{naive}");
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    fn failed(message: String) -> Failure {
        Failure {
            record: Record::from_value("{}"),
            position: SourcePosition {
                stream: Arc::from("users"),
                partition: 0,
                offset: 3,
            },
            error: RecordError {
                kind: RecordErrorKind::SinkRejected,
                message,
            },
            at: FailedAt::Sink,
        }
    }

    #[test]
    fn a_plugins_dead_letter_names_the_plugin_and_its_step_in_the_chain() {
        let mut failure = failed("refused".into());
        failure.at = FailedAt::Plugin {
            name: "filter".into(),
            step: "filter#2".into(),
            version: "090ff39429c0".into(),
        };
        let letter = failure.into_dead_letter("p");
        assert_eq!(letter.header_str(headers::STAGE), Some("plugin"));
        assert_eq!(letter.header_str(headers::PLUGIN), Some("filter"));
        assert_eq!(letter.header_str(headers::STEP), Some("filter#2"));
        assert_eq!(
            letter.header_str(headers::PLUGIN_VERSION),
            Some("090ff39429c0")
        );
    }

    #[test]
    fn a_dead_letter_keeps_a_short_reason_whole() {
        let letter = failed("column `n` (int) cannot hold \"x\"".into()).into_dead_letter("p");
        assert_eq!(
            letter.header_str(headers::ERROR),
            Some("column `n` (int) cannot hold \"x\"")
        );
        assert_eq!(
            letter.header_str(headers::ERROR_KIND),
            Some("sink-rejected")
        );
    }

    #[test]
    fn a_dead_letters_reason_is_cut_to_its_bound_at_a_character_boundary() {
        // Two-byte characters from an odd offset: the bound falls inside one of them.
        let message = format!("x{}", "é".repeat(MAX_REASON_BYTES));
        let letter = failed(message.clone()).into_dead_letter("p");
        let reason = letter.header_str(headers::ERROR).expect("a UTF-8 reason");
        let (kept, note) = reason.split_once('…').expect("the cut is marked");
        assert!(message.starts_with(kept));
        assert!(kept.len() <= MAX_REASON_BYTES && kept.len() >= MAX_REASON_BYTES - 1);
        assert_eq!(
            note,
            format!(
                " (the reason is {} bytes; the first {} are kept)",
                message.len(),
                kept.len()
            )
        );
    }

    #[test]
    fn highest_keeps_the_largest_offset_per_stream_and_partition() {
        let at = |stream: &str, partition, offset| SourcePosition {
            stream: Arc::from(stream),
            partition,
            offset,
        };
        let positions = [
            at("a", 0, 5),
            at("a", 1, 2),
            at("a", 0, 9),
            at("b", 0, 1),
            at("a", 0, 7),
        ];
        assert_eq!(
            SourcePosition::highest(&positions),
            [at("a", 0, 9), at("a", 1, 2), at("b", 0, 1)]
        );
    }

    #[test]
    fn an_excerpt_keeps_the_full_size_and_digest_of_the_original() {
        let mut record = Record::from_value("abcdef");
        record.key = Some(Bytes::from_static(b"k"));
        record.keep_excerpt(2);
        assert_eq!(record.value, &b"ab"[..]);
        assert_eq!(record.header_str(headers::RECORD_BYTES), Some("7"));
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"abcdef"));
        assert_eq!(
            record.header_str(headers::RECORD_SHA256),
            Some(digest.as_str())
        );
        // Cutting again, shorter, still describes the original.
        record.keep_excerpt(0);
        assert!(record.value.is_empty());
        assert_eq!(record.header_str(headers::RECORD_BYTES), Some("7"));
        assert_eq!(
            record.header_str(headers::RECORD_SHA256),
            Some(digest.as_str())
        );
    }

    #[test]
    fn set_header_replaces_instead_of_repeating() {
        let mut record = Record::from_value("{}");
        record.set_header("a", "1");
        record.set_header("a", "2");
        assert_eq!(record.headers.len(), 1);
        assert_eq!(record.header_str("a"), Some("2"));
        assert_eq!(record.header("missing"), None);
    }

    #[test]
    fn set_header_replaces_every_repeat_of_the_name() {
        let mut record = Record::from_value("{}");
        for (key, value) in [
            (headers::ERROR, "forged"),
            ("b", "kept"),
            (headers::ERROR, "forged too"),
        ] {
            record.headers.push(Header {
                key: key.into(),
                value: Bytes::from_static(value.as_bytes()),
            });
        }
        record.set_header(headers::ERROR, "real");
        let errors: Vec<&[u8]> = record
            .headers
            .iter()
            .filter(|h| h.key == headers::ERROR)
            .map(|h| &h.value[..])
            .collect();
        assert_eq!(errors, [b"real"]);
        assert_eq!(record.header_str("b"), Some("kept"));
    }

    #[test]
    fn set_header_stores_a_shared_name_and_value_without_copying_them() {
        let name = HeaderName::shared("weir.version.a");
        let version = Bytes::from(b"090ff39429c0".to_vec());
        let mut records = [Record::from_value("1"), Record::from_value("2")];
        for record in &mut records {
            record.set_header(name.clone(), version.clone());
        }
        for record in &records {
            let header = &record.headers[0];
            assert!(std::ptr::eq(header.key.as_str(), name.as_str()));
            assert_eq!(header.value.as_ptr(), version.as_ptr());
            assert_eq!(record.header_str("weir.version.a"), Some("090ff39429c0"));
        }
    }
}
