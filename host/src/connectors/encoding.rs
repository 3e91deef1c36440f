//! How file-like sinks put a record on one line: its value alone, or an envelope with key,
//! headers and timestamp (what dead letters need, since their reason is in the headers).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::record::Record;

/// The line format of a file-like sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The record's value as it is (it must be one line of JSON or text).
    Value,
    /// `{"key", "value", "headers", "timestamp"}` with the value as a string, losslessly.
    Envelope,
}

/// Encodes one record as a line, without the newline.
pub fn encode(record: &Record, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Value => record.value.to_vec(),
        Encoding::Envelope => envelope(record).to_string().into_bytes(),
    }
}

/// The envelope of a record. Bytes that are not UTF-8 are written as hex under `*_hex`, so the
/// envelope never alters what it carries.
pub fn envelope(record: &Record) -> Value {
    let mut out = Map::new();
    if let Some(key) = &record.key {
        insert_bytes(&mut out, "key", key);
    }
    insert_bytes(&mut out, "value", &record.value);
    let headers: Map<String, Value> = record
        .headers
        .iter()
        .map(|h| {
            let value = match std::str::from_utf8(&h.value) {
                Ok(text) => json!(text),
                Err(_) => json!({ "hex": hex::encode(&h.value) }),
            };
            (h.key.to_string(), value)
        })
        .collect();
    out.insert("headers".into(), Value::Object(headers));
    if let Some(timestamp) = record.timestamp {
        out.insert("timestamp".into(), json!(timestamp));
    }
    Value::Object(out)
}

fn insert_bytes(out: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => out.insert(name.into(), json!(text)),
        Err(_) => out.insert(format!("{name}_hex"), json!(hex::encode(bytes))),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keeps_headers_and_non_utf8_bytes() {
        let mut record = Record::from_value(vec![0xff, 0x00]);
        record.key = Some(b"k1".to_vec().into());
        record.set_header("weir.error", "missing field");
        record.timestamp = Some(42);
        let line = envelope(&record);
        assert_eq!(line["key"], "k1");
        assert_eq!(line["value_hex"], "ff00");
        assert_eq!(line["headers"]["weir.error"], "missing field");
        assert_eq!(line["timestamp"], 42);
    }

    #[test]
    fn value_encoding_is_the_bytes_themselves() {
        let record = Record::from_value(r#"{"a":1}"#);
        assert_eq!(encode(&record, Encoding::Value), br#"{"a":1}"#);
    }
}
