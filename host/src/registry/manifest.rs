//! `NAME.toml` beside `NAME.wasm`: what a plugin says about itself (version, description), the
//! config defaults it brings, and the capabilities it asks for (none by default).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{PluginFile, read_plugin_file};

pub use crate::runtime::Capability;

/// A plugin manifest.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The author's version string, shown beside the content hash.
    #[serde(default)]
    pub version: Option<String>,
    /// What the plugin does, in one sentence.
    #[serde(default)]
    pub description: Option<String>,
    /// Config defaults; a pipeline's `config` entries override them key by key.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Capabilities the plugin needs; none by default.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

/// A manifest could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl Manifest {
    /// Reads `path`; a missing file is an empty manifest.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let bytes = match read_plugin_file(path, PluginFile::Manifest) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(e) => {
                return Err(ManifestError {
                    path: path.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        let text = String::from_utf8(bytes).map_err(|e| ManifestError {
            path: path.to_owned(),
            reason: format!("it is not UTF-8 text ({e}): save it as UTF-8"),
        })?;
        Manifest::parse(&text).map_err(|reason| ManifestError {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses a manifest's TOML text. The error names the line and column and says what is
    /// wrong, without quoting the text: a misplaced config value (a salt, a key) must not reach
    /// the log, the admin API or the status page through it.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| describe_parse_error(&e, text))
    }

    /// The config `init` receives: the manifest's defaults overridden by the pipeline's entries.
    pub fn merged_config(
        &self,
        pipeline: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> String {
        let mut merged = self.config.clone();
        if let Some(pipeline) = pipeline {
            for (key, value) in pipeline {
                merged.insert(key.clone(), value.clone());
            }
        }
        serde_json::Value::Object(merged).to_string()
    }

    /// The first capability asked for that `allowed` does not grant.
    pub fn missing_grant(&self, allowed: &[Capability]) -> Option<Capability> {
        self.capabilities
            .iter()
            .copied()
            .find(|capability| !allowed.contains(capability))
    }
}

/// `line L, column C: message` for a TOML error in `text`. toml's `Display` quotes the
/// offending line, which may hold a secret; its message may quote a string value (`invalid
/// type: string "..."`), which is hidden too.
fn describe_parse_error(error: &toml::de::Error, text: &str) -> String {
    let message = hide_quoted(error.message().trim_end());
    let Some(span) = error.span() else {
        return message;
    };
    let before = text.get(..span.start.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

/// `text` with the content of every double-quoted string replaced by `***`.
fn hide_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (index, part) in parts.enumerate() {
        out.push('"');
        // Parts at even indices after the first quote are inside quotes.
        if index % 2 == 0 {
            out.push_str(crate::secret::HIDDEN);
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_merges_defaults_under_pipeline_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "version = \"1.2.0\"\ndescription = \"d\"\ncapabilities = [\"clock\"]\n[config]\nmode = \"hash\"\nsalt = \"a\"\n",
        )
        .unwrap();
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(manifest.version.as_deref(), Some("1.2.0"));
        let pipeline = serde_json::json!({"salt": "b"});
        let merged: serde_json::Value =
            serde_json::from_str(&manifest.merged_config(pipeline.as_object())).unwrap();
        assert_eq!(merged, serde_json::json!({"mode": "hash", "salt": "b"}));
        assert_eq!(manifest.missing_grant(&[]), Some(Capability::Clock));
        assert_eq!(manifest.missing_grant(&[Capability::Clock]), None);
    }

    #[test]
    fn missing_manifest_is_empty_and_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Manifest::load(&dir.path().join("none.toml")).unwrap(),
            Manifest::default()
        );
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "capabilities = [\"network\"]\n").unwrap();
        let error = Manifest::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("bad.toml") && error.contains("network"),
            "{error}"
        );
    }

    #[test]
    fn a_parse_error_names_the_line_but_never_quotes_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        // A config value written at the top level instead of under [config].
        std::fs::write(
            &path,
            "version = \"1.0.0\"\n\nsalt = \"hunter2-salt\"\n[config]\nmode = \"hash\"\n",
        )
        .unwrap();
        let error = Manifest::load(&path).unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("line 3, column 1"), "{error}");
        assert!(error.contains("unknown field `salt`"), "{error}");

        // A syntax error on a line holding a secret, and a value of the wrong type.
        for (text, line) in [
            ("version = \"1\"\ntoken = \"hunter2-token\" x\n", "line 2"),
            ("config = \"hunter2-config\"\n", "line 1"),
        ] {
            let error = Manifest::parse(text).unwrap_err();
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains(line), "{error}");
        }
    }
}
