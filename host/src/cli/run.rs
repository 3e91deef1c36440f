//! `weir run` and `weir validate`: load the pipeline file and the plugins it names, then run the
//! pipelines (or only check that they could run).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;
use weir::observe::history::Group;
use weir::observe::{Histories, PipelineHistory};
use weir::pipeline::PipelineReport;
use weir::registry::{Deployer, PluginRegistry, PluginSlots};
use weir::runtime::PluginRuntime;

/// Validates `file` fully, plugins included (compiled, type-checked, `init` run with each
/// pipeline's config), without touching any source or sink.
pub fn validate(file: &Path, registry: &Path) -> anyhow::Result<ExitCode> {
    let config = PipelineFile::load(file)?;
    let slots = PluginSlots::default();
    let deployer = Deployer::new(
        PluginRegistry::new(registry),
        PluginRuntime::new(None)?,
        slots.clone(),
        &config,
    );
    let names: Vec<String> = deployer.used_plugins().map(String::from).collect();
    for name in &names {
        deployer
            .deploy(name)
            .with_context(|| format!("{}: plugin `{name}`", file.display()))?;
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

/// Runs every pipeline of `file` until they end or a shutdown signal arrives; prints each
/// pipeline's summary when `summary` is set, and a live line per pipeline every few seconds
/// while they run when `live` is.
pub fn run(
    file: &Path,
    options: RunOptions,
    summary: bool,
    live: bool,
) -> anyhow::Result<ExitCode> {
    let config = PipelineFile::load(file)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-io")
        .build()
        .context("cannot start the async runtime")?;
    tokio.block_on(async {
        let signals = ShutdownSignals::catch();
        let app = RunningApp::start(config, options)
            .await
            .with_context(|| format!("{}: cannot start", file.display()))?;
        tokio::spawn(signals.forward_to(app.shutdown_handle()));
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
    async fn forward_to(self, shutdown: std::sync::Arc<tokio::sync::watch::Sender<bool>>) {
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
            tokio::select! {
                _ = received(self.terminate) => {}
                _ = received(self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("Shutdown signal received; finishing in-flight batches.");
        let _ = shutdown.send(true);
    }
}
