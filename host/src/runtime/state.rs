//! The per-store host state: an empty WASI context (no capability granted), memory limits, the
//! captured stderr that explains panics, and the `host` interface (logging, counters), bounded so
//! that a plugin cannot flood the host's log or memory through it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::weir::plugin::host::{Host, Level};
use super::limits::Grants;
use super::memory_cap::MemoryCap;
use super::stderr::StderrTail;
use super::waits::{self, CallClock};

/// Bytes of guest stderr kept per instance, the most recent ones: enough for a panic message and
/// the lines before it.
const STDERR_TAIL: usize = 8 * 1024;

/// Distinct counter names kept per plugin version. Names come from the plugin: one that makes up
/// a name per record must not grow host memory, or the metrics page, without bound.
const MAX_COUNTER_NAMES: usize = 64;

/// Bytes of a plugin's log message kept; the rest is cut. Enough for any diagnostic line, while a
/// plugin logging a whole record per call cannot turn the host's log into a copy of the stream.
pub const MAX_LOG_MESSAGE_BYTES: usize = 4 * 1024;

/// Log lines one instance may write per second; the rest are dropped and counted. A plugin that
/// logs per record at full speed would otherwise make logging, not transforming, the host's work.
pub const LOG_LINES_PER_SECOND: u64 = 100;

/// Bytes of a counter name; a `counter-add` with a longer name is dropped and counted. Names are
/// metric labels, not data.
pub const MAX_COUNTER_NAME_BYTES: usize = 128;

/// `counter-add` calls one instance may make per second; the rest are dropped and counted. Far
/// above a few counters per record at full speed, so only a loop of calls hits it.
pub const COUNTER_ADDS_PER_SECOND: u64 = 100_000;

/// How often an instance that drops calls says so in the log: once at the first drop, then at
/// most this often, with the count since the last report.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Counters a plugin version reported through `counter-add`, shared by all its instances, and how
/// many of its `log` and `counter-add` calls the host dropped.
#[derive(Debug, Clone, Default)]
pub struct PluginCounters {
    counters: Arc<Mutex<CounterState>>,
    dropped: Arc<DroppedCalls>,
}

/// Host calls dropped for exceeding a bound, per plugin version.
#[derive(Debug, Default)]
struct DroppedCalls {
    log: AtomicU64,
    counter_add: AtomicU64,
}

/// Host calls a plugin version made that the host dropped, by call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedCallCounts {
    /// `log` calls beyond [`LOG_LINES_PER_SECOND`].
    pub log: u64,
    /// `counter-add` calls beyond [`COUNTER_ADDS_PER_SECOND`], with a name longer than
    /// [`MAX_COUNTER_NAME_BYTES`], or with a name beyond the per-version cap.
    pub counter_add: u64,
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

    /// How many `log` and `counter-add` calls of this version were dropped, by all its instances.
    pub fn dropped(&self) -> DroppedCallCounts {
        DroppedCallCounts {
            log: self.dropped.log.load(Ordering::Relaxed),
            counter_add: self.dropped.counter_add.load(Ordering::Relaxed),
        }
    }
}

/// A per-instance allowance of calls per second, counting what it refuses.
#[derive(Debug)]
struct Budget {
    per_second: u64,
    window_start: Instant,
    used: u64,
    /// Refused since the last report.
    unreported: u64,
    last_report: Option<Instant>,
}

impl Budget {
    fn new(per_second: u64) -> Self {
        Budget {
            per_second,
            window_start: Instant::now(),
            used: 0,
            unreported: 0,
            last_report: None,
        }
    }

    /// Whether one more call fits in this second's allowance.
    fn allow(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.used = 0;
        }
        if self.used < self.per_second {
            self.used += 1;
            true
        } else {
            false
        }
    }

    /// Counts a refused call; returns how many to report now, if a report is due.
    fn refuse(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        self.take_report(now, false)
    }

    /// The unreported count when a report is due (or `force`d), resetting it.
    fn take_report(&mut self, now: Instant, force: bool) -> Option<u64> {
        let due = self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= DROP_REPORT_INTERVAL);
        if self.unreported == 0 || !(due || force) {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// `message` cut to at most [`MAX_LOG_MESSAGE_BYTES`] on a character boundary, saying how much
/// was cut.
fn bounded_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_LOG_MESSAGE_BYTES {
        return message.into();
    }
    let mut end = MAX_LOG_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [{} more bytes cut]",
        &message[..end],
        message.len() - end
    )
    .into()
}

/// Everything a plugin's store holds besides the instance itself.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: MemoryCap,
    stderr: StderrTail,
    plugin: Arc<str>,
    version: Arc<str>,
    counters: PluginCounters,
    log_budget: Budget,
    counter_budget: Budget,
    /// The call under way: the plugin's waits end by its deadline (see `waits`).
    call: CallClock,
}

impl InstanceState {
    pub(super) fn new(
        limits: MemoryCap,
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
            log_budget: Budget::new(LOG_LINES_PER_SECOND),
            counter_budget: Budget::new(COUNTER_ADDS_PER_SECOND),
            call: CallClock::after(Duration::ZERO),
        }
    }

    /// A call into the guest starts, which may take `deadline`.
    pub(super) fn start_call(&mut self, deadline: Duration) {
        self.call = CallClock::after(deadline);
    }

    /// Whether the call under way waited until its deadline for a wait that asked for longer.
    pub(super) fn ran_out(&self) -> bool {
        self.call.ran_out()
    }

    /// A wait of `wanted` the plugin asked for, cut to the call's deadline.
    pub(super) fn subscribe_wait(
        &mut self,
        wanted: Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        waits::subscribe_wait(&mut self.table, &self.call, wanted)
    }

    fn report_dropped_logs(&self, dropped: u64) {
        let (plugin, version) = (&*self.plugin, &*self.version);
        let total = self.counters.dropped().log;
        tracing::warn!(
            plugin,
            version,
            dropped,
            total,
            "Plugin logs more than {LOG_LINES_PER_SECOND} lines per second; dropped the excess (metric weir_plugin_host_calls_dropped_total)."
        );
    }

    fn report_dropped_counter_adds(&self, dropped: u64) {
        let (plugin, version) = (&*self.plugin, &*self.version);
        let total = self.counters.dropped().counter_add;
        tracing::warn!(
            plugin,
            version,
            dropped,
            total,
            "Plugin calls counter-add more than {COUNTER_ADDS_PER_SECOND} times per second or with names longer than {MAX_COUNTER_NAME_BYTES} bytes; dropped those calls (metric weir_plugin_host_calls_dropped_total)."
        );
    }

    fn drop_counter_add(&mut self, now: Instant) {
        self.counters
            .dropped
            .counter_add
            .fetch_add(1, Ordering::Relaxed);
        if let Some(dropped) = self.counter_budget.refuse(now) {
            self.report_dropped_counter_adds(dropped);
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

impl Drop for InstanceState {
    /// Reports drops not yet reported, so the last burst before an instance ends is not silent.
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some(dropped) = self.log_budget.take_report(now, true) {
            self.report_dropped_logs(dropped);
        }
        if let Some(dropped) = self.counter_budget.take_report(now, true) {
            self.report_dropped_counter_adds(dropped);
        }
    }
}

impl Host for InstanceState {
    fn log(&mut self, level: Level, message: String) {
        self.log_at(Instant::now(), level, &message);
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.counter_add_at(Instant::now(), &name, delta);
    }
}

impl InstanceState {
    /// `log` as of `now`: within the budget and cut to length, or dropped and counted.
    fn log_at(&mut self, now: Instant, level: Level, message: &str) {
        if !self.log_budget.allow(now) {
            self.counters.dropped.log.fetch_add(1, Ordering::Relaxed);
            if let Some(dropped) = self.log_budget.refuse(now) {
                self.report_dropped_logs(dropped);
            }
            return;
        }
        let message = bounded_message(message);
        let (plugin, version) = (&*self.plugin, &*self.version);
        match level {
            Level::Trace => tracing::trace!(plugin, version, "{message}"),
            Level::Debug => tracing::debug!(plugin, version, "{message}"),
            Level::Info => tracing::info!(plugin, version, "{message}"),
            Level::Warn => tracing::warn!(plugin, version, "{message}"),
            Level::Error => tracing::error!(plugin, version, "{message}"),
        }
    }

    /// `counter-add` as of `now`: counted, or dropped and counted as dropped.
    fn counter_add_at(&mut self, now: Instant, name: &str, delta: u64) {
        if name.len() > MAX_COUNTER_NAME_BYTES || !self.counter_budget.allow(now) {
            self.drop_counter_add(now);
            return;
        }
        if let Added::Refused { first } = self.counters.add(name, delta) {
            self.counters
                .dropped
                .counter_add
                .fetch_add(1, Ordering::Relaxed);
            if first {
                let (plugin, version) = (&*self.plugin, &*self.version);
                tracing::warn!(plugin, version, counter = %name, "Plugin reported more than {MAX_COUNTER_NAMES} counter names; ignoring the new ones.");
            }
        }
    }
}

impl super::bindings::weir::plugin::types::Host for InstanceState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        assert_eq!(bounded_message("short"), "short");
        let long = "é".repeat(MAX_LOG_MESSAGE_BYTES); // two bytes each
        let cut = bounded_message(&long);
        assert!(cut.len() < MAX_LOG_MESSAGE_BYTES + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("… [{} more bytes cut]", MAX_LOG_MESSAGE_BYTES)));
    }

    #[test]
    fn a_budget_refuses_the_excess_each_second_and_reports_now_and_then() {
        let mut budget = Budget::new(3);
        let start = budget.window_start;
        assert!((0..3).all(|_| budget.allow(start)));
        assert!(!budget.allow(start));
        // The first refusal is reported at once, the next ones only after the interval.
        assert_eq!(budget.refuse(start), Some(1));
        assert_eq!(budget.refuse(start), None);
        assert_eq!(budget.refuse(start + Duration::from_secs(1)), None);
        assert!(budget.allow(start + Duration::from_secs(1)), "a new second");
        assert_eq!(
            budget.refuse(start + DROP_REPORT_INTERVAL),
            Some(3),
            "the count since the last report"
        );
        assert_eq!(budget.take_report(start + DROP_REPORT_INTERVAL, true), None);
    }

    fn instance(counters: &PluginCounters) -> InstanceState {
        InstanceState::new(
            MemoryCap::new(wasmtime::StoreLimitsBuilder::new().build(), usize::MAX),
            Grants::default(),
            "loud".into(),
            "v1".into(),
            counters.clone(),
        )
    }

    #[test]
    fn logs_beyond_the_budget_are_dropped_and_counted() {
        let counters = PluginCounters::default();
        let mut state = instance(&counters);
        let now = Instant::now();
        let big = "x".repeat(1 << 20);
        for _ in 0..LOG_LINES_PER_SECOND + 50 {
            state.log_at(now, Level::Info, &big);
        }
        assert_eq!(counters.dropped().log, 50);
        // The next second has a new allowance.
        state.log_at(now + Duration::from_secs(1), Level::Info, "again");
        assert_eq!(counters.dropped().log, 50);
    }

    #[test]
    fn counter_adds_with_long_names_or_beyond_the_budget_are_dropped_and_counted() {
        let counters = PluginCounters::default();
        let mut state = instance(&counters);
        let now = Instant::now();
        state.counter_add_at(now, &"n".repeat(MAX_COUNTER_NAME_BYTES + 1), 1);
        assert_eq!(counters.dropped().counter_add, 1);
        assert!(counters.snapshot().is_empty(), "the long name is not kept");
        for _ in 0..COUNTER_ADDS_PER_SECOND {
            state.counter_add_at(now, "records", 1);
        }
        state.counter_add_at(now, "records", 1);
        assert_eq!(counters.snapshot()["records"], COUNTER_ADDS_PER_SECOND);
        assert_eq!(counters.dropped().counter_add, 2);
    }

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
