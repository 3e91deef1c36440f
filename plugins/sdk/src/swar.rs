//! Eight bytes at a time in a `u64`: the word tests the JSON reader and writer share, so that a
//! string is scanned for `"`, `\` and control bytes in one step per word, as Wasm and native alike.

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

/// The index of the first byte at or after `from` that ends a run of plain string text: below
/// 0x20, `"`, `\`, or not ASCII (so that the caller can check UTF-8 only where it is needed);
/// `bytes.len()` when there is none.
pub(crate) fn find_string_stop(bytes: &[u8], mut from: usize) -> usize {
    while let Some(word) = bytes.get(from..from + 8) {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let stops = string_specials(word) | (word & HIGH_BITS);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_stop_byte_at_every_offset() {
        for special in [b'"', b'\\', 0, 0x1f, 0x80, 0xc3, 0xff] {
            for len in 0..20 {
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
                }
            }
        }
    }
}
