//! One writer per file across processes. The load-time check (`config::shared_files`) refuses a
//! file named twice in one pipeline file, but not the same pipeline file run twice, or a
//! `weir replay` beside the `weir run` whose sink it writes: two file sinks on one file cut each
//! other's lines when a failed batch is cut back, and two sources on one checkpoint both deliver
//! every line and overwrite each other's position. Each writer takes an advisory lock (`flock`)
//! for as long as it writes, and a second writer is refused with what to do.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A held lock; dropping it (or the process ending, however it ends) lets it go.
#[derive(Debug)]
pub(crate) struct WriterLock {
    /// Its own open file description: `flock` belongs to one, so the lock neither comes from nor
    /// goes with the descriptors the writer writes through.
    _held: File,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another writer holds it, in this process or another.
    #[error(
        "{} is being written by another weir process or pipeline (it holds the lock on {})",
        .path.display(), .locked.display()
    )]
    Held { path: PathBuf, locked: PathBuf },
    /// The lock could not be asked for.
    #[error("cannot lock {}: {source}", .locked.display())]
    Io {
        locked: PathBuf,
        source: std::io::Error,
    },
}

/// Locks the file at `path` itself, which the caller has just opened or created: for files
/// written in place, whose every writer opens the same file. Only a regular file is locked: a
/// FIFO or a device (`/dev/stdout`) may have several writers by design.
pub(crate) fn lock_file(path: &Path) -> Result<Option<WriterLock>, LockError> {
    let io = |source| LockError::Io {
        locked: path.to_owned(),
        source,
    };
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Ok(None);
    }
    // Opened to append, which the writer may do anyway (a write-only file cannot be opened to
    // read), and non-blocking, should the path have turned into a FIFO since.
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Ok(None);
    }
    take(file, path, path).map(Some)
}

/// Locks `PATH.lock` beside `path` (creating it): for files replaced by a rename at each write
/// (a checkpoint), whose inode changes, so a lock on the file itself would not outlive a write.
pub(crate) fn lock_beside(path: &Path) -> Result<WriterLock, LockError> {
    let locked = beside(path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&locked)
        .map_err(|source| LockError::Io {
            locked: locked.clone(),
            source,
        })?;
    take(file, path, &locked)
}

/// A lock, or none where the filesystem cannot lock (`ENOLCK` on NFS without a lock daemon,
/// `EOPNOTSUPP` on some FUSE filesystems): the file is then written as it was before weir locked
/// files, with a warning that a second writer would go unnoticed. Another writer's lock stays
/// an error.
pub(crate) fn unless_unsupported(
    locked: Result<Option<WriterLock>, LockError>,
    connector: &str,
) -> Result<Option<WriterLock>, LockError> {
    match locked {
        Ok(lock) => Ok(lock),
        Err(LockError::Io { locked, source }) => {
            tracing::warn!(
                connector,
                file = %locked.display(),
                error = %source,
                "Cannot lock the file here; a second weir process writing it would not be refused."
            );
            Ok(None)
        }
        Err(held) => Err(held),
    }
}

/// The lock file [`lock_beside`] takes for `path`.
pub(crate) fn beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn take(file: File, path: &Path, locked: &Path) -> Result<WriterLock, LockError> {
    match file.try_lock() {
        Ok(()) => Ok(WriterLock { _held: file }),
        Err(TryLockError::WouldBlock) => Err(LockError::Held {
            path: path.to_owned(),
            locked: locked.to_owned(),
        }),
        Err(TryLockError::Error(source)) => Err(LockError::Io {
            locked: locked.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"").unwrap();
        let first = lock_file(&path).unwrap().expect("a regular file is locked");
        let Err(refused) = lock_file(&path) else {
            panic!("a second lock on the same file was granted");
        };
        assert!(matches!(refused, LockError::Held { .. }), "{refused}");
        assert!(refused.to_string().contains("out.jsonl"), "{refused}");
        drop(first);
        assert!(lock_file(&path).unwrap().is_some());
    }

    #[test]
    fn a_lock_beside_a_file_outlives_the_file_being_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.offset");
        let held = lock_beside(&path).unwrap();
        std::fs::write(dir.path().join("new"), b"7\n").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        let Err(refused) = lock_beside(&path) else {
            panic!("a second lock beside the same file was granted");
        };
        assert!(refused.to_string().contains("in.offset.lock"), "{refused}");
        drop(held);
        lock_beside(&path).unwrap();
    }

    #[test]
    fn a_filesystem_that_cannot_lock_loses_the_check_but_another_writer_is_still_refused() {
        let cannot = Err(LockError::Io {
            locked: PathBuf::from("out.jsonl"),
            // ENOLCK, as NFS without a lock daemon answers.
            source: std::io::Error::from_raw_os_error(libc::ENOLCK),
        });
        assert!(
            unless_unsupported(cannot, "file sink out.jsonl")
                .unwrap()
                .is_none()
        );
        let held = Err(LockError::Held {
            path: PathBuf::from("out.jsonl"),
            locked: PathBuf::from("out.jsonl"),
        });
        assert!(unless_unsupported(held, "file sink out.jsonl").is_err());
    }

    #[test]
    fn a_fifo_is_not_locked() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // With no reader or writer: opening it to read, blocking, would wait for ever.
        assert!(lock_file(&fifo).unwrap().is_none());
    }
}
