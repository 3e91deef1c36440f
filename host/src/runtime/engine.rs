//! One wasmtime `Engine` per process, configured once, with the epoch ticker that enforces
//! per-call deadlines.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

use super::bindings::Transformer;
use super::cache::CompiledCache;
use super::error::PluginError;
use super::state::InstanceState;
use super::ticker::{EpochTicker, GuestRunning};

/// How much one plugin component may hold, checked when it loads. The pooling allocator reserves
/// slots of these sizes, so they are engine-wide: a host takes the largest any of its pipelines
/// asks for (`limits` table) or the command line gives.
///
/// The defaults fit the toolchains Weir builds with: rustc's components hold 1 to 4 core
/// instances, componentize-js's 4, componentize-py's 14 (CPython and its libraries are linked as
/// separate modules). Each core instance slot costs a little reserved memory, hence a ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentLimits {
    /// Core module instances one component may create.
    pub core_instances: u32,
    /// Linear memories one component may define.
    pub memories: u32,
    /// Tables one component may define.
    pub tables: u32,
}

impl Default for ComponentLimits {
    fn default() -> Self {
        ComponentLimits {
            core_instances: 32,
            memories: 4,
            tables: 8,
        }
    }
}

impl ComponentLimits {
    /// Each field the larger of the two.
    pub fn max(self, other: ComponentLimits) -> ComponentLimits {
        ComponentLimits {
            core_instances: self.core_instances.max(other.core_instances),
            memories: self.memories.max(other.memories),
            tables: self.tables.max(other.tables),
        }
    }
}

/// The shared compilation and linking context for every plugin in the process.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("pooling", &self.inner.pooling)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<InstanceState>,
    pooling: bool,
    cache: Option<CompiledCache>,
    limits: ComponentLimits,
    /// Advances the epoch while guest code runs; none when deadlines are off.
    ticker: Option<Arc<EpochTicker>>,
}

impl PluginRuntime {
    /// Builds the engine (pooling allocator where the machine allows it, on-demand otherwise),
    /// the linker with WASI and the host interface, and starts the epoch ticker. With a cache,
    /// compiled code is reused across restarts.
    pub fn new(cache: Option<CompiledCache>) -> Result<Self, PluginError> {
        Self::with_limits(cache, ComponentLimits::default())
    }

    /// [`PluginRuntime::new`] with per-component limits other than the defaults.
    pub fn with_limits(
        cache: Option<CompiledCache>,
        limits: ComponentLimits,
    ) -> Result<Self, PluginError> {
        Self::build(cache, limits, Deadlines::Enforced)
    }

    /// A runtime whose plugins run with no deadline at all: compiled without epoch checks and
    /// with no ticker. Only for `weir bench plugin`, to measure what the deadlines cost; a
    /// pipeline never runs on it, since a plugin that spins would hold its worker for good.
    #[doc(hidden)]
    pub fn without_deadlines_for_bench(cache: Option<CompiledCache>) -> Result<Self, PluginError> {
        Self::build(cache, ComponentLimits::default(), Deadlines::Off)
    }

    fn build(
        cache: Option<CompiledCache>,
        limits: ComponentLimits,
        deadlines: Deadlines,
    ) -> Result<Self, PluginError> {
        let (engine, pooling) = match Engine::new(&engine_config(Some(limits), deadlines)) {
            Ok(engine) => (engine, true),
            Err(error) => {
                // Pooling reserves virtual memory up front; containers with a small address-space
                // limit refuse it, and on-demand allocation is then the right fallback.
                tracing::warn!(%error, "Pooling allocator unavailable, using on-demand allocation.");
                let engine = Engine::new(&engine_config(None, deadlines))
                    .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
                (engine, false)
            }
        };
        let mut linker = Linker::new(&engine);
        // WASI is linked so that components built by rustc for wasm32-wasip2 instantiate; the
        // context each store gets grants no files, no network and no environment.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        // Deadlines interrupt guest code only: a wait the guest asks of WASI ends by its call's.
        super::waits::bound_waits(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        Transformer::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let ticker = match deadlines {
            Deadlines::Enforced => {
                Some(EpochTicker::start(&engine).map_err(PluginError::EpochTicker)?)
            }
            Deadlines::Off => None,
        };
        Ok(PluginRuntime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                pooling,
                cache,
                limits,
                ticker,
            }),
        })
    }

    /// The process-wide engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Keeps the epoch ticking, so deadlines fire, until the guard drops. Taken around every
    /// entry into guest code.
    pub(super) fn guest_running(&self) -> GuestRunning {
        EpochTicker::guest_running(self.inner.ticker.as_ref())
    }

    /// The compiled-code cache, if any.
    pub fn cache(&self) -> Option<&CompiledCache> {
        self.inner.cache.as_ref()
    }

    pub(super) fn linker(&self) -> &Linker<InstanceState> {
        &self.inner.linker
    }

    /// What one component may hold; a larger one is refused when it loads.
    pub fn limits(&self) -> ComponentLimits {
        self.inner.limits
    }

    /// Whether instances come from the pooling allocator.
    pub fn uses_pooling(&self) -> bool {
        self.inner.pooling
    }
}

/// Whether compiled plugins check the epoch deadline (always, but for one benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadlines {
    Enforced,
    Off,
}

fn engine_config(pooling: Option<ComponentLimits>, deadlines: Deadlines) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Weir calls plugins synchronously and never uses component-model async. This wasmtime
    // build does not compile that support in (its `component-model-async` feature is off), so
    // this is already the value; it is set so that enabling the feature later cannot silently
    // add concurrency bookkeeping to every store and call.
    config.concurrency_support(false);
    // Deadlines: epoch interruption costs a load and compare per function entry and loop
    // header, far cheaper than fuel, and a ticker thread makes it wall-clock based. Measured
    // cost: docs/performance.md, "Wasm against native".
    config.epoch_interruption(deadlines == Deadlines::Enforced);
    // A 4 GiB reservation plus a guard region per linear memory (wasmtime's defaults on 64-bit
    // hosts, stated here because speed depends on them): every 32-bit address a plugin can form
    // lands inside reserved memory, so Cranelift emits no bounds check on loads and stores and
    // an out-of-bounds access traps through the guard page. Smaller values bring explicit
    // checks back (1.2 to 1.8x slower guests). Address space only, not memory: the pooling
    // allocator's slots below are this size each.
    config.memory_reservation(4 << 30);
    config.memory_guard_size(32 << 20);
    // For profiling with `perf`: wasmtime then writes /tmp/perf-PID.map naming every compiled
    // plugin function, so a profile shows guest functions instead of bare addresses. Off by
    // default (the file grows with every plugin load).
    if std::env::var_os("WEIR_WASM_PERFMAP").is_some() {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    // Deep recursion in a plugin traps cleanly instead of exhausting the host thread's stack.
    config.max_wasm_stack(512 * 1024);
    if let Some(limits) = pooling {
        let mut pool = PoolingAllocationConfig::default();
        // Sized for a host running a few dozen pipelines, each with a worker per partition and a
        // handful of plugins. Beyond these totals instantiation fails, it does not wait for a
        // slot: a fresh instance after a trap then fails its record as a plugin-failure dead
        // letter, a worker switching versions keeps the running one and retries
        // (`ChainStep::refresh`), and a new partition's worker is not started (it shares one).
        pool.total_component_instances(256);
        // Python plugins hold 14 core instances each (see `ComponentLimits`), hence more core
        // instance slots than memories.
        pool.total_core_instances(2048);
        pool.total_memories(512);
        pool.total_tables(1024);
        pool.max_memories_per_component(limits.memories);
        pool.max_tables_per_component(limits.tables);
        pool.max_core_instances_per_component(limits.core_instances);
        // The hard ceiling of any plugin memory; the per-pipeline cap (StoreLimits) is lower.
        pool.max_memory_size(1 << 30);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}
