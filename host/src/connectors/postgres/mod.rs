//! The `postgres` connector: a sink into an idempotent landing table (the seed's Airflow step),
//! and a source that tails a table by a monotonic column with its position kept in PostgreSQL.

pub(super) mod client;
pub(super) mod privileges;
mod sink;
mod source;

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use sha2::Digest;

use super::{ConfigProblem, ConnectorError, Sink, SinkSpec, Source, SourceSpec};

pub use sink::{KeyEncoding, OnConflict, PostgresSink, PostgresSinkConfig};
pub use source::{PostgresSource, PostgresSourceConfig};

#[async_trait]
impl SourceSpec for PostgresSourceConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        PostgresSourceConfig::validate(self)
    }

    async fn build(&self) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(PostgresSource::open(self).await?))
    }

    fn describe(&self) -> String {
        format!("postgres table {}", self.table)
    }
}

#[async_trait]
impl SinkSpec for PostgresSinkConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        PostgresSinkConfig::validate(self)
    }

    async fn build(&self, dead_letter: bool) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(PostgresSink::new(self, dead_letter)?))
    }

    fn describe(&self) -> String {
        format!("postgres table {}", self.table)
    }
}

/// Records the `postgres` sinks left out because their key was stored already
/// (`on_conflict = "ignore"`), per landing table, since the process started.
static IGNORED: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn count_ignored(table: &str, records: u64) {
    let mut ignored = IGNORED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *ignored.entry(table.to_owned()).or_default() += records;
}

/// Per landing table, the records ignored for a stored key (`on_conflict = "ignore"`), for
/// the metrics endpoint.
pub fn ignored_records() -> Vec<(String, u64)> {
    let ignored = IGNORED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ignored
        .iter()
        .map(|(table, n)| (table.clone(), *n))
        .collect()
}

/// A table name as the user wrote it (`table` or `schema.table`), checked and quoted.
fn quoted_table(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| is_identifier(p)) {
        return None;
    }
    Some(
        parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// A plain SQL identifier: letters, digits and `_`, not starting with a digit.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The longest channel name PostgreSQL accepts (an identifier: `NAMEDATALEN - 1` bytes);
/// `pg_notify` refuses a longer one (SQLSTATE 22023) and `LISTEN` cuts it short.
pub(super) const MAX_CHANNEL_BYTES: usize = 63;

/// Hex digits of the digest that ends a channel name too long to use whole.
const CHANNEL_DIGEST_CHARS: usize = 16;

/// The NOTIFY channel a landing table announces inserts on, and a `postgres` source tailing
/// it listens on by default: `weir_` and the table's name (`.` as `_`), lowercase. A name
/// longer than PostgreSQL takes ([`MAX_CHANNEL_BYTES`]) keeps its start and ends with `_` and
/// the first 16 hex digits of the sha256 of the whole name, so it fits and stays distinct.
pub fn channel_for(table: &str) -> String {
    let channel = format!("weir_{}", table.replace('.', "_")).to_lowercase();
    if channel.len() <= MAX_CHANNEL_BYTES {
        return channel;
    }
    let digest = hex::encode(sha2::Sha256::digest(channel.as_bytes()));
    let mut keep = MAX_CHANNEL_BYTES - 1 - CHANNEL_DIGEST_CHARS;
    // Table names are ASCII once validated; a cut never splits a character anyway.
    while !channel.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{}", &channel[..keep], &digest[..CHANNEL_DIGEST_CHARS])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert_eq!(quoted_table("users").as_deref(), Some("\"users\""));
        assert_eq!(
            quoted_table("raw.users").as_deref(),
            Some("\"raw\".\"users\"")
        );
        assert_eq!(quoted_table("users; drop"), None);
        assert_eq!(quoted_table("a.b.c"), None);
        assert_eq!(channel_for("raw.Users"), "weir_raw_users");
    }

    #[test]
    fn a_channel_always_fits_and_names_that_fit_keep_theirs() {
        // 58 characters: `weir_` and the name make 63 bytes, which PostgreSQL takes whole.
        let fits = "t".repeat(58);
        assert_eq!(channel_for(&fits), format!("weir_{fits}"));
        for table in [
            "t".repeat(59),
            "a".repeat(200),
            format!("{}.{}", "s".repeat(40), "t".repeat(40)),
        ] {
            let channel = channel_for(&table);
            assert_eq!(channel.len(), MAX_CHANNEL_BYTES, "{channel}");
            assert!(is_identifier(&channel), "{channel}");
            assert!(channel.starts_with("weir_"), "{channel}");
        }
        // Two long names with the same start get two channels.
        let (a, b) = ("x".repeat(70) + "a", "x".repeat(70) + "b");
        assert_ne!(channel_for(&a), channel_for(&b));
        assert_eq!(channel_for(&a.to_uppercase()), channel_for(&a));
    }
}
