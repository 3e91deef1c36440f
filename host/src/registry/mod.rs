//! The plugin registry folder: where `NAME.wasm` files live, how a pipeline's plugin names map
//! to files, and what `weir plugin list` shows. Submodules keep the live versions (`slots`),
//! watch the folder for hot swaps (`watch`) and read manifests (`manifest`); `kafka` is the
//! registry of a fleet, in a compacted Kafka topic.

mod deploy;
pub mod kafka;
mod manifest;
mod plugin_file;
pub mod rollout;
mod slots;
mod watch;

pub use deploy::{Deployer, Deployment, PluginUse};
pub use manifest::{Capability, Manifest, ManifestError};
pub use plugin_file::{PluginFile, read_plugin_file};
pub use rollout::{Rollout, RolloutError, RolloutInfo, RolloutPlan};
pub use slots::{
    FailedProbation, HISTORY_LIMIT, PluginSlot, PluginSlots, PluginVersion, RollbackError,
    RollbackPolicy, SlotInfo, VersionInfo, blames_the_version,
};
pub use watch::{WatchHandle, watch};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::runtime::{LoadedPlugin, PluginError, PluginRuntime};

/// The default registry folder, relative to the working directory.
pub const DEFAULT_DIR: &str = "plugin-registry";

/// A registry folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No `NAME.wasm` in the folder (or, for a candidate, no `NAME.candidate.wasm`).
    #[error("{}", not_found(name, dir, *candidate))]
    NotFound {
        /// The plugin's name.
        name: String,
        /// The registry folder.
        dir: String,
        /// Whether the file missing is the plugin's candidate, `NAME.candidate.wasm`.
        candidate: bool,
    },
    /// The folder could not be listed.
    #[error("cannot list plugin folder {dir}: {source}")]
    List {
        /// The folder.
        dir: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The manifest beside the component is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The plugin failed to load.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A staged rollout could not be started, promoted or aborted.
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    /// A pipeline that uses the plugin cannot run this version (its `init` refused the config,
    /// or it asks for a capability the pipeline does not allow).
    #[error("rejected for pipeline `{pipeline}`: {source}")]
    Rejected {
        /// The pipeline.
        pipeline: String,
        /// Why.
        source: PluginError,
    },
}

/// What [`RegistryError::NotFound`] says: where the file was expected and how to put it there.
fn not_found(name: &str, dir: &str, candidate: bool) -> String {
    if candidate {
        format!(
            "plugin `{name}` has no candidate in {dir}: expected {dir}/{name}{mark}.wasm. `weir plugin build` writes {name}.wasm: build the new version into another folder (--plugins DIR) and copy it to {dir}/{name}{mark}.wasm; in a fleet, stage it with `weir plugin publish {name}.wasm --registry ... --shadow N` (or --canary)",
            mark = rollout::CANDIDATE_MARK
        )
    } else {
        format!(
            "plugin `{name}` is not in {dir}: expected {dir}/{name}.wasm. Build it with `weir plugin build PATH/TO/{name}` or copy the component there"
        )
    }
}

/// One `.wasm` file in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// The plugin's name: the file name without `.wasm`.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The version: the first 12 hex digits of its sha256.
    pub version: String,
    /// The language it was written in, from the component's producers section, when it says.
    pub language: Option<String>,
}

/// A registry folder.
#[derive(Debug, Clone)]
pub struct PluginRegistry {
    dir: PathBuf,
}

impl PluginRegistry {
    /// The registry at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PluginRegistry { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where plugin `name` lives.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }

    /// Where plugin `name`'s optional manifest lives.
    pub fn manifest_path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// Compiles and type-checks plugin `name`. CPU-bound: call from a blocking thread.
    pub fn load(
        &self,
        runtime: &PluginRuntime,
        name: &str,
    ) -> Result<Arc<LoadedPlugin>, RegistryError> {
        let path = self.path_of(name);
        if !path.is_file() {
            return Err(RegistryError::NotFound {
                name: name.to_owned(),
                dir: self.dir.display().to_string(),
                candidate: false,
            });
        }
        let bytes = read_plugin_file(&path, PluginFile::Component).map_err(|source| {
            RegistryError::Read {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(LoadedPlugin::from_bytes(runtime, name, &bytes)?)
    }

    /// The `.wasm` files in the folder, by name.
    pub fn list(&self) -> Result<Vec<RegistryEntry>, RegistryError> {
        let list_error = |source| RegistryError::List {
            dir: self.dir.display().to_string(),
            source,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(list_error)? {
            let path = entry.map_err(list_error)?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wasm"))
            else {
                continue;
            };
            let bytes = read_plugin_file(&path, PluginFile::Component).map_err(|source| {
                RegistryError::Read {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            entries.push(RegistryEntry {
                name: name.to_owned(),
                size: bytes.len() as u64,
                version: hex::encode(Sha256::digest(&bytes))[..12].to_owned(),
                language: crate::runtime::inspect(&bytes).language,
                path,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_plugin_error_says_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let registry = PluginRegistry::new(dir.path());
        let runtime = PluginRuntime::new(None).unwrap();
        let error = registry.load(&runtime, "nope").unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("nope.wasm") && message.contains("weir plugin build"),
            "{message}"
        );
    }

    #[test]
    fn list_shows_wasm_files_with_versions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.wasm"), b"bbb").unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"aaa").unwrap();
        std::fs::write(dir.path().join("a.toml"), b"").unwrap();
        let entries = PluginRegistry::new(dir.path()).list().unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(entries[0].size, 3);
        assert_eq!(entries[0].version.len(), 12);
    }
}
