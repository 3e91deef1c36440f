//! Opens the session the sink writes through: connects, creates the keyspace and table when
//! asked, reads the table's columns and prepares the INSERT. Built once and kept across transient
//! failures (the driver reconnects by itself); rebuilt only when it can no longer serve.

use std::collections::HashSet;
use std::sync::Arc;

use scylla::client::session::{OpenSsl010Config, Session};
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{
    ConnectionError, ConnectionPoolError, ConnectionSetupRequestErrorKind as SetupError, DbError,
    ExecutionError, MetadataError, NewSessionError, PrepareError,
};
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use super::classify::{Failure, classify};
use super::columns::ColumnType;
use super::config::CassandraSinkConfig;
use super::kinds::{ColumnKind, Unwritable, UserTypes};
use crate::connectors::fields::{FieldPath, FieldSet};
use crate::connectors::tls::{TlsConfig, probe_nodes};
use crate::connectors::{Cause, ConnectorError, ErrorKind};

/// One column the INSERT binds.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub name: String,
    pub kind: ColumnKind,
    /// The CQL type as the table declares it (`ascii` and `text` share a [`ColumnType`]).
    pub declared: String,
    /// Where its value is in the record.
    pub path: FieldPath,
    /// Part of the primary key (partition or clustering).
    pub primary_key: bool,
}

/// The connected session and the prepared statement.
pub(super) struct Prepared {
    pub session: Arc<Session>,
    pub insert: PreparedStatement,
    pub columns: Arc<Vec<Column>>,
    /// The columns' fields, read from each record in one pass, in column order.
    pub fields: FieldSet,
    /// Unlogged batches of the insert: `batches[n - 1]` holds it `n` times, for every `n` up
    /// to `rows_per_request`.
    pub batches: Vec<Batch>,
}

/// Unlogged batches of `insert`, of 1 to `rows` statements each (`batches[n - 1]` holds `n`),
/// written at `consistency` and marked idempotent. Unlogged: the sink's rows carry their own
/// write timestamps and replaying an upsert is harmless, so the batch log's all-or-nothing
/// guarantee would cost a round of writes and buy nothing.
pub fn unlogged_batches(
    insert: &PreparedStatement,
    rows: usize,
    consistency: Consistency,
) -> Vec<Batch> {
    (1..=rows)
        .map(|size| {
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in 0..size {
                batch.append_statement(insert.clone());
            }
            batch.set_consistency(consistency);
            batch.set_is_idempotent(true);
            batch
        })
        .collect()
}

pub(super) async fn connect(
    config: &CassandraSinkConfig,
    sink: &str,
) -> Result<Prepared, ConnectorError> {
    let transient = |what: &str, e: Cause| ConnectorError::transient(sink, what).caused_by(e);
    // A refusal by the server here is about the schema or permissions, not a record: only
    // outages are worth retrying.
    let classified = |what: &str, e: ExecutionError| {
        let kind = match classify(&e) {
            Failure::Transient | Failure::Session => ErrorKind::Transient,
            Failure::Record | Failure::Invalid | Failure::Config => ErrorKind::Fatal,
        };
        ConnectorError::new(kind, sink, what).caused_by(e)
    };
    let tls = match &config.tls {
        Some(tls) => {
            let settings = |tls: &TlsConfig| {
                tls.connector()
                    .map_err(|e| ConnectorError::fatal(sink, format!("tls: {e}")))
            };
            // The driver retries a node whose handshake fails as if it were down; a node that
            // refuses these TLS settings would be retried forever, so one handshake is tried
            // first, and a refusal stops the sink.
            let probe = settings(tls)?.build().into_context();
            if let Err(refused) = probe_nodes(&config.nodes, &probe).await {
                return Err(ConnectorError::fatal(sink, refused.to_string()));
            }
            Some(OpenSsl010Config::new(settings(tls)?))
        }
        None => None,
    };
    // Client-side timestamps, strictly increasing within the process, for the statements the
    // sink does not stamp itself (its inserts carry `USING TIMESTAMP`, fixed per batch).
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .tls_context(tls)
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
    if let (Some(username), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(username, password.expose());
    }
    let session = builder.build().await.map_err(|e| {
        let nodes = config.nodes.join(",");
        // The driver retries a refused login like an outage; no retry can change the answer.
        match login_refusal(&e, config.username.as_deref()) {
            Some(refusal) => ConnectorError::fatal(sink, format!("{nodes}: {refusal}")),
            None => transient(&format!("cannot connect to {nodes}"), e.into()),
        }
    })?;
    let (keyspace, table) = (&config.keyspace, &config.table);
    // Names are quoted in every statement, so they mean exactly what the schema lookup below
    // reads: unquoted, CQL folds them to lower case and a mixed-case name never matches.
    let qualified = format!("{}.{}", quoted(keyspace), quoted(table));
    if let Some(create) = &config.create {
        let keyspace_ddl = format!(
            "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            quoted(keyspace),
            create.replication_factor
        );
        let columns: Vec<String> = create
            .columns
            .iter()
            .map(|(c, t)| format!("{} {t}", quoted(c)))
            .collect();
        let primary_key: Vec<String> = create.primary_key.iter().map(|k| quoted(k)).collect();
        let table_ddl = format!(
            "CREATE TABLE IF NOT EXISTS {qualified} ({}, PRIMARY KEY ({}))",
            columns.join(", "),
            primary_key.join(", ")
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
    let user_types = user_types(&session, keyspace)
        .await
        .map_err(|e| classified("cannot read the keyspace's user-defined types", *e))?;
    let mut columns = Vec::new();
    for row in rows
        .rows::<(String, String, String)>()
        .map_err(|e| transient("cannot read the table's columns", e.into()))?
    {
        let (name, kind, role) =
            row.map_err(|e| transient("cannot read the table's columns", e.into()))?;
        let field = config
            .columns
            .get(&name)
            .cloned()
            .unwrap_or_else(|| name.clone());
        let declared = kind;
        let kind = user_types.parse(&declared).map_err(|Unwritable(part)| {
            let which = if part == format!("`{declared}`") {
                String::new()
            } else {
                format!(" ({part})")
            };
            ConnectorError::fatal(
                sink,
                format!(
                    "column `{name}` has type `{declared}`, which the sink cannot write{which}: {}",
                    ColumnType::unsupported(&declared)
                ),
            )
        })?;
        columns.push(Column {
            path: FieldPath::parse(&field),
            name,
            kind,
            declared,
            primary_key: role == "partition_key" || role == "clustering",
        });
    }
    if columns.is_empty() {
        return Err(ConnectorError::fatal(
            sink,
            format!(
                "table {keyspace}.{table} does not exist (names are case-sensitive); create it or set `create`"
            ),
        ));
    }
    if let Some(unknown) = config
        .columns
        .keys()
        .find(|c| !columns.iter().any(|col| &col.name == *c))
    {
        return Err(ConnectorError::fatal(
            sink,
            format!("`columns` maps `{unknown}`, which table {keyspace}.{table} does not have"),
        ));
    }
    if let Some((collection, inner)) =
        columns
            .iter()
            .filter(|c| c.kind.reads_items())
            .find_map(|collection| {
                columns
                    .iter()
                    .find(|other| collection.path.is_above(&other.path))
                    .map(|inner| (collection, inner))
            })
    {
        return Err(ConnectorError::fatal(
            sink,
            format!(
                "column `{}` reads a field inside the field of column `{}` ({}), which takes that field whole: map one of them to another field in `columns`",
                inner.name, collection.name, collection.declared
            ),
        ));
    }
    let names: Vec<String> = columns.iter().map(|c| quoted(&c.name)).collect();
    let marks = vec!["?"; columns.len()].join(", ");
    // The last marker is the row's write timestamp, which the sink fixes per batch (see
    // `stamps`); a TTL is the same for every row, so it is written into the statement.
    let ttl = config
        .ttl_seconds
        .map_or(String::new(), |seconds| format!(" AND TTL {seconds}"));
    let mut insert = session
        .prepare(format!(
            "INSERT INTO {qualified} ({}) VALUES ({marks}) USING TIMESTAMP ?{ttl}",
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
    // Every partition key column is bound, so the driver knows each row's token and its
    // default (token-aware) policy sends the row straight to a replica; say so if it cannot.
    if !insert.is_token_aware() {
        tracing::warn!(
            sink,
            "The prepared insert carries no partition key metadata; rows go to any node, which forwards them (slower)."
        );
    }
    // An upsert by primary key: replaying it is harmless, so the driver may retry it.
    insert.set_is_idempotent(true);
    insert.set_consistency(config.consistency.to_driver());
    Ok(Prepared {
        session: Arc::new(session),
        batches: unlogged_batches(
            &insert,
            config.rows_per_request,
            config.consistency.to_driver(),
        ),
        insert,
        fields: FieldSet::reading(
            columns
                .iter()
                .map(|column| (&column.path, column.kind.reading())),
        ),
        columns: Arc::new(columns),
    })
}

/// The user-defined types of `keyspace`, each field's name and declared type, as
/// `system_schema.types` lists them.
async fn user_types(session: &Session, keyspace: &str) -> Result<UserTypes, Box<ExecutionError>> {
    let rows = session
        .query_unpaged(
            "SELECT type_name, field_names, field_types FROM system_schema.types WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .map_err(Box::new)?;
    // The rows' shape is fixed by the system table; a result without rows means no types.
    let Ok(rows) = rows.into_rows_result() else {
        return Ok(UserTypes::default());
    };
    let Ok(rows) = rows.rows::<(String, Vec<String>, Vec<String>)>() else {
        return Ok(UserTypes::default());
    };
    let defined = rows
        .flatten()
        .map(|(name, fields, types)| (name, fields.into_iter().zip(types).collect()))
        .collect();
    Ok(UserTypes::new(defined))
}

/// What to tell the user when the cluster refused to log the sink in, or `None` for any other
/// failure to connect. Decided on the driver's typed errors: a login the server refused
/// (`AuthenticationError`) or a cluster that requires one when none was configured.
fn login_refusal(error: &NewSessionError, username: Option<&str>) -> Option<String> {
    let NewSessionError::MetadataError(MetadataError::ConnectionPoolError(
        ConnectionPoolError::Broken {
            last_connection_error: ConnectionError::ConnectionSetupRequestError(setup),
        },
    )) = error
    else {
        return None;
    };
    match (setup.get_error(), username) {
        (SetupError::MissingAuthentication, _) => Some(
            "the cluster requires a login; set the sink's `username` and `password` \
             (`password = \"${VAR}\"`)"
                .to_owned(),
        ),
        (SetupError::DbError(DbError::AuthenticationError, reason), Some(user)) => Some(format!(
            "the cluster refused to log in role `{user}` ({reason}); check the sink's \
             `username` and `password`, and that the role has LOGIN"
        )),
        _ => None,
    }
}

/// What the table is now, next to the columns the insert binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Schema {
    /// Every bound column is there: a refusal was the value's.
    Intact,
    /// The table is gone (dropped while the sink ran).
    Gone,
    /// The table is there without a column the insert binds (altered while the sink ran).
    Changed,
}

/// The table's schema against the columns the insert binds: what tells a value the server
/// refused from a statement whose table or column is gone, both `DbError::Invalid`. Asked only
/// after such a refusal.
pub(super) async fn schema_now(
    session: &Session,
    keyspace: &str,
    table: &str,
    columns: &[Column],
) -> Result<Schema, Cause> {
    let rows = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
            (keyspace, table),
        )
        .await?
        .into_rows_result()?;
    let mut present = HashSet::new();
    for row in rows.rows::<(String,)>()? {
        present.insert(row?.0);
    }
    Ok(if present.is_empty() {
        Schema::Gone
    } else if columns.iter().all(|column| present.contains(&column.name)) {
        Schema::Intact
    } else {
        Schema::Changed
    })
}

/// `name` as a quoted CQL identifier: exactly that name, whatever its case or characters.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
