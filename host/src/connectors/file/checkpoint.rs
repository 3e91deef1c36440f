//! Reads and writes a checkpoint file (the last acknowledged line number, which the file source
//! and dead-letter replay keep). Reading is bounded: between runs the file is anyone's to change,
//! and whatever it then holds must be neither read whole nor echoed whole in an error. Writing
//! replaces it whole and durably: a temporary file of its own beside it, fsynced, renamed over
//! it, and the folder fsynced, so a crash or a power cut leaves the old checkpoint or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use crate::connectors::ConnectorError;

/// The most bytes read of a checkpoint: a line number and a newline take at most 21.
const MAX_CHECKPOINT_BYTES: u64 = 64;

/// The line number in the checkpoint at `path`, 0 if there is none. `name` says whose
/// checkpoint it is in errors, `remedy` what to do about one that holds something else.
pub(crate) async fn read_line_checkpoint(
    path: &Path,
    name: &str,
    remedy: &str,
) -> Result<i64, ConnectorError> {
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ConnectorError::transient(name, e.to_string())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ConnectorError::transient(name, e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    let held = text.trim();
    let number = (bytes.len() as u64 <= MAX_CHECKPOINT_BYTES)
        .then(|| held.parse().ok())
        .flatten();
    number.ok_or_else(|| {
        let shown = if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
            format!("more than {MAX_CHECKPOINT_BYTES} bytes, starting `{held}`")
        } else {
            format!("`{held}`")
        };
        ConnectorError::fatal(
            name,
            format!(
                "holds {shown}, not a line number (an empty or damaged checkpoint may be what a crash or power cut left); {remedy}"
            ),
        )
    })
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
        .map_err(|e| ConnectorError::transient(name, format!("cannot write it: {e}")))
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
}
