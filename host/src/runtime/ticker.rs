//! The epoch ticker: the thread that advances the engine's epoch so that plugin deadlines fire.
//! It ticks only while guest code runs and sleeps otherwise, so an idle pipeline does not wake
//! a hundred times a second for nothing. Every entry into guest code (instantiation, which runs
//! the component's start functions, `init`, and each call) holds a [`GuestRunning`] guard.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use wasmtime::Engine;

use super::limits::EPOCH_TICK;

/// How often a parked ticker looks whether the engine is still there.
const PARKED_RECHECK: Duration = Duration::from_secs(1);

/// The ticker's shared state: how many guest entries are under way, and a place to sleep.
#[derive(Debug, Default)]
pub(super) struct EpochTicker {
    running: AtomicUsize,
    ticks: AtomicU64,
    parked: Mutex<bool>,
    wake: Condvar,
}

/// Held while guest code may run; the ticker ticks while any is held.
#[must_use = "the ticker only ticks while the guard is held"]
pub(super) struct GuestRunning {
    ticker: Option<Arc<EpochTicker>>,
}

impl EpochTicker {
    /// Starts the thread, which holds only a weak reference to the engine so that dropping the
    /// last runtime ends it. Without it no deadline ever fires, so a failure to start it is the
    /// runtime's failure.
    pub(super) fn start(engine: &Engine) -> std::io::Result<Arc<EpochTicker>> {
        let ticker = Arc::new(EpochTicker::default());
        let weak = engine.weak();
        thread::Builder::new()
            .name("weir-epoch-ticker".into())
            .spawn({
                let ticker = Arc::clone(&ticker);
                move || {
                    while let Some(engine) = weak.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        ticker.ticks.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(EPOCH_TICK);
                        ticker.sleep_while_idle();
                    }
                }
            })
            // The handle is not needed: the thread runs detached until the engine is gone.
            .map(drop)?;
        Ok(ticker)
    }

    /// Marks guest code as running until the guard drops, waking the ticker if it sleeps.
    /// The first tick after waking comes at once, so a deadline set just before is never
    /// longer than it would be with a ticker that never slept.
    pub(super) fn guest_running(ticker: Option<&Arc<EpochTicker>>) -> GuestRunning {
        if let Some(ticker) = ticker
            && ticker.running.fetch_add(1, Ordering::SeqCst) == 0
        {
            // Under the lock, so the wake cannot fall between the ticker's check and its wait.
            let _parked = ticker.lock();
            ticker.wake.notify_one();
        }
        GuestRunning {
            ticker: ticker.cloned(),
        }
    }

    /// Waits while no guest code runs, looking up every [`PARKED_RECHECK`] so the thread ends
    /// soon after the engine does.
    fn sleep_while_idle(&self) {
        let mut parked = self.lock();
        while self.running.load(Ordering::SeqCst) == 0 {
            *parked = true;
            let (guard, waited) = self
                .wake
                .wait_timeout(parked, PARKED_RECHECK)
                .unwrap_or_else(PoisonError::into_inner);
            parked = guard;
            if waited.timed_out() {
                break;
            }
        }
        *parked = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the ticker sleeps for want of guest code.
    #[cfg(test)]
    fn is_parked(&self) -> bool {
        *self.lock()
    }
}

impl Drop for GuestRunning {
    fn drop(&mut self) {
        if let Some(ticker) = &self.ticker {
            ticker.running.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Waits for `condition`, failing with `what` after a generous bound.
    fn wait_for(what: &str, condition: impl Fn() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "gave up waiting: {what}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_ticker_ticks_while_guest_code_runs_and_sleeps_otherwise() {
        let engine = Engine::default();
        let ticker = EpochTicker::start(&engine).expect("the ticker starts");
        wait_for("the ticker to park with no guest code", || {
            ticker.is_parked()
        });
        let parked_at = ticker.ticks.load(Ordering::Relaxed);

        let running = EpochTicker::guest_running(Some(&ticker));
        wait_for("three ticks while guest code runs", || {
            ticker.ticks.load(Ordering::Relaxed) >= parked_at + 3
        });
        assert!(!ticker.is_parked());

        // Two guards: the ticker keeps ticking until the last one goes.
        let second = EpochTicker::guest_running(Some(&ticker));
        drop(running);
        let before = ticker.ticks.load(Ordering::Relaxed);
        wait_for("ticks while one guard is left", || {
            ticker.ticks.load(Ordering::Relaxed) >= before + 2
        });
        drop(second);
        wait_for("the ticker to park again", || ticker.is_parked());
    }
}
