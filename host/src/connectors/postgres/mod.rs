//! The `postgres` connector: a sink into an idempotent landing table (the seed's Airflow step),
//! and a source that tails a table by a monotonic column with its position kept in PostgreSQL.

pub(super) mod client;
mod sink;
mod source;

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

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

/// The NOTIFY channel a landing table announces inserts on.
pub fn channel_for(table: &str) -> String {
    format!("weir_{}", table.replace('.', "_")).to_lowercase()
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
}
