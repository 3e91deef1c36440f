//! A plugin whose active version can change while pipelines run, as a pipeline's transform chain
//! sees it. The registry implements it and the chain only uses it, so neither imports the other.

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
}

/// Where a pipeline finds the slots its transform entries name.
pub trait LiveSlots {
    /// The slot of plugin `name`, if it is loaded.
    fn live(&self, name: &str) -> Option<Arc<dyn LiveSlot>>;
}
