//! `weir bench`: runs a benchmark and prints its numbers and ratios.

use super::stdout::{StdoutError, outln};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use weir::registry::{PluginFile, read_plugin_file};
use weir::runtime::PluginRuntime;

use super::measure::cost::PeakRss;
use super::measure::pipeline::{PipelineReportBench, Round, ThroughputLine};
use super::measure::rounds::{Summary, median};
use super::measure::stalls::{STALL_GAP, Tail};

/// Runs the benchmark of `plugin` (a registry name or a `.wasm` path) on `records` generated
/// records, `seconds` per batch size and side, split over the rounds.
pub fn plugin(
    plugin: &str,
    records: usize,
    seconds: f64,
    registry: &Path,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(records > 0, "--records must be at least 1");
    anyhow::ensure!(
        seconds.is_finite() && seconds > 0.0,
        "--seconds must be a positive number"
    );
    let path = if plugin.ends_with(".wasm") || plugin.contains('/') {
        std::path::PathBuf::from(plugin)
    } else {
        registry.join(format!("{plugin}.wasm"))
    };
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(plugin)
        .to_owned();
    let bytes = read_plugin_file(&path, PluginFile::Component).with_context(|| {
        format!(
            "reading {}: build the plugin first (`weir plugin build plugins/user-profile`, or its -py or -js twin)",
            path.display()
        )
    })?;
    // First load compiles into an empty cache; a second runtime then loads from that cache, as a
    // restarted weir does.
    let cache_dir = std::env::temp_dir().join(format!("weir-bench-cache-{}", std::process::id()));
    let cache = || Some(weir::runtime::CompiledCache::new(&cache_dir));
    let started = std::time::Instant::now();
    weir::runtime::LoadedPlugin::from_bytes(&PluginRuntime::new(cache())?, &name, &bytes)?;
    let compile = started.elapsed();
    let runtime = PluginRuntime::new(cache())?;
    let started = std::time::Instant::now();
    let plugin = weir::runtime::LoadedPlugin::from_bytes(&runtime, &name, &bytes)?;
    let cached = started.elapsed();
    // Best effort: a leftover folder in the temp dir harms nothing.
    let _ = std::fs::remove_dir_all(&cache_dir);
    let language = weir::runtime::inspect(&bytes)
        .language
        .unwrap_or_else(|| "unknown language".into());
    outln!(
        "{name} ({language}, {} KiB): first load (compile) {:.2} s, load from the compiled cache {:.0} ms",
        bytes.len().div_ceil(1024),
        compile.as_secs_f64(),
        cached.as_secs_f64() * 1000.0
    )?;
    let sample = super::measure::sample_records(records, 42);
    eprintln!(
        "benchmarking {name}@{} on {records} records, {seconds}s per batch size and side in {} rounds...",
        plugin.version(),
        super::measure::plugin::ROUNDS
    );
    let lines = super::measure::user_profile(&plugin, &sample, Duration::from_secs_f64(seconds))?;
    outln!(
        "{:>6}  {:>16}  {:>16}  {:>12}  {:>14}",
        "batch",
        "native rec/s",
        "wasm rec/s",
        "wasm/native",
        "rounds"
    )?;
    for line in &lines {
        let (lowest, highest) = line.ratio_range();
        outln!(
            "{:>6}  {:>16.0}  {:>16.0}  {:>12}  {:>14}",
            line.batch_size,
            line.native_per_second,
            line.wasm_per_second,
            ratio_text(line.ratio()),
            format!("{}-{}", ratio_text(lowest), ratio_text(highest)),
        )?;
    }
    outln!(
        "(records/s and the ratio are medians over {} rounds, each running native then Wasm; \
         \"rounds\" is the lowest and highest round's ratio)",
        super::measure::plugin::ROUNDS
    )?;
    // The same component without epoch checks, at the largest batch (where the guest's own
    // work dominates), to state what the deadlines cost.
    let unbounded = weir::runtime::LoadedPlugin::from_bytes(
        &PluginRuntime::without_deadlines_for_bench(None)?,
        &name,
        &bytes,
    )?;
    let batch_size = super::measure::plugin::BATCH_SIZES[2];
    let epoch = super::measure::epoch_cost(
        &plugin,
        &unbounded,
        &sample,
        batch_size,
        Duration::from_secs_f64(seconds),
    )?;
    outln!(
        "epoch deadlines at batch {batch_size}: {:.0} wasm rec/s with, {:.0} without: cost {:.1}%",
        epoch.with_deadlines,
        epoch.without_deadlines,
        epoch.cost() * 100.0
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Measures hot-swap latency `swaps` times.
pub fn swap(swaps: u32, debounce_ms: u64, rate: f64, registry: &Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(swaps > 0, "--swaps must be at least 1");
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "--rate must be a positive number"
    );
    let path = registry.join("user-profile.wasm");
    let component = read_plugin_file(&path, PluginFile::Component).with_context(|| {
        format!(
            "reading {}: run `weir plugin build plugins/user-profile` first",
            path.display()
        )
    })?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!("swapping user-profile {swaps} times under {rate} records/s...");
    let report = tokio.block_on(super::measure::swap::swap_latency(
        &component,
        swaps,
        Duration::from_millis(debounce_ms),
        rate,
    ))?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    outln!("swaps                      {:>8}", report.latencies.len())?;
    outln!("debounce                   {:>8.1} ms", ms(report.debounce))?;
    outln!(
        "landing -> first record p50 {:>7.1} ms",
        ms(report.latency(0.5))
    )?;
    outln!(
        "landing -> first record p99 {:>7.1} ms",
        ms(report.latency(0.99))
    )?;
    outln!(
        "longest output gap in swap {:>8.1} ms",
        ms(report.longest_gap)
    )?;
    outln!(
        "usual gap between batches  {:>8.1} ms",
        ms(report.usual_gap)
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The longest producer linger the benchmarks take: a second already holds 2,000 records back.
const MAX_PRODUCER_LINGER_MS: u64 = 1000;

/// Runs the pipeline benchmark.
pub fn pipeline(bench: super::measure::pipeline::PipelineBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(bench.records > 0, "--records must be at least 1");
    anyhow::ensure!(bench.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        [bench.latency_rate, bench.latency_seconds]
            .iter()
            .all(|value| value.is_finite() && *value > 0.0),
        "--latency-rate and --latency-seconds must be positive numbers"
    );
    anyhow::ensure!(
        bench.latency_producer_linger_ms <= MAX_PRODUCER_LINGER_MS,
        "--latency-producer-linger-ms must be at most {MAX_PRODUCER_LINGER_MS}"
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (report, cleanup) = tokio.block_on(super::measure::pipeline::run(&bench))?;
    let growth = report
        .rounds
        .iter()
        .flat_map(|round| &round.pipelines)
        .any(|line| line.cost.peak_kind == PeakRss::Growth);
    outln!(
        "{}{}",
        if growth {
            "peak MiB: how much each run raised the process's peak RSS (VmHWM could not be reset here)"
        } else {
            "peak MiB: each run's own peak RSS (VmHWM, reset before the run)"
        },
        if report.rounds.len() > 1 {
            "; the least of the rounds, as heap left by earlier runs raises later ones"
        } else {
            ""
        }
    )?;
    outln!(
        "the Kafka sink writes with compression {}",
        bench.kafka_sink_compression
    )?;
    outln!(
        "{:<44} {:>10} {:>8} {:>9} {:>8} {:>15} {:>9} {:>15} {:>18}",
        "pipeline",
        "records/s",
        "ceiling",
        "baseline",
        "CPU-s/M",
        "plugin CPU-s/M",
        "peak MiB",
        "broker CPU-s/M",
        "Cassandra CPU-s/M"
    )?;
    let summaries = summarize(&report);
    for row in &summaries {
        outln!(
            "{:<44} {:>10.0} {:>8} {:>9} {:>8.1} {:>15} {:>9.1} {:>15} {:>18}",
            row.name,
            row.per_second,
            ratio(row.of_ceiling),
            ratio(row.of_baseline),
            row.cpu_per_million,
            optional(row.plugin_per_million),
            row.peak_mib,
            optional(row.broker_per_million),
            optional(row.cassandra_per_million),
        )?;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let cost = &report.latency_cost;
    outln!(
        "kafka -> user-profile -> cassandra latency at {} records/s (producer linger {} ms): p50 {:.1} ms, p99 {:.1} ms ({} samples), {:.1} CPU-s/M, peak {:.1} MiB, broker {} CPU-s/M, Cassandra {} CPU-s/M",
        bench.latency_rate,
        bench.latency_producer_linger_ms,
        ms(report.latency(0.5)),
        ms(report.latency(0.99)),
        report.latencies.len(),
        cost.cpu_per_million(),
        cost.peak_mib(),
        optional(cost.broker_per_million()),
        optional(cost.cassandra_per_million()),
    )?;
    let stages = &report.latency_stages;
    outln!(
        "  of which in weir (per batch, bucketed): read to acknowledged p50 {:.1} ms, p99 {:.1} ms; sink write p99 {:.1} ms",
        stages.batch_p50 * 1000.0,
        stages.batch_p99 * 1000.0,
        stages.sink_write_p99 * 1000.0,
    )?;
    let waits: Vec<String> = stages
        .stage_p99
        .iter()
        .map(|(stage, p99)| format!("{} {:.1} ms", stage.as_str(), p99 * 1000.0))
        .collect();
    outln!(
        "  p99 per stage besides the write (per batch, bucketed): {}",
        waits.join(", ")
    )?;
    outln!(
        "  the Cassandra node completed {} memtable flush{} during the run (of any table, after the tables the runs above wrote were emptied)",
        report.latency_flushes,
        if report.latency_flushes == 1 {
            ""
        } else {
            "es"
        }
    )?;
    let percent = |share: f64| format!("{:.2}%", share * 100.0);
    let slow: Vec<String> = [
        ("read to acknowledged".to_owned(), stages.batch_slow),
        ("sink write".to_owned(), stages.sink_write_slow),
    ]
    .into_iter()
    .chain(
        stages
            .stage_slow
            .iter()
            .map(|(stage, share)| (stage.as_str().to_owned(), *share)),
    )
    .map(|(part, share)| format!("{part} {}", percent(share)))
    .collect();
    outln!(
        "  batches over {} ms (exact at a bucket bound): {}",
        super::measure::pipeline::SLOW_BATCH_SECONDS * 1000.0,
        slow.join(", ")
    )?;
    print_tail(&report.latency_tail)?;
    if report.rounds.len() > 1 {
        outln!(
            "ratios by round (the table shows their median; to the driver where a row has it, else to the ceiling):"
        )?;
        // The pipelines measured against a baseline: those after the ceiling, which is its own.
        let pipelines = report
            .rounds
            .first()
            .map_or(0, |round| round.pipelines.len());
        for row in summaries.iter().take(pipelines).skip(1) {
            let ratios: Vec<String> = row.ratios.iter().map(|r| format!("{r:.2}")).collect();
            outln!("  {}: {}", row.name, ratios.join(", "))?;
        }
    }
    outln!("{}", report.node_waits)?;
    outln!("{cleanup}")?;
    Ok(ExitCode::SUCCESS)
}

/// The table's rows: each pipeline (the ceiling first) and the driver over every round, then
/// the paced driver's single run against the driver's median.
fn summarize(report: &PipelineReportBench) -> Vec<Summary> {
    let rounds = &report.rounds;
    let ceilings: Vec<f64> = rounds.iter().map(Round::ceiling).collect();
    let drivers: Vec<f64> = rounds.iter().map(|round| round.driver.per_second).collect();
    let pipelines = rounds.first().map_or(0, |round| round.pipelines.len());
    let mut rows: Vec<Summary> = (0..pipelines)
        .map(|index| {
            let runs: Vec<&ThroughputLine> =
                rounds.iter().map(|round| &round.pipelines[index]).collect();
            // Only the Cassandra pipeline, the last, has the driver as its baseline.
            let baseline = (index + 1 == pipelines).then_some(drivers.as_slice());
            Summary::of(&runs, Some(&ceilings), baseline)
        })
        .collect();
    let driver_runs: Vec<&ThroughputLine> = rounds.iter().map(|round| &round.driver).collect();
    rows.push(Summary::of(&driver_runs, None, Some(&drivers)));
    let median_driver = median(drivers.iter().copied());
    rows.push(Summary::of(
        &[&report.paced_driver],
        None,
        Some(&[median_driver]),
    ));
    rows
}

/// A ratio column: [`ratio_text`], or `-` where the row has no such baseline.
fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), ratio_text)
}

/// A ratio with two decimals, or two significant digits below 0.1 (an interpreted plugin runs
/// at a few thousandths of native, which two decimals print as `0.00`).
fn ratio_text(value: f64) -> String {
    if value >= 0.1 || value <= 0.0 || !value.is_finite() {
        return format!("{value:.2}");
    }
    // 0.0033 has its first significant digit in the third decimal: show the fourth too.
    let decimals = 1 - value.log10().floor() as i32;
    format!("{value:.*}", usize::try_from(decimals).unwrap_or(2))
}

/// A measurement that may be absent (`-`), one decimal.
fn optional(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// Produces `count` generated users to `topic` at `rate` records/s (the pipeline benchmark's
/// latency-run producer, run as its own process).
pub fn produce(
    brokers: &str,
    topic: &str,
    count: usize,
    rate: f64,
    seed: u64,
    linger_ms: u64,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "--rate must be a positive number"
    );
    anyhow::ensure!(
        linger_ms <= MAX_PRODUCER_LINGER_MS,
        "--linger-ms must be at most {MAX_PRODUCER_LINGER_MS}"
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(super::measure::pipeline::produce(
        brokers,
        topic,
        count,
        seed,
        Some(super::measure::pipeline::Pace {
            per_second: rate,
            linger_ms,
        }),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the failover benchmark.
pub fn failover(
    brokers: String,
    members: usize,
    partitions: i32,
    rate: f64,
    session_timeout_ms: Option<u64>,
    keep: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(members >= 2, "--members must be at least 2");
    anyhow::ensure!(
        partitions as usize >= members,
        "--partitions must be at least --members"
    );
    anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be positive");
    let bench = super::measure::failover::FailoverBench {
        brokers,
        weir: std::env::current_exe().context("cannot find the weir binary")?,
        members,
        partitions,
        rate,
        session_timeout_ms,
        keep,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!(
        "{members} members over {partitions} partitions at {rate} records/s; killing one (SIGKILL)..."
    );
    let (lines, cleanups) = tokio.block_on(super::measure::failover::run(&bench))?;
    let s = |d: Duration| d.as_secs_f64();
    outln!(
        "{:<10} {:<18} {:>20} {:>22} {:>26}",
        "membership",
        "killed partitions",
        "their wait (s)",
        "others' longest gap (s)",
        "longest gap, steady (s)"
    )?;
    for line in &lines {
        outln!(
            "{:<10} {:<18} {:>20.2} {:>22.2} {:>26.2}",
            line.membership,
            format!("{:?}", line.killed_partitions),
            s(line.waited),
            s(line.others_longest_gap),
            s(line.steady_longest_gap)
        )?;
    }
    for cleanup in &cleanups {
        outln!("{cleanup}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// How many stalls of a latency run's tail are listed one by one.
const STALLS_LISTED: usize = 8;

/// The latency run's records over the goal, and the stalls they came in: one long stop of a
/// store, many short ones, or the run's first records.
fn print_tail(tail: &Tail) -> Result<(), StdoutError> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let slow = tail.slow_records();
    outln!(
        "  records over {:.0} ms end to end: {slow} of {} ({:.2}%), in {} stall{} (slow records created within {:.0} ms of each other), {} of them created in the run's first second",
        ms(tail.threshold),
        tail.records,
        slow as f64 * 100.0 / tail.records.max(1) as f64,
        tail.stalls.len(),
        if tail.stalls.len() == 1 { "" } else { "s" },
        ms(STALL_GAP),
        tail.slow_within(Duration::from_secs(1)),
    )?;
    if tail.stalls.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = tail
        .stalls
        .iter()
        .take(STALLS_LISTED)
        .map(|stall| {
            let wall = chrono::DateTime::from_timestamp_millis(stall.created_ms)
                .map_or_else(String::new, |t| t.format(" (%H:%M:%S%.3f UTC)").to_string());
            format!(
                "at {:.1} s{wall} {} record{} up to {:.0} ms",
                tail.starts_after(stall).as_secs_f64(),
                stall.records,
                if stall.records == 1 { "" } else { "s" },
                ms(stall.worst)
            )
        })
        .collect();
    let more = tail.stalls.len().saturating_sub(STALLS_LISTED);
    outln!(
        "  stalls by the time their first slow record was created: {}{}",
        listed.join(", "),
        if more > 0 {
            format!(", and {more} more")
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::ratio_text;

    #[test]
    fn a_ratio_keeps_two_significant_digits_below_a_tenth() {
        assert_eq!(ratio_text(0.6543), "0.65");
        assert_eq!(ratio_text(1.25), "1.25");
        assert_eq!(ratio_text(0.0033), "0.0033");
        assert_eq!(ratio_text(0.0172), "0.017");
        assert_eq!(ratio_text(0.0), "0.00");
    }
}
