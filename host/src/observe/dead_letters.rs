//! The latest dead letters of a pipeline, kept in memory so the status page and the JSON API can
//! say what failed and why without reading the dead-letter destination.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::record::{FailedAt, Failure};

/// How many dead letters a pipeline remembers.
pub const RECENT_LIMIT: usize = 20;

/// Bytes of a failed record's value shown beside its reason.
const EXCERPT_BYTES: usize = 160;

/// One dead letter, summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterSummary {
    /// When it was written to the dead-letter destination (Unix milliseconds).
    pub at_unix_ms: i64,
    /// `bad-record`, `plugin-failure`, `trap`, `timeout`, `malformed`, `sink-rejected`.
    pub kind: String,
    /// Why it failed.
    pub error: String,
    /// The stage that failed it: `source`, `plugin` or `sink`.
    pub stage: String,
    /// The plugin that failed it, with its version.
    pub plugin: Option<String>,
    /// Where its input sits in the source.
    pub stream: String,
    /// The source partition.
    pub partition: i32,
    /// The source offset.
    pub offset: i64,
    /// The start of the value, as text.
    pub excerpt: String,
}

impl DeadLetterSummary {
    /// Summarises `failure`, written at `at_unix_ms`.
    pub fn new(failure: &Failure, at_unix_ms: i64) -> Self {
        let (stage, plugin) = match &failure.at {
            FailedAt::Source => ("source", None),
            FailedAt::Sink => ("sink", None),
            FailedAt::Plugin { name, version, .. } => ("plugin", Some(format!("{name}@{version}"))),
        };
        let value = &failure.record.value;
        let mut excerpt =
            String::from_utf8_lossy(&value[..value.len().min(EXCERPT_BYTES)]).into_owned();
        if value.len() > EXCERPT_BYTES {
            excerpt.push('…');
        }
        DeadLetterSummary {
            at_unix_ms,
            kind: failure.error.kind.as_str().to_owned(),
            error: failure.error.bounded_message().into_owned(),
            stage: stage.to_owned(),
            plugin,
            stream: failure.position.stream.to_string(),
            partition: failure.position.partition,
            offset: failure.position.offset,
            excerpt,
        }
    }
}

/// A bounded list of the latest dead letters, newest first.
#[derive(Debug, Default)]
pub struct RecentDeadLetters {
    entries: Mutex<VecDeque<DeadLetterSummary>>,
}

impl RecentDeadLetters {
    /// Remembers the dead letters of one batch, forgetting the oldest beyond [`RECENT_LIMIT`].
    pub fn push(&self, failures: &[Failure]) {
        if failures.is_empty() {
            return;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Only the last RECENT_LIMIT of a large batch can survive, so only those are summarised.
        let skip = failures.len().saturating_sub(RECENT_LIMIT);
        for failure in &failures[skip..] {
            entries.push_front(DeadLetterSummary::new(failure, now));
        }
        entries.truncate(RECENT_LIMIT);
    }

    /// The remembered dead letters, newest first.
    pub fn list(&self) -> Vec<DeadLetterSummary> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::{Record, SourcePosition};
    use crate::record::{RecordError, RecordErrorKind};

    fn failure(offset: i64, value: &str) -> Failure {
        Failure {
            record: Record::from_value(value),
            position: SourcePosition {
                stream: Arc::from("users"),
                partition: 2,
                offset,
            },
            error: RecordError {
                kind: RecordErrorKind::BadRecord,
                message: format!("missing field at {offset}"),
            },
            at: FailedAt::Plugin {
                name: "user-profile".into(),
                step: "user-profile".into(),
                version: "abc".into(),
            },
        }
    }

    #[test]
    fn keeps_the_newest_first_and_forgets_beyond_the_limit() {
        let recent = RecentDeadLetters::default();
        let batch: Vec<Failure> = (0..RECENT_LIMIT as i64 + 5)
            .map(|i| failure(i, "{}"))
            .collect();
        recent.push(&batch);
        recent.push(&[failure(1000, "{\"late\":true}")]);
        let list = recent.list();
        assert_eq!(list.len(), RECENT_LIMIT);
        assert_eq!(list[0].offset, 1000);
        assert_eq!(list[1].offset, RECENT_LIMIT as i64 + 4);
        assert_eq!(list[0].plugin.as_deref(), Some("user-profile@abc"));
        assert_eq!(list[0].stage, "plugin");
        assert_eq!(list[0].partition, 2);
        assert_eq!(list[0].error, "missing field at 1000");
    }

    #[test]
    fn a_reason_quoting_a_large_field_is_kept_to_its_bound() {
        let mut large = failure(7, "{}");
        large.error.message = format!("column `dob` cannot hold {}", "9".repeat(1 << 20));
        let recent = RecentDeadLetters::default();
        recent.push(&[large]);
        let error = &recent.list()[0].error;
        assert!(error.starts_with("column `dob` cannot hold 999"), "{error}");
        assert!(
            error.len() < crate::record::MAX_REASON_BYTES + 100,
            "{} bytes",
            error.len()
        );
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let recent = RecentDeadLetters::default();
        recent.push(&[failure(1, &"é".repeat(EXCERPT_BYTES))]);
        let excerpt = &recent.list()[0].excerpt;
        assert!(excerpt.ends_with('…'));
        assert!(
            excerpt.chars().count() <= EXCERPT_BYTES / 2 + 2,
            "{excerpt}"
        );
    }
}
