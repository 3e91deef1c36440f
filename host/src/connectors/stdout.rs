//! The `stdout` sink: records as lines on standard output, for trying pipelines out and piping.

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::encoding::{Encoding, encode};
use super::{ConnectorError, Rejected, Sink, SinkSpec};
use crate::record::Record;

/// Options of the `stdout` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// `value` (the record's value) or `envelope` (key, value, headers, timestamp); defaults to
    /// `value` for a sink and `envelope` for a dead-letter destination.
    #[serde(default)]
    pub encoding: Option<Encoding>,
}

#[async_trait]
impl SinkSpec for StdoutSinkConfig {
    async fn build(&self, dead_letter: bool) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(StdoutSink::new(self, dead_letter)))
    }

    fn describe(&self) -> String {
        "stdout".into()
    }
}

/// What a failed write to stdout means. A reader that went away (`weir run ... | head`) never
/// comes back, so retrying would only hang the pipeline: it stops instead, and what it could not
/// write is read again by the next run. Anything else (stdout redirected to a file on a full
/// disk) may pass, and is retried.
fn write_failed(error: std::io::Error) -> ConnectorError {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        ConnectorError::fatal(
            "stdout sink",
            "standard output was closed by its reader (a broken pipe, as when piped into `head`); nothing more can be written there, and the records not written are read again by the next run",
        )
    } else {
        ConnectorError::transient("stdout sink", "write failed").caused_by(error)
    }
}

/// Writes each record as a line on stdout.
pub struct StdoutSink {
    encoding: Encoding,
    out: tokio::io::Stdout,
}

impl StdoutSink {
    /// A sink on the process's stdout.
    pub fn new(config: &StdoutSinkConfig, dead_letter: bool) -> Self {
        let default = if dead_letter {
            Encoding::Envelope
        } else {
            Encoding::Value
        };
        StdoutSink {
            encoding: config.encoding.unwrap_or(default),
            out: tokio::io::stdout(),
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let mut buffer = Vec::new();
        for record in records {
            buffer.extend_from_slice(&encode(record, self.encoding));
            buffer.push(b'\n');
        }
        let result = async {
            self.out.write_all(&buffer).await?;
            self.out.flush().await
        };
        result.await.map_err(write_failed)?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_gone_stops_the_pipeline_and_a_full_disk_is_retried() {
        let gone = write_failed(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(!gone.is_transient(), "{gone}");
        assert!(gone.to_string().contains("closed by its reader"), "{gone}");
        let full = write_failed(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(full.is_transient(), "{full}");
    }
}
