//! The string scans the JSON reader and writer share: a string is searched for `"`, `\` and
//! control bytes sixteen bytes a step ([`crate::vector`]'s blocks), and eight at a time in a
//! `u64` where fewer are left, as Wasm and native alike.

use crate::vector::{block_at, first_stop, has_special};

/// `0x01` in every byte.
pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
/// The top bit of every byte.
pub(crate) const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The top bit of each byte that is zero, and possibly of bytes above one (the classic bit
/// trick: the lowest flagged byte is always exact).
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGH_BITS
}

/// The top bit of each byte of `word` that is below 0x20, `"` or `\` (exact for the lowest).
pub(crate) fn string_specials(word: u64) -> u64 {
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH_BITS;
    control
        | zero_bytes(word ^ (ONES * u64::from(b'"')))
        | zero_bytes(word ^ (ONES * u64::from(b'\\')))
}

/// The top bit of each byte of `word` that ends a run of plain string text (exact for the
/// lowest): below 0x20, `"`, `\`, or not ASCII.
pub(crate) fn string_stops(word: u64) -> u64 {
    string_specials(word) | (word & HIGH_BITS)
}

/// The eight bytes at `at` as a little-endian word, if there are eight.
pub(crate) fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let word = bytes.get(at..at + 8)?;
    Some(u64::from_le_bytes(word.try_into().expect("eight bytes")))
}

/// The index of the first byte at or after `from` that ends a run of plain string text: below
/// 0x20, `"`, `\`, or not ASCII (so that the caller can check UTF-8 only where it is needed);
/// `bytes.len()` when there is none.
///
/// The first block is tested before any loop. As Wasm every loop costs a deadline check each
/// time it is entered, not only per turn, and most strings of a record end in their first
/// sixteen bytes.
#[inline]
pub(crate) fn find_string_stop(bytes: &[u8], from: usize) -> usize {
    if let Some(block) = block_at(bytes, from) {
        let stop = first_stop(block);
        if stop < 16 {
            return from + stop;
        }
    }
    find_string_stop_after_first_block(bytes, from)
}

/// [`find_string_stop`] past a first block without a stop, or where fewer than sixteen bytes
/// are left.
#[inline(never)]
fn find_string_stop_after_first_block(bytes: &[u8], mut from: usize) -> usize {
    if bytes.len() >= from + 16 {
        from += 16;
    }
    while let Some(block) = block_at(bytes, from) {
        let stop = first_stop(block);
        if stop < 16 {
            return from + stop;
        }
        from += 16;
    }
    if let Some(word) = word_at(bytes, from) {
        let stops = string_stops(word);
        if stops != 0 {
            return from + (stops.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    while let Some(&byte) = bytes.get(from) {
        if byte < 0x20 || byte == b'"' || byte == b'\\' || !byte.is_ascii() {
            return from;
        }
        from += 1;
    }
    from
}

/// Whether `bytes` holds a byte below 0x20, `"` or `\`: a string JSON must escape. Up to 16
/// bytes are settled without a loop, by words that overlap (a byte tested twice is harmless
/// in a yes-or-no question), and longer strings by one loop of blocks whose last block
/// overlaps.
pub(crate) fn has_string_specials(bytes: &[u8]) -> bool {
    let len = bytes.len();
    let word = |at: usize| word_at(bytes, at).expect("eight bytes");
    match len {
        0 => false,
        1..=3 => {
            // The first, middle and last bytes are every byte; the rest is plain padding.
            let pad = b'a';
            let bytes = [
                bytes[0],
                bytes[len / 2],
                bytes[len - 1],
                pad,
                pad,
                pad,
                pad,
                pad,
            ];
            string_specials(u64::from_le_bytes(bytes)) != 0
        }
        4..=7 => {
            let half =
                |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
            let word = u64::from(half(0)) | (u64::from(half(len - 4)) << 32);
            string_specials(word) != 0
        }
        8..=16 => string_specials(word(0)) | string_specials(word(len - 8)) != 0,
        _ => {
            let block = |at: usize| block_at(bytes, at).expect("sixteen bytes");
            let mut at = 0;
            while at + 16 < len {
                if has_special(block(at)) {
                    return true;
                }
                at += 16;
            }
            has_special(block(len - 16))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_stop_byte_at_every_offset() {
        for special in [b'"', b'\\', 0, 0x1f, 0x80, 0xc3, 0xff] {
            for len in 0..40 {
                for at in 0..=len {
                    let mut bytes = vec![b'a'; len];
                    // Plain ASCII either side of the stop byte, 0x20 and 0x7f included.
                    for (i, byte) in bytes.iter_mut().enumerate() {
                        *byte = [b'a', 0x20, 0x7f, b'!', b'#'][i % 5];
                    }
                    if at < len {
                        bytes[at] = special;
                        // A second special after the first must not hide it.
                        if at + 1 < len {
                            bytes[at + 1] = b'"';
                        }
                    }
                    assert_eq!(find_string_stop(&bytes, 0), at, "{bytes:?}");
                    // From every start, so the stop falls in the first word or after it.
                    for from in 0..=len {
                        let naive = (from..len)
                            .find(|&i| {
                                let b = bytes[i];
                                b < 0x20 || b == b'"' || b == b'\\' || !b.is_ascii()
                            })
                            .unwrap_or(len);
                        assert_eq!(
                            find_string_stop(&bytes, from),
                            naive,
                            "{bytes:?} from {from}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn has_string_specials_finds_one_byte_at_any_place_in_any_length() {
        let plain = [b'a', 0x20, 0x7f, b'!', b'#', 0x80, 0xc3, 0xff];
        for len in 0..40 {
            let text: Vec<u8> = (0..len).map(|i| plain[i % plain.len()]).collect();
            assert!(!has_string_specials(&text), "{text:?}");
            for at in 0..len {
                for special in [b'"', b'\\', 0, 0x1f] {
                    let mut text = text.clone();
                    text[at] = special;
                    assert!(has_string_specials(&text), "{special} at {at} of {len}");
                }
            }
        }
    }
}
