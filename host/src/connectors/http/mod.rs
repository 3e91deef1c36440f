//! The `http` source (the seed's Airflow DAG): polls a URL on an interval, retries 5xx and
//! timeouts with exponential backoff and jitter (at least the `Retry-After` a server asks for),
//! and splits each JSON response at a pointer into
//! records. A malformed response becomes a dead letter carrying an excerpt of the body. With a
//! `journal`, fetched records survive a crash until they are acknowledged.

mod journal;
mod retry_after;
mod source;
mod split;

use async_trait::async_trait;

use super::{ConfigProblem, ConnectorError, Source, SourceSpec};

pub use source::{HttpSource, HttpSourceConfig};

#[async_trait]
impl SourceSpec for HttpSourceConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        HttpSourceConfig::validate(self)
    }

    async fn build(&self) -> Result<Box<dyn Source>, ConnectorError> {
        // Opening a journal reads and locks a file: off the async threads.
        let config = self.clone();
        let source = tokio::task::spawn_blocking(move || HttpSource::new(&config))
            .await
            .map_err(|e| {
                ConnectorError::fatal(
                    format!("http source {}", self.url.redacted()),
                    format!("opening the source failed: {e}"),
                )
            })??;
        Ok(Box::new(source))
    }

    fn describe(&self) -> String {
        match &self.journal {
            Some(journal) => format!(
                "http {} (journal {})",
                self.url.redacted(),
                journal.display()
            ),
            None => format!("http {}", self.url.redacted()),
        }
    }
}
