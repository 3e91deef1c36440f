//! The `file` source: one record per line of a file; the committed line number is persisted in a
//! checkpoint file so that a restart resumes after the last acknowledged line. A line is a record
//! only once its newline is there (while following, a writer may be half-way through it), and
//! its bytes go on as they are, valid UTF-8 or not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::connectors::{ConfigProblem, ConnectorError, Source};
use crate::record::{Record, SourcePosition, SourceRecord};

/// How often a following source looks for new lines at the end of the file.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Options of the `file` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The file to read, one record per line (usually JSON). Empty lines are skipped.
    pub path: PathBuf,
    /// Where the last acknowledged line number is kept; when given, a restart resumes after it.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Keep waiting for lines appended to the file instead of ending at its end, like `tail -f`.
    #[serde(default)]
    pub follow: bool,
}

impl FileSourceConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.path.as_os_str().is_empty() {
            return Err(("path".into(), "must name a file".into()));
        }
        Ok(())
    }
}

/// Reads a file line by line.
pub struct FileSource {
    config: FileSourceConfig,
    reader: BufReader<tokio::fs::File>,
    /// The line being read; while following, the start of a line whose writer is not done.
    pending: Vec<u8>,
    line_number: i64,
    stream: Arc<str>,
}

impl FileSource {
    /// Opens the file and skips the lines a previous run committed.
    pub async fn open(config: &FileSourceConfig) -> Result<Self, ConnectorError> {
        let name = describe(&config.path);
        let file = tokio::fs::File::open(&config.path).await.map_err(|e| {
            ConnectorError::fatal(&name, format!("cannot open the file: {e}; check `path`"))
        })?;
        let mut source = FileSource {
            config: config.clone(),
            reader: BufReader::new(file),
            pending: Vec::new(),
            line_number: 0,
            stream: Arc::from(config.path.display().to_string()),
        };
        let committed = match &config.checkpoint {
            Some(checkpoint) => read_checkpoint(checkpoint).await?,
            None => 0,
        };
        while source.line_number < committed {
            match source.next_line().await? {
                Some(_) => {}
                None => break,
            }
        }
        if committed > 0 {
            tracing::info!(file = %config.path.display(), line = committed, "Resuming after the committed line.");
        }
        Ok(source)
    }

    /// The next complete line without its line ending; `None` at the end of the file. While
    /// following, an unterminated last line stays pending until its newline arrives; otherwise it
    /// is the file's last line.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ConnectorError> {
        self.reader
            .read_until(b'\n', &mut self.pending)
            .await
            .map_err(|e| {
                ConnectorError::transient(describe(&self.config.path), format!("read failed: {e}"))
            })?;
        let complete = self.pending.last() == Some(&b'\n');
        if !complete && (self.config.follow || self.pending.is_empty()) {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.pending);
        if complete {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        self.line_number += 1;
        Ok(Some(line))
    }
}

fn describe(path: &Path) -> String {
    format!("file source {}", path.display())
}

async fn read_checkpoint(path: &Path) -> Result<i64, ConnectorError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => text.trim().parse().map_err(|_| {
            ConnectorError::fatal(
                format!("checkpoint {}", path.display()),
                format!(
                    "holds `{}`, not a line number; delete it to start from the beginning",
                    text.trim()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(ConnectorError::transient(
            format!("checkpoint {}", path.display()),
            e.to_string(),
        )),
    }
}

#[async_trait]
impl Source for FileSource {
    async fn poll_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
        let mut batch = Vec::new();
        let mut first_at: Option<Instant> = None;
        while batch.len() < max {
            match self.next_line().await? {
                Some(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Some(line) => {
                    first_at.get_or_insert_with(Instant::now);
                    batch.push(SourceRecord::new(
                        Record::from_value(line),
                        SourcePosition {
                            stream: Arc::clone(&self.stream),
                            partition: 0,
                            offset: self.line_number,
                        },
                    ));
                }
                None if !self.config.follow => break,
                None => {
                    if first_at.is_none_or(|t| t.elapsed() >= linger) && !batch.is_empty() {
                        break;
                    }
                    tokio::time::sleep(FOLLOW_POLL.min(linger.max(Duration::from_millis(1)))).await;
                    if batch.is_empty() {
                        // Nothing new: return empty-handed so acknowledged lines get committed.
                        return Ok(Some(batch));
                    }
                }
            }
        }
        Ok((!batch.is_empty() || self.config.follow).then_some(batch))
    }

    async fn commit(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        let (Some(checkpoint), Some(last)) = (
            &self.config.checkpoint,
            positions.iter().map(|p| p.offset).max(),
        ) else {
            return Ok(());
        };
        // Write-then-rename: a crash mid-write never leaves a torn checkpoint.
        let temporary = checkpoint.with_extension("tmp");
        let write = async {
            tokio::fs::write(&temporary, last.to_string()).await?;
            tokio::fs::rename(&temporary, checkpoint).await
        };
        write.await.map_err(|e| {
            ConnectorError::transient(
                format!("checkpoint {}", checkpoint.display()),
                e.to_string(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resumes_after_the_committed_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"n\":1}\n\n{\"n\":2}\n{\"n\":3}\n").unwrap();
        let config = FileSourceConfig {
            path: path.clone(),
            checkpoint: Some(dir.path().join("in.offset")),
            follow: false,
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let batch = source.poll_batch(2, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].position.offset, 3, "the empty line still counts");
        source.commit(&[batch[1].position.clone()]).await.unwrap();

        let mut restarted = FileSource::open(&config).await.unwrap();
        let rest = restarted
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].record.value, br#"{"n":3}"#);
        assert!(
            restarted
                .poll_batch(10, Duration::ZERO)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_line_still_being_written_waits_for_its_newline() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":").unwrap();
        let config = FileSourceConfig {
            path: path.clone(),
            checkpoint: None,
            follow: true,
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let first = source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        let values: Vec<&[u8]> = first.iter().map(|r| r.record.value.as_slice()).collect();
        assert_eq!(
            values,
            [br#"{"n":1}"#.as_slice()],
            "the half-written line is held back"
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"2}\r\n").unwrap();
        let second = source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(
            second[0].record.value, br#"{"n":2}"#,
            "one record, line ending removed"
        );
        assert_eq!(second[0].position.offset, 2);
    }

    #[tokio::test]
    async fn without_follow_an_unterminated_last_line_and_invalid_utf8_are_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, b"\xff\xfe not text\n{\"last\":true}").unwrap();
        let config = FileSourceConfig {
            path,
            checkpoint: None,
            follow: false,
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let batch = source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        let values: Vec<&[u8]> = batch.iter().map(|r| r.record.value.as_slice()).collect();
        assert_eq!(
            values,
            [
                b"\xff\xfe not text".as_slice(),
                br#"{"last":true}"#.as_slice()
            ]
        );
        assert!(
            source
                .poll_batch(10, Duration::ZERO)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn missing_file_is_a_fatal_error_naming_it() {
        let config = FileSourceConfig {
            path: "/nonexistent/weir.jsonl".into(),
            checkpoint: None,
            follow: false,
        };
        let error = FileSource::open(&config).await.err().unwrap();
        assert_eq!(error.retry, crate::connectors::Retry::Never);
        assert!(error.to_string().contains("/nonexistent/weir.jsonl"));
    }
}
