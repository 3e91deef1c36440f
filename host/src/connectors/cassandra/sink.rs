//! Writes records to a Cassandra table with a prepared, idempotent INSERT per record, run with
//! bounded concurrency; the batch is acknowledged when every insert succeeded.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{BadQuery, DbError, ExecutionError, PrepareError, RequestAttemptError};
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use serde::Deserialize;
use serde_json::Value;

use super::columns::{ColumnType, to_cql};
use crate::connectors::fields::pointer;
use crate::connectors::{Cause, ConfigProblem, ConnectorError, ErrorKind, Rejected, Sink};
use crate::record::Record;

/// Consistency levels the sink may write at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteConsistency {
    /// One replica.
    One,
    /// A majority in the local datacenter (the default).
    #[default]
    LocalQuorum,
    /// A majority of all replicas.
    Quorum,
    /// Every replica.
    All,
}

impl WriteConsistency {
    fn to_driver(self) -> Consistency {
        match self {
            WriteConsistency::One => Consistency::One,
            WriteConsistency::LocalQuorum => Consistency::LocalQuorum,
            WriteConsistency::Quorum => Consistency::Quorum,
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
    /// Inserts in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Create the keyspace and table when missing, with this schema.
    #[serde(default)]
    pub create: Option<CreateTable>,
}

fn default_concurrency() -> usize {
    64
}

impl CassandraSinkConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.nodes.is_empty() {
            return Err(("nodes".into(), "must list at least one node".into()));
        }
        for (key, name) in [("keyspace", &self.keyspace), ("table", &self.table)] {
            if !is_identifier(name) {
                return Err((key.into(), format!("`{name}` is not a CQL name")));
            }
        }
        if self.concurrency == 0 {
            return Err(("concurrency".into(), "must be at least 1".into()));
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
                .find(|(_, t)| ColumnType::parse(t).is_none())
            {
                return Err((
                    format!("create.columns.{column}"),
                    format!(
                        "type `{kind}` is not supported; use text, int, bigint, boolean, timestamp, uuid or double"
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

/// One column the INSERT binds.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: ColumnType,
    /// The CQL type as the table declares it (`ascii` and `text` share a [`ColumnType`]).
    declared: String,
    pointer: String,
    primary_key: bool,
}

/// The connected session and the prepared statement.
struct Prepared {
    session: Arc<Session>,
    insert: PreparedStatement,
    columns: Arc<Vec<Column>>,
}

/// Writes records to one table.
pub struct CassandraSink {
    config: CassandraSinkConfig,
    name: String,
    prepared: Option<Prepared>,
}

impl CassandraSink {
    /// A sink; it connects, creates and prepares on first write, and again after a failure.
    pub fn new(config: &CassandraSinkConfig) -> Self {
        CassandraSink {
            name: format!("cassandra sink {}.{}", config.keyspace, config.table),
            config: config.clone(),
            prepared: None,
        }
    }

    async fn prepare(&mut self) -> Result<&Prepared, ConnectorError> {
        if self.prepared.is_none() {
            self.prepared = Some(self.connect().await?);
        }
        self.prepared
            .as_ref()
            .ok_or_else(|| ConnectorError::transient(&self.name, "not connected"))
    }

    async fn connect(&self) -> Result<Prepared, ConnectorError> {
        let transient =
            |what: &str, e: Cause| ConnectorError::transient(&self.name, what).caused_by(e);
        // A refusal by the server here is about the schema or permissions, not a record: only
        // outages are worth retrying.
        let classified = |what: &str, e: ExecutionError| {
            let kind = match classify(&e) {
                Failure::Transient => ErrorKind::Transient,
                Failure::Record | Failure::Invalid | Failure::Config => ErrorKind::Fatal,
            };
            ConnectorError::new(kind, &self.name, what).caused_by(e)
        };
        let session = SessionBuilder::new()
            .known_nodes(&self.config.nodes)
            .build()
            .await
            .map_err(|e| {
                transient(
                    &format!("cannot connect to {}", self.config.nodes.join(",")),
                    e.into(),
                )
            })?;
        let (keyspace, table) = (&self.config.keyspace, &self.config.table);
        if let Some(create) = &self.config.create {
            let keyspace_ddl = format!(
                "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                create.replication_factor
            );
            let columns: Vec<String> = create
                .columns
                .iter()
                .map(|(c, t)| format!("{c} {t}"))
                .collect();
            let table_ddl = format!(
                "CREATE TABLE IF NOT EXISTS {keyspace}.{table} ({}, PRIMARY KEY ({}))",
                columns.join(", "),
                create.primary_key.join(", ")
            );
            for ddl in [keyspace_ddl, table_ddl] {
                session
                    .query_unpaged(ddl.as_str(), &[])
                    .await
                    .map_err(|e| classified("cannot create the keyspace or table", e))?;
            }
        }
        let rows = session
            .query_unpaged(
                "SELECT column_name, type, kind FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
                (keyspace.as_str(), table.as_str()),
            )
            .await
            .map_err(|e| classified("cannot read the table's columns", e))?
            .into_rows_result()
            .map_err(|e| transient("cannot read the table's columns", e.into()))?;
        let mut columns = Vec::new();
        for row in rows
            .rows::<(String, String, String)>()
            .map_err(|e| transient("cannot read the table's columns", e.into()))?
        {
            let (name, kind, role) =
                row.map_err(|e| transient("cannot read the table's columns", e.into()))?;
            let field = self
                .config
                .columns
                .get(&name)
                .cloned()
                .unwrap_or_else(|| name.clone());
            let declared = kind;
            let kind = ColumnType::parse(&declared).ok_or_else(|| {
                ConnectorError::fatal(
                    &self.name,
                    format!("column `{name}` has type `{declared}`, which the sink cannot write; supported: text, int, bigint, boolean, timestamp, uuid, double"),
                )
            })?;
            columns.push(Column {
                pointer: pointer(&field),
                name,
                kind,
                declared,
                primary_key: role == "partition_key" || role == "clustering",
            });
        }
        if columns.is_empty() {
            return Err(ConnectorError::fatal(
                &self.name,
                format!("table {keyspace}.{table} does not exist; create it or set `create`"),
            ));
        }
        if let Some(unknown) = self
            .config
            .columns
            .keys()
            .find(|c| !columns.iter().any(|col| &col.name == *c))
        {
            return Err(ConnectorError::fatal(
                &self.name,
                format!("`columns` maps `{unknown}`, which table {keyspace}.{table} does not have"),
            ));
        }
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let marks = vec!["?"; columns.len()].join(", ");
        let mut insert = session
            .prepare(format!(
                "INSERT INTO {keyspace}.{table} ({}) VALUES ({marks})",
                names.join(", ")
            ))
            .await
            .map_err(|e| match e {
                PrepareError::AllAttemptsFailed { first_attempt } => classified(
                    "cannot prepare the insert",
                    ExecutionError::LastAttemptError(first_attempt),
                ),
                other => transient("cannot prepare the insert", other.into()),
            })?;
        // An upsert by primary key: replaying it is harmless, so the driver may retry it.
        insert.set_is_idempotent(true);
        insert.set_consistency(self.config.consistency.to_driver());
        Ok(Prepared {
            session: Arc::new(session),
            insert,
            columns: Arc::new(columns),
        })
    }
}

/// The bound values of one record, or why it cannot be written.
fn bind(columns: &[Column], record: &Record) -> Result<Vec<Option<CqlValue>>, String> {
    let document: Value =
        serde_json::from_slice(&record.value).map_err(|e| format!("value is not JSON: {e}"))?;
    columns
        .iter()
        .map(|column| {
            let value = to_cql(&column.name, column.kind, document.pointer(&column.pointer))?;
            if value.is_none() && column.primary_key {
                return Err(format!(
                    "primary key column `{}` is missing from the record",
                    column.name
                ));
            }
            Ok(value)
        })
        .collect()
}

/// What an insert's failure calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The server (or the driver, serializing) refused this record's values: dead-letter it.
    Record,
    /// The server called the request invalid (`DbError::Invalid`): either a value the column
    /// refuses ("Invalid byte for ascii", an empty key) or a statement whose table or column is
    /// gone. The error carries no code that tells them apart, so the table's schema decides
    /// (see [`schema_intact`]).
    Invalid,
    /// The table, keyspace or permissions are wrong: no retry can help.
    Config,
    /// An outage, a timeout or an overload: retry with backoff.
    Transient,
}

/// Sorts a driver error into record, configuration or transient failure.
fn classify(error: &ExecutionError) -> Failure {
    match error {
        ExecutionError::BadQuery(
            BadQuery::SerializationError(_)
            | BadQuery::ValuesTooLongForKey(..)
            | BadQuery::PartitionKeyExtraction,
        ) => Failure::Record,
        ExecutionError::BadQuery(_) => Failure::Config,
        ExecutionError::PrepareError(PrepareError::AllAttemptsFailed { first_attempt })
        | ExecutionError::LastAttemptError(first_attempt) => classify_attempt(first_attempt),
        // Connection pools, timeouts, schema agreement, metadata: the cluster, not the data.
        _ => Failure::Transient,
    }
}

fn classify_attempt(error: &RequestAttemptError) -> Failure {
    match error {
        RequestAttemptError::SerializationError(_) => Failure::Record,
        RequestAttemptError::DbError(db, _) => classify_db(db),
        _ => Failure::Transient,
    }
}

fn classify_db(error: &DbError) -> Failure {
    match error {
        DbError::Invalid => Failure::Invalid,
        DbError::FunctionFailure { .. } => Failure::Record,
        DbError::SyntaxError
        | DbError::Unauthorized
        | DbError::AuthenticationError
        | DbError::ConfigError
        | DbError::AlreadyExists { .. }
        | DbError::TruncateError
        | DbError::ProtocolError => Failure::Config,
        // Unavailable, overloaded, bootstrapping, read/write timeouts and failures, unprepared,
        // server errors, rate limits, and codes the driver does not know.
        _ => Failure::Transient,
    }
}

/// Whether the table still has every column the insert binds: what tells a value the server
/// refused from a statement whose table or column is gone, both `DbError::Invalid`. Asked only
/// after such a refusal.
async fn schema_intact(
    session: &Session,
    keyspace: &str,
    table: &str,
    columns: &[Column],
) -> Result<bool, Cause> {
    let rows = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
            (keyspace, table),
        )
        .await?
        .into_rows_result()?;
    let mut present = std::collections::HashSet::new();
    for row in rows.rows::<(String,)>()? {
        present.insert(row?.0);
    }
    Ok(columns.iter().all(|column| present.contains(&column.name)))
}

/// The dead letter of a record the table refused, naming the columns likely at fault.
fn refusal(
    table: &str,
    columns: &[Column],
    index: usize,
    values: &[Option<CqlValue>],
    error: &ExecutionError,
) -> Rejected {
    let suspects = suspects(columns, values);
    let hint = if suspects.is_empty() {
        String::new()
    } else {
        format!(" ({})", suspects.join("; "))
    };
    Rejected {
        index,
        reason: format!("table {table} refused the record: {error}{hint}"),
    }
}

/// Columns whose value the server may have refused where the sink's type mapping could not
/// tell: text in an `ascii` column that is not ASCII, an empty primary key. Named in the dead
/// letter, since the server's message often names no column.
fn suspects(columns: &[Column], values: &[Option<CqlValue>]) -> Vec<String> {
    columns
        .iter()
        .zip(values)
        .filter_map(|(column, value)| match value {
            Some(CqlValue::Text(text)) if column.declared == "ascii" && !text.is_ascii() => Some(
                format!("column `{}` (ascii) holds non-ASCII text", column.name),
            ),
            Some(CqlValue::Text(text)) if column.primary_key && text.is_empty() => {
                Some(format!("primary key column `{}` is empty", column.name))
            }
            _ => None,
        })
        .collect()
}

#[async_trait]
impl Sink for CassandraSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let concurrency = self.config.concurrency;
        let name = self.name.clone();
        let (keyspace, table_name) = (self.config.keyspace.clone(), self.config.table.clone());
        let table = format!("{keyspace}.{table_name}");
        let prepared = self.prepare().await?;
        let mut rejected = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match bind(&prepared.columns, record) {
                Ok(values) => rows.push((index, values)),
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        let (session, insert) = (&prepared.session, &prepared.insert);
        let bound = &rows;
        // By position, not by reference: an `async` closure over `&(usize, Vec<_>)` trips the
        // compiler's `Send` check of the sink's future.
        let mut results = futures::stream::iter(0..rows.len())
            .map(|row| async move {
                let (index, values) = &bound[row];
                (
                    *index,
                    values,
                    session.execute_unpaged(insert, values).await,
                )
            })
            .buffer_unordered(concurrency);
        let (mut transient, mut config) = (None, None);
        let mut invalid = Vec::new();
        while let Some((index, values, result)) = results.next().await {
            let Err(error) = result else { continue };
            match classify(&error) {
                Failure::Record => {
                    rejected.push(refusal(&table, &prepared.columns, index, values, &error))
                }
                Failure::Invalid => invalid.push((index, values, error)),
                Failure::Config => config = Some(error),
                Failure::Transient => transient = Some(error),
            }
        }
        drop(results);
        if config.is_none() && transient.is_none() && !invalid.is_empty() {
            let intact =
                schema_intact(&prepared.session, &keyspace, &table_name, &prepared.columns)
                    .await
                    .map_err(|e| {
                        ConnectorError::transient(&name, "cannot read the table's columns")
                            .caused_by(e)
                    })?;
            if intact {
                for (index, values, error) in invalid {
                    rejected.push(refusal(&table, &prepared.columns, index, values, &error));
                }
            } else {
                config = invalid.pop().map(|(_, _, error)| error);
            }
        }
        if let Some(error) = config {
            return Err(ConnectorError::fatal(
                name,
                format!(
                    "insert into {table} failed (check that the table exists as configured and that the user may write to it)"
                ),
            )
            .caused_by(error));
        }
        if let Some(error) = transient {
            // Inserts are upserts by primary key: retrying the whole batch is safe.
            self.prepared = None;
            return Err(ConnectorError::transient(name, "insert failed").caused_by(error));
        }
        rejected.sort_by_key(|r| r.index);
        Ok(rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(error: DbError, message: &str) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(error, message.into()))
    }

    #[test]
    fn a_refused_value_is_the_record_s_fault_and_the_rest_config_or_transient() {
        // The message never decides: an invalid value and a dropped table are both `Invalid`,
        // which the table's schema tells apart (tests/all/connectors.rs checks both).
        for message in [
            "Invalid byte for ascii: -61",
            "Key may not be empty",
            "unconfigured table created_users",
            "Undefined column name email in table ks.t",
        ] {
            assert_eq!(
                classify(&db(DbError::Invalid, message)),
                Failure::Invalid,
                "{message}"
            );
        }
        for error in [
            DbError::Unauthorized,
            DbError::SyntaxError,
            DbError::ConfigError,
        ] {
            assert_eq!(classify(&db(error, "")), Failure::Config);
        }
        for error in [
            DbError::Overloaded,
            DbError::IsBootstrapping,
            DbError::ServerError,
            DbError::Unavailable {
                consistency: Consistency::One,
                required: 1,
                alive: 0,
            },
        ] {
            assert_eq!(classify(&db(error, "")), Failure::Transient);
        }
        assert_eq!(
            classify(&ExecutionError::RequestTimeout(
                std::time::Duration::from_secs(1)
            )),
            Failure::Transient
        );
        assert_eq!(
            classify(&ExecutionError::BadQuery(BadQuery::ValuesTooLongForKey(
                70_000, 65_535
            ))),
            Failure::Record
        );
    }
}
