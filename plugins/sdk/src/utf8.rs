//! UTF-8 validation of record values with an ASCII fast path. JSON is nearly all ASCII, and
//! `core::str::from_utf8` reads it a machine word pair at a time: eight bytes on wasm32, where
//! every loop iteration also checks the host's deadline. Reading sixteen bytes per iteration
//! through 64-bit words (which Wasm has even on wasm32) halves those iterations, and a name
//! with an accent early in a record does not send the rest of it down the slow path.

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// `bytes` as text if they are valid UTF-8. ASCII is skipped sixteen bytes at a time; each run
/// of bytes that are not ASCII goes through `core::str::from_utf8`, so the rules (overlong
/// forms, surrogates, the U+10FFFF ceiling) stay core's.
pub fn from_utf8(bytes: &[u8]) -> Option<&str> {
    let mut at = 0;
    while at < bytes.len() {
        if let Some(chunk) = bytes.get(at..at + 16) {
            let (low, high) = chunk.split_at(8);
            let word = u64::from_le_bytes(low.try_into().expect("eight bytes"))
                | u64::from_le_bytes(high.try_into().expect("eight bytes"));
            if word & HIGH_BITS == 0 {
                at += 16;
                continue;
            }
        }
        if bytes[at].is_ascii() {
            at += 1;
            continue;
        }
        // A run of non-ASCII bytes goes to core in one call. An ASCII byte is never part of a
        // multi-byte character, so the run ends at a character boundary if the text is valid,
        // and a character cut short by the run's end is invalid whatever follows it.
        let run_end = bytes[at..]
            .iter()
            .position(u8::is_ascii)
            .map_or(bytes.len(), |offset| at + offset);
        std::str::from_utf8(&bytes[at..run_end]).ok()?;
        at = run_end;
    }
    // SAFETY: every byte was checked above, as ASCII or within a run core accepted, and each run
    // is bounded by ASCII bytes, which no character spans: the whole is valid UTF-8.
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
        // Characters of every length spread through long ASCII runs, and sequences core
        // refuses: overlong, surrogate, above U+10FFFF, truncated, a stray continuation byte.
        let spread = format!("{0}é{0}東{0}🦀{0}", "x".repeat(21));
        cases.push(spread.as_bytes().to_vec());
        for bad in [
            &[0xC0, 0xAF][..],
            &[0xE0, 0x80, 0xAF],
            &[0xED, 0xA0, 0x80],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0xF8, 0x88, 0x80, 0x80],
            &[0xE6, 0x9D],
            &[0x80],
        ] {
            for offset in [0, 5, 16, 30] {
                let mut bytes = spread.as_bytes().to_vec();
                bytes.splice(offset..offset, bad.iter().copied());
                cases.push(bytes);
            }
        }
        // Long runs with no ASCII, and characters cut short by an ASCII byte.
        cases.push("東京都渋谷区神南".repeat(6).into_bytes());
        cases.push(format!("{}x{}", "Ελληνικά".repeat(4), "🦀".repeat(9)).into_bytes());
        cases.push(vec![0xE6, b'a', 0x9D, 0xB1]);
        cases.push(vec![0xF0, 0x9F, b'"', 0xA6, 0x80]);
        for bytes in &cases {
            assert_eq!(
                from_utf8(bytes),
                std::str::from_utf8(bytes).ok(),
                "{bytes:?}"
            );
        }
    }
}
