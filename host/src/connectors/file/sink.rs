//! The `file` sink: records as lines, flushed before a batch is acknowledged. A batch whose write
//! fails is cut off the file again (back to its length after the last acknowledged batch), so
//! the retry appends whole lines, never after a fragment. With `encoding = "value"`, a value that
//! is not one line (a line break in it, a `\r` ending it, nothing but whitespace) is refused,
//! so it becomes a dead letter instead of several lines or one a reader skips; a dead-letter
//! destination, which has nowhere to refuse to, writes such a record as an envelope.
//!
//! Before each batch the sink checks that its path still names the file it has open: a file
//! renamed away (a rotation) or removed is followed by a new file at the path, so no batch is
//! written where nobody will look for it, and a file truncated in place (copytruncate) moves the
//! point a failed batch is cut back to, so the cut never pads the file with zeros.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;

use super::position::FileId;
use super::write_failure;
use super::writer_lock::{self, WriterLock};
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
    /// defaults to `value` for a sink and `envelope` for a dead-letter destination. With
    /// `value`, a value holding a line break, ending in `\r`, or blank is refused (a dead
    /// letter); a dead-letter destination writes it as an envelope instead.
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

/// Batches of at most this many bytes to a regular file are written in place, on the
/// pipeline's own thread: a write into the page cache takes microseconds, less than a trip
/// through tokio's blocking pool and back, which cost a file-to-file pipeline a third or more of
/// its wall time (docs/performance.md, "Forty-sixth session"). Larger batches, every batch with
/// `fsync`, and every batch to a FIFO or a device (`/dev/stdout`), whose reader may not be
/// reading, go to the blocking pool, so that no worker thread is held long.
const IN_PLACE_BYTES: usize = 1 << 20;
/// The batch buffer keeps at most this much capacity between batches.
const KEPT_BUFFER_BYTES: usize = 4 << 20;

/// Appends records to a file.
pub struct FileSink {
    name: String,
    path: PathBuf,
    /// `None` after a failed write whose bytes could not be cut off: the next write reopens the
    /// file and cuts them first.
    file: Option<File>,
    /// The lines of the batch being written, kept between batches for its capacity.
    lines: Vec<u8>,
    /// The file's length after the last acknowledged batch: where a failed batch is cut back to.
    acknowledged: u64,
    /// The identity of the file open, to tell whether the path still names it.
    id: FileId,
    /// Whether it is a regular file, which small batches are written to in place.
    regular: bool,
    /// The lock that keeps other weir writers off the file open (a regular file's only).
    _lock: Option<WriterLock>,
    encoding: Encoding,
    fsync: bool,
    /// Whether this is a dead-letter destination, which must not refuse a record: nowhere is
    /// left to send it.
    dead_letter: bool,
    /// Makes a write fail once this many more bytes went to the file, to stand for a full disk.
    #[cfg(test)]
    fail_after: Option<usize>,
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
        let (path, mode, fsync) = (config.path.clone(), config.mode, config.fsync);
        let connector = name.clone();
        let opened =
            tokio::task::spawn_blocking(move || open_locked(&path, mode, fsync, &connector))
                .await
                .map_err(|e| ConnectorError::fatal(&name, format!("cannot open the file: {e}")))?
                .map_err(|e| e.into_connector_error(&name))?;
        if opened.dropped > 0 {
            tracing::warn!(
                connector = %name,
                bytes = opened.dropped,
                "The file ended in a half-written line (the process stopped mid-write); dropped it. Its record was never acknowledged, so it is delivered again."
            );
        }
        let (file, metadata) = (opened.file, opened.metadata);
        let default = if dead_letter {
            Encoding::Envelope
        } else {
            Encoding::Value
        };
        Ok(FileSink {
            name,
            path: config.path.clone(),
            file: Some(file),
            lines: Vec::new(),
            acknowledged: metadata.len(),
            id: FileId::of(&metadata),
            regular: metadata.is_file(),
            _lock: opened.lock,
            encoding: config.encoding.unwrap_or(default),
            fsync: config.fsync,
            dead_letter,
            #[cfg(test)]
            fail_after: None,
        })
    }

    /// Puts `records` as lines into `self.lines`; the records that cannot be a line are left
    /// out and added to `refused`. Returns how many dead letters became envelopes instead.
    fn encode_lines(&mut self, records: &[Record], refused: &mut Vec<Rejected>) -> usize {
        self.lines.clear();
        let mut enveloped = 0;
        for (index, record) in records.iter().enumerate() {
            match self.encoding {
                Encoding::Envelope => self.lines.extend_from_slice(&encode(record, self.encoding)),
                Encoding::Value => match not_a_line(&record.value) {
                    None => self.lines.extend_from_slice(&record.value),
                    Some(why) if !self.dead_letter => {
                        refused.push(Rejected {
                            index,
                            reason: format!(
                                "value {why}, and encoding = \"value\" writes each record as one line; set encoding = \"envelope\" on this file sink to keep such values"
                            ),
                        });
                        continue;
                    }
                    Some(_) => {
                        enveloped += 1;
                        self.lines
                            .extend_from_slice(&encode(record, Encoding::Envelope));
                    }
                },
            }
            self.lines.push(b'\n');
        }
        enveloped
    }

    /// Writes `self.lines` to `file` (and fsyncs when asked): in place when the batch is small
    /// and not fsynced, else on a blocking thread. The file comes back unless that thread was
    /// lost (a panic), and the buffer always.
    async fn put_lines(&mut self, file: File) -> (Option<File>, std::io::Result<()>) {
        #[cfg(test)]
        if let Some(left) = self.fail_after {
            if self.lines.len() > left {
                // What a full disk leaves: part of the bytes in the file, then an error.
                let partial = (&file).write_all(&self.lines[..left]);
                self.fail_after = Some(0);
                let full = std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device (test)",
                );
                return (Some(file), partial.and(Err(full)));
            }
            self.fail_after = Some(left - self.lines.len());
        }
        let fsync = self.fsync;
        if self.regular && self.lines.len() <= IN_PLACE_BYTES && !fsync {
            let written = (&file).write_all(&self.lines);
            return (Some(file), written);
        }
        let lines = std::mem::take(&mut self.lines);
        let joined = tokio::task::spawn_blocking(move || {
            let written = (&file)
                .write_all(&lines)
                .and_then(|()| if fsync { file.sync_data() } else { Ok(()) });
            (file, lines, written)
        })
        .await;
        match joined {
            Ok((file, lines, written)) => {
                self.lines = lines;
                (Some(file), written)
            }
            Err(lost) => (None, Err(std::io::Error::other(lost))),
        }
    }

    /// After a failed write: cuts the file back to its length after the last acknowledged
    /// batch, so the batch's retry is not appended to a fragment of it. The file returned
    /// writes from there.
    async fn cut_back(&self, file: File) -> std::io::Result<File> {
        let length = self.acknowledged;
        let fsync = self.fsync;
        tokio::task::spawn_blocking(move || cut(file, length, fsync))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Before a batch: follows the path when it no longer names the file open (renamed away or
    /// removed: the batch goes to a new file there) and notices a file truncated in place.
    fn follow_the_path(&mut self) -> Result<(), OpenError> {
        // A stat in place, not through tokio's blocking pool: the hop there and back cost a
        // file-to-file pipeline 15 to 80% of its wall time (2,000,000 lines, 7,800 batches);
        // in place it costs nothing measurable (docs/performance.md, "Forty-sixth session"). A
        // hung network filesystem would hold this thread, as it would the write that follows.
        let at_path = match std::fs::metadata(&self.path) {
            Ok(metadata) => Some(metadata),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        match at_path {
            Some(metadata) if FileId::of(&metadata) == self.id => {
                if metadata.len() < self.acknowledged {
                    tracing::info!(
                        connector = %self.name,
                        from_bytes = self.acknowledged,
                        to_bytes = metadata.len(),
                        "The file was truncated in place (as copytruncate does); writing on from its new end."
                    );
                    self.acknowledged = metadata.len();
                }
                Ok(())
            }
            _ => {
                if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                let lock =
                    writer_lock::unless_unsupported(writer_lock::lock_file(&self.path), &self.name)
                        .map_err(OpenError::Lock)?;
                let metadata = file.metadata()?;
                tracing::info!(
                    connector = %self.name,
                    "The file was renamed or removed (a rotation?); writing to a new file at the path from here on."
                );
                // One whose failed batch could not be cut off keeps that fragment, in a file no
                // longer at the path.
                self.file = Some(file);
                self.acknowledged = metadata.len();
                self.id = FileId::of(&metadata);
                self.regular = metadata.is_file();
                self._lock = lock;
                Ok(())
            }
        }
    }

    /// Opens the file again after a failed write whose bytes could not be cut off then.
    async fn reopen(&self) -> std::io::Result<File> {
        let file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
        self.cut_back(file).await
    }
}

/// A file opened for a sink, locked and ready to append to.
struct Opened {
    file: File,
    lock: Option<WriterLock>,
    metadata: std::fs::Metadata,
    /// Bytes of a torn last line dropped.
    dropped: u64,
}

/// Why a sink's file could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Lock(writer_lock::LockError),
    /// The torn last line of an appended file could not be looked for or dropped.
    #[error("cannot check the file's last line: {0}")]
    CheckLastLine(#[source] std::io::Error),
    /// A file opened with `mode = "truncate"` could not be emptied.
    #[error("cannot empty the file (mode = \"truncate\"): {0}")]
    Empty(#[source] std::io::Error),
}

impl OpenError {
    /// Every open failure needs the user, the other writer's above all.
    fn into_connector_error(self, name: &str) -> ConnectorError {
        match self {
            OpenError::Lock(held @ writer_lock::LockError::Held { .. }) => ConnectorError::fatal(
                name,
                format!(
                    "{held}; two writers would cut each other's lines when a failed write is cut back. Stop the other writer (another `weir run` of this pipeline file, or a `weir replay` into this sink) or give this sink a file of its own"
                ),
            ),
            OpenError::Lock(other) => ConnectorError::fatal(name, other.to_string()),
            OpenError::Io(e) => {
                ConnectorError::fatal(name, format!("cannot open for writing: {e}"))
            }
            repair @ (OpenError::CheckLastLine(_) | OpenError::Empty(_)) => {
                ConnectorError::fatal(name, repair.to_string())
            }
        }
    }
}

/// Opens (creating) the sink's file and locks it against other weir writers before touching
/// what it holds: emptied in truncate mode, its torn last line dropped in append mode. Both
/// would cut another writer's lines.
fn open_locked(
    path: &Path,
    mode: WriteMode,
    fsync: bool,
    connector: &str,
) -> Result<Opened, OpenError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    match mode {
        WriteMode::Append => options.append(true),
        WriteMode::Truncate => options.write(true),
    };
    let file = options.open(path)?;
    let lock = writer_lock::unless_unsupported(writer_lock::lock_file(path), connector)
        .map_err(OpenError::Lock)?;
    let regular = file.metadata()?.is_file();
    let dropped = match mode {
        WriteMode::Append => drop_torn_tail(path, fsync).map_err(OpenError::CheckLastLine)?,
        WriteMode::Truncate => {
            if regular {
                file.set_len(0).map_err(OpenError::Empty)?;
            }
            0
        }
    };
    let metadata = file.metadata()?;
    Ok(Opened {
        file,
        lock,
        metadata,
        dropped,
    })
}

/// Why `value` cannot be written as a line of its own, if it cannot: the file source (or any
/// line reader) would read it back as something else.
fn not_a_line(value: &[u8]) -> Option<&'static str> {
    if memchr::memchr(b'\n', value).is_some() {
        Some("holds a line break, so it would be read back as several lines")
    } else if value.iter().all(u8::is_ascii_whitespace) {
        Some("is empty or only whitespace: its line would be blank, and readers skip blank lines")
    } else if value.last() == Some(&b'\r') {
        Some("ends in \\r, which readers take for part of the line ending")
    } else {
        None
    }
}

/// Truncates `file` to `length` and puts its position there (an append-mode file writes at the
/// end anyway).
fn cut(mut file: std::fs::File, length: u64, fsync: bool) -> std::io::Result<std::fs::File> {
    file.set_len(length)?;
    file.seek(SeekFrom::Start(length))?;
    if fsync {
        file.sync_data()?;
    }
    Ok(file)
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
        let name = self.name.clone();
        let failed = |e: std::io::Error| match write_failure::what_to_do(&e) {
            None => ConnectorError::transient(&name, "write failed").caused_by(e),
            Some(remedy) => ConnectorError::transient(
                &name,
                format!(
                    "write failed: {e} ({remedy}; the write is retried until it fits, and nothing after it is committed)"
                ),
            ),
        };
        self.follow_the_path().map_err(|e| match e {
            OpenError::Io(e) => failed(e),
            lock => lock.into_connector_error(&name),
        })?;
        let file = match self.file.take() {
            Some(file) => file,
            None => self.reopen().await.map_err(failed)?,
        };
        let mut refused = Vec::new();
        let enveloped = self.encode_lines(records, &mut refused);
        let length = self.lines.len() as u64;
        let (file, written) = self.put_lines(file).await;
        if self.lines.capacity() > KEPT_BUFFER_BYTES {
            self.lines = Vec::new();
        }
        match (file, written) {
            (Some(file), Ok(())) => {
                self.acknowledged += length;
                self.file = Some(file);
                if enveloped > 0 {
                    tracing::warn!(
                        connector = %self.name,
                        records = enveloped,
                        "Dead letters whose value is not one line were written as envelopes (encoding = \"value\" cannot hold them)."
                    );
                }
                Ok(refused)
            }
            (file, written) => {
                let error = written
                    .err()
                    .unwrap_or_else(|| std::io::Error::other("the writing thread was lost"));
                // Without the file (its writing thread was lost), the next write reopens it
                // and cuts it first.
                if let Some(file) = file {
                    match self.cut_back(file).await {
                        Ok(file) => self.file = Some(file),
                        Err(cut) => tracing::warn!(
                            connector = %self.name,
                            error = %cut,
                            "Cannot cut the failed batch off the file yet; the next write tries again first."
                        ),
                    }
                }
                Err(failed(error))
            }
        }
    }

    /// Nothing to flush: each batch went to the file whole before it was acknowledged.
    async fn close(&mut self) -> Result<(), ConnectorError> {
        Ok(())
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

    #[tokio::test]
    async fn a_failed_write_is_cut_off_so_its_retry_appends_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "0\n").unwrap();
        let config = FileSinkConfig {
            path: path.clone(),
            encoding: None,
            mode: WriteMode::Append,
            fsync: true,
        };
        let mut sink = FileSink::open(&config, false).await.unwrap();
        sink.write(&[Record::from_value("1")]).await.unwrap();
        let batch = [Record::from_value("22"), Record::from_value("33333")];
        // The disk fills in the middle of the second record.
        sink.fail_after = Some(5);
        let error = sink.write(&batch).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "0\n1\n",
            "the failed batch is cut off"
        );
        // Space again: the pipeline's retry writes the same batch.
        sink.fail_after = None;
        sink.write(&batch).await.unwrap();
        sink.write(&[Record::from_value("4")]).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "0\n1\n22\n33333\n4\n"
        );
    }

    #[tokio::test]
    async fn a_truncating_sink_cuts_a_failed_write_off_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let config = FileSinkConfig {
            path: path.clone(),
            encoding: None,
            mode: WriteMode::Truncate,
            fsync: false,
        };
        let mut sink = FileSink::open(&config, false).await.unwrap();
        sink.write(&[Record::from_value("1")]).await.unwrap();
        sink.fail_after = Some(1);
        let batch = [Record::from_value("22")];
        sink.write(&batch).await.unwrap_err();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        sink.fail_after = None;
        sink.write(&batch).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n22\n");
    }

    async fn appending(path: &Path) -> FileSink {
        let config = FileSinkConfig {
            path: path.to_owned(),
            encoding: None,
            mode: WriteMode::Append,
            fsync: false,
        };
        FileSink::open(&config, false).await.unwrap()
    }

    /// A second writer of the same file (the pipeline file run twice) is refused before it
    /// touches the file: neither its torn-line repair nor `truncate` cuts the first's lines.
    #[tokio::test]
    async fn a_second_sink_on_a_file_in_use_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut first = appending(&path).await;
        first.write(&[Record::from_value("1")]).await.unwrap();
        // The first writer's next line, half written when the second starts.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"n\":")
            .unwrap();
        for mode in [WriteMode::Append, WriteMode::Truncate] {
            let config = FileSinkConfig {
                path: path.clone(),
                encoding: None,
                mode,
                fsync: false,
            };
            let Err(refused) = FileSink::open(&config, false).await else {
                panic!("a second {mode:?} sink opened a file in use");
            };
            assert!(!refused.is_transient(), "{refused}");
            assert!(
                refused.to_string().contains("another weir process"),
                "{refused}"
            );
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n{\"n\":");
        }
        drop(first);
        appending(&path).await;
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "1\n",
            "once it is free"
        );
    }

    /// After a rotation the sink holds the new file's lock, and no longer the old one's.
    #[tokio::test]
    async fn the_lock_follows_the_file_to_a_new_one_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = appending(&path).await;
        sink.write(&[Record::from_value("1")]).await.unwrap();
        let rotated = dir.path().join("out.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        sink.write(&[Record::from_value("2")]).await.unwrap();
        let config = |path: &Path| FileSinkConfig {
            path: path.to_owned(),
            encoding: None,
            mode: WriteMode::Append,
            fsync: false,
        };
        assert!(FileSink::open(&config(&path), false).await.is_err());
        FileSink::open(&config(&rotated), false).await.unwrap();
    }

    #[tokio::test]
    async fn a_file_renamed_away_or_removed_is_followed_by_a_new_one_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let path = logs.join("out.jsonl");
        let mut sink = appending(&path).await;
        sink.write(&[Record::from_value("1")]).await.unwrap();
        // A rotation: the file is renamed, and nothing (or an empty file) takes its place.
        let rotated = logs.join("out.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        sink.write(&[Record::from_value("2")]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "1\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "2\n");
        std::fs::rename(&path, logs.join("out.jsonl.2")).unwrap();
        std::fs::write(&path, "").unwrap();
        sink.write(&[Record::from_value("3")]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "3\n");
        // Removed, folder and all: the next batch is not written to a file nobody can reach.
        std::fs::remove_dir_all(&logs).unwrap();
        sink.write(&[Record::from_value("4")]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4\n");
    }

    #[tokio::test]
    async fn a_failed_write_after_a_copytruncate_is_cut_back_to_the_new_end_not_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = appending(&path).await;
        sink.write(&[Record::from_value("first"), Record::from_value("second")])
            .await
            .unwrap();
        // copytruncate: the lines are copied elsewhere and the file emptied in place.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        sink.write(&[Record::from_value("3")]).await.unwrap();
        sink.fail_after = Some(1);
        let batch = [Record::from_value("44")];
        sink.write(&batch).await.unwrap_err();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "3\n");
        sink.fail_after = None;
        sink.write(&batch).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "3\n44\n");
    }

    /// A FIFO whose reader is not reading: the write waits on a blocking thread, never on the
    /// runtime's only thread, which goes on running other tasks meanwhile.
    #[tokio::test]
    async fn a_write_to_a_fifo_nobody_reads_does_not_hold_the_runtime() {
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // The read end, open without blocking, so that the sink's open for writing returns.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let mut sink = appending(&fifo).await;
        // More than a pipe holds (64 KiB), in a batch small enough to be written in place.
        let line = "x".repeat(1000);
        let batch: Vec<Record> = (0..200)
            .map(|_| Record::from_value(line.as_str()))
            .collect();
        let writing = tokio::spawn(async move { sink.write(&batch).await.map(|r| r.len()) });
        // The reader starts once this task has run on after the write began, or after a
        // minute, which only a runtime held by the write would take.
        let ran_on = Arc::new(AtomicBool::new(false));
        let gave_up = Arc::new(AtomicBool::new(false));
        let draining = {
            let (ran_on, gave_up) = (Arc::clone(&ran_on), Arc::clone(&gave_up));
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !ran_on.load(Ordering::SeqCst) {
                    if std::time::Instant::now() > deadline {
                        gave_up.store(true, Ordering::SeqCst);
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                let mut read = 0;
                let mut buffer = vec![0u8; 64 * 1024];
                while read < 200 * 1001 {
                    match reader.read(&mut buffer) {
                        Ok(n) => read += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        };
        // Lets the write task start, then runs on.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        ran_on.store(true, Ordering::SeqCst);
        assert_eq!(writing.await.unwrap().unwrap(), 0);
        draining.join().unwrap();
        assert!(
            !gave_up.load(Ordering::SeqCst),
            "the runtime's thread was held by the write"
        );
    }

    #[tokio::test]
    async fn a_value_that_is_not_one_line_is_refused_naming_the_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let config = FileSinkConfig {
            path: path.clone(),
            encoding: Some(Encoding::Value),
            mode: WriteMode::Truncate,
            fsync: false,
        };
        let mut sink = FileSink::open(&config, false).await.unwrap();
        let records = [
            Record::from_value("{\"a\":\n1}"),
            Record::from_value("1"),
            Record::from_value(""),
            Record::from_value("2\r"),
            Record::from_value(" \t"),
            Record::from_value("3\r4"),
        ];
        let refused = sink.write(&records).await.unwrap();
        let indices: Vec<usize> = refused.iter().map(|r| r.index).collect();
        assert_eq!(indices, [0, 2, 3, 4]);
        assert!(
            refused[0].reason.contains("line break"),
            "{}",
            refused[0].reason
        );
        assert!(refused[1].reason.contains("blank"), "{}", refused[1].reason);
        assert!(
            refused[2].reason.contains("ends in \\r"),
            "{}",
            refused[2].reason
        );
        assert!(
            refused
                .iter()
                .all(|r| r.reason.contains("encoding = \"value\"")
                    && r.reason.contains("encoding = \"envelope\"")),
            "{}",
            refused[0].reason
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n3\r4\n");
    }

    #[tokio::test]
    async fn a_dead_letter_destination_writes_such_a_value_as_an_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let config = FileSinkConfig {
            path: path.clone(),
            encoding: Some(Encoding::Value),
            mode: WriteMode::Truncate,
            fsync: false,
        };
        let mut sink = FileSink::open(&config, true).await.unwrap();
        let mut dead = Record::from_value("two\nlines");
        dead.set_header("weir.error", "not json");
        let refused = sink
            .write(&[Record::from_value("1"), dead.clone()])
            .await
            .unwrap();
        assert!(
            refused.is_empty(),
            "a dead-letter destination refuses nothing"
        );
        let written = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 2, "{written}");
        assert_eq!(lines[0], "1");
        let envelope: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(envelope["value"], "two\nlines");
        assert_eq!(envelope["headers"]["weir.error"], "not json");
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
