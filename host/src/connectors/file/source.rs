//! The `file` source: one record per line of a file; the committed line number is persisted in a
//! checkpoint file so that a restart resumes after the last acknowledged line. A line is a record
//! only once its newline is there (while following, a writer may be half-way through it), and
//! its bytes go on as they are, valid UTF-8 or not. A line longer than `max_line_bytes` is never
//! held whole: it becomes a dead letter with its first bytes, its size and its sha256.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

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
    /// Where the last acknowledged line number is kept; when given, a restart resumes after it.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Keep waiting for lines appended to the file instead of ending at its end, like `tail -f`.
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
    line_number: i64,
    stream: Arc<str>,
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
    /// Opens the file and skips the lines a previous run committed.
    pub async fn open(config: &FileSourceConfig) -> Result<Self, ConnectorError> {
        let name = describe(&config.path);
        let file = tokio::fs::File::open(&config.path).await.map_err(|e| {
            ConnectorError::fatal(&name, format!("cannot open the file: {e}; check `path`"))
        })?;
        let mut source = FileSource {
            config: config.clone(),
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            pending: Vec::new(),
            copies: Slab::default(),
            oversized: None,
            max_line_bytes: config.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES),
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
        if !complete
            && (self.config.follow || (self.pending.is_empty() && self.oversized.is_none()))
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

async fn read_checkpoint(path: &Path) -> Result<i64, ConnectorError> {
    super::read_line_checkpoint(
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
                }
                Some(Line::TooLong {
                    excerpt,
                    size,
                    sha256,
                }) => {
                    first_at.get_or_insert_with(Instant::now);
                    let reason = format!(
                        "line {} is {size} bytes, more than max_line_bytes ({}); the dead letter keeps its first {} bytes",
                        self.line_number,
                        self.max_line_bytes,
                        excerpt.len()
                    );
                    let mut record = Record::from_value(excerpt);
                    record.set_header(headers::RECORD_BYTES, size.to_string());
                    record.set_header(headers::RECORD_SHA256, sha256);
                    batch.push(SourceRecord::malformed(record, self.position(), reason));
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
        super::write_checkpoint(
            checkpoint,
            last.to_string(),
            &format!("checkpoint {}", checkpoint.display()),
        )
        .await
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

    /// What one poll of up to 10 records reads from a file holding `contents`.
    async fn poll_file(contents: &[u8]) -> Vec<SourceRecord> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, contents).unwrap();
        let mut source = FileSource::open(&reading(path)).await.unwrap();
        source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap()
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

        let mut restarted = FileSource::open(&config).await.unwrap();
        let rest = restarted
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
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
            ["in.jsonl", "in.offset", "in.tmp"],
            "no temporary left"
        );
        let restarted = FileSource::open(&config).await.unwrap();
        assert_eq!(restarted.line_number, 2);
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
        let first = source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
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
        let second = source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
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
        let batch = source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
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
        let batch = source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
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
        let second = source
            .poll_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
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
