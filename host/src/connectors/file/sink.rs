//! The `file` sink: records as lines, flushed before a batch is acknowledged.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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
        if config.mode == WriteMode::Append {
            let path = config.path.clone();
            let fsync = config.fsync;
            let dropped = tokio::task::spawn_blocking(move || drop_torn_tail(&path, fsync))
                .await
                .map_err(|e| ConnectorError::fatal(&name, format!("cannot check the file: {e}")))?
                .map_err(|e| {
                    ConnectorError::fatal(&name, format!("cannot check the file's last line: {e}"))
                })?;
            if dropped > 0 {
                tracing::warn!(
                    connector = %name,
                    bytes = dropped,
                    "The file ended in a half-written line (the process stopped mid-write); dropped it. Its record was never acknowledged, so it is delivered again."
                );
            }
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

/// Truncates `path` to just after its last newline, returning how many bytes went. A record is
/// acknowledged only once its whole line and newline are flushed, so bytes after the last
/// newline are a line torn by a crash: appending to them would glue the next record onto a
/// fragment. A missing file has nothing to repair.
fn drop_torn_tail(path: &Path, fsync: bool) -> std::io::Result<u64> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // Scans backwards a block at a time: a torn line is at most one record long.
    let mut block = vec![0u8; 64 * 1024];
    let mut end = len;
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(newline) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + newline as u64 + 1;
        }
        end = start;
    };
    if keep < len {
        file.set_len(keep)?;
        if fsync {
            file.sync_data()?;
        }
    }
    Ok(len - keep)
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let result = async {
            for record in records {
                // A value line is the record's own bytes: written from it, not from a copy.
                match self.encoding {
                    Encoding::Value => self.file.write_all(&record.value).await?,
                    Encoding::Envelope => {
                        self.file.write_all(&encode(record, self.encoding)).await?;
                    }
                }
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
            .map_err(|e| ConnectorError::transient(&self.name, "write failed").caused_by(e))?;
        Ok(Vec::new())
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        self.file
            .flush()
            .await
            .map_err(|e| ConnectorError::transient(&self.name, "flush failed").caused_by(e))
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

    #[tokio::test]
    async fn appending_drops_a_torn_last_line_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        // What a kill -9 in the middle of a flush leaves: whole lines, then part of one.
        std::fs::write(&path, "{\"n\":1}\n{\"n\":2}\n{\"n\":3,\"na").unwrap();
        let config = FileSinkConfig {
            path: path.clone(),
            encoding: None,
            mode: WriteMode::Append,
            fsync: true,
        };
        let mut sink = FileSink::open(&config, false).await.unwrap();
        sink.write(&[Record::from_value(r#"{"n":3}"#)])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"
        );
    }

    #[test]
    fn a_torn_tail_is_found_across_blocks_and_whole_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        assert_eq!(drop_torn_tail(&path, false).unwrap(), 0, "no file yet");
        std::fs::write(&path, "").unwrap();
        assert_eq!(drop_torn_tail(&path, false).unwrap(), 0);
        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(drop_torn_tail(&path, false).unwrap(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
        // A fragment longer than the scan block, after one whole line.
        let fragment = "x".repeat(200 * 1024);
        std::fs::write(&path, format!("a\n{fragment}")).unwrap();
        assert_eq!(drop_torn_tail(&path, false).unwrap(), fragment.len() as u64);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\n");
        // No newline at all: nothing in the file was ever acknowledged.
        std::fs::write(&path, "torn").unwrap();
        assert_eq!(drop_torn_tail(&path, false).unwrap(), 4);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}
