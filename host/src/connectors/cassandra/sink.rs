//! Writes records to a Cassandra table with a prepared, idempotent INSERT per record: records for
//! the same primary key one after another in arrival order, different keys concurrently; the
//! batch is acknowledged when every insert succeeded or its record was dead-lettered. Handles
//! forked for batches in flight together share the session and one pool of `concurrency`
//! inserts, so the next batch's inserts start as the last ones of a batch finish; each row's
//! write timestamp is fixed when its batch first starts, so a row of a later batch always wins
//! over the same key's row of an earlier one, however their inserts interleave or are retried.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use scylla::errors::ExecutionError;

use super::classify::{Failure, classify};
use super::columns::{Cell, Missing, bind_field, bound_bytes};
use super::config::{CassandraSinkConfig, DEFAULT_MAX_MUTATION_BYTES};
use super::order::chains;
use super::session::{Column, Prepared, connect, schema_intact};
use super::stamps::Stamps;
use crate::connectors::fields::FieldSet;
use crate::connectors::{ConnectorError, Rejected, Sink};
use crate::record::Record;

/// What the handles of one sink share.
struct Shared {
    /// Kept across transient failures: the driver reconnects its pools by itself, and a new
    /// session per failure would storm a recovering cluster with connections.
    prepared: tokio::sync::Mutex<Option<Arc<Prepared>>>,
    /// Inserts in flight across all handles, at most `concurrency`; handed out first come,
    /// first served, so an earlier batch's rows go before a later one's.
    inserts: tokio::sync::Semaphore,
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
                inserts: tokio::sync::Semaphore::new(config.concurrency),
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

/// The bound values of one record, its text borrowed from the record, or why it cannot be
/// written.
fn bind<'r>(
    columns: &[Column],
    fields: &FieldSet,
    record: &'r Record,
    missing: Missing,
) -> Result<Vec<Cell<'r>>, String> {
    let found = fields
        .read(&record.value)
        .map_err(|e| format!("value is not JSON: {e}"))?;
    columns
        .iter()
        .zip(found)
        .map(|(column, field)| {
            let value = bind_field(
                &column.name,
                column.kind,
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
        })
        .collect()
}

/// The row a record writes, as a digest of its primary key values: records with equal keys
/// write the same row and must be written in order. Two keys that happen to share a digest are
/// only written one after the other, never reordered.
fn row_key(columns: &[Column], values: &[Cell], hasher: &RandomState) -> u64 {
    let mut key = hasher.build_hasher();
    for (_, value) in columns
        .iter()
        .zip(values)
        .filter(|(column, _)| column.primary_key)
    {
        std::mem::discriminant(value).hash(&mut key);
        match value {
            Cell::Text(text) => text.hash(&mut key),
            Cell::Int(n) => n.hash(&mut key),
            Cell::BigInt(n) | Cell::Timestamp(n) => n.hash(&mut key),
            Cell::Boolean(flag) => flag.hash(&mut key),
            Cell::Uuid(id) => id.hash(&mut key),
            Cell::Double(x) => x.to_bits().hash(&mut key),
            Cell::Unset | Cell::Null => {}
        }
    }
    key.finish()
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
struct Row<'r> {
    index: usize,
    values: Vec<Cell<'r>>,
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
        let (concurrency, missing, limit) = (
            self.config.concurrency,
            self.config.missing,
            self.config.max_mutation_bytes,
        );
        let name = &*self.name;
        let (keyspace, table_name) = (&self.config.keyspace, &self.config.table);
        let table = format!("{keyspace}.{table_name}");
        let prepared = self.prepare().await?;
        let mut rejected = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match bind(&prepared.columns, &prepared.fields, record, missing) {
                Ok(mut values) => match (bound_bytes(&values), limit) {
                    (bytes, Some(limit)) if bytes > limit => {
                        rejected.push(oversized(&table, index, bytes, limit))
                    }
                    _ => {
                        let stamp = first_stamp.saturating_add(index as i64);
                        values.push(Cell::BigInt(stamp));
                        rows.push(Row { index, values });
                    }
                },
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        let (session, insert) = (&prepared.session, &prepared.insert);
        let inserts = &self.shared.inserts;
        let bound = &rows;
        // Set once an insert failed in a way that fails the whole batch: the other chains start
        // no further insert, so an outage costs one failed request per chain, not one per record.
        let abandoned = &AtomicBool::new(false);
        let keys = rows
            .iter()
            .map(|row| row_key(&prepared.columns, &row.values, &self.hasher));
        // Each chain is one primary key's rows in arrival order, written one at a time; chains
        // run concurrently. Rows go by position, not by reference: an `async` block over
        // `&Row` trips the compiler's `Send` check of the sink's future.
        let mut chains = futures::stream::iter(chains(keys))
            .map(|chain| async move {
                let mut failures = Vec::new();
                for row in chain {
                    if abandoned.load(Ordering::Relaxed) {
                        break;
                    }
                    // Never closed, so always granted.
                    let Ok(_permit) = inserts.acquire().await else {
                        break;
                    };
                    let Err(error) = session.execute_unpaged(insert, &bound[row].values).await
                    else {
                        continue;
                    };
                    let failure = classify(&error);
                    failures.push((row, failure, error));
                    match failure {
                        // This record alone: the key's later records still follow it.
                        Failure::Record | Failure::Invalid => {}
                        Failure::Config | Failure::Transient | Failure::Session => {
                            abandoned.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                failures
            })
            .buffer_unordered(concurrency);
        let (mut transient, mut config, mut session_lost) = (None, None, None);
        let mut invalid = Vec::new();
        while let Some(failures) = chains.next().await {
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
        drop(chains);
        let batch_failed = config.is_some() || transient.is_some() || session_lost.is_some();
        if !batch_failed && !invalid.is_empty() {
            let intact = schema_intact(&prepared.session, keyspace, table_name, &prepared.columns)
                .await
                .map_err(|e| {
                    ConnectorError::transient(name, "cannot read the table's columns").caused_by(e)
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
            kind,
            declared: "text".into(),
            path: crate::connectors::fields::FieldPath::parse(name),
            primary_key,
        }
    }

    fn fields(columns: &[Column]) -> FieldSet {
        FieldSet::new(columns.iter().map(|column| &column.path))
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
        let id = Cell::Text("a".into());
        assert_eq!(
            bind(&columns, &fields, &record, Missing::Unset).unwrap(),
            vec![id.clone(), Cell::Unset, Cell::Null],
            "absent email unset, explicit null n written as null"
        );
        assert_eq!(
            bind(&columns, &fields, &record, Missing::Null).unwrap(),
            vec![id, Cell::Null, Cell::Null]
        );
        for value in [r#"{"email":"x"}"#, r#"{"id":null}"#] {
            let error = bind(
                &columns,
                &fields,
                &Record::from_value(value),
                Missing::Unset,
            )
            .unwrap_err();
            assert!(error.contains("primary key column `id`"), "{error}");
        }
        let error = bind(&columns, &fields, &Record::from_value("{"), Missing::Unset).unwrap_err();
        assert!(error.starts_with("value is not JSON"), "{error}");
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

    #[test]
    fn the_row_key_is_the_primary_key_values_only() {
        let columns = [
            column("id", ColumnType::Text, true),
            column("at", ColumnType::BigInt, true),
            column("email", ColumnType::Text, false),
        ];
        let (fields, hasher) = (fields(&columns), RandomState::new());
        let key = |value: &str| {
            let record = Record::from_value(value);
            let values = bind(&columns, &fields, &record, Missing::Unset).unwrap();
            row_key(&columns, &values, &hasher)
        };
        assert_eq!(
            key(r#"{"id":"a","at":1,"email":"x"}"#),
            key(r#"{"id":"a","at":1}"#)
        );
        assert_ne!(key(r#"{"id":"a","at":1}"#), key(r#"{"id":"a","at":2}"#));
        // Each text key's end is part of the digest: moving a character from one key column
        // to the next is another row.
        let text_columns = [
            column("a", ColumnType::Text, true),
            column("b", ColumnType::Text, true),
        ];
        let text_fields = super::tests::fields(&text_columns);
        let text_key = |value: &str| {
            let record = Record::from_value(value);
            let values = bind(&text_columns, &text_fields, &record, Missing::Unset).unwrap();
            row_key(&text_columns, &values, &hasher)
        };
        assert_ne!(
            text_key(r#"{"a":"xy","b":"z"}"#),
            text_key(r#"{"a":"x","b":"yz"}"#)
        );
    }
}
