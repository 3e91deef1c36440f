//! `pii-mask`: masks personal fields before records leave the pipeline, by hashing (equal inputs
//! stay joinable) or redacting them. Configured through `init`. Only the masked values change:
//! the rest of the record passes byte for byte (numbers keep every digit, keys their order), and
//! a key given twice is masked both times.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use weir_plugin::json::pointer;
use weir_plugin::{Config, Error, Plugin, Record};

/// How a field is masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The lowercase hex sha256 of `salt` followed by the value's text.
    Hash {
        /// Prepended to every value before hashing.
        salt: String,
    },
    /// The value is replaced with a fixed string.
    Redact {
        /// What replaces the value.
        replacement: String,
    },
}

/// The plugin: the fields to mask (each a JSON pointer's reference tokens) and how.
#[derive(Debug)]
pub struct PiiMask {
    fields: Vec<Vec<String>>,
    mode: Mode,
}

impl Plugin for PiiMask {
    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&["fields", "mode", "salt", "replacement"])?;
        let fields: Vec<Vec<String>> = config
            .list("fields")?
            .iter()
            .map(|f| tokens(&pointer(f)))
            .collect();
        if fields.is_empty() {
            return Err(Error::config(
                "config key `fields` is required: the fields to mask, e.g. \"email,phone\"",
            ));
        }
        let mode = match config.str("mode")?.unwrap_or("hash") {
            "hash" => Mode::Hash {
                salt: config.str("salt")?.unwrap_or_default().to_owned(),
            },
            "redact" => Mode::Redact {
                replacement: config.str("replacement")?.unwrap_or("***").to_owned(),
            },
            other => {
                return Err(Error::config(format!(
                    "config key `mode` must be \"hash\" or \"redact\", got \"{other}\""
                )));
            }
        };
        Ok(PiiMask { fields, mode })
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        let not_json =
            |e: serde_json::Error| Error::bad_record(format!("value is not valid JSON: {e}"));
        let Ok(text) = std::str::from_utf8(&record.value) else {
            // Worded as every other plugin words it.
            return Err(record
                .json()
                .err()
                .unwrap_or_else(|| Error::bad_record("value is not valid JSON: not UTF-8")));
        };
        // Read whole once, so a record fails exactly where every plugin's `json()` fails it (a
        // number out of range, a lone surrogate), though most of it is then copied as it was.
        serde_json::from_str::<Value>(text).map_err(not_json)?;
        let document: &RawValue = serde_json::from_str(text).map_err(not_json)?;
        if !document.get().starts_with('{') {
            return Err(Error::bad_record("value must be a JSON object"));
        }
        let mut masked: Vec<(Range<usize>, String)> = Vec::new();
        for field in &self.fields {
            let mut found = Vec::new();
            find(document, field, &mut found).map_err(not_json)?;
            for value in found.into_iter().filter(|v| v.get() != "null") {
                let parsed: Value = serde_json::from_str(value.get()).map_err(not_json)?;
                let start = value.get().as_ptr() as usize - text.as_ptr() as usize;
                let replacement = Value::String(self.mask(&parsed)).to_string();
                masked.push((start..start + value.get().len(), replacement));
            }
        }
        // A field inside another masked field goes with it.
        masked.sort_by_key(|(span, _)| (span.start, std::cmp::Reverse(span.end)));
        let mut value = String::with_capacity(text.len());
        let mut copied = 0;
        for (span, replacement) in masked {
            if span.start < copied {
                continue;
            }
            value.push_str(&text[copied..span.start]);
            value.push_str(&replacement);
            copied = span.end;
        }
        value.push_str(&text[copied..]);
        let mut out = record;
        out.value = value.into_bytes();
        Ok(vec![out])
    }
}

/// A JSON pointer's reference tokens, `~1` and `~0` unescaped.
fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Every value at `path` below `value`, borrowed from the record's text: each entry of a key
/// given more than once, and an array element by its index (decimal, without a sign or
/// leading zeros, as JSON pointers write it).
fn find<'a>(
    value: &'a RawValue,
    path: &[String],
    found: &mut Vec<&'a RawValue>,
) -> Result<(), serde_json::Error> {
    let Some((token, rest)) = path.split_first() else {
        found.push(value);
        return Ok(());
    };
    match value.get().as_bytes().first() {
        Some(b'{') => {
            let Entries(entries) = serde_json::from_str(value.get())?;
            for (_, child) in entries.into_iter().filter(|(key, _)| key == token) {
                find(child, rest, found)?;
            }
        }
        Some(b'[') => {
            let index = (token == "0" || !token.starts_with(['0', '+']))
                .then(|| token.parse::<usize>().ok())
                .flatten();
            let elements: Vec<&RawValue> = serde_json::from_str(value.get())?;
            if let Some(child) = index.and_then(|i| elements.get(i)) {
                find(child, rest, found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// An object's entries in order, repeated keys included, values left as text.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

impl PiiMask {
    fn mask(&self, value: &Value) -> String {
        match &self.mode {
            Mode::Redact { replacement } => replacement.clone(),
            Mode::Hash { salt } => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                hex::encode(Sha256::digest(format!("{salt}{text}")))
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(PiiMask);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_plugin::ErrorKind;

    fn plugin(config: Value) -> Result<PiiMask, Error> {
        PiiMask::init(&Config::parse(&config.to_string()).unwrap())
    }

    fn run(plugin: &PiiMask, value: Value) -> Value {
        let out = plugin.transform(Record::new(value.to_string())).unwrap();
        serde_json::from_slice(&out[0].value).unwrap()
    }

    #[test]
    fn hashes_with_salt_and_keeps_other_fields() {
        let mask = plugin(json!({"fields": "email, location.street.name", "salt": "s"})).unwrap();
        let out = run(
            &mask,
            json!({"email": "a@b.c", "location": {"street": {"name": "Main"}}, "gender": "f"}),
        );
        assert_eq!(out["email"], hex::encode(Sha256::digest("sa@b.c")));
        assert_eq!(
            out["location"]["street"]["name"],
            hex::encode(Sha256::digest("sMain"))
        );
        assert_eq!(out["gender"], "f");
    }

    #[test]
    fn hashes_numbers_by_their_text() {
        let mask = plugin(json!({"fields": ["n"]})).unwrap();
        assert_eq!(
            run(&mask, json!({"n": 42}))["n"],
            hex::encode(Sha256::digest("42"))
        );
    }

    #[test]
    fn redacts_with_replacement() {
        let mask = plugin(json!({"fields": "phone", "mode": "redact"})).unwrap();
        assert_eq!(run(&mask, json!({"phone": "123"}))["phone"], "***");
        let mask =
            plugin(json!({"fields": "phone", "mode": "redact", "replacement": "X"})).unwrap();
        assert_eq!(run(&mask, json!({"phone": "123"}))["phone"], "X");
    }

    #[test]
    fn absent_fields_stay_absent() {
        let mask = plugin(json!({"fields": "email"})).unwrap();
        assert_eq!(run(&mask, json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn only_the_masked_values_change() {
        let mask = plugin(json!({"fields": "email, contacts.1.phone", "mode": "redact"})).unwrap();
        let input = r#"{ "id": 123456789012345678901, "n": 1E2, "email": "a@b.c", "email": "d@e.f",
            "contacts": [{"phone": "1"}, {"phone": "2"}], "z": -0.0 }"#;
        let out = mask.transform(Record::new(input)).unwrap();
        assert_eq!(
            std::str::from_utf8(&out[0].value).unwrap(),
            r#"{ "id": 123456789012345678901, "n": 1E2, "email": "***", "email": "***",
            "contacts": [{"phone": "1"}, {"phone": "***"}], "z": -0.0 }"#
        );
    }

    #[test]
    fn a_field_inside_a_masked_field_goes_with_it_whatever_the_order() {
        let inner_first = plugin(json!({"fields": "a.b, a"})).unwrap();
        let outer_first = plugin(json!({"fields": "a, a.b"})).unwrap();
        let input = json!({"a": {"b": "x", "c": 1}});
        let expected = hex::encode(Sha256::digest(r#"{"b":"x","c":1}"#));
        assert_eq!(run(&inner_first, input.clone())["a"], expected);
        assert_eq!(run(&outer_first, input)["a"], expected);
    }

    #[test]
    fn a_record_every_plugin_refuses_is_refused_though_the_field_is_not_masked() {
        let mask = plugin(json!({"fields": "email"})).unwrap();
        for input in [r#"{"n":1e400}"#, r#"{"e":"\ud800"}"#, r#"{"n":NaN}"#] {
            let error = mask.transform(Record::new(input)).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::BadRecord, "{input}");
        }
    }

    #[test]
    fn bad_input_is_a_bad_record() {
        let mask = plugin(json!({"fields": "email"})).unwrap();
        let error = mask.transform(Record::new("nope")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BadRecord);
        let error = mask.transform(Record::new("[1]")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BadRecord);
    }

    #[test]
    fn config_errors_name_the_key() {
        assert!(
            plugin(json!({}))
                .unwrap_err()
                .message()
                .contains("`fields`")
        );
        assert!(
            plugin(json!({"fields": "a", "mode": "rot13"}))
                .unwrap_err()
                .message()
                .contains("`mode`")
        );
        assert!(
            plugin(json!({"fields": "a", "colour": 1}))
                .unwrap_err()
                .message()
                .contains("`colour`")
        );
    }
}
