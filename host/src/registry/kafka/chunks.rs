//! The registry topic's wire format. A component is split into chunks small enough for the
//! broker's default message limit (about 1 MB), each under its own key so that compaction keeps
//! every chunk of every version; a small version record describes each version, and one head
//! record per plugin names the version the fleet runs. Compaction keeps the last head per plugin
//! and every version's chunks, which is all a reader needs to rebuild the latest version and the
//! history.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Bytes of component per chunk record: half the broker's default `max.message.bytes`, leaving
/// room for headers (the manifest travels in them) and batch overhead.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// The largest component the registry takes; a reader refuses to assemble anything larger, and
/// the catalog bounds how many versions it assembles at once (`catalog::MAX_ASSEMBLING_BYTES`
/// and its siblings), so a damaged or hostile record cannot make every process allocate
/// without bound.
pub const MAX_COMPONENT_BYTES: usize = 256 * 1024 * 1024;

/// The largest manifest the registry takes.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Header names of the registry's records.
pub mod headers {
    /// `chunk`, `version`, `head` or `rollout`.
    pub const KIND: &str = "weir.registry.kind";
    /// The plugin's name.
    pub const PLUGIN: &str = "weir.registry.plugin";
    /// The component's full sha256, hex.
    pub const SHA256: &str = "weir.registry.sha256";
    /// The version label (`--label`, else the manifest's `version`).
    pub const LABEL: &str = "weir.registry.label";
    /// The manifest's TOML text.
    pub const MANIFEST: &str = "weir.registry.manifest";
    /// The host that published.
    pub const PUBLISHER: &str = "weir.registry.publisher";
    /// The chunk's index, from 0.
    pub const CHUNK_INDEX: &str = "weir.registry.chunk.index";
    /// How many chunks the component has.
    pub const CHUNK_COUNT: &str = "weir.registry.chunk.count";
}

/// The kinds of record in the registry topic.
pub mod kinds {
    /// A piece of a component.
    pub const CHUNK: &str = "chunk";
    /// What a version is: its hash, label, manifest, size and chunk count.
    pub const VERSION: &str = "version";
    /// The version a plugin's fleet runs.
    pub const HEAD: &str = "head";
    /// A staged rollout of a candidate beside the head (shadow or canary), or its end.
    pub const ROLLOUT: &str = "rollout";
}

/// One record to write, before it meets a producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    /// The compaction key.
    pub key: String,
    /// Header name and value, in order.
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// The value.
    pub payload: Vec<u8>,
}

/// The key of chunk `index` of version `sha256` of `name`: one key per chunk, so compaction
/// never drops a chunk of a version still named by a head or kept in history.
pub fn chunk_key(name: &str, sha256: &str, index: usize) -> String {
    format!("chunk/{name}/{sha256}/{index}")
}

/// The key of version `sha256` of `name`'s description.
pub fn version_key(name: &str, sha256: &str) -> String {
    format!("version/{name}/{sha256}")
}

/// The key of `name`'s head: only the last one survives compaction.
pub fn head_key(name: &str) -> String {
    format!("head/{name}")
}

/// The key of a plugin's rollout record: compaction keeps only the latest.
pub fn rollout_key(name: &str) -> String {
    format!("rollout/{name}")
}

/// How many chunks a component of `size` bytes takes.
pub fn chunk_count(size: usize) -> usize {
    size.div_ceil(CHUNK_BYTES).max(1)
}

/// The chunk records of a component, each carrying the version's headers.
pub fn chunk_records(
    name: &str,
    bytes: &[u8],
    common: &[(&'static str, Vec<u8>)],
) -> Vec<WireRecord> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    let count = chunk_count(bytes.len());
    let pieces: Vec<&[u8]> = if bytes.is_empty() {
        vec![&[]]
    } else {
        bytes.chunks(CHUNK_BYTES).collect()
    };
    pieces
        .into_iter()
        .enumerate()
        .map(|(index, piece)| {
            let mut headers = vec![(headers::KIND, kinds::CHUNK.as_bytes().to_vec())];
            headers.extend(common.iter().cloned());
            headers.push((headers::CHUNK_INDEX, index.to_string().into_bytes()));
            headers.push((headers::CHUNK_COUNT, count.to_string().into_bytes()));
            WireRecord {
                key: chunk_key(name, &sha256, index),
                headers,
                payload: piece.to_vec(),
            }
        })
        .collect()
}

/// The chunks of one version as they arrive, in any order.
#[derive(Debug, Clone)]
pub struct Assembly {
    sha256: String,
    pieces: BTreeMap<usize, Vec<u8>>,
    count: usize,
    /// The bytes of `pieces`, together.
    held: usize,
}

/// A chunk that cannot belong to its version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Index or count out of range, or the count changed between chunks.
    #[error("chunk {index} of {count}: {reason}")]
    Shape {
        /// The chunk's index.
        index: usize,
        /// Its count.
        count: usize,
        /// What is wrong.
        reason: String,
    },
    /// Every chunk arrived and the bytes do not hash to the version's sha256.
    #[error("the {size} bytes of its chunks hash to {actual}, not to the version's {expected}")]
    Hash {
        /// The version's hash.
        expected: String,
        /// The assembled bytes' hash.
        actual: String,
        /// How many bytes.
        size: usize,
    },
}

impl Assembly {
    /// An empty assembly of the version `sha256`.
    pub fn new(sha256: &str) -> Self {
        Assembly {
            sha256: sha256.to_owned(),
            pieces: BTreeMap::new(),
            count: 0,
            held: 0,
        }
    }

    /// Adds chunk `index` of `count`. A repeated chunk (a publisher retried) replaces the first.
    pub fn insert(&mut self, index: usize, count: usize, bytes: Vec<u8>) -> Result<(), ChunkError> {
        let shape = |reason: &str| ChunkError::Shape {
            index,
            count,
            reason: reason.to_owned(),
        };
        if count == 0 || count > chunk_count(MAX_COMPONENT_BYTES) {
            return Err(shape("the count is outside 1 to the registry's limit"));
        }
        if index >= count {
            return Err(shape("the index is past the count"));
        }
        if self.count != 0 && self.count != count {
            return Err(shape("earlier chunks of the version gave another count"));
        }
        if bytes.len() > 2 * CHUNK_BYTES {
            return Err(shape("the chunk is larger than any publisher writes"));
        }
        let replaced = self.pieces.get(&index).map_or(0, Vec::len);
        let held = self.held - replaced + bytes.len();
        if held > MAX_COMPONENT_BYTES {
            return Err(shape(
                "the version's chunks add up to more than the registry takes",
            ));
        }
        self.count = count;
        self.held = held;
        self.pieces.insert(index, bytes);
        Ok(())
    }

    /// The bytes of the chunks that arrived.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Whether every chunk arrived.
    pub fn is_complete(&self) -> bool {
        self.count != 0 && self.pieces.len() == self.count
    }

    /// The component, once every chunk arrived and they hash to the version's sha256.
    pub fn bytes(&self) -> Option<Result<Vec<u8>, ChunkError>> {
        if !self.is_complete() {
            return None;
        }
        let mut bytes = Vec::with_capacity(self.held);
        for piece in self.pieces.values() {
            bytes.extend_from_slice(piece);
        }
        let actual = hex::encode(Sha256::digest(&bytes));
        Some(if actual == self.sha256 {
            Ok(bytes)
        } else {
            Err(ChunkError::Hash {
                expected: self.sha256.clone(),
                actual,
                size: bytes.len(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn index_and_count(record: &WireRecord) -> (usize, usize) {
        let header = |name| {
            let (_, value) = record.headers.iter().find(|(n, _)| *n == name).unwrap();
            String::from_utf8(value.clone()).unwrap().parse().unwrap()
        };
        (header(headers::CHUNK_INDEX), header(headers::CHUNK_COUNT))
    }

    #[test]
    fn a_component_over_a_megabyte_round_trips_in_any_order() {
        let bytes = component(3 * CHUNK_BYTES + 17);
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let mut records = chunk_records("big", &bytes, &[]);
        assert_eq!(records.len(), 4);
        assert!(records.iter().all(|r| r.payload.len() <= CHUNK_BYTES));
        let keys: std::collections::BTreeSet<&str> =
            records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys.len(), 4, "one compaction key per chunk");
        records.reverse();
        let mut assembly = Assembly::new(&sha256);
        for record in &records {
            assert!(
                assembly.bytes().is_none(),
                "incomplete until the last chunk"
            );
            let (index, count) = index_and_count(record);
            assembly
                .insert(index, count, record.payload.clone())
                .unwrap();
        }
        assert_eq!(assembly.bytes().unwrap().unwrap(), bytes);
    }

    #[test]
    fn damaged_chunks_are_refused() {
        let bytes = component(CHUNK_BYTES + 1);
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let records = chunk_records("p", &bytes, &[]);
        let mut assembly = Assembly::new(&sha256);
        assert!(assembly.insert(2, 2, vec![]).is_err(), "index past count");
        assert!(assembly.insert(0, 0, vec![]).is_err(), "no chunks");
        assembly.insert(0, 2, records[0].payload.clone()).unwrap();
        assert!(assembly.insert(1, 3, vec![]).is_err(), "count changed");
        assembly.insert(1, 2, b"tampered".to_vec()).unwrap();
        assert!(matches!(
            assembly.bytes(),
            Some(Err(ChunkError::Hash { .. }))
        ));
    }

    #[test]
    fn a_version_cannot_hold_more_than_the_registry_takes() {
        // Chunks of twice the size a publisher writes, as many as the count allows: the
        // assembly stops at the largest component, not at twice that. (Zeroed buffers are
        // mapped lazily, so the test does not touch 256 MiB.)
        let count = chunk_count(MAX_COMPONENT_BYTES);
        let mut assembly = Assembly::new("made-up");
        let fit = MAX_COMPONENT_BYTES / (2 * CHUNK_BYTES);
        for index in 0..fit {
            assembly
                .insert(index, count, vec![0; 2 * CHUNK_BYTES])
                .unwrap();
        }
        assert_eq!(assembly.held_bytes(), MAX_COMPONENT_BYTES);
        assert!(assembly.insert(fit, count, vec![0; 1]).is_err());
        // A repeated chunk replaces the first, so a smaller one fits again.
        assembly.insert(0, count, vec![0; CHUNK_BYTES]).unwrap();
        assembly.insert(fit, count, vec![0; 1]).unwrap();
        assert_eq!(assembly.held_bytes(), MAX_COMPONENT_BYTES - CHUNK_BYTES + 1);
    }

    #[test]
    fn an_empty_component_is_one_empty_chunk() {
        assert_eq!(chunk_records("e", &[], &[]).len(), 1);
        assert_eq!(chunk_count(CHUNK_BYTES), 1);
        assert_eq!(chunk_count(CHUNK_BYTES + 1), 2);
    }
}
