//! Reads a plugin's files from the registry folder with a bound, because anything can sit there
//! under a plugin's name: a symlink to `/dev/zero` would be read until memory runs out, and a
//! FIFO would block `open` forever, and with it the watcher's only loop.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::kafka::{MAX_COMPONENT_BYTES, MAX_MANIFEST_BYTES};

/// Which of a plugin's files is read: it sets the cap, the same as the Kafka registry's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginFile {
    /// `NAME.wasm`, at most [`MAX_COMPONENT_BYTES`].
    Component,
    /// `NAME.toml`, at most [`MAX_MANIFEST_BYTES`].
    Manifest,
}

impl PluginFile {
    /// The most bytes weir reads of this file.
    fn limit(self) -> u64 {
        match self {
            PluginFile::Component => MAX_COMPONENT_BYTES as u64,
            PluginFile::Manifest => MAX_MANIFEST_BYTES as u64,
        }
    }

    /// What to do about a file over the cap.
    fn advice(self) -> &'static str {
        match self {
            PluginFile::Component => {
                "check that it is the component you meant to deploy, and shrink it: build it in release mode and strip it with `wasm-tools strip`"
            }
            PluginFile::Manifest => {
                "a manifest is a few lines of TOML: check that it is the manifest you meant"
            }
        }
    }
}

/// Why a file in the plugin folder was refused. It travels inside an [`io::Error`] so that each
/// caller keeps its own error type, whose message names the file.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// A directory, FIFO, socket or device, or a symlink to one.
    #[error(
        "it is not a regular file (a directory, FIFO, socket or device, or a symlink to one): put the plugin's file there instead, or move it out of the plugin folder"
    )]
    NotRegularFile,
    /// More bytes than the file's cap.
    #[error("it is larger than {}, the most weir reads of it: {}", size(*.limit), .file.advice())]
    TooLarge {
        /// Which file it is.
        file: PluginFile,
        /// Its cap in bytes.
        limit: u64,
    },
}

/// Reads `path` whole if it is a regular file within `file`'s cap. A refusal is an
/// [`io::Error`] of kind `InvalidInput` (not a regular file) or `FileTooLarge`; a missing file
/// stays `NotFound`.
pub fn read_plugin_file(path: &Path, file: PluginFile) -> io::Result<Vec<u8>> {
    read_at_most(path, file, file.limit())
}

/// [`read_plugin_file`] with the cap given, so tests need no large file.
fn read_at_most(path: &Path, file: PluginFile, limit: u64) -> io::Result<Vec<u8>> {
    // Without O_NONBLOCK, opening a FIFO waits for a writer; reads of a regular file ignore it.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // The opened file's metadata, not the path's: the path may be replaced in between.
    let metadata = opened.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            Refused::NotRegularFile,
        ));
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            Refused::TooLarge { file, limit },
        )
    };
    if metadata.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // One byte past the cap tells a file that grew since its length was read.
    opened.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A size in the largest unit that divides it: `256 MiB`, `64 KiB`, `5 bytes`.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn reads_a_regular_file_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wasm");
        std::fs::write(&path, b"abcd").unwrap();
        assert_eq!(
            read_at_most(&path, PluginFile::Component, 4).unwrap(),
            b"abcd"
        );
        assert_eq!(
            read_plugin_file(&path, PluginFile::Component).unwrap(),
            b"abcd"
        );
    }

    #[test]
    fn refuses_a_file_over_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wasm");
        std::fs::write(&path, b"abcde").unwrap();
        let error = read_at_most(&path, PluginFile::Component, 4).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
        let message = error.to_string();
        assert!(
            message.contains("larger than 4 bytes") && message.contains("wasm-tools strip"),
            "{message}"
        );
    }

    #[test]
    fn refuses_a_file_that_holds_more_than_its_length_says() {
        // A /proc file says it is empty and then yields its text, as a file that grew would.
        let error =
            read_at_most(Path::new("/proc/self/status"), PluginFile::Manifest, 4).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wasm");
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let error = read_plugin_file(&path, PluginFile::Component).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }

    #[test]
    fn refuses_a_symlink_to_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wasm");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let error = read_plugin_file(&path, PluginFile::Component).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn refuses_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wasm");
        std::fs::create_dir(&path).unwrap();
        let error = read_plugin_file(&path, PluginFile::Component).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_missing_file_stays_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let error =
            read_plugin_file(&dir.path().join("x.wasm"), PluginFile::Component).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn caps_are_shown_in_their_unit() {
        assert_eq!(size(PluginFile::Component.limit()), "256 MiB");
        assert_eq!(size(PluginFile::Manifest.limit()), "64 KiB");
        assert_eq!(size(5), "5 bytes");
    }
}
