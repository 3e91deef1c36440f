//! `weir bench`: prints the Wasm-versus-native throughput of `user-profile`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use weir::registry::PluginRegistry;
use weir::runtime::PluginRuntime;

/// Runs the benchmark on `records` generated records, `seconds` per measurement.
pub fn run(records: usize, seconds: f64, registry: &Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(records > 0, "--records must be at least 1");
    anyhow::ensure!(
        seconds.is_finite() && seconds > 0.0,
        "--seconds must be a positive number"
    );
    let runtime = PluginRuntime::new(None)?;
    let plugin = PluginRegistry::new(registry)
        .load(&runtime, "user-profile")
        .context("the benchmark needs the user-profile plugin: run `weir plugin build plugins/user-profile` first")?;
    let sample = weir::bench::sample_records(records, 42);
    eprintln!(
        "benchmarking user-profile@{} on {records} records, {seconds}s per measurement...",
        plugin.version()
    );
    let lines = weir::bench::user_profile(&plugin, &sample, Duration::from_secs_f64(seconds))?;
    println!(
        "{:>6}  {:>16}  {:>16}  {:>12}",
        "batch", "native rec/s", "wasm rec/s", "wasm/native"
    );
    for line in &lines {
        println!(
            "{:>6}  {:>16.0}  {:>16.0}  {:>12.2}",
            line.batch_size,
            line.native_per_second,
            line.wasm_per_second,
            line.ratio()
        );
    }
    Ok(ExitCode::SUCCESS)
}
