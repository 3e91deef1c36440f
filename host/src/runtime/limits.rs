//! What a pipeline may grant or impose on a plugin, and the epoch tick that enforces deadlines:
//! the leaf of the runtime, imported by the engine, instances, plugins and their state alike, so
//! none of them imports another for these. Configuration and the registry use it too.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the ticker advances the engine's epoch. A deadline is rounded up to whole ticks, so
/// this is the precision of every plugin deadline; 10 ms keeps the ticker's cost negligible.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A capability beyond logging and metrics, which a plugin must ask for in its manifest and a
/// pipeline must allow in its transform entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// The real wall and monotonic clocks. Without it a plugin sees a clock frozen at the epoch.
    Clock,
    /// Real randomness. Without it a plugin's random source is a fixed, deterministic stream.
    Random,
}

impl std::fmt::Display for Capability {
    /// The name a manifest and a pipeline's `allow` list use.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Capability::Clock => "clock",
            Capability::Random => "random",
        })
    }
}

/// The per-call and per-instance limits a pipeline imposes on its plugins, and the capabilities
/// it grants them beyond logging and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Longest a single `transform` or `init` call may run before it is interrupted.
    pub deadline: Duration,
    /// Most linear memory one instance may hold, in bytes.
    pub memory_bytes: usize,
    /// Capabilities granted to the instance.
    pub grants: Grants,
}

/// Capabilities an instance gets. Files, sockets, environment and arguments are never granted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    /// Real clocks; otherwise the clocks are frozen at the Unix epoch.
    pub clock: bool,
    /// Real randomness; otherwise a fixed deterministic stream.
    pub random: bool,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            deadline: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            grants: Grants::default(),
        }
    }
}
