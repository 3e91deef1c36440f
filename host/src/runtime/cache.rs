//! The compiled-code cache: components compiled once are stored under a key made of their hash
//! and the engine's configuration, so a restart with many plugins does not recompile them, and a
//! wasmtime upgrade or a configuration change never loads stale machine code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded precompiled code.
    Hit,
    /// Compiled, and stored for next time.
    Miss,
    /// Compiled; no cache is configured.
    Disabled,
}

impl CacheOutcome {
    /// For logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Disabled => "disabled",
        }
    }
}

/// A folder of precompiled components owned by this host.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
}

impl CompiledCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompiledCache { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache file for `bytes` under `engine`'s configuration.
    pub fn entry(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", cache_key(engine, bytes)))
    }

    /// Loads precompiled code for `bytes` if present and valid, else compiles and stores it.
    /// A damaged or incompatible entry is recompiled, never trusted.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let entry = self.entry(engine, bytes);
        // Read into memory rather than mapping the file: a mapped entry truncated by another
        // process would crash the host with SIGBUS.
        if let Ok(compiled) = std::fs::read(&entry) {
            // SAFETY: the file is one this host serialised itself into its own cache folder,
            // under a key that covers the engine's configuration; wasmtime additionally checks
            // the header's version and settings and fails on a mismatch, which falls back below.
            match unsafe { Component::deserialize(engine, &compiled) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => {
                    tracing::warn!(entry = %entry.display(), %error, "Ignoring an unusable compiled-cache entry.");
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(error) = self.store(&entry, &component) {
            tracing::warn!(entry = %entry.display(), %error, "Cannot store compiled code; the next start recompiles.");
        }
        Ok((component, CacheOutcome::Miss))
    }

    fn store(&self, entry: &Path, component: &Component) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let serialized = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let temporary = entry.with_extension("partial");
        std::fs::write(&temporary, serialized)?;
        std::fs::rename(&temporary, entry)?;
        Ok(())
    }
}

/// sha256 over the component and everything that makes compiled code valid: wasmtime's version
/// and the engine's compilation settings.
fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    let mut key = Sha256::new();
    key.update(bytes);
    key.update(settings.finish().to_le_bytes());
    key.update(env!("CARGO_PKG_VERSION").as_bytes());
    hex::encode(key.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(opt_level: wasmtime::OptLevel) -> Engine {
        let mut config = wasmtime::Config::new();
        config.cranelift_opt_level(opt_level);
        Engine::new(&config).expect("the engine builds")
    }

    #[test]
    fn entries_change_with_the_component_and_with_the_engine_settings() {
        let cache = CompiledCache::new("/cache");
        let speed = engine(wasmtime::OptLevel::Speed);
        let component = b"component bytes";
        assert_eq!(
            cache.entry(&speed, component),
            cache.entry(&speed, component)
        );
        assert_ne!(
            cache.entry(&speed, component),
            cache.entry(&speed, b"other component bytes"),
            "another component"
        );
        // Code compiled under other settings (or another wasmtime) is never reused.
        assert_ne!(
            cache.entry(&speed, component),
            cache.entry(&engine(wasmtime::OptLevel::None), component),
            "other compilation settings"
        );
    }
}
