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

/// The per-record, per-call and per-instance limits a pipeline imposes on its plugins, and the
/// capabilities it grants them beyond logging and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Longest one record may take, and the longest an `init` call may run. A `transform` call
    /// gets this much for each record it carries, pooled (see [`PluginLimits::call_deadline`]).
    pub deadline: Duration,
    /// Most a `transform` call with several records may take however many it carries, so that a
    /// batch holding a record that spins costs at most this before the records are judged one by
    /// one. Never less than [`PluginLimits::deadline`].
    pub batch_deadline: Duration,
    /// Most linear memory one instance may hold, in bytes, all its memories together; also the
    /// most host memory one call's outputs may take beyond their own bytes (see
    /// `boundary::Refused::OverBudget`), and half of what lifting one call's results may copy.
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
            batch_deadline: Duration::from_secs(10),
            memory_bytes: 64 << 20,
            grants: Grants::default(),
        }
    }
}

impl PluginLimits {
    /// How long a `transform` call with `records` records may run: [`PluginLimits::deadline`]
    /// for each record, pooled so that a merely slow plugin passes a large batch, capped at
    /// [`PluginLimits::batch_deadline`] (but never below one record's deadline).
    pub fn call_deadline(&self, records: usize) -> Duration {
        let records = u32::try_from(records.max(1)).unwrap_or(u32::MAX);
        let pooled = self.deadline.saturating_mul(records);
        pooled.min(self.batch_deadline.max(self.deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_gets_the_deadline_per_record_up_to_the_batch_deadline() {
        let limits = PluginLimits {
            deadline: Duration::from_millis(100),
            batch_deadline: Duration::from_secs(2),
            ..PluginLimits::default()
        };
        assert_eq!(limits.call_deadline(0), Duration::from_millis(100));
        assert_eq!(limits.call_deadline(1), Duration::from_millis(100));
        assert_eq!(limits.call_deadline(7), Duration::from_millis(700));
        assert_eq!(limits.call_deadline(20), Duration::from_secs(2));
        assert_eq!(limits.call_deadline(usize::MAX), Duration::from_secs(2));
        // A batch deadline below one record's never cuts a single record short.
        let inverted = PluginLimits {
            deadline: Duration::from_secs(5),
            batch_deadline: Duration::from_secs(1),
            ..PluginLimits::default()
        };
        assert_eq!(inverted.call_deadline(1), Duration::from_secs(5));
        assert_eq!(inverted.call_deadline(300), Duration::from_secs(5));
    }
}
