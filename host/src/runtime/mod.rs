//! The Wasm runtime: the one module that owns every wasmtime decision (engine settings, limits,
//! the epoch ticker, linking, instantiation). The rest of the host sees plugins only through
//! [`LoadedPlugin`] and [`PluginInstance`].

mod bindings;
mod boundary;
mod cache;
mod engine;
mod error;
mod inspect;
mod instance;
mod limits;
mod memory_cap;
mod plugin;
mod slot;
mod state;
mod stderr;
mod ticker;
mod waits;

pub use crate::record::{RecordError, RecordErrorKind};
pub use cache::{CacheOutcome, CompiledCache, default_cache_dir};
pub use engine::{ComponentLimits, PluginRuntime};
pub use error::PluginError;
pub use inspect::{ComponentShape, inspect};
pub use instance::{CALL_BYTES, PluginInstance};
pub use limits::{Capability, EPOCH_TICK, Grants, PluginLimits};
pub use plugin::LoadedPlugin;
pub use slot::{
    Instantiation, LiveSlot, LiveSlots, RecordDiff, Rollout, ShadowBatch, StagedInstantiation,
    StepRequest,
};
pub use state::{
    COUNTER_ADDS_PER_SECOND, DroppedCallCounts, LOG_LINES_PER_SECOND, MAX_COUNTER_NAME_BYTES,
    MAX_LOG_MESSAGE_BYTES, PluginCounters,
};
