//! The transform chain: a batch through each plugin in turn, keeping per-record failures apart
//! so that one bad record becomes one dead letter and the rest flow on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::TransformConfig;
use crate::observe::{PluginStepStats, TapPoint};
use crate::record::{Record, SourcePosition, headers};
use crate::registry::{Capability, PluginSlot, PluginVersion};
use crate::runtime::{Grants, PluginError, PluginInstance, PluginLimits, RecordError};

/// Where a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailedAt {
    /// The source could not decode it.
    Source,
    /// A plugin failed it: its name and version.
    Plugin {
        /// The plugin's name.
        name: String,
        /// The plugin's version.
        version: String,
    },
    /// The sink refused its content.
    Sink,
}

/// A record that failed, with everything a dead-letter entry needs.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The record as the failing stage received it.
    pub record: Record,
    /// Where its input came from.
    pub position: SourcePosition,
    /// Why it failed.
    pub error: RecordError,
    /// Which stage failed it.
    pub at: FailedAt,
}

impl Failure {
    /// The dead-letter entry: the record with the reason, the failing stage (plugin and version)
    /// and the source coordinates in headers.
    pub fn into_dead_letter(self, pipeline: &str) -> Record {
        let mut record = self.record;
        record.set_header(headers::ERROR, self.error.message);
        record.set_header(headers::ERROR_KIND, self.error.kind.as_str());
        let stage = match self.at {
            FailedAt::Source => "source",
            FailedAt::Sink => "sink",
            FailedAt::Plugin { name, version } => {
                record.set_header(headers::PLUGIN, name);
                record.set_header(headers::PLUGIN_VERSION, version);
                "plugin"
            }
        };
        record.set_header(headers::STAGE, stage);
        record.set_header(headers::PIPELINE, pipeline);
        record.set_header(headers::SOURCE_STREAM, self.position.stream.as_bytes());
        record.set_header(
            headers::SOURCE_PARTITION,
            self.position.partition.to_string(),
        );
        record.set_header(headers::SOURCE_OFFSET, self.position.offset.to_string());
        record
    }
}

/// What one batch became.
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// Records for the sink, in input order.
    pub outputs: Vec<Record>,
    /// For each output, the source position of the input it came from.
    pub positions: Vec<SourcePosition>,
    /// Records for the dead-letter destination.
    pub failures: Vec<Failure>,
}

/// One plugin of a worker's chain: its live slot, its entry in the pipeline file, and the
/// instance of the version it last saw.
pub struct ChainStep {
    slot: Arc<PluginSlot>,
    transform: TransformConfig,
    limits: PluginLimits,
    /// The generation of the version `instance` runs, which the slot may have moved past.
    generation: u64,
    instance: PluginInstance,
    failed_swap: FailedSwap,
    version_header: String,
    stats: Arc<PluginStepStats>,
    tap: Arc<TapPoint>,
}

impl ChainStep {
    /// Instantiates the slot's active version for `transform`.
    pub fn new(
        slot: Arc<PluginSlot>,
        transform: TransformConfig,
        limits: PluginLimits,
    ) -> Result<Self, PluginError> {
        let (generation, version) = slot.current();
        let instance = instantiate_step(&version, &transform, limits)?;
        Ok(ChainStep {
            version_header: format!("{}{}", headers::VERSION_PREFIX, slot.name()),
            // Unobserved until the chain joins a pipeline (`TransformChain::observe_into`).
            stats: Arc::default(),
            tap: TapPoint::unobserved(),
            slot,
            transform,
            limits,
            generation,
            instance,
            failed_swap: FailedSwap::default(),
        })
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
        let (generation, version) = self.slot.current();
        let plugin = &version.plugin;
        let from = self.instance.plugin().version().to_owned();
        match instantiate_step(&version, &self.transform, self.limits) {
            Ok(instance) => {
                tracing::info!(plugin = %plugin.name(), from, to = plugin.version(), "Switched plugin version between batches.");
                self.instance = instance;
                self.generation = generation;
                self.failed_swap = FailedSwap::default();
            }
            Err(error) => {
                if self.failed_swap.failed(generation, Instant::now()) {
                    tracing::error!(plugin = %plugin.name(), version = plugin.version(), running = from, %error, "Cannot instantiate the new version; keeping the running one and retrying every {:?}.", SWAP_RETRY);
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

/// An instance of `version` configured and granted as `transform` says. A capability the
/// manifest asks for and the pipeline does not allow is refused.
pub fn instantiate_step(
    version: &PluginVersion,
    transform: &TransformConfig,
    limits: PluginLimits,
) -> Result<PluginInstance, PluginError> {
    let name = version.plugin.name();
    if let Some(missing) = version.manifest.missing_grant(&transform.allow) {
        return Err(PluginError::Init {
            name: name.to_owned(),
            reason: format!(
                "its manifest asks for the `{missing}` capability, which the pipeline does not allow; add `allow = [\"{missing}\"]` to its transform entry if you trust the plugin"
            ),
        });
    }
    let granted = |capability| version.manifest.capabilities.contains(&capability);
    let limits = PluginLimits {
        grants: Grants {
            clock: granted(Capability::Clock),
            random: granted(Capability::Random),
        },
        ..limits
    };
    let config = version.manifest.merged_config(transform.config.as_ref());
    version.plugin.instantiate(&config, limits)
}

/// The plugins, configs, limits and observers of a chain, from which workers' chains are built
/// (each with instances of the plugins' active versions).
#[derive(Clone)]
pub struct ChainBlueprint {
    steps: Vec<StepBlueprint>,
}

#[derive(Clone)]
struct StepBlueprint {
    slot: Arc<PluginSlot>,
    transform: TransformConfig,
    limits: PluginLimits,
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
                let mut built =
                    ChainStep::new(Arc::clone(&step.slot), step.transform.clone(), step.limits)?;
                built.stats = Arc::clone(&step.stats);
                built.tap = Arc::clone(&step.tap);
                Ok(built)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TransformChain::new)
    }
}

/// The plugin steps of one worker, applied in order.
pub struct TransformChain {
    steps: Vec<ChainStep>,
}

impl TransformChain {
    /// A chain of steps; empty passes records through.
    pub fn new(steps: Vec<ChainStep>) -> Self {
        TransformChain { steps }
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
                    stats: Arc::clone(&step.stats),
                    tap: Arc::clone(&step.tap),
                })
                .collect(),
        }
    }

    /// Counts each step's records and call latency into `stats`, and offers its outputs to the
    /// pipeline's tap of the plugin's stage. Forks made afterwards share them.
    pub fn observe_into(&mut self, stats: &super::PipelineStats) {
        for step in &mut self.steps {
            step.stats = stats.plugin(step.slot.name());
            step.tap = stats.taps().point(step.slot.name());
        }
    }

    /// Runs a batch through every step. Each output carries a `weir.version.NAME` header per
    /// plugin it passed through.
    pub fn apply(&mut self, records: Vec<Record>, positions: &[SourcePosition]) -> ChainOutput {
        for step in &mut self.steps {
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
            let called = Instant::now();
            let results = step.instance.transform(&records);
            let took = called.elapsed();
            step.slot
                .report(step.generation, results.iter().map(Result::is_err));
            let version = step.instance.plugin().version().to_owned();
            let mut failed = 0u64;
            let seen = records.len() as u64;
            let mut next_records = Vec::with_capacity(records.len());
            let mut next_origins = Vec::with_capacity(records.len());
            for ((record, origin), result) in records.into_iter().zip(origins).zip(results) {
                match result {
                    Ok(outputs) => {
                        next_origins.extend(std::iter::repeat_n(origin, outputs.len()));
                        next_records.extend(outputs.into_iter().map(|mut output| {
                            output.set_header(&step.version_header, version.as_bytes());
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
                                version: version.clone(),
                            },
                        });
                    }
                }
            }
            step.stats
                .record_call(seen as usize, next_records.len(), failed as usize, took);
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
