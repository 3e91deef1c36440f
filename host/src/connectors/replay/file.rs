//! Dead letters from a `file` destination: one envelope per line (key, value, headers,
//! timestamp). Progress is the last replayed line number in a checkpoint file, written aside,
//! fsynced and renamed in, so neither a crash nor a power cut leaves a torn one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{DeadLetterReader, Entry, headers_from_json};
use crate::connectors::encoding::Encoding;
use crate::connectors::file::{
    FileSinkConfig, WriterLock, lock_checkpoint, read_line_checkpoint, write_checkpoint,
};
use crate::connectors::{ConnectorError, ErrorKind};
use crate::record::{Record, SourcePosition};

/// The longest line read as one dead letter: more is not an entry weir wrote (a dead letter
/// keeps at most the record limit plus its headers).
const MAX_LINE_BYTES: u64 = 64 << 20;

/// Reads a dead-letter file up to its size at opening.
pub struct FileReader {
    name: String,
    path: PathBuf,
    stream: Arc<str>,
    reader: tokio::io::Take<BufReader<tokio::fs::File>>,
    checkpoint: PathBuf,
    /// Keeps another `weir replay` of this file off the checkpoint (`None` where the
    /// filesystem cannot lock).
    _checkpoint_lock: Option<WriterLock>,
    /// The number of the line read last.
    line: i64,
    /// Non-empty lines between the checkpoint and the end at opening.
    remaining: u64,
}

impl FileReader {
    /// Opens the file, skips the lines the checkpoint names, and counts the rest.
    pub async fn open(config: &FileSinkConfig, checkpoint: &Path) -> Result<Self, ConnectorError> {
        let name = format!("dead-letter file {}", config.path.display());
        if config.encoding == Some(Encoding::Value) {
            return Err(ConnectorError::fatal(
                name,
                "is written with encoding = \"value\", which keeps no headers and so no reason; only an envelope file can be replayed",
            ));
        }
        let checkpoint_lock = lock_checkpoint(
            checkpoint,
            &format!("replay checkpoint {}", checkpoint.display()),
        )
        .await?;
        let committed = read_checkpoint(checkpoint).await?;
        let open = |name: &str| {
            let name = name.to_owned();
            let path = config.path.clone();
            async move {
                let file = tokio::fs::File::open(&path).await.map_err(|e| {
                    let kind = if e.kind() == std::io::ErrorKind::NotFound {
                        ErrorKind::Fatal
                    } else {
                        ErrorKind::Transient
                    };
                    ConnectorError::new(kind, &name, format!("cannot open: {e}"))
                })?;
                let size = file
                    .metadata()
                    .await
                    .map_err(|e| ConnectorError::transient(&name, format!("cannot stat: {e}")))?
                    .len();
                Ok::<_, ConnectorError>(BufReader::new(file).take(size))
            }
        };
        // One pass to count what is left (for progress), then the reader proper.
        let mut counter = FileReader {
            name: name.clone(),
            path: config.path.clone(),
            stream: Arc::from(config.path.display().to_string()),
            reader: open(&name).await?,
            checkpoint: checkpoint.to_owned(),
            _checkpoint_lock: checkpoint_lock,
            line: 0,
            remaining: 0,
        };
        let mut remaining = 0;
        while let Some(line) = counter.next_line().await? {
            if counter.line > committed && !line.iter().all(u8::is_ascii_whitespace) {
                remaining += 1;
            }
        }
        let mut reader = FileReader {
            reader: open(&name).await?,
            remaining,
            ..counter
        };
        reader.line = 0;
        while reader.line < committed {
            if reader.next_line().await?.is_none() {
                break;
            }
        }
        if committed > 0 {
            tracing::info!(file = %reader.path.display(), line = committed, checkpoint = %checkpoint.display(), "Replay resumes after the checkpointed line.");
        }
        Ok(reader)
    }

    /// The next line without its newline; `None` at the end as of opening. A last line without
    /// a newline was torn by a crash of its writer and is not an entry.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ConnectorError> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| ConnectorError::transient(&self.name, format!("read failed: {e}")))?;
        if read == 0 || line.last() != Some(&b'\n') {
            if line.len() as u64 > MAX_LINE_BYTES {
                return Err(ConnectorError::fatal(
                    &self.name,
                    format!(
                        "line {} is longer than {MAX_LINE_BYTES} bytes: not a dead letter weir wrote",
                        self.line + 1
                    ),
                ));
            }
            return Ok(None);
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        self.line += 1;
        Ok(Some(line))
    }

    /// Decodes one envelope line.
    fn decode(&self, line: &[u8]) -> Result<Entry, ConnectorError> {
        let problem = |what: String| {
            ConnectorError::fatal(
                &self.name,
                format!(
                    "line {} is not a dead-letter envelope ({what}); fix or remove the line, or move the checkpoint {} past it",
                    self.line,
                    self.checkpoint.display()
                ),
            )
        };
        let json: Value = serde_json::from_slice(line).map_err(|e| problem(e.to_string()))?;
        let bytes = |name: &str| -> Result<Option<Vec<u8>>, ConnectorError> {
            if let Some(text) = json.get(name).and_then(Value::as_str) {
                return Ok(Some(text.as_bytes().to_vec()));
            }
            match json.get(format!("{name}_hex")).and_then(Value::as_str) {
                Some(hexed) => hex::decode(hexed)
                    .map(Some)
                    .map_err(|e| problem(format!("`{name}_hex`: {e}"))),
                None => Ok(None),
            }
        };
        let value = bytes("value")?.ok_or_else(|| problem("no `value`".into()))?;
        let timestamp = json.get("timestamp").and_then(Value::as_i64);
        let record = Record {
            key: bytes("key")?.map(Bytes::from),
            value: Bytes::from(value),
            headers: headers_from_json(json.get("headers")).map_err(problem)?,
            timestamp,
        };
        Ok(Entry {
            record,
            position: SourcePosition {
                stream: Arc::clone(&self.stream),
                partition: 0,
                offset: self.line,
            },
            time: timestamp,
        })
    }
}

async fn read_checkpoint(path: &Path) -> Result<i64, ConnectorError> {
    read_line_checkpoint(
        path,
        &format!("replay checkpoint {}", path.display()),
        "delete it to replay from the first line",
    )
    .await
}

#[async_trait]
impl DeadLetterReader for FileReader {
    async fn read(&mut self, max: usize) -> Result<Option<Vec<Entry>>, ConnectorError> {
        let mut entries = Vec::new();
        while entries.len() < max.max(1) {
            match self.next_line().await? {
                Some(line) if line.iter().all(u8::is_ascii_whitespace) => {}
                Some(line) => entries.push(self.decode(&line)?),
                None => break,
            }
        }
        Ok((!entries.is_empty()).then_some(entries))
    }

    async fn commit(
        &mut self,
        _replayed: &[SourcePosition],
        highest: &[SourcePosition],
    ) -> Result<(), ConnectorError> {
        let Some(last) = highest.iter().map(|p| p.offset).max() else {
            return Ok(());
        };
        write_checkpoint(
            &self.checkpoint,
            last.to_string(),
            &format!("replay checkpoint {}", self.checkpoint.display()),
        )
        .await
    }

    fn remaining(&self) -> u64 {
        self.remaining
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::file::WriteMode;

    #[tokio::test]
    async fn reads_envelopes_up_to_the_end_at_opening_and_resumes_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let mut text = String::new();
        for n in 1..=3 {
            let mut record = Record::from_value(format!("{{\"n\":{n}}}"));
            record.key = Some(format!("k{n}").into());
            record.set_header("weir.error.kind", "bad-record");
            text.push_str(&crate::connectors::encoding::envelope(&record).to_string());
            text.push('\n');
        }
        text.push_str("{\"torn");
        std::fs::write(&path, &text).unwrap();
        // A file of the user's that a temporary name made with `with_extension("tmp")` would
        // clobber.
        std::fs::write(dir.path().join("dlq.tmp"), "keep me").unwrap();
        let config = FileSinkConfig {
            path: path.clone(),
            encoding: None,
            mode: WriteMode::Append,
            fsync: false,
        };
        let checkpoint = dir.path().join("dlq.offset");
        let mut reader = FileReader::open(&config, &checkpoint).await.unwrap();
        assert_eq!(reader.remaining(), 3);
        let first = reader.read(2).await.unwrap().unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[1].record.key.as_deref(), Some(b"k2".as_slice()));
        assert_eq!(first[1].header("weir.error.kind"), Some("bad-record"));
        reader
            .commit(&[], &[first[1].position.clone()])
            .await
            .unwrap();
        assert!(
            FileReader::open(&config, &checkpoint).await.is_err(),
            "a second replay does not take the checkpoint in use"
        );
        drop(reader);
        let mut resumed = FileReader::open(&config, &checkpoint).await.unwrap();
        assert_eq!(resumed.remaining(), 1);
        let rest = resumed.read(10).await.unwrap().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].record.value, &br#"{"n":3}"#[..]);
        assert!(resumed.read(10).await.unwrap().is_none());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("dlq.tmp")).unwrap(),
            "keep me"
        );
        assert_eq!(std::fs::read_to_string(&checkpoint).unwrap(), "2");
    }
}
