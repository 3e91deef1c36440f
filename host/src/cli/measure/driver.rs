//! The Cassandra pipeline's baseline in `weir bench pipeline`: the scylla driver alone, in this
//! process, writing the rows `user-profile` makes of the same users, bound the way the cassandra
//! sink binds them, to a table of the same shape with the same concurrency. What the pipeline
//! adds on top of this (Kafka, the plugin, batching, acknowledgements) is its ratio to it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::statement::Consistency;

use super::BenchError;
use super::cost::{Cost, Meter};
use weir::connectors::cassandra::{
    Cell, ColumnKind, ColumnType, DEFAULT_REQUEST_BYTES, DEFAULT_ROWS_PER_REQUEST, Missing,
    bind_field, group_by_replicas, send, unlogged_batches,
};
use weir::connectors::fields::{FieldPath, FieldSet};

/// The `created_users` table both the pipeline and the driver write: column and CQL type; `id`
/// is the primary key.
pub const COLUMNS: [(&str, &str); 12] = [
    ("id", "uuid"),
    ("first_name", "text"),
    ("last_name", "text"),
    ("gender", "text"),
    ("address", "text"),
    ("post_code", "text"),
    ("email", "text"),
    ("username", "text"),
    ("dob", "text"),
    ("registered_date", "text"),
    ("phone", "text"),
    ("picture", "text"),
];

/// Requests in flight: the pipeline's cassandra sink is configured with the same, and both group
/// rows into requests the same way (the sink's default `rows_per_request` and `request_bytes`).
pub const CONCURRENCY: usize = 128;

/// The table the pipeline's cassandra sink writes, in the throughput runs and the latency run.
pub const PIPELINE_TABLE: &str = "created_users";

/// The table the driver writes at full speed, beside the pipeline's in the same keyspace.
pub const TABLE: &str = "driver_users";

/// The table the driver writes at the pipeline's pace: new keys, as in the other two runs, so
/// the node does not merely overwrite the rows it holds.
pub const PACED_TABLE: &str = "driver_users_paced";

/// The cassandra sink's `create` value for [`COLUMNS`].
pub fn create_toml() -> String {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(name, kind)| format!("{name} = \"{kind}\""))
        .collect();
    format!(
        "{{ primary_key = [\"id\"], columns = {{ {} }} }}",
        columns.join(", ")
    )
}

fn setup(error: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(error.to_string())
}

/// The rows of the pipeline's Cassandra run, mapped ahead of time: the same `records` users
/// (from `seed`), through `user-profile` compiled natively, each field bound as the sink binds
/// it (absent fields unset).
pub fn premapped_rows(records: usize, seed: u64) -> Result<Vec<Vec<Cell<'static>>>, BenchError> {
    let kinds: Vec<(&str, ColumnType)> = COLUMNS
        .iter()
        .map(|&(name, kind)| {
            ColumnType::parse(kind)
                .map(|kind| (name, kind))
                .ok_or_else(|| setup(format!("column type {kind} is not one the sink writes")))
        })
        .collect::<Result<_, _>>()?;
    let paths: Vec<FieldPath> = kinds
        .iter()
        .map(|(name, _)| FieldPath::parse(name))
        .collect();
    let fields = FieldSet::reading(
        paths
            .iter()
            .zip(&kinds)
            .map(|(path, &(_, kind))| (path, ColumnKind::from(kind).reading())),
    );
    let mut rows = Vec::with_capacity(records);
    for (index, record) in super::sample_records(records, seed).iter().enumerate() {
        let outputs = user_profile::profiles(&weir_plugin::Record::new(record.value.to_vec()))
            .map_err(|e| {
                setup(format!(
                    "user-profile refused generated user {index}: {e:?}"
                ))
            })?;
        for output in outputs {
            let found = fields
                .read(&output.value)
                .map_err(|e| setup(format!("user-profile output {index} is not JSON: {e}")))?;
            let row = kinds
                .iter()
                .zip(found)
                .map(|(&(name, kind), field)| {
                    bind_field(name, &kind.into(), field, Missing::Unset).map(Cell::into_owned)
                })
                .collect::<Result<Vec<Cell>, String>>()
                .map_err(|e| setup(format!("user {index}: {e}")))?;
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Writes `rows` to `keyspace.table`, a new table of [`COLUMNS`]'s shape (created when absent),
/// with a prepared insert at consistency ONE, the rows grouped into unlogged batches by replica
/// set as the sink groups them, at most [`CONCURRENCY`] requests in flight: as fast as the node
/// takes them, or with `pace` no faster than that many rows a second (each request starts when
/// the rows before it are due). The meter's window is the writes alone, after connecting and
/// preparing.
pub async fn write(
    nodes: &str,
    (keyspace, table): (&str, &str),
    rows: &[Vec<Cell<'static>>],
    pace: Option<f64>,
    meter: &mut Meter,
) -> Result<(f64, Cost), BenchError> {
    // As the sink's session: client-side, strictly increasing timestamps.
    let session = SessionBuilder::new()
        .known_node(nodes)
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
        .build()
        .await
        .map_err(|e| setup(format!("cannot connect to Cassandra at {nodes}: {e}")))?;
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(name, kind)| format!("{name} {kind}"))
        .collect();
    for ddl in [
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.{table} ({}, PRIMARY KEY (id))",
            columns.join(", ")
        ),
    ] {
        session
            .query_unpaged(ddl.as_str(), &[])
            .await
            .map_err(|e| setup(format!("cannot create {keyspace}.{table}: {e}")))?;
    }
    let names: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
    let marks = vec!["?"; COLUMNS.len()].join(", ");
    let mut insert = session
        .prepare(format!(
            "INSERT INTO {keyspace}.{table} ({}) VALUES ({marks})",
            names.join(", ")
        ))
        .await
        .map_err(|e| {
            setup(format!(
                "cannot prepare the insert into {keyspace}.{table}: {e}"
            ))
        })?;
    insert.set_is_idempotent(true);
    insert.set_consistency(Consistency::One);
    let batches = unlogged_batches(&insert, DEFAULT_ROWS_PER_REQUEST, Consistency::One);
    let (session, insert, batches) = (&session, &insert, &batches);
    meter.window_start();
    let started = std::time::Instant::now();
    // Grouped into requests as the sink groups them, in the timed window as in the sink.
    let grouped = group_by_replicas(
        session,
        insert,
        (keyspace, table),
        rows.iter().map(Vec::as_slice),
        DEFAULT_ROWS_PER_REQUEST,
        DEFAULT_REQUEST_BYTES,
    );
    let mut due = 0usize;
    let writes = futures::stream::iter(grouped)
        .then(|request| {
            let start_at = pace.map(|rate| started + Duration::from_secs_f64(due as f64 / rate));
            due += request.len();
            async move {
                if let Some(at) = start_at {
                    tokio::time::sleep_until(at.into()).await;
                }
                request
            }
        })
        .map(|request| {
            let values = request.iter().map(|&row| rows[row].as_slice()).collect();
            send(session, insert, batches, values)
        })
        .buffer_unordered(CONCURRENCY);
    let mut writes = std::pin::pin!(writes);
    while let Some(written) = writes.next().await {
        written.map_err(|e| setup(format!("insert into {keyspace}.{table} failed: {e}")))?;
    }
    let elapsed = started.elapsed();
    let cost = meter.window_end(rows.len() as u64);
    Ok((rows.len() as f64 / elapsed.as_secs_f64(), cost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_becomes_one_row_of_every_column() {
        let rows = premapped_rows(20, 1).unwrap();
        assert_eq!(rows.len(), 20);
        for row in &rows {
            assert_eq!(row.len(), COLUMNS.len());
            assert!(matches!(row[0], Cell::Uuid(_)));
            assert!(
                row.iter()
                    .all(|value| !matches!(value, Cell::Unset | Cell::Null)),
                "user-profile fills every column"
            );
        }
    }

    #[test]
    fn the_sink_creates_the_same_table() {
        let create = create_toml();
        assert!(create.starts_with("{ primary_key = [\"id\"], columns = { id = \"uuid\", "));
        assert!(create.ends_with("picture = \"text\" } }"));
    }
}
