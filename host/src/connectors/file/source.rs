//! The `file` source: one record per line of a file; the committed line number is persisted in a
//! checkpoint file so that a restart resumes after the last acknowledged line.

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
    lines: tokio::io::Lines<BufReader<tokio::fs::File>>,
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
            lines: BufReader::new(file).lines(),
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

    async fn next_line(&mut self) -> Result<Option<String>, ConnectorError> {
        let line = self.lines.next_line().await.map_err(|e| {
            ConnectorError::transient(describe(&self.config.path), format!("read failed: {e}"))
        })?;
        if line.is_some() {
            self.line_number += 1;
        }
        Ok(line)
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
                Some(line) if line.trim().is_empty() => continue,
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
