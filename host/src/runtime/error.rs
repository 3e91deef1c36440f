//! Errors of the Wasm runtime that reject a plugin version. A single record's failure is a
//! [`crate::record::RecordError`].

use super::bindings::CONTRACT_VERSION;

/// A plugin version cannot be used: it failed to load, type-check, instantiate or `init`.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine itself could not be configured.
    #[error("cannot configure the Wasm engine: {0}")]
    Engine(String),
    /// The thread that enforces plugin deadlines could not be started.
    #[error("cannot start the epoch ticker thread that enforces plugin deadlines: {0}")]
    EpochTicker(#[source] std::io::Error),
    /// The bytes are not a valid component for this engine.
    #[error("plugin `{name}` is not a valid WebAssembly component: {reason}")]
    Compile {
        /// The plugin's name.
        name: String,
        /// The compiler's reason.
        reason: String,
    },
    /// The component does not implement a world this host supports.
    #[error(
        "plugin `{name}` does not implement the world weir:plugin/{world}@{CONTRACT_VERSION}: {reason}. Rebuild it against this host's wit/ with the weir-plugin SDK"
    )]
    WrongWorld {
        /// The plugin's name.
        name: String,
        /// The world its exports come closest to: `batch-transformer` when it exports
        /// `transform-batch`, else `transformer`.
        world: &'static str,
        /// What did not match.
        reason: String,
    },
    /// The component was built against another version of the `weir:plugin` contract.
    #[error(
        "plugin `{name}` was built for weir:plugin@{found}; this host supports weir:plugin@{CONTRACT_VERSION}: rebuild it against this weir's SDK (weir-plugin) or wit/"
    )]
    WrongVersion {
        /// The plugin's name.
        name: String,
        /// The contract version the component names.
        found: String,
    },
    /// The component holds more than the engine's per-component limits allow.
    #[error(
        "plugin `{name}` holds {found} {what}, more than the limit of {limit} (`limits.{key}`): raise `{key}` in the pipeline's `[pipeline.limits]` table or pass `--max-{flag}` to weir",
        what = .key.replace('_', " "),
        flag = .key.replace('_', "-")
    )]
    OverLimit {
        /// The plugin's name.
        name: String,
        /// The limit's key in the pipeline file: `core_instances`, `memories` or `tables`.
        key: &'static str,
        /// How many the component holds.
        found: u32,
        /// The limit.
        limit: u32,
    },
    /// Instantiation trapped or failed.
    #[error("plugin `{name}` failed to instantiate: {reason}")]
    Instantiate {
        /// The plugin's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The plugin's `init` rejected its config.
    #[error("plugin `{name}` rejected its config: {reason}")]
    Init {
        /// The plugin's name.
        name: String,
        /// The plugin's message.
        reason: String,
    },
    /// The plugin could not be started although nothing was wrong with its config: its `init`
    /// trapped or ran past its deadline, or building an instance failed in the host.
    #[error("plugin `{name}` could not start: {reason}")]
    Start {
        /// The plugin's name.
        name: String,
        /// What happened.
        reason: String,
    },
}
