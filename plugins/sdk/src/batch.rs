//! The wire format of the `batch-transformer` world: a whole batch crosses the plugin boundary as
//! one byte buffer each way, where the record-shaped `transformer` world has the host call into
//! the guest to place every value and header list. This is the one implementation of it: the host
//! writes batches and reads results with it, the guest reads batches and writes results, so the
//! two sides cannot drift apart.
//!
//! Every integer is little-endian; `bytes` is a `u32` length and that many bytes.
//! - A batch is a `u32` record count, then the records.
//! - A record is a `u8` of flags ([`HAS_KEY`], [`HAS_TIMESTAMP`], no other bit), an `s64`
//!   timestamp when flagged, the key's `bytes` when flagged, the value's `bytes`, a `u32` header
//!   count, then each header's UTF-8 name and value as `bytes`.
//! - Results are a `u32` count (the batch's), then one outcome per input, in order:
//!   [`OUTPUTS`] with a `u32` output count and that many records, or [`BAD_RECORD`] or
//!   [`PLUGIN_FAILURE`] with a UTF-8 message as `bytes`.
//!
//! Reading never trusts a length: each is checked against the bytes left, so a truncated or
//! hostile buffer is an error naming the offset, never a panic or an allocation it asks for.

use std::fmt;

/// Record flag: a key follows.
pub const HAS_KEY: u8 = 1;
/// Record flag: a timestamp follows.
pub const HAS_TIMESTAMP: u8 = 2;
/// Outcome tag: the input became this many output records.
pub const OUTPUTS: u8 = 0;
/// Outcome tag: the input was a bad record.
pub const BAD_RECORD: u8 = 1;
/// Outcome tag: the plugin failed on the input.
pub const PLUGIN_FAILURE: u8 = 2;

/// The fewest bytes a record takes: its flags, an empty value and no headers.
const MIN_RECORD: usize = 1 + 4 + 4;
/// The fewest bytes an outcome takes: a tag and a count or a message length.
const MIN_OUTCOME: usize = 1 + 4;

/// Why a buffer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ended `needed` bytes short of a field starting at `at`.
    Truncated { at: usize, needed: usize },
    /// A record's flags byte at `at` has a bit the format does not define.
    UnknownFlags { at: usize, flags: u8 },
    /// An outcome's tag at `at` is none of the defined ones.
    UnknownOutcome { at: usize, tag: u8 },
    /// A header name or message starting at `at` is not UTF-8.
    NotUtf8 { at: usize, what: &'static str },
    /// `count` bytes were left over after the last field.
    TrailingBytes { count: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { at, needed } => {
                write!(
                    f,
                    "the buffer ends {needed} bytes short of the field at byte {at}"
                )
            }
            DecodeError::UnknownFlags { at, flags } => {
                write!(f, "unknown record flags {flags:#04x} at byte {at}")
            }
            DecodeError::UnknownOutcome { at, tag } => {
                write!(f, "unknown outcome tag {tag} at byte {at}")
            }
            DecodeError::NotUtf8 { at, what } => write!(f, "the {what} at byte {at} is not UTF-8"),
            DecodeError::TrailingBytes { count } => {
                write!(f, "{count} bytes follow the last outcome")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A field too long for the format's `u32` lengths: more than 4 GiB, which no plugin's memory
/// could hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong {
    /// Which field: `key`, `value`, `header value`, ...
    pub what: &'static str,
    /// Its length in bytes.
    pub len: usize,
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a record's {} of {} bytes is over the plugin boundary's 4 GiB limit",
            self.what, self.len
        )
    }
}

impl std::error::Error for TooLong {}

/// Who is to blame for a failed input, as an outcome says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The input record is malformed.
    BadRecord,
    /// The plugin failed on a record it should have handled.
    PluginFailure,
}

/// What became of one input: how many output records follow, or why it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// This many output records follow, read with [`Reader::record`].
    Outputs(u32),
    /// The input failed, with a message for a human.
    Failed(FailureKind, &'a str),
}

/// A record read from a buffer, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The key, when the record has one.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// The headers, in order.
    pub headers: HeadersRef<'a>,
    /// The timestamp, when the record has one.
    pub timestamp: Option<i64>,
}

/// A record's headers in a buffer, already checked when the record was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadersRef<'a> {
    count: u32,
    bytes: &'a [u8],
}

impl<'a> HeadersRef<'a> {
    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The headers in order, as name and value.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + use<'a> {
        let mut reader = Reader::new(self.bytes);
        (0..self.count).map(move |_| {
            // Every header was read once already when the record was, so none of these fail.
            let name = reader.sized().unwrap_or_default();
            let value = reader.sized().unwrap_or_default();
            (std::str::from_utf8(name).unwrap_or_default(), value)
        })
    }
}

/// Reads a batch or results from the front, field by field.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    /// The leading record or outcome count.
    pub fn count(&mut self) -> Result<u32, DecodeError> {
        self.u32()
    }

    /// Room to reserve for `count` records: no more than the bytes left could hold, so a
    /// hostile count cannot make the reader's caller allocate what was never sent.
    pub fn records_capacity(&self, count: u32) -> usize {
        (count as usize).min(self.remaining() / MIN_RECORD)
    }

    /// Room to reserve for `count` outcomes, bounded as [`Reader::records_capacity`].
    pub fn outcomes_capacity(&self, count: u32) -> usize {
        (count as usize).min(self.remaining() / MIN_OUTCOME)
    }

    /// The next record.
    pub fn record(&mut self) -> Result<RecordRef<'a>, DecodeError> {
        let flags_at = self.at;
        let flags = self.u8()?;
        if flags & !(HAS_KEY | HAS_TIMESTAMP) != 0 {
            return Err(DecodeError::UnknownFlags {
                at: flags_at,
                flags,
            });
        }
        let timestamp = if flags & HAS_TIMESTAMP != 0 {
            Some(i64::from_le_bytes(self.array()?))
        } else {
            None
        };
        let key = if flags & HAS_KEY != 0 {
            Some(self.sized()?)
        } else {
            None
        };
        let value = self.sized()?;
        let count = self.u32()?;
        let start = self.at;
        for _ in 0..count {
            let name_at = self.at + 4;
            let name = self.sized()?;
            if std::str::from_utf8(name).is_err() {
                return Err(DecodeError::NotUtf8 {
                    at: name_at,
                    what: "header name",
                });
            }
            self.sized()?;
        }
        let headers = HeadersRef {
            count,
            bytes: &self.bytes[start..self.at],
        };
        Ok(RecordRef {
            key,
            value,
            headers,
            timestamp,
        })
    }

    /// The next input's outcome; when it is [`Outcome::Outputs`], that many records follow.
    pub fn outcome(&mut self) -> Result<Outcome<'a>, DecodeError> {
        let tag_at = self.at;
        let kind = match self.u8()? {
            OUTPUTS => return Ok(Outcome::Outputs(self.u32()?)),
            BAD_RECORD => FailureKind::BadRecord,
            PLUGIN_FAILURE => FailureKind::PluginFailure,
            tag => return Err(DecodeError::UnknownOutcome { at: tag_at, tag }),
        };
        let message_at = self.at + 4;
        let message = std::str::from_utf8(self.sized()?).map_err(|_| DecodeError::NotUtf8 {
            at: message_at,
            what: "failure message",
        })?;
        Ok(Outcome::Failed(kind, message))
    }

    /// Checks that nothing follows what was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated {
                at: self.at,
                needed: len - self.remaining(),
            });
        }
        let taken = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn sized(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        self.take(len as usize)
    }
}

/// Appends a batch's or the results' leading count.
pub fn put_count(out: &mut Vec<u8>, count: usize) -> Result<(), TooLong> {
    out.extend_from_slice(&len_u32(count, "batch")?.to_le_bytes());
    Ok(())
}

/// Appends one record.
pub fn put_record<'h>(
    out: &mut Vec<u8>,
    key: Option<&[u8]>,
    value: &[u8],
    headers: impl ExactSizeIterator<Item = (&'h str, &'h [u8])>,
    timestamp: Option<i64>,
) -> Result<(), TooLong> {
    let key_len = key.map_or(0, |key| 4 + key.len());
    out.reserve(1 + 8 + key_len + 4 + value.len() + 4);
    let flags = key.map_or(0, |_| HAS_KEY) | timestamp.map_or(0, |_| HAS_TIMESTAMP);
    out.push(flags);
    if let Some(timestamp) = timestamp {
        out.extend_from_slice(&timestamp.to_le_bytes());
    }
    if let Some(key) = key {
        put_bytes(out, key, "key")?;
    }
    put_bytes(out, value, "value")?;
    out.extend_from_slice(&len_u32(headers.len(), "header list")?.to_le_bytes());
    for (name, value) in headers {
        put_bytes(out, name.as_bytes(), "header name")?;
        put_bytes(out, value, "header value")?;
    }
    Ok(())
}

/// Appends an input's outcome of `count` outputs; the caller appends those records next.
pub fn put_outputs(out: &mut Vec<u8>, count: usize) -> Result<(), TooLong> {
    out.push(OUTPUTS);
    out.extend_from_slice(&len_u32(count, "output list")?.to_le_bytes());
    Ok(())
}

/// Appends an input's failure.
pub fn put_failure(out: &mut Vec<u8>, kind: FailureKind, message: &str) -> Result<(), TooLong> {
    out.push(match kind {
        FailureKind::BadRecord => BAD_RECORD,
        FailureKind::PluginFailure => PLUGIN_FAILURE,
    });
    put_bytes(out, message.as_bytes(), "failure message")
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8], what: &'static str) -> Result<(), TooLong> {
    out.extend_from_slice(&len_u32(bytes.len(), what)?.to_le_bytes());
    // Keys and short values are copied inside the guest, not by `memory.copy` (`copy` says why).
    crate::copy::append(out, bytes);
    Ok(())
}

fn len_u32(len: usize, what: &'static str) -> Result<u32, TooLong> {
    u32::try_from(len).map_err(|_| TooLong { what, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (
        Option<Vec<u8>>,
        Vec<u8>,
        Vec<(String, Vec<u8>)>,
        Option<i64>,
    );

    fn records() -> Vec<Owned> {
        vec![
            (None, b"{}".to_vec(), vec![], None),
            (Some(b"k".to_vec()), Vec::new(), vec![], Some(-1)),
            (
                Some(Vec::new()),
                "zoë \u{1F600}".into(),
                vec![
                    ("a".into(), b"1".to_vec()),
                    ("a".into(), Vec::new()),
                    ("é".into(), vec![0xff, 0]),
                ],
                Some(i64::MAX),
            ),
            (
                None,
                vec![7; 300],
                vec![(String::new(), b"x".to_vec())],
                Some(0),
            ),
        ]
    }

    fn put(out: &mut Vec<u8>, (key, value, headers, timestamp): &Owned) {
        let headers = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        put_record(out, key.as_deref(), value, headers, *timestamp).unwrap();
    }

    fn owned(record: RecordRef<'_>) -> Owned {
        let headers = record.headers.iter();
        assert_eq!(headers.len(), record.headers.len());
        (
            record.key.map(<[u8]>::to_vec),
            record.value.to_vec(),
            headers.map(|(n, v)| (n.to_owned(), v.to_vec())).collect(),
            record.timestamp,
        )
    }

    fn encoded_batch() -> Vec<u8> {
        let mut out = Vec::new();
        put_count(&mut out, records().len()).unwrap();
        records().iter().for_each(|record| put(&mut out, record));
        out
    }

    /// Results for the batch: the first input fails as bad, the second as the plugin's fault,
    /// the third has no outputs and the fourth has every record of the batch.
    fn encoded_results() -> Vec<u8> {
        let mut out = Vec::new();
        put_count(&mut out, 4).unwrap();
        put_failure(&mut out, FailureKind::BadRecord, "no `name` field").unwrap();
        put_failure(&mut out, FailureKind::PluginFailure, "").unwrap();
        put_outputs(&mut out, 0).unwrap();
        put_outputs(&mut out, records().len()).unwrap();
        records().iter().for_each(|record| put(&mut out, record));
        out
    }

    fn read_batch(bytes: &[u8]) -> Result<Vec<Owned>, DecodeError> {
        let mut reader = Reader::new(bytes);
        let count = reader.count()?;
        let mut records = Vec::with_capacity(reader.records_capacity(count));
        for _ in 0..count {
            records.push(owned(reader.record()?));
        }
        reader.finish()?;
        Ok(records)
    }

    #[derive(Debug, PartialEq)]
    enum Read {
        Outputs(Vec<Owned>),
        Failed(FailureKind, String),
    }

    fn read_results(bytes: &[u8]) -> Result<Vec<Read>, DecodeError> {
        let mut reader = Reader::new(bytes);
        let count = reader.count()?;
        let mut results = Vec::with_capacity(reader.outcomes_capacity(count));
        for _ in 0..count {
            results.push(match reader.outcome()? {
                Outcome::Outputs(n) => Read::Outputs(
                    (0..n)
                        .map(|_| reader.record().map(owned))
                        .collect::<Result<_, _>>()?,
                ),
                Outcome::Failed(kind, message) => Read::Failed(kind, message.to_owned()),
            });
        }
        reader.finish()?;
        Ok(results)
    }

    #[test]
    fn a_batch_reads_back_as_written() {
        assert_eq!(read_batch(&encoded_batch()).unwrap(), records());
    }

    #[test]
    fn results_read_back_as_written() {
        assert_eq!(
            read_results(&encoded_results()).unwrap(),
            vec![
                Read::Failed(FailureKind::BadRecord, "no `name` field".into()),
                Read::Failed(FailureKind::PluginFailure, String::new()),
                Read::Outputs(vec![]),
                Read::Outputs(records()),
            ]
        );
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let mut out = Vec::new();
        let headers = [("h", &b"v"[..])];
        put_record(&mut out, Some(b"k"), b"{}", headers.into_iter(), Some(2)).unwrap();
        let mut expected = vec![HAS_KEY | HAS_TIMESTAMP];
        expected.extend(2i64.to_le_bytes());
        expected.extend([1, 0, 0, 0, b'k', 2, 0, 0, 0, b'{', b'}']);
        expected.extend([1, 0, 0, 0, 1, 0, 0, 0, b'h', 1, 0, 0, 0, b'v']);
        assert_eq!(out, expected);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let batch = encoded_batch();
        for cut in 0..batch.len() {
            assert!(read_batch(&batch[..cut]).is_err(), "batch cut at {cut}");
        }
        let results = encoded_results();
        for cut in 0..results.len() {
            assert!(
                read_results(&results[..cut]).is_err(),
                "results cut at {cut}"
            );
        }
        let error = read_batch(&encoded_batch()[..6]).unwrap_err();
        assert!(
            matches!(error, DecodeError::Truncated { at: 5, .. }),
            "{error}"
        );
    }

    #[test]
    fn hostile_bytes_are_named_errors() {
        // A count of four billion records in a buffer of nine bytes reserves nothing for them.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend([0; 9]);
        let reader = Reader::new(&huge);
        assert_eq!(reader.records_capacity(u32::MAX), 1);
        assert!(matches!(
            read_batch(&huge),
            Err(DecodeError::Truncated { at: 13, .. })
        ));

        let flags = [1, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            read_batch(&flags),
            Err(DecodeError::UnknownFlags { at: 4, flags: 0x80 })
        );

        let tag = [1, 0, 0, 0, 9];
        assert_eq!(
            read_results(&tag),
            Err(DecodeError::UnknownOutcome { at: 4, tag: 9 })
        );

        let mut bad_name = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0xff];
        bad_name.extend([0, 0, 0, 0]);
        assert_eq!(
            read_batch(&bad_name),
            Err(DecodeError::NotUtf8 {
                at: 17,
                what: "header name"
            })
        );

        let bad_message = [1, 0, 0, 0, BAD_RECORD, 2, 0, 0, 0, 0xc3, 0x28];
        assert!(matches!(
            read_results(&bad_message),
            Err(DecodeError::NotUtf8 { at: 9, .. })
        ));

        let mut trailing = encoded_batch();
        trailing.push(0);
        assert_eq!(
            read_batch(&trailing),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }
}
