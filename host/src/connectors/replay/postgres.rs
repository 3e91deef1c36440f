//! Dead letters from a `postgres` destination: the rows not yet replayed, by id, up to the
//! highest id at opening. Progress is per row, a `replayed_at` column (added if missing) set
//! only once the row's record was acknowledged, so a filter that skips a row never marks it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Row};

use super::{DeadLetterReader, Entry, headers_from_json};
use crate::connectors::postgres::PostgresSinkConfig;
use crate::connectors::postgres::client::{Encryption, Limits, connect};
use crate::connectors::postgres::privileges::{Grantee, Step};
use crate::connectors::{ConnectorError, ErrorKind};
use crate::record::{Record, SourcePosition};

/// Bytes of keys and values one read fetches beyond its first row: a dead-letter table may hold
/// large records whole (a sink's refusal of a plugin's output, or a source's record under a raised
/// `max_record_bytes`), and a read of a batch of them must not hold them all at once. The server
/// leaves out the rows past it, which the next read fetches.
const READ_BYTES: i64 = 64 << 20;

/// Reads a dead-letter table up to its highest id at opening.
pub struct PostgresReader {
    name: String,
    table: String,
    stream: Arc<str>,
    url: crate::secret::Secret,
    /// How the connection is encrypted, from the dead-letter table's `tls` table.
    encryption: Encryption,
    /// The connection's time limits, from the dead-letter table's `*_ms` options.
    limits: Limits,
    /// The connection; `None` after a statement failed or ran past its limit, so the next
    /// statement opens a new one and a late answer is never read as another's.
    client: Option<Client>,
    /// What the role needs to read and mark the rows, said when the server refuses it.
    grant: String,
    /// The id read last.
    after: i64,
    /// The highest id at opening.
    end: i64,
    /// The condition of a row not yet replayed.
    unreplayed: &'static str,
    remaining: u64,
}

impl PostgresReader {
    /// Connects, adds the `replayed_at` column if missing, and finds the rows to replay.
    /// A `dry_run` adds no column.
    pub async fn open(config: &PostgresSinkConfig, dry_run: bool) -> Result<Self, ConnectorError> {
        let name = format!("dead-letter table {}", config.table);
        // The config was validated: `table` or `schema.table` of plain identifiers.
        let table = config
            .table
            .split('.')
            .map(|part| format!("\"{part}\""))
            .collect::<Vec<_>>()
            .join(".");
        let limits = config.limits();
        let encryption = Encryption::for_connector(&name, &config.url, config.tls.as_ref())?;
        let client = connect(&name, &config.url, &encryption, limits, None).await?;
        let grantee = Grantee::of(&config.url);
        let grant = format!(
            "run `{}` as its owner",
            grantee.grant("SELECT, UPDATE", &table)
        );
        let has_column: bool = limits
            .statement(
                &name,
                "cannot look for the replayed_at column",
                client.query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1)
                     AND attname = 'replayed_at' AND NOT attisdropped)",
                    &[&table],
                ),
            )
            .await?
            .get(0);
        // A dry run changes nothing, so it adds no column: without one, no row was replayed.
        // The column is added only where missing: ALTER TABLE needs the table's ownership even
        // when there is nothing to add, which a least-privilege role does not hold.
        let marked = has_column || !dry_run;
        if !has_column && !dry_run {
            let add_column =
                format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS replayed_at TIMESTAMPTZ");
            let refused = format!(
                "a replay marks each replayed row in column replayed_at, added where missing, which needs ownership of the table: run `{add_column}; {}` as its owner",
                grantee.grant("SELECT, UPDATE", &table)
            );
            limits
                .statement(
                    &name,
                    Step::needing("cannot add the replayed_at column", &refused),
                    client.batch_execute(&add_column),
                )
                .await?;
        }
        let unreplayed = if marked {
            "replayed_at IS NULL"
        } else {
            "TRUE"
        };
        let count = format!(
            "SELECT COALESCE(max(id), 0), count(*) FILTER (WHERE {unreplayed}) FROM {table}"
        );
        let row = limits
            .statement(
                &name,
                Step::needing("cannot count the rows to replay", &grant),
                client.query_one(&count, &[]),
            )
            .await?;
        let taken = |index| {
            row.try_get::<_, i64>(index).map_err(|e| {
                ConnectorError::fatal(
                    &name,
                    format!("cannot count the rows to replay: {e}; the table's id must be a bigint (bigserial) as the dead-letter destination creates it"),
                )
            })
        };
        let end = taken(0)?;
        let remaining = taken(1)?;
        Ok(PostgresReader {
            name,
            stream: Arc::from(config.table.as_str()),
            table,
            url: config.url.clone(),
            encryption,
            limits,
            client: Some(client),
            grant,
            after: 0,
            end,
            unreplayed,
            remaining: u64::try_from(remaining).unwrap_or(0),
        })
    }
}

impl PostgresReader {
    /// Runs one statement on the connection, opened again if it was lost or dropped (a
    /// database restart only delays a replay), under the dead-letter table's statement limit.
    /// The connection is dropped when the statement fails or gets no answer in time.
    async fn run<T>(
        &mut self,
        what: &str,
        statement: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, ConnectorError> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => connect(&self.name, &self.url, &self.encryption, self.limits, None).await?,
        };
        let result = self
            .limits
            .statement(
                &self.name,
                Step::needing(what, &self.grant),
                statement(&client),
            )
            .await;
        if result.is_ok() {
            self.client = Some(client);
        }
        result
    }
}

/// Column `index` (`column`) of the row with `id`, or why it cannot be read: a NULL where the
/// dead-letter destination's table has none (`value`, `headers`), or another type than its
/// (a table made by hand, `create_table = false`). Fatal: the row stays as it is until fixed.
fn column<'a, T: FromSql<'a>>(
    name: &str,
    row: &'a Row,
    id: i64,
    index: usize,
    column: &str,
) -> Result<T, ConnectorError> {
    row.try_get(index).map_err(|e| {
        ConnectorError::fatal(
            name,
            format!(
                "row {id}: column `{column}` cannot be read ({e}); a dead letter needs key bytea, value bytea NOT NULL, headers jsonb NOT NULL and created_at timestamptz: fix the row or set its replayed_at"
            ),
        )
    })
}

#[async_trait]
impl DeadLetterReader for PostgresReader {
    async fn read(&mut self, max: usize) -> Result<Option<Vec<Entry>>, ConnectorError> {
        if self.after >= self.end {
            return Ok(None);
        }
        let limit = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        // The next `limit` rows, then of those only the ones that start within `READ_BYTES` of
        // the first (the first always does), measured and left out by the server. A NULL counts
        // as no bytes, so a row holding one is read (and refused, naming it), not left out.
        let statement = format!(
            "SELECT id, key, value, headers, ms FROM (
                SELECT *, (sum(size) OVER (ORDER BY id))::bigint - size AS before FROM (
                    SELECT id, key, value, headers,
                           (extract(epoch FROM created_at) * 1000)::bigint AS ms,
                           coalesce(octet_length(value), 0)::bigint + coalesce(octet_length(key), 0) AS size
                    FROM {} WHERE {} AND id > $1 AND id <= $2 ORDER BY id LIMIT $3
                ) AS batch
             ) AS sized WHERE before < $4 ORDER BY id",
            self.table, self.unreplayed
        );
        let (after, end) = (self.after, self.end);
        let rows = self
            .run("cannot read dead letters", async |client| {
                client
                    .query(&statement, &[&after, &end, &limit, &READ_BYTES])
                    .await
            })
            .await?;
        if rows.is_empty() {
            self.after = self.end;
            return Ok(None);
        }
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row
                .try_get(0)
                .map_err(|e| ConnectorError::fatal(&self.name, format!("a row's id: {e}")))?;
            let headers: Value = column(&self.name, &row, id, 3, "headers")?;
            let headers = headers_from_json(Some(&headers)).map_err(|problem| {
                ConnectorError::new(
                    ErrorKind::Fatal,
                    &self.name,
                    format!("row {id}: {problem}; fix the row's headers or set its replayed_at"),
                )
            })?;
            let time: Option<i64> = column(&self.name, &row, id, 4, "created_at")?;
            let key: Option<Vec<u8>> = column(&self.name, &row, id, 1, "key")?;
            let value: Vec<u8> = column(&self.name, &row, id, 2, "value")?;
            self.after = id;
            entries.push(Entry {
                record: Record {
                    key: key.map(Bytes::from),
                    value: Bytes::from(value),
                    headers,
                    timestamp: None,
                },
                position: SourcePosition {
                    stream: Arc::clone(&self.stream),
                    partition: 0,
                    offset: id,
                },
                time,
            });
        }
        Ok(Some(entries))
    }

    async fn commit(
        &mut self,
        replayed: &[SourcePosition],
        _highest: &[SourcePosition],
    ) -> Result<(), ConnectorError> {
        if replayed.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = replayed.iter().map(|p| p.offset).collect();
        let statement = format!(
            "UPDATE {} SET replayed_at = now() WHERE id = ANY($1)",
            self.table
        );
        self.run("cannot mark rows replayed", async |client| {
            client.execute(&statement, &[&ids]).await
        })
        .await?;
        Ok(())
    }

    fn remaining(&self) -> u64 {
        self.remaining
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
