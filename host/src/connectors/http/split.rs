//! Splits a JSON response into items without building a tree of it: the body is checked as
//! strictly as `serde_json::Value` parsing checks it, the array at a JSON pointer is found as
//! borrowed slices of the body, and each item is written as `Value::to_string` writes it
//! (compact, keys sorted). A body of tiny items thus costs a slice an item, up to the source's
//! `max_items`, where a `Value` of it took many times the body.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// `body` as text if it is one JSON value, checked as strictly as parsing it into a
/// `serde_json::Value` would (numbers in range, escapes and UTF-8 valid, nesting within serde_json's
/// limit), without building anything.
pub(super) fn check_json(body: &[u8]) -> Result<&str, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    Check.deserialize(&mut deserializer)?;
    deserializer.end()?;
    // Checked above: every string is UTF-8, and all else in JSON is ASCII.
    std::str::from_utf8(body).map_err(serde::de::Error::custom)
}

/// Visits every part of a value through `deserialize_any`, as `serde_json::Value` does, keeping
/// nothing.
struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Check)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Check)?.is_some() {
            map.next_value_seed(Check)?;
        }
        Ok(())
    }
}

/// The value at `pointer` in `text` (checked JSON), found as `serde_json::Value::pointer` finds
/// it (`~1` is `/`, `~0` is `~`, of duplicate keys the last counts) but as a slice of `text`.
pub(super) fn locate<'a>(
    text: &'a str,
    pointer: &str,
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let mut target: &'a RawValue = serde_json::from_str(text)?;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let next = match target.get().as_bytes().first() {
            Some(b'{') => target.deserialize_any(Member(&token))?,
            Some(b'[') => match array_index(&token) {
                Some(index) => target.deserialize_any(Element(index))?,
                None => None,
            },
            _ => None,
        };
        match next {
            Some(next) => target = next,
            None => return Ok(None),
        }
    }
    Ok(Some(target))
}

/// An array index in a JSON pointer, as `serde_json::Value::pointer` reads it.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// The value of an object's member named `.0` (the last one, if several are).
struct Member<'t>(&'t str);

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(matches) = map.next_key_seed(IsKey(self.0))? {
            if matches {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a key is `.0`, compared without copying it.
struct IsKey<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for IsKey<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsKey<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// An array's element at `.0`.
struct Element(usize);

impl<'de> Visitor<'de> for Element {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut index = 0;
        loop {
            if index == self.0 {
                found = seq.next_element::<&'de RawValue>()?;
                if found.is_none() {
                    break;
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(found)
    }
}

/// The first `max` elements of `array` (a checked JSON array) as slices, and how many it holds.
pub(super) fn first_items(
    array: &RawValue,
    max: usize,
) -> Result<(Vec<&RawValue>, usize), serde_json::Error> {
    let mut reader = serde_json::Deserializer::from_str(array.get());
    reader.deserialize_any(Items(max))
}

/// An array's first `.0` elements as slices, and how many it holds: the ones past `.0` are
/// counted, never kept.
struct Items(usize);

impl<'de> Visitor<'de> for Items {
    type Value = (Vec<&'de RawValue>, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        let mut total = 0;
        loop {
            if total < self.0 {
                match seq.next_element::<&'de RawValue>()? {
                    Some(item) => items.push(item),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            total += 1;
        }
        Ok((items, total))
    }
}

/// `text` (one checked JSON value) written as `serde_json::Value`'s `to_string` writes it:
/// compact, keys sorted and unique, numbers and strings re-encoded.
pub(super) fn canonical(text: &str) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(text.len());
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Canonical(&mut out).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(out)
}

/// Writes a value to `.0` as `serde_json::Value` would serialise it, without building one.
/// An array streams; an object's members are written to `.0` as they come, each with a span of
/// 24 bytes, and reordered by key when it closes (the last of duplicate keys counting, as in a
/// `Value`).
struct Canonical<'o>(&'o mut Vec<u8>);

impl Canonical<'_> {
    fn write<T: serde::Serialize + ?Sized, E: de::Error>(self, value: &T) -> Result<(), E> {
        serde_json::to_writer(&mut *self.0, value).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.write(&value)
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.write(&value)
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.write(&value)
    }
    /// A `Value` holds no infinite or NaN number: it becomes `null`, as here.
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.write(&value)
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.write(value)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let open = out.len();
        loop {
            let mark = out.len();
            if mark > open {
                out.push(b',');
            }
            if seq.next_element_seed(Canonical(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
        }
        out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        let start = out.len();
        // Each member as it came: its key unescaped at `key..value`, then its value written.
        let mut members: Vec<(usize, usize, usize)> = Vec::new();
        loop {
            let key = out.len();
            if map.next_key_seed(KeyInto(&mut *out))?.is_none() {
                break;
            }
            let value = out.len();
            map.next_value_seed(Canonical(&mut *out))?;
            members.push((key, value, out.len()));
        }
        // Sorted by key, equal keys in the order they came.
        members.sort_unstable_by(|a, b| out[a.0..a.1].cmp(&out[b.0..b.1]).then(a.0.cmp(&b.0)));
        let mut text = Vec::with_capacity(out.len() - start + 4 * members.len() + 2);
        text.push(b'{');
        for (i, &(key, value, end)) in members.iter().enumerate() {
            let superseded = members
                .get(i + 1)
                .is_some_and(|next| out[next.0..next.1] == out[key..value]);
            if superseded {
                continue;
            }
            if text.len() > 1 {
                text.push(b',');
            }
            let name = std::str::from_utf8(&out[key..value]).map_err(de::Error::custom)?;
            serde_json::to_writer(&mut text, name).map_err(de::Error::custom)?;
            text.push(b':');
            text.extend_from_slice(&out[value..end]);
        }
        text.push(b'}');
        out.truncate(start);
        out.extend_from_slice(&text);
        Ok(())
    }
}

/// Appends a key, unescaped, to `.0`.
struct KeyInto<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for KeyInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        self.0.extend_from_slice(key.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A number is written back as the same `f64` as its text (serde_json's `float_roundtrip`);
    /// without it `-122.41941550000001` became `-122.4194155` and `9e24` `8.999999999999999e+24`.
    #[test]
    fn an_items_numbers_are_written_as_the_same_numbers() {
        let texts = [
            "-122.41941550000001",
            "9e24",
            "0.30000000000000004",
            "1e23",
            "5e-324",
        ];
        let item = format!("[{}]", texts.join(","));
        let written = String::from_utf8(canonical(&item).unwrap()).unwrap();
        let numbers: Vec<&str> = written.trim_matches(['[', ']']).split(',').collect();
        assert_eq!(numbers.len(), texts.len(), "{written}");
        for (text, number) in texts.iter().zip(numbers) {
            let read: f64 = number.parse().unwrap();
            assert_eq!(
                read.to_bits(),
                text.parse::<f64>().unwrap().to_bits(),
                "{text} as {number}"
            );
        }
    }

    /// `JOURNALED_BODY_LIMIT` (1 GiB) keeps a journal entry under 4 GiB because an item written
    /// again is under four times its text: strings never grow (an escape is never written longer
    /// than it was read), and the most a number grows is `1e15,` to `1000000000000000.0,`, 5 bytes
    /// to 19. Tried here for mantissas and exponents across `f64`'s range, in arrays of each.
    #[test]
    fn an_item_written_again_is_under_four_times_its_text() {
        let mut forms: Vec<String> = Vec::new();
        for mantissa in ["1", "9", "1.5", "-7", "0.1", "12345678901234567", "0"] {
            for exponent in -330..=310 {
                forms.push(format!("{mantissa}e{exponent}"));
                forms.push(format!("{mantissa}E+{exponent}"));
            }
        }
        forms.extend(
            [
                "-0",
                "0.0",
                "\"\\u00e9\\/\\n\\u0001\"",
                "\"\\ud83d\\ude00\"",
            ]
            .map(String::from),
        );
        let mut largest = (0.0, String::new());
        for form in forms {
            let item = format!("[{}]", vec![form.as_str(); 64].join(","));
            let Ok(written) = canonical(&item) else {
                continue; // Out of `f64`'s range: refused by `check_json` before any split.
            };
            let growth = written.len() as f64 / item.len() as f64;
            if growth > largest.0 {
                largest = (growth, form);
            }
        }
        assert!(
            largest.0 < 4.0,
            "{} grows {:.2} times",
            largest.1,
            largest.0
        );
    }

    #[test]
    fn canonical_text_is_a_values_text() {
        // A small generator of JSON texts with duplicate keys, escapes, odd numbers and
        // whitespace.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        fn value(next: &mut dyn FnMut(u64) -> u64, depth: u32, out: &mut String) {
            const SCALARS: [&str; 12] = [
                "0",
                "-0",
                "1.0",
                "1e2",
                "-2.5E-3",
                "12345678901234567890",
                "null",
                "true",
                "\"\\u00e9\\/\"",
                "\"a\\\"b\"",
                "\"\\ud83d\\ude00\\t\"",
                "-9223372036854775808",
            ];
            const KEYS: [&str; 6] = ["\"a\"", "\"b\"", "\"\"", "\"\\u0061\"", "\"\\n\"", "\"é\""];
            let space = |next: &mut dyn FnMut(u64) -> u64| [" ", "", "\n", ""][next(4) as usize];
            match if depth > 3 { 0 } else { next(4) } {
                0 | 1 => out.push_str(SCALARS[next(12) as usize]),
                2 => {
                    out.push('[');
                    for i in 0..next(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(space(next));
                        value(next, depth + 1, out);
                    }
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    for i in 0..next(6) {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(KEYS[next(6) as usize]);
                        out.push_str(space(next));
                        out.push(':');
                        value(next, depth + 1, out);
                    }
                    out.push_str(space(next));
                    out.push('}');
                }
            }
        }
        for _ in 0..2000 {
            let mut text = String::new();
            value(&mut next, 0, &mut text);
            let expected = serde_json::from_str::<serde_json::Value>(&text)
                .unwrap()
                .to_string();
            let written = String::from_utf8(canonical(&text).unwrap()).unwrap();
            assert_eq!(written, expected, "{text}");
        }
    }
}
