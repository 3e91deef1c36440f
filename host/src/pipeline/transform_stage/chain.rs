//! The transform chain: a batch through each plugin in turn, keeping per-record failures apart
//! so that one bad record becomes one dead letter and the rest flow on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::staged::{self, StagedStep};
use crate::config::TransformConfig;
use crate::observe::thread_cpu::thread_cpu;
use crate::observe::{PluginStepStats, TapPoint};
use crate::pipeline::batch::ChainOutput;
use crate::pipeline::stats::{PipelineStats, step_labels};
use crate::record::{
    FailedAt, Failure, HeaderName, Outputs, Record, RecordError, SourcePosition, headers,
};
use crate::runtime::{LiveSlot, PluginError, PluginInstance, PluginLimits, Rollout};

/// One plugin of a worker's chain: its live slot, its entry in the pipeline file, and the
/// instance of the version it last saw.
pub struct ChainStep {
    slot: Arc<dyn LiveSlot>,
    transform: TransformConfig,
    limits: PluginLimits,
    /// The generation of the version `instance` runs, which the slot may have moved past.
    generation: u64,
    instance: PluginInstance,
    failed_swap: FailedSwap,
    /// `weir.version.NAME`, shared by every output's header.
    version_header: HeaderName,
    /// The step's label in its pipeline's chain (`NAME`, `NAME#2` for a second use): what its
    /// counters, its tap and its dead letters' `weir.step` name.
    label: Arc<str>,
    stats: Arc<PluginStepStats>,
    tap: Arc<TapPoint>,
    /// The staged generation `staged` was taken at.
    staged_generation: u64,
    /// The staged candidate's instance, while one is staged.
    staged: Option<StagedStep>,
    /// The last staged generation that failed to instantiate, and when.
    failed_stage: FailedSwap,
}

impl ChainStep {
    /// Instantiates the slot's active version for `transform`.
    pub fn new<S: LiveSlot + 'static>(
        slot: Arc<S>,
        transform: TransformConfig,
        limits: PluginLimits,
    ) -> Result<Self, PluginError> {
        Self::from_live(slot, transform, limits)
    }

    /// [`ChainStep::new`] over a slot already behind the trait.
    pub fn from_live(
        slot: Arc<dyn LiveSlot>,
        transform: TransformConfig,
        limits: PluginLimits,
    ) -> Result<Self, PluginError> {
        let attempt = slot.instantiate(transform.request(limits));
        let (generation, instance) = (attempt.generation, attempt.instance?);
        Ok(ChainStep {
            version_header: HeaderName::shared(&format!(
                "{}{}",
                headers::VERSION_PREFIX,
                slot.name()
            )),
            // The plugin's first use until the chain labels its steps (`TransformChain::new`).
            label: Arc::from(slot.name()),
            // Unobserved until the chain joins a pipeline (`TransformChain::observe_into`).
            stats: Arc::default(),
            tap: TapPoint::unobserved(),
            slot,
            transform,
            limits,
            generation,
            instance,
            failed_swap: FailedSwap::default(),
            staged_generation: 0,
            staged: None,
            failed_stage: FailedSwap::default(),
        })
    }

    /// Takes up, changes or drops the staged candidate when the slot's staged generation moved.
    /// Read before the active generation: a promotion moves the active one first, so a step
    /// that sees the candidate gone also sees it active. A candidate that cannot be
    /// instantiated here (a full instance pool, say) is logged once, its records stay on the
    /// live version, and it is tried again at most once per [`SWAP_RETRY`].
    fn refresh_staged(&mut self) {
        let generation = self.slot.staged_generation();
        if generation == self.staged_generation
            || !self.failed_stage.may_retry(generation, Instant::now())
        {
            return;
        }
        let plugin = self.slot.name();
        let Some(attempt) = self
            .slot
            .instantiate_staged(self.transform.request(self.limits))
        else {
            self.staged = None;
            self.staged_generation = generation;
            return;
        };
        match attempt.instance {
            Ok(instance) => {
                tracing::info!(plugin, candidate = attempt.version, rollout = ?attempt.rollout, "Running the staged candidate beside the live version.");
                self.staged = Some(StagedStep {
                    generation: attempt.generation,
                    version: attempt.version,
                    rollout: attempt.rollout,
                    instance,
                    batches: 0,
                });
                self.staged_generation = generation;
                self.failed_stage = FailedSwap::default();
            }
            Err(error) => {
                // The generation is not taken up, so a later batch tries again.
                self.staged = None;
                if self.failed_stage.failed(generation, Instant::now()) {
                    tracing::error!(plugin, candidate = attempt.version, %error, "Cannot instantiate the staged candidate; its records stay on the live version meanwhile, retrying every {:?}.", SWAP_RETRY);
                }
            }
        }
    }

    /// Runs `records` (descending from inputs `origins` at `positions`) through the live
    /// version and, while one is staged, the candidate: a canary takes its partitions' records,
    /// a shadow runs on the same records and only reports how its results differ. Returns one
    /// result per record and whether the candidate produced it.
    fn run(
        &mut self,
        records: &[Record],
        origins: &[usize],
        positions: &[SourcePosition],
    ) -> (Vec<Result<Outputs, RecordError>>, Vec<bool>) {
        let kind = |result: &Result<Outputs, RecordError>| result.as_ref().err().map(|e| e.kind);
        let live = &mut self.instance;
        let Some(staged) = self.staged.as_mut() else {
            let results = live.transform(records);
            self.slot
                .report(self.generation, &mut results.iter().map(kind));
            return (results, vec![false; records.len()]);
        };
        if let Rollout::Canary { partitions } = &staged.rollout {
            let taken = staged::canary_takes(
                partitions,
                origins.iter().map(|&origin| positions[origin].partition),
            );
            let results = staged::route(
                &taken,
                records,
                |share| live.transform(share),
                |share| staged.instance.transform(share),
            );
            let of = |wanted: bool| {
                results
                    .iter()
                    .zip(&taken)
                    .filter(move |(_, t)| **t == wanted)
                    .map(|(result, _)| kind(result))
            };
            self.slot.report(self.generation, &mut of(false));
            self.slot.report_canary(staged.generation, &mut of(true));
            return (results, taken);
        }
        let results = live.transform(records);
        self.slot
            .report(self.generation, &mut results.iter().map(kind));
        if staged.shadow_due() {
            let shadow = staged.instance.transform(records);
            let batch = staged::compare(&results, &shadow, |index| {
                let position = &positions[origins[index]];
                format!(
                    "{}/{}@{}",
                    position.stream, position.partition, position.offset
                )
            });
            self.slot.report_shadow(staged.generation, batch);
        }
        (results, vec![false; records.len()])
    }

    /// The instance in use.
    pub fn instance(&self) -> &PluginInstance {
        &self.instance
    }

    /// Switches to the slot's active version if it changed since the last batch. The switch
    /// happens only here, between batches, so a batch never mixes versions. When the new version
    /// cannot be instantiated (the pooling allocator full, say) the running instance stays, and
    /// so does its generation: its results must not count towards the new version's probation.
    fn refresh(&mut self) {
        let generation = self.slot.generation();
        if generation == self.generation || !self.failed_swap.may_retry(generation, Instant::now())
        {
            return;
        }
        let attempt = self.slot.instantiate(self.transform.request(self.limits));
        let plugin = self.slot.name();
        let from = self.instance.plugin().version().to_owned();
        match attempt.instance {
            Ok(instance) => {
                tracing::info!(
                    plugin,
                    from,
                    to = attempt.version,
                    "Switched plugin version between batches."
                );
                self.instance = instance;
                self.generation = attempt.generation;
                self.failed_swap = FailedSwap::default();
            }
            Err(error) => {
                if self.failed_swap.failed(attempt.generation, Instant::now()) {
                    tracing::error!(plugin, version = attempt.version, running = from, %error, "Cannot instantiate the new version; keeping the running one and retrying every {:?}.", SWAP_RETRY);
                }
            }
        }
    }
}

/// Least time between two attempts to instantiate a version that failed to instantiate: the
/// usual cause, a full instance pool, clears as other pipelines stop or swap, and retrying on
/// every batch would spend each batch's time on a doomed instantiation.
const SWAP_RETRY: Duration = Duration::from_secs(1);

/// The last version a step failed to switch to, and when.
#[derive(Debug, Default)]
struct FailedSwap {
    last: Option<(u64, Instant)>,
}

impl FailedSwap {
    /// Whether switching to `generation` may be attempted at `now`.
    fn may_retry(&self, generation: u64, now: Instant) -> bool {
        match self.last {
            Some((failed, at)) if failed == generation => now.duration_since(at) >= SWAP_RETRY,
            _ => true,
        }
    }

    /// Notes a failed switch to `generation` at `now`; true on its first failure, the one to log.
    fn failed(&mut self, generation: u64, now: Instant) -> bool {
        let first = self.last.is_none_or(|(failed, _)| failed != generation);
        self.last = Some((generation, now));
        first
    }
}

/// The plugins, configs, limits and observers of a chain, from which workers' chains are built
/// (each with instances of the plugins' active versions).
#[derive(Clone)]
pub struct ChainBlueprint {
    steps: Vec<StepBlueprint>,
}

#[derive(Clone)]
struct StepBlueprint {
    slot: Arc<dyn LiveSlot>,
    transform: TransformConfig,
    limits: PluginLimits,
    label: Arc<str>,
    stats: Arc<PluginStepStats>,
    tap: Arc<TapPoint>,
}

impl ChainBlueprint {
    /// A chain with fresh instances. CPU-bound (each plugin's `init` runs): call from a
    /// blocking thread.
    pub fn build(&self) -> Result<TransformChain, PluginError> {
        self.steps
            .iter()
            .map(|step| {
                let mut built = ChainStep::from_live(
                    Arc::clone(&step.slot),
                    step.transform.clone(),
                    step.limits,
                )?;
                built.label = Arc::clone(&step.label);
                built.stats = Arc::clone(&step.stats);
                built.tap = Arc::clone(&step.tap);
                Ok(built)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|steps| TransformChain { steps })
    }
}

/// The plugin steps of one worker, applied in order.
pub struct TransformChain {
    steps: Vec<ChainStep>,
}

impl TransformChain {
    /// A chain of steps; empty passes records through. Each step is labelled by its plugin's
    /// name, and a plugin used again by `NAME#2`, `NAME#3`, ... ([`step_labels`]).
    pub fn new(steps: Vec<ChainStep>) -> Self {
        TransformChain { steps }.after(&[])
    }

    /// This chain as the rest of a longer one whose first steps use the plugins `before`: its
    /// steps are labelled as they are in the longer chain, so a replay that re-enters a chain at
    /// its step `filter#2` dead-letters, counts and taps that step as `filter#2` again.
    pub fn after(mut self, before: &[&str]) -> Self {
        let names = before
            .iter()
            .copied()
            .chain(self.steps.iter().map(|step| step.slot.name()));
        let labels = step_labels(names);
        for (step, label) in self.steps.iter_mut().zip(&labels[before.len()..]) {
            step.label = Arc::from(label.as_str());
        }
        self
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[ChainStep] {
        &self.steps
    }

    /// Another chain of the same plugins and configs with instances of its own, for a parallel
    /// worker. CPU-bound: call from a blocking thread.
    pub fn fork(&self) -> Result<TransformChain, PluginError> {
        self.blueprint().build()
    }

    /// What it takes to build more chains like this one, without holding any instance.
    pub fn blueprint(&self) -> ChainBlueprint {
        ChainBlueprint {
            steps: self
                .steps
                .iter()
                .map(|step| StepBlueprint {
                    slot: Arc::clone(&step.slot),
                    transform: step.transform.clone(),
                    limits: step.limits,
                    label: Arc::clone(&step.label),
                    stats: Arc::clone(&step.stats),
                    tap: Arc::clone(&step.tap),
                })
                .collect(),
        }
    }

    /// Counts each step's records and call latency into `stats`, and offers its outputs to the
    /// pipeline's tap of the plugin's stage. Forks made afterwards share them.
    pub fn observe_into(&mut self, stats: &PipelineStats) {
        for step in &mut self.steps {
            step.stats = stats.plugin(&step.label);
            step.tap = stats.taps().point(&step.label);
        }
    }

    /// Runs a batch through every step. Each output carries a `weir.version.NAME` header per
    /// plugin it passed through.
    pub fn apply(&mut self, records: Vec<Record>, positions: &[SourcePosition]) -> ChainOutput {
        for step in &mut self.steps {
            step.refresh_staged();
            step.refresh();
        }
        // `origins[i]` is the input index that `records[i]` descends from.
        let mut origins: Vec<usize> = (0..records.len()).collect();
        let mut records = records;
        let mut failures = Vec::new();
        for step in &mut self.steps {
            if records.is_empty() {
                break;
            }
            // The CPU reading sits inside the timed span, so a call's CPU never exceeds its time.
            let called = Instant::now();
            let cpu_before = thread_cpu();
            let (results, by_candidate) = step.run(&records, &origins, positions);
            let cpu = thread_cpu().saturating_sub(cpu_before);
            let took = called.elapsed();
            // Each output's version header shares one copy of the name and of the version.
            let live_version = Bytes::from(step.instance.plugin().version().to_owned());
            let candidate_version = step.staged.as_ref().map(|s| Bytes::from(s.version.clone()));
            let mut failed = 0u64;
            let seen = records.len() as u64;
            let mut next_records = Vec::with_capacity(records.len());
            let mut next_origins = Vec::with_capacity(records.len());
            for (((record, origin), result), by_candidate) in records
                .into_iter()
                .zip(origins)
                .zip(results)
                .zip(by_candidate)
            {
                let version = match &candidate_version {
                    Some(candidate) if by_candidate => candidate,
                    _ => &live_version,
                };
                match result {
                    Ok(outputs) => {
                        next_origins.extend(std::iter::repeat_n(origin, outputs.len()));
                        next_records.extend(outputs.into_iter().map(|mut output| {
                            output.set_header(step.version_header.clone(), version.clone());
                            output
                        }));
                    }
                    Err(error) => {
                        failed += 1;
                        failures.push(Failure {
                            record,
                            position: positions[origin].clone(),
                            error,
                            at: FailedAt::Plugin {
                                name: step.slot.name().to_owned(),
                                step: step.label.to_string(),
                                // Versions are hex digests, so always text.
                                version: String::from_utf8_lossy(version).into_owned(),
                            },
                        });
                    }
                }
            }
            step.stats.record_call(
                seen as usize,
                next_records.len(),
                failed as usize,
                took,
                cpu,
            );
            step.tap.offer(
                next_records
                    .iter()
                    .zip(next_origins.iter().map(|&origin| positions.get(origin))),
            );
            records = next_records;
            origins = next_origins;
        }
        ChainOutput {
            positions: origins
                .iter()
                .map(|&origin| positions[origin].clone())
                .collect(),
            outputs: records,
            failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_swap_is_retried_at_most_once_per_interval_and_logged_once() {
        let start = Instant::now();
        let mut swap = FailedSwap::default();
        assert!(swap.may_retry(1, start), "nothing failed yet");
        assert!(swap.failed(1, start), "the first failure is logged");
        assert!(!swap.may_retry(1, start + SWAP_RETRY / 2), "too soon");
        assert!(swap.may_retry(1, start + SWAP_RETRY));
        assert!(
            !swap.failed(1, start + SWAP_RETRY),
            "logged once per version"
        );
        assert!(!swap.may_retry(1, start + SWAP_RETRY + SWAP_RETRY / 2));
        // A newer version is tried at once, and its failure logged again.
        assert!(swap.may_retry(2, start + SWAP_RETRY + SWAP_RETRY / 2));
        assert!(swap.failed(2, start + SWAP_RETRY + SWAP_RETRY / 2));
    }
}
