//! `weir run` and `weir validate`: load the pipeline file and the plugins it names, then run the
//! pipelines (or only check that they could run).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use weir::config::PipelineFile;
use weir::pipeline::{self, PipelineReport, PipelineStats};
use weir::registry::PluginRegistry;
use weir::runtime::{LoadedPlugin, PluginRuntime};

/// Validates `file` fully, plugins included, without touching any source or sink.
pub fn validate(file: &Path, registry: &Path) -> anyhow::Result<ExitCode> {
    let config = PipelineFile::load(file)?;
    let plugins = load_plugins(&config, registry)?;
    for pipeline in &config.pipelines {
        pipeline::build_chain(pipeline, &plugins)
            .with_context(|| format!("{}: pipeline `{}`", file.display(), pipeline.name))?;
    }
    println!(
        "{}: ok ({} pipeline(s); plugins: {})",
        file.display(),
        config.pipelines.len(),
        describe_plugins(&plugins)
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs every pipeline of `file` until they end or a shutdown signal arrives.
pub fn run(file: &Path, registry: &Path) -> anyhow::Result<ExitCode> {
    let config = PipelineFile::load(file)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-io")
        .build()
        .context("cannot start the async runtime")?;
    tokio.block_on(run_pipelines(config, registry))
}

async fn run_pipelines(config: PipelineFile, registry: &Path) -> anyhow::Result<ExitCode> {
    let registry = registry.to_owned();
    let loading = config.clone();
    // Compiling components is CPU-bound: keep it off the async workers.
    let plugins = tokio::task::spawn_blocking(move || load_plugins(&loading, &registry))
        .await
        .context("plugin loading panicked")??;
    tracing::info!(plugins = %describe_plugins(&plugins), "Plugins loaded.");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    tokio::spawn(forward_signals(Arc::clone(&shutdown_tx)));

    let plugins = Arc::new(plugins);
    let mut running = Vec::new();
    for pipeline in config.pipelines {
        let chain = {
            let (pipeline, plugins) = (pipeline.clone(), Arc::clone(&plugins));
            tokio::task::spawn_blocking(move || pipeline::build_chain(&pipeline, &plugins))
                .await
                .context("plugin instantiation panicked")??
        };
        let stats = Arc::new(PipelineStats::default());
        let shutdown = shutdown_rx.clone();
        let stop_others = Arc::clone(&shutdown_tx);
        running.push(tokio::spawn(async move {
            let result = pipeline::run(pipeline, chain, stats, shutdown).await;
            if result.is_err() {
                // One pipeline failing stops the process, so a supervisor restarts it whole.
                let _ = stop_others.send(true);
            }
            result
        }));
    }

    let mut failed = false;
    let mut reports: Vec<PipelineReport> = Vec::new();
    for handle in running {
        match handle.await {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(error)) => {
                failed = true;
                eprintln!("error: {error}");
            }
            Err(error) => {
                failed = true;
                eprintln!("error: a pipeline task panicked: {error}");
            }
        }
    }
    for report in &reports {
        print_summary(report);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn load_plugins(
    config: &PipelineFile,
    registry: &Path,
) -> anyhow::Result<BTreeMap<String, Arc<LoadedPlugin>>> {
    let names: Vec<&str> = config
        .pipelines
        .iter()
        .flat_map(|p| p.transforms.iter().map(|t| t.plugin.as_str()))
        .collect();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let runtime = PluginRuntime::new()?;
    Ok(PluginRegistry::new(registry).load_all(&runtime, names)?)
}

fn describe_plugins(plugins: &BTreeMap<String, Arc<LoadedPlugin>>) -> String {
    if plugins.is_empty() {
        return "none".into();
    }
    plugins
        .values()
        .map(|p| format!("{}@{}", p.name(), p.version()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_summary(report: &PipelineReport) {
    println!("pipeline {}", report.pipeline);
    println!("  records in       {:>12}", report.records_in);
    println!("  records out      {:>12}", report.records_out);
    println!("  dead-lettered    {:>12}", report.dead_lettered);
    println!(
        "  throughput       {:>12.0} records/s over {:.2}s",
        report.records_per_second(),
        report.elapsed.as_secs_f64()
    );
}

/// Turns Ctrl-C or SIGTERM into a graceful shutdown: sources stop, in-flight batches drain.
async fn forward_signals(shutdown: Arc<watch::Sender<bool>>) {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("Shutdown signal received; finishing in-flight batches.");
    let _ = shutdown.send(true);
}
