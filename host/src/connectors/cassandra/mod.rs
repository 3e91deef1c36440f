//! The `cassandra` sink (the seed's Spark-to-Cassandra step): prepared, idempotent inserts with
//! columns mapped from JSON fields, bounded concurrency, retries, and a clear error per record on
//! a type mismatch.

mod columns;
mod sink;

use async_trait::async_trait;

use super::{ConfigProblem, ConnectorError, Sink, SinkSpec};

pub use columns::{ColumnType, to_cql};
pub use sink::{CassandraSink, CassandraSinkConfig};

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
