//! What a pipeline may grant or impose on a plugin, named here so that configuration, the
//! registry and the runtime share one vocabulary without importing each other.

use serde::{Deserialize, Serialize};

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
