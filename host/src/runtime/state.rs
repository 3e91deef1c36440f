//! The per-store host state: an empty WASI context (no capability granted), memory limits, the
//! captured stderr that explains panics, and the `host` interface (logging, counters).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::weir::plugin::host::{Host, Level};

/// Bytes of guest stderr kept per instance: enough for a panic message and a few log lines.
const STDERR_CAPACITY: usize = 64 * 1024;

/// Counters a plugin version reported through `counter-add`, shared by all its instances.
#[derive(Debug, Clone, Default)]
pub struct PluginCounters {
    counters: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl PluginCounters {
    /// Adds `delta` to `name`.
    pub fn add(&self, name: &str, delta: u64) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *counters.entry(name.to_owned()).or_default() += delta;
    }

    /// A snapshot of every counter.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Everything a plugin's store holds besides the instance itself.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    stderr: MemoryOutputPipe,
    plugin: Arc<str>,
    version: Arc<str>,
    counters: PluginCounters,
}

impl InstanceState {
    pub(super) fn new(
        limits: StoreLimits,
        plugin: Arc<str>,
        version: Arc<str>,
        counters: PluginCounters,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // No preopens, no network, no env, no args: the plugin gets nothing it was not granted.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
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

    /// The last line the guest wrote to stderr, where Rust guests print their panic message.
    pub(super) fn last_stderr_line(&self) -> Option<String> {
        let contents = self.stderr.contents();
        String::from_utf8_lossy(&contents)
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(|line| line.trim().to_owned())
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
        self.counters.add(&name, delta);
    }
}

impl super::bindings::weir::plugin::types::Host for InstanceState {}
