//! The `cassandra` sink (the seed's Spark-to-Cassandra step): prepared, idempotent inserts with
//! columns mapped from JSON fields, bounded concurrency, retries, and a clear error per record on
//! a type mismatch.

mod columns;
mod sink;

pub use columns::{ColumnType, to_cql};
pub use sink::{CassandraSink, CassandraSinkConfig};
