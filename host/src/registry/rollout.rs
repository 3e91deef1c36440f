//! Staged rollouts of a plugin version: which partitions a canary takes, the running tally of a
//! shadow's differences with the live version, and what the admin API shows of a rollout. The
//! slots hold the staged candidate; this module holds what is pure about it.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::slots::PluginVersion;
use super::{Manifest, PluginFile, PluginRegistry, read_plugin_file};
pub use crate::runtime::{RecordDiff, Rollout, ShadowBatch};

/// What marks a candidate's files in the registry folder: `NAME.candidate.wasm` and
/// `NAME.candidate.toml`. The watcher never deploys them; `weir plugin stage NAME` stages them.
pub const CANDIDATE_MARK: &str = ".candidate";

/// Whether a file stem (the name before `.wasm` or `.toml`) is a candidate's.
pub fn is_candidate(stem: &str) -> bool {
    stem.ends_with(CANDIDATE_MARK)
}

/// The component and manifest a staged candidate of `name` is loaded from: the candidate's
/// manifest when there is one, else the live version's `NAME.toml`.
pub fn candidate_files(registry: &PluginRegistry, name: &str) -> (PathBuf, PathBuf) {
    let stem = format!("{name}{CANDIDATE_MARK}");
    let manifest = registry.manifest_path_of(&stem);
    let manifest = if manifest.exists() {
        manifest
    } else {
        registry.manifest_path_of(name)
    };
    (registry.path_of(&stem), manifest)
}

/// After a promotion, moves the candidate's files over `NAME.wasm` (and `NAME.toml` when it
/// has its own), so that a restart runs the promoted version. Only when they still hold what was
/// promoted: each file is first taken aside under a private name, so the bytes checked (the
/// component's hash, the manifest's settings) are the bytes moved into place, and a file changed
/// since staging is put back and left where it is. The manifest moves first, so the watcher sees
/// both changes within one debounce and finds the version it already runs.
pub fn adopt_candidate_files(registry: &PluginRegistry, name: &str, promoted: &PluginVersion) {
    let stem = format!("{name}{CANDIDATE_MARK}");
    let wasm = registry.path_of(&stem);
    let manifest = registry.manifest_path_of(&stem);
    // Hidden names without the `.wasm` or `.toml` extension: the watcher ignores them.
    let aside = |path: &Path| {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        path.with_file_name(format!(
            ".{}.promoting.{}",
            file.unwrap_or_default(),
            std::process::id()
        ))
    };
    let (wasm_aside, manifest_aside) = (aside(&wasm), aside(&manifest));
    if std::fs::rename(&wasm, &wasm_aside).is_err() {
        return;
    }
    let has_manifest = std::fs::rename(&manifest, &manifest_aside).is_ok();
    let put_back = |why: &str| {
        tracing::warn!(plugin = name, file = %wasm.display(), "{why}; the candidate's files stay where they are and the promoted version runs until a restart.");
        let _ = std::fs::rename(&wasm_aside, &wasm);
        if has_manifest {
            let _ = std::fs::rename(&manifest_aside, &manifest);
        }
    };
    let same_component = read_plugin_file(&wasm_aside, PluginFile::Component)
        .is_ok_and(|bytes| hex::encode(Sha256::digest(&bytes)) == promoted.plugin.sha256());
    if !same_component {
        return put_back("The candidate file changed since it was staged");
    }
    if has_manifest && Manifest::load(&manifest_aside).ok().as_ref() != Some(&*promoted.manifest) {
        return put_back("The candidate's manifest changed since it was staged");
    }
    let mut moves = vec![(wasm_aside, registry.path_of(name))];
    if has_manifest {
        moves.insert(0, (manifest_aside, registry.manifest_path_of(name)));
    }
    for (from, to) in moves {
        if let Err(error) = std::fs::rename(&from, &to) {
            tracing::warn!(plugin = name, from = %from.display(), to = %to.display(), %error, "Cannot move the promoted candidate's file into place; the promoted version runs until a restart.");
            return;
        }
    }
}

/// Differing records kept per staged candidate as a sample (the most recent ones).
pub const DIFF_SAMPLE_LIMIT: usize = 20;

/// Why a staged rollout could not be started, promoted or aborted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RolloutError {
    /// No plugin of that name is loaded.
    #[error(
        "no plugin `{0}` is loaded; a candidate is staged beside a running version, so deploy NAME.wasm first"
    )]
    UnknownPlugin(String),
    /// Nothing is staged for the plugin.
    #[error("plugin `{0}` has no staged candidate; stage one with `weir plugin stage {0}`")]
    NothingStaged(String),
    /// The rollout asks for something impossible.
    #[error("invalid rollout for plugin `{name}`: {reason}")]
    Invalid {
        /// The plugin.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// A rollout as an operator asks for it. A canary's share of partitions (`--canary 33%` without
/// a count) is resolved by each process against its own sources' partition counts, so neither
/// the operator nor the fleet's registry needs to know them. Written as JSON like [`Rollout`]
/// (`{"shadow":{...}}`, `{"canary":{...}}`), plus `{"canary_share":{"percent":33}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RolloutPlan {
    /// A shadow on every Nth batch (see [`Rollout::Shadow`]).
    Shadow {
        /// 1 runs it on every batch, 10 on one batch in ten.
        every_nth_batch: u32,
    },
    /// A canary on these partitions (see [`Rollout::Canary`]).
    Canary {
        /// The partitions whose records the candidate processes.
        partitions: BTreeSet<i32>,
    },
    /// A canary on the partitions `p` with `p * 100 / COUNT < percent`, COUNT the largest
    /// partition count among the sources of the pipelines that use the plugin.
    CanaryShare {
        /// The share, 1 to 100.
        percent: u32,
    },
}

impl From<Rollout> for RolloutPlan {
    fn from(rollout: Rollout) -> Self {
        match rollout {
            Rollout::Shadow { every_nth_batch } => RolloutPlan::Shadow { every_nth_batch },
            Rollout::Canary { partitions } => RolloutPlan::Canary { partitions },
        }
    }
}

impl RolloutPlan {
    /// The rollout this process runs: a share becomes the partitions it names among
    /// `partition_count()` partitions (asked only for a share).
    pub fn resolve(
        &self,
        name: &str,
        partition_count: impl FnOnce() -> Result<u32, String>,
    ) -> Result<Rollout, RolloutError> {
        let invalid = |reason: String| RolloutError::Invalid {
            name: name.to_owned(),
            reason,
        };
        match self {
            RolloutPlan::Shadow { every_nth_batch } => Ok(Rollout::Shadow {
                every_nth_batch: *every_nth_batch,
            }),
            RolloutPlan::Canary { partitions } => Ok(Rollout::Canary {
                partitions: partitions.clone(),
            }),
            RolloutPlan::CanaryShare { percent } => {
                if !(1..=100).contains(percent) {
                    return Err(invalid(format!(
                        "a canary's share is 1% to 100%, not {percent}%"
                    )));
                }
                let count = partition_count().map_err(invalid)?;
                let partitions = canary_partitions(*percent, count);
                if partitions.is_empty() {
                    return Err(invalid(format!(
                        "{percent}% of {count} partitions takes none; give a larger share or list partitions"
                    )));
                }
                Ok(Rollout::Canary { partitions })
            }
        }
    }

    /// The plan in words: `a shadow on every 2 batch(es)`, `a canary on partitions 0,1`,
    /// `a canary on 33% of the partitions`.
    pub fn describe(&self) -> String {
        match self {
            RolloutPlan::Shadow { every_nth_batch } => {
                format!("a shadow on every {every_nth_batch} batch(es)")
            }
            RolloutPlan::Canary { partitions } => format!(
                "a canary on partitions {}",
                partitions
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            RolloutPlan::CanaryShare { percent } => {
                format!("a canary on {percent}% of the partitions")
            }
        }
    }
}

/// Checks what the type cannot: a shadow runs on some batches, a canary takes some partitions.
pub fn validate(name: &str, rollout: &Rollout) -> Result<(), RolloutError> {
    let invalid = |reason: &str| RolloutError::Invalid {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    match rollout {
        Rollout::Shadow { every_nth_batch: 0 } => Err(invalid(
            "a shadow runs on every Nth batch with N at least 1 (1: every batch)",
        )),
        Rollout::Canary { partitions } if partitions.is_empty() => Err(invalid(
            "a canary needs at least one partition; give a larger percentage or list partitions",
        )),
        Rollout::Canary { partitions } if partitions.iter().any(|p| *p < 0) => {
            Err(invalid("partition numbers start at 0"))
        }
        _ => Ok(()),
    }
}

/// The partitions a canary of `percent`% of a stream of `count` partitions takes: those whose
/// number `p` has `p * 100 / count < percent`, so the same share always names the same
/// partitions and a larger share only adds to a smaller one's.
pub fn canary_partitions(percent: u32, count: u32) -> BTreeSet<i32> {
    (0..count)
        .filter(|p| u64::from(*p) * 100 < u64::from(percent) * u64::from(count))
        .filter_map(|p| i32::try_from(p).ok())
        .collect()
}

/// A running total of a shadow candidate's comparisons with the live version.
#[derive(Debug, Clone, Default)]
pub struct ShadowTally {
    batches: u64,
    compared: u64,
    differing: u64,
    failed: u64,
    samples: VecDeque<RecordDiff>,
}

impl ShadowTally {
    /// Adds one batch's comparison; the sample keeps the most recent differing records.
    pub fn add(&mut self, batch: ShadowBatch) {
        self.batches += 1;
        self.compared += batch.compared;
        self.differing += batch.differing;
        self.failed += batch.failed;
        for diff in batch.samples {
            if self.samples.len() == DIFF_SAMPLE_LIMIT {
                self.samples.pop_front();
            }
            self.samples.push_back(diff);
        }
    }

    /// The totals as the admin API shows them.
    pub fn report(&self) -> ShadowReport {
        ShadowReport {
            batches: self.batches,
            compared: self.compared,
            differing: self.differing,
            differing_share: if self.compared == 0 {
                0.0
            } else {
                self.differing as f64 / self.compared as f64
            },
            failed: self.failed,
            samples: self.samples.iter().cloned().collect(),
        }
    }
}

/// What a shadow candidate did so far.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShadowReport {
    /// Batches it ran on.
    pub batches: u64,
    /// Records compared with the live version's results.
    pub compared: u64,
    /// Of those, records whose results differ.
    pub differing: u64,
    /// `differing / compared` (0 before the first comparison).
    pub differing_share: f64,
    /// Records the candidate failed (never dead-lettered).
    pub failed: u64,
    /// The most recent differing records, oldest first, each truncated.
    pub samples: Vec<RecordDiff>,
}

/// What a canary candidate did so far.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CanaryReport {
    /// Records it processed.
    pub records: u64,
    /// Of those, failures by its fault (plugin failures, traps, timeouts).
    pub failed: u64,
    /// Whether its automatic-abort window completed without too many failures.
    pub passed_window: bool,
}

/// A staged candidate as the admin API, the status page and `weir plugin diff` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutInfo {
    /// The candidate's version (sha256 prefix).
    pub version: String,
    /// Its manifest's version string, if any.
    pub label: Option<String>,
    /// How it shares the records.
    pub rollout: Rollout,
    /// When it was staged, seconds since the Unix epoch.
    pub staged_at: u64,
    /// The shadow's comparisons (shadow rollouts only).
    pub shadow: Option<ShadowReport>,
    /// The canary's counts (canary rollouts only).
    pub canary: Option<CanaryReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentage_names_the_lowest_partitions() {
        assert_eq!(canary_partitions(33, 6), BTreeSet::from([0, 1]));
        assert_eq!(canary_partitions(34, 6), BTreeSet::from([0, 1, 2]));
        assert_eq!(canary_partitions(10, 6), BTreeSet::from([0]));
        assert_eq!(canary_partitions(100, 6), (0..6).collect());
        assert!(canary_partitions(0, 6).is_empty());
        assert!(canary_partitions(50, 0).is_empty());
        // A larger share only adds partitions.
        for percent in 0..100 {
            assert!(canary_partitions(percent, 12).is_subset(&canary_partitions(percent + 1, 12)));
        }
    }

    #[test]
    fn empty_or_impossible_rollouts_are_refused() {
        assert!(validate("p", &Rollout::Shadow { every_nth_batch: 0 }).is_err());
        assert!(validate("p", &Rollout::Shadow { every_nth_batch: 1 }).is_ok());
        let canary = |partitions: &[i32]| Rollout::Canary {
            partitions: partitions.iter().copied().collect(),
        };
        assert!(validate("p", &canary(&[])).is_err());
        assert!(validate("p", &canary(&[-1])).is_err());
        assert!(validate("p", &canary(&[0, 5])).is_ok());
    }

    #[test]
    fn a_share_is_resolved_against_the_partition_count_only_when_asked() {
        let share = RolloutPlan::CanaryShare { percent: 33 };
        assert_eq!(
            share.resolve("p", || Ok(6)).unwrap(),
            Rollout::Canary {
                partitions: BTreeSet::from([0, 1])
            }
        );
        // One partition (a file or an HTTP source): any share takes it.
        assert_eq!(
            share.resolve("p", || Ok(1)).unwrap(),
            Rollout::Canary {
                partitions: BTreeSet::from([0])
            }
        );
        let error = share
            .resolve("p", || Err("the brokers did not answer".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("brokers did not answer"), "{error}");
        assert!(share.resolve("p", || Ok(0)).is_err());
        assert!(
            RolloutPlan::CanaryShare { percent: 0 }
                .resolve("p", || Ok(6))
                .is_err()
        );
        let listed = RolloutPlan::Canary {
            partitions: BTreeSet::from([4]),
        };
        let never = || -> Result<u32, String> { panic!("a listed canary needs no count") };
        assert_eq!(
            listed.resolve("p", never).unwrap(),
            Rollout::Canary {
                partitions: BTreeSet::from([4])
            }
        );
        // The JSON of a plan is the JSON of the rollout it names, plus the share.
        let json = serde_json::to_string(&share).unwrap();
        assert_eq!(json, r#"{"canary_share":{"percent":33}}"#);
        let shadow: RolloutPlan =
            serde_json::from_str(r#"{"shadow":{"every_nth_batch":3}}"#).unwrap();
        assert_eq!(shadow, RolloutPlan::Shadow { every_nth_batch: 3 });
    }

    fn diff(n: usize) -> RecordDiff {
        RecordDiff {
            position: format!("s/0@{n}"),
            live: "a".into(),
            candidate: "b".into(),
        }
    }

    #[test]
    fn the_tally_adds_batches_and_keeps_the_latest_samples() {
        let mut tally = ShadowTally::default();
        assert_eq!(tally.report().differing_share, 0.0);
        for batch in 0..10 {
            tally.add(ShadowBatch {
                compared: 8,
                differing: 2,
                failed: 1,
                samples: (0..3).map(|n| diff(batch * 3 + n)).collect(),
            });
        }
        let report = tally.report();
        assert_eq!(
            (
                report.batches,
                report.compared,
                report.differing,
                report.failed
            ),
            (10, 80, 20, 10)
        );
        assert_eq!(report.differing_share, 0.25);
        assert_eq!(report.samples.len(), DIFF_SAMPLE_LIMIT);
        assert_eq!(report.samples[0].position, "s/0@10");
        assert_eq!(report.samples[DIFF_SAMPLE_LIMIT - 1].position, "s/0@29");
    }
}
