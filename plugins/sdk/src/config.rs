//! Typed access to the JSON config object the host passes to `init`, with errors that name the key.

use serde_json::{Map, Value};

use crate::Error;

/// A plugin's config: the `config` table of its entry in the pipeline file, as a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    entries: Map<String, Value>,
}

impl Config {
    /// Parses the host's config text; it must be a JSON object.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        match serde_json::from_str(text) {
            Ok(Value::Object(entries)) => Ok(Config { entries }),
            Ok(other) => Err(Error::config(format!(
                "config must be an object, got {other}"
            ))),
            Err(e) => Err(Error::config(format!("config is not valid JSON: {e}"))),
        }
    }

    /// The raw value at `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)
    }

    /// The string at `key`, or `None` when absent; an error when present but not a string.
    pub fn str(&self, key: &str) -> Result<Option<&str>, Error> {
        match self.entries.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::config(format!(
                "config key `{key}` must be a string, got {other}"
            ))),
        }
    }

    /// The string at `key`; an error naming the key when absent.
    pub fn required_str(&self, key: &str) -> Result<&str, Error> {
        self.str(key)?
            .ok_or_else(|| Error::config(format!("config key `{key}` is required")))
    }

    /// A list of strings at `key`, given either as an array or as comma-separated text.
    pub fn list(&self, key: &str) -> Result<Vec<String>, Error> {
        match self.entries.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str().map(String::from).ok_or_else(|| {
                        Error::config(format!("config key `{key}` must list strings, got {item}"))
                    })
                })
                .collect(),
            Some(other) => Err(Error::config(format!(
                "config key `{key}` must be a list of strings, got {other}"
            ))),
        }
    }

    /// Every key given, to reject unknown ones.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Fails naming the first key not in `known`, so a typo never goes unnoticed.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), Error> {
        match self.keys().find(|key| !known.contains(key)) {
            Some(key) => Err(Error::config(format!(
                "unknown config key `{key}`; expected one of: {}",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_accepts_array_or_comma_text() {
        let config = Config::parse(r#"{"a": "x, y,,z", "b": ["p", "q"]}"#).unwrap();
        assert_eq!(config.list("a").unwrap(), ["x", "y", "z"]);
        assert_eq!(config.list("b").unwrap(), ["p", "q"]);
        assert!(config.list("missing").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let config = Config::parse(r#"{"n": 3, "typo": 1}"#).unwrap();
        assert!(config.str("n").unwrap_err().message().contains("`n`"));
        assert!(
            config
                .required_str("x")
                .unwrap_err()
                .message()
                .contains("`x`")
        );
        let err = config.deny_unknown(&["n"]).unwrap_err();
        assert!(err.message().contains("`typo`"), "{err}");
    }

    #[test]
    fn non_object_config_is_rejected() {
        assert_eq!(
            Config::parse("[1]").unwrap_err().kind(),
            crate::ErrorKind::Config
        );
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }
}
