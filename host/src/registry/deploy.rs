//! Turning a file in the registry folder into an active plugin version: read, hash, compile (or
//! load from the compiled cache), type-check, `init` once per pipeline that uses it, and only
//! then activate. Used at startup and by the watcher alike.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::manifest::Manifest;
use super::rollout::{Rollout, RolloutPlan};
use super::slots::{PluginSlots, PluginVersion};
use super::{PluginFile, PluginRegistry, RegistryError, read_plugin_file};
use crate::config::{PipelineFile, TransformConfig};
use crate::connectors::SourceConfig;
use crate::runtime::{LoadedPlugin, PluginLimits, PluginRuntime};

/// One use of a plugin by a pipeline: what its `init` is validated against.
#[derive(Debug, Clone)]
pub struct PluginUse {
    /// The pipeline.
    pub pipeline: String,
    /// Its transform entry.
    pub transform: TransformConfig,
    /// Its limits.
    pub limits: PluginLimits,
    /// Its source, whose partition count resolves a canary's share.
    pub source: SourceConfig,
}

/// What a deployment did.
#[derive(Debug, Clone)]
pub enum Deployment {
    /// A new version is active.
    Activated {
        /// The new version.
        version: PluginVersion,
        /// The version it replaced, if any.
        previous: Option<String>,
    },
    /// The file's content and manifest equal the active version's.
    Unchanged,
    /// A candidate is staged beside the active version.
    Staged {
        /// The candidate.
        version: PluginVersion,
        /// How it shares the records.
        rollout: Rollout,
    },
}

/// Deploys plugins from one registry folder into one set of slots.
#[derive(Debug, Clone)]
pub struct Deployer {
    registry: PluginRegistry,
    runtime: PluginRuntime,
    slots: PluginSlots,
    uses: Arc<BTreeMap<String, Vec<PluginUse>>>,
}

impl Deployer {
    /// A deployer for the plugins that `config`'s pipelines use.
    pub fn new(
        registry: PluginRegistry,
        runtime: PluginRuntime,
        slots: PluginSlots,
        config: &PipelineFile,
    ) -> Self {
        let mut uses: BTreeMap<String, Vec<PluginUse>> = BTreeMap::new();
        for pipeline in &config.pipelines {
            for transform in &pipeline.transforms {
                uses.entry(transform.plugin.clone())
                    .or_default()
                    .push(PluginUse {
                        pipeline: pipeline.name.clone(),
                        transform: transform.clone(),
                        limits: pipeline.limits.plugin_limits(),
                        source: pipeline.source.clone(),
                    });
            }
        }
        Deployer {
            registry,
            runtime,
            slots,
            uses: Arc::new(uses),
        }
    }

    /// The registry folder.
    pub fn registry(&self) -> &PluginRegistry {
        &self.registry
    }

    /// The live slots.
    pub fn slots(&self) -> &PluginSlots {
        &self.slots
    }

    /// Names of the plugins some pipeline uses.
    pub fn used_plugins(&self) -> impl Iterator<Item = &str> {
        self.uses.keys().map(String::as_str)
    }

    /// Whether some pipeline uses plugin `name`.
    pub fn is_used(&self, name: &str) -> bool {
        self.uses.contains_key(name)
    }

    /// Deploys plugin `name` from the folder. CPU-bound: call from a blocking thread. On error
    /// nothing changes and the running version keeps running.
    pub fn deploy(&self, name: &str) -> Result<Deployment, RegistryError> {
        self.deploy_with(name, None, || {
            let bytes = self.read_component(name, &self.registry.path_of(name), false)?;
            Ok((
                bytes,
                Manifest::load(&self.registry.manifest_path_of(name))?,
            ))
        })
    }

    /// Deploys plugin `name` from `bytes` and `manifest` that came from elsewhere than the folder
    /// (the Kafka registry), with every check a file from the folder goes through. CPU-bound.
    pub fn deploy_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: Manifest,
    ) -> Result<Deployment, RegistryError> {
        self.deploy_with(name, None, || Ok((bytes.to_vec(), manifest)))
    }

    /// [`Deployer::deploy_bytes`] of a version the fleet's registry rolled `name` back to: when
    /// it replaces the active version, the change counts as a rollback for `reason` (the
    /// rollbacks metric, the admin API's `last_rollback`, the status page's history), as a
    /// rollback made in this process does.
    pub fn roll_back_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: Manifest,
        reason: &str,
    ) -> Result<Deployment, RegistryError> {
        self.deploy_with(name, Some(reason), || Ok((bytes.to_vec(), manifest)))
    }

    /// Reads, validates and activates `name`; a rollback for `rollback` (its reason) when given.
    fn deploy_with(
        &self,
        name: &str,
        rollback: Option<&str>,
        read: impl FnOnce() -> Result<(Vec<u8>, Manifest), RegistryError>,
    ) -> Result<Deployment, RegistryError> {
        let started = Instant::now();
        let result = read().and_then(|(bytes, manifest)| self.prepare(name, &bytes, manifest));
        let version = match result {
            Ok(Some(version)) => version,
            Ok(None) => return Ok(Deployment::Unchanged),
            Err(error) => {
                self.slots.note_rejection(name, &error.to_string());
                return Err(error);
            }
        };
        let previous = self
            .slots
            .get(name)
            .map(|slot| slot.current().1.plugin.version().to_owned());
        match rollback {
            Some(reason) => self.slots.activate_rollback(version.clone(), reason),
            None => self.slots.activate(version.clone()),
        };
        tracing::info!(
            plugin = name,
            version = version.plugin.version(),
            previous = previous.as_deref().unwrap_or("none"),
            cache = version.plugin.cache_outcome().as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Plugin activated."
        );
        Ok(Deployment::Activated { version, previous })
    }

    /// Stages plugin `name`'s candidate from the folder (`NAME.candidate.wasm`, with
    /// `NAME.candidate.toml` or else `NAME.toml` as its manifest) beside its active version,
    /// after the checks of [`Deployer::deploy`]. CPU-bound: call from a blocking thread. On error
    /// nothing changes. `name` comes from a request: a name that is no plugin's, or one of a
    /// plugin not loaded, is refused before any file is touched.
    pub fn stage(&self, name: &str, rollout: RolloutPlan) -> Result<Deployment, RegistryError> {
        if !crate::config::is_plugin_name(name) || self.slots.get(name).is_none() {
            return Err(super::rollout::RolloutError::UnknownPlugin(name.to_owned()).into());
        }
        let (wasm, manifest) = super::rollout::candidate_files(&self.registry, name);
        let bytes = self.read_component(name, &wasm, true)?;
        let manifest = Arc::new(Manifest::load(&manifest)?);
        self.stage_bytes(name, &bytes, manifest, rollout)
    }

    /// Stages a candidate given as bytes (from any registry) after the checks of
    /// [`Deployer::deploy`]: compiled, type-checked, `init` against every pipeline using it. A
    /// canary's share is resolved against the sources of the pipelines using the plugin (for
    /// Kafka, a metadata request: this blocks).
    pub fn stage_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: Arc<Manifest>,
        plan: RolloutPlan,
    ) -> Result<Deployment, RegistryError> {
        let rollout = plan.resolve(name, || self.partition_count(name))?;
        super::rollout::validate(name, &rollout)?;
        if self.slots.get(name).is_none() {
            return Err(super::rollout::RolloutError::UnknownPlugin(name.to_owned()).into());
        }
        let version = self.validate(name, bytes, manifest)?;
        self.slots.stage(version.clone(), rollout.clone())?;
        Ok(Deployment::Staged { version, rollout })
    }

    /// The largest partition count among the sources of the pipelines using `name`.
    fn partition_count(&self, name: &str) -> Result<u32, String> {
        let mut largest = 0;
        for plugin_use in self.uses.get(name).into_iter().flatten() {
            let count = plugin_use.source.spec().partition_count().map_err(|e| {
                format!(
                    "cannot count the partitions of pipeline `{}`'s source ({e}); list them with --canary-partitions",
                    plugin_use.pipeline
                )
            })?;
            largest = largest.max(count);
        }
        Ok(largest)
    }

    /// Makes plugin `name`'s staged candidate its active version. With the folder registry its
    /// files then replace `NAME.wasm` and `NAME.toml`, so a restart runs it too.
    pub fn promote(&self, name: &str) -> Result<PluginVersion, RegistryError> {
        let version = self.slots.promote(name)?;
        super::rollout::adopt_candidate_files(&self.registry, name, &version);
        Ok(version)
    }

    /// Drops plugin `name`'s staged candidate (its files stay in the folder).
    pub fn abort(&self, name: &str, reason: &str) -> Result<PluginVersion, RegistryError> {
        Ok(self.slots.abort(name, reason)?)
    }

    /// Reads plugin `name`'s component file (its candidate's with `candidate`); a missing one
    /// names the registry folder and how to put the file there.
    fn read_component(
        &self,
        name: &str,
        path: &Path,
        candidate: bool,
    ) -> Result<Vec<u8>, RegistryError> {
        read_plugin_file(path, PluginFile::Component).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                RegistryError::NotFound {
                    name: name.to_owned(),
                    dir: self.registry.dir().display().to_string(),
                    candidate,
                }
            } else {
                RegistryError::Read {
                    path: path.display().to_string(),
                    source,
                }
            }
        })
    }

    /// Compiles and type-checks a component and runs its `init` for every pipeline using it.
    fn validate(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: Arc<Manifest>,
    ) -> Result<PluginVersion, RegistryError> {
        let plugin = LoadedPlugin::from_bytes(&self.runtime, name, bytes)?;
        let version = PluginVersion { plugin, manifest };
        for plugin_use in self.uses.get(name).into_iter().flatten() {
            version
                .instantiate(plugin_use.transform.request(plugin_use.limits))
                .map_err(|source| RegistryError::Rejected {
                    pipeline: plugin_use.pipeline.clone(),
                    source,
                })?;
        }
        Ok(version)
    }

    /// Validates `bytes` as `name` without activating it; `None` when nothing changed.
    fn prepare(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: Manifest,
    ) -> Result<Option<PluginVersion>, RegistryError> {
        let manifest = Arc::new(manifest);
        if let Some(slot) = self.slots.get(name) {
            let (_, active) = slot.current();
            if active.plugin.sha256() == hex::encode(Sha256::digest(bytes))
                && active.manifest == manifest
            {
                return Ok(None);
            }
        }
        self.validate(name, bytes, manifest).map(Some)
    }
}
