//! A plugin's waits end by the deadline of the call under way. Epoch deadlines interrupt only
//! running guest code; a guest blocked in the host, in a wait it asked of WASI's monotonic
//! clock (`std::thread::sleep`, Python's `time.sleep`, `poll` with a timeout all come down to
//! `subscribe-duration` or `subscribe-instant`, then a block), would otherwise outlive its
//! deadline by as long as it asked, holding its worker's thread and the pipeline's shutdown
//! with it. A wait longer than what is left of the call's deadline ends when the deadline does
//! and marks the call as out of time: the caller then fails it as a timeout even if the guest
//! returns before an epoch check traps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as MonotonicClock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::state::InstanceState;

/// The monotonic clock interface as wasmtime-wasi links it. The linker matches imports of every
/// compatible 0.2 version against it, so plugins built against older WASI versions get these
/// definitions too (tests/all/runtime.rs proves a sleeping Rust plugin is stopped).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Replaces wasmtime-wasi's `subscribe-duration` and `subscribe-instant` with waits that end by
/// the call's deadline (see the module doc). Link WASI first.
pub(super) fn bound_waits(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, InstanceState>, (nanos,): (u64,)| {
            Ok((store
                .data_mut()
                .subscribe_wait(Duration::from_nanos(nanos))?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, InstanceState>, (when,): (u64,)| {
            let state = store.data_mut();
            let now = MonotonicClock::now(&mut state.clocks())?;
            let wanted = Duration::from_nanos(when.saturating_sub(now));
            Ok((state.subscribe_wait(wanted)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The call under way: when it must end, and whether a wait of the plugin's was cut there.
#[derive(Debug)]
pub(super) struct CallClock {
    ends: Instant,
    cut: Arc<AtomicBool>,
}

impl CallClock {
    /// A call that starts now and may take `deadline` (one past what an `Instant` holds is a
    /// century).
    pub(super) fn after(deadline: Duration) -> Self {
        let now = Instant::now();
        let century = Duration::from_secs(100 * 365 * 24 * 3600);
        CallClock {
            ends: now
                .checked_add(deadline)
                .unwrap_or_else(|| now + century.min(deadline)),
            cut: Arc::default(),
        }
    }

    /// What is left of the call's time.
    fn left(&self) -> Duration {
        self.ends.saturating_duration_since(Instant::now())
    }

    /// Whether the plugin waited until the deadline for a wait that asked for longer: the call
    /// ran out of time, wherever the guest is now.
    pub(super) fn ran_out(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// A wait of `wanted`, cut to what is left of the call.
    fn wait(&self, wanted: Duration) -> Wait {
        let left = self.left();
        let (duration, cut) = if wanted > left {
            (left, Some(Arc::clone(&self.cut)))
        } else {
            (wanted, None)
        };
        let now = tokio::time::Instant::now();
        Wait {
            until: now.checked_add(duration).unwrap_or(now),
            yielded: !duration.is_zero(),
            cut,
        }
    }
}

/// A wait as the plugin's pollable.
struct Wait {
    until: tokio::time::Instant,
    /// A zero wait yields to the runtime once (as wasmtime-wasi's does), so a guest polling in
    /// a loop does not starve it; false until then.
    yielded: bool,
    /// Set when the wait ends, if it was cut short of what the plugin asked.
    cut: Option<Arc<AtomicBool>>,
}

#[wasmtime_wasi::async_trait]
impl Pollable for Wait {
    async fn ready(&mut self) {
        if !std::mem::replace(&mut self.yielded, true) {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep_until(self.until).await;
        if let Some(cut) = &self.cut {
            cut.store(true, Ordering::Relaxed);
        }
    }
}

/// Subscribes a wait of `wanted` in `table`, cut by `clock`.
pub(super) fn subscribe_wait(
    table: &mut ResourceTable,
    clock: &CallClock,
    wanted: Duration,
) -> wasmtime::Result<Resource<DynPollable>> {
    let wait = table.push(clock.wait(wanted))?;
    subscribe(table, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_past_the_deadline_is_cut_and_marks_the_call() {
        let clock = CallClock::after(Duration::from_secs(60));
        let short = clock.wait(Duration::from_millis(5));
        assert!(short.cut.is_none(), "a wait within the deadline is kept");
        assert!(short.until <= tokio::time::Instant::now() + Duration::from_millis(5));
        let long = clock.wait(Duration::MAX);
        assert!(long.cut.is_some());
        assert!(long.until <= tokio::time::Instant::now() + Duration::from_secs(60));
        assert!(!clock.ran_out(), "nothing waited yet");
    }

    #[tokio::test]
    async fn only_a_cut_wait_that_ended_runs_the_call_out() {
        let clock = CallClock::after(Duration::ZERO);
        let mut kept = clock.wait(Duration::ZERO);
        kept.ready().await;
        assert!(
            !clock.ran_out(),
            "a zero wait asked for no more than was left"
        );
        let mut cut = clock.wait(Duration::from_secs(3600));
        assert!(!clock.ran_out(), "subscribed, not yet waited on");
        cut.ready().await;
        assert!(clock.ran_out());
    }

    #[test]
    fn a_deadline_past_what_an_instant_holds_is_a_long_one() {
        assert!(CallClock::after(Duration::MAX).left() > Duration::from_secs(365 * 24 * 3600));
        assert_eq!(CallClock::after(Duration::ZERO).left(), Duration::ZERO);
    }
}
