//! `pii-mask`: masks personal fields before records leave the pipeline, by hashing (equal inputs
//! stay joinable) or redacting them. Configured through `init`.

use serde_json::Value;
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

/// The plugin: the fields to mask (as JSON pointers) and how.
#[derive(Debug)]
pub struct PiiMask {
    fields: Vec<String>,
    mode: Mode,
}

impl Plugin for PiiMask {
    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&["fields", "mode", "salt", "replacement"])?;
        let fields: Vec<String> = config.list("fields")?.iter().map(|f| pointer(f)).collect();
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
        let mut document = record.json()?;
        if !document.is_object() {
            return Err(Error::bad_record("value must be a JSON object"));
        }
        for field in &self.fields {
            if let Some(value) = document.pointer_mut(field).filter(|v| !v.is_null()) {
                *value = Value::String(self.mask(value));
            }
        }
        Ok(vec![record.with_json(&document)?])
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
