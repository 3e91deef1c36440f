//! A plugin whose active version can change while pipelines run, as a pipeline's transform chain
//! sees it. The registry implements it and the chain only uses it, so neither imports the other.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::error::PluginError;
use super::instance::PluginInstance;
use super::limits::{Capability, PluginLimits};
use crate::record::RecordErrorKind;

/// How a pipeline's transform entry asks for an instance: its config and what it allows.
#[derive(Debug, Clone, Copy)]
pub struct StepRequest<'a> {
    /// The pipeline's config for the plugin, merged over its manifest's defaults.
    pub config: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Capabilities the pipeline allows the plugin.
    pub allow: &'a [Capability],
    /// The pipeline's limits; the grants are filled in from the manifest.
    pub limits: PluginLimits,
}

/// An attempt to instantiate a slot's active version.
pub struct Instantiation {
    /// The generation of the version tried.
    pub generation: u64,
    /// That version, for logs.
    pub version: String,
    /// The instance, or why there is none.
    pub instance: Result<PluginInstance, PluginError>,
}

/// One plugin's live versions.
pub trait LiveSlot: Send + Sync {
    /// The plugin's name.
    fn name(&self) -> &str;

    /// Bumped at every change of the active version; cheap, read before every batch.
    fn generation(&self) -> u64;

    /// Tries to instantiate the active version for `request`. CPU-bound (the plugin's `init`
    /// runs): call from a blocking thread.
    fn instantiate(&self, request: StepRequest<'_>) -> Instantiation;

    /// Reports the outcome of each record a version of `generation` processed, in order (`None`:
    /// it passed; otherwise the kind of its failure), for the automatic rollback of a new
    /// version, which decides which kinds count against the version.
    fn report(&self, generation: u64, outcomes: &mut dyn Iterator<Item = Option<RecordErrorKind>>);

    /// Bumped whenever a candidate version is staged, promoted or aborted; 0 while none ever
    /// was. Cheap, read before every batch.
    fn staged_generation(&self) -> u64 {
        0
    }

    /// Tries to instantiate the staged candidate for `request`; `None` when nothing is staged.
    /// CPU-bound: call from a blocking thread.
    fn instantiate_staged(&self, _request: StepRequest<'_>) -> Option<StagedInstantiation> {
        None
    }

    /// Reports what a shadow run of the candidate of `staged_generation` found in one batch.
    fn report_shadow(&self, _staged_generation: u64, _batch: ShadowBatch) {}

    /// Reports the outcome of each canary record the candidate of `staged_generation`
    /// processed, in order, for its automatic abort (the rule of [`LiveSlot::report`]).
    fn report_canary(
        &self,
        _staged_generation: u64,
        _outcomes: &mut dyn Iterator<Item = Option<RecordErrorKind>>,
    ) {
    }
}

/// How a staged candidate version shares a pipeline's records with the live version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rollout {
    /// The candidate runs beside the live version on every Nth batch of each worker; its
    /// outputs are compared with the live version's and dropped, its failures only counted.
    Shadow {
        /// 1 runs it on every batch, 10 on one batch in ten.
        every_nth_batch: u32,
    },
    /// The candidate replaces the live version for the records of these source partitions
    /// (by number, so each key's order holds); its outputs are written.
    Canary {
        /// The partitions whose records the candidate processes.
        partitions: BTreeSet<i32>,
    },
}

/// An attempt to instantiate a slot's staged candidate.
pub struct StagedInstantiation {
    /// The staged generation the candidate belongs to.
    pub generation: u64,
    /// The candidate's version, for logs and the version header.
    pub version: String,
    /// How it shares the records.
    pub rollout: Rollout,
    /// The instance, or why there is none.
    pub instance: Result<PluginInstance, PluginError>,
}

/// What a shadow run over one batch found, compared with the live version's results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowBatch {
    /// Input records both versions processed.
    pub compared: u64,
    /// Of those, records whose results differ (other outputs, or one version failed).
    pub differing: u64,
    /// Records the candidate failed (counted, never dead-lettered).
    pub failed: u64,
    /// Some of the differing records, each truncated.
    pub samples: Vec<RecordDiff>,
}

/// One record whose results differ between the live and the candidate version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordDiff {
    /// Where the input came from: `stream/partition@offset`.
    pub position: String,
    /// The live version's outputs (values, one per line) or failure, truncated.
    pub live: String,
    /// The candidate's outputs or failure, truncated.
    pub candidate: String,
}

/// Where a pipeline finds the slots its transform entries name.
pub trait LiveSlots {
    /// The slot of plugin `name`, if it is loaded.
    fn live(&self, name: &str) -> Option<Arc<dyn LiveSlot>>;
}
