//! The `postgres` source: tails a table in the order of a monotonic column, in batches. Its
//! position lives in PostgreSQL (table `weir_offsets`) and advances only when the pipeline
//! acknowledges; LISTEN/NOTIFY wakes it on inserts instead of tight polling.
//!
//! The column must grow in commit order (true for a table only `postgres` sinks write: they take
//! turns, see the sink's `landing_statement`); with other concurrent writers a lower id can
//! commit after a higher one was read, and would be skipped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_postgres::Client;

use super::client::{Encryption, Limits, connect};
use super::privileges::{Grantee, Step};
use super::{MAX_CHANNEL_BYTES, channel_for, is_identifier, quoted_table};
use crate::connectors::tls::TlsConfig;
use crate::connectors::{ConfigProblem, ConnectorError, Source};
use crate::record::{Record, SourcePosition, SourceRecord, headers};
use crate::secret::Secret;

/// Options of the `postgres` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// Connection URL (`postgres://user:${PG_PASSWORD}@host/db`) or key/value string
    /// (`host=... password=...`); never shown unredacted.
    pub url: Secret,
    /// The table to tail (`table` or `schema.table`).
    pub table: String,
    /// The monotonic bigint column that orders rows.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// The column holding the record value (jsonb or text), or `*` for the whole row as a JSON
    /// object of its columns in table order (PostgreSQL's `to_json`: numbers as stored, arrays
    /// and json columns as JSON, timestamps as ISO 8601 text), to tail a table of typed columns.
    #[serde(default = "default_value_column")]
    pub value_column: String,
    /// The column holding the record key (default `key`); `""` for none: the records then
    /// have no key.
    #[serde(default = "default_key_column")]
    pub key_column: String,
    /// Name under which the position is stored; two pipelines with the same consumer share it.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Longest wait between two queries when no NOTIFY arrives, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// The NOTIFY channel announcing inserts; by default the `postgres` sink's for `table`
    /// (`weir_TABLE`, lowercase, `.` as `_`; a name past 63 bytes ends in a digest instead).
    /// Letters, digits and `_`, at most 63 bytes: matched exactly (capitals too), as
    /// `pg_notify` sends it.
    #[serde(default)]
    pub channel: Option<String>,
    /// Longest wait for a connection (TCP and start-up handshake), in milliseconds.
    #[serde(default = "super::sink::default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest run of one query, in milliseconds: the server cancels it, and the client gives
    /// up 2 s later if even that answer does not arrive (a half-open connection).
    #[serde(default = "super::sink::default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// TCP keepalive idle time, in milliseconds: after it, the kernel probes a silent
    /// connection and closes it when three probes go unanswered.
    #[serde(default = "super::sink::default_keepalive_idle_ms")]
    pub keepalive_idle_ms: u64,
    /// TLS, as the `postgres` sink's `tls` table: with it the connection is always encrypted
    /// and the server checked; without it the url's `sslmode` decides.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Longest row read as a record, in bytes of its value and key as text (default: the
    /// pipeline's `limits.max_record_bytes`). A longer row is never fetched whole: it becomes a
    /// dead letter keeping the first 64 KiB of its value, with its full size and the value's
    /// sha256 in headers, and tailing goes on after it.
    #[serde(default)]
    pub max_row_bytes: Option<usize>,
}

/// `value_column` for the whole row as the record's value.
const WHOLE_ROW: &str = "*";

/// Bytes of an oversized row's value kept in its dead letter.
const OVERSIZED_EXCERPT: usize = 64 * 1024;
/// `max_row_bytes` when neither it nor the pipeline's `limits.max_record_bytes` is known.
const DEFAULT_MAX_ROW_BYTES: usize = 1 << 20;

fn default_id_column() -> String {
    "id".into()
}
fn default_value_column() -> String {
    "value".into()
}
fn default_key_column() -> String {
    "key".into()
}
fn default_consumer() -> String {
    "weir".into()
}
fn default_poll_interval_ms() -> u64 {
    1000
}

/// Checks a `channel` the user named: it goes into `LISTEN "..."`, and PostgreSQL matches it
/// exactly against what `pg_notify` sends. Inside the quotes any name PostgreSQL takes is
/// accepted (`orders-events`, `app.events`, `1st`, non-ASCII); refused is only what would end
/// the quoted name (a `"`) or the query (a NUL), an empty name, and a name PostgreSQL would cut
/// to its first 63 bytes.
fn check_channel(channel: &str) -> Result<(), String> {
    if channel.is_empty() {
        return Err("is empty; name the channel the inserts are announced on".to_owned());
    }
    if channel.contains(['"', '\0']) {
        return Err(format!(
            "`{}` cannot be a channel name: it holds a `\"` or a NUL character",
            channel.escape_debug()
        ));
    }
    if channel.len() > MAX_CHANNEL_BYTES {
        return Err(format!(
            "`{channel}` is {} bytes long; PostgreSQL takes channel names of at most {MAX_CHANNEL_BYTES} bytes",
            channel.len()
        ));
    }
    // Capitals are kept: `LISTEN "..."` quotes the name, so it matches `pg_notify('Name', ..)`
    // or `NOTIFY "Name"` from a trigger of the user's own (the sink's channels are lowercase).
    Ok(())
}

impl PostgresSourceConfig {
    /// The key column, or `None` when `key_column = ""` says the records have no key.
    pub fn key_column(&self) -> Option<&str> {
        Some(self.key_column.as_str()).filter(|column| !column.is_empty())
    }

    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if quoted_table(&self.table).is_none() {
            return Err((
                "table".into(),
                format!("`{}` is not a table name", self.table),
            ));
        }
        for (key, column) in [
            ("id_column", Some(self.id_column.as_str())),
            (
                "value_column",
                Some(self.value_column.as_str()).filter(|column| *column != WHOLE_ROW),
            ),
            ("key_column", self.key_column()),
        ] {
            if let Some(column) = column.filter(|c| !is_identifier(c)) {
                let none = match key {
                    "key_column" => {
                        "; use letters, digits and `_`, or \"\" for records without a key"
                    }
                    "value_column" => {
                        "; use letters, digits and `_`, or \"*\" for the whole row as a JSON object"
                    }
                    _ => "; use letters, digits and `_`",
                };
                return Err((key.into(), format!("`{column}` is not a column name{none}")));
            }
        }
        if let Some(channel) = &self.channel {
            check_channel(channel).map_err(|message| ("channel".to_owned(), message))?;
        }
        if self.poll_interval_ms == 0 {
            return Err(("poll_interval_ms".into(), "must be at least 1".into()));
        }
        if self.max_row_bytes == Some(0) {
            return Err(("max_row_bytes".into(), "must be at least 1".into()));
        }
        super::sink::check_url(&self.url)?;
        super::sink::check_limits(
            self.connect_timeout_ms,
            self.statement_timeout_ms,
            self.keepalive_idle_ms,
        )?;
        super::sink::check_tls(self.tls.as_ref())
    }
}

/// Tails a table.
pub struct PostgresSource {
    config: PostgresSourceConfig,
    name: String,
    query: String,
    client: Option<Client>,
    /// Woken by NOTIFY; however many arrive, at most one wake-up is pending.
    notifications: Arc<Notify>,
    /// The highest id handed out; the committed position may lag behind it.
    cursor: i64,
    stream: Arc<str>,
    limits: Limits,
    encryption: Encryption,
    grants: Arc<Grants>,
}

/// What the source's role needs, as the fix its errors name when the server refuses it
/// (SQLSTATE 42501).
struct Grants {
    /// Reading the table it tails.
    read: String,
    /// Reading and writing its position in `weir_offsets`.
    offsets: String,
    /// Creating `weir_offsets` where it is missing.
    create_offsets: String,
}

impl Grants {
    fn new(config: &PostgresSourceConfig, table: &str) -> Self {
        let grantee = Grantee::of(&config.url);
        let offsets = grantee.grant("SELECT, INSERT, UPDATE", "weir_offsets");
        Grants {
            read: format!("run `{}` as its owner", grantee.grant("SELECT", table)),
            create_offsets: format!(
                "the source keeps its position in table weir_offsets, in the first schema of the role's search_path, and creates it only where it is missing; have a role with CREATE on that schema create it (README, PostgreSQL privileges) and run `{offsets}`, or run `{}`",
                grantee.grant("CREATE", "SCHEMA <schema>")
            ),
            offsets: format!("run `{offsets}` as its owner (the source keeps its position there)"),
        }
    }
}

const OFFSETS_DDL: &str = "CREATE TABLE IF NOT EXISTS weir_offsets (
    consumer TEXT NOT NULL,
    source TEXT NOT NULL,
    position BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, source))";

impl PostgresSource {
    /// Connects and reads the committed position.
    pub async fn open(config: &PostgresSourceConfig) -> Result<Self, ConnectorError> {
        let name = format!("postgres source {}", config.table);
        let table = quoted_table(&config.table)
            .ok_or_else(|| ConnectorError::fatal(&name, "invalid table name"))?;
        let key = match config.key_column() {
            Some(column) => format!("weir_row.\"{column}\"::text"),
            None => "NULL::text".into(),
        };
        // The whole row by its composite reference: `to_json(weir_row.*)` cannot be taken for
        // a column of the same name, as a bare `weir_row` could.
        let value = if config.value_column == WHOLE_ROW {
            "to_json(weir_row.*)::text".to_owned()
        } else {
            format!("weir_row.\"{}\"::text", config.value_column)
        };
        // A row's size is measured on the server, and only a row within `$3` bytes comes
        // whole; a larger one comes as its size, the start of its value and the value's
        // sha256. The inner query's LIMIT keeps it from being merged into the outer one, so
        // each row's value is made text once.
        let query = format!(
            "SELECT id, CASE WHEN bytes <= $3 THEN value END, CASE WHEN bytes <= $3 THEN key END, bytes, \
             CASE WHEN bytes > $3 THEN substring(convert_to(value, 'UTF8') FROM 1 FOR {OVERSIZED_EXCERPT}) END, \
             CASE WHEN bytes > $3 THEN encode(sha256(convert_to(value, 'UTF8')), 'hex') END \
             FROM (SELECT id, value, key, (octet_length(value) + coalesce(octet_length(key), 0))::bigint AS bytes \
             FROM (SELECT weir_row.\"{id}\"::bigint AS id, {value} AS value, {key} AS key FROM {table} AS weir_row \
             WHERE weir_row.\"{id}\" > $1 ORDER BY weir_row.\"{id}\" LIMIT $2) AS fetched) AS sized ORDER BY id",
            id = config.id_column,
        );
        let encryption = Encryption::for_connector(&name, &config.url, config.tls.as_ref())?;
        let grants = Arc::new(Grants::new(config, &table));
        let mut source = PostgresSource {
            encryption,
            grants,
            config: config.clone(),
            name,
            query,
            client: None,
            notifications: Arc::new(Notify::new()),
            cursor: 0,
            stream: Arc::from(config.table.as_str()),
            limits: Limits::from_millis(
                config.connect_timeout_ms,
                config.statement_timeout_ms,
                config.keepalive_idle_ms,
            ),
        };
        source.cursor = source.committed_position().await?;
        tracing::info!(table = %config.table, consumer = %config.consumer, position = source.cursor, "Tailing from the committed position.");
        Ok(source)
    }

    async fn client(&mut self) -> Result<&Client, ConnectorError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = connect(
                &self.name,
                &self.config.url,
                &self.encryption,
                self.limits,
                Some(Arc::clone(&self.notifications)),
            )
            .await?;
            let channel = self
                .config
                .channel
                .clone()
                .unwrap_or_else(|| channel_for(&self.config.table));
            // Created only where missing: CREATE TABLE IF NOT EXISTS needs CREATE on the schema
            // even when the table exists, which a least-privilege role does not hold.
            let missing: bool = self
                .limits
                .statement(
                    &self.name,
                    "cannot look for the offsets table",
                    client.query_one("SELECT to_regclass('weir_offsets') IS NULL", &[]),
                )
                .await?
                .get(0);
            if missing {
                self.limits
                    .statement(
                        &self.name,
                        Step::needing(
                            "cannot create the offsets table",
                            &self.grants.create_offsets,
                        ),
                        client.batch_execute(OFFSETS_DDL),
                    )
                    .await?;
            }
            self.limits
                .statement(
                    &self.name,
                    "cannot listen for inserts",
                    client.batch_execute(&format!("LISTEN \"{channel}\"")),
                )
                .await?;
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| ConnectorError::transient(&self.name, "no connection"))
    }

    async fn committed_position(&mut self) -> Result<i64, ConnectorError> {
        let (consumer, table) = (self.config.consumer.clone(), self.config.table.clone());
        let (name, limits) = (self.name.clone(), self.limits);
        let grants = Arc::clone(&self.grants);
        let client = self.client().await?;
        let row = limits
            .statement(
                &name,
                Step::needing("cannot read the committed position", &grants.offsets),
                client.query_opt(
                    "SELECT position FROM weir_offsets WHERE consumer = $1 AND source = $2",
                    &[&consumer, &table],
                ),
            )
            .await;
        if row.is_err() {
            self.client = None;
        }
        Ok(row?.map_or(0, |row| row.get(0)))
    }

    async fn fetch(&mut self, max: usize) -> Result<Vec<SourceRecord>, ConnectorError> {
        let (query, cursor, name) = (self.query.clone(), self.cursor, self.name.clone());
        let limits = self.limits;
        let max_row_bytes = self.config.max_row_bytes.unwrap_or(DEFAULT_MAX_ROW_BYTES);
        let row_limit = i64::try_from(max_row_bytes).unwrap_or(i64::MAX);
        let grants = Arc::clone(&self.grants);
        let client = self.client().await?;
        let rows = match limits
            .statement(
                &name,
                Step::needing("query failed", &grants.read),
                client.query(&query, &[&cursor, &(max as i64), &row_limit]),
            )
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                self.client = None;
                return Err(error);
            }
        };
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get(0);
            let value: Option<String> = row.get(1);
            let key: Option<String> = row.get(2);
            let bytes: Option<i64> = row.get(3);
            let excerpt: Option<Vec<u8>> = row.get(4);
            let digest: Option<String> = row.get(5);
            let position = SourcePosition {
                stream: Arc::clone(&self.stream),
                partition: 0,
                offset: id,
            };
            batch.push(match (value, excerpt, bytes, digest) {
                (Some(value), _, _, _) => {
                    let mut record = Record::from_value(value);
                    record.key = key.map(Into::into);
                    SourceRecord::new(record, position)
                }
                (None, Some(excerpt), Some(bytes), Some(digest)) => {
                    let mut record = Record::from_value(excerpt);
                    record.set_header(headers::RECORD_BYTES, bytes.to_string());
                    record.set_header(headers::RECORD_SHA256, digest);
                    SourceRecord::malformed(
                        record,
                        position,
                        format!(
                            "row of {bytes} bytes exceeds max_row_bytes ({max_row_bytes}); the dead letter keeps the first {OVERSIZED_EXCERPT} bytes of its value"
                        ),
                    )
                }
                _ => {
                    let mut record = Record::from_value(Vec::new());
                    record.key = key.map(Into::into);
                    SourceRecord::malformed(
                        record,
                        position,
                        format!("column `{}` is NULL", self.config.value_column),
                    )
                }
            });
            self.cursor = self.cursor.max(id);
        }
        Ok(batch)
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn poll_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
        // The fetch below sees every insert announced so far, so the wake-up they left is spent
        // now, on every poll, not only on an empty one.
        let _ = self.notifications.notified().now_or_never();
        let batch = self.fetch(max).await?;
        if !batch.is_empty() {
            return Ok(Some(batch));
        }
        // Nothing new: sleep until an insert is announced, or the poll interval passes. Return
        // empty-handed after that so the pipeline can commit acknowledged positions meanwhile.
        let wait = Duration::from_millis(self.config.poll_interval_ms).max(linger);
        tokio::select! {
            _ = self.notifications.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        Ok(Some(self.fetch(max).await?))
    }

    async fn commit(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        let Some(position) = positions.iter().map(|p| p.offset).max() else {
            return Ok(());
        };
        let (consumer, table, name) = (
            self.config.consumer.clone(),
            self.config.table.clone(),
            self.name.clone(),
        );
        let (limits, grants) = (self.limits, Arc::clone(&self.grants));
        let client = self.client().await?;
        let result = limits
            .statement(
                &name,
                Step::needing("cannot commit the position", &grants.offsets),
                client.execute(
                    "INSERT INTO weir_offsets (consumer, source, position) VALUES ($1, $2, $3)
                     ON CONFLICT (consumer, source) DO UPDATE
                     SET position = GREATEST(weir_offsets.position, EXCLUDED.position), updated_at = now()",
                    &[&consumer, &table, &position],
                ),
            )
            .await;
        if let Err(error) = result {
            self.client = None;
            return Err(error);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(options: &str) -> PostgresSourceConfig {
        toml::from_str(&format!(
            "url = \"postgres://weir@127.0.0.1/weir\"\ntable = \"t\"\n{options}"
        ))
        .unwrap()
    }

    #[test]
    fn a_channel_is_any_name_postgresql_takes_in_quotes() {
        let long = "c".repeat(MAX_CHANNEL_BYTES);
        for channel in [
            "weir_t",
            "Users_Changed",
            "orders-events",
            "app.events",
            "1st",
            "bestellungen_geändert",
            "weir t",
            &long,
        ] {
            let text = format!("channel = {}", toml::Value::from(channel));
            assert!(config(&text).validate().is_ok(), "{channel}");
        }
        let too_long = "c".repeat(MAX_CHANNEL_BYTES + 1);
        for channel in [r#"x"; DROP TABLE t; --"#, "a\0b", "", &too_long] {
            let text = format!("channel = {}", toml::Value::from(channel));
            let (key, message) = config(&text).validate().unwrap_err();
            assert_eq!(key, "channel", "{channel}: {message}");
        }
    }

    #[test]
    fn an_empty_key_column_means_records_without_a_key() {
        assert_eq!(config("").key_column(), Some("key"));
        let keyless = config("key_column = \"\"");
        assert!(keyless.validate().is_ok());
        assert_eq!(keyless.key_column(), None);
        let (key, _) = config("key_column = \"k k\"").validate().unwrap_err();
        assert_eq!(key, "key_column");
    }
}
