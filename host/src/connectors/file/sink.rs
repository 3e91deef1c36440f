//! The `file` sink: records as lines, flushed before a batch is acknowledged.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::connectors::encoding::{Encoding, encode};
use crate::connectors::{ConfigProblem, ConnectorError, Rejected, Sink};
use crate::record::Record;

/// What happens to an existing file when the pipeline starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Add to the end: what a resumable pipeline needs.
    #[default]
    Append,
    /// Start from an empty file: for runs that regenerate everything, like the quickstart.
    Truncate,
}

/// Options of the `file` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to write; parent folders are created.
    pub path: PathBuf,
    /// `value` (the record's value per line) or `envelope` (key, value, headers, timestamp);
    /// defaults to `value` for a sink and `envelope` for a dead-letter destination.
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// `append` (default) or `truncate` the file at start.
    #[serde(default)]
    pub mode: WriteMode,
    /// fsync after every batch, so an acknowledged batch survives a power cut, not only a crash.
    #[serde(default)]
    pub fsync: bool,
}

impl FileSinkConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.path.as_os_str().is_empty() {
            return Err(("path".into(), "must name a file".into()));
        }
        Ok(())
    }
}

/// Appends records to a file.
pub struct FileSink {
    name: String,
    file: tokio::io::BufWriter<tokio::fs::File>,
    encoding: Encoding,
    fsync: bool,
}

impl FileSink {
    /// Opens (and creates) the file.
    pub async fn open(config: &FileSinkConfig, dead_letter: bool) -> Result<Self, ConnectorError> {
        let name = format!("file sink {}", config.path.display());
        if let Some(parent) = config.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                ConnectorError::fatal(
                    &name,
                    format!("cannot create folder {}: {e}", parent.display()),
                )
            })?;
        }
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true);
        match config.mode {
            WriteMode::Append => options.append(true),
            WriteMode::Truncate => options.write(true).truncate(true),
        };
        let file = options
            .open(&config.path)
            .await
            .map_err(|e| ConnectorError::fatal(&name, format!("cannot open for writing: {e}")))?;
        let default = if dead_letter {
            Encoding::Envelope
        } else {
            Encoding::Value
        };
        Ok(FileSink {
            name,
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            encoding: config.encoding.unwrap_or(default),
            fsync: config.fsync,
        })
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let result = async {
            for record in records {
                self.file.write_all(&encode(record, self.encoding)).await?;
                self.file.write_all(b"\n").await?;
            }
            self.file.flush().await?;
            if self.fsync {
                self.file.get_ref().sync_data().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        result
            .await
            .map_err(|e| ConnectorError::transient(&self.name, format!("write failed: {e}")))?;
        Ok(Vec::new())
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        self.file
            .flush()
            .await
            .map_err(|e| ConnectorError::transient(&self.name, format!("flush failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_lines_and_creates_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.jsonl");
        let config = FileSinkConfig {
            path: path.clone(),
            encoding: None,
            mode: WriteMode::Truncate,
            fsync: false,
        };
        let mut sink = FileSink::open(&config, false).await.unwrap();
        sink.write(&[Record::from_value("1"), Record::from_value("2")])
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
    }
}
