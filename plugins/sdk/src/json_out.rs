//! JSON output for [`crate::Record::from_json`] and [`crate::Record::with_json`]: the bytes
//! `serde_json::to_vec` gives, written without its byte-at-a-time string loop. As Wasm every
//! loop iteration also checks the host's deadline, so scanning strings eight bytes at a time in
//! a 64-bit word (Wasm has 64-bit integers even on wasm32) is what makes the difference; and a
//! string that needs no escape, most of them, is found so by overlapping words without a loop
//! and copied whole.

use std::fmt::Display;

use std::io;

use serde::ser::{self, Serialize};
use serde_json::ser::{CompactFormatter, Formatter};

use crate::copy::{append, append_enclosed};
use crate::swar::{has_string_specials, string_specials};

/// The structs `serde_json` serialises as raw JSON text (`RawValue`, and `Number` under its
/// `arbitrary_precision` feature): their one field holds text written as it is.
const RAW_TOKENS: [&str; 2] = [
    "$serde_json::private::RawValue",
    "$serde_json::private::Number",
];

/// Why a value could not be written as JSON, worded as `serde_json` words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError(String);

impl Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WriteError {}

impl ser::Error for WriteError {
    fn custom<T: Display>(message: T) -> Self {
        WriteError(message.to_string())
    }
}

fn key_must_be_a_string() -> WriteError {
    WriteError("key must be a string".into())
}

/// `value` as compact JSON, byte for byte what `serde_json::to_vec` gives.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WriteError> {
    to_vec_with_capacity(value, 128)
}

/// [`to_vec`] into a buffer that starts with room for `capacity` bytes: when the output's size
/// is about known, it then grows (and copies itself) fewer times, or never.
pub(crate) fn to_vec_with_capacity<T: Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>, WriteError> {
    let mut writer = Writer {
        out: Vec::with_capacity(capacity),
    };
    value.serialize(&mut writer)?;
    Ok(writer.out)
}

/// The output being written.
struct Writer {
    out: Vec<u8>,
}

/// The escape of `byte` inside a JSON string, as `serde_json` writes it, or `None`.
fn escape(byte: u8) -> Option<&'static [u8]> {
    const CONTROL: [&[u8]; 32] = [
        b"\\u0000", b"\\u0001", b"\\u0002", b"\\u0003", b"\\u0004", b"\\u0005", b"\\u0006",
        b"\\u0007", b"\\b", b"\\t", b"\\n", b"\\u000b", b"\\f", b"\\r", b"\\u000e", b"\\u000f",
        b"\\u0010", b"\\u0011", b"\\u0012", b"\\u0013", b"\\u0014", b"\\u0015", b"\\u0016",
        b"\\u0017", b"\\u0018", b"\\u0019", b"\\u001a", b"\\u001b", b"\\u001c", b"\\u001d",
        b"\\u001e", b"\\u001f",
    ];
    match byte {
        0..0x20 => Some(CONTROL[usize::from(byte)]),
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        _ => None,
    }
}

/// `text` as a quoted, escaped JSON string.
fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // Most strings need no escape: settled without a byte loop, copied whole.
    if !has_string_specials(bytes) {
        append_enclosed(out, b'"', bytes, *b"\"");
        return;
    }
    out.reserve(bytes.len() + 2);
    write_escaped(out, bytes);
}

/// An object's `key` as a quoted JSON string, and its colon. Inlined: a struct's field names
/// are constants, so where this is inlined into a derived `Serialize` the escape test folds away
/// when the compiler builds the plugin, and the key is written with one reservation.
#[inline(always)]
fn write_key(out: &mut Vec<u8>, key: &str) {
    let bytes = key.as_bytes();
    if has_string_specials(bytes) {
        write_escaped(out, bytes);
        out.push(b':');
    } else {
        append_enclosed(out, b'"', bytes, *b"\":");
    }
}

/// `bytes`, which hold at least one byte to escape, as a quoted, escaped JSON string.
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    // `run` is where the bytes not yet copied start.
    let (mut run, mut at) = (0, 0);
    while at < bytes.len() {
        if let Some(word) = bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if string_specials(word) == 0 {
                at += 8;
                continue;
            }
        }
        if let Some(escaped) = escape(bytes[at]) {
            append(out, &bytes[run..at]);
            out.extend_from_slice(escaped);
            run = at + 1;
        }
        at += 1;
    }
    append(out, &bytes[run..]);
    out.push(b'"');
}

/// A number as serde_json's own formatter writes it, so that the digits stay its digits.
fn number(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut CompactFormatter, &mut Vec<u8>) -> io::Result<()>,
) {
    write(&mut CompactFormatter, out).expect("writing to a Vec cannot fail");
}

/// Serializer methods for numbers, each writing through serde_json's formatter method of the
/// same type, wrapped by `$wrap` (as is for values, quoted for object keys).
macro_rules! numbers {
    ($wrap:ident; $($method:ident: $ty:ty => $write:ident),* $(,)?) => {
        $(fn $method(self, value: $ty) -> Result<(), WriteError> {
            self.$wrap(|out| number(out, |f, w| f.$write(w, value)))
        })*
    };
}

/// The integer methods of [`numbers!`], the same list for values and for keys.
macro_rules! integers {
    ($wrap:ident) => {
        numbers!($wrap;
            serialize_i8: i8 => write_i8,
            serialize_i16: i16 => write_i16,
            serialize_i32: i32 => write_i32,
            serialize_i64: i64 => write_i64,
            serialize_i128: i128 => write_i128,
            serialize_u8: u8 => write_u8,
            serialize_u16: u16 => write_u16,
            serialize_u32: u32 => write_u32,
            serialize_u64: u64 => write_u64,
            serialize_u128: u128 => write_u128,
        );
    };
}

/// Serializer methods that refuse what they are given with `$error`: the scalar ones named,
/// then (after `;`) every compound one, which no key or raw text can be.
macro_rules! refuse {
    ($error:expr; $($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, _value: $ty) -> Result<(), WriteError> {
            Err($error)
        })*
        fn serialize_none(self) -> Result<(), WriteError> {
            Err($error)
        }
        fn serialize_unit(self) -> Result<(), WriteError> {
            Err($error)
        }
        fn serialize_unit_struct(self, _name: &'static str) -> Result<(), WriteError> {
            Err($error)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _value: &T,
        ) -> Result<(), WriteError> {
            Err($error)
        }
        fn serialize_seq(self, _len: Option<usize>) -> Result<Refused, WriteError> {
            Err($error)
        }
        fn serialize_tuple(self, _len: usize) -> Result<Refused, WriteError> {
            Err($error)
        }
        fn serialize_tuple_struct(
            self,
            _name: &'static str,
            _len: usize,
        ) -> Result<Refused, WriteError> {
            Err($error)
        }
        fn serialize_tuple_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Refused, WriteError> {
            Err($error)
        }
        fn serialize_map(self, _len: Option<usize>) -> Result<Refused, WriteError> {
            Err($error)
        }
        fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Refused, WriteError> {
            Err($error)
        }
        fn serialize_struct_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Refused, WriteError> {
            Err($error)
        }
    };
}

impl Writer {
    /// Writes with `write`, for [`numbers!`].
    fn plain(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), WriteError> {
        write(&mut self.out);
        Ok(())
    }
}

impl<'a> ser::Serializer for &'a mut Writer {
    type Ok = ();
    type Error = WriteError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    integers!(plain);

    fn serialize_bool(self, value: bool) -> Result<(), WriteError> {
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_f32(self, value: f32) -> Result<(), WriteError> {
        // Like serde_json: JSON has no NaN or infinity, so they are written as null.
        if !value.is_finite() {
            return self.serialize_unit();
        }
        self.plain(|out| number(out, |f, w| f.write_f32(w, value)))
    }
    fn serialize_f64(self, value: f64) -> Result<(), WriteError> {
        if !value.is_finite() {
            return self.serialize_unit();
        }
        self.plain(|out| number(out, |f, w| f.write_f64(w, value)))
    }
    fn serialize_char(self, value: char) -> Result<(), WriteError> {
        self.serialize_str(value.encode_utf8(&mut [0; 4]))
    }
    // Inlined, as `comma` is: both run for every field written.
    #[inline(always)]
    fn serialize_str(self, value: &str) -> Result<(), WriteError> {
        write_str(&mut self.out, value);
        Ok(())
    }
    fn serialize_bytes(self, value: &[u8]) -> Result<(), WriteError> {
        // An array of numbers, as serde_json writes bytes.
        let mut array = Compound::open(self, b"[", b"]");
        for byte in value {
            array.element(byte)?;
        }
        array.close()
    }
    fn serialize_none(self) -> Result<(), WriteError> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), WriteError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), WriteError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), WriteError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), WriteError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        let mut wrapper = Compound::open(self, b"{", b"}");
        wrapper.field(variant, value)?;
        wrapper.close()
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, WriteError> {
        Ok(Compound::open(self, b"[", b"]"))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>, WriteError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, WriteError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, WriteError> {
        Ok(Compound::in_variant(self, variant, b"[", b"]}"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, WriteError> {
        Ok(Compound::open(self, b"{", b"}"))
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Compound<'a>, WriteError> {
        if RAW_TOKENS.contains(&name) {
            return Ok(Compound {
                writer: self,
                first: true,
                close: b"",
                raw: true,
            });
        }
        self.serialize_map(None)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, WriteError> {
        Ok(Compound::in_variant(self, variant, b"{", b"}}"))
    }
}

/// An array or object being written.
pub struct Compound<'a> {
    writer: &'a mut Writer,
    /// No element written yet, so no comma before the next.
    first: bool,
    /// What ends it: `]`, `}`, or that plus the `}` of an enum variant's wrapper.
    close: &'static [u8],
    /// One of [`RAW_TOKENS`]: its field is written as it is.
    raw: bool,
}

impl<'a> Compound<'a> {
    fn open(writer: &'a mut Writer, open: &[u8], close: &'static [u8]) -> Self {
        writer.out.extend_from_slice(open);
        Compound {
            writer,
            first: true,
            close,
            raw: false,
        }
    }

    /// An array or object inside `{"variant": ...}`, the way serde_json writes enum variants
    /// with data; `close` ends both.
    fn in_variant(
        writer: &'a mut Writer,
        variant: &str,
        open: &[u8],
        close: &'static [u8],
    ) -> Self {
        writer.out.push(b'{');
        write_str(&mut writer.out, variant);
        writer.out.push(b':');
        Compound::open(writer, open, close)
    }

    /// Inlined: it runs for every field and element written, and as a call it cost more than
    /// its work.
    #[inline(always)]
    fn comma(&mut self) {
        if !self.first {
            self.writer.out.push(b',');
        }
        self.first = false;
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        self.comma();
        value.serialize(&mut *self.writer)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), WriteError> {
        if self.raw {
            return value.serialize(RawText(&mut self.writer.out));
        }
        self.comma();
        write_key(&mut self.writer.out, key);
        value.serialize(&mut *self.writer)
    }

    fn close(self) -> Result<(), WriteError> {
        self.writer.out.extend_from_slice(self.close);
        Ok(())
    }
}

/// The serde traits for arrays (`$method` is what each calls an element) and objects, all
/// written by [`Compound`].
macro_rules! compound {
    (elements: $($trait:ident::$method:ident),*; fields: $($field_trait:ident),*) => {
        $(impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = WriteError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
                self.element(value)
            }
            fn end(self) -> Result<(), WriteError> {
                self.close()
            }
        })*
        $(impl ser::$field_trait for Compound<'_> {
            type Ok = ();
            type Error = WriteError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), WriteError> {
                self.field(key, value)
            }
            fn end(self) -> Result<(), WriteError> {
                self.close()
            }
        })*
    };
}

compound!(
    elements: SerializeSeq::serialize_element,
        SerializeTuple::serialize_element,
        SerializeTupleStruct::serialize_field,
        SerializeTupleVariant::serialize_field;
    fields: SerializeStruct, SerializeStructVariant
);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), WriteError> {
        self.comma();
        key.serialize(MapKey(&mut self.writer.out))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        self.writer.out.push(b':');
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<(), WriteError> {
        self.close()
    }
}

/// An object key: JSON keys are strings, so numbers and booleans are written quoted and
/// anything else is refused, as serde_json does.
struct MapKey<'a>(&'a mut Vec<u8>);

impl MapKey<'_> {
    /// Writes with `write` between quotes, for [`numbers!`].
    fn quoted(self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), WriteError> {
        self.0.push(b'"');
        write(self.0);
        self.0.push(b'"');
        Ok(())
    }
}

type Refused = ser::Impossible<(), WriteError>;

impl ser::Serializer for MapKey<'_> {
    type Ok = ();
    type Error = WriteError;
    type SerializeSeq = Refused;
    type SerializeTuple = Refused;
    type SerializeTupleStruct = Refused;
    type SerializeTupleVariant = Refused;
    type SerializeMap = Refused;
    type SerializeStruct = Refused;
    type SerializeStructVariant = Refused;

    integers!(quoted);
    refuse!(key_must_be_a_string(); serialize_bytes: &[u8]);

    fn serialize_str(self, value: &str) -> Result<(), WriteError> {
        write_str(self.0, value);
        Ok(())
    }
    fn serialize_char(self, value: char) -> Result<(), WriteError> {
        self.serialize_str(value.encode_utf8(&mut [0; 4]))
    }
    fn serialize_bool(self, value: bool) -> Result<(), WriteError> {
        self.quoted(|out| out.extend_from_slice(if value { b"true" } else { b"false" }))
    }
    fn serialize_f32(self, value: f32) -> Result<(), WriteError> {
        if !value.is_finite() {
            return Err(float_key_must_be_finite());
        }
        self.quoted(|out| number(out, |f, w| f.write_f32(w, value)))
    }
    fn serialize_f64(self, value: f64) -> Result<(), WriteError> {
        if !value.is_finite() {
            return Err(float_key_must_be_finite());
        }
        self.quoted(|out| number(out, |f, w| f.write_f64(w, value)))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), WriteError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        value.serialize(self)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), WriteError> {
        value.serialize(self)
    }
}

fn float_key_must_be_finite() -> WriteError {
    WriteError("float key must be finite (got NaN or +/-inf)".into())
}

/// The field of a [`RAW_TOKENS`] struct: text that is already JSON, written as it is.
struct RawText<'a>(&'a mut Vec<u8>);

fn not_raw_text() -> WriteError {
    WriteError("raw JSON must be given as a string".into())
}

impl ser::Serializer for RawText<'_> {
    type Ok = ();
    type Error = WriteError;
    type SerializeSeq = Refused;
    type SerializeTuple = Refused;
    type SerializeTupleStruct = Refused;
    type SerializeTupleVariant = Refused;
    type SerializeMap = Refused;
    type SerializeStruct = Refused;
    type SerializeStructVariant = Refused;

    refuse!(not_raw_text();
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_f32: f32,
        serialize_f64: f64,
        serialize_char: char,
        serialize_bytes: &[u8],
    );

    fn serialize_str(self, value: &str) -> Result<(), WriteError> {
        append(self.0, value.as_bytes());
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), WriteError> {
        Err(not_raw_text())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<(), WriteError> {
        Err(not_raw_text())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _value: &T,
    ) -> Result<(), WriteError> {
        Err(not_raw_text())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use serde_json::{Map, Number, Value, json};

    use super::*;
    use crate::test_random::Random;

    /// Both writers give the same bytes, or both refuse with the same words.
    fn same_as_serde_json<T: Serialize + ?Sized + std::fmt::Debug>(value: &T) {
        match (to_vec(value), serde_json::to_vec(value)) {
            (Ok(ours), Ok(theirs)) => assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{value:?}"
            ),
            (Err(ours), Err(theirs)) => assert_eq!(ours.to_string(), theirs.to_string()),
            (ours, theirs) => panic!("{value:?}: ours {ours:?}, serde_json {theirs:?}"),
        }
    }

    /// What these tests draw from the shared generator.
    impl Random {
        /// Text mixing ASCII (control bytes, quotes and backslashes included, often next to
        /// eight-byte word boundaries) with multi-byte characters.
        fn text(&mut self) -> String {
            const PIECES: [&str; 12] = [
                "\"", "\\", "\n", "\t", "\u{1}", "\u{1f}", "\u{7f}", "/", "é", "東", "🦀", " ",
            ];
            let len = self.below(40);
            (0..len)
                .map(|_| match self.below(4) {
                    0 => PIECES[self.below(PIECES.len())].to_owned(),
                    1 => char::from(self.below(0x80) as u8).to_string(),
                    _ => "abcdefgh"[..1 + self.below(8)].to_owned(),
                })
                .collect()
        }

        fn tree(&mut self, depth: u32) -> Value {
            match self.below(if depth == 0 { 5 } else { 7 }) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => match self.below(3) {
                    0 => Value::from(self.next()),
                    1 => Value::from(self.next() as i64),
                    _ => Number::from_f64(f64::from_bits(self.next()))
                        .map_or(Value::Null, Value::Number),
                },
                3 | 4 => Value::String(self.text()),
                5 => Value::Array((0..self.below(5)).map(|_| self.tree(depth - 1)).collect()),
                _ => Value::Object(
                    (0..self.below(5))
                        .map(|_| (self.text(), self.tree(depth - 1)))
                        .collect::<Map<_, _>>(),
                ),
            }
        }
    }

    #[test]
    fn random_documents_come_out_byte_for_byte_as_from_serde_json() {
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5_000 {
            same_as_serde_json(&random.tree(4));
        }
    }

    #[test]
    fn every_ascii_byte_at_every_offset_of_a_word_is_escaped_as_serde_json_escapes_it() {
        for byte in 0..0x80u8 {
            for offset in 0..17 {
                let mut text = "x".repeat(offset);
                text.push(char::from(byte));
                text.push_str("tail after the byte");
                same_as_serde_json(&text);
            }
        }
    }

    #[derive(Debug, Serialize)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(i32, String),
        Struct { x: f32, name: &'static str },
    }

    #[derive(Debug, Serialize)]
    struct Everything<'a> {
        flag: bool,
        small: i8,
        big: u128,
        negative: i128,
        float: f64,
        not_a_number: f64,
        infinite: f32,
        letter: char,
        #[serde(with = "serde_bytes_as_slice")]
        bytes: &'a [u8],
        missing: Option<u32>,
        present: Option<&'a str>,
        unit: (),
        pair: (u16, &'a str),
        shapes: Vec<Shape>,
        empty_list: Vec<u8>,
        empty_map: BTreeMap<String, u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        number_keys: BTreeMap<i64, bool>,
        bool_keys: BTreeMap<bool, u8>,
        char_keys: BTreeMap<char, u8>,
        float_keys: Vec<(f64, u8)>,
        // Field names are written by `write_key`: one that must be escaped, and one past the
        // short copies.
        #[serde(rename = "quote\"back\\slash\nline\u{1}")]
        escaped_name: u8,
        #[serde(rename = "a_field_name_well_past_thirty_two_bytes")]
        long_name: u8,
    }

    /// `serialize_bytes`, which serde's derive never calls for a slice on its own.
    mod serde_bytes_as_slice {
        pub fn serialize<S: serde::Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(bytes)
        }
    }

    #[test]
    fn every_kind_of_value_comes_out_as_from_serde_json() {
        let everything = Everything {
            flag: true,
            small: -8,
            big: u128::MAX,
            negative: i128::MIN,
            float: 1.0e-7,
            not_a_number: f64::NAN,
            infinite: f32::INFINITY,
            letter: '"',
            bytes: &[0, 1, 255],
            missing: None,
            present: Some("here"),
            unit: (),
            pair: (7, "seven"),
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(3),
                Shape::Tuple(-1, "t".into()),
                Shape::Struct { x: 0.5, name: "n" },
            ],
            empty_list: vec![],
            empty_map: BTreeMap::new(),
            skipped: None,
            number_keys: [(-3, true), (42, false)].into(),
            bool_keys: [(true, 1), (false, 0)].into(),
            char_keys: [('\n', 1), ('é', 2)].into(),
            float_keys: vec![(1.5, 1)],
            escaped_name: 3,
            long_name: 4,
        };
        same_as_serde_json(&everything);
        let float_keyed: BTreeMap<String, u8> = [("1.5".to_owned(), 1)].into();
        same_as_serde_json(&float_keyed);
        for value in [1.0f64, 0.1, 1e16, 1e-300, -0.0, f64::MAX, f64::MIN_POSITIVE] {
            same_as_serde_json(&value);
            same_as_serde_json(&(value as f32));
            same_as_serde_json(&json!({ "v": value }));
        }
    }

    #[test]
    fn keys_that_are_not_strings_are_refused_in_serde_json_words() {
        same_as_serde_json(&[(vec![1u8], 1u8)].into_iter().collect::<BTreeMap<_, _>>());
        let float_keys = |key: f64| {
            let mut map = std::collections::HashMap::new();
            map.insert(FloatKey(key), 1);
            map
        };
        same_as_serde_json(&float_keys(2.5));
        same_as_serde_json(&float_keys(f64::NAN));
        same_as_serde_json(&[((), 1u8)].into_iter().collect::<BTreeMap<_, _>>());
        same_as_serde_json(&[(Some(3u8), 1u8)].into_iter().collect::<BTreeMap<_, _>>());
        same_as_serde_json(&[(None::<u8>, 1u8)].into_iter().collect::<BTreeMap<_, _>>());
    }

    /// A float map key (floats are neither `Eq` nor `Hash`, so maps cannot hold them directly).
    #[derive(Debug)]
    struct FloatKey(f64);

    impl PartialEq for FloatKey {
        fn eq(&self, other: &Self) -> bool {
            self.0.to_bits() == other.0.to_bits()
        }
    }
    impl Eq for FloatKey {}
    impl std::hash::Hash for FloatKey {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.to_bits().hash(state);
        }
    }
    impl Serialize for FloatKey {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_f64(self.0)
        }
    }

    /// What serde_json's `RawValue` does: a struct of one field under a reserved name.
    #[derive(Debug)]
    struct Raw(&'static str);

    impl Serialize for Raw {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut raw = s.serialize_struct(RAW_TOKENS[0], 1)?;
            raw.serialize_field(RAW_TOKENS[0], self.0)?;
            raw.end()
        }
    }

    #[test]
    fn raw_json_text_is_written_as_it_is() {
        let written = to_vec(&json!({ "a": 1 })).unwrap();
        assert_eq!(written, br#"{"a":1}"#);
        let raw = to_vec(&vec![Raw(r#"{"kept" : [1, 2]}"#)]).unwrap();
        assert_eq!(String::from_utf8(raw).unwrap(), r#"[{"kept" : [1, 2]}]"#);
    }

    #[test]
    fn a_serialize_impl_that_fails_fails_with_its_own_message() {
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no, thanks"))
            }
        }
        assert_eq!(to_vec(&Refuses).unwrap_err().to_string(), "no, thanks");
    }
}
