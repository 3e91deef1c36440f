//! The `postgres` sink: JSON records into a landing table (key, jsonb value, ingestion time),
//! batched in one multi-row INSERT, idempotent on the key: a key already stored is updated (last
//! write wins) or left alone, as `on_conflict` says. As a dead-letter destination it keeps any
//! bytes and every header instead, idempotent on the record's source coordinates.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::error::{DbError, SqlState};

use super::client::{Encryption, Limits, classify, connect, server_words};
use super::privileges::{Grantee, Step};
use super::{channel_for, count_ignored, quoted_table};
use crate::connectors::fields::{FieldPath, FieldSet, Leaf};
use crate::connectors::tls::TlsConfig;
use crate::connectors::{ConfigProblem, ConnectorError, MAX_DURATION_MS, Rejected, Sink};
use crate::record::{Record, headers};
use crate::secret::Secret;

/// Options of the `postgres` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Connection URL, e.g. `postgres://weir:${PG_PASSWORD}@127.0.0.1:5432/weir`, or
    /// a key/value string (`host=... password=...`); never shown unredacted.
    pub url: Secret,
    /// The landing table (`table` or `schema.table`).
    pub table: String,
    /// Dotted path of the JSON field that is the idempotency key (e.g. `login.uuid`; a number is
    /// its text as the record writes it); by default the record key, else the sha256 of the value.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Create the table (and its NOTIFY trigger) if missing.
    #[serde(default = "yes")]
    pub create_table: bool,
    /// What a record whose key is already stored does: `update` replaces the stored value and
    /// moves the row to the end of the `id` order, so a `postgres` source tailing the table sees
    /// it again (last write wins); `ignore` keeps the stored row and counts the record in
    /// `weir_postgres_ignored_records_total`.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// How a key becomes the text `key` column: `text` stores it as is, and dead-letters a
    /// record key that is not UTF-8 (text would have to alter it, and two keys could become
    /// one); `hex` stores every key as the lowercase hex of its bytes, so any bytes fit.
    #[serde(default)]
    pub key_encoding: KeyEncoding,
    /// Longest wait for a connection (TCP and start-up handshake), in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest run of one statement, in milliseconds: the server cancels it, and the client
    /// gives up 2 s later if even that answer does not arrive (a half-open connection).
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// TCP keepalive idle time, in milliseconds: after it, the kernel probes a silent
    /// connection and closes it when three probes go unanswered.
    #[serde(default = "default_keepalive_idle_ms")]
    pub keepalive_idle_ms: u64,
    /// TLS: with this table the connection is always encrypted and the server checked
    /// (`{ ca_file = "ca.pem" }` for a private CA; `crt_file`/`key_file` for a client
    /// certificate). Without it, the url's `sslmode` decides: `require` encrypts, trusting the
    /// system's CAs; otherwise plain text.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// What the sink does with a record whose key the landing table already holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Replace the stored value: last write wins.
    #[default]
    Update,
    /// Keep the stored row; the record is counted as ignored.
    Ignore,
}

/// How keys are stored in the text `key` column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyEncoding {
    /// As text; a record key that is not UTF-8 is dead-lettered.
    #[default]
    Text,
    /// Lowercase hex of the key's bytes.
    Hex,
}

fn yes() -> bool {
    true
}
pub(super) fn default_connect_timeout_ms() -> u64 {
    10_000
}
pub(super) fn default_statement_timeout_ms() -> u64 {
    30_000
}
pub(super) fn default_keepalive_idle_ms() -> u64 {
    30_000
}

/// The longest `statement_timeout` PostgreSQL accepts (an int of milliseconds).
const MAX_STATEMENT_TIMEOUT_MS: u64 = i32::MAX as u64;
/// The longest keepalive idle time Linux accepts (`TCP_KEEPIDLE`, 32767 s).
const MAX_KEEPALIVE_IDLE_MS: u64 = 32_767_000;

/// Checks that a PostgreSQL connector's `url` parses, so `weir validate` catches what
/// connecting would refuse (an `sslmode` tokio-postgres does not take, a misspelled key).
pub(super) fn check_url(url: &Secret) -> Result<(), ConfigProblem> {
    super::client::parse_url(url)
        .map(drop)
        .map_err(|message| ("url".into(), message))
}

/// Checks a PostgreSQL connector's `tls` table: its files exist, parse and fit together.
pub(super) fn check_tls(tls: Option<&TlsConfig>) -> Result<(), ConfigProblem> {
    tls.map_or(Ok(()), |tls| tls.check("tls"))
}

/// Checks the three time limits every PostgreSQL connector has: each at least its minimum and
/// at most what the server, the kernel and `MAX_DURATION_MS` allow.
pub(super) fn check_limits(
    connect: u64,
    statement: u64,
    keepalive: u64,
) -> Result<(), ConfigProblem> {
    for (key, millis, min, max) in [
        ("connect_timeout_ms", connect, 1, MAX_DURATION_MS),
        (
            "statement_timeout_ms",
            statement,
            1,
            MAX_STATEMENT_TIMEOUT_MS,
        ),
        ("keepalive_idle_ms", keepalive, 1_000, MAX_KEEPALIVE_IDLE_MS),
    ] {
        if !(min..=max).contains(&millis) {
            return Err((
                key.into(),
                format!("must be between {min} and {max}, not {millis}"),
            ));
        }
    }
    Ok(())
}

impl PostgresSinkConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if quoted_table(&self.table).is_none() {
            return Err((
                "table".into(),
                format!(
                    "`{}` is not a table name; use letters, digits and `_`, optionally `schema.table`",
                    self.table
                ),
            ));
        }
        check_url(&self.url)?;
        check_limits(
            self.connect_timeout_ms,
            self.statement_timeout_ms,
            self.keepalive_idle_ms,
        )?;
        check_tls(self.tls.as_ref())
    }

    /// The time limits of a connection to this table.
    pub(crate) fn limits(&self) -> Limits {
        Limits::from_millis(
            self.connect_timeout_ms,
            self.statement_timeout_ms,
            self.keepalive_idle_ms,
        )
    }
}

/// Writes records into a landing table.
pub struct PostgresSink {
    config: PostgresSinkConfig,
    name: String,
    table: String,
    /// The key field's path, or none: reading a value with it checks that the value is JSON and
    /// finds the key in one pass, building no document.
    key_fields: FieldSet,
    dead_letter: bool,
    limits: Limits,
    encryption: Encryption,
    client: Option<Client>,
    /// The connection [`Sink::warm_up`] is opening, taken by the first write that needs one.
    warming: Mutex<Option<tokio::task::JoinHandle<Result<Client, ConnectorError>>>>,
    /// What the role needs to write rows, said when the server refuses it (SQLSTATE 42501).
    insert_grant: String,
}

/// Rows of one landing INSERT, with the index of the record each came from.
#[derive(Default)]
struct LandingRows<'r> {
    indices: Vec<usize>,
    keys: Vec<String>,
    /// The records' own JSON text, which the server parses into jsonb: a batch holds no parsed
    /// copy of its values (a `Value` of small items takes many times its text).
    values: Vec<&'r str>,
    /// Per row, with `update`, the earlier records of its key in the batch (index and text,
    /// oldest first), which the row overwrites: sent only when PostgreSQL refuses the row.
    superseded: Vec<Vec<(usize, &'r str)>>,
}

impl PostgresSink {
    /// A sink; the connection is opened (and the table created) when the pipeline starts
    /// ([`Sink::warm_up`]) or else on the first write, and again after a failure, so a database
    /// outage only delays the pipeline.
    pub fn new(config: &PostgresSinkConfig, dead_letter: bool) -> Result<Self, ConnectorError> {
        let name = format!("postgres sink {}", config.table);
        let table = quoted_table(&config.table)
            .ok_or_else(|| ConnectorError::fatal(&name, "invalid table name"))?;
        let insert_grant = insert_grant(config, &table, dead_letter);
        Ok(PostgresSink {
            key_fields: FieldSet::as_written(&config.key_field.as_deref().map(FieldPath::parse)),
            limits: config.limits(),
            encryption: Encryption::for_connector(&name, &config.url, config.tls.as_ref())?,
            config: config.clone(),
            name,
            table,
            dead_letter,
            client: None,
            warming: Mutex::new(None),
            insert_grant,
        })
    }

    /// The table's DDL when the sink creates its table, else `None`.
    fn ddl(&self) -> Option<Ddl> {
        self.config.create_table.then(|| Ddl {
            sql: if self.dead_letter {
                self.dead_letter_ddl()
            } else {
                self.landing_ddl()
            },
            refused: format!(
                "create_table = true runs this DDL at every start (the table if missing, {}), which needs CREATE on the table's schema and ownership of the table; set create_table = false, with the table made by its owner (README, PostgreSQL privileges), and {}",
                if self.dead_letter {
                    "the source_id column and its unique index if missing"
                } else {
                    "its NOTIFY trigger replaced"
                },
                self.insert_grant
            ),
        })
    }

    async fn client(&mut self) -> Result<&Client, ConnectorError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            // The warm-up's connection if it opened one; a failed warm-up reported nothing, so
            // the attempt below reports it.
            let warming = self
                .warming
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            let warmed = match warming {
                Some(task) => task.await.ok().and_then(Result::ok),
                None => None,
            };
            let client = match warmed.filter(|client| !client.is_closed()) {
                Some(client) => client,
                None => {
                    let ddl = self.ddl();
                    open(
                        &self.name,
                        &self.config.url,
                        &self.encryption,
                        self.limits,
                        ddl.as_ref(),
                    )
                    .await?
                }
            };
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| ConnectorError::transient(&self.name, "no connection"))
    }

    fn landing_ddl(&self) -> String {
        let table = &self.table;
        let channel = channel_for(&self.config.table);
        let function = format!("\"{channel}_notify\"");
        // Versions before channels were cut to fit named the trigger after the whole channel,
        // which PostgreSQL cut to 63 bytes, and its NOTIFY refused every insert (SQLSTATE
        // 22023): a table such a version made loses that trigger, named as it was made (the
        // server cuts the name the same way). Its function may serve another table's trigger,
        // so it stays.
        let whole = format!("weir_{}", self.config.table.replace('.', "_")).to_lowercase();
        let stale = if whole == channel {
            String::new()
        } else {
            format!("DROP TRIGGER IF EXISTS \"{whole}_notify\" ON {table};")
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id BIGSERIAL PRIMARY KEY,
                key TEXT NOT NULL UNIQUE,
                value JSONB NOT NULL,
                ingested_at TIMESTAMPTZ NOT NULL DEFAULT now());
             {stale}
             CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$;
             CREATE OR REPLACE TRIGGER {function} AFTER INSERT ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
        )
    }

    /// The dead-letter table, and on a table made by an earlier version the `source_id` column
    /// and its unique index, which make a repeated insert of the same dead letter a no-op.
    fn dead_letter_ddl(&self) -> String {
        let table = &self.table;
        let index = source_id_index(&self.config.table);
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id BIGSERIAL PRIMARY KEY,
                key BYTEA,
                value BYTEA NOT NULL,
                headers JSONB NOT NULL,
                error TEXT,
                source_id TEXT,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now());
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS source_id TEXT;
             CREATE UNIQUE INDEX IF NOT EXISTS \"{index}\" ON {table} (source_id);"
        )
    }

    /// The key and JSON text of a record, or why it cannot go into a landing table. Checked
    /// here, per record, because PostgreSQL would fail the whole multi-row INSERT instead. The
    /// value is read once, for the key field and as a check that it is JSON, building no
    /// document (the server parses the text); only a value that may hold a NUL is parsed into
    /// one, to say where. `found` is scratch space for the key field, reused across a batch.
    fn landing_row<'r>(
        &self,
        record: &'r Record,
        found: &mut Vec<Option<Leaf<'r>>>,
    ) -> Result<(String, &'r str), String> {
        // Checked as UTF-8 once, here; parsing text does not check it again.
        let text = std::str::from_utf8(&record.value)
            .map_err(|e| format!("value is not UTF-8 JSON, which a jsonb column needs: {e}"))?;
        self.key_fields
            .read_into(&record.value, found)
            .map_err(|e| format!("value is not JSON, which a jsonb column needs: {e}"))?;
        let hex = self.config.key_encoding == KeyEncoding::Hex;
        let key = match (&self.config.key_field, &record.key) {
            (Some(field), _) => {
                let text = found
                    .first_mut()
                    .and_then(Option::take)
                    .and_then(Leaf::into_text)
                    .ok_or_else(|| format!("key field `{field}` is missing or not a scalar"))?;
                if hex {
                    hex::encode(text.as_bytes())
                } else {
                    text.into_owned()
                }
            }
            (None, Some(key)) if hex => hex::encode(key),
            (None, Some(key)) => String::from_utf8(key.to_vec()).map_err(|_| {
                format!(
                    "record key 0x{} is not UTF-8, and the text key column would alter it; set key_encoding = \"hex\" to store keys as hex",
                    hex::encode(key)
                )
            })?,
            (None, None) => hex::encode(Sha256::digest(&record.value)),
        };
        if key.contains('\0') {
            return Err(format!(
                "key `{}` holds a NUL character, which the text key column cannot store; set key_encoding = \"hex\" to store keys as hex",
                key.escape_debug()
            ));
        }
        // A NUL reaches JSON text only as the escape `\u0000` (a raw control character is not
        // JSON), so only a value holding that escape is parsed to find where it is.
        let nul = if memchr::memmem::find(text.as_bytes(), b"\\u0000").is_some() {
            serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|value| nul_in(&value, String::new()))
        } else {
            None
        };
        if let Some(path) = nul {
            return Err(format!(
                "value holds a NUL character (\\u0000) at `{}`, which a jsonb column cannot store",
                if path.is_empty() { "/" } else { &path }
            ));
        }
        Ok((key, text))
    }

    /// The landing INSERT. Writers of one landing table (pipelines, processes of a fleet) take
    /// turns: each INSERT first takes a transaction-scoped advisory lock on the table, so the
    /// ids it draws commit before any drawn after them. Otherwise a `postgres` source tailing
    /// the table could read a later writer's higher ids while an earlier one's lower ids were
    /// still uncommitted, and pass over those for good. The lock is taken before the first row
    /// draws its id (the rows come from the join with it) and held until the statement commits.
    fn landing_statement(&self) -> String {
        let table = &self.table;
        let insert = format!(
            "WITH turn AS MATERIALIZED (SELECT pg_advisory_xact_lock(({LANDING_LOCK_SPACE}::bigint << 32) | '{table}'::regclass::oid::bigint)) \
             INSERT INTO {table} AS t (key, value) SELECT k, v::jsonb FROM turn, UNNEST($1::text[], $2::text[]) AS u(k, v)"
        );
        match self.config.on_conflict {
            OnConflict::Ignore => format!("{insert} ON CONFLICT (key) DO NOTHING"),
            // Taking the new row's id moves the row to the end of the tail order; an identical
            // value (a retried batch) changes nothing, so a retry is not seen twice downstream.
            OnConflict::Update => format!(
                "{insert} ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, id = EXCLUDED.id, ingested_at = EXCLUDED.ingested_at WHERE t.value IS DISTINCT FROM EXCLUDED.value"
            ),
        }
    }

    async fn write_landing(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let mut rows = LandingRows::default();
        let mut rejected = Vec::new();
        // One statement cannot update a row twice, so with `update` only the last record per
        // key is sent: the earlier ones would be overwritten by it anyway. They are kept aside
        // in case PostgreSQL refuses the last one.
        let mut last: HashMap<String, usize> = HashMap::new();
        let mut found = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match self.landing_row(record, &mut found) {
                Ok((key, value)) => {
                    if self.config.on_conflict == OnConflict::Update {
                        if let Some(&earlier) = last.get(&key) {
                            let replaced = (rows.indices[earlier], rows.values[earlier]);
                            rows.superseded[earlier].push(replaced);
                            rows.values[earlier] = value;
                            rows.indices[earlier] = index;
                            continue;
                        }
                        last.insert(key.clone(), rows.keys.len());
                    }
                    rows.indices.push(index);
                    rows.keys.push(key);
                    rows.values.push(value);
                    rows.superseded.push(Vec::new());
                }
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        if rows.keys.is_empty() {
            return Ok(rejected);
        }
        let statement = self.landing_statement();
        match self
            .insert_landing(&statement, &rows.keys, &rows.values)
            .await?
        {
            Ok(written) => self.count_ignored(rows.keys.len(), written),
            Err(error) if refused_row(&error).is_some() => {
                // A row's data was refused (another unique constraint than the key's, a number
                // jsonb cannot hold, a key too long for the index): which row, only a row at a
                // time can tell.
                rejected.extend(self.write_landing_one_by_one(&statement, rows).await?);
                rejected.sort_by_key(|r| r.index);
            }
            Err(error) => return Err(self.landing_error(error)),
        }
        Ok(rejected)
    }

    /// Each row in its own INSERT: the ones PostgreSQL refuses for their data are dead-lettered
    /// with its reason; any other failure fails the write. A refused row's key then takes the
    /// latest of the batch's earlier records of that key that PostgreSQL accepts, as if the
    /// batch had been written a record at a time (each one refused is dead-lettered too).
    async fn write_landing_one_by_one(
        &mut self,
        statement: &str,
        rows: LandingRows<'_>,
    ) -> Result<Vec<Rejected>, ConnectorError> {
        let mut rejected = Vec::new();
        let LandingRows {
            indices,
            keys,
            values,
            superseded,
        } = rows;
        for (((index, key), value), earlier) in
            indices.into_iter().zip(keys).zip(values).zip(superseded)
        {
            let candidates = std::iter::once((index, value)).chain(earlier.into_iter().rev());
            for (index, value) in candidates {
                match self
                    .insert_landing(statement, std::slice::from_ref(&key), &[value])
                    .await?
                {
                    Ok(written) => {
                        self.count_ignored(1, written);
                        break;
                    }
                    Err(error) => match refused_row(&error) {
                        Some(db) => rejected.push(Rejected {
                            index,
                            reason: refusal_reason(db),
                        }),
                        None => return Err(self.landing_error(error)),
                    },
                }
            }
        }
        Ok(rejected)
    }

    /// One landing INSERT under the statement limit. The outer error is a connection that no
    /// longer answers (already dropped); the inner one is the server's, left to the caller.
    async fn insert_landing(
        &mut self,
        statement: &str,
        keys: &[String],
        values: &[&str],
    ) -> Result<Result<u64, tokio_postgres::Error>, ConnectorError> {
        let (name, limits) = (self.name.clone(), self.limits);
        let client = self.client().await?;
        let result = limits
            .bounded(
                &name,
                "insert failed",
                client.execute(statement, &[&keys, &values]),
            )
            .await;
        if !matches!(result, Ok(Ok(_))) {
            // A failed statement may leave the connection in any state: start afresh.
            self.client = None;
        }
        result
    }

    fn count_ignored(&self, sent: usize, written: u64) {
        let ignored = (sent as u64).saturating_sub(written);
        if self.config.on_conflict == OnConflict::Ignore && ignored > 0 {
            count_ignored(&self.config.table, ignored);
            tracing::debug!(table = %self.config.table, ignored, "Records with a stored key ignored (on_conflict = \"ignore\").");
        }
    }

    /// An INSERT's failure that concerns the table itself: a missing table or a table whose
    /// columns or constraints are not a landing (or dead-letter) table's stops the pipeline with
    /// the fix; the rest is classified as usual.
    fn table_error(&self, error: tokio_postgres::Error, needs: &str) -> ConnectorError {
        let insert = Step::needing("insert failed", &self.insert_grant);
        let Some(code) = error.code().cloned() else {
            return classify(&self.name, insert, error);
        };
        let fix = if code == SqlState::UNDEFINED_TABLE {
            if self.config.create_table {
                // Dropped while the sink ran: reconnecting creates it again.
                return ConnectorError::transient(
                    &self.name,
                    format!(
                        "table `{}` is gone (SQLSTATE 42P01); it is created again",
                        self.config.table
                    ),
                );
            }
            format!(
                "table `{}` does not exist (SQLSTATE 42P01); create it, or set create_table = true so the sink creates it",
                self.config.table
            )
        } else if code == SqlState::UNDEFINED_COLUMN || code == SqlState::INVALID_COLUMN_REFERENCE {
            format!(
                "table `{}` is not shaped as the sink needs ({}, SQLSTATE {}): it needs {needs}; alter it, or let the sink create a new table (create_table = true)",
                self.config.table,
                server_words(&error),
                code.code()
            )
        } else {
            return classify(&self.name, insert, error);
        };
        ConnectorError::fatal(&self.name, fix)
    }

    fn landing_error(&self, error: tokio_postgres::Error) -> ConnectorError {
        self.table_error(
            error,
            "columns id (bigserial), key (text, unique) and value (jsonb), and ingested_at (timestamptz) for on_conflict = \"update\"",
        )
    }

    async fn write_dead_letters(
        &mut self,
        records: &[Record],
    ) -> Result<Vec<Rejected>, ConnectorError> {
        let keys: Vec<Option<&[u8]>> = records.iter().map(|r| r.key.as_deref()).collect();
        let values: Vec<&[u8]> = records.iter().map(|r| &r.value[..]).collect();
        // A dead-letter table refuses nothing, and NUL is the one thing jsonb and text cannot
        // hold; key and value are bytea, so only the headers and the error need care.
        let header_maps: Vec<Value> = records.iter().map(dead_letter_headers).collect();
        let errors: Vec<Option<String>> = records
            .iter()
            .map(|r| {
                r.header_str(headers::ERROR)
                    .map(|e| e.replace('\0', "\\u0000"))
            })
            .collect();
        let source_ids = source_ids(records);
        let statement = format!(
            "INSERT INTO {} (key, value, headers, error, source_id) SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::jsonb[], $4::text[], $5::text[]) ON CONFLICT (source_id) DO NOTHING",
            self.table
        );
        let (name, limits) = (self.name.clone(), self.limits);
        let client = self.client().await?;
        let result = limits
            .bounded(
                &name,
                "insert failed",
                client.execute(
                    &statement,
                    &[&keys, &values, &header_maps, &errors, &source_ids],
                ),
            )
            .await;
        match result {
            Ok(Ok(_)) => Ok(Vec::new()),
            Ok(Err(error)) => {
                self.client = None;
                Err(self.table_error(
                    error,
                    "columns key (bytea), value (bytea), headers (jsonb), error (text) and source_id (text) with a unique index on source_id",
                ))
            }
            Err(error) => {
                self.client = None;
                Err(error)
            }
        }
    }
}

/// The high half of the advisory lock keys landing tables take turns on (their oid is the low
/// half): "weir" in ASCII, so that they stay clear of an application's own small keys.
const LANDING_LOCK_SPACE: i64 = 0x7765_6972;

/// The statements that create the sink's table (or bring one made by an earlier version up to
/// date), and what to do when the server refuses the role the right to run them.
struct Ddl {
    sql: String,
    refused: String,
}

/// Connects, and creates the table with `ddl` where the sink creates it.
async fn open(
    name: &str,
    url: &Secret,
    encryption: &Encryption,
    limits: Limits,
    ddl: Option<&Ddl>,
) -> Result<Client, ConnectorError> {
    let client = connect(name, url, encryption, limits, None).await?;
    if let Some(ddl) = ddl {
        limits
            .statement(
                name,
                Step::needing("cannot create the table", &ddl.refused),
                client.batch_execute(&ddl.sql),
            )
            .await?;
    }
    Ok(client)
}

/// What the role needs to write the sink's rows, as the GRANTs to run: INSERT and SELECT on the
/// table (an `ON CONFLICT` target is read), UPDATE too for a landing table's `on_conflict =
/// "update"`, and USAGE on the sequence that numbers its rows.
fn insert_grant(config: &PostgresSinkConfig, table: &str, dead_letter: bool) -> String {
    let grantee = Grantee::of(&config.url);
    let privileges = if !dead_letter && config.on_conflict == OnConflict::Update {
        "INSERT, SELECT, UPDATE"
    } else {
        "INSERT, SELECT"
    };
    // BIGSERIAL's sequence is named after the table, in the table's schema.
    let sequence = match config.table.rsplit_once('.') {
        Some((schema, name)) => format!("\"{schema}\".\"{name}_id_seq\""),
        None => format!("\"{}_id_seq\"", config.table),
    };
    format!(
        "run `{}; {}` as the table's owner (the sequence of its id column, so named when the sink made the table)",
        grantee.grant(privileges, table),
        grantee.grant("USAGE", &format!("SEQUENCE {sequence}"))
    )
}

/// The longest `source_id`: longer ids (a long stream name) are replaced by their digest, so
/// every id fits the unique index (a btree entry holds 2704 bytes).
const MAX_SOURCE_ID_BYTES: usize = 512;

/// The idempotency key of each dead letter: the pipeline and source coordinates its headers
/// carry, its rank among the batch's dead letters from the same source record (one input can
/// fail as several outputs), and a digest of its content (key, value and error), as the JSON
/// array `[pipeline, stream, partition, offset, rank, "content digest"]`, or `sha256:` and the
/// hex digest of that array when it is longer than [`MAX_SOURCE_ID_BYTES`]. A retried batch
/// yields the same ids, so a retry after an ambiguous failure (the INSERT committed, its answer
/// was lost) writes nothing twice; a different record at the same position (a source that
/// starts again at offset 0, a topic created anew) has another digest and is stored too. A
/// record without coordinates gets none and is always inserted.
fn source_ids(records: &[Record]) -> Vec<Option<String>> {
    let mut ranks: HashMap<String, u32> = HashMap::new();
    records
        .iter()
        .map(|record| {
            let header = |name| record.header_str(name);
            let coordinates = serde_json::json!([
                header(headers::PIPELINE)?,
                header(headers::SOURCE_STREAM)?,
                header(headers::SOURCE_PARTITION)?.parse::<i64>().ok()?,
                header(headers::SOURCE_OFFSET)?.parse::<i64>().ok()?,
            ])
            .to_string();
            let rank = ranks.entry(coordinates.clone()).or_default();
            let id = format!(
                "{},{rank},\"{}\"]",
                coordinates.strip_suffix(']')?,
                content_digest(record)
            );
            *rank += 1;
            Some(if id.len() > MAX_SOURCE_ID_BYTES {
                format!("sha256:{}", hex::encode(Sha256::digest(&id)))
            } else {
                id
            })
        })
        .collect()
}

/// The first 16 bytes, in hex, of the sha256 of a dead letter's key (or its absence), value and
/// error, each prefixed with its length so no two contents read alike.
fn content_digest(record: &Record) -> String {
    let mut digest = Sha256::new();
    let mut field = |bytes: Option<&[u8]>| match bytes {
        Some(bytes) => {
            digest.update([1]);
            digest.update((bytes.len() as u64).to_be_bytes());
            digest.update(bytes);
        }
        None => digest.update([0]),
    };
    field(record.key.as_deref());
    field(Some(&record.value));
    field(record.header(headers::ERROR));
    hex::encode(&digest.finalize()[..16])
}

/// Whether a failed landing INSERT was refused for the data of a row, which the same row would
/// meet again after any number of retries: a data exception (class 22: a number jsonb cannot
/// hold, a string too long for its column), a value too large for an index or nested too deep
/// (54000, 54001), or a constraint that judges the row (unique, exclusion, check). Connection,
/// server and table-shape failures (a missing column, a NOT NULL column the sink does not fill,
/// a foreign key that another row may satisfy later) are not, and neither is an invalid
/// parameter value (22023): a function the statement or a trigger calls was given a bad
/// argument (`pg_notify` a channel name too long), which every row would meet alike, so
/// dead-lettering row after row would only empty the pipeline into the dead-letter destination.
/// The server's answer when it is such a refusal; an error without one (the connection's) never
/// is.
fn refused_row(error: &tokio_postgres::Error) -> Option<&DbError> {
    let db = error.as_db_error()?;
    let code = db.code();
    let refused = (code.code().starts_with("22") && code != &SqlState::INVALID_PARAMETER_VALUE)
        || [
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            SqlState::STATEMENT_TOO_COMPLEX,
            SqlState::UNIQUE_VIOLATION,
            SqlState::EXCLUSION_VIOLATION,
            SqlState::CHECK_VIOLATION,
        ]
        .contains(code);
    refused.then_some(db)
}

/// Why PostgreSQL refused a row, in its own words (message, detail, hint), with the SQLSTATE.
/// The detail can quote the row: the dead letter bounds it, as every reason
/// (`RecordError::bounded_message`).
fn refusal_reason(db: &DbError) -> String {
    let code = db.code().code();
    if db.code() == &SqlState::UNIQUE_VIOLATION {
        format!(
            "unique constraint `{}` of the landing table refused it (SQLSTATE {code}): {}",
            db.constraint().unwrap_or("?"),
            db.detail().unwrap_or("no detail")
        )
    } else {
        let mut reason = format!("PostgreSQL refused it (SQLSTATE {code}): {}", db.message());
        for part in [db.detail(), db.hint()].into_iter().flatten() {
            reason.push_str("; ");
            reason.push_str(part);
        }
        reason
    }
}

/// The name of a dead-letter table's unique index on `source_id`: derived from the table's
/// name and short enough for any (an identifier holds 63 bytes).
fn source_id_index(table: &str) -> String {
    format!("weir_dlq_{}", &hex::encode(Sha256::digest(table))[..16])
}

/// The JSON pointer of the first string or object key in `value` holding a NUL character
/// (jsonb rejects `\u0000`: SQLSTATE 22P05), below `at`.
fn nul_in(value: &Value, at: String) -> Option<String> {
    // A pointer segment as RFC 6901 spells it, with a NUL shown rather than carried along.
    let escape = |segment: &str| {
        segment
            .replace('~', "~0")
            .replace('/', "~1")
            .replace('\0', "\\0")
    };
    match value {
        Value::String(text) => text.contains('\0').then_some(at),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, format!("{at}/{i}"))),
        Value::Object(fields) => fields.iter().find_map(|(name, field)| {
            let path = format!("{at}/{}", escape(name));
            if name.contains('\0') {
                Some(path)
            } else {
                nul_in(field, path)
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// A dead letter's headers as jsonb: the envelope's, with any header holding a NUL stored the
/// way the envelope stores bytes that are not text, `{"hex": ...}`, and a header whose name
/// holds one under `hex:` and the name's hex. Nothing is lost either way.
fn dead_letter_headers(record: &Record) -> Value {
    let Value::Object(headers) = crate::connectors::encoding::envelope(record)["headers"].take()
    else {
        return Value::Object(serde_json::Map::new());
    };
    let headers = headers
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) if text.contains('\0') => {
                    serde_json::json!({ "hex": hex::encode(text) })
                }
                other => other,
            };
            if name.contains('\0') {
                (format!("hex:{}", hex::encode(&name)), value)
            } else {
                (name, value)
            }
        })
        .collect();
    Value::Object(headers)
}

#[async_trait]
impl Sink for PostgresSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        if self.dead_letter {
            self.write_dead_letters(records).await
        } else {
            self.write_landing(records).await
        }
    }

    /// Connects (and creates the table where `create_table` says so) in a task of its own; the
    /// first write takes that connection, or connects itself and reports why it cannot.
    fn warm_up(&self) {
        let (name, url, encryption) = (
            self.name.clone(),
            self.config.url.clone(),
            self.encryption.clone(),
        );
        let (limits, ddl) = (self.limits, self.ddl());
        let task = tokio::spawn(async move {
            let opened = open(&name, &url, &encryption, limits, ddl.as_ref()).await;
            if let Err(error) = &opened {
                tracing::info!(sink = %name, %error, "Could not connect at start; the first write will try again.");
            }
            opened
        });
        *self
            .warming
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_nul_jsonb_cannot_hold() {
        let at = |value: Value| nul_in(&value, String::new());
        assert_eq!(
            at(json!({"a": [1, "ok", {"b": "x\0y"}]})).as_deref(),
            Some("/a/2/b")
        );
        assert_eq!(at(json!({"a\0": 1})).as_deref(), Some("/a\\0"));
        assert_eq!(at(json!("\0")).as_deref(), Some(""));
        assert_eq!(at(json!({"a/b": {"c": "ok"}, "n": null})), None);
    }

    #[test]
    fn a_landing_row_is_the_records_own_text_or_says_why_it_cannot_be() {
        let config: PostgresSinkConfig =
            toml::from_str("url = \"postgres://weir@127.0.0.1/weir\"\ntable = \"t\"").unwrap();
        let sink = PostgresSink::new(&config, false).unwrap();
        let record = Record::from_value(r#"{"n": 12345678901234567890123}"#);
        let (_, text) = sink.landing_row(&record, &mut Vec::new()).unwrap();
        assert_eq!(text, r#"{"n": 12345678901234567890123}"#);
        let invalid = Record::from_value(vec![b'"', 0xff, b'"']);
        let not_utf8 = sink
            .landing_row(&invalid, &mut Vec::new())
            .map(|(_, text)| text.to_owned());
        assert!(
            not_utf8
                .as_ref()
                .unwrap_err()
                .starts_with("value is not UTF-8 JSON"),
            "{not_utf8:?}"
        );
        let unfinished = Record::from_value("{");
        let not_json = sink
            .landing_row(&unfinished, &mut Vec::new())
            .map(|(_, text)| text.to_owned());
        assert!(
            not_json
                .as_ref()
                .unwrap_err()
                .starts_with("value is not JSON"),
            "{not_json:?}"
        );
    }

    #[test]
    fn a_nul_is_found_with_or_without_a_key_field_and_only_where_there_is_one() {
        for extra in ["", "\nkey_field = \"id\""] {
            let config: PostgresSinkConfig = toml::from_str(&format!(
                "url = \"postgres://weir@127.0.0.1/weir\"\ntable = \"t\"{extra}"
            ))
            .unwrap();
            let sink = PostgresSink::new(&config, false).unwrap();
            let row = |text: &str| {
                sink.landing_row(&Record::from_value(text.to_owned()), &mut Vec::new())
                    .map(|(_, text)| text.to_owned())
            };
            let refused = row(r#"{"id": 1, "a": [{"b": "x\u0000y"}]}"#).unwrap_err();
            assert!(
                refused.contains("NUL character (\\u0000) at `/a/0/b`"),
                "{extra}: {refused}"
            );
            // A backslash followed by `u0000` is text, not a NUL.
            let text = r#"{"id": 2, "path": "C:\\u0000"}"#;
            assert_eq!(row(text).as_deref(), Ok(text), "{extra}");
            let trailing = row(r#"{"id": 3} x"#).unwrap_err();
            assert!(
                trailing.starts_with("value is not JSON"),
                "{extra}: {trailing}"
            );
        }
    }

    #[test]
    fn a_numeric_key_field_is_the_number_as_the_record_writes_it() {
        let config: PostgresSinkConfig = toml::from_str(
            "url = \"postgres://weir@127.0.0.1/weir\"\ntable = \"t\"\nkey_field = \"id\"",
        )
        .unwrap();
        let sink = PostgresSink::new(&config, false).unwrap();
        let key = |text: &str| {
            sink.landing_row(&Record::from_value(text.to_owned()), &mut Vec::new())
                .map(|(key, _)| key)
        };
        // Through a double these two would be one key, and one row would overwrite the other.
        let one = "123456789012345678901234567890";
        let two = "123456789012345678901234567891";
        assert_eq!(key(&format!(r#"{{"id": {one}}}"#)).as_deref(), Ok(one));
        assert_eq!(key(&format!(r#"{{"id": {two}}}"#)).as_deref(), Ok(two));
        assert_eq!(key(r#"{"id": 1.50}"#).as_deref(), Ok("1.50"));
        assert_eq!(key(r#"{"id": -7}"#).as_deref(), Ok("-7"));
        assert_eq!(key(r#"{"id": "u1"}"#).as_deref(), Ok("u1"));
    }

    #[test]
    fn dead_letter_headers_keep_nul_bytes_as_hex() {
        let mut record = Record::from_value("v");
        record.set_header("weir.error", "bad \0 value");
        record.set_header("plain", "text");
        record.set_header("odd\0name", "x");
        let stored = dead_letter_headers(&record);
        assert_eq!(
            stored["weir.error"],
            json!({ "hex": hex::encode("bad \0 value") })
        );
        assert_eq!(stored["plain"], "text");
        assert_eq!(stored[format!("hex:{}", hex::encode("odd\0name"))], "x");
    }
}
