//! Decimal text to the CQL encodings of `varint` and `decimal`: a two's-complement big-endian
//! integer of any size, and that with a scale. JSON numbers past `f64` come as text, so this
//! reads digits exactly instead of through a float.

/// Most digits read for one `varint` or `decimal`: past a 128-bit integer or SQL's 38-digit
/// numerics, and few enough that converting them (quadratic in the digits) costs a
/// microsecond, so that even a record of a megabyte of such numbers in a list is read quickly.
pub const MAX_DIGITS: usize = 100;

/// A number read as an unscaled integer and a scale: `value = unscaled * 10^-scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaled {
    /// The unscaled integer, two's-complement big-endian, in as few bytes as hold its sign.
    pub unscaled: Vec<u8>,
    /// Digits after the decimal point (negative for a power of ten above one).
    pub scale: i32,
}

/// Reads an integer (`-12`, `+7`, `0`) exactly, as `varint` bytes.
pub fn integer(text: &str) -> Option<Vec<u8>> {
    let (negative, digits) = split_sign(text);
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(signed_be_bytes(negative, digits.as_bytes()))
}

/// Reads a decimal number (`-12.50`, `1e-3`, `6.02E23`) exactly, as `decimal` parts.
pub fn decimal(text: &str) -> Option<Scaled> {
    let (negative, rest) = split_sign(text);
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (mantissa, ""),
    };
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !all_digits(whole)
        || !all_digits(fraction)
        || whole.len() + fraction.len() > MAX_DIGITS
    {
        return None;
    }
    let exponent: i32 = match exponent {
        Some(exponent) => {
            let (negative, digits) = split_sign(exponent);
            if digits.is_empty() || digits.len() > 9 || !all_digits(digits) {
                return None;
            }
            let magnitude: i32 = digits.parse().ok()?;
            if negative { -magnitude } else { magnitude }
        }
        None => 0,
    };
    let scale = i32::try_from(fraction.len()).ok()?.checked_sub(exponent)?;
    let mut digits = Vec::with_capacity(whole.len() + fraction.len());
    digits.extend_from_slice(whole.as_bytes());
    digits.extend_from_slice(fraction.as_bytes());
    Some(Scaled {
        unscaled: signed_be_bytes(negative, &digits),
        scale,
    })
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

/// Decimal digits (ASCII) to a two's-complement big-endian integer in as few bytes as keep its
/// sign.
fn signed_be_bytes(negative: bool, digits: &[u8]) -> Vec<u8> {
    // The magnitude, little-endian base 256, built digit by digit.
    let mut magnitude: Vec<u8> = vec![0];
    for digit in digits {
        let mut carry = u32::from(digit - b'0');
        for byte in &mut magnitude {
            let value = u32::from(*byte) * 10 + carry;
            *byte = (value & 0xff) as u8;
            carry = value >> 8;
        }
        if carry > 0 {
            magnitude.push(carry as u8);
        }
    }
    // One byte more than the magnitude needs always holds the sign.
    magnitude.push(0);
    if negative && magnitude.iter().any(|&b| b != 0) {
        let mut carry = true;
        for byte in &mut magnitude {
            let (sum, overflow) = (!*byte).overflowing_add(u8::from(carry));
            *byte = sum;
            carry = overflow;
        }
    }
    magnitude.reverse();
    // Drop leading bytes that only repeat the sign of the byte after them.
    let redundant = magnitude
        .windows(2)
        .take_while(|pair| {
            (pair[0] == 0x00 && pair[1] & 0x80 == 0) || (pair[0] == 0xff && pair[1] & 0x80 != 0)
        })
        .count();
    magnitude.drain(..redundant);
    magnitude
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of two's-complement big-endian bytes, for the cases that fit an i128.
    fn value(bytes: &[u8]) -> i128 {
        let mut value: i128 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
        for &byte in bytes {
            value = (value << 8) | i128::from(byte);
        }
        value
    }

    #[test]
    fn integers_are_exact_and_minimal() {
        for n in [
            0_i128,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            256,
            -32768,
            i128::from(i64::MAX) * 1000 + 7,
            -(i128::from(u64::MAX)) * 3,
        ] {
            let bytes = integer(&n.to_string()).unwrap();
            assert_eq!(value(&bytes), n, "{n}: {bytes:?}");
            let minimal = n.to_be_bytes();
            let needed = minimal.len()
                - minimal
                    .windows(2)
                    .take_while(|p| (p[0] == 0 && p[1] < 0x80) || (p[0] == 0xff && p[1] >= 0x80))
                    .count();
            assert_eq!(bytes.len(), needed, "{n}: {bytes:?}");
        }
        assert_eq!(integer("+5"), integer("5"));
        assert_eq!(integer("-0"), Some(vec![0]));
        assert_eq!(integer("007"), Some(vec![7]));
        for bad in ["", "-", "1.5", "1e3", " 1", "0x10", "١"] {
            assert_eq!(integer(bad), None, "{bad:?}");
        }
        assert!(integer(&"9".repeat(MAX_DIGITS)).is_some());
        assert_eq!(integer(&"9".repeat(MAX_DIGITS + 1)), None);
    }

    #[test]
    fn decimals_keep_every_digit_and_their_scale() {
        let read = |text: &str| {
            let scaled = decimal(text).unwrap();
            (value(&scaled.unscaled), scaled.scale)
        };
        assert_eq!(read("12.50"), (1250, 2));
        assert_eq!(read("-0.001"), (-1, 3));
        assert_eq!(read("6.02E23"), (602, -21));
        assert_eq!(read("1e-3"), (1, 3));
        assert_eq!(read("100"), (100, 0));
        assert_eq!(read(".5"), (5, 1));
        assert_eq!(read("5."), (5, 0));
        assert_eq!(
            read("123456789012345678901234567890.123456789"),
            (123_456_789_012_345_678_901_234_567_890_123_456_789, 9)
        );
        for bad in [
            "",
            ".",
            "-",
            "1e",
            "e5",
            "1.2.3",
            "1e+",
            "--1",
            "1e9999999999",
            "NaN",
        ] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }
}
