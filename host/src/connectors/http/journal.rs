//! The `http` source's journal: an API cannot be asked again for the same response, so records
//! fetched but not yet acknowledged are kept in a local file, fsynced before they are handed on,
//! replayed after a restart and dropped once acknowledged.
//!
//! The file is an 8-byte header followed by frames: payload length (u32 LE), the first 8 bytes
//! of the payload's sha256, the payload. A payload is a record (its offset, key, value, headers,
//! timestamp and malformed reason) or an acknowledgement (every record at or before an offset
//! is delivered). Appends write whole frames at the end of the valid prefix, so only the last
//! frame can be torn by a crash: a bad frame that reaches the end of the file is cut, a bad frame
//! with data after it is corruption and stops the source. Compaction writes the live frames to a
//! new file and renames it over the journal; `<journal>.lock` keeps a second pipeline out.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::Digest;

use crate::connectors::file::writer_lock::{self, WriterLock};
use crate::record::{Header, Headers, Record};

/// The file's first bytes: what it is, and the format version.
const MAGIC: &[u8; 8] = b"WEIRJNL1";
/// Length and checksum before each payload.
const FRAME_HEAD: usize = 12;
/// Payload kinds.
const KIND_RECORD: u8 = 1;
const KIND_ACKNOWLEDGED: u8 = 2;
/// Dead bytes below this are not worth a rewrite unless everything is acknowledged or the
/// journal is full.
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// A record as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journaled {
    /// Its source offset.
    pub offset: i64,
    /// The record.
    pub record: Record,
    /// Why the source could not decode it, for a malformed one.
    pub malformed: Option<String>,
}

/// What can go wrong with a journal; each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another pipeline (in this process or another) holds the journal.
    #[error(
        "journal {} is in use by another pipeline or weir process (it holds {}); give each http source its own `journal` file, or stop the other process",
        .path.display(), writer_lock::beside(.path).display()
    )]
    Locked { path: PathBuf },
    /// The file does not start like a journal.
    #[error(
        "{} is not a weir journal (it does not start with the journal header); point `journal` at a file of its own (a missing or empty file starts a new journal)",
        .path.display()
    )]
    NotAJournal { path: PathBuf },
    /// A frame in the middle of the file is damaged.
    #[error(
        "journal {} is corrupt at byte {at}: {reason}; the entries from there on cannot be trusted. Move the file aside to start without it (the unacknowledged records it holds are then not delivered), or restore it from a backup",
        .path.display()
    )]
    Corrupt {
        path: PathBuf,
        at: u64,
        reason: String,
    },
    /// A record too large for a frame.
    #[error(
        "journal {}: a record of {bytes} bytes is too large for a journal entry (at most 4 GiB); lower `max_body_bytes`",
        .path.display()
    )]
    TooLarge { path: PathBuf, bytes: usize },
    /// A thread panicked while writing it, so what it holds is unknown.
    #[error(
        "the journal's state is unknown after a failure while writing it; restart weir to read it again"
    )]
    Poisoned,
    /// Reading, writing, syncing or renaming failed.
    #[error("journal {}: cannot {action}: {source}", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl JournalError {
    /// Whether retrying may cure it (an IO error: a full disk, a transient fault); the others
    /// need the user.
    pub fn is_io(&self) -> bool {
        matches!(self, JournalError::Io { .. })
    }
}

/// The file a compaction writes before renaming it over the journal.
fn compact_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".compact");
    PathBuf::from(name)
}

/// A frame of a record not yet acknowledged: its offset and where it sits in the file.
#[derive(Debug, Clone, Copy)]
struct Live {
    offset: i64,
    at: u64,
    len: u64,
}

/// An open, locked journal.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Held for the journal's life: dropping it (or the process dying) releases the lock.
    _lock: WriterLock,
    /// End of the valid frames; the next append goes here.
    len: u64,
    /// A failed write may have left bytes past `len`: cut them after the next good write.
    dirty: bool,
    /// Records not yet acknowledged, in offset order.
    live: VecDeque<Live>,
    /// Bytes of their frames.
    live_bytes: u64,
    /// Every record at or before this offset is acknowledged.
    acknowledged: i64,
    /// The highest offset ever written.
    last_offset: i64,
    /// The size past which the source stops fetching until acknowledgements free space.
    max_bytes: u64,
    /// Dead bytes below this are left until a cheaper moment (tests lower it).
    compact_min: u64,
    /// Faults a test makes the next fsyncs report.
    #[cfg(test)]
    faults: Faults,
}

/// Fsyncs a test makes fail (each once), to see what a failing disk leaves.
#[cfg(test)]
#[derive(Debug, Default)]
struct Faults {
    sync_data: bool,
    sync_folder: bool,
}

/// A journal just opened: the journal, the records to replay, and how many bytes of a torn last
/// entry were cut.
pub struct Opened {
    /// The journal, ready for appends.
    pub journal: Journal,
    /// Records fetched before the last stop and never acknowledged, in offset order.
    pub replay: Vec<Journaled>,
    /// Bytes of a half-written last entry that were cut (0: none).
    pub cut: u64,
}

impl Journal {
    /// Opens (creating it and its folder if missing) and locks the journal at `path`, reading
    /// what it holds. Stops fetching once it holds `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Opened, JournalError> {
        let io = |action| {
            let path = path.to_owned();
            move |source| JournalError::Io {
                path,
                action,
                source,
            }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io("create its folder"))?;
        }
        let lock = writer_lock::lock_beside(path).map_err(|e| match e {
            writer_lock::LockError::Held { .. } => JournalError::Locked {
                path: path.to_owned(),
            },
            writer_lock::LockError::Io { source, .. } => io("lock its lock file")(source),
        })?;
        // A compaction that stopped half-way left its file; the journal itself is intact.
        let _ = std::fs::remove_file(compact_path(path));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("open"))?;
        let mut journal = Journal {
            path: path.to_owned(),
            file,
            _lock: lock,
            len: 0,
            dirty: false,
            live: VecDeque::new(),
            live_bytes: 0,
            acknowledged: 0,
            last_offset: 0,
            max_bytes,
            compact_min: COMPACT_MIN_BYTES,
            #[cfg(test)]
            faults: Faults::default(),
        };
        let (replay, cut) = journal.read()?;
        Ok(Opened {
            journal,
            replay,
            cut,
        })
    }

    /// Reads the file from the start: the records to replay, and the bytes of a torn tail cut.
    fn read(&mut self) -> Result<(Vec<Journaled>, u64), JournalError> {
        let size = self
            .file
            .metadata()
            .map_err(|e| self.io("read its size", e))?
            .len();
        let mut reader = BufReader::with_capacity(1 << 20, &self.file);
        let mut head = [0u8; MAGIC.len()];
        let got = read_up_to(&mut reader, &mut head).map_err(|e| self.io("read", e))?;
        if got < MAGIC.len() {
            if head[..got] != MAGIC[..got] {
                return Err(JournalError::NotAJournal {
                    path: self.path.clone(),
                });
            }
            // New, or its creation was cut short: start it.
            drop(reader);
            self.file.set_len(0).map_err(|e| self.io("truncate", e))?;
            self.file
                .write_all_at(MAGIC, 0)
                .map_err(|e| self.io("write", e))?;
            self.file.sync_all().map_err(|e| self.io("fsync", e))?;
            sync_folder(&self.path).map_err(|e| self.io("fsync its folder", e))?;
            self.len = MAGIC.len() as u64;
            return Ok((Vec::new(), got as u64));
        }
        if &head != MAGIC {
            return Err(JournalError::NotAJournal {
                path: self.path.clone(),
            });
        }
        let mut records: Vec<Journaled> = Vec::new();
        let mut live: Vec<Live> = Vec::new();
        let mut acknowledged = 0i64;
        let mut at = MAGIC.len() as u64;
        let mut payload = Vec::new();
        let bad = loop {
            if at == size {
                break None;
            }
            let mut frame_head = [0u8; FRAME_HEAD];
            let got = read_up_to(&mut reader, &mut frame_head).map_err(|e| self.io("read", e))?;
            if got < FRAME_HEAD {
                break Some((size, "the entry's header is incomplete".to_owned()));
            }
            let len = u64::from(u32::from_le_bytes([
                frame_head[0],
                frame_head[1],
                frame_head[2],
                frame_head[3],
            ]));
            let end = at + FRAME_HEAD as u64 + len;
            if len == 0 {
                break Some((end, "an entry is empty".to_owned()));
            }
            if end > size {
                break Some((end, "the entry is cut short".to_owned()));
            }
            payload.resize(len as usize, 0);
            reader
                .read_exact(&mut payload)
                .map_err(|e| self.io("read", e))?;
            if checksum(&payload) != frame_head[4..] {
                break Some((end, "an entry's checksum does not match".to_owned()));
            }
            match decode(&payload) {
                Some(Entry::Record(journaled)) => {
                    live.push(Live {
                        offset: journaled.offset,
                        at,
                        len: end - at,
                    });
                    self.last_offset = self.last_offset.max(journaled.offset);
                    records.push(journaled);
                }
                Some(Entry::Acknowledged(offset)) => {
                    acknowledged = acknowledged.max(offset);
                    self.last_offset = self.last_offset.max(offset);
                }
                None => {
                    return Err(JournalError::Corrupt {
                        path: self.path.clone(),
                        at,
                        reason: "an entry's checksum matches but its content cannot be read (written by another version?)".into(),
                    });
                }
            }
            at = end;
        };
        drop(reader);
        let mut cut = 0;
        if let Some((bad_end, reason)) = bad {
            // Only the last append can be torn: a bad entry that reaches the end of the file, or
            // is followed by nothing but zeros (a file extended but not yet written when the
            // power went), is cut; one with data after it means the file was damaged.
            if bad_end < size && !self.zeros_from(bad_end, size)? {
                return Err(JournalError::Corrupt {
                    path: self.path.clone(),
                    at,
                    reason,
                });
            }
            self.file
                .set_len(at)
                .map_err(|e| self.io("cut its torn last entry", e))?;
            self.file.sync_all().map_err(|e| self.io("fsync", e))?;
            cut = size - at;
        }
        self.len = at;
        self.acknowledged = acknowledged;
        self.live = live
            .into_iter()
            .filter(|l| l.offset > acknowledged)
            .collect();
        self.live_bytes = self.live.iter().map(|l| l.len).sum();
        records.retain(|r| r.offset > acknowledged);
        Ok((records, cut))
    }

    /// Whether the file from `from` to `to` holds only zeros.
    fn zeros_from(&self, from: u64, to: u64) -> Result<bool, JournalError> {
        let mut block = vec![0u8; 64 * 1024];
        let mut at = from;
        while at < to {
            let n = (to - at).min(block.len() as u64) as usize;
            self.file
                .read_exact_at(&mut block[..n], at)
                .map_err(|e| self.io("read", e))?;
            if block[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// The offset after the highest one the journal has seen: where new records continue, so
    /// offsets stay unique across restarts.
    pub fn next_offset(&self) -> i64 {
        self.last_offset.max(self.acknowledged) + 1
    }

    /// Whether it holds `max_bytes` or more with records still in flight: the source fetches
    /// nothing until acknowledgements free space. With none in flight it is never full, however
    /// low the bound, so fetching cannot stop for good.
    pub fn is_full(&self) -> bool {
        !self.live.is_empty() && self.len >= self.max_bytes
    }

    /// Bytes of records not yet acknowledged.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` (offsets increasing, above every earlier one) and fsyncs: once this
    /// returns, they survive a crash. On an error nothing of them counts as written.
    pub fn append(&mut self, records: &[Journaled]) -> Result<(), JournalError> {
        let mut frames = Vec::new();
        let mut added = Vec::with_capacity(records.len());
        for journaled in records {
            let start = frames.len();
            self.frame(&encode_record(journaled), &mut frames)?;
            added.push(Live {
                offset: journaled.offset,
                at: self.len + start as u64,
                len: (frames.len() - start) as u64,
            });
        }
        self.write(&frames, true)?;
        for live in added {
            self.live_bytes += live.len;
            self.last_offset = self.last_offset.max(live.offset);
            self.live.push_back(live);
        }
        Ok(())
    }

    /// Records that every record at or before `offset` is delivered: their frames are dropped,
    /// by a rewrite when that frees enough, else by an acknowledgement entry (not fsynced: a lost
    /// one only means records delivered again).
    pub fn acknowledge(&mut self, offset: i64) -> Result<(), JournalError> {
        if offset <= self.acknowledged {
            return Ok(());
        }
        self.acknowledged = offset;
        self.last_offset = self.last_offset.max(offset);
        while let Some(first) = self.live.front().copied() {
            if first.offset > offset {
                break;
            }
            self.live_bytes -= first.len;
            self.live.pop_front();
        }
        let dead = self.len - MAGIC.len() as u64 - self.live_bytes;
        let worth_it = dead >= self.compact_min.max(self.live_bytes);
        if self.live.is_empty() || worth_it || (self.is_full() && dead > 0) {
            self.compact()
        } else {
            let mut frame = Vec::new();
            self.frame(&encode_acknowledged(offset), &mut frame)?;
            self.write(&frame, false)
        }
    }

    /// Rewrites the journal as the acknowledged offset and the live frames, then renames the new
    /// file over it: a crash at any point leaves either the old journal or the new one.
    fn compact(&mut self) -> Result<(), JournalError> {
        let temporary = compact_path(&self.path);
        let renamed = self.write_compacted(&temporary).and_then(|written| {
            std::fs::rename(&temporary, &self.path)
                .map_err(|e| self.io("rename its compacted copy over it", e))?;
            Ok(written)
        });
        let (file, live, len) = match renamed {
            Ok(written) => written,
            Err(error) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(error);
            }
        };
        // The path names the new file now, whatever the folder's fsync says: the old one is
        // unlinked, and an append to it would be lost.
        self.file = file;
        self.live = live;
        self.len = len;
        self.dirty = false;
        self.sync_folder()
            .map_err(|e| self.io("fsync its folder", e))
    }

    /// Writes the acknowledged offset and the live frames to `temporary`, fsynced.
    fn write_compacted(
        &self,
        temporary: &Path,
    ) -> Result<(File, VecDeque<Live>, u64), JournalError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(temporary)
            .map_err(|e| self.io("create its compacted copy", e))?;
        let mut head = MAGIC.to_vec();
        self.frame(&encode_acknowledged(self.acknowledged), &mut head)?;
        file.write_all_at(&head, 0)
            .map_err(|e| self.io("write its compacted copy", e))?;
        let mut len = head.len() as u64;
        let mut live = VecDeque::with_capacity(self.live.len());
        let mut buffer = Vec::new();
        for entry in &self.live {
            buffer.resize(entry.len as usize, 0);
            self.file
                .read_exact_at(&mut buffer, entry.at)
                .map_err(|e| self.io("read", e))?;
            file.write_all_at(&buffer, len)
                .map_err(|e| self.io("write its compacted copy", e))?;
            live.push_back(Live { at: len, ..*entry });
            len += entry.len;
        }
        file.sync_all()
            .map_err(|e| self.io("fsync its compacted copy", e))?;
        Ok((file, live, len))
    }

    /// Writes `bytes` at the end of the valid frames, fsyncing when asked.
    fn write(&mut self, bytes: &[u8], fsync: bool) -> Result<(), JournalError> {
        if let Err(e) = self.file.write_all_at(bytes, self.len) {
            self.dirty = true;
            return Err(self.io("append", e));
        }
        let end = self.len + bytes.len() as u64;
        if self.dirty {
            // What a failed write left past the end would read as a damaged entry.
            self.file
                .set_len(end)
                .map_err(|e| self.io("cut a failed write", e))?;
        }
        if fsync && let Err(e) = self.sync_data() {
            // The bytes are in the file past `len`: a shorter frame written there next must
            // not leave the rest of them after it.
            self.dirty = true;
            return Err(self.io("fsync", e));
        }
        self.dirty = false;
        self.len = end;
        Ok(())
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.faults.sync_data) {
            return Err(std::io::Error::other("fsync failed (test)"));
        }
        self.file.sync_data()
    }

    fn sync_folder(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.faults.sync_folder) {
            return Err(std::io::Error::other("fsync failed (test)"));
        }
        sync_folder(&self.path)
    }

    /// Appends `payload` as a frame to `out`.
    fn frame(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), JournalError> {
        let len = u32::try_from(payload.len()).map_err(|_| JournalError::TooLarge {
            path: self.path.clone(),
            bytes: payload.len(),
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&checksum(payload));
        out.extend_from_slice(payload);
        Ok(())
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// Lowers the dead bytes a rewrite waits for, so tests can see one without megabytes.
    #[cfg(test)]
    fn set_compact_min(&mut self, bytes: u64) {
        self.compact_min = bytes;
    }

    /// The file's current length.
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.len
    }
}

/// Reads until `buffer` is full or the input ends; how many bytes were read.
fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buffer.len() {
        match reader.read(&mut buffer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Makes a rename or creation in `path`'s folder durable.
fn sync_folder(path: &Path) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(folder)?.sync_all()
}

/// The first 8 bytes of the payload's sha256.
fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = sha2::Sha256::digest(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// A decoded payload.
enum Entry {
    Record(Journaled),
    Acknowledged(i64),
}

const HAS_KEY: u8 = 1;
const HAS_TIMESTAMP: u8 = 2;
const MALFORMED: u8 = 4;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // A frame is at most 4 GiB (checked by `frame`), so no field inside it is longer.
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn encode_record(journaled: &Journaled) -> Vec<u8> {
    let record = &journaled.record;
    let mut flags = 0;
    if record.key.is_some() {
        flags |= HAS_KEY;
    }
    if record.timestamp.is_some() {
        flags |= HAS_TIMESTAMP;
    }
    if journaled.malformed.is_some() {
        flags |= MALFORMED;
    }
    let mut out = Vec::with_capacity(record.value.len() + 64);
    out.push(KIND_RECORD);
    out.extend_from_slice(&journaled.offset.to_le_bytes());
    out.push(flags);
    if let Some(key) = &record.key {
        put_bytes(&mut out, key);
    }
    put_bytes(&mut out, &record.value);
    out.extend_from_slice(&(record.headers.len() as u64).to_le_bytes());
    for header in &record.headers {
        put_bytes(&mut out, header.key.as_bytes());
        put_bytes(&mut out, &header.value);
    }
    if let Some(timestamp) = record.timestamp {
        out.extend_from_slice(&timestamp.to_le_bytes());
    }
    if let Some(reason) = &journaled.malformed {
        put_bytes(&mut out, reason.as_bytes());
    }
    out
}

fn encode_acknowledged(offset: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(KIND_ACKNOWLEDGED);
    out.extend_from_slice(&offset.to_le_bytes());
    out
}

/// Reads fields off a payload; `None` past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        let bytes: [u8; 8] = self.take(8)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|n| n as i64)
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.u64()?).ok()?;
        self.take(len).map(<[u8]>::to_vec)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }
}

/// A payload back into an entry; `None` when it does not parse (every byte must be used).
fn decode(payload: &[u8]) -> Option<Entry> {
    let mut cursor = Cursor(payload);
    let entry = match cursor.u8()? {
        KIND_RECORD => {
            let offset = cursor.i64()?;
            let flags = cursor.u8()?;
            let key = if flags & HAS_KEY != 0 {
                Some(cursor.bytes()?)
            } else {
                None
            };
            let value = cursor.bytes()?;
            let count = cursor.u64()?;
            let mut headers = Headers::new();
            for _ in 0..count {
                headers.push(Header {
                    key: cursor.text()?.into(),
                    value: cursor.bytes()?.into(),
                });
            }
            let timestamp = if flags & HAS_TIMESTAMP != 0 {
                Some(cursor.i64()?)
            } else {
                None
            };
            let malformed = if flags & MALFORMED != 0 {
                Some(cursor.text()?)
            } else {
                None
            };
            Entry::Record(Journaled {
                offset,
                record: Record {
                    key: key.map(Bytes::from),
                    value: Bytes::from(value),
                    headers,
                    timestamp,
                },
                malformed,
            })
        }
        KIND_ACKNOWLEDGED => Entry::Acknowledged(cursor.i64()?),
        _ => return None,
    };
    cursor.0.is_empty().then_some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(offset: i64) -> Journaled {
        Journaled {
            offset,
            record: Record::from_value(format!("{{\"user\":{offset}}}")),
            malformed: None,
        }
    }

    fn open(path: &Path) -> Opened {
        Journal::open(path, 1 << 30).unwrap()
    }

    fn offsets(records: &[Journaled]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn records_round_trip_through_their_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api.journal");
        let mut full = user(7);
        full.record.key = Some(Bytes::from_static(&[0, 1, 255]));
        full.record.timestamp = Some(-5);
        full.record.set_header("weir.record.bytes", "123");
        full.malformed = Some("response is not JSON".into());
        let empty = Journaled {
            offset: 8,
            record: Record::default(),
            malformed: None,
        };
        {
            let mut journal = open(&path).journal;
            journal.append(&[full.clone(), empty.clone()]).unwrap();
        }
        let opened = open(&path);
        assert_eq!(opened.replay, vec![full, empty]);
        assert_eq!(opened.cut, 0);
        assert_eq!(opened.journal.next_offset(), 9);
    }

    #[test]
    fn a_torn_last_entry_is_cut_and_the_entries_before_it_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.journal");
        {
            let mut journal = open(&path).journal;
            journal.append(&[user(1), user(2)]).unwrap();
            journal.append(&[user(3)]).unwrap();
        }
        let whole = std::fs::read(&path).unwrap();
        let third = whole.len() - (FRAME_HEAD + encode_record(&user(3)).len());
        // Cut at every byte of the last entry (its header and its payload), then as if the
        // file had been extended with zeros, and with the last byte flipped.
        let mut cases: Vec<Vec<u8>> = (third + 1..whole.len())
            .map(|end| whole[..end].to_vec())
            .collect();
        let mut zeros = whole[..third + 5].to_vec();
        zeros.resize(whole.len() + 100, 0);
        cases.push(zeros);
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 0xff;
        cases.push(flipped);
        for case in cases {
            std::fs::write(&path, &case).unwrap();
            let opened = open(&path);
            assert_eq!(offsets(&opened.replay), [1, 2], "{} bytes", case.len());
            assert_eq!(opened.cut, (case.len() - third) as u64);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), third as u64);
            // Appending after the cut gives a clean journal.
            let mut journal = opened.journal;
            journal.append(&[user(3)]).unwrap();
            drop(journal);
            assert_eq!(offsets(&open(&path).replay), [1, 2, 3]);
        }
    }

    #[test]
    fn damage_before_the_last_entry_is_a_clear_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.journal");
        {
            let mut journal = open(&path).journal;
            journal.append(&[user(1), user(2), user(3)]).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        // A byte of the first record's value.
        let at = MAGIC.len() + FRAME_HEAD + 20;
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let Err(error) = Journal::open(&path, 1 << 30) else {
            panic!("a damaged journal opened");
        };
        let message = error.to_string();
        assert!(
            matches!(error, JournalError::Corrupt { at: 8, .. }),
            "{message}"
        );
        assert!(
            message.contains(&path.display().to_string())
                && message.contains("checksum")
                && message.contains("Move the file aside"),
            "{message}"
        );
        // Not a journal at all.
        std::fs::write(&path, "{\"results\":[]}\n").unwrap();
        let Err(error) = Journal::open(&path, 1 << 30) else {
            panic!("a JSON file opened as a journal");
        };
        assert!(matches!(error, JournalError::NotAJournal { .. }), "{error}");
        // A header cut short is a journal whose creation was interrupted.
        std::fs::write(&path, &MAGIC[..3]).unwrap();
        assert!(open(&path).replay.is_empty());
    }

    #[test]
    fn acknowledged_records_are_not_replayed_and_the_file_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.journal");
        let mut journal = open(&path).journal;
        journal.append(&[user(1), user(2), user(3)]).unwrap();
        journal.append(&[user(4)]).unwrap();
        let full = journal.len();
        // A partial acknowledgement with few dead bytes only adds an entry.
        journal.acknowledge(1).unwrap();
        assert!(journal.len() > full);
        drop(journal);
        let opened = open(&path);
        assert_eq!(offsets(&opened.replay), [2, 3, 4]);
        // Worth a rewrite: the file keeps only the live records.
        let mut journal = opened.journal;
        journal.set_compact_min(1);
        journal.acknowledge(3).unwrap();
        let live = journal.live_bytes();
        assert_eq!(journal.len(), (MAGIC.len() + FRAME_HEAD + 9) as u64 + live);
        journal.append(&[user(5)]).unwrap();
        drop(journal);
        let opened = open(&path);
        assert_eq!(offsets(&opened.replay), [4, 5]);
        // Everything acknowledged: the file shrinks to its header and the acknowledged offset,
        // which keeps offsets unique after a restart.
        let mut journal = opened.journal;
        journal.acknowledge(5).unwrap();
        assert_eq!(journal.len(), (MAGIC.len() + FRAME_HEAD + 9) as u64);
        assert_eq!(journal.live_bytes(), 0);
        drop(journal);
        let opened = open(&path);
        assert!(opened.replay.is_empty());
        assert_eq!(opened.journal.next_offset(), 6);
        // An older acknowledgement changes nothing.
        let mut journal = opened.journal;
        journal.acknowledge(2).unwrap();
        assert_eq!(journal.next_offset(), 6);
    }

    #[test]
    fn the_journal_is_full_at_its_bound_until_acknowledgements_free_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.journal");
        let mut journal = Journal::open(&path, 200).unwrap().journal;
        journal.append(&[user(1), user(2)]).unwrap();
        assert!(!journal.is_full());
        journal.append(&[user(3), user(4), user(5)]).unwrap();
        assert!(journal.is_full());
        journal.acknowledge(4).unwrap();
        assert!(!journal.is_full(), "{} bytes", journal.len());
        journal.acknowledge(5).unwrap();
        assert!(!journal.is_full());
    }

    #[test]
    fn after_a_compaction_whose_folder_fsync_failed_appends_go_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.journal");
        let mut journal = open(&path).journal;
        journal.append(&[user(1), user(2)]).unwrap();
        journal.faults.sync_folder = true;
        let error = journal.acknowledge(2).unwrap_err();
        assert!(error.to_string().contains("fsync its folder"), "{error}");
        journal.append(&[user(3)]).unwrap();
        drop(journal);
        let opened = open(&path);
        assert_eq!(
            offsets(&opened.replay),
            [3],
            "the append after it is in the journal"
        );
    }

    #[test]
    fn an_append_whose_fsync_failed_leaves_nothing_a_later_entry_could_expose() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.journal");
        let mut journal = open(&path).journal;
        journal.append(&[user(1), user(2)]).unwrap();
        // Written, but not known to be durable: not appended as far as anyone knows.
        journal.faults.sync_data = true;
        let big = |offset| Journaled {
            record: Record::from_value(vec![b'x'; 1000]),
            ..user(offset)
        };
        journal.append(&[big(3), big(4)]).unwrap_err();
        // A short acknowledgement entry, written where those frames start.
        journal.acknowledge(1).unwrap();
        drop(journal);
        let opened = Journal::open(&path, 1 << 30).unwrap();
        assert_eq!(offsets(&opened.replay), [2]);
        assert_eq!(opened.cut, 0, "no damaged entry after the acknowledgement");
    }

    #[test]
    fn a_second_opener_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.journal");
        let first = open(&path).journal;
        let Err(error) = Journal::open(&path, 1 << 30) else {
            panic!("two openers shared a journal");
        };
        let message = error.to_string();
        assert!(
            matches!(error, JournalError::Locked { .. })
                && message.contains(&path.display().to_string())
                && message.contains("its own `journal`"),
            "{message}"
        );
        drop(first);
        open(&path);
    }
}
