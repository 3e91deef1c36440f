//! A loaded plugin version: compiled once, type-checked once against the world it implements
//! (`transformer` or `batch-transformer`, as an `InstancePre`), then instantiated cheaply for
//! every worker that needs it.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::bindings::batch::BatchTransformerPre;
use super::bindings::{CONTRACT_VERSION, TransformerPre};
use super::cache::CacheOutcome;
use super::engine::PluginRuntime;
use super::error::PluginError;
use super::instance::PluginInstance;
use super::limits::PluginLimits;
use super::state::{InstanceState, PluginCounters};

/// A component type-checked against the world it implements.
pub(super) enum WorldPre {
    /// `transformer`: each record crosses the boundary as the contract's record type.
    Records(TransformerPre<InstanceState>),
    /// `batch-transformer`: a batch crosses as one buffer each way.
    Batch(BatchTransformerPre<InstanceState>),
}

/// The export that marks a `batch-transformer` component.
const BATCH_EXPORT: &str = "transform-batch";

/// One compiled, type-checked version of a plugin.
pub struct LoadedPlugin {
    name: Arc<str>,
    version: Arc<str>,
    sha256: String,
    pre: WorldPre,
    runtime: PluginRuntime,
    counters: PluginCounters,
    cache_outcome: CacheOutcome,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The first eight bytes of every component: the magic `\0asm`, version 0x0d, layer 1.
const COMPONENT_HEADER: &[u8; 8] = b"\0asm\x0d\0\x01\0";
/// The first eight bytes of a core module (version 1, layer 0).
const CORE_MODULE_HEADER: &[u8; 8] = b"\0asm\x01\0\0\0";

/// Refuses bytes that do not begin as a component does, before any parser sees them: the
/// parser's message would quote the first bytes, and a plugin folder's file may be a symlink
/// to a file its writer cannot read (a key, `/proc/self/environ`) while its rejection reason is
/// shown on the status page.
fn check_header(name: &str, bytes: &[u8]) -> Result<(), PluginError> {
    let reason = if bytes.starts_with(COMPONENT_HEADER) {
        return Ok(());
    } else if bytes.starts_with(CORE_MODULE_HEADER) {
        "it is a core WebAssembly module, not a component: build it for wasm32-wasip2 (`weir plugin build`), or wrap it with `wasm-tools component new`"
    } else if bytes.starts_with(b"\0asm") {
        "it is WebAssembly of another version or layer than a component (version 0x0d, layer 1): build it with a current toolchain for wasm32-wasip2"
    } else {
        "it does not begin with a component's header (`\\0asm`, version 0x0d, layer 1): check that it is the .wasm you meant to deploy"
    };
    Err(PluginError::Compile {
        name: name.to_owned(),
        reason: reason.to_owned(),
    })
}

impl LoadedPlugin {
    /// Hashes, compiles and type-checks a component from its bytes (read from a plugin folder
    /// with `registry::read_plugin_file`, which bounds them). Compilation is CPU-bound: call this
    /// from a blocking thread, never from an async task.
    pub fn from_bytes(
        runtime: &PluginRuntime,
        name: &str,
        bytes: &[u8],
    ) -> Result<Arc<Self>, PluginError> {
        check_header(name, bytes)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        // Checked before compiling: the pooling allocator would refuse every instantiation, with
        // a message that names neither the plugin nor the setting to change.
        if runtime.uses_pooling() {
            over_limit(name, &super::inspect::inspect(bytes), runtime.limits())?;
        }
        // Compiling a large component takes seconds the first time: shown to whoever watches.
        let progress = crate::progress::start(
            &format!("loading {name} ({} KiB)", bytes.len().div_ceil(1024)),
            None,
            "",
        );
        let compiled = match runtime.cache() {
            Some(cache) => cache.load_or_compile(runtime.engine(), bytes),
            None => Component::from_binary(runtime.engine(), bytes)
                .map(|component| (component, CacheOutcome::Disabled)),
        };
        progress.finish(match &compiled {
            Ok((_, CacheOutcome::Hit)) => "from the compiled cache",
            Ok(_) => "compiled",
            Err(_) => "failed to compile",
        });
        let (component, cache_outcome) = compiled.map_err(|e| PluginError::Compile {
            name: name.to_owned(),
            reason: format!("{e:#}"),
        })?;
        // Checked first and by name: wasmtime's linker accepts an import of a types-only interface
        // it does not define, so a plugin built for another contract version loads when its
        // shapes happen to match.
        if let Some(found) = foreign_version(&component, runtime.engine()) {
            return Err(PluginError::WrongVersion {
                name: name.to_owned(),
                found,
            });
        }
        let batch = component
            .component_type()
            .exports(runtime.engine())
            .any(|(export, _)| export == BATCH_EXPORT);
        let wrong_world = |e: wasmtime::Error| PluginError::WrongWorld {
            name: name.to_owned(),
            world: if batch {
                "batch-transformer"
            } else {
                "transformer"
            },
            reason: format!("{e:#}"),
        };
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = if batch {
            WorldPre::Batch(BatchTransformerPre::new(instance_pre).map_err(wrong_world)?)
        } else {
            WorldPre::Records(TransformerPre::new(instance_pre).map_err(wrong_world)?)
        };
        Ok(Arc::new(LoadedPlugin {
            name: name.into(),
            version: sha256[..12].into(),
            sha256,
            pre,
            runtime: runtime.clone(),
            counters: PluginCounters::default(),
            cache_outcome,
        }))
    }

    /// The plugin's name, from its file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version: the first 12 hex digits of the component's sha256.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The component's full sha256, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether the compiled code came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache_outcome
    }

    /// Counters the plugin reported through the host interface.
    pub fn counters(&self) -> &PluginCounters {
        &self.counters
    }

    /// A fresh instance, `init`-ed with `config` (a JSON object as text).
    pub fn instantiate(
        self: &Arc<Self>,
        config: &str,
        limits: PluginLimits,
    ) -> Result<PluginInstance, PluginError> {
        PluginInstance::new(Arc::clone(self), config, limits)
    }

    pub(super) fn pre(&self) -> &WorldPre {
        &self.pre
    }

    pub(super) fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    pub(super) fn identity(&self) -> (Arc<str>, Arc<str>) {
        (Arc::clone(&self.name), Arc::clone(&self.version))
    }
}

fn over_limit(
    name: &str,
    shape: &super::inspect::ComponentShape,
    limits: super::engine::ComponentLimits,
) -> Result<(), PluginError> {
    let checks = [
        (
            shape.core_instances,
            limits.core_instances,
            "core_instances",
        ),
        (shape.memories, limits.memories, "memories"),
        (shape.tables, limits.tables, "tables"),
    ];
    match checks.into_iter().find(|(found, limit, _)| found > limit) {
        Some((found, limit, key)) => Err(PluginError::OverLimit {
            name: name.to_owned(),
            key,
            found,
            limit,
        }),
        None => Ok(()),
    }
}

/// The `weir:plugin` version a component names in its imports or exports
/// (`weir:plugin/INTERFACE@VERSION`) when it is not semver-compatible with the one this host links.
fn foreign_version(component: &Component, engine: &Engine) -> Option<String> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    names
        .filter_map(|name| name.strip_prefix("weir:plugin/")?.split_once('@'))
        .map(|(_, version)| version)
        .find(|version| compatibility(version) != compatibility(CONTRACT_VERSION))
        .map(str::to_owned)
}

/// What two semver-compatible versions share, as wasmtime's linker judges it: the major version,
/// and for 0.x the minor version too.
fn compatibility(version: &str) -> (&str, Option<&str>) {
    let mut parts = version.split(['.', '-', '+']);
    match (parts.next().unwrap_or(""), parts.next()) {
        ("0", minor) => ("0", minor),
        (major, _) => (major, None),
    }
}

#[cfg(test)]
mod tests {
    use super::compatibility;

    #[test]
    fn contract_versions_are_compatible_as_semver_says() {
        assert_eq!(compatibility("0.1.0"), compatibility("0.1.3"));
        assert_ne!(compatibility("0.2.0"), compatibility("0.1.0"));
        assert_eq!(compatibility("1.4.0"), compatibility("1.0.0"));
        assert_ne!(compatibility("1.0.0"), compatibility("0.1.0"));
    }
}
