//! JSON helpers for the common plugin shape: read fields by pointer, with a bad-record error
//! naming the missing field, so a mapping is a few lines of `?`; and lenient field types for
//! [`crate::Record::parse`] that judge a field the way a pointer lookup does, without a tree.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::Error;

/// Reads `bytes` through a serde `seed` with the SDK's fast reader, which [`crate::Record::parse`]
/// uses: `None` when it refuses the document (malformed JSON, text that is not UTF-8, or a shape
/// it leaves to serde_json), and the caller then reads the same bytes with serde_json for the
/// value or the error's wording. It accepts nothing serde_json refuses and hands the seed what
/// serde_json would. For code that reads records outside a plugin, such as weir's sinks.
pub fn read_seed<'de, S: de::DeserializeSeed<'de>>(bytes: &'de [u8], seed: S) -> Option<S::Value> {
    crate::json_in::from_slice_seed(bytes, seed)
}

/// The newtype struct name by which a seed read through [`read_seed`] asks for a number as the
/// document writes it (`12.50`, `1e400`, thirty digits), not as a float that keeps fifteen: a
/// seed calling `deserialize_newtype_struct(NUMBER_AS_WRITTEN, visitor)` has a number visited by
/// `visit_borrowed_bytes` with its text, and any other value as `deserialize_any` visits it.
/// serde_json does not know the name and calls `visit_newtype_struct`, where the visitor reads
/// the value as a `serde_json::value::RawValue` for its text.
pub const NUMBER_AS_WRITTEN: &str = "$weir_plugin::json::NumberAsWritten";

/// The value at a JSON pointer (`/name/first`); a bad record naming the field when absent or null.
pub fn at<'a>(value: &'a Value, pointer: &str) -> Result<&'a Value, Error> {
    match value.pointer(pointer) {
        None | Some(Value::Null) => Err(Error::bad_record(format!(
            "missing required field `{}`",
            field_name(pointer)
        ))),
        Some(found) => Ok(found),
    }
}

/// The string at a JSON pointer; a bad record when absent or not a string.
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> Result<&'a str, Error> {
    at(value, pointer)?.as_str().ok_or_else(|| {
        Error::bad_record(format!("field `{}` must be a string", field_name(pointer)))
    })
}

/// The value at a JSON pointer as text: strings as they are, numbers and booleans printed.
/// For fields an API sends sometimes as a number and sometimes as a string.
pub fn text_at(value: &Value, pointer: &str) -> Result<String, Error> {
    match at(value, pointer)? {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Error::bad_record(format!(
            "field `{}` must be a string or a number",
            field_name(pointer)
        ))),
    }
}

/// `/name/first` as `name.first`, the way users write field paths.
pub fn field_name(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// A user's dotted field path (`name.first`) as a JSON pointer (`/name/first`).
pub fn pointer(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{}", path.replace('.', "/"))
    }
}

/// One field of a typed document, read whatever JSON it holds, so that the plugin (not the
/// parser) decides what is wrong with it and says so naming the field. Strings are borrowed from
/// the record when they hold no escapes. Use it with `#[serde(default, borrow)]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<'a> {
    /// The key is absent.
    #[default]
    Missing,
    /// `null`.
    Null,
    /// A string.
    Str(Cow<'a, str>),
    /// A number, as JSON wrote it. Boxed, so that a field is no larger than a string (three
    /// words): numbers are the rarer case, and a plugin's arena makes the box a pointer bump.
    Number(Box<Number>),
    /// `true` or `false`.
    Bool(bool),
    /// An array or an object (skipped, not kept).
    Composite,
}

// A field is no larger than the string it borrows, checked wherever the SDK compiles (a plugin's
// wasm32 build too). The derived visitor of a typed document holds all its fields at once, and
// `Record::parse` moves the document whole: kept inline, a number (16 bytes, aligned to 8) made
// every field 24 bytes in Wasm instead of 12 (docs/performance.md, "Twenty-sixth session").
const _: () = assert!(size_of::<Field<'static>>() == size_of::<Cow<'static, str>>());

impl<'a> Field<'a> {
    /// The string; a bad record naming `name` (`location.city`) when absent or null, or not a
    /// string: the same errors as [`str_at`].
    ///
    /// Inlined, with its errors out of line: a plugin calls it for every field of every record.
    #[inline]
    pub fn str(&self, name: &str) -> Result<&str, Error> {
        match self {
            Field::Str(s) => Ok(s),
            _ => Err(self.not_text(name, "a string")),
        }
    }

    /// The value as text: strings as they are, numbers and booleans printed; the same errors
    /// as [`text_at`].
    #[inline]
    pub fn text(&self, name: &str) -> Result<Cow<'_, str>, Error> {
        match self {
            Field::Str(s) => Ok(Cow::Borrowed(s)),
            Field::Number(n) => Ok(Cow::Owned(number_text(n))),
            Field::Bool(b) => Ok(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => Err(self.not_text(name, "a string or a number")),
        }
    }

    /// The error for a field named `name` that is not `wanted` (`a string`): missing when
    /// absent or null.
    #[cold]
    #[inline(never)]
    fn not_text(&self, name: &str, wanted: &str) -> Error {
        match self {
            Field::Missing | Field::Null => missing(name),
            _ => Error::bad_record(format!("field `{name}` must be {wanted}")),
        }
    }
}

/// A number as `Number`'s `Display` prints it. Integers are written digit by digit: in Wasm,
/// `to_string` through `core::fmt`'s indirect calls cost more than the digits (2% of
/// `user-profile`'s time, which prints a street number for every user).
fn number_text(number: &Number) -> String {
    let (negative, magnitude) = match (number.as_u64(), number.as_i64()) {
        (Some(unsigned), _) => (false, unsigned),
        (None, Some(signed)) => (true, signed.unsigned_abs()),
        _ => return number.to_string(),
    };
    let mut digits = [0u8; 20];
    let start = write_digits(&mut digits, magnitude);
    let mut text = String::with_capacity(usize::from(negative) + digits.len() - start);
    if negative {
        text.push('-');
    }
    // SAFETY: `write_digits` wrote ASCII digits from `start` on.
    crate::copy::push_str(&mut text, unsafe {
        std::str::from_utf8_unchecked(&digits[start..])
    });
    text
}

/// Writes `value` in decimal at the end of `digits`; returns where its first digit is.
///
/// As Wasm, dividing a 64-bit value by ten is a division instruction, tens of cycles: Wasm has
/// no multiply that returns the high half, with which native code divides by a constant. A
/// 32-bit value's division by ten is a 64-bit multiply and a shift, so the digits below
/// `u32::MAX` (all of a street number's or a postcode's) are taken as 32-bit.
fn write_digits(digits: &mut [u8; 20], value: u64) -> usize {
    let mut start = digits.len();
    let mut wide = value;
    let mut narrow = loop {
        if let Ok(narrow) = u32::try_from(wide) {
            break narrow;
        }
        start -= 1;
        digits[start] = b'0' + (wide % 10) as u8;
        wide /= 10;
    };
    loop {
        start -= 1;
        digits[start] = b'0' + (narrow % 10) as u8;
        narrow /= 10;
        if narrow == 0 {
            return start;
        }
    }
}

fn missing(name: &str) -> Error {
    Error::bad_record(format!("missing required field `{name}`"))
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Number(Box::new(v.into())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Field::Number(Box::new(v.into())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Number::from_f64(v).map_or(Field::Null, |n| Field::Number(Box::new(n))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Field::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Field::Composite)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(map).map(|_| Field::Composite)
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

/// A nested object of a typed document read into `T`; any other value (absent, null, a string,
/// an array) reads as `T::default()`, so that its fields report themselves missing, as a pointer
/// lookup through a non-object would. Derefs to `T`. Use it with `#[serde(default, borrow)]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nested<T> {
    value: T,
    object: bool,
}

impl<T> Nested<T> {
    /// Whether the JSON held an object here.
    pub fn is_object(&self) -> bool {
        self.object
    }
}

impl<T> Deref for Nested<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NestedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for NestedVisitor<T> {
            type Value = Nested<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(Nested {
                    value: T::deserialize(de::value::MapAccessDeserializer::new(map))?,
                    object: true,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Nested::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Nested::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Nested::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Nested::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Nested::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Nested::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Nested::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Nested::default())
            }
        }
        deserializer.deserialize_any(NestedVisitor(std::marker::PhantomData))
    }
}

/// An array field of a typed document: its items read into `T`, or a note that the key was
/// absent or held something else, so the plugin can tell "no list" from "not a list".
/// Use it with `#[serde(default, borrow)]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum List<T> {
    /// The key is absent.
    #[default]
    Missing,
    /// The key holds something other than an array (`null` included).
    NotArray,
    /// The array's items.
    Items(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(List::Items(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(map).map(|_| List::NotArray)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(List::NotArray)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(List::NotArray)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(List::NotArray)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(List::NotArray)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(List::NotArray)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(List::NotArray)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(List::NotArray)
            }
        }
        deserializer.deserialize_any(ListVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_and_null_fields_name_the_field() {
        let doc = json!({"name": {"first": "Ada", "last": null}});
        assert_eq!(str_at(&doc, "/name/first").unwrap(), "Ada");
        let err = str_at(&doc, "/name/last").unwrap_err();
        assert_eq!(err.message(), "missing required field `name.last`");
        assert!(at(&doc, "/age").is_err());
    }

    #[test]
    fn text_at_accepts_numbers_and_strings() {
        let doc = json!({"a": 1234, "b": "W1 2AB", "c": [1]});
        assert_eq!(text_at(&doc, "/a").unwrap(), "1234");
        assert_eq!(text_at(&doc, "/b").unwrap(), "W1 2AB");
        assert!(text_at(&doc, "/c").is_err());
    }

    #[test]
    fn numbers_read_as_text_print_as_serde_json_prints_them() {
        let texts = [
            "0",
            "7",
            "-1",
            "10",
            "4242",
            "-90210",
            "9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
            "9223372036854775807",
            "1.5",
            "-0.0",
            "1e300",
            "2.5e-8",
            "100000000000000000000",
        ];
        for text in texts {
            let field: Field = serde_json::from_str(text).unwrap();
            let Field::Number(number) = &field else {
                panic!("{text} did not read as a number: {field:?}");
            };
            assert_eq!(field.text("n").unwrap(), number.to_string(), "{text}");
        }
        let mut magnitude = 1u64;
        while let Some(next) = magnitude.checked_mul(10) {
            for value in [magnitude - 1, magnitude, next - 1] {
                assert_eq!(number_text(&value.into()), value.to_string());
                let negative = -(value.min(i64::MAX as u64) as i64);
                assert_eq!(number_text(&negative.into()), negative.to_string());
            }
            magnitude = next;
        }
        // Where the digits turn from 64-bit to 32-bit division.
        let narrow = u64::from(u32::MAX);
        for value in [
            narrow - 1,
            narrow,
            narrow + 1,
            narrow * 10,
            narrow * 10 + 9,
            u64::MAX,
        ] {
            assert_eq!(number_text(&value.into()), value.to_string());
        }
    }

    #[derive(Debug, Default, serde::Deserialize)]
    struct Doc<'a> {
        #[serde(default, borrow)]
        a: Field<'a>,
        #[serde(default, borrow)]
        inner: Nested<Inner<'a>>,
        #[serde(default, borrow)]
        list: List<Field<'a>>,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    struct Inner<'a> {
        #[serde(default, borrow)]
        b: Field<'a>,
    }

    fn doc(text: &str) -> Doc<'_> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn typed_fields_fail_like_pointer_lookups() {
        let all = doc(r#"{"a": 12.5, "inner": {"b": "x"}, "list": [1, "y"]}"#);
        assert_eq!(all.a.text("a").unwrap(), "12.5");
        assert_eq!(
            all.a.str("a").unwrap_err().message(),
            "field `a` must be a string"
        );
        assert!(all.inner.is_object());
        assert_eq!(all.inner.b.str("inner.b").unwrap(), "x");
        assert_eq!(
            all.list,
            List::Items(vec![
                Field::Number(Box::new(1.into())),
                Field::Str("y".into())
            ])
        );
        for text in [
            r#"{}"#,
            r#"{"a": null, "inner": "s", "list": null}"#,
            r#"{"inner": [1]}"#,
        ] {
            let d = doc(text);
            assert_eq!(
                d.a.str("a").unwrap_err().message(),
                "missing required field `a`"
            );
            assert!(!d.inner.is_object());
            assert_eq!(
                d.inner.b.text("inner.b").unwrap_err().message(),
                "missing required field `inner.b`"
            );
        }
        assert_eq!(doc("{}").list, List::Missing);
        assert_eq!(doc(r#"{"list": {"x": 1}}"#).list, List::NotArray);
        let composite = doc(r#"{"a": [1]}"#);
        assert_eq!(
            composite.a.text("a").unwrap_err().message(),
            "field `a` must be a string or a number"
        );
        // The text of a number is what `text_at` gives for the same document.
        for number in ["4242", "-7", "1e3", "0.1"] {
            let json: Value = serde_json::from_str(&format!(r#"{{"a": {number}}}"#)).unwrap();
            assert_eq!(
                doc(&format!(r#"{{"a": {number}}}"#)).a.text("a").unwrap(),
                text_at(&json, "/a").unwrap()
            );
        }
    }

    #[test]
    fn pointer_converts_dotted_paths() {
        assert_eq!(pointer("name.first"), "/name/first");
        assert_eq!(pointer("/x"), "/x");
    }
}
