//! The compiled-code cache: components compiled once are stored under a key made of their hash
//! and the engine's configuration, so a restart with many plugins does not recompile them, and a
//! wasmtime upgrade or a configuration change never loads stale machine code. Only the most
//! recently used entries are kept, so a long run of hot swaps does not fill the disk.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

/// Entries kept by default. A compiled plugin takes from a few hundred KiB to a few MiB; a
/// host runs a handful of plugins with a few versions of history each, so this keeps every one
/// it could load soon while bounding the folder.
pub const DEFAULT_MAX_ENTRIES: usize = 64;

/// A folder of precompiled components owned by this host.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    max_entries: usize,
}

impl CompiledCache {
    /// A cache in `dir` (created on first store) keeping [`DEFAULT_MAX_ENTRIES`] entries.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_max_entries(dir, DEFAULT_MAX_ENTRIES)
    }

    /// A cache in `dir` keeping the `max_entries` most recently used entries.
    pub fn with_max_entries(dir: impl Into<PathBuf>, max_entries: usize) -> Self {
        CompiledCache {
            dir: dir.into(),
            max_entries: max_entries.max(1),
        }
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
                Ok(component) => {
                    mark_used(&entry);
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(error) => {
                    tracing::warn!(entry = %entry.display(), %error, "Ignoring an unusable compiled-cache entry.");
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(error) = self.store(&entry, &component) {
            tracing::warn!(entry = %entry.display(), %error, "Cannot store compiled code; the next start recompiles.");
        }
        match self.prune() {
            Ok(0) => {}
            Ok(removed) => {
                tracing::debug!(dir = %self.dir.display(), removed, "Removed least recently used compiled-cache entries.");
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "Cannot prune the compiled cache.");
            }
        }
        Ok((component, CacheOutcome::Miss))
    }

    /// Deletes the least recently used entries beyond `max_entries`; how many went. An entry
    /// another process is about to read is simply recompiled there.
    fn prune(&self) -> std::io::Result<usize> {
        let mut entries: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        if entries.len() <= self.max_entries {
            return Ok(0);
        }
        entries.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        let mut removed = 0;
        for (_, path) in entries.into_iter().skip(self.max_entries) {
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
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

/// Marks an entry as just used (its modification time), so pruning keeps it.
fn mark_used(entry: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(entry)
        .and_then(|file| file.set_modified(SystemTime::now()));
    if let Err(error) = touched {
        tracing::debug!(entry = %entry.display(), %error, "Cannot mark a compiled-cache entry as used.");
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

    /// The smallest component there is, made distinct by a custom section named `tag`.
    fn empty_component(tag: &str) -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        let name = tag.as_bytes();
        bytes.push(0); // custom section
        bytes.push(u8::try_from(name.len() + 1).expect("a short tag"));
        bytes.push(u8::try_from(name.len()).expect("a short tag"));
        bytes.extend_from_slice(name);
        bytes
    }

    fn set_age(entry: &Path, seconds_ago: u64) {
        let file = std::fs::File::options().write(true).open(entry).unwrap();
        file.set_modified(SystemTime::now() - std::time::Duration::from_secs(seconds_ago))
            .unwrap();
    }

    #[test]
    fn only_the_most_recently_used_entries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::with_max_entries(dir.path(), 2);
        let engine = Engine::default();
        let (a, b, c) = (
            empty_component("a"),
            empty_component("b"),
            empty_component("c"),
        );
        for component in [&a, &b] {
            let (_, outcome) = cache.load_or_compile(&engine, component).unwrap();
            assert_eq!(outcome, CacheOutcome::Miss);
        }
        set_age(&cache.entry(&engine, &a), 100);
        set_age(&cache.entry(&engine, &b), 50);
        // Using `a` makes `b` the least recently used.
        let (_, outcome) = cache.load_or_compile(&engine, &a).unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
        cache.load_or_compile(&engine, &c).unwrap();
        assert!(cache.entry(&engine, &a).exists(), "recently used: kept");
        assert!(
            !cache.entry(&engine, &b).exists(),
            "least recently used: removed"
        );
        assert!(cache.entry(&engine, &c).exists(), "just stored: kept");
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
