//! `weir run` and `weir validate`: load the pipeline file and the plugins it names, then run the
//! pipelines (or only check that they could run).

use super::stdout::outln;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use weir::admin::history::Group;
use weir::admin::{Histories, PipelineHistory};
use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;
use weir::pipeline::PipelineReport;
use weir::registry::{Deployer, PluginRegistry, PluginSlots};
use weir::runtime::{ComponentLimits, PluginRuntime};

/// Validates `file` fully, plugins included (compiled, type-checked, `init` run with each
/// pipeline's config), without touching any source or sink. With `kafka`, the plugins are the
/// heads of that registry, as `weir run --registry` would deploy them. `limits` are the
/// command line's component limits, the floor under the file's, as `weir run` takes them.
pub fn validate(
    file: &Path,
    registry: &Path,
    kafka: Option<&weir::registry::kafka::RegistryAddress>,
    limits: ComponentLimits,
) -> anyhow::Result<ExitCode> {
    let config = PipelineFile::load(file)?;
    let slots = PluginSlots::default();
    let deployer = Deployer::new(
        PluginRegistry::new(registry),
        // The engine `weir run` would build for this file with the same flags.
        PluginRuntime::with_limits(None, config.component_limits(limits))?,
        slots.clone(),
        &config,
    );
    if let Some(kafka) = kafka {
        weir::registry::kafka::deploy_from_registry(&deployer, kafka)
            .with_context(|| format!("{}: plugins from {kafka}", file.display()))?;
    } else {
        let names: Vec<String> = deployer.used_plugins().map(String::from).collect();
        for name in &names {
            deployer
                .deploy(name)
                .with_context(|| format!("{}: plugin `{name}`", file.display()))?;
        }
    }
    let plugins: Vec<String> = slots
        .describe()
        .into_iter()
        .map(|slot| format!("{}@{}", slot.name, slot.current.version))
        .collect();
    outln!(
        "{}: ok ({} pipeline(s); plugins: {})",
        file.display(),
        config.pipelines.len(),
        if plugins.is_empty() {
            "none".to_owned()
        } else {
            plugins.join(", ")
        }
    )?;
    Ok(ExitCode::SUCCESS)
}

/// How often the live summary prints a line per pipeline.
const LIVE_SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The first thing `weir run` does: the async runtime, with SIGTERM and Ctrl-C caught, so that
/// a signal arriving while the configuration is read or plugins compile is kept rather than
/// killing the process.
pub struct Startup {
    runtime: tokio::runtime::Runtime,
    signals: ShutdownSignals,
}

impl Startup {
    /// Builds the runtime and registers the signal handlers.
    pub fn begin() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("weir-io")
            .build()
            .context("cannot start the async runtime")?;
        let signals = {
            let _inside = runtime.enter();
            ShutdownSignals::catch()
        };
        Ok(Startup { runtime, signals })
    }
}

/// Runs every pipeline of `file` until they end or a shutdown signal arrives; prints each
/// pipeline's summary when `summary` is set, and a live line per pipeline every few seconds
/// while they run when `live` is. A signal before the pipelines start ends the process with
/// success and nothing to drain.
pub fn run(
    file: &Path,
    options: RunOptions,
    summary: bool,
    live: bool,
    startup: anyhow::Result<Startup>,
) -> anyhow::Result<ExitCode> {
    let Startup { runtime, signals } = startup?;
    let ran = run_on(&runtime, signals, file, options, summary, live);
    end_runtime(runtime, RUNTIME_END_BOUND);
    ran
}

/// How long `weir run` waits, once every pipeline has returned, for work still running on the
/// runtime's blocking threads: a little above the 5 s shutdown grace that bounds each final
/// commit. Past it that work is abandoned, and the process exits.
const RUNTIME_END_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// Shuts `runtime` down, waiting at most `bound` for its blocking threads; returns whether
/// work was abandoned. By then every pipeline has returned, so what can still run is what a
/// timeout stopped waiting for, none of it needed for what was acknowledged: a final commit
/// (Kafka's can wait indefinitely for its group coordinator; the records after the last
/// committed position are read again after a restart), a file sink write abandoned after the
/// grace (never acknowledged; its torn line is dropped when the file is opened again), or an
/// `http` journal append of a cancelled poll (its records were never handed on; a torn last
/// entry is cut when the journal is opened again).
fn end_runtime(runtime: tokio::runtime::Runtime, bound: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    // Returns as soon as the blocking threads are done, or at `bound`.
    runtime.shutdown_timeout(bound);
    let abandoned = started.elapsed() >= bound;
    if abandoned {
        tracing::warn!(
            bound_ms = bound.as_millis() as u64,
            "Blocking work (such as a final commit to a store that stopped answering) was still running this long after the pipelines ended; it was abandoned and the process exits. Records whose positions it was committing are read again after a restart (duplicates, not a loss)."
        );
    }
    abandoned
}

/// [`run`] on `runtime`.
fn run_on(
    runtime: &tokio::runtime::Runtime,
    signals: ShutdownSignals,
    file: &Path,
    options: RunOptions,
    summary: bool,
    live: bool,
) -> anyhow::Result<ExitCode> {
    let shutdown = Arc::new(tokio::sync::watch::channel(false).0);
    runtime.spawn(signals.forward_to(Arc::clone(&shutdown)));
    let config = PipelineFile::load(file)?;
    // The signal action has run even if the task forwarding it has not yet.
    if *shutdown.borrow() || signal_received() {
        tracing::info!("Shutdown signal received before the pipelines started; nothing to drain.");
        return Ok(ExitCode::SUCCESS);
    }
    runtime.block_on(async {
        let app = RunningApp::start_until(config, options, shutdown)
            .await
            .with_context(|| format!("{}: cannot start", file.display()))?;
        let live_summary = live.then(|| tokio::spawn(live_summary(app.histories().clone())));
        let mut failed = false;
        let results = app.wait().await;
        if let Some(task) = live_summary {
            task.abort();
        }
        for (_, result) in results {
            match result {
                Ok(report) if summary => print_summary(&report),
                Ok(_) => {}
                Err(error) => {
                    failed = true;
                    eprintln!("error: {error}");
                }
            }
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// One line per pipeline every [`LIVE_SUMMARY_EVERY`]: what an operator glances at first.
async fn live_summary(histories: Histories) {
    let mut ticker = tokio::time::interval(LIVE_SUMMARY_EVERY);
    // The first tick is immediate, before anything was measured.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        for (name, history) in histories.iter() {
            eprintln!("{}", live_line(name, history));
        }
    }
}

/// `process: 1,204 in/s, 1,198 out/s, 0.4 dead letters/s, lag 1,520`.
fn live_line(name: &str, history: &PipelineHistory) -> String {
    let rate = |series| history.recent(Group::Throughput, series).unwrap_or(0.0);
    let lag = history
        .latest(Group::Lag, "total")
        .map_or_else(|| "-".to_owned(), |lag| format!("{lag:.0}"));
    format!(
        "{name}: {:.0} in/s, {:.0} out/s, {:.1} dead letters/s, lag {lag}",
        rate("in"),
        rate("out"),
        rate("dead-lettered")
    )
}

/// The summary goes to stderr with the (text) logs: stdout belongs to a `stdout` sink's records.
fn print_summary(report: &PipelineReport) {
    eprintln!("pipeline {}", report.pipeline);
    eprintln!("  records in       {:>12}", report.records_in);
    eprintln!("  records out      {:>12}", report.records_out);
    eprintln!("  dead-lettered    {:>12}", report.dead_lettered);
    eprintln!(
        "  throughput       {:>12.0} records/s over {:.2}s",
        report.records_per_second(),
        report.elapsed.as_secs_f64()
    );
}

/// Set by this process's own signal action from the instant it is installed. tokio forgets a
/// signal that lands between installing its action and subscribing its listener (its driver
/// broadcasts the event to no one), so `forward_to` also looks here.
#[cfg(unix)]
static RECEIVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether SIGTERM or SIGINT has arrived since `ShutdownSignals::catch`.
fn signal_received() -> bool {
    #[cfg(unix)]
    {
        RECEIVED.load(std::sync::atomic::Ordering::SeqCst)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Ctrl-C and SIGTERM, caught from the moment this is created: a signal that arrives while the
/// pipelines are still starting is kept for `forward_to` instead of killing the process with
/// records in flight.
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Registers the handlers; call inside the runtime, before anything starts.
    fn catch() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
                let action = || RECEIVED.store(true, std::sync::atomic::Ordering::SeqCst);
                // SAFETY: the action only stores to an atomic, which is async-signal-safe.
                if let Err(error) =
                    unsafe { signal_hook_registry::register(kind.as_raw_value(), action) }
                {
                    eprintln!(
                        "warning: cannot catch signal {}: {error}",
                        kind.as_raw_value()
                    );
                }
            }
            let register = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!(%error, signal = name, "Cannot listen for the signal.");
                    None
                }
            };
            ShutdownSignals {
                terminate: register(SignalKind::terminate(), "SIGTERM"),
                interrupt: register(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignals {}
    }

    /// Turns the first signal into a graceful shutdown: sources stop, in-flight batches drain.
    /// Later signals are caught and ignored, so a second Ctrl-C does not abort the drain.
    async fn forward_to(self, shutdown: Arc<tokio::sync::watch::Sender<bool>>) {
        #[cfg(unix)]
        {
            async fn received(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            // The listeners subscribed in `catch`: a signal since then reaches them, one
            // before then set RECEIVED.
            if !signal_received() {
                tokio::select! {
                    _ = received(self.terminate) => {}
                    _ = received(self.interrupt) => {}
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("Shutdown signal received; finishing in-flight batches.");
        // `send` would drop the value while nothing subscribes yet (a signal during start-up).
        shutdown.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn the_runtime_ends_without_waiting_for_blocking_work_past_its_bound() {
        let runtime = runtime();
        let (release, released) = mpsc::channel::<()>();
        let (started_tx, started) = mpsc::channel();
        let finished = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&finished);
        // Blocking work that never ends by itself, like a commit to a coordinator that does
        // not answer; the minute is only a guard, so a runtime that waits fails the test
        // rather than hanging it.
        runtime.spawn_blocking(move || {
            started_tx.send(()).unwrap();
            let _ = released.recv_timeout(Duration::from_secs(60));
            done.store(true, Ordering::SeqCst);
        });
        started.recv().unwrap();
        assert!(end_runtime(runtime, Duration::from_millis(50)));
        assert!(
            !finished.load(Ordering::SeqCst),
            "the runtime waited for the blocking work"
        );
        release.send(()).unwrap();
    }

    #[test]
    fn a_runtime_whose_blocking_work_is_done_ends_without_a_warning() {
        let runtime = runtime();
        runtime.block_on(runtime.spawn_blocking(|| ())).unwrap();
        assert!(!end_runtime(runtime, RUNTIME_END_BOUND));
    }
}
