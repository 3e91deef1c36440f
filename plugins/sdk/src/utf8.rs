//! UTF-8 validation of record values with an ASCII fast path. JSON is nearly all ASCII, and
//! `core::str::from_utf8` reads it a machine word pair at a time: eight bytes on wasm32, where
//! every loop iteration also checks the host's deadline. Reading sixteen bytes per iteration
//! through 64-bit words (which Wasm has even on wasm32) halves those iterations.

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// `bytes` as text if they are valid UTF-8: the ASCII prefix is skipped sixteen bytes at a
/// time and only the rest goes through `core::str::from_utf8`.
pub fn from_utf8(bytes: &[u8]) -> Option<&str> {
    let mut ascii = 0;
    while let Some(chunk) = bytes.get(ascii..ascii + 16) {
        let (low, high) = chunk.split_at(8);
        let word = u64::from_le_bytes(low.try_into().expect("eight bytes"))
            | u64::from_le_bytes(high.try_into().expect("eight bytes"));
        if word & HIGH_BITS != 0 {
            break;
        }
        ascii += 16;
    }
    std::str::from_utf8(&bytes[ascii..]).ok()?;
    // SAFETY: `bytes[..ascii]` is ASCII and `bytes[ascii..]` was just checked; an ASCII byte is a
    // whole character, so no character spans the split and the whole is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_core_on_text_invalid_bytes_and_every_split_point() {
        let text =
            "{\"name\":\"Zoë Ødegård\",\"city\":\"東京\",\"emoji\":\"🦀\"} and some ASCII padding";
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), text.as_bytes().to_vec()];
        // Every prefix: cuts inside multi-byte characters are invalid, and must stay so.
        cases.extend((0..text.len()).map(|end| text.as_bytes()[..end].to_vec()));
        // A bad byte at every position, in the ASCII prefix and after it.
        for at in 0..text.len() {
            for bad in [0x80, 0xC0, 0xFF] {
                let mut bytes = text.as_bytes().to_vec();
                bytes[at] = bad;
                cases.push(bytes);
            }
        }
        // Long ASCII runs with a non-ASCII character at each offset of a 16-byte chunk.
        for at in 0..40 {
            let mut bytes = vec![b'a'; 48];
            bytes.splice(at..at + 2, "é".bytes());
            cases.push(bytes);
        }
        for bytes in &cases {
            assert_eq!(
                from_utf8(bytes),
                std::str::from_utf8(bytes).ok(),
                "{bytes:?}"
            );
        }
    }
}
