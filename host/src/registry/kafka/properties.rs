//! The registry's client properties file: the librdkafka settings (TLS, SASL) that a fleet's
//! brokers ask of every client, read from the `key=value` file Kafka's own tools take with
//! `--command-config`, so that credentials stay off the command line and out of shell history.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::secret::Secret;

/// The largest properties file read; a client configuration is a few hundred bytes.
pub const MAX_PROPERTIES_BYTES: u64 = 64 * 1024;

/// Properties weir sets on the registry's clients itself, because the registry's reads and
/// writes depend on them (`bootstrap.servers` comes from `--registry`).
const SET_BY_WEIR: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
    "enable.idempotence",
    "acks",
    "transactional.id",
];

/// A registry properties file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("registry properties {path}: {reason}")]
pub struct PropertiesError {
    /// The file.
    pub path: String,
    /// What is wrong, with the line, and what to do.
    pub reason: String,
}

/// Reads the librdkafka properties in `path`; `${VAR}` in a value comes from the environment.
pub fn read_properties(path: &Path) -> Result<BTreeMap<String, Secret>, PropertiesError> {
    let failed = |reason: String| PropertiesError {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| failed(format!("cannot open it: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_PROPERTIES_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_PROPERTIES_BYTES {
        return Err(failed(format!(
            "it is larger than {MAX_PROPERTIES_BYTES} bytes; a client configuration is a few lines"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| failed("it is not UTF-8 text".to_owned()))?;
    parse_properties(&text, &|name| std::env::var(name).ok()).map_err(failed)
}

/// Parses properties text: one `key=value` (or `key: value`) per line, blank lines and lines
/// starting with `#` or `!` ignored, whitespace around keys and values trimmed, values otherwise
/// literal (no Java escapes or line continuations). A key given twice, a key weir sets itself
/// and Java-only keys are refused, naming the line.
pub fn parse_properties(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, Secret>, String> {
    let mut properties = BTreeMap::new();
    let mut first_line_of = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        if line.ends_with('\\') {
            return Err(format!(
                "line {number}: a line continuation (`\\` at the end) is not supported; put the value on one line"
            ));
        }
        let Some(separator) = line.find(['=', ':']) else {
            return Err(format!("line {number}: expected `key=value`"));
        };
        let key = line[..separator].trim();
        let written = line[separator + 1..].trim();
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !key_ok {
            return Err(format!(
                "line {number}: `{key}` is not a property name; names use letters, digits, `.`, `_` and `-`"
            ));
        }
        if SET_BY_WEIR.contains(&key) {
            return Err(format!(
                "line {number}: `{key}` is set by weir (the brokers come from --registry); remove the line"
            ));
        }
        if key == "sasl.jaas.config" {
            return Err(format!(
                "line {number}: `sasl.jaas.config` is a Java client's key; weir's client (librdkafka) takes `sasl.mechanism`, `sasl.username` and `sasl.password`"
            ));
        }
        let value = crate::config::substitute_env(written, lookup)
            .map_err(|message| format!("line {number}, `{key}`: {message}"))?;
        if let Some(first) = first_line_of.insert(key.to_owned(), number) {
            return Err(format!(
                "line {number}: `{key}` is already set on line {first}; keep one"
            ));
        }
        properties.insert(key.to_owned(), Secret::new(value));
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BTreeMap<String, Secret>, String> {
        parse_properties(text, &|name| {
            (name == "KAFKA_PASSWORD").then(|| "s3cret".to_owned())
        })
    }

    #[test]
    fn reads_keys_values_comments_and_environment_references() {
        let properties = parse(
            "# a client config\n! also a comment\n\n  security.protocol = SASL_SSL\n\
             sasl.mechanism:SCRAM-SHA-512\nsasl.password=${KAFKA_PASSWORD}\n\
             ssl.ca.location=/etc/ssl/ca.pem\nsasl.username=a=b\n",
        )
        .unwrap();
        let exposed: Vec<(&str, &str)> = properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(
            exposed,
            [
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.password", "s3cret"),
                ("sasl.username", "a=b"),
                ("security.protocol", "SASL_SSL"),
                ("ssl.ca.location", "/etc/ssl/ca.pem"),
            ]
        );
        assert!(!format!("{properties:?}").contains("s3cret"));
    }

    #[test]
    fn refuses_what_it_cannot_read_as_written_naming_the_line() {
        for (text, expected) in [
            ("security.protocol\n", "line 1: expected `key=value`"),
            (
                "a=1\n\nbootstrap.servers=x:9092\n",
                "line 3: `bootstrap.servers` is set by weir",
            ),
            ("group.id=mine\n", "`group.id` is set by weir"),
            (
                "sasl.username=a\nsasl.username=b\n",
                "line 2: `sasl.username` is already set on line 1",
            ),
            (
                "sasl.password=${UNSET_PASSWORD}\n",
                "line 1, `sasl.password`: environment variable `UNSET_PASSWORD` is not set",
            ),
            ("sasl.jaas.config=org.apache.kafka...\n", "librdkafka"),
            ("ssl.key.password=a\\\n", "line continuation"),
            ("my key=1\n", "not a property name"),
            ("=1\n", "not a property name"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn reading_a_file_bounds_its_size_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.properties");
        std::fs::write(&path, "security.protocol=SSL\n").unwrap();
        let properties = read_properties(&path).unwrap();
        assert_eq!(properties["security.protocol"].expose(), "SSL");

        std::fs::write(&path, "#".repeat(MAX_PROPERTIES_BYTES as usize + 1)).unwrap();
        let error = read_properties(&path).unwrap_err().to_string();
        assert!(
            error.contains("client.properties") && error.contains("larger than"),
            "{error}"
        );

        let error = read_properties(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("absent: cannot open it"), "{error}");
    }
}
