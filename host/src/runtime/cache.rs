//! The compiled-code cache: components compiled once are stored under a key made of their hash
//! and the engine's configuration, so a restart with many plugins does not recompile them, and a
//! wasmtime upgrade or a configuration change never loads stale machine code. Only the most
//! recently used entries are kept, so a long run of hot swaps does not fill the disk.
//!
//! A cache entry is native code that wasmtime maps and runs without checking it: whoever can
//! write an entry can run code in the host. So the cache lives outside the plugin folder (by
//! default in the user's cache folder), the folder must be private to this user, and every entry
//! carries an HMAC-SHA256 under a per-host key kept beside the entries; an entry is deserialized
//! only after its tag checks. A forged, swapped or damaged entry is ignored with one WARN line and
//! the component is compiled afresh.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
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
    /// Compiled: the entry under this component's name failed authentication (forged, swapped
    /// or damaged) and was replaced.
    Rejected,
    /// Compiled; no cache is configured, or its folder cannot be trusted.
    Disabled,
}

impl CacheOutcome {
    /// For logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Rejected => "rejected",
            CacheOutcome::Disabled => "disabled",
        }
    }
}

/// Entries kept by default. A compiled plugin takes from a few hundred KiB to a few MiB; a
/// host runs a handful of plugins with a few versions of history each, so this keeps every one
/// it could load soon while bounding the folder.
pub const DEFAULT_MAX_ENTRIES: usize = 64;

/// The file, in the cache folder, holding the key that authenticates entries.
pub const KEY_FILE: &str = "hmac-key";

/// Bytes of the key: the HMAC-SHA256 block-size-independent recommendation (the hash's output).
const KEY_BYTES: usize = 32;

/// What an entry starts with: names the format, so a file of another layout (an entry written by
/// an older weir, a raw wasmtime artifact) fails before any tag is computed.
const ENTRY_MAGIC: &[u8; 8] = b"WEIRCC01";

/// Bytes of the HMAC-SHA256 tag after the magic.
const TAG_BYTES: usize = 32;

/// The largest entry read. Compiled plugins are a few MiB; a bigger file is not one this host
/// wrote, and reading it whole would cost memory before the tag could reject it.
const MAX_ENTRY_BYTES: u64 = 512 << 20;

type HmacSha256 = Hmac<Sha256>;

/// The cache folder used when none is given: `$XDG_CACHE_HOME/weir`, else `~/.cache/weir`;
/// `None` when neither variable is set (no home to cache in).
pub fn default_cache_dir() -> Option<PathBuf> {
    let absolute = |value: std::ffi::OsString| {
        let path = PathBuf::from(value);
        path.is_absolute().then_some(path)
    };
    // The XDG base directory spec says a relative XDG_CACHE_HOME is invalid and to be ignored.
    if let Some(base) = std::env::var_os("XDG_CACHE_HOME").and_then(absolute) {
        return Some(base.join("weir"));
    }
    std::env::var_os("HOME")
        .and_then(absolute)
        .map(|home| home.join(".cache").join("weir"))
}

/// A folder of precompiled components owned by this host.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    max_entries: usize,
    /// The key, read or created on first use; `None` when the folder cannot be trusted (already
    /// reported once). Shared by clones, so the WARN is printed once per process and folder.
    key: Arc<OnceLock<Option<CacheKey>>>,
}

/// The entry-authentication key. Its `Debug` never prints it.
#[derive(Clone)]
struct CacheKey([u8; KEY_BYTES]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(***)")
    }
}

/// Why the cache folder or its key cannot be trusted.
#[derive(Debug, thiserror::Error)]
enum Untrusted {
    #[error("cannot create or read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is not a folder")]
    NotAFolder,
    #[error("it belongs to user {owner}, not to this process's user {me}")]
    Owner { owner: u32, me: u32 },
    #[error("other users can write to it (mode {mode:o}); run `chmod 700` on it")]
    Writable { mode: u32 },
    #[error(
        "its key file {KEY_FILE} is not a private {KEY_BYTES}-byte file of this user (mode {mode:o}, {len} bytes, owner {owner}); delete it and weir creates a new one"
    )]
    BadKey { mode: u32, len: u64, owner: u32 },
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// Why an entry was not loaded.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("it is {0} bytes, more than any compiled plugin")]
    TooLarge(u64),
    #[error(
        "it is not a regular file of this user (a symlink, FIFO, device or another user's file)"
    )]
    NotOwnFile,
    #[error("it cannot be read: {0}")]
    Unreadable(std::io::Error),
    #[error("it does not start with weir's entry header")]
    Header,
    #[error("its HMAC does not match this component under this host's key")]
    Tag,
}

impl CompiledCache {
    /// A cache in `dir` (created on first use, private to this user) keeping
    /// [`DEFAULT_MAX_ENTRIES`] entries.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_max_entries(dir, DEFAULT_MAX_ENTRIES)
    }

    /// A cache in `dir` keeping the `max_entries` most recently used entries.
    pub fn with_max_entries(dir: impl Into<PathBuf>, max_entries: usize) -> Self {
        CompiledCache {
            dir: dir.into(),
            max_entries: max_entries.max(1),
            key: Arc::default(),
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

    /// Loads precompiled code for `bytes` if an authenticated entry is present, else compiles and
    /// stores it. Nothing reaches wasmtime's deserializer unless its tag checks.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(key) = self.key() else {
            return Ok((
                Component::from_binary(engine, bytes)?,
                CacheOutcome::Disabled,
            ));
        };
        // The key was read once, but the folder is checked at every load: one renamed away and
        // replaced by another user's (its parent writable by others) must not be used.
        if let Err(reason) = check_folder(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %reason, "Not using the compiled cache for this plugin: its folder cannot be trusted any more; compiling afresh. Fix the folder or pass another with --cache-dir.");
            return Ok((
                Component::from_binary(engine, bytes)?,
                CacheOutcome::Disabled,
            ));
        }
        let name = cache_key(engine, bytes);
        let entry = self.dir.join(format!("{name}.cwasm"));
        let mut outcome = CacheOutcome::Miss;
        match read_entry(&entry) {
            Ok(None) => {}
            Ok(Some(stored)) => match authenticate(key, &name, &stored) {
                Ok(artifact) => {
                    // SAFETY: wasmtime runs deserialized bytes as native code. These were written
                    // by a host holding this folder's private key, for exactly this component
                    // and engine configuration (the tag covers the entry's name, which covers
                    // both); wasmtime additionally checks its version and settings in the header.
                    match unsafe { Component::deserialize(engine, artifact) } {
                        Ok(component) => {
                            mark_used(&entry);
                            return Ok((component, CacheOutcome::Hit));
                        }
                        Err(error) => {
                            tracing::warn!(entry = %entry.display(), %error, "Ignoring an unusable compiled-cache entry; compiling afresh.");
                        }
                    }
                }
                Err(reason) => {
                    tracing::warn!(entry = %entry.display(), %reason, "Ignoring a compiled-cache entry that fails authentication; compiling afresh.");
                    outcome = CacheOutcome::Rejected;
                }
            },
            Err(reason) => {
                tracing::warn!(entry = %entry.display(), %reason, "Ignoring a compiled-cache entry that fails authentication; compiling afresh.");
                outcome = CacheOutcome::Rejected;
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(error) = self.store(key, &name, &entry, &component) {
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
        Ok((component, outcome))
    }

    /// The key, opening the folder on first use; `None` (reported once) when it is not private.
    fn key(&self) -> Option<&CacheKey> {
        self.key
            .get_or_init(|| match open_folder(&self.dir) {
                Ok(key) => Some(key),
                Err(reason) => {
                    tracing::warn!(dir = %self.dir.display(), %reason, "Not using the compiled cache: its folder cannot be trusted; every plugin is compiled afresh. Fix the folder or pass another with --cache-dir.");
                    None
                }
            })
            .as_ref()
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

    fn store(
        &self,
        key: &CacheKey,
        name: &str,
        entry: &Path,
        component: &Component,
    ) -> std::io::Result<()> {
        let artifact = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let tag = tag(key, name, &artifact);
        // A name of its own per process: two hosts storing the same entry at once must not
        // interleave their writes in one temporary file.
        // Created new, so a symlink planted under the name is not followed into another file.
        let temporary = entry.with_extension(format!("{}.partial", std::process::id()));
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(ENTRY_MAGIC)?;
        file.write_all(&tag)?;
        file.write_all(&artifact)?;
        drop(file);
        std::fs::rename(&temporary, entry)?;
        Ok(())
    }
}

/// Reads an entry; `None` when there is none. Only a regular file of this user is read, and at
/// most [`MAX_ENTRY_BYTES`] of it: not through a symlink (to `/dev/zero`, read for ever), nor a
/// FIFO (whose `open` would wait for a writer).
fn read_entry(entry: &Path) -> Result<Option<Vec<u8>>, Refused> {
    use std::io::Read;
    let opened = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(entry);
    let file = match opened {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => return Err(Refused::NotOwnFile),
        Err(error) => return Err(Refused::Unreadable(error)),
    };
    let metadata = file.metadata().map_err(Refused::Unreadable)?;
    if !metadata.is_file() || metadata.uid() != effective_uid() {
        return Err(Refused::NotOwnFile);
    }
    if metadata.len() > MAX_ENTRY_BYTES {
        return Err(Refused::TooLarge(metadata.len()));
    }
    // Read into memory rather than mapping the file: a mapped entry truncated by another
    // process would crash the host with SIGBUS.
    let mut stored = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut stored)
        .map_err(Refused::Unreadable)?;
    if stored.len() as u64 > MAX_ENTRY_BYTES {
        return Err(Refused::TooLarge(stored.len() as u64));
    }
    Ok(Some(stored))
}

/// The artifact inside `stored` when its tag is this key's for the entry `name`.
fn authenticate<'a>(key: &CacheKey, name: &str, stored: &'a [u8]) -> Result<&'a [u8], Refused> {
    let rest = stored.strip_prefix(ENTRY_MAGIC).ok_or(Refused::Header)?;
    if rest.len() < TAG_BYTES {
        return Err(Refused::Header);
    }
    let (stored_tag, artifact) = rest.split_at(TAG_BYTES);
    mac(key, name, artifact)
        .verify_slice(stored_tag)
        .map_err(|_| Refused::Tag)?;
    Ok(artifact)
}

/// HMAC-SHA256 over the entry's name and the artifact. The name covers the component's hash and
/// the engine settings, so a genuine entry of another component, copied under this one's name,
/// fails.
fn tag(key: &CacheKey, name: &str, artifact: &[u8]) -> [u8; TAG_BYTES] {
    mac(key, name, artifact).finalize().into_bytes().into()
}

fn mac(key: &CacheKey, name: &str, artifact: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&key.0).expect("HMAC accepts any key size");
    mac.update(name.as_bytes());
    mac.update(b"\0");
    mac.update(artifact);
    mac
}

/// Creates the folder (0700) if missing, checks that only this user can write to it, and reads or
/// creates its key.
fn open_folder(dir: &Path) -> Result<CacheKey, Untrusted> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error.into()),
    }
    let me = check_folder(dir)?;
    read_or_create_key(dir, me)
}

/// Checks that `dir` is a folder of this user that nobody else can write to; this user's id.
fn check_folder(dir: &Path) -> Result<u32, Untrusted> {
    let metadata = std::fs::metadata(dir)?;
    if !metadata.is_dir() {
        return Err(Untrusted::NotAFolder);
    }
    let me = effective_uid();
    if metadata.uid() != me {
        return Err(Untrusted::Owner {
            owner: metadata.uid(),
            me,
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable { mode });
    }
    Ok(me)
}

fn read_or_create_key(dir: &Path, me: u32) -> Result<CacheKey, Untrusted> {
    let path = dir.join(KEY_FILE);
    if let Some(key) = read_key(&path, me)? {
        return Ok(key);
    }
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| Untrusted::Random(e.to_string()))?;
    // Written whole under a private name, then linked into place: a second process starting at
    // the same moment either wins the link or reads the winner's complete key, never half of it.
    let temporary = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&key)?;
    file.sync_all()?;
    drop(file);
    let linked = std::fs::hard_link(&temporary, &path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(CacheKey(key)),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => read_key(&path, me)?
            .ok_or_else(|| Untrusted::Io(std::io::Error::other("the key file vanished"))),
        Err(error) => Err(error.into()),
    }
}

/// The key at `path`, `None` if there is no file; refused unless it is a regular file of this
/// user that nobody else can read or write.
fn read_key(path: &Path, me: u32) -> Result<Option<CacheKey>, Untrusted> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let mode = metadata.permissions().mode() & 0o7777;
    let bad = || Untrusted::BadKey {
        mode,
        len: metadata.len(),
        owner: metadata.uid(),
    };
    if !metadata.file_type().is_file()
        || metadata.uid() != me
        || mode & 0o077 != 0
        || metadata.len() != KEY_BYTES as u64
    {
        return Err(bad());
    }
    let bytes = std::fs::read(path)?;
    let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| bad())?;
    Ok(Some(CacheKey(key)))
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Marks an entry as just used (its modification time), so pruning keeps it.
fn mark_used(entry: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
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

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
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
        assert!(
            dir.path().join(KEY_FILE).exists(),
            "the key is never pruned"
        );
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

    #[test]
    fn the_folder_and_its_key_are_private_to_this_user() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("xdg").join("weir");
        let cache = CompiledCache::new(&dir);
        let engine = Engine::default();
        let (_, outcome) = cache
            .load_or_compile(&engine, &empty_component("a"))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(
            std::fs::metadata(dir.join(KEY_FILE)).unwrap().len(),
            KEY_BYTES as u64
        );
        // A second process reads the same key: its entries are hits.
        let again = CompiledCache::new(&dir);
        let (_, outcome) = again
            .load_or_compile(&engine, &empty_component("a"))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
    }

    #[test]
    fn an_entry_of_another_component_under_this_name_is_rejected_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::new(dir.path());
        let engine = Engine::default();
        let (a, b) = (empty_component("a"), empty_component("b"));
        cache.load_or_compile(&engine, &a).unwrap();
        cache.load_or_compile(&engine, &b).unwrap();
        // A genuine, correctly tagged entry, but of `b`: the tag binds it to b's name.
        std::fs::copy(cache.entry(&engine, &b), cache.entry(&engine, &a)).unwrap();
        let (_, outcome) = cache.load_or_compile(&engine, &a).unwrap();
        assert_eq!(outcome, CacheOutcome::Rejected);
        // Compiled afresh and stored again: the next load is a hit.
        let (_, outcome) = cache.load_or_compile(&engine, &a).unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
    }

    #[test]
    fn raw_artifacts_and_damaged_entries_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::new(dir.path());
        let engine = Engine::default();
        let a = empty_component("a");
        let raw = Component::from_binary(&engine, &a)
            .unwrap()
            .serialize()
            .unwrap();
        // wasmtime's own serialization of this very component, without weir's tag.
        std::fs::write(cache.entry(&engine, &a), &raw).unwrap();
        let (_, outcome) = cache.load_or_compile(&engine, &a).unwrap();
        assert_eq!(outcome, CacheOutcome::Rejected);
        // One flipped bit in the code of a genuine entry.
        let entry = cache.entry(&engine, &a);
        let mut stored = std::fs::read(&entry).unwrap();
        let last = stored.len() - 1;
        stored[last] ^= 1;
        std::fs::write(&entry, &stored).unwrap();
        let (_, outcome) = cache.load_or_compile(&engine, &a).unwrap();
        assert_eq!(outcome, CacheOutcome::Rejected);
        // An entry under another host's key.
        let elsewhere = tempfile::tempdir().unwrap();
        let other = CompiledCache::new(elsewhere.path());
        other.load_or_compile(&engine, &a).unwrap();
        std::fs::copy(other.entry(&engine, &a), &entry).unwrap();
        let (_, outcome) = cache.load_or_compile(&engine, &a).unwrap();
        assert_eq!(outcome, CacheOutcome::Rejected);
    }

    #[test]
    fn a_folder_others_can_write_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let cache = CompiledCache::new(dir.path());
        let engine = Engine::default();
        let a = empty_component("a");
        let (_, outcome) = cache.load_or_compile(&engine, &a).unwrap();
        assert_eq!(outcome, CacheOutcome::Disabled);
        assert!(!cache.entry(&engine, &a).exists(), "nothing stored there");
        assert!(!dir.path().join(KEY_FILE).exists(), "no key left there");
    }

    #[test]
    fn a_folder_opened_to_others_after_first_use_is_not_used_any_more() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::new(dir.path());
        let engine = Engine::default();
        let a = empty_component("a");
        cache.load_or_compile(&engine, &a).unwrap();
        // The folder is another's now (here: opened to everyone) while the key stays in memory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let (_, outcome) = cache.load_or_compile(&engine, &a).unwrap();
        assert_eq!(outcome, CacheOutcome::Disabled);
    }

    #[test]
    fn an_entry_that_is_a_symlink_or_a_fifo_is_refused_without_following_or_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::new(dir.path());
        let engine = Engine::default();
        let (a, b) = (empty_component("a"), empty_component("b"));
        cache.load_or_compile(&engine, &a).unwrap();
        // A genuine entry of this very component, reached through a symlink: not followed.
        let elsewhere = dir.path().join("genuine.bin");
        std::fs::rename(cache.entry(&engine, &a), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, cache.entry(&engine, &a)).unwrap();
        let (_, outcome) = cache.load_or_compile(&engine, &a).unwrap();
        assert_eq!(outcome, CacheOutcome::Rejected);
        assert!(
            std::fs::symlink_metadata(cache.entry(&engine, &a))
                .unwrap()
                .is_file(),
            "the symlink was replaced by an entry of its own"
        );
        // A FIFO under an entry's name: opening it for reading would wait for a writer.
        cache.load_or_compile(&engine, &b).unwrap();
        let fifo = cache.entry(&engine, &b);
        std::fs::remove_file(&fifo).unwrap();
        let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a mode.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let (done, finished) = std::sync::mpsc::channel();
        let loading = cache.clone();
        std::thread::spawn(move || {
            let outcome = loading
                .load_or_compile(&Engine::default(), &b)
                .map(|(_, o)| o);
            let _ = done.send(outcome.map_err(|e| e.to_string()));
        });
        // Only a guard against a hang, so the test reports it instead of never ending.
        let outcome = finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("a FIFO entry does not block the load");
        assert_eq!(outcome.unwrap(), CacheOutcome::Rejected);
    }

    #[test]
    fn a_key_others_can_read_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join(KEY_FILE);
        std::fs::write(&key, [7u8; KEY_BYTES]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cache = CompiledCache::new(dir.path());
        let (_, outcome) = cache
            .load_or_compile(&Engine::default(), &empty_component("a"))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Disabled);
    }
}
