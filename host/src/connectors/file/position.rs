//! Where the file source stands, in which file: the identity of the file being read (to notice
//! a rename rotation), its fingerprint as its first bytes go by (to recognise it after a
//! restart), and the position of each record handed out until it is committed (a commit names a
//! line number; the checkpoint needs the byte after it and the file it is in).

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::checkpoint::{HEAD_BYTES, Head, Resume};

/// Which file a path named when it was opened: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    device: u64,
    inode: u64,
}

impl FileId {
    /// The identity of the file `metadata` describes.
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        FileId {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// The fingerprint of the file being read: built from its first line as it is read from the
/// start, or known from the checkpoint when reading resumed in the middle.
#[derive(Debug)]
pub(super) enum Fingerprint {
    /// The bytes read so far of the first line (with its newline), at most [`HEAD_BYTES`].
    Reading(Vec<u8>),
    /// Complete.
    Known(Head),
}

impl Fingerprint {
    /// For a file read from its first byte.
    pub fn start() -> Self {
        Fingerprint::Reading(Vec::new())
    }

    /// Notes the next bytes read from the file (read from its start, in order).
    pub fn saw(&mut self, bytes: &[u8]) {
        let Fingerprint::Reading(head) = self else {
            return;
        };
        let room = &bytes[..bytes.len().min(HEAD_BYTES - head.len())];
        match memchr::memchr(b'\n', room) {
            Some(newline) => {
                head.extend_from_slice(&room[..=newline]);
                *self = Fingerprint::Known(fingerprint(head));
            }
            None => {
                head.extend_from_slice(room);
                if head.len() == HEAD_BYTES {
                    *self = Fingerprint::Known(fingerprint(head));
                }
            }
        }
    }

    /// The fingerprint: complete once the first line was read, else of what was read of it
    /// (a file that is one unterminated line).
    pub fn head(&self) -> Head {
        match self {
            Fingerprint::Reading(head) => fingerprint(head),
            Fingerprint::Known(head) => *head,
        }
    }
}

fn fingerprint(bytes: &[u8]) -> Head {
    Head {
        bytes: bytes.len() as u64,
        sha256: Sha256::digest(bytes).into(),
    }
}

/// The fingerprint of `file`'s first `bytes` bytes, read from where it stands (its start);
/// `None` when it is shorter.
pub(super) async fn head_of(
    file: &mut tokio::fs::File,
    bytes: u64,
) -> std::io::Result<Option<Head>> {
    let mut start = Vec::new();
    (&mut *file).take(bytes).read_to_end(&mut start).await?;
    Ok((start.len() as u64 == bytes).then(|| fingerprint(&start)))
}

/// The position of each record handed out and not yet committed, in line order. It holds no
/// more than the records in flight, which the pipeline bounds.
#[derive(Debug, Default)]
pub(super) struct Handed {
    positions: VecDeque<Resume>,
}

impl Handed {
    /// Notes a record handed out at `position`.
    pub fn push(&mut self, position: Resume) {
        self.positions.push_back(position);
    }

    /// Where a commit of every line up to `line` leaves the source: the last record handed
    /// out at or before it. `None` when an earlier commit already covered them all.
    pub fn up_to(&self, line: i64) -> Option<Resume> {
        self.positions
            .iter()
            .take_while(|position| position.line <= line)
            .last()
            .copied()
    }

    /// Forgets the records up to `line`, once their commit is written.
    pub fn committed(&mut self, line: i64) {
        while self
            .positions
            .front()
            .is_some_and(|position| position.line <= line)
        {
            self.positions.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_the_first_line_with_its_newline_or_its_first_4_kib() {
        let mut short = Fingerprint::start();
        short.saw(b"{\"n\"");
        short.saw(b":1}\n{\"n\":2}\n");
        assert_eq!(short.head(), fingerprint(b"{\"n\":1}\n"));
        short.saw(b"more");
        assert_eq!(
            short.head(),
            fingerprint(b"{\"n\":1}\n"),
            "later lines change nothing"
        );

        let long = vec![b'x'; HEAD_BYTES + 10];
        let mut capped = Fingerprint::start();
        capped.saw(&long);
        assert_eq!(capped.head(), fingerprint(&long[..HEAD_BYTES]));
    }

    #[test]
    fn a_commit_is_the_last_record_handed_out_at_or_before_it() {
        let at = |line, offset| Resume {
            line,
            offset,
            start: 0,
            head: fingerprint(b"a\n"),
        };
        let mut handed = Handed::default();
        handed.push(at(1, 2));
        handed.push(at(3, 6));
        handed.push(at(4, 8));
        assert_eq!(handed.up_to(2), Some(at(1, 2)));
        assert_eq!(handed.up_to(3), Some(at(3, 6)));
        handed.committed(3);
        assert_eq!(handed.up_to(3), None);
        assert_eq!(handed.up_to(9), Some(at(4, 8)));
    }
}
