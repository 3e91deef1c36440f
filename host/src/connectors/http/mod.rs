//! The `http` source (the seed's Airflow DAG): polls a URL on an interval, retries 5xx and
//! timeouts with exponential backoff and jitter, and splits each JSON response at a pointer into
//! records. A malformed response becomes a dead letter carrying an excerpt of the body.

mod source;

pub use source::{HttpSource, HttpSourceConfig};
