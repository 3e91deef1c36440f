//! The `cassandra` sink (the seed's Spark-to-Cassandra step): prepared, idempotent inserts with
//! columns mapped from JSON fields, absent fields left unset, the rows of one replica set sent
//! together as unlogged batches, each row's write timestamp fixed so a key's later record wins,
//! bounded concurrency, retries on one kept session, and a clear error per record on a type
//! mismatch or an oversized row.

mod classify;
mod columns;
mod config;
mod kinds;
mod numbers;
mod requests;
mod session;
mod sink;
mod stamps;

use async_trait::async_trait;

use super::{ConfigProblem, ConnectorError, Sink, SinkSpec};

pub use columns::{Cell, ColumnType, Missing, bind_field, to_cell};
pub use config::{
    CassandraSinkConfig, CreateTable, DEFAULT_MAX_MUTATION_BYTES, DEFAULT_REQUEST_BYTES,
    DEFAULT_ROWS_PER_REQUEST, WriteConsistency,
};
pub use kinds::{ColumnKind, UserType, UserTypes};
pub use numbers::Scaled;
pub use requests::{Owners, group_by_replicas, partition_token, send};
pub use session::unlogged_batches;
pub use sink::CassandraSink;

#[async_trait]
impl SinkSpec for CassandraSinkConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        CassandraSinkConfig::validate(self)
    }

    async fn build(&self, _dead_letter: bool) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(CassandraSink::new(self)))
    }

    fn describe(&self) -> String {
        format!("cassandra table {}.{}", self.keyspace, self.table)
    }

    /// It cannot hold arbitrary bytes.
    fn can_hold_dead_letters(&self) -> bool {
        false
    }
}
