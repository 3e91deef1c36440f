//! The per-store host state: an empty WASI context (no capability granted), memory limits, the
//! captured stderr that explains panics, and the `host` interface (logging, counters).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::weir::plugin::host::{Host, Level};
use super::plugin::Grants;
use super::stderr::StderrTail;

/// Bytes of guest stderr kept per instance, the most recent ones: enough for a panic message and
/// the lines before it.
const STDERR_TAIL: usize = 8 * 1024;

/// Distinct counter names kept per plugin version. Names come from the plugin: one that makes up
/// a name per record must not grow host memory, or the metrics page, without bound.
const MAX_COUNTER_NAMES: usize = 64;

/// Counters a plugin version reported through `counter-add`, shared by all its instances.
#[derive(Debug, Clone, Default)]
pub struct PluginCounters {
    counters: Arc<Mutex<CounterState>>,
}

#[derive(Debug, Default)]
struct CounterState {
    values: BTreeMap<String, u64>,
    /// Whether a name was already refused for being one too many.
    refused: bool,
}

/// What became of one `counter-add`.
#[derive(Debug, PartialEq, Eq)]
enum Added {
    Counted,
    /// A new name beyond [`MAX_COUNTER_NAMES`], ignored; `first` when no name was refused before.
    Refused {
        first: bool,
    },
}

impl PluginCounters {
    /// Adds `delta` to `name`, saturating: the plugin picks both, and must not be able to make
    /// the host panic on overflow.
    fn add(&self, name: &str, delta: u64) -> Added {
        let mut state = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(value) = state.values.get_mut(name) {
            *value = value.saturating_add(delta);
            return Added::Counted;
        }
        if state.values.len() >= MAX_COUNTER_NAMES {
            let first = !std::mem::replace(&mut state.refused, true);
            return Added::Refused { first };
        }
        state.values.insert(name.to_owned(), delta);
        Added::Counted
    }

    /// A snapshot of every counter.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values
            .clone()
    }
}

/// Everything a plugin's store holds besides the instance itself.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    stderr: StderrTail,
    plugin: Arc<str>,
    version: Arc<str>,
    counters: PluginCounters,
}

impl InstanceState {
    pub(super) fn new(
        limits: StoreLimits,
        grants: Grants,
        plugin: Arc<str>,
        version: Arc<str>,
        counters: PluginCounters,
    ) -> Self {
        let stderr = StderrTail::new(STDERR_TAIL);
        // No preopens, no network, no env, no args: the plugin gets nothing it was not granted.
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone());
        if !grants.clock {
            wasi.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        if !grants.random {
            // Deterministic streams keep std's hash maps working without handing out entropy.
            wasi.secure_random(StdRng::seed_from_u64(0))
                .insecure_random(StdRng::seed_from_u64(1));
        }
        let wasi = wasi.build();
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            limits,
            stderr,
            plugin,
            version,
            counters,
        }
    }

    /// What the guest said before trapping: a Rust panic's location and message when it printed
    /// one, otherwise its last line on stderr.
    pub(super) fn trap_context(&self) -> Option<String> {
        let contents = self.stderr.contents();
        let text = String::from_utf8_lossy(&contents);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("note: run with"))
            .collect();
        match lines.iter().rposition(|line| line.contains("panicked at")) {
            Some(at) => Some(lines[at..].join(" ")),
            None => lines.last().map(|line| (*line).to_owned()),
        }
    }
}

/// The clock a plugin without the `clock` capability sees: always the Unix epoch.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host for InstanceState {
    fn log(&mut self, level: Level, message: String) {
        let (plugin, version) = (&*self.plugin, &*self.version);
        match level {
            Level::Trace => tracing::trace!(plugin, version, "{message}"),
            Level::Debug => tracing::debug!(plugin, version, "{message}"),
            Level::Info => tracing::info!(plugin, version, "{message}"),
            Level::Warn => tracing::warn!(plugin, version, "{message}"),
            Level::Error => tracing::error!(plugin, version, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        if self.counters.add(&name, delta) == (Added::Refused { first: true }) {
            let (plugin, version) = (&*self.plugin, &*self.version);
            tracing::warn!(plugin, version, counter = %name, "Plugin reported more than {MAX_COUNTER_NAMES} counter names; ignoring the new ones.");
        }
    }
}

impl super::bindings::weir::plugin::types::Host for InstanceState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_saturate_instead_of_overflowing() {
        let counters = PluginCounters::default();
        assert_eq!(counters.add("big", u64::MAX - 1), Added::Counted);
        assert_eq!(counters.add("big", 5), Added::Counted);
        assert_eq!(counters.snapshot()["big"], u64::MAX);
    }

    #[test]
    fn names_beyond_the_cap_are_ignored_and_reported_once() {
        let counters = PluginCounters::default();
        for n in 0..MAX_COUNTER_NAMES {
            assert_eq!(counters.add(&format!("name-{n}"), 1), Added::Counted);
        }
        assert_eq!(
            counters.add("one-too-many", 1),
            Added::Refused { first: true }
        );
        assert_eq!(counters.add("another", 1), Added::Refused { first: false });
        // Names already kept still count.
        assert_eq!(counters.add("name-0", 1), Added::Counted);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.len(), MAX_COUNTER_NAMES);
        assert_eq!(snapshot["name-0"], 2);
        assert!(!snapshot.contains_key("one-too-many"));
    }
}
