//! The `file` source: one record per line of a file. A line is a record only once its newline is
//! there (while following, a writer may be half-way through it), and its bytes go on as they
//! are, valid UTF-8 or not. A line longer than `max_line_bytes` is never held whole: it becomes a
//! dead letter with its first bytes, its size and its sha256.
//!
//! The checkpoint keeps the last committed line's number, the byte after it, and the
//! fingerprint of the file it is in (the sha256 of its first line, at most 4 KiB). A restart
//! whose file still starts that way and is at least that long seeks straight to the byte;
//! otherwise the file is not the one checkpointed (replaced, truncated) and is read from its
//! beginning with a warning: duplicates are possible, loss is not. A checkpoint of an older
//! version, a bare line number, is honoured by skipping that many lines.
//!
//! While following, a file shorter than the position read (truncated in place, as copytruncate
//! does) is read again from its beginning, and a path that names another file (a rename
//! rotation) has the old file read to its end before the new one is read from its beginning.
//! Each such new file is a generation. Line numbers, the records' positions, go on increasing
//! across generations rather than starting at 1 again: the pipeline commits the highest
//! acknowledged position, and a new file's line 3 must not hide behind the old file's line 900.
//! The checkpoint records the number of the line before the generation's first (`start`), so
//! that errors still name a line as it is numbered in its file.
//!
//! What it cannot see: a file replaced or rotated while weir was stopped loses the lines of the
//! old file not yet committed (it is no longer at the path); and a file truncated and grown back
//! past the position read between two looks, with an unchanged first line, is taken for the same.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::time::Instant;

use super::checkpoint::{Resume, Saved, lock_checkpoint, read_source_checkpoint};
use super::position::{FileId, Fingerprint, Handed, head_of};
use super::writer_lock::WriterLock;
use crate::connectors::slab::Slab;
use crate::connectors::{ConfigProblem, ConnectorError, Source};
use crate::record::{Record, SourcePosition, SourceRecord, headers};

/// How often a following source looks for new lines at the end of the file.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Bytes of a line longer than `max_line_bytes` kept in its dead letter (at most the limit).
const OVERSIZED_EXCERPT: usize = 64 * 1024;
/// `max_line_bytes` when neither it nor the pipeline's `limits.max_record_bytes` is known.
const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// How much one read takes from the file. `tokio::fs` hands every read to a blocking thread and
/// back, so an 8 KiB buffer (the default) made that round trip every few lines; at 256 KiB it is
/// a few per thousand lines of randomuser.me JSON.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// The line buffer keeps its capacity between lines up to this size; a longer line's buffer is
/// let go once the line is copied out.
const KEEP_PENDING_BYTES: usize = 64 * 1024;

/// Options of the `file` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The file to read, one record per line (usually JSON). Empty lines are skipped.
    pub path: PathBuf,
    /// Where the last acknowledged line is kept (its number, the byte after it and a fingerprint
    /// of the file); when given, a restart resumes after it, or reads the file from its
    /// beginning if it is no longer the file checkpointed.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Keep waiting for lines appended to the file instead of ending at its end, like `tail -f`.
    /// A file truncated in place is read again from its beginning; when the path comes to name
    /// another file (rotation), the old one is read to its end, then the new one from its start.
    #[serde(default)]
    pub follow: bool,
    /// Longest line read as a record, in bytes (default: the pipeline's
    /// `limits.max_record_bytes`). A longer line is never held in memory: it becomes a dead
    /// letter keeping its first 64 KiB, with its full size and sha256 in headers, and reading
    /// goes on after it.
    #[serde(default)]
    pub max_line_bytes: Option<usize>,
}

impl FileSourceConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.path.as_os_str().is_empty() {
            return Err(("path".into(), "must name a file".into()));
        }
        if self.max_line_bytes == Some(0) {
            return Err(("max_line_bytes".into(), "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Reads a file line by line.
pub struct FileSource {
    config: FileSourceConfig,
    reader: BufReader<tokio::fs::File>,
    /// The line being read; while following, the start of a line whose writer is not done.
    /// Reused from line to line: a whole line is copied out of it into `copies`.
    pending: Vec<u8>,
    /// Where whole lines are copied to, a run of them sharing one allocation.
    copies: Slab,
    /// Set once the line being read passed `max_line_bytes`: `pending` then holds its excerpt
    /// and the rest is only counted and hashed.
    oversized: Option<Oversized>,
    max_line_bytes: usize,
    /// The number of the line read last, counted across generations (see the module doc).
    line_number: i64,
    stream: Arc<str>,
    /// The file being read.
    file_id: FileId,
    /// Bytes of it consumed: the byte after the line read last, or in the line being read.
    offset: u64,
    /// The number of the line before its first one.
    start: i64,
    fingerprint: Fingerprint,
    /// Records handed out and not yet committed; `None` without a checkpoint.
    handed: Option<Handed>,
    /// Keeps other weir processes off the checkpoint; `None` without one (or where the
    /// filesystem cannot lock).
    _checkpoint_lock: Option<WriterLock>,
    /// The path names another file now: the one being read is read to its end (its unterminated
    /// last line included), then the new one is opened.
    draining: bool,
}

/// What a following source finds at the end of the file.
enum Change {
    Same,
    /// The file is shorter than the position read.
    Truncated(u64),
    /// The path names another file.
    Replaced,
}

/// A line too long to hold, as far as it was read.
struct Oversized {
    /// Its bytes so far, line ending excluded.
    size: u64,
    hasher: Sha256,
    /// A `\r` read last and not yet hashed: it belongs to the line only if no `\n` follows.
    held_cr: bool,
}

impl Oversized {
    /// Counts and hashes `bytes`, the next ones of the line. A `\r` ending them is held back
    /// until more bytes show it was not the line ending; no bytes (a read that stopped just
    /// before the `\n`) leave a held `\r` held.
    fn add(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.release_cr();
        let bytes = match bytes.split_last() {
            Some((b'\r', rest)) => {
                self.held_cr = true;
                rest
            }
            _ => bytes,
        };
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Counts a held `\r` as part of the line: no `\n` followed it.
    fn release_cr(&mut self) {
        if std::mem::take(&mut self.held_cr) {
            self.hasher.update(b"\r");
            self.size += 1;
        }
    }
}

/// What [`FileSource::next_line`] read.
enum Line {
    /// A line, without its line ending.
    Whole(Bytes),
    /// A line longer than `max_line_bytes`: its first bytes, its size and its sha256.
    TooLong {
        excerpt: Vec<u8>,
        size: u64,
        sha256: String,
    },
}

/// Adds the bytes of the line being read (no newline among them), keeping at most `limit` bytes:
/// past that, only an excerpt stays and the rest goes into the hash.
fn append(pending: &mut Vec<u8>, oversized: &mut Option<Oversized>, bytes: &[u8], limit: usize) {
    if let Some(oversized) = oversized {
        oversized.add(bytes);
        return;
    }
    // A `\r` ending a line does not count against the limit, as it is not part of the record.
    // With no new bytes (the read stopped between a `\r` and its `\n`), the last byte held is
    // the one that may be that `\r`.
    let last = bytes.last().or(pending.last());
    let allowed = limit + usize::from(last == Some(&b'\r'));
    if pending.len() + bytes.len() <= allowed {
        pending.extend_from_slice(bytes);
        return;
    }
    let mut started = Oversized {
        size: 0,
        hasher: Sha256::new(),
        held_cr: false,
    };
    started.add(pending);
    started.add(bytes);
    let keep = OVERSIZED_EXCERPT.min(limit);
    if pending.len() < keep {
        let more = (keep - pending.len()).min(bytes.len());
        pending.extend_from_slice(&bytes[..more]);
    }
    pending.truncate(keep);
    pending.shrink_to(keep);
    *oversized = Some(started);
}

impl FileSource {
    /// Opens the file and goes past the lines a previous run committed.
    pub async fn open(config: &FileSourceConfig) -> Result<Self, ConnectorError> {
        let name = describe(&config.path);
        let mut file = tokio::fs::File::open(&config.path).await.map_err(|e| {
            ConnectorError::fatal(&name, format!("cannot open the file: {e}; check `path`"))
        })?;
        let failed =
            |e: std::io::Error| ConnectorError::transient(&name, format!("read failed: {e}"));
        let metadata = file.metadata().await.map_err(failed)?;
        let checkpoint_lock = match &config.checkpoint {
            Some(checkpoint) => {
                lock_checkpoint(checkpoint, &format!("checkpoint {}", checkpoint.display())).await?
            }
            None => None,
        };
        let saved = match &config.checkpoint {
            Some(checkpoint) => read_checkpoint(checkpoint).await?,
            None => Saved::Nothing,
        };
        let mut resumed = None;
        let mut line_number = 0;
        if let Saved::At(resume) = saved {
            line_number = resume.line;
            let why = if metadata.len() < resume.offset {
                Some(format!(
                    "it is {} bytes, shorter than the {} read before",
                    metadata.len(),
                    resume.offset
                ))
            } else if head_of(&mut file, resume.head.bytes)
                .await
                .map_err(failed)?
                != Some(resume.head)
            {
                Some("its first line is not the checkpointed file's".to_owned())
            } else {
                None
            };
            match why {
                None => {
                    file.seek(std::io::SeekFrom::Start(resume.offset))
                        .await
                        .map_err(failed)?;
                    resumed = Some(resume);
                }
                Some(why) => {
                    file.seek(std::io::SeekFrom::Start(0))
                        .await
                        .map_err(failed)?;
                    tracing::warn!(file = %config.path.display(), reason = %why, line = resume.line, "The file is not the one checkpointed; reading it from its beginning (lines may be delivered again).");
                }
            }
        }
        let mut source = FileSource {
            config: config.clone(),
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            pending: Vec::new(),
            copies: Slab::default(),
            oversized: None,
            max_line_bytes: config.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES),
            line_number,
            stream: Arc::from(config.path.display().to_string()),
            file_id: FileId::of(&metadata),
            offset: resumed.map_or(0, |r| r.offset),
            start: resumed.map_or(line_number, |r| r.start),
            fingerprint: resumed.map_or_else(Fingerprint::start, |r| Fingerprint::Known(r.head)),
            handed: config.checkpoint.as_ref().map(|_| Handed::default()),
            _checkpoint_lock: checkpoint_lock,
            draining: false,
        };
        if let Some(resume) = resumed {
            tracing::info!(file = %config.path.display(), line = resume.line - resume.start, offset = resume.offset, "Resuming after the committed line.");
        }
        if let Saved::Lines(committed) = saved {
            // A checkpoint of an older version: only a line count to go on.
            while source.line_number < committed {
                if source.next_line().await?.is_none() {
                    break;
                }
            }
            if source.line_number < committed {
                tracing::warn!(file = %config.path.display(), reason = %format!("it has {} lines, fewer than the {committed} read before", source.line_number), line = committed, "The file is not the one checkpointed; reading it from its beginning (lines may be delivered again).");
                source.line_number = committed;
                source.restart().await?;
            } else if committed > 0 {
                tracing::info!(file = %config.path.display(), line = committed, "Resuming after the committed line.");
            }
        }
        Ok(source)
    }

    /// Reads the same file again from its beginning, as a new generation.
    async fn restart(&mut self) -> Result<(), ConnectorError> {
        self.reader
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| {
                ConnectorError::transient(describe(&self.config.path), format!("seek failed: {e}"))
            })?;
        self.new_generation();
        Ok(())
    }

    /// Starts a generation: the file being read is read from its first byte.
    fn new_generation(&mut self) {
        self.offset = 0;
        self.start = self.line_number;
        self.fingerprint = Fingerprint::start();
        self.pending.clear();
        self.oversized = None;
    }

    /// Whether an unterminated last line may still be completed by its writer.
    fn following(&self) -> bool {
        self.config.follow && !self.draining
    }

    /// What became of the file since it was opened, seen from the end of what was read.
    async fn look(&self) -> Result<Change, ConnectorError> {
        let failed = |e: std::io::Error| {
            ConnectorError::transient(describe(&self.config.path), format!("stat failed: {e}"))
        };
        let ours = self.reader.get_ref().metadata().await.map_err(failed)?;
        if ours.len() < self.offset {
            return Ok(Change::Truncated(ours.len()));
        }
        match tokio::fs::metadata(&self.config.path).await {
            Ok(now) if FileId::of(&now) != self.file_id => Ok(Change::Replaced),
            // Missing: rotated away and not yet created again; the old file is all there is.
            _ => Ok(Change::Same),
        }
    }

    /// Opens the file the path names now, once the old one was read to its end.
    async fn switch(&mut self) -> Result<(), ConnectorError> {
        let name = describe(&self.config.path);
        let file = match tokio::fs::File::open(&self.config.path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Gone again before it could be opened: keep the old one and look later.
                self.draining = false;
                return Ok(());
            }
            Err(e) => {
                return Err(ConnectorError::transient(
                    name,
                    format!("cannot open the file that replaced it: {e}"),
                ));
            }
        };
        let metadata = file
            .metadata()
            .await
            .map_err(|e| ConnectorError::transient(&name, format!("stat failed: {e}")))?;
        self.reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        self.file_id = FileId::of(&metadata);
        self.draining = false;
        self.new_generation();
        tracing::info!(file = %self.config.path.display(), "The path names another file now (rotation); read the old one to its end, reading the new one from its beginning.");
        Ok(())
    }

    /// The next complete line without its line ending; `None` at the end of the file. While
    /// following, an unterminated last line stays pending until its newline arrives; otherwise it
    /// is the file's last line. Never holds more than `max_line_bytes` of a line.
    async fn next_line(&mut self) -> Result<Option<Line>, ConnectorError> {
        let complete = loop {
            let buffer = self.reader.fill_buf().await.map_err(|e| {
                ConnectorError::transient(describe(&self.config.path), format!("read failed: {e}"))
            })?;
            if buffer.is_empty() {
                break false;
            }
            let (used, newline) = match memchr::memchr(b'\n', buffer) {
                Some(at) => (at + 1, true),
                None => (buffer.len(), false),
            };
            self.fingerprint.saw(&buffer[..used]);
            self.offset += used as u64;
            let bytes = &buffer[..used - usize::from(newline)];
            append(
                &mut self.pending,
                &mut self.oversized,
                bytes,
                self.max_line_bytes,
            );
            self.reader.consume(used);
            if newline {
                break true;
            }
        };
        if !complete && (self.following() || (self.pending.is_empty() && self.oversized.is_none()))
        {
            return Ok(None);
        }
        self.line_number += 1;
        if let Some(oversized) = self.oversized.take() {
            let line = std::mem::take(&mut self.pending);
            let mut oversized = oversized;
            // A `\r` that ended an unterminated last line is part of it.
            if !complete {
                oversized.release_cr();
            }
            return Ok(Some(Line::TooLong {
                excerpt: line,
                size: oversized.size,
                sha256: hex::encode(oversized.hasher.finalize()),
            }));
        }
        if complete && self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        let line = self.copies.copy(&self.pending);
        self.pending.clear();
        if self.pending.capacity() > KEEP_PENDING_BYTES {
            // One long line does not keep its buffer for the rest of the file.
            self.pending = Vec::new();
        }
        Ok(Some(Line::Whole(line)))
    }
}

impl FileSource {
    /// Notes where the record just read ends, for the commit that will name it.
    fn hand_out(&mut self) {
        if let Some(handed) = &mut self.handed {
            handed.push(Resume {
                line: self.line_number,
                offset: self.offset,
                start: self.start,
                head: self.fingerprint.head(),
            });
        }
    }

    /// The position of the line read last.
    fn position(&self) -> SourcePosition {
        SourcePosition {
            stream: Arc::clone(&self.stream),
            partition: 0,
            offset: self.line_number,
        }
    }
}

fn describe(path: &Path) -> String {
    format!("file source {}", path.display())
}

async fn read_checkpoint(path: &Path) -> Result<Saved, ConnectorError> {
    read_source_checkpoint(
        path,
        &format!("checkpoint {}", path.display()),
        "delete it to start from the beginning",
    )
    .await
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
                Some(Line::Whole(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Some(Line::Whole(line)) => {
                    first_at.get_or_insert_with(Instant::now);
                    let record = Record {
                        value: line,
                        ..Record::default()
                    };
                    batch.push(SourceRecord::new(record, self.position()));
                    self.hand_out();
                }
                Some(Line::TooLong {
                    excerpt,
                    size,
                    sha256,
                }) => {
                    first_at.get_or_insert_with(Instant::now);
                    let reason = format!(
                        "line {} is {size} bytes, more than max_line_bytes ({}); the dead letter keeps its first {} bytes",
                        self.line_number - self.start,
                        self.max_line_bytes,
                        excerpt.len()
                    );
                    let mut record = Record::from_value(excerpt);
                    record.set_header(headers::RECORD_BYTES, size.to_string());
                    record.set_header(headers::RECORD_SHA256, sha256);
                    batch.push(SourceRecord::malformed(record, self.position(), reason));
                    self.hand_out();
                }
                None if !self.config.follow => break,
                None if self.draining => self.switch().await?,
                None => {
                    match self.look().await? {
                        Change::Same => {}
                        Change::Truncated(len) => {
                            tracing::warn!(file = %self.config.path.display(), reason = %format!("it is {len} bytes, shorter than the {} read", self.offset), "The file was truncated; reading it again from its beginning.");
                            self.restart().await?;
                            continue;
                        }
                        Change::Replaced => {
                            self.draining = true;
                            continue;
                        }
                    }
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
        let (Some(checkpoint), Some(handed), Some(last)) = (
            &self.config.checkpoint,
            &mut self.handed,
            positions.iter().map(|p| p.offset).max(),
        ) else {
            return Ok(());
        };
        let Some(resume) = handed.up_to(last) else {
            return Ok(());
        };
        super::write_checkpoint(
            checkpoint,
            resume.encode(),
            &format!("checkpoint {}", checkpoint.display()),
        )
        .await?;
        handed.committed(last);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source over `path` from its first line, neither following nor checkpointing.
    fn reading(path: impl Into<PathBuf>) -> FileSourceConfig {
        FileSourceConfig {
            path: path.into(),
            checkpoint: None,
            follow: false,
            max_line_bytes: None,
        }
    }

    /// One poll of up to 10 records, without waiting.
    async fn poll(source: &mut FileSource) -> Vec<SourceRecord> {
        source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap()
    }

    /// What one poll of up to 10 records reads from a file holding `contents`.
    async fn poll_file(contents: &[u8]) -> Vec<SourceRecord> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, contents).unwrap();
        let mut source = FileSource::open(&reading(path)).await.unwrap();
        poll(&mut source).await
    }

    #[tokio::test]
    async fn resumes_after_the_committed_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"n\":1}\n\n{\"n\":2}\n{\"n\":3}\n").unwrap();
        let config = FileSourceConfig {
            checkpoint: Some(dir.path().join("in.offset")),
            ..reading(&path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let batch = source.poll_batch(2, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].position.offset, 3, "the empty line still counts");
        source.commit(&[batch[1].position.clone()]).await.unwrap();
        // While it runs, no second source takes its checkpoint.
        let Err(refused) = FileSource::open(&config).await else {
            panic!("a second source opened the checkpoint in use");
        };
        assert!(!refused.is_transient(), "{refused}");
        assert!(
            refused.to_string().contains("in.offset"),
            "the error names the checkpoint: {refused}"
        );
        drop(source);

        let mut restarted = FileSource::open(&config).await.unwrap();
        let rest = poll(&mut restarted).await;
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].record.value, &br#"{"n":3}"#[..]);
        assert!(
            restarted
                .poll_batch(10, Duration::ZERO)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_commit_replaces_the_checkpoint_and_leaves_the_files_beside_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":2}\n").unwrap();
        // Files a temporary name made with `with_extension("tmp")` would clobber or share.
        let theirs = dir.path().join("in.tmp");
        std::fs::write(&theirs, "keep me").unwrap();
        let config = FileSourceConfig {
            checkpoint: Some(dir.path().join("in.offset")),
            ..reading(&path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let batch = source.poll_batch(2, Duration::ZERO).await.unwrap().unwrap();
        source.commit(&[batch[1].position.clone()]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "keep me");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["in.jsonl", "in.offset", "in.offset.lock", "in.tmp"],
            "no temporary left"
        );
        drop(source);
        let restarted = FileSource::open(&config).await.unwrap();
        assert_eq!(restarted.line_number, 2);
    }

    /// The values of `batch`, as text.
    fn texts(batch: &[SourceRecord]) -> Vec<String> {
        batch
            .iter()
            .map(|r| String::from_utf8_lossy(&r.record.value).into_owned())
            .collect()
    }

    /// Everything `source` reads until it has read `count` records, or an error after 10 s.
    async fn read_records(source: &mut FileSource, count: usize) -> Vec<SourceRecord> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while got.len() < count {
                got.extend(
                    source
                        .poll_batch(10, Duration::ZERO)
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
        })
        .await
        .unwrap_or_else(|_| panic!("read {:?}, expected {count} records", texts(&got)));
        got
    }

    #[tokio::test]
    async fn a_file_replaced_while_stopped_is_read_from_its_beginning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "a1\na2\na3\n").unwrap();
        let config = FileSourceConfig {
            checkpoint: Some(dir.path().join("in.offset")),
            ..reading(&path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let batch = source.poll_batch(2, Duration::ZERO).await.unwrap().unwrap();
        source.commit(&[batch[1].position.clone()]).await.unwrap();
        drop(source);

        // A new export under the same name, longer than what was read.
        std::fs::write(&path, "b1\nb2\nb3\nb4\n").unwrap();
        let mut restarted = FileSource::open(&config).await.unwrap();
        let batch = poll(&mut restarted).await;
        assert_eq!(texts(&batch), ["b1", "b2", "b3", "b4"]);
        let lines: Vec<i64> = batch.iter().map(|r| r.position.offset).collect();
        assert_eq!(
            lines,
            [3, 4, 5, 6],
            "line numbers go on past the committed one"
        );
        restarted
            .commit(&[batch[1].position.clone()])
            .await
            .unwrap();
        drop(restarted);

        // The same file again: resumed at the byte after the committed line.
        let mut again = FileSource::open(&config).await.unwrap();
        let batch = poll(&mut again).await;
        assert_eq!(texts(&batch), ["b3", "b4"]);
        assert_eq!(batch[0].position.offset, 5);
    }

    #[tokio::test]
    async fn a_file_shorter_than_the_checkpoint_is_read_from_its_beginning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "a1\na2\na3\n").unwrap();
        let config = FileSourceConfig {
            checkpoint: Some(dir.path().join("in.offset")),
            ..reading(&path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let batch = poll(&mut source).await;
        source.commit(&[batch[2].position.clone()]).await.unwrap();
        drop(source);

        // Same first line, fewer bytes: truncated and written again.
        std::fs::write(&path, "a1\nc2\n").unwrap();
        let mut restarted = FileSource::open(&config).await.unwrap();
        let batch = poll(&mut restarted).await;
        assert_eq!(texts(&batch), ["a1", "c2"]);
    }

    #[tokio::test]
    async fn a_line_number_checkpoint_of_an_older_version_is_honoured_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let checkpoint = dir.path().join("in.offset");
        std::fs::write(&path, "a1\na2\na3\n").unwrap();
        std::fs::write(&checkpoint, "2").unwrap();
        let config = FileSourceConfig {
            checkpoint: Some(checkpoint.clone()),
            ..reading(&path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let batch = poll(&mut source).await;
        assert_eq!(texts(&batch), ["a3"]);
        assert_eq!(batch[0].position.offset, 3);
        source.commit(&[batch[0].position.clone()]).await.unwrap();
        let saved = std::fs::read_to_string(&checkpoint).unwrap();
        assert!(
            saved.starts_with("3 offset=9 start=0 head_bytes=3 "),
            "{saved}"
        );
    }

    #[tokio::test]
    async fn a_followed_file_truncated_in_place_is_read_again_from_its_beginning() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "a1\na2\na3\n").unwrap();
        let config = FileSourceConfig {
            follow: true,
            checkpoint: Some(dir.path().join("in.offset")),
            ..reading(&path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        assert_eq!(
            texts(&read_records(&mut source, 3).await),
            ["a1", "a2", "a3"]
        );
        // What copytruncate does: the file emptied in place, then written to again.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(0).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"b1\nb2\n").unwrap();
        let batch = read_records(&mut source, 2).await;
        assert_eq!(texts(&batch), ["b1", "b2"]);
        assert_eq!(batch[1].position.offset, 5, "line numbers go on increasing");
        source.commit(&[batch[1].position.clone()]).await.unwrap();
        drop(source);
        file.write_all(b"b3\n").unwrap();
        let mut restarted = FileSource::open(&config).await.unwrap();
        let batch = read_records(&mut restarted, 1).await;
        assert_eq!(texts(&batch), ["b3"]);
    }

    #[tokio::test]
    async fn a_followed_file_rotated_by_rename_is_finished_then_the_new_one_read() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "a1\na2\n").unwrap();
        let config = FileSourceConfig {
            follow: true,
            checkpoint: Some(dir.path().join("in.offset")),
            ..reading(&path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        assert_eq!(texts(&read_records(&mut source, 2).await), ["a1", "a2"]);
        // logrotate's `create`: renamed aside, a new file in its place, and the writer still
        // adding to the old one (ending with a line it never finishes) until it reopens.
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::fs::rename(&path, dir.path().join("in.jsonl.1")).unwrap();
        std::fs::write(&path, "b1\nb2\n").unwrap();
        old.write_all(b"a3\na4").unwrap();
        let batch = read_records(&mut source, 4).await;
        assert_eq!(texts(&batch), ["a3", "a4", "b1", "b2"]);
        let lines: Vec<i64> = batch.iter().map(|r| r.position.offset).collect();
        assert_eq!(lines, [3, 4, 5, 6], "line numbers go on increasing");

        // Committing the new file's first line: the checkpoint is of the new file.
        source.commit(&[batch[2].position.clone()]).await.unwrap();
        drop(source);
        let mut restarted = FileSource::open(&config).await.unwrap();
        let batch = read_records(&mut restarted, 1).await;
        assert_eq!(texts(&batch), ["b2"]);
        assert_eq!(batch[0].position.offset, 6);
    }

    #[tokio::test]
    async fn lines_are_copied_into_one_shared_chunk_and_keep_their_bytes() {
        let batch = poll_file(b"{\"n\":1}\r\n{\"n\":22}\n{\"n\":333}\n").await;
        let values: Vec<&[u8]> = batch.iter().map(|r| &r.record.value[..]).collect();
        assert_eq!(
            values,
            [&br#"{"n":1}"#[..], br#"{"n":22}"#, br#"{"n":333}"#]
        );
        for pair in values.windows(2) {
            assert_eq!(
                pair[1].as_ptr(),
                pair[0].as_ptr().wrapping_add(pair[0].len()),
                "consecutive lines share a chunk"
            );
        }
    }

    #[tokio::test]
    async fn a_line_still_being_written_waits_for_its_newline() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":").unwrap();
        let config = FileSourceConfig {
            follow: true,
            ..reading(&path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let first = poll(&mut source).await;
        let values: Vec<&[u8]> = first.iter().map(|r| &r.record.value[..]).collect();
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
        let second = poll(&mut source).await;
        assert_eq!(second.len(), 1);
        assert_eq!(
            second[0].record.value,
            &br#"{"n":2}"#[..],
            "one record, line ending removed"
        );
        assert_eq!(second[0].position.offset, 2);
    }

    #[tokio::test]
    async fn without_follow_an_unterminated_last_line_and_invalid_utf8_are_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, b"\xff\xfe not text\n{\"last\":true}").unwrap();
        let mut source = FileSource::open(&reading(path)).await.unwrap();
        let batch = poll(&mut source).await;
        let values: Vec<&[u8]> = batch.iter().map(|r| &r.record.value[..]).collect();
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

    fn sha256(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_dead_lettered_with_its_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        // Longer than the reader's buffer, so the line arrives in many reads.
        let long = vec![b'x'; 2 * READ_BUFFER_BYTES + 1000];
        let mut text = b"{\"n\":1}\r\n".to_vec();
        text.extend_from_slice(&long);
        text.extend_from_slice(b"\r\n{\"n\":3}\n");
        text.extend_from_slice(&long);
        std::fs::write(&path, &text).unwrap();
        let config = FileSourceConfig {
            max_line_bytes: Some(1000),
            ..reading(path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let batch = poll(&mut source).await;
        assert_eq!(batch.len(), 4);
        assert_eq!(batch[0].record.value, &br#"{"n":1}"#[..]);
        assert_eq!(batch[2].record.value, &br#"{"n":3}"#[..]);
        for (index, line) in [(1, 2), (3, 4)] {
            let dead = &batch[index];
            let reason = dead.malformed.as_deref().unwrap();
            assert!(
                reason.contains(&format!("line {line} is {} bytes", long.len()))
                    && reason.contains("max_line_bytes (1000)"),
                "{reason}"
            );
            assert_eq!(dead.position.offset, line);
            assert_eq!(dead.record.value, vec![b'x'; 1000]);
            assert_eq!(
                dead.record.header_str(headers::RECORD_BYTES),
                Some(long.len().to_string().as_str())
            );
            assert_eq!(
                dead.record.header_str(headers::RECORD_SHA256),
                Some(sha256(&long).as_str())
            );
        }
    }

    #[tokio::test]
    async fn a_followed_line_over_the_limit_counts_once_its_newline_arrives() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, vec![b'y'; 5000]).unwrap();
        let config = FileSourceConfig {
            follow: true,
            max_line_bytes: Some(100),
            ..reading(&path)
        };
        let mut source = FileSource::open(&config).await.unwrap();
        let first = source.poll_batch(10, Duration::ZERO).await.unwrap();
        assert_eq!(
            first.map(|b| b.len()),
            Some(0),
            "not a line until its newline"
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&[b'y'; 5000]).unwrap();
        file.write_all(b"\n{\"n\":2}\n").unwrap();
        let second = poll(&mut source).await;
        assert_eq!(second.len(), 2);
        assert_eq!(
            second[0].record.header_str(headers::RECORD_BYTES),
            Some("10000")
        );
        assert_eq!(
            second[0].record.header_str(headers::RECORD_SHA256),
            Some(sha256(&[b'y'; 10000]).as_str())
        );
        assert_eq!(second[1].record.value, &br#"{"n":2}"#[..]);
        assert_eq!(second[1].position.offset, 2);
    }

    #[test]
    fn a_read_ending_between_the_cr_and_the_lf_changes_neither_limit_nor_digest() {
        // A line of exactly the limit, its `\r\n` split across two reads: not oversized.
        let (mut pending, mut oversized) = (Vec::new(), None);
        append(&mut pending, &mut oversized, b"abcd\r", 4);
        append(&mut pending, &mut oversized, b"", 4);
        assert!(oversized.is_none(), "a line of exactly the limit fits");
        assert_eq!(
            pending, b"abcd\r",
            "the `\r` is removed once the line is whole"
        );

        // An oversized line split the same way: the `\r` is the line ending, not its content.
        let (mut pending, mut oversized) = (Vec::new(), None);
        append(&mut pending, &mut oversized, b"abcdef\r", 4);
        append(&mut pending, &mut oversized, b"", 4);
        let oversized = oversized.expect("longer than the limit");
        assert_eq!(oversized.size, 6);
        assert_eq!(hex::encode(oversized.hasher.finalize()), sha256(b"abcdef"));

        // A `\r` that more bytes follow is part of the line.
        let (mut pending, mut oversized) = (Vec::new(), None);
        append(&mut pending, &mut oversized, b"abcdef\r", 4);
        append(&mut pending, &mut oversized, b"", 4);
        append(&mut pending, &mut oversized, b"gh", 4);
        let oversized = oversized.expect("longer than the limit");
        assert_eq!(oversized.size, 9);
        assert_eq!(
            hex::encode(oversized.hasher.finalize()),
            sha256(b"abcdef\rgh")
        );
    }

    #[tokio::test]
    async fn missing_file_is_a_fatal_error_naming_it() {
        let config = reading("/nonexistent/weir.jsonl");
        let error = FileSource::open(&config).await.err().unwrap();
        assert_eq!(error.kind, crate::connectors::ErrorKind::Fatal);
        assert!(error.to_string().contains("/nonexistent/weir.jsonl"));
    }
}
