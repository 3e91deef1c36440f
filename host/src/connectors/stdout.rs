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
        result
            .await
            .map_err(|e| ConnectorError::transient("stdout sink", "write failed").caused_by(e))?;
        Ok(Vec::new())
    }
}
