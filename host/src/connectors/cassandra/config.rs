//! The `cassandra` sink's options, with the checks the type system cannot make.

use std::collections::BTreeMap;

use scylla::statement::Consistency;
use serde::Deserialize;

use super::columns::{ColumnType, Missing};
use super::kinds::ColumnKind;
use crate::connectors::ConfigProblem;
use crate::connectors::tls::TlsConfig;
use crate::secret::Secret;

/// Consistency levels the sink may write at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteConsistency {
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// Three replicas.
    Three,
    /// One replica in the local datacenter.
    LocalOne,
    /// A majority in the local datacenter (the default).
    #[default]
    LocalQuorum,
    /// A majority of all replicas.
    Quorum,
    /// A majority in every datacenter.
    EachQuorum,
    /// Every replica.
    All,
}

impl WriteConsistency {
    pub(super) fn to_driver(self) -> Consistency {
        match self {
            WriteConsistency::One => Consistency::One,
            WriteConsistency::Two => Consistency::Two,
            WriteConsistency::Three => Consistency::Three,
            WriteConsistency::LocalOne => Consistency::LocalOne,
            WriteConsistency::LocalQuorum => Consistency::LocalQuorum,
            WriteConsistency::Quorum => Consistency::Quorum,
            WriteConsistency::EachQuorum => Consistency::EachQuorum,
            WriteConsistency::All => Consistency::All,
        }
    }
}

/// How to create the table when it is missing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTable {
    /// Replication factor of the keyspace (SimpleStrategy).
    #[serde(default = "one")]
    pub replication_factor: u32,
    /// Column names and CQL types, e.g. `{ id = "uuid", first_name = "text" }`.
    pub columns: BTreeMap<String, String>,
    /// The primary key column(s).
    pub primary_key: Vec<String>,
}

fn one() -> u32 {
    1
}

/// Options of the `cassandra` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassandraSinkConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The keyspace.
    pub keyspace: String,
    /// The table.
    pub table: String,
    /// Column to JSON field (dotted path); every column of the table maps to the field of the
    /// same name unless given here.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Consistency of the writes.
    #[serde(default)]
    pub consistency: WriteConsistency,
    /// Requests in flight at once (each a row's insert or a batch of up to `rows_per_request`
    /// rows), across all the batches the sink writes at once (`batch.sink_in_flight`). Each row
    /// carries its record's write timestamp, so a key's later record wins however its
    /// requests interleave.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Rows sent in one request: rows that the same replicas own go together as one unlogged
    /// batch of at most this many, routed to one of those replicas, so the driver and the server
    /// handle one request instead of this many. `1` sends each row as its own insert. At most
    /// 10 by default, Cassandra's `unlogged_batch_across_partitions_warn_threshold` (beyond it
    /// the server logs a warning per batch).
    #[serde(default = "default_rows_per_request")]
    pub rows_per_request: usize,
    /// Largest batch, in bytes of its rows' values plus a few bytes per cell, as Cassandra
    /// measures a batch against its `batch_size_warn_threshold` (5 KiB by default, a warning per
    /// larger batch) and `batch_size_fail_threshold` (50 KiB, a refusal). A row larger than this
    /// is sent on its own.
    #[serde(default = "default_request_bytes")]
    pub request_bytes: usize,
    /// What a column gets when its field is absent from the record: `unset` (the default)
    /// leaves the value an earlier record stored; `null` writes null, which erases it (a
    /// tombstone). A field that holds JSON `null` is written as null either way.
    #[serde(default)]
    pub missing: Missing,
    /// Largest row, in bytes of bound values, the sink sends; a larger record is dead-lettered
    /// with its size without being sent. Unset by default: Cassandra itself refuses a request
    /// larger than its `native_transport_max_frame_size` and a mutation larger than its
    /// `max_mutation_size` (16 MiB each by default, the latter half of `commitlog_segment_size`)
    /// with an error that dead-letters the record. Set it to keep such rows off the network, or
    /// for a server that answers them otherwise.
    #[serde(default)]
    pub max_mutation_bytes: Option<usize>,
    /// Seconds each written row lives before Cassandra expires it (`USING TTL`), 1 to 20
    /// years' worth (Cassandra's limit); unset by default: rows live until overwritten or
    /// deleted, or as the table's `default_time_to_live` says. A record written again gets the
    /// full time again.
    #[serde(default)]
    pub ttl_seconds: Option<u32>,
    /// Create the keyspace and table when missing, with this schema.
    #[serde(default)]
    pub create: Option<CreateTable>,
    /// TLS to every node: with this table the driver encrypts its connections and checks each
    /// node's certificate against the trusted CAs and the node's IP address (`{ ca_file =
    /// "ca.pem" }` for a private CA; `crt_file`/`key_file` for a client certificate). Without
    /// it, plain text.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The role to log in as, for a cluster with `PasswordAuthenticator` (with `password`).
    /// Without it the sink connects anonymously, which such a cluster refuses.
    #[serde(default)]
    pub username: Option<String>,
    /// The role's password, best given as `"${VAR}"`; never shown in logs or messages.
    #[serde(default)]
    pub password: Option<Secret>,
}

/// Cassandra's longest TTL: 20 years.
pub const MAX_TTL_SECONDS: u32 = 20 * 365 * 24 * 60 * 60;

fn default_concurrency() -> usize {
    64
}

fn default_rows_per_request() -> usize {
    DEFAULT_ROWS_PER_REQUEST
}

fn default_request_bytes() -> usize {
    DEFAULT_REQUEST_BYTES
}

/// `rows_per_request` when unset: Cassandra's default
/// `unlogged_batch_across_partitions_warn_threshold`.
pub const DEFAULT_ROWS_PER_REQUEST: usize = 10;

/// `request_bytes` when unset: Cassandra's default `batch_size_warn_threshold` (5 KiB).
pub const DEFAULT_REQUEST_BYTES: usize = 5 << 10;

/// The most rows a request may batch: far beyond where batching still pays, and well inside
/// the protocol's 65,535 statements a batch.
pub const MAX_ROWS_PER_REQUEST: usize = 100;

/// Cassandra's default `native_transport_max_frame_size` and `max_mutation_size` (half the
/// default 32 MiB commit log segment): a row this large is likely refused for its size.
pub const DEFAULT_MAX_MUTATION_BYTES: usize = 16 << 20;

impl CassandraSinkConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.nodes.is_empty() {
            return Err(("nodes".into(), "must list at least one node".into()));
        }
        if let Some(tls) = &self.tls {
            tls.check("tls")?;
        }
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err((
                    "password".into(),
                    "must be set with `username` (`password = \"${VAR}\"`)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "username".into(),
                    "must be set with `password`: the role to log in as".into(),
                ));
            }
            (Some(username), Some(_)) if username.is_empty() => {
                return Err(("username".into(), "must not be empty".into()));
            }
            _ => {}
        }
        for (key, name) in [("keyspace", &self.keyspace), ("table", &self.table)] {
            if !is_identifier(name) {
                return Err((key.into(), format!("`{name}` is not a CQL name")));
            }
        }
        if self.concurrency == 0 {
            return Err(("concurrency".into(), "must be at least 1".into()));
        }
        if !(1..=MAX_ROWS_PER_REQUEST).contains(&self.rows_per_request) {
            return Err((
                "rows_per_request".into(),
                format!(
                    "{} is not between 1 and {MAX_ROWS_PER_REQUEST}",
                    self.rows_per_request
                ),
            ));
        }
        if self.request_bytes == 0 {
            return Err(("request_bytes".into(), "must be at least 1".into()));
        }
        if let Some(ttl) = self.ttl_seconds
            && !(1..=MAX_TTL_SECONDS).contains(&ttl)
        {
            return Err((
                "ttl_seconds".into(),
                format!(
                    "{ttl} is not between 1 and {MAX_TTL_SECONDS} (20 years, Cassandra's limit); leave it out for rows that do not expire"
                ),
            ));
        }
        // A frame's length is a signed 32-bit integer in the CQL protocol.
        if let Some(bytes @ (0 | 0x8000_0000..)) = self.max_mutation_bytes {
            return Err((
                "max_mutation_bytes".into(),
                format!("{bytes} is not between 1 and {} bytes", i32::MAX),
            ));
        }
        if let Some(create) = &self.create {
            if let Some(column) = create.columns.keys().find(|c| !is_identifier(c)) {
                return Err((
                    "create.columns".into(),
                    format!("`{column}` is not a CQL name"),
                ));
            }
            if let Some((column, kind)) = create
                .columns
                .iter()
                .find(|(_, t)| !ColumnKind::parses_with_any_user_type(t))
            {
                return Err((
                    format!("create.columns.{column}"),
                    format!(
                        "type `{kind}` is not supported: {}",
                        ColumnType::unsupported(kind)
                    ),
                ));
            }
            if create.primary_key.is_empty()
                || create
                    .primary_key
                    .iter()
                    .any(|k| !create.columns.contains_key(k))
            {
                return Err((
                    "create.primary_key".into(),
                    "must name one or more of the columns".into(),
                ));
            }
        }
        Ok(())
    }
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> CassandraSinkConfig {
        toml::from_str(&format!(
            "nodes = [\"127.0.0.1:9042\"]\nkeyspace = \"k\"\ntable = \"t\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn every_write_consistency_cassandra_has_is_named_as_cql_names_it() {
        for (name, driver) in [
            ("one", Consistency::One),
            ("two", Consistency::Two),
            ("three", Consistency::Three),
            ("local_one", Consistency::LocalOne),
            ("local_quorum", Consistency::LocalQuorum),
            ("quorum", Consistency::Quorum),
            ("each_quorum", Consistency::EachQuorum),
            ("all", Consistency::All),
        ] {
            let parsed = config(&format!("consistency = \"{name}\"")).consistency;
            assert_eq!(parsed.to_driver(), driver, "{name}");
        }
        assert_eq!(
            config("").consistency.to_driver(),
            Consistency::LocalQuorum,
            "the default"
        );
    }

    #[test]
    fn create_takes_nested_types_and_user_type_names_but_not_what_the_sink_cannot_write() {
        let create = |kind: &str| {
            config(&format!(
                "create = {{ primary_key = [\"id\"], columns = {{ id = \"int\", a = \"{kind}\" }} }}"
            ))
            .validate()
        };
        for good in [
            "frozen<tuple<int, text>>",
            "frozen<address>",
            "address",
            "list<int>",
            "list<frozen<address>>",
            "frozen<tuple<int, list<int>>>",
        ] {
            assert!(create(good).is_ok(), "{good}");
        }
        for bad in [
            "counter",
            "duration",
            "list<duration>",
            "map<frozen<list<int>>, int>",
        ] {
            let (key, message) = create(bad).unwrap_err();
            assert_eq!(key, "create.columns.a", "{bad}");
            assert!(message.contains("is not supported"), "{bad}: {message}");
        }
    }

    #[test]
    fn a_ttl_is_one_second_to_twenty_years() {
        assert!(config("").validate().is_ok());
        assert!(config("ttl_seconds = 1").validate().is_ok());
        assert!(
            config(&format!("ttl_seconds = {MAX_TTL_SECONDS}"))
                .validate()
                .is_ok()
        );
        for bad in [0, MAX_TTL_SECONDS + 1] {
            let (key, message) = config(&format!("ttl_seconds = {bad}"))
                .validate()
                .unwrap_err();
            assert_eq!(key, "ttl_seconds");
            assert!(message.contains("20 years"), "{message}");
        }
    }

    #[test]
    fn rows_go_ten_to_a_request_within_5_kib_unless_configured() {
        let default = config("");
        assert_eq!(
            (default.rows_per_request, default.request_bytes),
            (10, 5120)
        );
        assert!(default.validate().is_ok());
        let single = config("rows_per_request = 1");
        assert!(single.validate().is_ok());
    }

    #[test]
    fn a_request_holds_at_least_one_row_and_at_most_a_hundred() {
        for (extra, key) in [
            ("rows_per_request = 0", "rows_per_request"),
            ("rows_per_request = 101", "rows_per_request"),
            ("request_bytes = 0", "request_bytes"),
        ] {
            let (at, message) = config(extra).validate().unwrap_err();
            assert_eq!(at, key, "{extra}: {message}");
        }
    }

    #[test]
    fn a_username_and_a_password_come_together_and_the_password_never_prints() {
        let both = config("username = \"weir\"\npassword = \"s3cret-pw\"");
        assert!(both.validate().is_ok());
        assert!(!format!("{both:?}").contains("s3cret-pw"));
        for (extra, key) in [
            ("username = \"weir\"", "password"),
            ("password = \"s3cret-pw\"", "username"),
            ("username = \"\"\npassword = \"s3cret-pw\"", "username"),
        ] {
            let (at, message) = config(extra).validate().unwrap_err();
            assert_eq!(at, key, "{extra}: {message}");
            assert!(!message.contains("s3cret-pw"), "{message}");
        }
    }
}
