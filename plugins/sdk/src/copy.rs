//! Appending short byte strings without `memcpy`. Compiled to Wasm with bulk memory (the
//! wasm32-wasip2 default), every copy of a length not known at compile time becomes a
//! `memory.copy` instruction, which wasmtime runs as a call out of the guest into the host's
//! `memmove`; for the 5 to 30 bytes of a typical JSON string that call costs more than the copy.
//! Up to 64 bytes are copied here with overlapping loads and stores instead, with no loop (as
//! Wasm a loop also checks the host's deadline on entry): sixteen-byte blocks, one vector load
//! or store each where the plugin is built with `simd128` (as `weir plugin build` does), and
//! words below sixteen bytes.

/// Up to this many bytes are copied by blocks and words; longer slices go to
/// `extend_from_slice`. 64 covers a UUID key, an email address or a picture's URL, each of
/// which went out of the guest to `memmove` at the old limit of 32.
const WORD_COPY_LIMIT: usize = 64;

/// Appends `text` to `out`, as `out.push_str(text)` does; for the short pieces a plugin joins
/// per record (an address from its parts, say).
#[inline]
pub fn push_str(out: &mut String, text: &str) {
    // SAFETY: only the bytes of a `str` are appended, so `out` stays UTF-8.
    append(unsafe { out.as_mut_vec() }, text.as_bytes());
}

/// Appends `bytes` to `out`, as `out.extend_from_slice(bytes)` does.
#[inline]
pub fn append(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() > WORD_COPY_LIMIT {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(bytes.len());
    let start = out.len();
    // SAFETY: `reserve` left room for `bytes.len()` more bytes after `start`; `copy_short`
    // writes exactly the bytes `start..start + bytes.len()` of that room, all of them, before
    // the length covers them. `bytes` cannot overlap `out`'s spare capacity (it is borrowed
    // while `out` is borrowed mutably).
    unsafe {
        copy_short(bytes, out.as_mut_ptr().add(start));
        out.set_len(start + bytes.len());
    }
}

/// Appends `open`, `bytes` and `close` (a JSON string between its quotes, or a key between its
/// opening quote and `":`) with one reservation, where `push`, [`append`] and `push` would
/// check the capacity three times.
#[inline]
pub(crate) fn append_enclosed<const CLOSE: usize>(
    out: &mut Vec<u8>,
    open: u8,
    bytes: &[u8],
    close: [u8; CLOSE],
) {
    let len = bytes.len();
    let total = 1 + len + CLOSE;
    out.reserve(total);
    let start = out.len();
    // SAFETY: `reserve` left room for `total` more bytes after `start`; exactly the bytes
    // `start..start + total` are written, all of them, before the length covers them. `bytes`
    // and `close` cannot overlap `out`'s spare capacity (`bytes` is borrowed while `out` is
    // borrowed mutably, `close` is a local).
    unsafe {
        let at = out.as_mut_ptr().add(start);
        at.write(open);
        if len <= WORD_COPY_LIMIT {
            copy_short(bytes, at.add(1));
        } else {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at.add(1), len);
        }
        std::ptr::copy_nonoverlapping(close.as_ptr(), at.add(1 + len), CLOSE);
        out.set_len(start + total);
    }
}

/// Copies `source` (at most [`WORD_COPY_LIMIT`] bytes) to `target`: four sixteen-byte blocks
/// that overlap cover 33 to 64 bytes, two 17 to 32, two words 8 to 16, two half-words 4 to 7,
/// and three single bytes 1 to 3.
///
/// # Safety
/// `target` must be valid for writes of `source.len()` bytes and not overlap `source`.
#[inline]
unsafe fn copy_short(source: &[u8], target: *mut u8) {
    let len = source.len();
    debug_assert!(len <= WORD_COPY_LIMIT);
    // SAFETY (every block): each read lies inside `source` and each write inside
    // `target..target + len`, by the length tests that guard it.
    unsafe {
        if len > 16 {
            let first = read_block(source, 0);
            let last = read_block(source, len - 16);
            if len > 32 {
                let second = read_block(source, 16);
                let before_last = read_block(source, len - 32);
                target.add(16).cast::<Block>().write_unaligned(second);
                target
                    .add(len - 32)
                    .cast::<Block>()
                    .write_unaligned(before_last);
            }
            target.cast::<Block>().write_unaligned(first);
            target.add(len - 16).cast::<Block>().write_unaligned(last);
        } else if len >= 8 {
            let first = read_u64(source, 0);
            let last = read_u64(source, len - 8);
            target.cast::<u64>().write_unaligned(first);
            target.add(len - 8).cast::<u64>().write_unaligned(last);
        } else if len >= 4 {
            let first = read_u32(source, 0);
            let last = read_u32(source, len - 4);
            target.cast::<u32>().write_unaligned(first);
            target.add(len - 4).cast::<u32>().write_unaligned(last);
        } else if len > 0 {
            let source = source.as_ptr();
            *target = *source;
            *target.add(len / 2) = *source.add(len / 2);
            *target.add(len - 1) = *source.add(len - 1);
        }
    }
}

/// Sixteen bytes, moved as one value: a vector load and store as Wasm with `simd128`, and
/// natively.
type Block = [u8; 16];

/// The sixteen bytes of `bytes` at `at`, as one block.
///
/// # Safety
/// `at + 16` must not exceed `bytes.len()`.
#[inline(always)]
unsafe fn read_block(bytes: &[u8], at: usize) -> Block {
    debug_assert!(at + 16 <= bytes.len());
    // SAFETY: the caller keeps the sixteen bytes inside `bytes`.
    unsafe { bytes.as_ptr().add(at).cast::<Block>().read_unaligned() }
}

/// The eight bytes of `bytes` at `at`, as one word.
///
/// # Safety
/// `at + 8` must not exceed `bytes.len()`.
#[inline(always)]
unsafe fn read_u64(bytes: &[u8], at: usize) -> u64 {
    debug_assert!(at + 8 <= bytes.len());
    // SAFETY: the caller keeps the eight bytes inside `bytes`.
    unsafe { bytes.as_ptr().add(at).cast::<u64>().read_unaligned() }
}

/// The four bytes of `bytes` at `at`, as one word.
///
/// # Safety
/// `at + 4` must not exceed `bytes.len()`.
#[inline(always)]
unsafe fn read_u32(bytes: &[u8], at: usize) -> u32 {
    debug_assert!(at + 4 <= bytes.len());
    // SAFETY: the caller keeps the four bytes inside `bytes`.
    unsafe { bytes.as_ptr().add(at).cast::<u32>().read_unaligned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check(out, bytes, what)` for every length up to past the word copies, after 0 to
    /// 8 bytes the vector held, with the vector exactly full (so the append must grow it) and
    /// with room.
    fn for_every_length_and_start(mut check: impl FnMut(Vec<u8>, &[u8], String)) {
        for len in 0..=WORD_COPY_LIMIT + 9 {
            let bytes: Vec<u8> = (0..len).map(|index| (index * 7 + 1) as u8).collect();
            for held in [0, 1, 5, 8] {
                for room in [0, 64] {
                    let mut out = Vec::with_capacity(held + room);
                    out.extend((0..held).map(|index| 200 + index as u8));
                    check(
                        out,
                        &bytes,
                        format!("length {len} after {held} bytes, room {room}"),
                    );
                }
            }
        }
    }

    #[test]
    fn every_length_is_appended_whole_after_what_the_vector_held() {
        for_every_length_and_start(|mut out, bytes, what| {
            let mut expected = out.clone();
            append(&mut out, bytes);
            expected.extend_from_slice(bytes);
            assert_eq!(out, expected, "{what}");
        });
    }

    #[test]
    fn enclosed_bytes_are_appended_whole_between_their_delimiters_at_every_length() {
        for_every_length_and_start(|mut out, bytes, what| {
            let mut expected = out.clone();
            append_enclosed(&mut out, b'<', bytes, *b">");
            append_enclosed(&mut out, b'(', bytes, *b"):");
            for (open, close) in [(&b"<"[..], &b">"[..]), (b"(", b"):")] {
                expected.extend_from_slice(open);
                expected.extend_from_slice(bytes);
                expected.extend_from_slice(close);
            }
            assert_eq!(out, expected, "{what}");
        });
    }

    #[test]
    fn text_is_pushed_whole_at_every_length_and_stays_text() {
        let alphabet = "aé€😀";
        for len in 0..=WORD_COPY_LIMIT + 5 {
            let piece: String = alphabet.chars().cycle().take(len).collect();
            let mut out = String::from("x");
            push_str(&mut out, &piece);
            assert_eq!(out, format!("x{piece}"), "{len} characters");
        }
    }

    #[test]
    fn bytes_past_the_appended_ones_are_not_written() {
        const ROOM: usize = WORD_COPY_LIMIT + 8;
        for len in 0..=WORD_COPY_LIMIT {
            let bytes = vec![0xAB; len];
            let mut out = vec![0xEE; ROOM];
            out.clear();
            append(&mut out, &bytes);
            assert_eq!(out.len(), len);
            // The spare capacity still holds what was there: the copy wrote only its bytes.
            // SAFETY: the capacity is at least ROOM and ROOM bytes were initialised above.
            let whole = unsafe { std::slice::from_raw_parts(out.as_ptr(), ROOM) };
            assert!(
                whole[..len].iter().all(|&byte| byte == 0xAB),
                "length {len}"
            );
            assert!(
                whole[len..].iter().all(|&byte| byte == 0xEE),
                "length {len}"
            );
        }
    }
}
