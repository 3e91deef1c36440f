//! The record type plugins see: plain owned data, so plugin logic is testable natively.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// The most [`Record::with_json`] reserves for its output before writing: an input of many
/// results split into one output each must not reserve the whole input for every output.
const WITH_JSON_START: usize = 1024;

/// One record of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The record's key, if any.
    pub key: Option<Vec<u8>>,
    /// The payload, usually one UTF-8 JSON document.
    pub value: Vec<u8>,
    /// Headers in order; a name may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with this value and nothing else.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Record {
            value: value.into(),
            ..Record::default()
        }
    }

    /// A record whose value is `value` serialised as JSON.
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        Ok(Record::new(to_json_bytes(value)?))
    }

    /// Parses the value as JSON; malformed JSON is a bad record.
    pub fn json(&self) -> Result<Value, Error> {
        serde_json::from_slice(&self.value)
            .map_err(|e| Error::bad_record(format!("value is not valid JSON: {e}")))
    }

    /// Reads the value as JSON into `T`, borrowing its strings from the record: a struct of
    /// `&str`/`Cow<str>` fields (or the lenient [`crate::json::Field`], [`crate::json::Nested`]
    /// and [`crate::json::List`]) skips the fields it does not name and builds no tree of the
    /// whole document, about twice as fast as [`Record::json`]. Use `Cow<'a, str>` with
    /// `#[serde(borrow)]` for text, since a string with escapes cannot be borrowed.
    ///
    /// Malformed JSON (or a value that is not UTF-8) is a bad record, worded as by
    /// [`Record::json`]; so is a document `T` refuses (a wrong type, a key given twice). Skipped
    /// fields are checked for JSON syntax, not decoded.
    ///
    /// The SDK's own reader reads first; a document it refuses (a bad one, or a shape it leaves
    /// to serde_json such as bytes or `RawValue`) is read again by serde_json, so `T`'s
    /// `Deserialize` may run twice on it and should have no side effects.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        // The fast reader accepts only UTF-8 that serde_json accepts, and reads it the same
        // way; whatever it refuses is read again, for the value or the error's wording.
        match crate::json_in::from_slice(&self.value) {
            Some(value) => Ok(value),
            None => self.parse_refused(),
        }
    }

    /// [`Record::parse`] of a document the SDK's reader refused: serde_json's turn.
    #[cold]
    #[inline(never)]
    fn parse_refused<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        let not_json =
            |e: serde_json::Error| Error::bad_record(format!("value is not valid JSON: {e}"));
        // Checked once here, so that the parser need not check each string it reads; on
        // failure the tree parser words the error exactly as `json()` does.
        let Some(text) = crate::utf8::from_utf8(&self.value) else {
            return Err(match self.json() {
                Err(error) => error,
                Ok(_) => Error::bad_record("value is not valid JSON: not UTF-8"),
            });
        };
        serde_json::from_str(text).map_err(not_json)
    }

    /// This record (key, headers, timestamp kept) with its value replaced by `value` as JSON.
    /// The input's value is not copied. The output is written into a buffer the size of the
    /// input's value, up to [`WITH_JSON_START`], which a transform's output seldom outgrows,
    /// so it is not grown and copied on the way (a larger output still grows it).
    pub fn with_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<Self, Error> {
        let capacity = self.value.len().min(WITH_JSON_START);
        Ok(Record {
            key: self.key.clone(),
            value: crate::json_out::to_vec_with_capacity(value, capacity)
                .map_err(serialise_error)?,
            headers: self.headers.clone(),
            timestamp: self.timestamp,
        })
    }

    /// The first header named `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_slice())
    }
}

fn to_json_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    crate::json_out::to_vec(value).map_err(serialise_error)
}

fn serialise_error(error: crate::json_out::WriteError) -> Error {
    Error::failure(format!("cannot serialise JSON: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[derive(Debug, Deserialize)]
    struct Person<'a> {
        #[serde(borrow)]
        name: Cow<'a, str>,
        age: u32,
    }

    #[test]
    fn parse_borrows_strings_and_skips_unknown_fields() {
        let record = Record::new(r#"{"name": "Zoë", "extra": {"deep": [1, "x"]}, "age": 36}"#);
        let person: Person = record.parse().unwrap();
        assert!(matches!(person.name, Cow::Borrowed("Zoë")));
        assert_eq!(person.age, 36);
        let escaped = Record::new(r#"{"name": "A\"B", "age": 1}"#);
        assert_eq!(escaped.parse::<Person>().unwrap().name, "A\"B");
    }

    #[test]
    fn parse_errors_are_bad_records_worded_like_json() {
        for value in [
            &b"{not json"[..],
            &[0xff, 0xfe],
            b"{\"name\": \"\xff\", \"age\": 1}",
        ] {
            let record = Record::new(value);
            let error = record.parse::<Person>().unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::BadRecord);
            assert_eq!(error, record.json().unwrap_err());
        }
        let error = Record::new(r#"{"name": 1, "age": 1}"#)
            .parse::<Person>()
            .unwrap_err();
        assert!(
            error.message().starts_with("value is not valid JSON"),
            "{error}"
        );
    }

    #[test]
    fn malformed_json_is_a_bad_record() {
        let error = Record::new("{not json").json().unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::BadRecord);
        assert!(error.message().contains("not valid JSON"), "{error}");
    }

    #[test]
    fn with_json_reserves_at_most_its_start_for_a_small_output_of_a_large_input() {
        // A response of many results, each split into its own small output.
        let large = Record::new(format!("[{}]", "1,".repeat(50_000) + "1"));
        let out = large.with_json(&serde_json::json!({"id": 7})).unwrap();
        assert_eq!(out.value, br#"{"id":7}"#);
        assert!(
            out.value.capacity() <= WITH_JSON_START,
            "{}",
            out.value.capacity()
        );
        // An output larger than the start still comes out whole.
        let text = "x".repeat(3 * WITH_JSON_START);
        let out = large
            .with_json(&serde_json::json!({ "text": text }))
            .unwrap();
        assert_eq!(out.value.len(), text.len() + 11);
    }

    #[test]
    fn with_json_keeps_key_and_headers() {
        let record = Record {
            key: Some(b"k".to_vec()),
            value: b"{}".to_vec(),
            headers: vec![("h".into(), b"v".to_vec())],
            timestamp: Some(7),
        };
        let out = record.with_json(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.header("h"), Some(&b"v"[..]));
        assert_eq!(out.timestamp, Some(7));
        assert_eq!(out.value, br#"{"a":1}"#);
    }
}
