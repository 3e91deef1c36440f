//! The `http` source (the seed's Airflow DAG): polls a URL on an interval, retries 5xx and
//! timeouts with exponential backoff and jitter, and splits each JSON response at a pointer into
//! records. A malformed response becomes a dead letter carrying an excerpt of the body.

mod source;

use async_trait::async_trait;

use super::{ConfigProblem, ConnectorError, Source, SourceSpec};

pub use source::{HttpSource, HttpSourceConfig};

#[async_trait]
impl SourceSpec for HttpSourceConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        HttpSourceConfig::validate(self)
    }

    async fn build(&self) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(HttpSource::new(self)?))
    }

    fn describe(&self) -> String {
        format!("http {}", self.url.redacted())
    }
}
