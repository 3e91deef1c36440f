//! Copies of the records a source reads, packed into shared chunks. A source copies each record
//! out of a buffer it does not keep (librdkafka owns a message's bytes only until the next poll;
//! the file source reuses its line buffer). Copying each into its own allocation cost a `malloc`
//! on the reading thread and a `free` on whichever worker dropped the record, and a value over
//! glibc's 1,032-byte thread cache takes the allocator's slow bins both times. Here a run of
//! records shares one allocation, freed when its last record is.

use bytes::{Bytes, BytesMut};

/// The size of each shared chunk.
pub(crate) const SLAB_BYTES: usize = 16 << 10;
/// Bytes larger than this get an allocation of their own: a large payload would leave most of
/// a chunk unused, and would keep its neighbours' memory alive as long as itself.
pub(crate) const OWN_ALLOCATION_ABOVE: usize = SLAB_BYTES / 8;

/// The chunk being filled.
#[derive(Debug, Default)]
pub(crate) struct Slab {
    /// The unused rest of the current chunk (empty, with the free capacity).
    free: BytesMut,
}

impl Slab {
    /// A copy of `bytes`, sharing a chunk with the copies made before it where it fits.
    pub(crate) fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if bytes.is_empty() {
            return Bytes::new();
        }
        if bytes.len() > OWN_ALLOCATION_ABOVE {
            return Bytes::copy_from_slice(bytes);
        }
        if self.free.capacity() < bytes.len() {
            // The old chunk lives on in the records cut from it; this handle lets go of it.
            self.free = BytesMut::with_capacity(SLAB_BYTES);
        }
        self.free.extend_from_slice(bytes);
        self.free.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_copies_share_a_chunk_and_keep_their_bytes() {
        let mut slab = Slab::default();
        let first = slab.copy(b"first");
        let second = slab.copy(b"second");
        assert_eq!(first, &b"first"[..]);
        assert_eq!(second, &b"second"[..]);
        assert_eq!(
            second.as_ptr(),
            first.as_ptr().wrapping_add(first.len()),
            "one chunk, packed"
        );
        drop(first);
        let third = slab.copy(b"third");
        assert_eq!(second, &b"second"[..], "a later copy never overwrites");
        assert_eq!(third, &b"third"[..]);
    }

    #[test]
    fn a_full_chunk_is_followed_by_a_new_one_and_large_copies_stand_alone() {
        let mut slab = Slab::default();
        let payload = vec![7u8; OWN_ALLOCATION_ABOVE];
        let copies: Vec<Bytes> = (0..SLAB_BYTES / payload.len() + 2)
            .map(|_| slab.copy(&payload))
            .collect();
        assert!(copies.iter().all(|copy| copy == &payload));
        let chunks = copies
            .windows(2)
            .filter(|pair| pair[1].as_ptr() != pair[0].as_ptr().wrapping_add(pair[0].len()))
            .count();
        assert_eq!(chunks, 1, "a new chunk once the first filled up");
        let large = vec![1u8; OWN_ALLOCATION_ABOVE + 1];
        let alone = slab.copy(&large);
        let next = slab.copy(b"small");
        assert_eq!(alone, large);
        assert!(
            !alone.as_ptr_range().contains(&next.as_ptr()),
            "a large copy has its own allocation"
        );
        assert!(slab.copy(b"").is_empty());
    }
}
