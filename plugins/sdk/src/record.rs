//! The record type plugins see: plain owned data, so plugin logic is testable natively.

use serde::Serialize;
use serde_json::Value;

use crate::Error;

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

    /// This record (key, headers, timestamp kept) with its value replaced by `value` as JSON.
    pub fn with_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<Self, Error> {
        Ok(Record {
            value: to_json_bytes(value)?,
            ..self.clone()
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
    serde_json::to_vec(value).map_err(|e| Error::failure(format!("cannot serialise JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_a_bad_record() {
        let error = Record::new("{not json").json().unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::BadRecord);
        assert!(error.message().contains("not valid JSON"), "{error}");
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
