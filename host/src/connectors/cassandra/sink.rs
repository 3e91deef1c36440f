//! Writes records to a Cassandra table with a prepared, idempotent INSERT per record, run with
//! bounded concurrency; the batch is acknowledged when every insert succeeded.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use serde::Deserialize;
use serde_json::Value;

use super::columns::{ColumnType, to_cql};
use crate::connectors::fields::pointer;
use crate::connectors::{ConfigProblem, ConnectorError, Rejected, Sink};
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
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            ConnectorError::transient(&self.name, format!("{what}: {e}"))
        };
        let session = SessionBuilder::new()
            .known_nodes(&self.config.nodes)
            .build()
            .await
            .map_err(|e| {
                transient(
                    &format!("cannot connect to {}", self.config.nodes.join(",")),
                    &e,
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
                    .map_err(|e| transient("cannot create the keyspace or table", &e))?;
            }
        }
        let rows = session
            .query_unpaged(
                "SELECT column_name, type, kind FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
                (keyspace.as_str(), table.as_str()),
            )
            .await
            .map_err(|e| transient("cannot read the table's columns", &e))?
            .into_rows_result()
            .map_err(|e| transient("cannot read the table's columns", &e))?;
        let mut columns = Vec::new();
        for row in rows
            .rows::<(String, String, String)>()
            .map_err(|e| transient("cannot read the table's columns", &e))?
        {
            let (name, kind, role) =
                row.map_err(|e| transient("cannot read the table's columns", &e))?;
            let field = self
                .config
                .columns
                .get(&name)
                .cloned()
                .unwrap_or_else(|| name.clone());
            let kind = ColumnType::parse(&kind).ok_or_else(|| {
                ConnectorError::fatal(
                    &self.name,
                    format!("column `{name}` has type `{kind}`, which the sink cannot write; supported: text, int, bigint, boolean, timestamp, uuid, double"),
                )
            })?;
            columns.push(Column {
                pointer: pointer(&field),
                name,
                kind,
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
            .map_err(|e| transient("cannot prepare the insert", &e))?;
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

#[async_trait]
impl Sink for CassandraSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let concurrency = self.config.concurrency;
        let name = self.name.clone();
        let prepared = self.prepare().await?;
        let mut rejected = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match bind(&prepared.columns, record) {
                Ok(values) => rows.push(values),
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        let (session, insert) = (&prepared.session, &prepared.insert);
        let mut results = futures::stream::iter(rows)
            .map(|values| async move { session.execute_unpaged(insert, values).await })
            .buffer_unordered(concurrency);
        let mut failure = None;
        while let Some(result) = results.next().await {
            if let Err(error) = result {
                failure = Some(error);
            }
        }
        drop(results);
        if let Some(error) = failure {
            // Inserts are upserts by primary key: retrying the whole batch is safe.
            self.prepared = None;
            return Err(ConnectorError::transient(
                name,
                format!("insert failed: {error}"),
            ));
        }
        Ok(rejected)
    }
}
