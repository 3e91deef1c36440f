//! Reads and writes checkpoint files. Dead-letter replay keeps the last replayed line number;
//! the file source keeps where it stands in which file ([`Resume`]), and still reads the bare
//! line number older versions wrote. Reading is bounded: between runs the file is anyone's to
//! change, and whatever it then holds must be neither read whole nor echoed whole in an error.
//! Writing replaces it whole and durably: a temporary file of its own beside it, fsynced,
//! renamed over it, and the folder fsynced, so a crash or a power cut leaves the old checkpoint
//! or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::write_failure;
use super::writer_lock::{self, WriterLock};
use crate::connectors::ConnectorError;

/// The most bytes read of a line-number checkpoint: a line number and a newline take at most 21.
const MAX_CHECKPOINT_BYTES: u64 = 64;
/// The most bytes read of a file source's checkpoint: five numbers and a sha256 in hex.
const MAX_SOURCE_CHECKPOINT_BYTES: u64 = 256;
/// The most bytes of a file's start its fingerprint covers: its first line, up to this.
pub(crate) const HEAD_BYTES: usize = 4096;
/// What an error adds about a checkpoint that holds something unexpected.
const CRASH_HINT: &str = "an empty or damaged checkpoint may be what a crash or power cut left";

/// A file's fingerprint: the sha256 of its start (its first line with its newline, at most
/// [`HEAD_BYTES`]), which appending never changes and replacing the file almost always does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// How many bytes of the file's start it covers.
    pub bytes: u64,
    /// Their sha256.
    pub sha256: [u8; 32],
}

/// Where a file source stands: the last committed line, in which file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// The committed line's number; numbers go on increasing from one file to the next.
    pub line: i64,
    /// The byte just after that line in its file.
    pub offset: u64,
    /// The number of the line before the file's first: `line - start` is its line in the file.
    pub start: i64,
    /// The fingerprint of the file the line is in.
    pub head: Head,
}

impl Resume {
    /// The checkpoint's text: the line number first, so that a reader sees it at a glance.
    pub fn encode(&self) -> String {
        format!(
            "{} offset={} start={} head_bytes={} head_sha256={}\n",
            self.line,
            self.offset,
            self.start,
            self.head.bytes,
            hex::encode(self.head.sha256)
        )
    }

    /// Reads [`Resume::encode`]'s text; `None` for anything else.
    fn decode(text: &str) -> Option<Resume> {
        let mut words = text.split_whitespace();
        let line = words.next()?.parse().ok()?;
        let mut field = |name: &str| words.next()?.strip_prefix(name)?.strip_prefix('=');
        let offset = field("offset")?.parse().ok()?;
        let start = field("start")?.parse().ok()?;
        let bytes = field("head_bytes")?.parse().ok()?;
        let sha256 = hex::decode(field("head_sha256")?).ok()?.try_into().ok()?;
        let resume = Resume {
            line,
            offset,
            start,
            head: Head { bytes, sha256 },
        };
        let sound = words.next().is_none()
            && 0 <= start
            && start < line
            && 0 < bytes
            && bytes <= HEAD_BYTES as u64
            && bytes <= offset;
        sound.then_some(resume)
    }
}

/// What a file source's checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Saved {
    /// No checkpoint yet.
    Nothing,
    /// A bare line number, as versions before [`Resume`] wrote.
    Lines(i64),
    /// Where the source stands, in which file.
    At(Resume),
}

/// What the file source's checkpoint at `path` holds. `name` says whose checkpoint it is in
/// errors, `remedy` what to do about one that holds something else.
pub(crate) async fn read_source_checkpoint(
    path: &Path,
    name: &str,
    remedy: &str,
) -> Result<Saved, ConnectorError> {
    let Some(bytes) = read_bounded(path, name, MAX_SOURCE_CHECKPOINT_BYTES).await? else {
        return Ok(Saved::Nothing);
    };
    let text = String::from_utf8_lossy(&bytes);
    let held = text.trim();
    let saved = (bytes.len() as u64 <= MAX_SOURCE_CHECKPOINT_BYTES)
        .then(|| match held.parse() {
            Ok(line) => Some(Saved::Lines(line)),
            Err(_) => Resume::decode(held).map(Saved::At),
        })
        .flatten();
    saved.ok_or_else(|| {
        refused(
            name,
            &bytes,
            MAX_SOURCE_CHECKPOINT_BYTES,
            "not a file source's position",
            remedy,
        )
    })
}

/// The line number in the checkpoint at `path`, 0 if there is none. `name` says whose
/// checkpoint it is in errors, `remedy` what to do about one that holds something else.
pub(crate) async fn read_line_checkpoint(
    path: &Path,
    name: &str,
    remedy: &str,
) -> Result<i64, ConnectorError> {
    let Some(bytes) = read_bounded(path, name, MAX_CHECKPOINT_BYTES).await? else {
        return Ok(0);
    };
    let text = String::from_utf8_lossy(&bytes);
    let number = (bytes.len() as u64 <= MAX_CHECKPOINT_BYTES)
        .then(|| text.trim().parse().ok())
        .flatten();
    number.ok_or_else(|| {
        refused(
            name,
            &bytes,
            MAX_CHECKPOINT_BYTES,
            "not a line number",
            remedy,
        )
    })
}

/// The first `max` bytes and one more of the file at `path`; `None` if there is none.
async fn read_bounded(
    path: &Path,
    name: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, ConnectorError> {
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConnectorError::transient(name, e.to_string())),
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ConnectorError::transient(name, e.to_string()))?;
    Ok(Some(bytes))
}

/// The error for a checkpoint holding `bytes`, which are `expected` they are not.
fn refused(name: &str, bytes: &[u8], max: u64, expected: &str, remedy: &str) -> ConnectorError {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max as usize)]);
    let held = text.trim();
    let shown = if bytes.len() as u64 > max {
        format!("more than {max} bytes, starting `{held}`")
    } else {
        format!("`{held}`")
    };
    ConnectorError::fatal(
        name,
        format!("holds {shown}, {expected} ({CRASH_HINT}); {remedy}"),
    )
}

/// Replaces the checkpoint at `path` with `contents`: written to a temporary file, fsynced,
/// renamed over it, and the rename fsynced, so that neither a crash nor a power cut leaves a
/// torn or empty checkpoint. `name` says whose checkpoint it is in errors.
pub(crate) async fn write_checkpoint(
    path: &Path,
    contents: String,
    name: &str,
) -> Result<(), ConnectorError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || replace(&owned, contents.as_bytes()))
        .await
        .map_err(std::io::Error::other)
        .and_then(|written| written)
        .map_err(|e| {
            let advice = write_failure::what_to_do(&e).map_or(String::new(), |remedy| {
                format!(" ({remedy}; until it is written, a restart reads again what came after the last checkpoint written)")
            });
            ConnectorError::transient(name, format!("cannot write it: {e}{advice}"))
        })
}

/// Locks the checkpoint at `path` (through `PATH.lock` beside it) for as long as the returned
/// lock lives, before it is read: two readers on one checkpoint would each deliver every line
/// and overwrite each other's position. `name` says whose checkpoint it is in errors.
pub(crate) async fn lock_checkpoint(
    path: &Path,
    name: &str,
) -> Result<Option<WriterLock>, ConnectorError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await.map_err(|e| {
            ConnectorError::fatal(
                name,
                format!("cannot create folder {}: {e}", parent.display()),
            )
        })?;
    }
    let owned = path.to_owned();
    let locked = tokio::task::spawn_blocking(move || writer_lock::lock_beside(&owned))
        .await
        .map_err(|e| ConnectorError::fatal(name, format!("cannot lock it: {e}")))?;
    writer_lock::unless_unsupported(locked.map(Some), name).map_err(|e| match e {
        held @ writer_lock::LockError::Held { .. } => ConnectorError::fatal(
            name,
            format!(
                "{held}; two readers of one checkpoint would each deliver every line and overwrite each other's position. Stop the other process (another `weir run` of this pipeline file, or another `weir replay` of this file) or give this one a checkpoint of its own"
            ),
        ),
        other => ConnectorError::fatal(name, other.to_string()),
    })
}

/// The temporary file a checkpoint is written to: its whole name plus `.tmp`, so that two
/// checkpoints in one folder (`a.offset`, `a.ckpt`) never share one.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = temporary_path(path);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    sync_folder(path)
}

/// Makes a rename in `path`'s folder durable.
fn sync_folder(path: &Path) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(content: Option<&[u8]>) -> Result<i64, ConnectorError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.offset");
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        read_line_checkpoint(&path, "checkpoint", "delete it").await
    }

    #[tokio::test]
    async fn a_missing_checkpoint_starts_at_the_beginning() {
        assert_eq!(read(None).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_line_number_is_read_with_or_without_its_newline() {
        assert_eq!(read(Some(b"42\n")).await.unwrap(), 42);
        assert_eq!(read(Some(b"9223372036854775807")).await.unwrap(), i64::MAX);
    }

    #[tokio::test]
    async fn anything_else_is_refused_and_a_large_file_is_neither_read_nor_shown_whole() {
        let error = read(Some(b"forty-two\n")).await.unwrap_err().to_string();
        assert!(
            error.contains("holds `forty-two`, not a line number")
                && error.ends_with("; delete it"),
            "{error}"
        );
        let large = vec![b'7'; 1 << 20];
        let error = read(Some(&large)).await.unwrap_err().to_string();
        assert!(error.contains("more than 64 bytes"), "{error}");
        assert!(error.len() < 300, "{} bytes: {error}", error.len());
    }

    #[tokio::test]
    async fn an_empty_checkpoint_is_refused_as_possible_crash_damage() {
        let error = read(Some(b"")).await.unwrap_err().to_string();
        assert!(
            error.contains("holds ``") && error.contains("a crash or power cut"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_file_source_position_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.offset");
        let read = || read_source_checkpoint(&path, "checkpoint", "delete it");
        assert_eq!(read().await.unwrap(), Saved::Nothing);
        std::fs::write(&path, "12\n").unwrap();
        assert_eq!(read().await.unwrap(), Saved::Lines(12));
        let resume = Resume {
            line: 12,
            offset: 340,
            start: 3,
            head: Head {
                bytes: 20,
                sha256: [7; 32],
            },
        };
        std::fs::write(&path, resume.encode()).unwrap();
        assert_eq!(read().await.unwrap(), Saved::At(resume));
        let torn = &resume.encode()[..40];
        std::fs::write(&path, torn).unwrap();
        let error = read().await.unwrap_err().to_string();
        assert!(
            error.contains("not a file source's position")
                && error.contains("a crash or power cut"),
            "{error}"
        );
    }
}
