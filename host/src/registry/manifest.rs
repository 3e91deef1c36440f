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
        toml::from_str(&text).map_err(|e| ManifestError {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })
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
}
