//! Writes records to a Cassandra table with a prepared, idempotent INSERT per record, the rows
//! that the same replicas own sent together as unlogged batches of up to `rows_per_request`,
//! requests concurrently; the batch is acknowledged when every row was written or its record
//! dead-lettered. Each row's write timestamp is fixed when its batch first starts, so a row of a
//! later record always wins over the same key's row of an earlier one, however their requests
//! interleave or are retried. Handles forked for batches in flight together share the session
//! and one pool of `concurrency` requests, so the next batch's requests start as the last ones
//! of a batch finish.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use scylla::errors::ExecutionError;

use super::classify::{Failure, classify};
use super::columns::{Cell, Missing, bind_field, bound_bytes};
use super::config::{CassandraSinkConfig, DEFAULT_MAX_MUTATION_BYTES};
use super::requests::{group_by_replicas, send};
use super::session::{Column, Prepared, Schema, connect, schema_now};
use super::stamps::Stamps;
use crate::connectors::fields::{FieldSet, Leaf};
use crate::connectors::{ConnectorError, Rejected, Sink};
use crate::record::Record;

/// What the handles of one sink share.
struct Shared {
    /// Kept across transient failures: the driver reconnects its pools by itself, and a new
    /// session per failure would storm a recovering cluster with connections.
    prepared: tokio::sync::Mutex<Option<Arc<Prepared>>>,
    /// Requests in flight across all handles, at most `concurrency`; handed out first come,
    /// first served, so an earlier batch's rows go before a later one's.
    requests: tokio::sync::Semaphore,
    /// The write timestamps of rows.
    stamps: Stamps,
}

/// Writes records to one table.
pub struct CassandraSink {
    config: Arc<CassandraSinkConfig>,
    name: Arc<str>,
    shared: Arc<Shared>,
    /// The batch whose write failed, recognised by a digest of its values, and the first write
    /// timestamp its rows were given: its retry writes them with the same timestamps.
    unfinished: Option<(u64, i64)>,
    /// Seeded once per handle, so digests compare across writes.
    hasher: RandomState,
}

impl CassandraSink {
    /// A sink; it connects, creates and prepares on first write, and again only after a failure
    /// that leaves the session unable to serve.
    pub fn new(config: &CassandraSinkConfig) -> Self {
        CassandraSink {
            name: format!("cassandra sink {}.{}", config.keyspace, config.table).into(),
            config: Arc::new(config.clone()),
            shared: Arc::new(Shared {
                prepared: tokio::sync::Mutex::new(None),
                requests: tokio::sync::Semaphore::new(config.concurrency),
                stamps: Stamps::default(),
            }),
            unfinished: None,
            hasher: RandomState::new(),
        }
    }

    /// The shared session and insert, connecting and preparing first if there is none. Handles
    /// wait for one another here, so one session is built, not one per handle.
    async fn prepare(&self) -> Result<Arc<Prepared>, ConnectorError> {
        let mut slot = self.shared.prepared.lock().await;
        if let Some(prepared) = &*slot {
            return Ok(Arc::clone(prepared));
        }
        let prepared = Arc::new(connect(&self.config, &self.name).await?);
        tracing::info!(sink = %self.name, "Connected and prepared the insert.");
        *slot = Some(Arc::clone(&prepared));
        Ok(prepared)
    }

    /// Another handle: the same session, insert pool and timestamps; its own retry state.
    fn handle(&self) -> CassandraSink {
        CassandraSink {
            config: Arc::clone(&self.config),
            name: Arc::clone(&self.name),
            shared: Arc::clone(&self.shared),
            unfinished: None,
            hasher: RandomState::new(),
        }
    }

    /// Drops the shared session `lost`, unless another handle already replaced it.
    async fn forget(&self, lost: &Arc<Prepared>) {
        let mut slot = self.shared.prepared.lock().await;
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, lost))
        {
            *slot = None;
        }
    }

    /// The first write timestamp of `records`' rows: the one given to them before when this is
    /// a retry of the batch whose write failed, else fresh ones, later than any given before.
    fn first_stamp(&mut self, records: &[Record]) -> i64 {
        match self.unfinished.take() {
            Some((digest, first)) if digest == self.digest(records) => first,
            _ => self.shared.stamps.reserve(records.len()),
        }
    }

    fn digest(&self, records: &[Record]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        records.len().hash(&mut hasher);
        for record in records {
            record.value.hash(&mut hasher);
        }
        hasher.finish()
    }
}

/// Appends the bound values of one record to `cells`, their text borrowed from the record, or
/// says why it cannot be written (and leaves `cells` as it was). `found` is scratch space for the
/// record's fields, reused from record to record like `cells`, so a batch allocates neither per
/// record.
fn bind<'r>(
    columns: &[Column],
    fields: &FieldSet,
    record: &'r Record,
    missing: Missing,
    found: &mut Vec<Option<Leaf<'r>>>,
    cells: &mut Vec<Cell<'r>>,
) -> Result<(), String> {
    fields
        .read_into(&record.value, found)
        .map_err(|e| format!("value is not JSON: {e}"))?;
    let start = cells.len();
    for (column, field) in columns.iter().zip(found.drain(..)) {
        match bind_column(column, field, missing) {
            Ok(cell) => cells.push(cell),
            Err(reason) => {
                cells.truncate(start);
                return Err(reason);
            }
        }
    }
    Ok(())
}

/// One column's value from its field, or why it cannot be written.
fn bind_column<'r>(
    column: &Column,
    field: Option<Leaf<'r>>,
    missing: Missing,
) -> Result<Cell<'r>, String> {
    let value = bind_field(
        &column.name,
        &column.kind,
        field,
        // A key column can be neither unset nor null: both are refused below.
        if column.primary_key {
            Missing::Null
        } else {
            missing
        },
    )?;
    if column.primary_key && value == Cell::Null {
        return Err(format!(
            "primary key column `{}` is missing from the record",
            column.name
        ));
    }
    Ok(value)
}

/// Whether a request's failure fails the whole batch (so no further request starts), rather
/// than one record.
fn fails_the_batch(failure: Failure) -> bool {
    matches!(
        failure,
        Failure::Config | Failure::Transient | Failure::Session
    )
}

/// The dead letter of a record the table refused, naming the columns likely at fault.
fn refusal(
    table: &str,
    columns: &[Column],
    index: usize,
    values: &[Cell],
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
/// tell: text in an `ascii` column that is not ASCII, an empty primary key; and the row's size
/// when it is large. Named in the dead letter, since the server's message often names no
/// column.
fn suspects(columns: &[Column], values: &[Cell]) -> Vec<String> {
    let bytes = bound_bytes(values);
    let size = (bytes >= SIZE_SUSPECT_BYTES).then(|| {
        format!(
            "the row is {bytes} bytes: Cassandra refuses a request larger than native_transport_max_frame_size or a mutation larger than max_mutation_size ({} MiB each by default)",
            DEFAULT_MAX_MUTATION_BYTES >> 20
        )
    });
    columns
        .iter()
        .zip(values)
        .filter_map(|(column, value)| match value {
            Cell::Text(text) if column.declared == "ascii" && !text.is_ascii() => Some(format!(
                "column `{}` (ascii) holds non-ASCII text",
                column.name
            )),
            Cell::Text(text) if column.primary_key && text.is_empty() => {
                Some(format!("primary key column `{}` is empty", column.name))
            }
            Cell::Blob(bytes) if column.primary_key && bytes.is_empty() => {
                Some(format!("primary key column `{}` is empty", column.name))
            }
            _ => None,
        })
        .chain(size)
        .collect()
}

/// A refused row at least this large names its size among the suspects: below it, size is an
/// unlikely reason (Cassandra's limits are 16 MiB by default, and can be set lower).
const SIZE_SUSPECT_BYTES: usize = 1 << 20;

/// The dead letter of a row larger than `max_mutation_bytes`, never sent.
fn oversized(table: &str, index: usize, bytes: usize, limit: usize) -> Rejected {
    Rejected {
        index,
        reason: format!(
            "the row for table {table} is {bytes} bytes, more than max_mutation_bytes ({limit}): shrink the record, or raise max_mutation_bytes (within the server's native_transport_max_frame_size and max_mutation_size)"
        ),
    }
}

/// A record bound and ready to insert: its index in the batch and its values, the last being
/// its write timestamp (`USING TIMESTAMP ?`).
struct Row<'b, 'r> {
    index: usize,
    values: &'b [Cell<'r>],
}

#[async_trait]
impl Sink for CassandraSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        // Before any wait: the sink stage starts batches in source order, and their timestamps
        // must follow it.
        let first_stamp = self.first_stamp(records);
        let written = self.write_stamped(records, first_stamp).await;
        if written.is_err() {
            self.unfinished = Some((self.digest(records), first_stamp));
        }
        written
    }

    /// Connects and prepares the insert (creating the table where `create` says so) in a task
    /// of its own. The first write waits for that attempt rather than starting another, and
    /// connects again itself if it failed: a node down at start is still reported by the write.
    fn warm_up(&self) {
        let sink = self.handle();
        tokio::spawn(async move {
            if let Err(error) = sink.prepare().await {
                tracing::info!(sink = %sink.name, %error, "Could not connect at start; the first write will try again.");
            }
        });
    }

    /// A handle sharing this one's session, insert pool and timestamps, with its own retry
    /// state.
    fn fork(&self) -> Option<Box<dyn Sink>> {
        Some(Box::new(self.handle()))
    }
}

impl CassandraSink {
    /// Writes `records`, record `i`'s row with the timestamp `first_stamp + i`.
    async fn write_stamped(
        &self,
        records: &[Record],
        first_stamp: i64,
    ) -> Result<Vec<Rejected>, ConnectorError> {
        let (missing, limit) = (self.config.missing, self.config.max_mutation_bytes);
        let name = &*self.name;
        let (keyspace, table_name) = (&self.config.keyspace, &self.config.table);
        let table = format!("{keyspace}.{table_name}");
        let prepared = self.prepare().await?;
        let mut rejected = Vec::new();
        // Every row's values, the write timestamp last, in one vector for the batch.
        let mut cells = Vec::with_capacity(records.len() * (prepared.columns.len() + 1));
        let mut found = Vec::with_capacity(prepared.columns.len());
        let mut spans = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let start = cells.len();
            let bound = bind(
                &prepared.columns,
                &prepared.fields,
                record,
                missing,
                &mut found,
                &mut cells,
            );
            match bound {
                Ok(()) => match (bound_bytes(&cells[start..]), limit) {
                    (bytes, Some(limit)) if bytes > limit => {
                        cells.truncate(start);
                        rejected.push(oversized(&table, index, bytes, limit))
                    }
                    _ => {
                        let stamp = first_stamp.saturating_add(index as i64);
                        cells.push(Cell::BigInt(stamp));
                        spans.push((index, start..cells.len()));
                    }
                },
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        let rows: Vec<Row> = spans
            .into_iter()
            .map(|(index, span)| Row {
                index,
                values: &cells[span],
            })
            .collect();
        let (session, insert, batches) = (&prepared.session, &prepared.insert, &prepared.batches);
        let permits = &self.shared.requests;
        let bound = &rows;
        // Set once a request failed in a way that fails the whole batch: no further request
        // starts, so an outage costs one failed request per request in flight, not one per row.
        let abandoned = &AtomicBool::new(false);
        let requests = group_by_replicas(
            session,
            insert,
            (keyspace, table_name),
            rows.iter().map(|row| row.values),
            self.config.rows_per_request,
            self.config.request_bytes,
        );
        // Requests run concurrently, each with rows of one replica set. Rows go by position,
        // not by reference: an `async` block over `&Row` trips the compiler's `Send` check of
        // the sink's future.
        let mut sent = futures::stream::iter(requests)
            .map(|request| async move {
                let mut failures = Vec::new();
                // Never closed, so always granted.
                let Ok(_permit) = permits.acquire().await else {
                    return failures;
                };
                if abandoned.load(Ordering::Relaxed) {
                    return failures;
                }
                let values = request.iter().map(|&row| bound[row].values);
                let Err(error) = send(session, insert, batches, values.collect()).await else {
                    return failures;
                };
                match classify(&error) {
                    // The server refused a value, and a batch does not say whose: each row
                    // again on its own, so only the refused ones are dead-lettered. Rows the
                    // batch did write are written again with the same timestamps, harmlessly.
                    Failure::Record | Failure::Invalid if request.len() > 1 => {
                        for row in request {
                            if abandoned.load(Ordering::Relaxed) {
                                break;
                            }
                            let Err(error) =
                                session.execute_unpaged(insert, &bound[row].values).await
                            else {
                                continue;
                            };
                            let failure = classify(&error);
                            failures.push((row, failure, error));
                            if fails_the_batch(failure) {
                                abandoned.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    failure => {
                        if fails_the_batch(failure) {
                            abandoned.store(true, Ordering::Relaxed);
                        }
                        failures.push((request[0], failure, error));
                    }
                }
                failures
            })
            .buffer_unordered(self.config.concurrency);
        let (mut transient, mut config, mut session_lost) = (None, None, None);
        let mut invalid = Vec::new();
        while let Some(failures) = sent.next().await {
            for (row, failure, error) in failures {
                let Row { index, values } = &bound[row];
                match failure {
                    Failure::Record => {
                        rejected.push(refusal(&table, &prepared.columns, *index, values, &error))
                    }
                    Failure::Invalid => invalid.push((*index, values, error)),
                    Failure::Config => config = Some(error),
                    Failure::Transient => transient = Some(error),
                    Failure::Session => session_lost = Some(error),
                }
            }
        }
        drop(sent);
        let batch_failed = config.is_some() || transient.is_some() || session_lost.is_some();
        if !batch_failed && !invalid.is_empty() {
            let schema = schema_now(&prepared.session, keyspace, table_name, &prepared.columns)
                .await
                .map_err(|e| {
                    ConnectorError::transient(name, "cannot read the table's columns").caused_by(e)
                })?;
            match schema {
                Schema::Intact => {
                    for (index, values, error) in invalid {
                        rejected.push(refusal(&table, &prepared.columns, index, values, &error));
                    }
                }
                // Dropped while the sink ran, which creates its table: a new session creates
                // it again (as the PostgreSQL sink does), and the batch is written there.
                Schema::Gone if self.config.create.is_some() => {
                    self.forget(&prepared).await;
                    return Err(ConnectorError::transient(
                        name,
                        format!(
                            "table {table} is gone (dropped while the sink ran); it is created again"
                        ),
                    ));
                }
                Schema::Gone | Schema::Changed => {
                    config = invalid.pop().map(|(_, _, error)| error);
                }
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
        // Inserts are upserts by primary key, and each key's rows go again in order: retrying
        // the whole batch is safe.
        if let Some(error) = session_lost {
            tracing::warn!(sink = %name, %error, "The session can no longer serve; a new one is built for the retry.");
            self.forget(&prepared).await;
            return Err(ConnectorError::transient(
                name,
                "insert failed; reconnecting with a new session",
            )
            .caused_by(error));
        }
        if let Some(error) = transient {
            return Err(ConnectorError::transient(name, "insert failed").caused_by(error));
        }
        rejected.sort_by_key(|r| r.index);
        Ok(rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::cassandra::ColumnType;

    fn column(name: &str, kind: ColumnType, primary_key: bool) -> Column {
        Column {
            name: name.into(),
            kind: kind.into(),
            declared: "text".into(),
            path: crate::connectors::fields::FieldPath::parse(name),
            primary_key,
        }
    }

    fn fields(columns: &[Column]) -> FieldSet {
        FieldSet::reading(
            columns
                .iter()
                .map(|column| (&column.path, column.kind.reading())),
        )
    }

    #[test]
    fn a_record_binds_absent_fields_as_the_config_says_and_needs_its_key() {
        let columns = [
            column("id", ColumnType::Text, true),
            column("email", ColumnType::Text, false),
            column("n", ColumnType::Int, false),
        ];
        let fields = fields(&columns);
        let record = Record::from_value(r#"{"id":"a","n":null}"#);
        let refused = [
            (r#"{"email":"x"}"#, "primary key column `id`"),
            (r#"{"id":null}"#, "primary key column `id`"),
            ("{", "value is not JSON"),
            // Refused at its last column, after the others were bound.
            (r#"{"id":"b","n":"x"}"#, "column `n`"),
        ]
        .map(|(value, reason)| (Record::from_value(value), reason));
        let id = Cell::Text("a".into());
        let (mut found, mut cells) = (Vec::new(), Vec::new());
        bind(
            &columns,
            &fields,
            &record,
            Missing::Unset,
            &mut found,
            &mut cells,
        )
        .unwrap();
        assert_eq!(
            cells,
            [id.clone(), Cell::Unset, Cell::Null],
            "absent email unset, explicit null n written as null"
        );
        bind(
            &columns,
            &fields,
            &record,
            Missing::Null,
            &mut found,
            &mut cells,
        )
        .unwrap();
        assert_eq!(
            cells[3..],
            [id, Cell::Null, Cell::Null],
            "each record's values follow the last's in the one vector"
        );
        for (record, reason) in &refused {
            let error = bind(
                &columns,
                &fields,
                record,
                Missing::Unset,
                &mut found,
                &mut cells,
            )
            .unwrap_err();
            assert!(error.contains(reason), "{error}");
        }
        assert_eq!(cells.len(), 6, "a refused record leaves no values behind");
    }

    #[test]
    fn a_retried_batch_keeps_its_timestamps_and_later_batches_get_later_ones() {
        let config: CassandraSinkConfig =
            toml::from_str("nodes = [\"127.0.0.1:9042\"]\nkeyspace = \"k\"\ntable = \"t\"")
                .unwrap();
        let mut first = CassandraSink::new(&config);
        let mut second = first.handle();
        let earlier = vec![Record::from_value(r#"{"id":"a","n":1}"#); 3];
        let later = vec![Record::from_value(r#"{"id":"a","n":2}"#); 3];
        // The earlier batch starts first, then the later one on another handle.
        let earlier_stamp = first.first_stamp(&earlier);
        let later_stamp = second.first_stamp(&later);
        assert!(
            later_stamp >= earlier_stamp + 3,
            "{earlier_stamp} then {later_stamp}"
        );
        // The earlier batch failed and is retried: its rows keep their timestamps, below the
        // later batch's, so they cannot overwrite its rows.
        first.unfinished = Some((first.digest(&earlier), earlier_stamp));
        assert_eq!(first.first_stamp(&earlier), earlier_stamp);
        // Once written, the same records again are a new batch.
        assert!(first.first_stamp(&earlier) > later_stamp);
    }
}
