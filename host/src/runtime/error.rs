//! Errors of the Wasm runtime: those that reject a plugin version, and those of a single record.

use std::fmt;

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
    /// The file could not be read.
    #[error("cannot read plugin file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
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
        "plugin `{name}` does not implement the world weir:plugin/transformer@{CONTRACT_VERSION}: {reason}. Rebuild it against this host's wit/ with the weir-plugin SDK"
    )]
    WrongWorld {
        /// The plugin's name.
        name: String,
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
}

/// Why one record failed in a plugin; the kind decides the dead-letter header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// The plugin judged the input malformed.
    BadRecord,
    /// The plugin reported its own failure.
    PluginFailure,
    /// The plugin trapped (panic, memory cap, stack overflow, ...).
    Trap,
    /// The call ran past its deadline.
    Timeout,
    /// The source could not decode the input (a response that is not JSON, say).
    Malformed,
    /// The sink refused the record's content (a type mismatch, say).
    SinkRejected,
}

impl RecordErrorKind {
    /// The kebab-case name used in headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordErrorKind::BadRecord => "bad-record",
            RecordErrorKind::PluginFailure => "plugin-failure",
            RecordErrorKind::Trap => "trap",
            RecordErrorKind::Timeout => "timeout",
            RecordErrorKind::Malformed => "malformed",
            RecordErrorKind::SinkRejected => "sink-rejected",
        }
    }
}

impl fmt::Display for RecordErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record's failure in a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Who is to blame.
    pub kind: RecordErrorKind,
    /// For a human.
    pub message: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}
