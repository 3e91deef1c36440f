//! What the registry topic holds, rebuilt record by record: every published version of every
//! plugin (in publishing order), the components this process may run, each plugin's head and
//! its latest rollout (a candidate staged beside the head, or the end of one). A head or a
//! staged candidate becomes deployable once its version's description and every chunk arrived,
//! whatever order the partitions delivered them in. A component is held as one buffer once its
//! chunks hash to its sha256; versions still assembling are bounded in number and bytes, the
//! first seen dropped first, so chunks under made-up versions cannot pile up in every process.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::KafkaRegistryError;
use super::chunks::{
    Assembly, CHUNK_BYTES, ChunkError, MAX_COMPONENT_BYTES, MAX_MANIFEST_BYTES, headers, kinds,
};
use crate::registry::Manifest;
use crate::registry::rollout::RolloutPlan;

/// Versions of one plugin assembled at once. A publisher writes a version's chunks in a row
/// and then its description, so one is in flight per publisher; four leaves room for two
/// publishers racing and for the leftovers of publishes that stopped halfway, and no more for
/// chunks under made-up versions of a real plugin.
const MAX_ASSEMBLING_PER_PLUGIN: usize = 4;

/// Versions assembled at once across every plugin: far more than are ever published at the
/// same moment, and it bounds what empty chunks under ever new plugin names and hashes (which
/// cost next to no bytes) can make a process keep.
const MAX_ASSEMBLING: usize = 64;

/// Bytes held by versions being assembled, across every plugin (their chunks, plugin names and
/// hashes): twice the largest component the registry takes, so that the largest always fits
/// (the others first seen are dropped to make room: a real version published after a flood of
/// made-up chunks still completes) and two large publishes at the same moment both do, while
/// a flood cannot make every process hold more than this.
const MAX_ASSEMBLING_BYTES: usize = 2 * MAX_COMPONENT_BYTES;

/// Earlier heads remembered per plugin, for `weir plugin rollback` without `--to`.
const MAX_HEAD_HISTORY: usize = 64;

// One version never fills the budget alone, so the version a chunk went into never has to go.
const _: () = assert!(MAX_ASSEMBLING_BYTES > MAX_COMPONENT_BYTES + 4 * CHUNK_BYTES);

/// One published version, as its version record describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedVersion {
    /// The plugin's name.
    pub name: String,
    /// The component's full sha256, hex.
    pub sha256: String,
    /// The first 12 hex digits of the sha256, the version everywhere else in Weir.
    pub version: String,
    /// The version label (`--label`, else the manifest's `version`).
    pub label: Option<String>,
    /// The manifest's TOML text (empty when there is none).
    pub manifest: String,
    /// The host that published it.
    pub publisher: String,
    /// The component's size in bytes.
    pub size: usize,
    /// How many chunk records hold it.
    pub chunks: usize,
    /// When it was published, milliseconds since the Unix epoch.
    pub published_at: u64,
}

/// Why a head was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadAction {
    /// A new version was published.
    Publish,
    /// An operator returned the fleet to an earlier version.
    Rollback,
    /// An operator made the staged candidate the fleet's version.
    Promote,
}

/// The version a plugin's fleet runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The plugin's name.
    pub name: String,
    /// The version's full sha256.
    pub sha256: String,
    /// Its 12-digit version.
    pub version: String,
    /// Publish or rollback.
    pub action: HeadAction,
    /// The host that wrote the head.
    pub publisher: String,
    /// When, milliseconds since the Unix epoch.
    pub at: u64,
}

/// What a rollout record says about a plugin's candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum RolloutAction {
    /// Stage the candidate beside the head: a shadow or a canary.
    Stage {
        /// How it shares the records (a canary's share is resolved by each process).
        rollout: RolloutPlan,
    },
    /// The candidate was promoted: the head record written just before names it.
    Promote,
    /// The candidate was dropped; every record goes to the head again.
    Abort {
        /// Why, as the operator or the automatic rule gave it.
        reason: String,
    },
}

/// The latest rollout of a plugin's fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The plugin's name.
    pub name: String,
    /// The candidate's full sha256.
    pub sha256: String,
    /// Its 12-digit version.
    pub version: String,
    /// Stage, promote or abort.
    #[serde(flatten)]
    pub action: RolloutAction,
    /// The host that wrote it.
    pub publisher: String,
    /// When, milliseconds since the Unix epoch.
    pub at: u64,
}

impl RolloutRecord {
    /// The rollout it stages, when it stages one.
    pub fn staged(&self) -> Option<&RolloutPlan> {
        match &self.action {
            RolloutAction::Stage { rollout } => Some(rollout),
            RolloutAction::Promote | RolloutAction::Abort { .. } => None,
        }
    }
}

/// A change of what the fleet should run, once everything it names has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A plugin's head moved: deploy it.
    Head(Head),
    /// A plugin's rollout changed: stage its candidate, or end the rollout.
    Rollout(RolloutRecord),
}

/// One record read from the registry topic.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its headers, by name.
    pub headers: &'a BTreeMap<String, Vec<u8>>,
    /// Its value; `None` for a tombstone.
    pub payload: Option<&'a [u8]>,
}

/// A version being assembled, with when it was first seen.
#[derive(Debug, Clone)]
struct Assembling {
    assembly: Assembly,
    /// Order number: the lowest is dropped first.
    seen: u64,
}

/// What an assembling version costs: its chunks and its key.
fn cost((name, sha256): &(String, String), assembling: &Assembling) -> usize {
    assembling.assembly.held_bytes() + name.len() + sha256.len()
}

/// The registry topic's content.
#[derive(Debug, Clone)]
pub struct Catalog {
    registry: String,
    /// Plugins whose chunks are kept in memory; `None` keeps all.
    keep: Option<BTreeSet<String>>,
    /// Whether the records of plugins outside `keep` (versions, heads, rollouts) are ignored
    /// too, as a running process does; a command that lists the registry keeps them.
    only_kept: bool,
    versions: BTreeMap<String, Vec<PublishedVersion>>,
    /// Components whose chunks all arrived and hash to their sha256, by plugin and sha256.
    components: BTreeMap<(String, String), Vec<u8>>,
    /// Versions whose chunks are still arriving (or do not hash to their sha256), bounded by
    /// `MAX_ASSEMBLING_PER_PLUGIN`, `MAX_ASSEMBLING` and `budget`.
    assembling: BTreeMap<(String, String), Assembling>,
    /// The bytes `assembling` may hold: `MAX_ASSEMBLING_BYTES` (tests make it smaller).
    budget: usize,
    /// The order number of the next version to start assembling.
    next_seen: u64,
    heads: BTreeMap<String, Head>,
    /// The sha256 of each plugin's heads as the topic wrote them, oldest first, the current
    /// head last; a rollback undoes the heads after the one it returns to. Compaction keeps only
    /// a plugin's last head record, so this holds what the records still in the topic say.
    head_history: BTreeMap<String, Vec<String>>,
    /// Heads whose version is not complete yet.
    pending: BTreeSet<String>,
    rollouts: BTreeMap<String, RolloutRecord>,
    /// Staged candidates whose version is not complete yet.
    pending_rollouts: BTreeSet<String>,
}

impl Catalog {
    /// An empty catalog of `registry`; only the chunks of the plugins in `keep` are held in
    /// memory (all when `None`), so a process holds the components it may run and no others.
    pub fn new(registry: &str, keep: Option<BTreeSet<String>>) -> Self {
        Catalog {
            registry: registry.to_owned(),
            keep,
            only_kept: false,
            versions: BTreeMap::new(),
            components: BTreeMap::new(),
            assembling: BTreeMap::new(),
            budget: MAX_ASSEMBLING_BYTES,
            next_seen: 0,
            heads: BTreeMap::new(),
            head_history: BTreeMap::new(),
            pending: BTreeSet::new(),
            rollouts: BTreeMap::new(),
            pending_rollouts: BTreeSet::new(),
        }
    }

    /// Takes one record in; returns the change it made ready, if any.
    pub fn apply(&mut self, record: Incoming<'_>) -> Result<Option<Change>, KafkaRegistryError> {
        let Some(payload) = record.payload else {
            self.forget_pruned(record.headers);
            return Ok(None);
        };
        let malformed = |reason: String| KafkaRegistryError::Malformed {
            registry: self.registry.clone(),
            partition: record.partition,
            offset: record.offset,
            reason,
        };
        let header = |name: &str| {
            record
                .headers
                .get(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or_else(|| malformed(format!("no `{name}` header")))
        };
        match header(headers::KIND)? {
            kinds::CHUNK => {
                let name = header(headers::PLUGIN)?.to_owned();
                let sha256 = header(headers::SHA256)?.to_owned();
                let number = |name: &str| {
                    header(name)?
                        .parse::<usize>()
                        .map_err(|_| malformed(format!("`{name}` is not a number")))
                };
                let (index, count) = (number(headers::CHUNK_INDEX)?, number(headers::CHUNK_COUNT)?);
                if !self.keeps(&name) {
                    return Ok(None);
                }
                let key = (name, sha256);
                // A chunk of a component already held adds nothing: those bytes hash to it.
                if !self.components.contains_key(&key) {
                    match self.assemble(&key, index, count, payload.to_vec()) {
                        Ok(true) => self.await_whole(&key.0, &key.1),
                        Ok(false) => {}
                        Err(e) => {
                            // Not `malformed`: it borrows `self`, which `assemble` took mutably.
                            return Err(KafkaRegistryError::Malformed {
                                registry: self.registry.clone(),
                                partition: record.partition,
                                offset: record.offset,
                                reason: format!("plugin `{}` version {}: {e}", key.0, key.1),
                            });
                        }
                    }
                }
                Ok(self.ready(&key.0, &key.1))
            }
            kinds::VERSION => {
                let version: PublishedVersion = serde_json::from_slice(payload)
                    .map_err(|e| malformed(format!("version record: {e}")))?;
                if version.size > MAX_COMPONENT_BYTES || version.manifest.len() > MAX_MANIFEST_BYTES
                {
                    return Err(malformed(format!(
                        "plugin `{}` version {} is larger than the registry takes",
                        version.name, version.version
                    )));
                }
                let (name, sha256) = (version.name.clone(), version.sha256.clone());
                if !self.describes(&name) {
                    return Ok(None);
                }
                let list = self.versions.entry(name.clone()).or_default();
                list.retain(|v| v.sha256 != sha256);
                list.push(version);
                Ok(self.ready(&name, &sha256))
            }
            kinds::HEAD => {
                let head: Head = serde_json::from_slice(payload)
                    .map_err(|e| malformed(format!("head record: {e}")))?;
                let (name, sha256) = (head.name.clone(), head.sha256.clone());
                if !self.describes(&name) {
                    return Ok(None);
                }
                self.remember_head(&head);
                self.heads.insert(name.clone(), head);
                self.pending.insert(name.clone());
                Ok(self.ready(&name, &sha256))
            }
            kinds::ROLLOUT => {
                let rollout: RolloutRecord = serde_json::from_slice(payload)
                    .map_err(|e| malformed(format!("rollout record: {e}")))?;
                let (name, sha256) = (rollout.name.clone(), rollout.sha256.clone());
                if !self.describes(&name) {
                    return Ok(None);
                }
                let stages = rollout.staged().is_some();
                self.rollouts.insert(name.clone(), rollout.clone());
                if !stages {
                    // An end needs no component: it applies at once.
                    self.pending_rollouts.remove(&name);
                    return Ok(Some(Change::Rollout(rollout)));
                }
                self.pending_rollouts.insert(name.clone());
                Ok(self.ready(&name, &sha256))
            }
            other => Err(malformed(format!("unknown record kind `{other}`"))),
        }
    }

    /// Adds `head` to its plugin's head history. A publish or a promotion goes on top; a
    /// rollback to an earlier head drops the heads after it (they were rolled back from), and
    /// one to a version not among them replaces the head it rolls back from.
    fn remember_head(&mut self, head: &Head) {
        let history = self.head_history.entry(head.name.clone()).or_default();
        match head.action {
            HeadAction::Rollback => match history.iter().rposition(|s| *s == head.sha256) {
                Some(at) => history.truncate(at + 1),
                None => {
                    history.pop();
                    history.push(head.sha256.clone());
                }
            },
            HeadAction::Publish | HeadAction::Promote => {
                if history.last() != Some(&head.sha256) {
                    history.push(head.sha256.clone());
                }
            }
        }
        let excess = history.len().saturating_sub(MAX_HEAD_HISTORY);
        history.drain(..excess);
    }

    /// The version `weir plugin rollback NAME` returns `name` to: the latest earlier head that
    /// was not rolled back from and is still published. A candidate that was staged and never
    /// became the head is none. `None` when the topic holds no such head (anymore): compaction
    /// keeps only a plugin's last head record, and the order versions were published in does
    /// not say which of them was rolled back from or only staged, so no guess is made (the
    /// operator names the version with `--to`).
    pub fn previous_head(&self, name: &str) -> Option<&PublishedVersion> {
        let head = self.heads.get(name)?;
        self.head_history
            .get(name)?
            .iter()
            .rev()
            .filter(|sha256| **sha256 != head.sha256)
            .find_map(|sha256| self.published(name, sha256))
    }

    /// A tombstone of a version's description or of one of its chunks (`weir plugin prune`
    /// writes them with the kind, plugin and sha256 in headers): the version is gone, with its
    /// chunks held in memory. Tombstones without those headers change nothing.
    fn forget_pruned(&mut self, tombstone: &BTreeMap<String, Vec<u8>>) {
        let header = |name: &str| {
            tombstone
                .get(name)
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        let (Some(kinds::CHUNK | kinds::VERSION), Some(name), Some(sha256)) = (
            header(headers::KIND),
            header(headers::PLUGIN),
            header(headers::SHA256),
        ) else {
            return;
        };
        if let Some(list) = self.versions.get_mut(name) {
            list.retain(|v| v.sha256 != sha256);
            if list.is_empty() {
                self.versions.remove(name);
            }
        }
        let key = (name.to_owned(), sha256.to_owned());
        self.components.remove(&key);
        self.assembling.remove(&key);
    }

    /// Version `sha256` of `name` just became whole (its chunks hash to it). A head or a staged
    /// candidate naming it waits for it again: it may have been handed out already when the
    /// chunks were complete but one was wrong (its deployment then failed on the hash), and the
    /// chunk that replaced the wrong one must deploy it.
    fn await_whole(&mut self, name: &str, sha256: &str) {
        if self.heads.get(name).is_some_and(|h| h.sha256 == sha256) {
            self.pending.insert(name.to_owned());
        }
        if self
            .rollouts
            .get(name)
            .is_some_and(|r| r.sha256 == sha256 && r.staged().is_some())
        {
            self.pending_rollouts.insert(name.to_owned());
        }
    }

    /// Adds a chunk to version `key` (plugin and sha256); once every chunk arrived and they hash
    /// to the sha256, the component is kept as one buffer and the chunks are let go, and this
    /// returns true. Then drops versions still assembling, first seen first, while they exceed a
    /// bound.
    fn assemble(
        &mut self,
        key: &(String, String),
        index: usize,
        count: usize,
        bytes: Vec<u8>,
    ) -> Result<bool, ChunkError> {
        let assembling = match self.assembling.entry(key.clone()) {
            Entry::Occupied(entry) => {
                let assembling = entry.into_mut();
                assembling.assembly.insert(index, count, bytes)?;
                assembling
            }
            Entry::Vacant(entry) => {
                // Only a chunk that fits starts a version.
                let mut assembly = Assembly::new(&key.1);
                assembly.insert(index, count, bytes)?;
                let seen = self.next_seen;
                self.next_seen += 1;
                entry.insert(Assembling { assembly, seen })
            }
        };
        if let Some(Ok(component)) = assembling.assembly.bytes() {
            self.assembling.remove(key);
            self.components.insert(key.clone(), component);
            return Ok(true);
        }
        self.bound(key);
        Ok(false)
    }

    /// Drops versions still assembling, first seen first, until those of `fed`'s plugin are
    /// at most `MAX_ASSEMBLING_PER_PLUGIN` and all of them at most `MAX_ASSEMBLING` holding at
    /// most `budget` bytes. `fed`, the version a chunk just went into, stays: it alone fits.
    fn bound(&mut self, fed: &(String, String)) {
        loop {
            let plugin = &fed.0;
            let of_plugin = self.assembling.keys().filter(|(n, _)| n == plugin).count();
            let over_plugin = of_plugin > MAX_ASSEMBLING_PER_PLUGIN;
            let held: usize = self.assembling.iter().map(|(k, a)| cost(k, a)).sum();
            let over = self.assembling.len() > MAX_ASSEMBLING || held > self.budget;
            if !over_plugin && !over {
                return;
            }
            let oldest = self
                .assembling
                .iter()
                .filter(|(key, _)| *key != fed && (!over_plugin || key.0 == *plugin))
                .min_by_key(|(_, assembling)| assembling.seen)
                .map(|(key, _)| key.clone());
            let Some(key) = oldest else {
                return;
            };
            if let Some(dropped) = self.assembling.remove(&key) {
                let (name, sha256) = &key;
                tracing::warn!(
                    registry = %self.registry,
                    plugin = %name,
                    version = %sha256.get(..12).unwrap_or(sha256),
                    bytes = dropped.assembly.held_bytes(),
                    reason = if over_plugin {
                        "too many versions of the plugin assembling at once"
                    } else {
                        "too many versions or bytes assembling at once"
                    },
                    "Chunks of an incomplete registry version dropped; it stays incomplete until they are read again."
                );
            }
        }
    }

    /// The versions of `name` that `weir plugin prune` removes: every one but the `keep` most
    /// recently published, the head's, the staged candidate's, and those in `in_use` (12-digit
    /// versions that processes run or stage). Oldest first.
    pub fn prunable(
        &self,
        name: &str,
        keep: usize,
        in_use: &BTreeSet<String>,
    ) -> Vec<&PublishedVersion> {
        let Some(list) = self.versions.get(name) else {
            return Vec::new();
        };
        let head = self.heads.get(name).map(|h| h.sha256.as_str());
        let candidate = self.staged(name).map(|(record, _)| record.sha256.as_str());
        let newest = list.len().saturating_sub(keep);
        list[..newest]
            .iter()
            .filter(|v| {
                Some(v.sha256.as_str()) != head
                    && Some(v.sha256.as_str()) != candidate
                    && !in_use.contains(&v.version)
            })
            .collect()
    }

    /// Ignores every record of the plugins outside `keep`, not only their chunks: a process
    /// that runs none of them then holds nothing of a flood of records under made-up names.
    pub fn only_kept(mut self) -> Self {
        self.only_kept = true;
        self
    }

    /// Whether the versions, heads and rollouts of `name` are held.
    fn describes(&self, name: &str) -> bool {
        !self.only_kept || self.keeps(name)
    }

    fn keeps(&self, name: &str) -> bool {
        self.keep.as_ref().is_none_or(|keep| keep.contains(name))
    }

    /// The head of `name`, or else its staged candidate, when it names `sha256`, is waiting,
    /// and its version is now complete.
    fn ready(&mut self, name: &str, sha256: &str) -> Option<Change> {
        if !self.is_complete(name, sha256) {
            return None;
        }
        let head = self.heads.get(name).filter(|h| h.sha256 == sha256);
        if let Some(head) = head
            && self.pending.remove(name)
        {
            return Some(Change::Head(head.clone()));
        }
        let rollout = self.rollouts.get(name).filter(|r| r.sha256 == sha256)?;
        if !self.pending_rollouts.remove(name) {
            return None;
        }
        Some(Change::Rollout(rollout.clone()))
    }

    fn is_complete(&self, name: &str, sha256: &str) -> bool {
        let described = self.published(name, sha256).is_some();
        let key = (name.to_owned(), sha256.to_owned());
        let assembled = !self.keeps(name)
            || self.components.contains_key(&key)
            // Complete but not hashing to the sha256: `component` says so.
            || self
                .assembling
                .get(&key)
                .is_some_and(|a| a.assembly.is_complete());
        described && assembled
    }

    /// The plugins with a head, by name.
    pub fn heads(&self) -> &BTreeMap<String, Head> {
        &self.heads
    }

    /// Heads still waiting for their version's records.
    pub fn pending(&self) -> impl Iterator<Item = &Head> {
        self.pending.iter().filter_map(|name| self.heads.get(name))
    }

    /// The candidate of `name` the fleet should run beside its head, with how it rolls out:
    /// the latest rollout record when it stages a version other than the head's.
    pub fn staged(&self, name: &str) -> Option<(&RolloutRecord, &RolloutPlan)> {
        let record = self.rollouts.get(name)?;
        let rollout = record.staged()?;
        let head = self.heads.get(name)?;
        (head.sha256 != record.sha256).then_some((record, rollout))
    }

    /// Every plugin's published versions, oldest first.
    pub fn versions(&self) -> &BTreeMap<String, Vec<PublishedVersion>> {
        &self.versions
    }

    /// Version `sha256` of `name`, if published.
    pub fn published(&self, name: &str, sha256: &str) -> Option<&PublishedVersion> {
        self.versions.get(name)?.iter().find(|v| v.sha256 == sha256)
    }

    /// The version of `name` that `wanted` names: a 12-digit version, a full sha256 or a label.
    pub fn find(&self, name: &str, wanted: &str) -> Option<&PublishedVersion> {
        let list = self.versions.get(name)?;
        list.iter()
            .rev()
            .find(|v| v.version == wanted || v.sha256 == wanted)
            .or_else(|| {
                list.iter()
                    .rev()
                    .find(|v| v.label.as_deref() == Some(wanted))
            })
    }

    /// The component and manifest of version `sha256` of `name`, checked against its hash; the
    /// label, when there is one, becomes the manifest's version string.
    pub fn component(
        &self,
        name: &str,
        sha256: &str,
    ) -> Result<(Vec<u8>, Manifest), KafkaRegistryError> {
        let missing = |reason: String| KafkaRegistryError::Missing {
            registry: self.registry.clone(),
            reason,
        };
        let version = self.published(name, sha256).ok_or_else(|| {
            missing(format!(
                "plugin `{name}` version {sha256} has no version record"
            ))
        })?;
        let key = (name.to_owned(), sha256.to_owned());
        let bytes = match self.components.get(&key) {
            Some(bytes) => bytes.clone(),
            None => self
                .assembling
                .get(&key)
                .and_then(|a| a.assembly.bytes())
                .ok_or_else(|| {
                    missing(format!(
                        "plugin `{name}` version {} is missing chunks",
                        version.version
                    ))
                })?
                .map_err(|e| {
                    missing(format!("plugin `{name}` version {}: {e}", version.version))
                })?,
        };
        let mut manifest = Manifest::parse(&version.manifest).map_err(|reason| {
            missing(format!(
                "plugin `{name}` version {}: its manifest does not parse: {reason}",
                version.version
            ))
        })?;
        if version.label.is_some() {
            manifest.version.clone_from(&version.label);
        }
        Ok((bytes, manifest))
    }
}

#[cfg(test)]
mod tests {
    use super::super::chunks::{CHUNK_BYTES, chunk_records};
    use super::*;
    use sha2::{Digest, Sha256};

    /// A record as the tests write it: headers and value.
    type Written = (BTreeMap<String, Vec<u8>>, Vec<u8>);

    struct Topic {
        records: Vec<Written>,
    }

    impl Topic {
        fn publish(&mut self, name: &str, bytes: &[u8], label: &str) -> String {
            let sha256 = hex::encode(Sha256::digest(bytes));
            let common = vec![
                (headers::PLUGIN, name.as_bytes().to_vec()),
                (headers::SHA256, sha256.as_bytes().to_vec()),
            ];
            for record in chunk_records(name, bytes, &common) {
                let headers = record
                    .headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect();
                self.records.push((headers, record.payload));
            }
            let version = PublishedVersion {
                name: name.into(),
                sha256: sha256.clone(),
                version: sha256[..12].into(),
                label: Some(label.into()),
                manifest: "description = \"d\"\n".into(),
                publisher: "test".into(),
                size: bytes.len(),
                chunks: bytes.len().div_ceil(CHUNK_BYTES),
                published_at: 0,
            };
            self.push(kinds::VERSION, serde_json::to_vec(&version).unwrap());
            self.head(name, &sha256, HeadAction::Publish);
            sha256
        }

        fn head(&mut self, name: &str, sha256: &str, action: HeadAction) {
            let head = Head {
                name: name.into(),
                sha256: sha256.into(),
                version: sha256[..12].into(),
                action,
                publisher: "test".into(),
                at: 0,
            };
            self.push(kinds::HEAD, serde_json::to_vec(&head).unwrap());
        }

        fn push(&mut self, kind: &str, payload: Vec<u8>) {
            let headers = BTreeMap::from([(headers::KIND.to_owned(), kind.as_bytes().to_vec())]);
            self.records.push((headers, payload));
        }

        /// A chunk record as anyone who can write to the topic may write it.
        fn chunk(&mut self, name: &str, sha256: &str, index: usize, count: usize, bytes: Vec<u8>) {
            let headers = [
                (headers::KIND, kinds::CHUNK.to_owned()),
                (headers::PLUGIN, name.to_owned()),
                (headers::SHA256, sha256.to_owned()),
                (headers::CHUNK_INDEX, index.to_string()),
                (headers::CHUNK_COUNT, count.to_string()),
            ];
            let headers = headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_bytes()))
                .collect();
            self.records.push((headers, bytes));
        }

        fn rollout(&mut self, name: &str, sha256: &str, action: RolloutAction) {
            let record = RolloutRecord {
                name: name.into(),
                sha256: sha256.into(),
                version: sha256[..12].into(),
                action,
                publisher: "test".into(),
                at: 0,
            };
            self.push(kinds::ROLLOUT, serde_json::to_vec(&record).unwrap());
        }

        /// Every change, in order.
        fn changes(&self, catalog: &mut Catalog) -> Vec<Change> {
            let mut changes = Vec::new();
            for (offset, (headers, payload)) in self.records.iter().enumerate() {
                let incoming = Incoming {
                    partition: 0,
                    offset: offset as i64,
                    headers,
                    payload: Some(payload),
                };
                changes.extend(catalog.apply(incoming).unwrap());
            }
            changes
        }

        /// The heads among the changes, in order.
        fn read(&self, catalog: &mut Catalog) -> Vec<Head> {
            self.changes(catalog)
                .into_iter()
                .filter_map(|change| match change {
                    Change::Head(head) => Some(head),
                    Change::Rollout(_) => None,
                })
                .collect()
        }
    }

    #[test]
    fn heads_become_deployable_once_complete_and_history_is_kept() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        let first = topic.publish("p", &vec![1u8; CHUNK_BYTES + 5], "1.0");
        let second = topic.publish("p", b"second", "2.0");
        topic.head("p", &first, HeadAction::Rollback);
        let mut catalog = Catalog::new("kafka://x/t", None);
        let heads = topic.read(&mut catalog);
        let actions: Vec<(String, HeadAction)> =
            heads.iter().map(|h| (h.sha256.clone(), h.action)).collect();
        assert_eq!(
            actions,
            [
                (first.clone(), HeadAction::Publish),
                (second.clone(), HeadAction::Publish),
                (first.clone(), HeadAction::Rollback)
            ]
        );
        assert_eq!(catalog.versions()["p"].len(), 2);
        assert_eq!(catalog.find("p", "2.0").unwrap().sha256, second);
        assert_eq!(catalog.find("p", &first[..12]).unwrap().sha256, first);
        let (bytes, manifest) = catalog.component("p", &first).unwrap();
        assert_eq!(bytes.len(), CHUNK_BYTES + 5);
        assert_eq!(manifest.version.as_deref(), Some("1.0"));
        assert_eq!(manifest.description.as_deref(), Some("d"));
    }

    /// `publish` without its head: a candidate's chunks and version record.
    fn candidate(topic: &mut Topic, name: &str, bytes: &[u8], label: &str) -> String {
        let sha256 = topic.publish(name, bytes, label);
        topic.records.pop();
        sha256
    }

    #[test]
    fn a_staged_candidate_is_ready_once_complete_and_ends_with_promote_or_abort() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        let live = topic.publish("p", b"live", "1");
        let shadow = RolloutPlan::Shadow { every_nth_batch: 2 };
        // The stage record before the candidate's chunks, as another partition may deliver it.
        let next = hex::encode(Sha256::digest(b"next"));
        topic.rollout(
            "p",
            &next,
            RolloutAction::Stage {
                rollout: shadow.clone(),
            },
        );
        assert_eq!(candidate(&mut topic, "p", b"next", "2"), next);
        let mut catalog = Catalog::new("kafka://x/t", None);
        let changes = topic.changes(&mut catalog);
        assert!(matches!(&changes[..], [Change::Head(h), Change::Rollout(r)]
            if h.sha256 == live && r.sha256 == next && r.staged() == Some(&shadow)));
        let (staged, rollout) = catalog.staged("p").unwrap();
        assert_eq!((staged.sha256.as_str(), rollout), (next.as_str(), &shadow));
        assert!(catalog.component("p", &next).is_ok());

        // Promoted: the head names the candidate, then the rollout ends; nothing is staged.
        topic.records.clear();
        topic.head("p", &next, HeadAction::Promote);
        topic.rollout("p", &next, RolloutAction::Promote);
        let changes = topic.changes(&mut catalog);
        assert!(matches!(&changes[..], [Change::Head(h), Change::Rollout(r)]
            if h.action == HeadAction::Promote && r.action == RolloutAction::Promote));
        assert!(catalog.staged("p").is_none());

        // A new canary, aborted: the abort applies at once and nothing stays staged.
        topic.records.clear();
        let third = candidate(&mut topic, "p", b"third", "3");
        let canary = RolloutPlan::CanaryShare { percent: 33 };
        topic.rollout("p", &third, RolloutAction::Stage { rollout: canary });
        topic.rollout(
            "p",
            &third,
            RolloutAction::Abort {
                reason: "operator".into(),
            },
        );
        let changes = topic.changes(&mut catalog);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(catalog.staged("p").is_none());
        assert_eq!(catalog.heads()["p"].sha256, next);
    }

    #[test]
    fn pruning_keeps_the_head_the_candidate_the_newest_and_versions_in_use() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        let v: Vec<String> = (1..=5)
            .map(|i| topic.publish("p", format!("v{i}").as_bytes(), &i.to_string()))
            .collect();
        topic.head("p", &v[1], HeadAction::Rollback);
        let v6 = candidate(&mut topic, "p", b"v6", "6");
        let shadow = RolloutPlan::Shadow { every_nth_batch: 2 };
        topic.rollout("p", &v6, RolloutAction::Stage { rollout: shadow });
        let mut catalog = Catalog::new("kafka://x/t", None);
        topic.changes(&mut catalog);

        // The newest (v6, also the candidate), the head (v2), and v3, which a process runs.
        let in_use = BTreeSet::from([v[2][..12].to_owned()]);
        let prunable: Vec<&str> = catalog
            .prunable("p", 1, &in_use)
            .iter()
            .map(|version| version.sha256.as_str())
            .collect();
        assert_eq!(prunable, [&v[0], &v[3], &v[4]]);
        assert_eq!(catalog.prunable("p", 6, &in_use).len(), 0);
        assert_eq!(catalog.prunable("q", 0, &in_use).len(), 0);

        // The tombstones `weir plugin prune` writes for v1: its description and its chunk.
        let tombstone = |kind: &str| {
            BTreeMap::from([
                (headers::KIND.to_owned(), kind.as_bytes().to_vec()),
                (headers::PLUGIN.to_owned(), b"p".to_vec()),
                (headers::SHA256.to_owned(), v[0].as_bytes().to_vec()),
            ])
        };
        for (offset, kind) in [kinds::VERSION, kinds::CHUNK].into_iter().enumerate() {
            let headers = tombstone(kind);
            let incoming = Incoming {
                partition: 0,
                offset: offset as i64,
                headers: &headers,
                payload: None,
            };
            assert!(catalog.apply(incoming).unwrap().is_none());
        }
        assert!(catalog.published("p", &v[0]).is_none());
        assert!(catalog.component("p", &v[0]).is_err());
        let key = ("p".to_owned(), v[0].clone());
        assert!(!catalog.components.contains_key(&key) && !catalog.assembling.contains_key(&key));
        assert_eq!(catalog.versions()["p"].len(), 5);

        // A tombstone without those headers (a head's, say) changes nothing.
        let bare = BTreeMap::new();
        let incoming = Incoming {
            partition: 0,
            offset: 2,
            headers: &bare,
            payload: None,
        };
        assert!(catalog.apply(incoming).unwrap().is_none());
        assert_eq!(catalog.versions()["p"].len(), 5);
        assert!(catalog.component("p", &v[1]).is_ok());
    }

    #[test]
    fn a_head_before_its_chunks_waits_for_them() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        topic.publish("p", b"component", "1");
        // The head first, as a topic of several partitions may deliver it.
        let head = topic.records.pop().unwrap();
        topic.records.insert(0, head);
        let mut catalog = Catalog::new("kafka://x/t", None);
        let heads = topic.read(&mut catalog);
        assert_eq!(heads.len(), 1);
        assert_eq!(catalog.pending().count(), 0);
    }

    #[test]
    fn records_of_plugins_this_process_does_not_run_are_not_kept() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        let sha256 = topic.publish("other", b"component", "1");
        let mine = topic.publish("mine", b"mine", "1");
        // A command listing the registry holds no chunks but every description.
        let mut listing = Catalog::new("kafka://x/t", Some(BTreeSet::new()));
        assert_eq!(topic.read(&mut listing).len(), 2, "both heads listed");
        assert!(listing.components.is_empty() && listing.versions.contains_key("other"));
        let mut catalog =
            Catalog::new("kafka://x/t", Some(BTreeSet::from(["mine".to_owned()]))).only_kept();
        assert_eq!(
            topic.read(&mut catalog).len(),
            1,
            "only its own plugin's head"
        );
        assert!(catalog.component("mine", &mine).is_ok());
        // Neither the chunks nor the version, head or history of another plugin: a flood of
        // records under made-up names costs a process that runs none of them nothing.
        assert!(catalog.components.keys().all(|(name, _)| name == "mine"));
        assert!(catalog.assembling.is_empty());
        assert!(catalog.component("other", &sha256).is_err());
        assert!(!catalog.versions.contains_key("other"));
        assert!(!catalog.heads.contains_key("other"));
        assert!(!catalog.head_history.contains_key("other"));
    }

    impl Catalog {
        /// How many versions are assembling, and what they cost.
        fn held(&self) -> (usize, usize) {
            let bytes = self.assembling.iter().map(|(k, a)| cost(k, a)).sum();
            (self.assembling.len(), bytes)
        }

        /// The sha256s of `name`'s versions assembling, first seen first.
        fn assembling_of(&self, name: &str) -> Vec<&str> {
            let mut of: Vec<(&str, u64)> = self
                .assembling
                .iter()
                .filter(|((n, _), _)| n == name)
                .map(|((_, sha256), a)| (sha256.as_str(), a.seen))
                .collect();
            of.sort_by_key(|(_, seen)| *seen);
            of.into_iter().map(|(sha256, _)| sha256).collect()
        }
    }

    /// A made-up sha256.
    fn made_up(i: usize) -> String {
        format!("{i:064x}")
    }

    #[test]
    fn made_up_versions_of_a_plugin_are_bounded_and_a_real_one_still_completes() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        let first = topic.publish("p", b"first", "1");
        // A hundred made-up versions of `p`, each the first of two chunks, and one whole that
        // does not hash to its version.
        for i in 0..100 {
            topic.chunk("p", &made_up(i), 0, 2, vec![7; 1000]);
        }
        topic.chunk("p", &made_up(100), 0, 1, vec![7; 1000]);
        let mut catalog = Catalog::new("kafka://x/t", None);
        for (offset, (headers, payload)) in topic.records.iter().enumerate() {
            let incoming = Incoming {
                partition: 0,
                offset: offset as i64,
                headers,
                payload: Some(payload),
            };
            catalog.apply(incoming).unwrap();
            assert!(catalog.held().0 <= MAX_ASSEMBLING_PER_PLUGIN);
        }
        let newest: Vec<String> = (97..=100).map(made_up).collect();
        assert_eq!(
            catalog.assembling_of("p"),
            newest,
            "the first seen went first"
        );
        assert_eq!(catalog.held().1, 4 * (1000 + 1 + 64));

        // Published after the flood: complete, served, and no longer assembling.
        topic.records.clear();
        let bytes = vec![2u8; CHUNK_BYTES + 9];
        let second = topic.publish("p", &bytes, "2");
        let heads = topic.read(&mut catalog);
        assert_eq!(heads.len(), 1);
        assert_eq!(heads[0].sha256, second);
        assert_eq!(catalog.component("p", &second).unwrap().0, bytes);
        assert_eq!(catalog.assembling_of("p"), &newest[1..]);
        // The first version, held whole, was never at risk; a chunk written under it again,
        // damaged or not, changes nothing.
        topic.records.clear();
        topic.chunk("p", &first, 0, 1, b"tampered".to_vec());
        assert!(topic.read(&mut catalog).is_empty());
        assert_eq!(catalog.component("p", &first).unwrap().0, b"first");
        assert!(!catalog.assembling.contains_key(&("p".to_owned(), first)));
    }

    #[test]
    fn a_version_whose_chunks_were_dropped_is_missing_chunks() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        topic.publish("p", &vec![3u8; CHUNK_BYTES + 1], "1");
        // Made-up versions between its two chunks push its first one out.
        let rest = topic.records.split_off(1);
        for i in 0..MAX_ASSEMBLING_PER_PLUGIN {
            topic.chunk("p", &made_up(i), 0, 2, Vec::new());
        }
        topic.records.extend(rest);
        let mut catalog = Catalog::new("kafka://x/t", None);
        assert!(topic.read(&mut catalog).is_empty());
        let head = catalog.pending().next().unwrap().clone();
        let error = catalog
            .component("p", &head.sha256)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing chunks"), "{error}");
    }

    #[test]
    fn versions_assembling_are_bounded_in_bytes_and_number_the_first_seen_dropped_first() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        // Each of another plugin, so that the bound per plugin is not what drops them.
        for i in 0..6 {
            topic.chunk(&format!("p{i}"), &made_up(i), 0, 2, vec![1; CHUNK_BYTES]);
        }
        let mut catalog = Catalog::new("kafka://x/t", None);
        // The budget's mechanism at a test's scale: three such versions fit, not four.
        catalog.budget = 4 * CHUNK_BYTES;
        topic.changes(&mut catalog);
        let held: Vec<&str> = catalog.assembling.keys().map(|(n, _)| n.as_str()).collect();
        assert_eq!(held, ["p3", "p4", "p5"]);
        assert!(catalog.held().1 <= catalog.budget);

        // A real version nearly as large as the budget pushes them all out and completes.
        topic.records.clear();
        let bytes = vec![4u8; 3 * CHUNK_BYTES + 1];
        let sha256 = topic.publish("q", &bytes, "1");
        assert_eq!(topic.read(&mut catalog).len(), 1);
        assert_eq!(catalog.component("q", &sha256).unwrap().0, bytes);
        assert_eq!(catalog.held(), (0, 0));

        // Empty chunks under ever new plugins: bounded in number.
        topic.records.clear();
        for i in 0..3 * MAX_ASSEMBLING {
            topic.chunk(&format!("e{i}"), &made_up(i), 0, 2, Vec::new());
        }
        topic.changes(&mut catalog);
        assert_eq!(catalog.held().0, MAX_ASSEMBLING);
        assert!(catalog.assembling.contains_key(&(
            format!("e{}", 3 * MAX_ASSEMBLING - 1),
            made_up(3 * MAX_ASSEMBLING - 1)
        )));
        assert!(
            !catalog
                .assembling
                .contains_key(&("e0".to_owned(), made_up(0)))
        );
        assert!(catalog.component("q", &sha256).is_ok());
    }

    #[test]
    fn records_weir_did_not_write_are_errors_not_panics() {
        let mut catalog = Catalog::new("kafka://x/t", None);
        let headers = BTreeMap::from([(headers::KIND.to_owned(), b"head".to_vec())]);
        let error = catalog
            .apply(Incoming {
                partition: 0,
                offset: 7,
                headers: &headers,
                payload: Some(b"not json"),
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("offset 7"), "{error}");
        let none = BTreeMap::new();
        assert!(
            catalog
                .apply(Incoming {
                    partition: 0,
                    offset: 8,
                    headers: &none,
                    payload: Some(b"x"),
                })
                .is_err()
        );
    }

    #[test]
    fn the_previous_head_is_never_a_mere_candidate_nor_a_version_rolled_back_from() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        let v1 = topic.publish("p", b"v1", "1");
        topic.publish("p", b"v2", "2");
        topic.head("p", &v1, HeadAction::Rollback);
        // v3 is staged and aborted: published, never the head.
        let v3 = topic.publish("p", b"v3", "3");
        topic.records.pop();
        let shadow = RolloutPlan::Shadow { every_nth_batch: 1 };
        topic.rollout("p", &v3, RolloutAction::Stage { rollout: shadow });
        topic.rollout("p", &v3, RolloutAction::Abort { reason: "r".into() });
        let v4 = topic.publish("p", b"v4", "4");
        let mut catalog = Catalog::new("kafka://x/t", None);
        topic.changes(&mut catalog);
        assert_eq!(catalog.heads()["p"].sha256, v4);
        let previous = catalog.previous_head("p").map(|v| v.label.clone());
        assert_eq!(previous, Some(Some("1".to_owned())), "v1, not v3 nor v2");

        // Back on v1, nothing earlier was ever the head.
        topic.head("p", &v1, HeadAction::Rollback);
        let mut catalog = Catalog::new("kafka://x/t", None);
        topic.changes(&mut catalog);
        assert!(catalog.previous_head("p").is_none());
    }

    /// The records compaction leaves: the last record of each key, in their order.
    fn compacted(topic: &Topic) -> Topic {
        let key = |(headers, payload): &Written| -> String {
            let header = |name: &str| String::from_utf8_lossy(&headers[name]).into_owned();
            match header(headers::KIND).as_str() {
                kinds::CHUNK => format!(
                    "chunk/{}/{}/{}",
                    header(headers::PLUGIN),
                    header(headers::SHA256),
                    header(headers::CHUNK_INDEX)
                ),
                kinds::VERSION => {
                    let v: PublishedVersion = serde_json::from_slice(payload).unwrap();
                    format!("version/{}/{}", v.name, v.sha256)
                }
                kinds::HEAD => {
                    let h: Head = serde_json::from_slice(payload).unwrap();
                    format!("head/{}", h.name)
                }
                kinds::ROLLOUT => {
                    let r: RolloutRecord = serde_json::from_slice(payload).unwrap();
                    format!("rollout/{}", r.name)
                }
                other => panic!("{other}"),
            }
        };
        let keys: Vec<String> = topic.records.iter().map(key).collect();
        let records = topic
            .records
            .iter()
            .enumerate()
            .filter(|(at, _)| !keys[at + 1..].contains(&keys[*at]))
            .map(|(_, record)| record.clone())
            .collect();
        Topic { records }
    }

    #[test]
    fn after_compaction_no_previous_head_is_guessed() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        let v1 = topic.publish("p", b"v1", "1");
        // v2 was bad: the fleet went back to v1, then v3 was published.
        topic.publish("p", b"v2", "2");
        topic.head("p", &v1, HeadAction::Rollback);
        let v3 = topic.publish("p", b"v3", "3");
        let mut catalog = Catalog::new("kafka://x/t", None);
        topic.changes(&mut catalog);
        let previous = catalog.previous_head("p").map(|v| v.sha256.clone());
        assert_eq!(previous, Some(v1.clone()), "the heads read say v1");

        let topic = compacted(&topic);
        let heads = topic
            .records
            .iter()
            .filter(|(h, _)| h[headers::KIND] == kinds::HEAD.as_bytes())
            .count();
        assert_eq!(heads, 1, "compaction keeps the last head record only");
        let mut catalog = Catalog::new("kafka://x/t", None);
        topic.changes(&mut catalog);
        assert_eq!(catalog.heads()["p"].sha256, v3);
        assert_eq!(catalog.versions()["p"].len(), 3, "version records survive");
        // v2, published just before v3, is the version the fleet was rolled back from: the
        // records left cannot tell, so there is no previous head, never v2.
        assert!(catalog.previous_head("p").is_none());
    }

    #[test]
    fn a_wrong_chunk_replaced_by_the_right_one_makes_the_head_deployable_again() {
        let mut published = Topic {
            records: Vec::new(),
        };
        let sha256 = published.publish("p", b"the component", "1");
        let right_chunk = published.records.remove(0);
        // A wrong chunk 0 first, then the version and the head: complete, but not its hash.
        let mut topic = Topic {
            records: Vec::new(),
        };
        topic.chunk("p", &sha256, 0, 1, b"forged".to_vec());
        topic.records.extend(published.records);
        let mut catalog = Catalog::new("kafka://x/t", None);
        let heads = topic.read(&mut catalog);
        assert_eq!(heads.len(), 1, "handed out once complete");
        assert!(
            catalog.component("p", &sha256).is_err(),
            "the hash is wrong"
        );

        // The right chunk arrives (a publisher's retry): the head is handed out again.
        let retry = Topic {
            records: vec![right_chunk],
        };
        let heads = retry.read(&mut catalog);
        assert_eq!(heads.len(), 1, "the head deploys again");
        assert_eq!(heads[0].sha256, sha256);
        let (bytes, _) = catalog.component("p", &sha256).unwrap();
        assert_eq!(bytes, b"the component");
        assert_eq!(catalog.pending().count(), 0);
    }
}
