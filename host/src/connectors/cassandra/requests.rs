//! Groups a batch's rows into the requests the sink sends: rows that the same replicas own go
//! together, as one unlogged batch of at most `rows_per_request` rows and `request_bytes` bytes,
//! so a request is one round trip to a node that holds every row in it, and the driver and the
//! server handle one request where they would handle ten.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use scylla::client::session::Session;
use scylla::cluster::ClusterState;
use scylla::cluster::metadata::Strategy;
use scylla::errors::ExecutionError;
use scylla::frame::response::result::TableSpec;
use scylla::routing::Token;
use scylla::routing::partitioner::{Partitioner, PartitionerHasher};
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;

use super::columns::{Cell, bound_bytes};

/// Bytes a written cell costs a batch beyond its value (its write timestamp, flags and
/// lengths), so that a request's estimate follows Cassandra's own measure of a batch (the data
/// size of its mutations, which `batch_size_warn_threshold` is compared with).
const CELL_OVERHEAD_BYTES: usize = 12;

/// Groups `rows` (each a row's bound values for `insert` into `keyspace.table`) into the
/// requests [`send`] sends: each request holds rows that the same replicas own, at most
/// `max_rows` of them within `max_bytes` (see [`requests`]). With `max_rows` of 1 every row goes
/// alone, in order, and no token is computed.
pub fn group_by_replicas<'v, 'c: 'v>(
    session: &Session,
    insert: &PreparedStatement,
    (keyspace, table): (&str, &str),
    rows: impl IntoIterator<Item = &'v [Cell<'c>]>,
    max_rows: usize,
    max_bytes: usize,
) -> Vec<Vec<usize>> {
    if max_rows == 1 {
        return requests(rows.into_iter().map(|_| ((), 0)), 1, usize::MAX);
    }
    let cluster = session.get_cluster_state();
    let owners = Owners::of(&cluster, keyspace, table);
    let placed = rows
        .into_iter()
        .map(|values| (owners.replica_set(insert, values), row_bytes(values)));
    requests(placed, max_rows, max_bytes)
}

/// Sends one request of [`group_by_replicas`]: a single row as `insert`, several as the
/// unlogged batch of their number (`batches[n - 1]` holds `insert` `n` times, see
/// `unlogged_batches`).
#[expect(
    clippy::result_large_err,
    reason = "the driver's own error, handed on as the driver returns it and classified once"
)]
pub async fn send(
    session: &Session,
    insert: &PreparedStatement,
    batches: &[Batch],
    rows: Vec<&[Cell<'_>]>,
) -> Result<(), ExecutionError> {
    if let [row] = rows.as_slice() {
        return session.execute_unpaged(insert, row).await.map(drop);
    }
    let batch = &batches[rows.len() - 1];
    session.batch(batch, rows).await.map(drop)
}

/// The rows of a batch grouped into requests. `rows[i]` is row `i`'s replica set (any key that
/// is equal for rows the same replicas own) and its estimated size in bytes. A request holds
/// rows of one replica set only, at most `max_rows` of them and, unless it is a single row, at
/// most `max_bytes`; requests come in the order of their first row, and rows in arrival order
/// within a request.
fn requests<K: Hash + Eq>(
    rows: impl IntoIterator<Item = (K, usize)>,
    max_rows: usize,
    max_bytes: usize,
) -> Vec<Vec<usize>> {
    let mut requests: Vec<Vec<usize>> = Vec::new();
    // Per replica set: its request still open for more rows, and that request's bytes.
    let mut open: HashMap<K, (usize, usize)> = HashMap::new();
    for (row, (replicas, bytes)) in rows.into_iter().enumerate() {
        match open.get_mut(&replicas) {
            Some((request, used))
                if requests[*request].len() < max_rows
                    && used.saturating_add(bytes) <= max_bytes =>
            {
                requests[*request].push(row);
                *used += bytes;
            }
            _ => {
                requests.push(vec![row]);
                open.insert(replicas, (requests.len() - 1, bytes));
            }
        }
    }
    requests
}

/// Who owns a table's rows in one view of the cluster: the table and its keyspace's replication
/// strategy, looked up once for a whole batch rather than for each row.
pub struct Owners<'c> {
    cluster: &'c ClusterState,
    table: TableSpec<'c>,
    strategy: &'c Strategy,
}

impl<'c> Owners<'c> {
    /// The owners of `keyspace.table` as `cluster` sees them.
    pub fn of(cluster: &'c ClusterState, keyspace: &'c str, table: &'c str) -> Self {
        Owners {
            cluster,
            table: TableSpec::borrowed(keyspace, table),
            strategy: cluster
                .get_keyspace(keyspace)
                .map_or(&LOCAL_STRATEGY, |keyspace| &keyspace.strategy),
        }
    }

    /// The replicas that own a row, as a digest of their host ids: rows with equal digests may
    /// share a request. A row whose token cannot be computed (no partition key metadata) gets 0,
    /// so such rows are still grouped, and the driver routes their batch as it can. The driver's
    /// `get_token_endpoints` gives the same replicas, but collected into a new `Vec` per row
    /// after two map lookups, which was most of the grouping's cost (docs/performance.md).
    fn replica_set(&self, insert: &PreparedStatement, values: &[Cell]) -> u64 {
        let Some(token) = partition_token(insert, values) else {
            return 0;
        };
        let mut digest = std::hash::DefaultHasher::new();
        for host_id in self.replicas(token) {
            host_id.hash(&mut digest);
        }
        digest.finish()
    }

    /// The host ids of the replicas that own `token`, in the driver's order, as its
    /// `get_token_endpoints` lists them.
    pub fn replicas(&self, token: Token) -> impl Iterator<Item = uuid::Uuid> + '_ {
        self.cluster
            .replica_locator()
            .replicas_for_token(token, self.strategy, None, &self.table)
            .into_iter()
            .map(|(node, _)| node.host_id)
    }
}

/// The strategy the driver assumes for a keyspace it has no metadata for.
static LOCAL_STRATEGY: Strategy = Strategy::LocalStrategy;

/// The token of a row's partition key, as the driver's `calculate_token` computes it, but from
/// the key's values alone: `calculate_token` first serialises every value of the row into a new
/// buffer, which cost the sink more than the rest of its grouping (a sixth of the process in a
/// profile of file -> cassandra). `None` when the statement carries no partition key metadata
/// or a key value is unset, null or longer than a key component can be.
pub fn partition_token(insert: &PreparedStatement, values: &[Cell]) -> Option<Token> {
    let key = insert.get_variable_pk_indexes();
    let mut hasher = insert.get_partitioner_name().build_hasher();
    match key {
        [] => return None,
        // A single-column key is hashed as its bare value.
        [only] => values
            .get(usize::from(only.index))?
            .with_wire_bytes(|bytes| hasher.write(bytes))?,
        // A composite key is hashed as each component in key order (`sequence`, not the order
        // of the statement's markers), each as a 2-byte length, its bytes and a zero byte.
        _ => {
            for sequence in 0..key.len() {
                let part = key
                    .iter()
                    .find(|part| usize::from(part.sequence) == sequence)?;
                values
                    .get(usize::from(part.index))?
                    .with_wire_bytes(|bytes| {
                        let length = u16::try_from(bytes.len()).ok()?;
                        hasher.write(&length.to_be_bytes());
                        hasher.write(bytes);
                        hasher.write(&[0]);
                        Some(())
                    })??;
            }
        }
    }
    Some(hasher.finish())
}

/// A row's size in a batch, as Cassandra measures a batch: its values and each cell's own
/// bytes.
fn row_bytes(values: &[Cell]) -> usize {
    bound_bytes(values) + values.len() * CELL_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_one_replica_set_share_requests_up_to_the_row_limit() {
        let rows = ["a", "b", "a", "a", "b", "a", "c"].map(|replicas| (replicas, 10));
        assert_eq!(
            requests(rows, 3, 1000),
            vec![vec![0, 2, 3], vec![1, 4], vec![5], vec![6]]
        );
    }

    #[test]
    fn a_request_stays_within_its_bytes_and_a_larger_row_goes_alone() {
        let rows = [("a", 40), ("a", 40), ("a", 40), ("a", 500), ("a", 10)];
        assert_eq!(
            requests(rows, 10, 100),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
    }

    #[test]
    fn one_row_per_request_sends_every_row_alone_in_order() {
        assert_eq!(
            requests([((), 1); 3], 1, 1000),
            vec![vec![0], vec![1], vec![2]]
        );
        assert!(requests(Vec::<((), usize)>::new(), 10, 1000).is_empty());
    }
}
