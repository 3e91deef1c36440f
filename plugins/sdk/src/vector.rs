//! Sixteen bytes tested in one step: the block tests behind the JSON reader's and writer's string
//! scans. x86_64 always has 128-bit vectors (SSE2); Wasm has them when the plugin is built with
//! `simd128`, as `weir plugin build` does. Anywhere else two `swar` words stand in, so a plugin
//! built by plain `cargo` scans as fast as before.

/// The index (0 to 15) of the first byte of `block` that ends a run of plain string text: below
/// 0x20, `"`, `\`, or not ASCII; 16 when there is none.
#[inline(always)]
pub(crate) fn first_stop(block: &[u8; 16]) -> usize {
    imp::first_stop(block)
}

/// Whether `block` holds a byte below 0x20, `"` or `\`: one JSON must escape.
#[inline(always)]
pub(crate) fn has_special(block: &[u8; 16]) -> bool {
    imp::has_special(block)
}

/// The sixteen bytes at `at`, if there are sixteen.
#[inline(always)]
pub(crate) fn block_at(bytes: &[u8], at: usize) -> Option<&[u8; 16]> {
    bytes.get(at..at.checked_add(16)?)?.try_into().ok()
}

#[cfg(target_arch = "x86_64")]
mod imp {
    // SAFETY (every `unsafe` below): SSE2 is part of every x86_64 target, so its intrinsics
    // can always run; the loads read the sixteen bytes of a `&[u8; 16]`, and `loadu` has no
    // alignment requirement.
    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8,
    };

    /// The bytes equal to `"` or `\`, as a lane mask.
    #[inline(always)]
    unsafe fn quote_or_backslash(bytes: __m128i) -> __m128i {
        unsafe {
            _mm_or_si128(
                _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8)),
                _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8)),
            )
        }
    }

    #[inline(always)]
    pub(super) fn first_stop(block: &[u8; 16]) -> usize {
        let mask = unsafe {
            let bytes = _mm_loadu_si128(block.as_ptr().cast());
            // Read as signed, the bytes below 0x20 and those of 0x80 and above are exactly the
            // ones less than 0x20: one comparison for both.
            let control_or_not_ascii = _mm_cmplt_epi8(bytes, _mm_set1_epi8(0x20));
            _mm_movemask_epi8(_mm_or_si128(
                control_or_not_ascii,
                quote_or_backslash(bytes),
            ))
        };
        (mask as u32 | 1 << 16).trailing_zeros() as usize
    }

    #[inline(always)]
    pub(super) fn has_special(block: &[u8; 16]) -> bool {
        let mask = unsafe {
            let bytes = _mm_loadu_si128(block.as_ptr().cast());
            // Unsigned: a byte is below 0x20 when the smaller of it and 0x1f is itself.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(bytes, _mm_set1_epi8(0x1f)), bytes);
            _mm_movemask_epi8(_mm_or_si128(control, quote_or_backslash(bytes)))
        };
        mask != 0
    }
}

#[cfg(all(target_family = "wasm", target_feature = "simd128"))]
mod imp {
    use core::arch::wasm32::{
        i8x16_bitmask, i8x16_eq, i8x16_lt, i8x16_splat, u8x16_lt, u8x16_splat, v128, v128_any_true,
        v128_load, v128_or,
    };

    #[inline(always)]
    fn load(block: &[u8; 16]) -> v128 {
        // SAFETY: `block` is sixteen readable bytes, and `v128_load` loads with alignment 1.
        unsafe { v128_load(block.as_ptr().cast()) }
    }

    /// The bytes equal to `"` or `\`, as a lane mask.
    #[inline(always)]
    fn quote_or_backslash(bytes: v128) -> v128 {
        v128_or(
            i8x16_eq(bytes, i8x16_splat(b'"' as i8)),
            i8x16_eq(bytes, i8x16_splat(b'\\' as i8)),
        )
    }

    #[inline(always)]
    pub(super) fn first_stop(block: &[u8; 16]) -> usize {
        let bytes = load(block);
        // Read as signed, the bytes below 0x20 and those of 0x80 and above are exactly the
        // ones less than 0x20: one comparison for both.
        let control_or_not_ascii = i8x16_lt(bytes, i8x16_splat(0x20));
        let stops = v128_or(control_or_not_ascii, quote_or_backslash(bytes));
        let mask = u32::from(i8x16_bitmask(stops)) | 1 << 16;
        mask.trailing_zeros() as usize
    }

    #[inline(always)]
    pub(super) fn has_special(block: &[u8; 16]) -> bool {
        let bytes = load(block);
        let control = u8x16_lt(bytes, u8x16_splat(0x20));
        v128_any_true(v128_or(control, quote_or_backslash(bytes)))
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_family = "wasm", target_feature = "simd128")
)))]
use words as imp;

/// The blocks as two words each, for targets without vectors (compiled for tests everywhere).
#[cfg(any(
    test,
    not(any(
        target_arch = "x86_64",
        all(target_family = "wasm", target_feature = "simd128")
    ))
))]
mod words {
    use crate::swar::{string_specials, string_stops, word_at};

    /// The two little-endian words of `block`.
    #[inline(always)]
    fn words(block: &[u8; 16]) -> (u64, u64) {
        let word = |at| word_at(block, at).expect("sixteen bytes hold two words");
        (word(0), word(8))
    }

    #[inline(always)]
    pub(crate) fn first_stop(block: &[u8; 16]) -> usize {
        let (low, high) = words(block);
        let low = string_stops(low);
        if low != 0 {
            return (low.trailing_zeros() / 8) as usize;
        }
        // A word without a stop has 64 trailing zeros: 8 + 8 = 16.
        8 + (string_stops(high).trailing_zeros() / 8) as usize
    }

    #[inline(always)]
    pub(crate) fn has_special(block: &[u8; 16]) -> bool {
        let (low, high) = words(block);
        string_specials(low) | string_specials(high) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_stop(byte: u8) -> bool {
        byte < 0x20 || byte == b'"' || byte == b'\\' || !byte.is_ascii()
    }

    /// Checks a pair of block tests against the byte loop, for every byte value in every lane.
    fn judge_every_byte_in_every_lane(
        first_stop: fn(&[u8; 16]) -> usize,
        has_special: fn(&[u8; 16]) -> bool,
    ) {
        for byte in 0..=u8::MAX {
            for lane in 0..16 {
                let mut block = [b'a'; 16];
                block[lane] = byte;
                let stop = if is_stop(byte) { lane } else { 16 };
                assert_eq!(first_stop(&block), stop, "byte {byte:#x} in lane {lane}");
                let special = byte < 0x20 || byte == b'"' || byte == b'\\';
                assert_eq!(
                    has_special(&block),
                    special,
                    "byte {byte:#x} in lane {lane}"
                );
                // A later stop never hides an earlier one.
                if lane < 15 {
                    block[lane + 1] = b'"';
                    let stop = if is_stop(byte) { lane } else { lane + 1 };
                    assert_eq!(first_stop(&block), stop, "byte {byte:#x} in lane {lane}");
                }
            }
        }
    }

    #[test]
    fn every_byte_value_at_every_lane_is_judged_as_the_byte_loop_would() {
        judge_every_byte_in_every_lane(first_stop, has_special);
    }

    #[test]
    fn the_two_word_stand_in_judges_as_the_vectors_do() {
        judge_every_byte_in_every_lane(words::first_stop, words::has_special);
    }

    #[test]
    fn a_block_is_taken_only_where_sixteen_bytes_remain() {
        let bytes = [b'x'; 20];
        assert!(block_at(&bytes, 4).is_some());
        assert!(block_at(&bytes, 5).is_none());
        assert!(block_at(&bytes, usize::MAX).is_none());
    }
}
