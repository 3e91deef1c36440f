//! What the registry topic holds, rebuilt record by record: every published version of every
//! plugin (in publishing order), the chunks of the components this process may run, each
//! plugin's head and its latest rollout (a candidate staged beside the head, or the end of one).
//! A head or a staged candidate becomes deployable once its version's description and every
//! chunk arrived, whatever order the partitions delivered them in.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::KafkaRegistryError;
use super::chunks::{Assembly, MAX_COMPONENT_BYTES, MAX_MANIFEST_BYTES, headers, kinds};
use crate::registry::Manifest;
use crate::registry::rollout::RolloutPlan;

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

/// The registry topic's content.
#[derive(Debug, Clone)]
pub struct Catalog {
    registry: String,
    /// Plugins whose chunks are kept in memory; `None` keeps all.
    keep: Option<BTreeSet<String>>,
    versions: BTreeMap<String, Vec<PublishedVersion>>,
    assemblies: BTreeMap<(String, String), Assembly>,
    heads: BTreeMap<String, Head>,
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
            versions: BTreeMap::new(),
            assemblies: BTreeMap::new(),
            heads: BTreeMap::new(),
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
                self.assemblies
                    .entry((name.clone(), sha256.clone()))
                    .or_insert_with(|| Assembly::new(&sha256))
                    .insert(index, count, payload.to_vec())
                    .map_err(|e| malformed(format!("plugin `{name}` version {sha256}: {e}")))?;
                Ok(self.ready(&name, &sha256))
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
                let list = self.versions.entry(name.clone()).or_default();
                list.retain(|v| v.sha256 != sha256);
                list.push(version);
                Ok(self.ready(&name, &sha256))
            }
            kinds::HEAD => {
                let head: Head = serde_json::from_slice(payload)
                    .map_err(|e| malformed(format!("head record: {e}")))?;
                let (name, sha256) = (head.name.clone(), head.sha256.clone());
                self.heads.insert(name.clone(), head);
                self.pending.insert(name.clone());
                Ok(self.ready(&name, &sha256))
            }
            kinds::ROLLOUT => {
                let rollout: RolloutRecord = serde_json::from_slice(payload)
                    .map_err(|e| malformed(format!("rollout record: {e}")))?;
                let (name, sha256) = (rollout.name.clone(), rollout.sha256.clone());
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
        self.assemblies
            .remove(&(name.to_owned(), sha256.to_owned()));
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
        let assembled = !self.keeps(name)
            || self
                .assemblies
                .get(&(name.to_owned(), sha256.to_owned()))
                .is_some_and(Assembly::is_complete);
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
        let bytes = self
            .assemblies
            .get(&(name.to_owned(), sha256.to_owned()))
            .and_then(Assembly::bytes)
            .ok_or_else(|| {
                missing(format!(
                    "plugin `{name}` version {} is missing chunks",
                    version.version
                ))
            })?
            .map_err(|e| missing(format!("plugin `{name}` version {}: {e}", version.version)))?;
        let mut manifest: Manifest = toml::from_str(&version.manifest).map_err(|e| {
            missing(format!(
                "plugin `{name}` version {}: its manifest does not parse: {}",
                version.version,
                e.to_string().trim_end()
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
        assert!(
            !catalog
                .assemblies
                .contains_key(&("p".to_owned(), v[0].clone()))
        );
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
    fn chunks_of_plugins_this_process_does_not_run_are_not_kept() {
        let mut topic = Topic {
            records: Vec::new(),
        };
        let sha256 = topic.publish("other", b"component", "1");
        let mut catalog = Catalog::new("kafka://x/t", Some(BTreeSet::from(["mine".to_owned()])));
        assert_eq!(topic.read(&mut catalog).len(), 1, "listed all the same");
        assert!(catalog.assemblies.is_empty());
        assert!(catalog.component("other", &sha256).is_err());
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
}
