//! The live version of every plugin and its recent history. Workers read a slot's generation
//! between batches and re-instantiate when it moved; the watcher, the admin API and automatic
//! rollback are the only writers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use super::manifest::{Capability, Manifest};
use super::rollout::{CanaryReport, Rollout, RolloutError, RolloutInfo, ShadowBatch, ShadowTally};
use crate::runtime::{
    Grants, Instantiation, LiveSlot, LiveSlots, LoadedPlugin, PluginError, PluginInstance,
    PluginLimits, RecordErrorKind, StagedInstantiation, StepRequest,
};

/// One deployable version of a plugin: the compiled component and the manifest beside it.
#[derive(Debug, Clone)]
pub struct PluginVersion {
    /// The compiled, type-checked component.
    pub plugin: Arc<LoadedPlugin>,
    /// Its manifest (empty when there is no NAME.toml).
    pub manifest: Arc<Manifest>,
}

impl PluginVersion {
    /// A version without a manifest.
    pub fn bare(plugin: Arc<LoadedPlugin>) -> Self {
        PluginVersion {
            plugin,
            manifest: Arc::default(),
        }
    }

    /// An instance configured and granted as a pipeline's transform entry asks. A capability
    /// the manifest asks for and the pipeline does not allow is refused.
    pub fn instantiate(&self, request: StepRequest<'_>) -> Result<PluginInstance, PluginError> {
        let name = self.plugin.name();
        if let Some(missing) = self.manifest.missing_grant(request.allow) {
            return Err(PluginError::Init {
                name: name.to_owned(),
                reason: format!(
                    "its manifest asks for the `{missing}` capability, which the pipeline does not allow; add `allow = [\"{missing}\"]` to its transform entry if you trust the plugin"
                ),
            });
        }
        let granted = |capability| self.manifest.capabilities.contains(&capability);
        let limits = PluginLimits {
            grants: Grants {
                clock: granted(Capability::Clock),
                random: granted(Capability::Random),
            },
            ..request.limits
        };
        let config = self.manifest.merged_config(request.config);
        self.plugin.instantiate(&config, limits)
    }
}

/// A version (or a canary candidate) that failed its probation, as judged under the slot's
/// lock: acting on it (rolling back, aborting) changes nothing once the generation it names is
/// no longer the active one (the staged one, for a canary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedProbation {
    /// The active generation judged, or the staged generation of a canary.
    pub generation: u64,
    /// Why, for the log and the admin API.
    pub reason: String,
}

/// Previous versions kept per plugin for rollback.
pub const HISTORY_LIMIT: usize = 5;

/// When a newly activated version is rolled back automatically: when more than
/// `max_failure_ratio` of its first `window` records fail by the version's fault (a plugin
/// failure, a trap or a timeout; see [`blames_the_version`]). It is rolled back as soon as that
/// is certain, that is once more than `max_failure_ratio * window` of them failed, and kept once
/// the window is complete without that. Records it judged `bad-record` fill the window without
/// counting against it: a burst of malformed input right after a deploy is the input's fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollbackPolicy {
    /// Records a new version is watched for after activation; 0 turns automatic rollback off.
    pub window: u64,
    /// Share of the window failing by the version's fault above which it is rolled back (0.0 to
    /// 1.0).
    pub max_failure_ratio: f64,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        RollbackPolicy {
            window: 200,
            max_failure_ratio: 0.5,
        }
    }
}

/// Why a rollback could not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RollbackError {
    /// No plugin of that name is loaded.
    #[error("no plugin `{0}` is loaded")]
    UnknownPlugin(String),
    /// There is no earlier version to return to.
    #[error("plugin `{0}` has no previous version to roll back to")]
    NoHistory(String),
}

/// One plugin version as the admin API and `weir plugin list` show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VersionInfo {
    /// sha256 prefix.
    pub version: String,
    /// The manifest's version string, if any.
    pub label: Option<String>,
    /// The manifest's description, if any.
    pub description: Option<String>,
    /// The full sha256.
    pub sha256: String,
    /// When it became active, seconds since the Unix epoch.
    pub activated_at: u64,
    /// Whether its compiled code came from the cache.
    pub cache: String,
}

/// A plugin with its active version and history, for the admin API.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SlotInfo {
    /// The plugin's name.
    pub name: String,
    /// The active version.
    pub current: VersionInfo,
    /// Earlier versions, most recent first.
    pub history: Vec<VersionInfo>,
    /// How many times the active version changed.
    pub swaps: u64,
    /// How many of those changes were rollbacks (automatic or requested).
    #[serde(default)]
    pub rollbacks: u64,
    /// The last automatic rollback, if any, and why.
    pub last_rollback: Option<String>,
    /// The last file rejected for this plugin, if any.
    pub last_rejection: Option<Rejection>,
    /// The candidate staged beside the active version, if any.
    #[serde(default)]
    pub staged: Option<RolloutInfo>,
    /// The last aborted rollout, if any, and why.
    #[serde(default)]
    pub last_abort: Option<String>,
}

/// The live versions of all plugins of a process.
#[derive(Debug, Clone, Default)]
pub struct PluginSlots {
    slots: Arc<RwLock<BTreeMap<String, Arc<PluginSlot>>>>,
    policy: Arc<Mutex<RollbackPolicy>>,
    rejections: Arc<Mutex<BTreeMap<String, Rejection>>>,
}

/// The last file rejected for a plugin, and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// Why, in one sentence.
    pub reason: String,
    /// When, seconds since the Unix epoch.
    pub at: u64,
    /// Rejections of this plugin so far.
    pub count: u64,
}

impl PluginSlots {
    /// Slots rolled back automatically under `policy`.
    pub fn new(policy: RollbackPolicy) -> Self {
        PluginSlots {
            slots: Arc::default(),
            policy: Arc::new(Mutex::new(policy)),
            rejections: Arc::default(),
        }
    }

    /// Makes `version` the active version of its name, creating the slot on first use.
    pub fn activate(&self, version: PluginVersion) -> Arc<PluginSlot> {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(version.plugin.name()) {
            slot.activate(version);
            return Arc::clone(slot);
        }
        let policy = *self.policy.lock().unwrap_or_else(|p| p.into_inner());
        let slot = Arc::new(PluginSlot::new(version, policy));
        slots.insert(slot.name.clone(), Arc::clone(&slot));
        slot
    }

    /// Makes `version` the active version of its name as a rollback requested elsewhere (the
    /// fleet's registry returned the plugin to an earlier version): counted and described as a
    /// rollback, like [`PluginSlots::rollback`], not as a swap. A plugin with no slot yet gets
    /// one, with nothing rolled back.
    pub fn activate_rollback(&self, version: PluginVersion, reason: &str) -> Arc<PluginSlot> {
        let Some(slot) = self.get(version.plugin.name()) else {
            return self.activate(version);
        };
        slot.activate_rollback(version, reason);
        slot
    }

    /// The slot of plugin `name`.
    pub fn get(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Returns plugin `name` to its previous version.
    pub fn rollback(&self, name: &str) -> Result<PluginVersion, RollbackError> {
        self.get(name)
            .ok_or_else(|| RollbackError::UnknownPlugin(name.to_owned()))?
            .rollback("requested by an operator")
    }

    /// Stages `version` beside the active version of its name, replacing any candidate staged
    /// before.
    pub fn stage(
        &self,
        version: PluginVersion,
        rollout: Rollout,
    ) -> Result<Arc<PluginSlot>, RolloutError> {
        let name = version.plugin.name().to_owned();
        super::rollout::validate(&name, &rollout)?;
        let slot = self
            .get(&name)
            .ok_or_else(|| RolloutError::UnknownPlugin(name.clone()))?;
        slot.stage(version, rollout);
        Ok(slot)
    }

    /// Makes plugin `name`'s staged candidate its active version.
    pub fn promote(&self, name: &str) -> Result<PluginVersion, RolloutError> {
        self.get(name)
            .ok_or_else(|| RolloutError::UnknownPlugin(name.to_owned()))?
            .promote()
    }

    /// Drops plugin `name`'s staged candidate; every record goes to the active version again.
    pub fn abort(&self, name: &str, reason: &str) -> Result<PluginVersion, RolloutError> {
        self.get(name)
            .ok_or_else(|| RolloutError::UnknownPlugin(name.to_owned()))?
            .abort(reason)
    }

    /// Remembers that a file for `name` was rejected, for the admin API and metrics.
    pub fn note_rejection(&self, name: &str, reason: &str) {
        let mut rejections = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
        let count = rejections.get(name).map_or(0, |r| r.count) + 1;
        rejections.insert(
            name.to_owned(),
            Rejection {
                reason: reason.to_owned(),
                at: unix_seconds(SystemTime::now()),
                count,
            },
        );
    }

    /// The last rejection of plugin `name`.
    pub fn last_rejection(&self, name: &str) -> Option<Rejection> {
        self.rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every plugin with its versions.
    pub fn describe(&self) -> Vec<SlotInfo> {
        let slots: Vec<Arc<PluginSlot>> = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        slots
            .iter()
            .map(|slot| {
                let mut info = slot.describe();
                info.last_rejection = self.last_rejection(&info.name);
                info
            })
            .collect()
    }
}

/// One plugin name's active version.
#[derive(Debug)]
pub struct PluginSlot {
    name: String,
    generation: AtomicU64,
    /// Bumped when a candidate is staged, promoted or aborted.
    staged_generation: AtomicU64,
    state: Mutex<SlotState>,
    policy: RollbackPolicy,
}

#[derive(Debug)]
struct SlotState {
    current: Active,
    history: VecDeque<Active>,
    swaps: u64,
    rollbacks: u64,
    probation: Option<Probation>,
    last_rollback: Option<String>,
    candidate: Option<Candidate>,
    last_abort: Option<String>,
}

/// A version staged beside the active one, with what it did so far.
#[derive(Debug)]
struct Candidate {
    version: PluginVersion,
    rollout: Rollout,
    /// The staged generation it was staged at; reports for another are stale.
    generation: u64,
    staged_at: SystemTime,
    shadow: ShadowTally,
    /// A canary's first records, judged like a newly activated version's.
    probation: Probation,
    /// Whether that window completed without too many failures.
    passed_window: bool,
}

impl Candidate {
    fn describe(&self) -> RolloutInfo {
        RolloutInfo {
            version: self.version.plugin.version().to_owned(),
            label: self.version.manifest.version.clone(),
            rollout: self.rollout.clone(),
            staged_at: unix_seconds(self.staged_at),
            shadow: matches!(self.rollout, Rollout::Shadow { .. }).then(|| self.shadow.report()),
            canary: matches!(self.rollout, Rollout::Canary { .. }).then(|| CanaryReport {
                records: self.probation.seen,
                failed: self.probation.failed,
                passed_window: self.passed_window,
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct Active {
    version: PluginVersion,
    activated_at: SystemTime,
}

/// The first records of a new version, counted to decide on automatic rollback.
#[derive(Debug)]
struct Probation {
    generation: u64,
    seen: u64,
    /// Failures by the version's fault.
    failed: u64,
    /// Records the version judged malformed: counted for the log, never against it.
    bad: u64,
}

/// Whether a record's failure of `kind` counts against the plugin version that reported it.
/// A `bad-record` is the plugin judging the input, which a new version must be free to do for a
/// burst of malformed input; failures at the source or the sink are no plugin's at all.
pub fn blames_the_version(kind: RecordErrorKind) -> bool {
    match kind {
        RecordErrorKind::PluginFailure | RecordErrorKind::Trap | RecordErrorKind::Timeout => true,
        RecordErrorKind::BadRecord | RecordErrorKind::Malformed | RecordErrorKind::SinkRejected => {
            false
        }
    }
}

/// What a probation's counts say so far.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The window is not complete and could still go either way.
    Pending,
    /// The window completed with at most the threshold's share failed.
    Keep,
    /// More than the threshold's share of the window failed.
    RollBack,
}

impl Probation {
    fn new(generation: u64) -> Self {
        Probation {
            generation,
            seen: 0,
            failed: 0,
            bad: 0,
        }
    }

    /// Counts records in the order they were processed (`None` for a success, else the kind of
    /// the failure), up to the end of the window: later records are no part of the verdict.
    fn count(&mut self, outcomes: impl IntoIterator<Item = Option<RecordErrorKind>>, window: u64) {
        let room = usize::try_from(window.saturating_sub(self.seen)).unwrap_or(usize::MAX);
        for outcome in outcomes.into_iter().take(room) {
            self.seen += 1;
            match outcome {
                Some(kind) if blames_the_version(kind) => self.failed += 1,
                Some(RecordErrorKind::BadRecord) => self.bad += 1,
                _ => {}
            }
        }
    }

    fn verdict(&self, policy: &RollbackPolicy) -> Verdict {
        // The window's ratio can only end above the threshold once this many failed, whatever
        // the rest of it does; until then, only a complete window decides.
        if self.failed as f64 > policy.max_failure_ratio * policy.window as f64 {
            Verdict::RollBack
        } else if self.seen >= policy.window {
            Verdict::Keep
        } else {
            Verdict::Pending
        }
    }
}

impl PluginSlot {
    fn new(version: PluginVersion, policy: RollbackPolicy) -> Self {
        PluginSlot {
            name: version.plugin.name().to_owned(),
            generation: AtomicU64::new(0),
            staged_generation: AtomicU64::new(0),
            state: Mutex::new(SlotState {
                current: Active::now(version),
                history: VecDeque::new(),
                swaps: 0,
                rollbacks: 0,
                probation: None,
                last_rollback: None,
                candidate: None,
                last_abort: None,
            }),
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bumped on every change of the active version; cheap to poll between batches.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The active version and its generation.
    pub fn current(&self) -> (u64, PluginVersion) {
        let state = self.lock();
        (self.generation(), state.current.version.clone())
    }

    /// Makes `version` active; the previous version goes to the history. Activating the
    /// component that is already active only replaces its manifest.
    pub fn activate(&self, version: PluginVersion) {
        let mut state = self.lock();
        self.activate_locked(&mut state, version);
    }

    /// Whether the active version changed.
    fn activate_locked(&self, state: &mut SlotState, version: PluginVersion) -> bool {
        let same_component = state.current.version.plugin.sha256() == version.plugin.sha256();
        if same_component && state.current.version.manifest == version.manifest {
            return false;
        }
        let previous = std::mem::replace(&mut state.current, Active::now(version));
        state.history.push_front(previous);
        state.history.truncate(HISTORY_LIMIT);
        state.swaps += 1;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        state.probation = Some(Probation::new(generation));
        true
    }

    /// Makes `version` active as a rollback decided elsewhere (the fleet's registry); the change
    /// counts as a rollback, with `reason`, as [`PluginSlot::rollback`] does. Like that one it
    /// drops the abandoned version from the history (a local rollback must not return to it),
    /// and the version returned to too (it is active), and is not put on probation: the version
    /// returned to is not judged again.
    pub fn activate_rollback(&self, version: PluginVersion, reason: &str) {
        let mut state = self.lock();
        let from = state.current.version.plugin.version().to_owned();
        let to = version.plugin.version().to_owned();
        let target = version.plugin.sha256().to_owned();
        if !self.activate_locked(&mut state, version) {
            return;
        }
        // `activate_locked` put the abandoned version first.
        state.history.pop_front();
        state
            .history
            .retain(|active| active.version.plugin.sha256() != target);
        state.rollbacks += 1;
        state.probation = None;
        state.last_rollback = Some(format!("rolled back from {from} to {to}: {reason}"));
    }

    /// Returns to the most recent earlier version; the abandoned one is dropped from history.
    pub fn rollback(&self, reason: &str) -> Result<PluginVersion, RollbackError> {
        let mut state = self.lock();
        self.rollback_locked(&mut state, reason)
    }

    fn rollback_locked(
        &self,
        state: &mut SlotState,
        reason: &str,
    ) -> Result<PluginVersion, RollbackError> {
        let previous = state
            .history
            .pop_front()
            .ok_or_else(|| RollbackError::NoHistory(self.name.clone()))?;
        let (from, to) = (
            state.current.version.plugin.version().to_owned(),
            previous.version.plugin.version().to_owned(),
        );
        state.current = Active::now(previous.version.clone());
        state.swaps += 1;
        state.rollbacks += 1;
        state.probation = None;
        tracing::warn!(plugin = %self.name, from, to, reason, "Plugin rolled back.");
        state.last_rollback = Some(format!("rolled back from {from} to {to}: {reason}"));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(previous.version)
    }

    /// Counts a batch's results for the version of `generation`, in the order its records were
    /// processed (`None` for a record that passed, else the kind of its failure); rolls the
    /// version back automatically when more than the policy's share of its first records fail by
    /// its fault (see [`RollbackPolicy`]). Workers report concurrently: the rollback happens only
    /// while `generation` is still the active one, so two reports that both condemn it roll back
    /// once, and a version activated since is never the one undone.
    pub fn report(
        &self,
        generation: u64,
        outcomes: impl IntoIterator<Item = Option<RecordErrorKind>>,
    ) {
        if let Some(failed) = self.judge(generation, outcomes) {
            self.roll_back_failed(&failed);
        }
    }

    /// The first half of [`PluginSlot::report`]: counts the results and says whether the
    /// version of `generation` failed its probation, changing no version.
    pub fn judge(
        &self,
        generation: u64,
        outcomes: impl IntoIterator<Item = Option<RecordErrorKind>>,
    ) -> Option<FailedProbation> {
        let mut state = self.lock();
        let probation = state
            .probation
            .as_mut()
            .filter(|p| p.generation == generation)?;
        probation.count(outcomes, self.policy.window);
        let reason = match probation.verdict(&self.policy) {
            Verdict::Pending => None,
            Verdict::Keep => {
                if probation.bad > 0 {
                    tracing::info!(
                        plugin = %self.name,
                        failed = probation.failed,
                        bad_records = probation.bad,
                        window = self.policy.window,
                        "New plugin version kept after its probation; the records it judged bad-record were not counted against it."
                    );
                }
                state.probation = None;
                None
            }
            Verdict::RollBack => Some(format!(
                "{} of its first {} records failed (plugin failures, traps or timeouts; {} bad records, the input's fault, not counted), more than {:.0}% of the {}-record window",
                probation.failed,
                probation.seen,
                probation.bad,
                self.policy.max_failure_ratio * 100.0,
                self.policy.window
            )),
        }?;
        Some(FailedProbation { generation, reason })
    }

    /// The second half of [`PluginSlot::report`]: rolls back the version `failed` judged, if
    /// it is still the active one; returns whether it did. Anything that changed the active
    /// version since the verdict (another worker's rollback, an activation) makes it moot.
    pub fn roll_back_failed(&self, failed: &FailedProbation) -> bool {
        let mut state = self.lock();
        // The generation only moves under this lock, so it cannot change before the rollback.
        if self.generation() != failed.generation {
            return false;
        }
        self.rollback_locked(&mut state, &failed.reason).is_ok()
    }

    fn describe(&self) -> SlotInfo {
        let state = self.lock();
        SlotInfo {
            name: self.name.clone(),
            current: state.current.describe(),
            history: state.history.iter().map(Active::describe).collect(),
            swaps: state.swaps,
            rollbacks: state.rollbacks,
            last_rollback: state.last_rollback.clone(),
            last_rejection: None,
            staged: state.candidate.as_ref().map(Candidate::describe),
            last_abort: state.last_abort.clone(),
        }
    }

    /// Bumped when a candidate is staged, promoted or aborted.
    pub fn staged_generation(&self) -> u64 {
        self.staged_generation.load(Ordering::Acquire)
    }

    /// The staged candidate and how it rolls out, if any.
    pub fn staged(&self) -> Option<(PluginVersion, Rollout)> {
        let state = self.lock();
        state
            .candidate
            .as_ref()
            .map(|c| (c.version.clone(), c.rollout.clone()))
    }

    /// What the staged candidate did so far, if any.
    pub fn rollout(&self) -> Option<RolloutInfo> {
        self.lock().candidate.as_ref().map(Candidate::describe)
    }

    /// Stages `version` beside the active version, replacing any earlier candidate.
    pub fn stage(&self, version: PluginVersion, rollout: Rollout) {
        let mut state = self.lock();
        let generation = self.staged_generation.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(
            plugin = %self.name,
            candidate = version.plugin.version(),
            live = state.current.version.plugin.version(),
            ?rollout,
            "Plugin candidate staged."
        );
        state.candidate = Some(Candidate {
            version,
            rollout,
            generation,
            staged_at: SystemTime::now(),
            shadow: ShadowTally::default(),
            probation: Probation::new(generation),
            passed_window: false,
        });
    }

    /// Makes the staged candidate the active version. The active generation moves before the
    /// staged one, so a chain that sees the candidate gone already sees it active.
    pub fn promote(&self) -> Result<PluginVersion, RolloutError> {
        let mut state = self.lock();
        let candidate = state
            .candidate
            .take()
            .ok_or_else(|| RolloutError::NothingStaged(self.name.clone()))?;
        let from = state.current.version.plugin.version().to_owned();
        self.activate_locked(&mut state, candidate.version.clone());
        self.staged_generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!(plugin = %self.name, from, to = candidate.version.plugin.version(), "Plugin candidate promoted.");
        Ok(candidate.version)
    }

    /// Drops the staged candidate; returns it.
    pub fn abort(&self, reason: &str) -> Result<PluginVersion, RolloutError> {
        let mut state = self.lock();
        self.abort_locked(&mut state, reason)
    }

    fn abort_locked(
        &self,
        state: &mut SlotState,
        reason: &str,
    ) -> Result<PluginVersion, RolloutError> {
        let candidate = state
            .candidate
            .take()
            .ok_or_else(|| RolloutError::NothingStaged(self.name.clone()))?;
        self.staged_generation.fetch_add(1, Ordering::AcqRel);
        let version = candidate.version.plugin.version().to_owned();
        tracing::warn!(plugin = %self.name, candidate = version, reason, "Plugin rollout aborted.");
        state.last_abort = Some(format!("aborted {version}: {reason}"));
        Ok(candidate.version)
    }

    /// Counts a shadow batch's comparison for the candidate of `generation`.
    pub fn report_shadow(&self, generation: u64, batch: ShadowBatch) {
        let mut state = self.lock();
        if let Some(candidate) = state
            .candidate
            .as_mut()
            .filter(|c| c.generation == generation)
        {
            candidate.shadow.add(batch);
        }
    }

    /// Counts canary records of the candidate of `generation`; aborts the rollout under the
    /// same rule as an automatic rollback (see [`RollbackPolicy`]), on its own records only.
    /// The abort happens only while that candidate is still the staged one, so a candidate
    /// staged since is never the one dropped.
    pub fn report_canary(
        &self,
        generation: u64,
        outcomes: impl IntoIterator<Item = Option<RecordErrorKind>>,
    ) {
        if let Some(failed) = self.judge_canary(generation, outcomes) {
            self.abort_failed(&failed);
        }
    }

    /// The first half of [`PluginSlot::report_canary`]: counts the canary's records and says
    /// whether the candidate of staged generation `generation` failed, changing nothing staged.
    pub fn judge_canary(
        &self,
        generation: u64,
        outcomes: impl IntoIterator<Item = Option<RecordErrorKind>>,
    ) -> Option<FailedProbation> {
        let mut state = self.lock();
        let candidate = state
            .candidate
            .as_mut()
            .filter(|c| c.generation == generation && !c.passed_window)?;
        candidate.probation.count(outcomes, self.policy.window);
        let reason = match candidate.probation.verdict(&self.policy) {
            Verdict::Pending => None,
            Verdict::Keep => {
                candidate.passed_window = true;
                None
            }
            Verdict::RollBack => Some(format!(
                "automatic: {} of its first {} canary records failed (plugin failures, traps or timeouts), more than {:.0}% of the {}-record window",
                candidate.probation.failed,
                candidate.probation.seen,
                self.policy.max_failure_ratio * 100.0,
                self.policy.window
            )),
        }?;
        Some(FailedProbation { generation, reason })
    }

    /// The second half of [`PluginSlot::report_canary`]: aborts the candidate `failed` judged,
    /// if it is still the staged one; returns whether it did.
    pub fn abort_failed(&self, failed: &FailedProbation) -> bool {
        let mut state = self.lock();
        if state
            .candidate
            .as_ref()
            .is_none_or(|c| c.generation != failed.generation)
        {
            return false;
        }
        self.abort_locked(&mut state, &failed.reason).is_ok()
    }
}

impl LiveSlot for PluginSlot {
    fn name(&self) -> &str {
        &self.name
    }

    fn generation(&self) -> u64 {
        PluginSlot::generation(self)
    }

    fn instantiate(&self, request: StepRequest<'_>) -> Instantiation {
        let (generation, version) = self.current();
        Instantiation {
            generation,
            version: version.plugin.version().to_owned(),
            instance: version.instantiate(request),
        }
    }

    fn report(&self, generation: u64, outcomes: &mut dyn Iterator<Item = Option<RecordErrorKind>>) {
        PluginSlot::report(self, generation, outcomes);
    }

    fn staged_generation(&self) -> u64 {
        PluginSlot::staged_generation(self)
    }

    fn instantiate_staged(&self, request: StepRequest<'_>) -> Option<StagedInstantiation> {
        let (generation, version, rollout) = {
            let state = self.lock();
            let candidate = state.candidate.as_ref()?;
            (
                candidate.generation,
                candidate.version.clone(),
                candidate.rollout.clone(),
            )
        };
        Some(StagedInstantiation {
            generation,
            version: version.plugin.version().to_owned(),
            rollout,
            instance: version.instantiate(request),
        })
    }

    fn report_shadow(&self, staged_generation: u64, batch: ShadowBatch) {
        PluginSlot::report_shadow(self, staged_generation, batch);
    }

    fn report_canary(
        &self,
        staged_generation: u64,
        outcomes: &mut dyn Iterator<Item = Option<RecordErrorKind>>,
    ) {
        PluginSlot::report_canary(self, staged_generation, outcomes);
    }
}

impl LiveSlots for PluginSlots {
    fn live(&self, name: &str) -> Option<Arc<dyn LiveSlot>> {
        self.get(name).map(|slot| slot as Arc<dyn LiveSlot>)
    }
}

impl Active {
    fn now(version: PluginVersion) -> Self {
        Active {
            version,
            activated_at: SystemTime::now(),
        }
    }

    fn describe(&self) -> VersionInfo {
        let plugin = &self.version.plugin;
        VersionInfo {
            version: plugin.version().to_owned(),
            label: self.version.manifest.version.clone(),
            description: self.version.manifest.description.clone(),
            sha256: plugin.sha256().to_owned(),
            activated_at: unix_seconds(self.activated_at),
            cache: plugin.cache_outcome().as_str().to_owned(),
        }
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RollbackPolicy = RollbackPolicy {
        window: 200,
        max_failure_ratio: 0.5,
    };

    /// A trap for `true`, a success for `false`.
    fn traps(
        failures: impl IntoIterator<Item = bool>,
    ) -> impl Iterator<Item = Option<RecordErrorKind>> {
        failures
            .into_iter()
            .map(|failed| failed.then_some(RecordErrorKind::Trap))
    }

    /// Feeds `batches` (each a list of per-record failures) through a probation until it
    /// decides; returns the verdict and how many records it had counted by then.
    fn run(policy: &RollbackPolicy, batches: &[Vec<bool>]) -> (Verdict, u64) {
        let mut probation = Probation::new(1);
        for batch in batches {
            probation.count(traps(batch.iter().copied()), policy.window);
            let verdict = probation.verdict(policy);
            if verdict != Verdict::Pending {
                return (verdict, probation.seen);
            }
        }
        (Verdict::Pending, probation.seen)
    }

    /// `count` batches of `size` records, every `every`-th record (1-based) failing.
    fn batches(count: usize, size: usize, every: usize) -> Vec<Vec<bool>> {
        (0..count)
            .map(|b| {
                (0..size)
                    .map(|i| (b * size + i + 1).is_multiple_of(every))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_good_version_with_a_few_failures_survives_its_window() {
        // One record in ten fails, early ones included: no early verdict, kept at the window.
        let (verdict, seen) = run(&POLICY, &batches(40, 8, 10));
        assert_eq!(verdict, Verdict::Keep);
        assert_eq!(seen, 200, "decided when the window completed, not before");
    }

    #[test]
    fn a_bad_start_alone_is_no_verdict() {
        // The first 10 records all fail, then none: 10 of 200 is far below the threshold.
        let mut records = vec![true; 10];
        records.extend(vec![false; 190]);
        let (verdict, _) = run(&POLICY, &[records]);
        assert_eq!(verdict, Verdict::Keep);
    }

    #[test]
    fn a_bad_version_is_rolled_back_as_soon_as_the_verdict_is_certain() {
        let (verdict, seen) = run(&POLICY, &batches(40, 8, 1));
        assert_eq!(verdict, Verdict::RollBack);
        // The 101st failure of 200 settles it: the batch of 8 holding it is the 13th.
        assert_eq!(seen, 104);
    }

    #[test]
    fn exactly_the_threshold_survives_and_one_more_failure_does_not() {
        // 100 of 200 is not more than half.
        let (verdict, _) = run(&POLICY, &batches(25, 8, 2));
        assert_eq!(verdict, Verdict::Keep);
        // 101 of 200 is.
        let mut records: Vec<bool> = (1..=200).map(|n: u64| n.is_multiple_of(2)).collect();
        records[0] = true;
        let (verdict, seen) = run(&POLICY, &[records]);
        assert_eq!(verdict, Verdict::RollBack);
        assert_eq!(seen, 200);
    }

    #[test]
    fn records_after_the_window_are_not_counted() {
        // The window completes half-failed in the middle of a batch whose rest all fails.
        let mut records: Vec<bool> = (1..=200).map(|n: u64| n.is_multiple_of(2)).collect();
        records.extend(vec![true; 8]);
        let mut probation = Probation::new(1);
        probation.count(traps(records), POLICY.window);
        assert_eq!((probation.seen, probation.failed), (200, 100));
        assert_eq!(probation.verdict(&POLICY), Verdict::Keep);
    }

    #[test]
    fn the_edges_of_the_policy() {
        let never = RollbackPolicy {
            window: 200,
            max_failure_ratio: 1.0,
        };
        assert_eq!(run(&never, &batches(25, 8, 1)).0, Verdict::Keep);
        let strict = RollbackPolicy {
            window: 200,
            max_failure_ratio: 0.0,
        };
        assert_eq!(run(&strict, &batches(25, 8, 150)), (Verdict::RollBack, 152));
        let off = RollbackPolicy {
            window: 0,
            max_failure_ratio: 0.5,
        };
        assert_eq!(run(&off, &batches(1, 8, 1)), (Verdict::Keep, 0));
    }

    #[test]
    fn bad_records_fill_the_window_without_counting_against_the_version() {
        // Every record judged malformed: the input's fault, so the version is kept.
        let mut probation = Probation::new(1);
        probation.count(
            std::iter::repeat_n(Some(RecordErrorKind::BadRecord), 200),
            POLICY.window,
        );
        assert_eq!(
            (probation.seen, probation.failed, probation.bad),
            (200, 0, 200)
        );
        assert_eq!(probation.verdict(&POLICY), Verdict::Keep);

        // Plugin failures, traps and timeouts count; bad records among them do not.
        let mut probation = Probation::new(1);
        let kinds = [
            Some(RecordErrorKind::PluginFailure),
            Some(RecordErrorKind::Trap),
            Some(RecordErrorKind::Timeout),
            Some(RecordErrorKind::BadRecord),
            None,
        ];
        probation.count(kinds.iter().copied().cycle().take(200), POLICY.window);
        assert_eq!((probation.failed, probation.bad), (120, 40));
        assert_eq!(probation.verdict(&POLICY), Verdict::RollBack);
    }

    #[test]
    fn only_the_plugins_own_failures_blame_it() {
        assert!(blames_the_version(RecordErrorKind::PluginFailure));
        assert!(blames_the_version(RecordErrorKind::Trap));
        assert!(blames_the_version(RecordErrorKind::Timeout));
        assert!(!blames_the_version(RecordErrorKind::BadRecord));
        assert!(!blames_the_version(RecordErrorKind::Malformed));
        assert!(!blames_the_version(RecordErrorKind::SinkRejected));
    }
}
