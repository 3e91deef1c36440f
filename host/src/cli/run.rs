//! `weir run` and `weir validate`: load the pipeline file and the plugins it names, then run the
//! pipelines (or only check that they could run).

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
/// heads of that registry, as `weir run --registry` would deploy them.
pub fn validate(
    file: &Path,
    registry: &Path,
    kafka: Option<&weir::registry::kafka::RegistryAddress>,
) -> anyhow::Result<ExitCode> {
    let config = PipelineFile::load(file)?;
    let slots = PluginSlots::default();
    let deployer = Deployer::new(
        PluginRegistry::new(registry),
        // The engine `weir run` would build for this file (without command-line limits).
        PluginRuntime::with_limits(None, config.component_limits(ComponentLimits::default()))?,
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
    println!(
        "{}: ok ({} pipeline(s); plugins: {})",
        file.display(),
        config.pipelines.len(),
        if plugins.is_empty() {
            "none".to_owned()
        } else {
            plugins.join(", ")
        }
    );
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
