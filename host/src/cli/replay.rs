//! `weir replay`: sends dead letters back through a pipeline's plugins (on whatever versions are
//! live in the registry folder now) into its sink. A replay is an ordinary pipeline run whose
//! source is the dead-letter destination (`weir::connectors::replay`), so batching, retries,
//! dead letters and commits-after-acknowledgement are the pipeline's own.

use super::stdout::outln;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weir::config::{PipelineConfig, PipelineFile};
use weir::connectors::replay::{
    self, Cursor, DeadLetterSource, Entry, Filter, ReplayCounters, Step,
};
use weir::pipeline::{self, Connectors, PipelineStats};
use weir::record::{RecordErrorKind, headers};
use weir::registry::{Deployer, PluginRegistry, PluginSlots};
use weir::runtime::{CompiledCache, PluginRuntime};

/// The options of `weir replay`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct ReplayArgs {
    /// The pipeline file (TOML) that names the pipeline, its plugins, its sink and its
    /// dead-letter destination.
    #[arg(long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// The pipeline whose dead letters are replayed; may be left out when the file has one.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Only dead letters of these error kinds (repeatable or comma-separated): bad-record,
    /// plugin-failure, trap, timeout, malformed, sink-rejected.
    #[arg(long = "kind", value_name = "KIND", value_delimiter = ',', value_parser = parse_kind)]
    pub kinds: Vec<String>,
    /// Only dead letters failed by these plugins (repeatable or comma-separated).
    #[arg(long = "plugin", value_name = "NAME", value_delimiter = ',')]
    pub plugins: Vec<String>,
    /// Only dead letters failed by these plugin versions (the sha256 prefix in
    /// `weir.plugin.version`; any prefix of it matches).
    #[arg(long = "plugin-version", value_name = "VERSION", value_delimiter = ',')]
    pub versions: Vec<String>,
    /// Only dead letters from this time on: RFC 3339 (`2026-12-01T10:00:00Z`) or milliseconds
    /// since the Unix epoch. A PostgreSQL table's time is when the row was written; a Kafka
    /// topic's is the message time and a file's the envelope's `timestamp`.
    #[arg(long, value_name = "TIME", value_parser = weir::record::parse_time)]
    pub since: Option<i64>,
    /// Only dead letters before this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = weir::record::parse_time)]
    pub until: Option<i64>,
    /// Count and show what would be replayed; write nothing, mark nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run, how many entries to print (one JSON object per line on stdout).
    #[arg(long, value_name = "COUNT", default_value_t = 20)]
    pub show: usize,
    /// Where the replay keeps its progress in a Kafka topic: the consumer group (default
    /// `weir-replay-PIPELINE`). Another group replays the topic afresh.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Where the replay keeps its progress in a dead-letter file: the checkpoint file (default
    /// `FILE.replay-PIPELINE.checkpoint` beside it).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// The plugin registry folder, holding `NAME.wasm` files.
    #[arg(long = "plugins", value_name = "DIR", env = "WEIR_PLUGINS", default_value = weir::registry::DEFAULT_DIR)]
    pub plugins_dir: PathBuf,
    /// Where compiled plugins are cached (as `weir run --cache-dir`).
    #[arg(long, value_name = "DIR", env = "WEIR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
How it works:
  The dead letters of the pipeline's dead-letter destination (a file, a Kafka topic or a
  PostgreSQL table) that the filters select are turned back into the records that failed (key,
  value, headers, timestamp; the original source coordinates go in weir.origin.* headers) and
  sent through the pipeline's plugins, as they are live in the registry folder now, into the
  pipeline's sink. A record a plugin failed re-enters the chain at the step that failed it
  (weir.step: NAME, or NAME#2 for a plugin's second use); one the sink refused goes straight to
  the sink. An older entry without weir.step, failed by a plugin the chain uses more than once,
  is not replayed (which use failed it is unknown) and is counted apart. Records that fail
  again go to the dead-letter destination with the new reason, and wait for the next replay.

  Only the entries present when the replay starts are read. Progress is committed only after
  the sink and the dead-letter destination acknowledged, so an interrupted replay resumes and
  no entry is replayed twice: a Kafka topic keeps it in the consumer group --group, a file in
  the checkpoint file --checkpoint, a PostgreSQL table in its replayed_at column (added if
  missing). A group or checkpoint is a position: entries a filter passed over before the last
  replayed one are not read again with it; replay them with another --group or --checkpoint.

Examples:
  weir replay --config pipelines.toml --pipeline users --dry-run
  weir replay --config pipelines.toml --pipeline users --kind bad-record --plugin user-profile
";

/// The error kinds a dead letter can carry (`weir.error.kind`), in the order `--help` lists them.
const KINDS: [RecordErrorKind; 6] = [
    RecordErrorKind::BadRecord,
    RecordErrorKind::PluginFailure,
    RecordErrorKind::Trap,
    RecordErrorKind::Timeout,
    RecordErrorKind::Malformed,
    RecordErrorKind::SinkRejected,
];

/// A kind for --kind: one of [`KINDS`], so a misspelt one is refused rather than matching
/// nothing.
fn parse_kind(text: &str) -> Result<String, String> {
    // A new kind must be added to KINDS: this match stops compiling until it is.
    let _ = |kind: RecordErrorKind| match kind {
        RecordErrorKind::BadRecord
        | RecordErrorKind::PluginFailure
        | RecordErrorKind::Trap
        | RecordErrorKind::Timeout
        | RecordErrorKind::Malformed
        | RecordErrorKind::SinkRejected => (),
    };
    let text = text.trim();
    if KINDS.iter().any(|kind| kind.as_str() == text) {
        return Ok(text.to_owned());
    }
    let names: Vec<&str> = KINDS.iter().map(|kind| kind.as_str()).collect();
    Err(format!(
        "`{text}` is not an error kind; the kinds are {}",
        names.join(", ")
    ))
}

/// What the summary says of dead letters whose step in the chain is unknown.
const UNKNOWN_STEP: &str = "failed by a plugin the chain uses more than once, without the weir.step header that says which use: not replayed (the warnings name each one); the records are in the source at the coordinates in their headers";

/// The exit code of a replay stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
const INTERRUPTED: u8 = 130;

/// One pass of a replay: the dead letters that re-enter the chain at `step`.
struct Pass {
    step: usize,
    /// The plugins the records go through.
    config: PipelineConfig,
    cursor: Cursor,
}

/// The pipeline `wanted` of `file`, or its only one.
fn pick(file: &Path, config: PipelineFile, wanted: Option<&str>) -> anyhow::Result<PipelineConfig> {
    let names: Vec<String> = config.pipelines.iter().map(|p| p.name.clone()).collect();
    match wanted {
        Some(name) => config
            .pipelines
            .into_iter()
            .find(|p| p.name == name)
            .with_context(|| {
                format!(
                    "{}: no pipeline `{name}`; it has {}",
                    file.display(),
                    names.join(", ")
                )
            }),
        None if names.len() == 1 => {
            Ok(config.pipelines.into_iter().next().context("no pipeline")?)
        }
        None => bail!(
            "{} has {} pipelines ({}); pick one with --pipeline",
            file.display(),
            names.len(),
            names.join(", ")
        ),
    }
}

/// The passes of a replay of `config`: one per chain step a dead letter can re-enter at (the
/// last one, past every plugin, is the sink). Each keeps its own progress, named by the step's
/// label (`-from-filter#2` for a plugin's second use); the first keeps the default name.
fn passes(config: &PipelineConfig, args: &ReplayArgs) -> Vec<Pass> {
    let steps = config.transforms.len();
    let labels = pipeline::step_labels(config.transforms.iter().map(|t| t.plugin.as_str()));
    (0..=steps)
        .map(|step| {
            let suffix = match step {
                0 => String::new(),
                s if s == steps => "-sink".to_owned(),
                s => format!("-from-{}", labels[s]),
            };
            let mut cursor = Cursor::default_for(&config.name, &config.dead_letter, &suffix);
            if let Some(group) = &args.group {
                cursor.group = format!("{group}{suffix}");
            }
            if let Some(checkpoint) = &args.checkpoint {
                let mut path = checkpoint.clone().into_os_string();
                path.push(&suffix);
                cursor.checkpoint = path.into();
            }
            let mut pass_config = config.clone();
            pass_config.transforms = config.transforms[step..].to_vec();
            Pass {
                step,
                config: pass_config,
                cursor,
            }
        })
        .collect()
}

/// Runs `weir replay`.
pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    check_times(args.since, args.until)?;
    let file = PipelineFile::load(&args.config)?;
    let config = pick(&args.config, file, args.pipeline.as_deref())?;
    let filter = Filter {
        pipeline: Some(config.name.clone()),
        kinds: args.kinds.clone(),
        plugins: args.plugins.clone(),
        versions: args.versions.clone(),
        since: args.since,
        until: args.until,
        step: None,
        chain: config
            .transforms
            .iter()
            .zip(pipeline::step_labels(
                config.transforms.iter().map(|t| t.plugin.as_str()),
            ))
            .map(|(transform, label)| Step {
                plugin: transform.plugin.clone(),
                label,
            })
            .collect(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-io")
        .build()
        .context("cannot start the async runtime")?;
    let passes = passes(&config, &args);
    if args.dry_run {
        return runtime.block_on(dry_run(&config, &passes, &filter, args.show));
    }
    let slots = deploy(&args, &config)?;
    runtime.block_on(run(&config, passes, filter, slots))
}

/// Refuses a --since at or after --until: the window `since <= time < until` would be empty.
fn check_times(since: Option<i64>, until: Option<i64>) -> anyhow::Result<()> {
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        bail!(
            "--since ({}) is not before --until ({}): no dead letter is both; give a --since earlier than --until",
            show_time(since),
            show_time(until)
        );
    }
    Ok(())
}

/// A time as RFC 3339 (milliseconds since the epoch when out of range).
fn show_time(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map_or_else(|| millis.to_string(), |time| time.to_rfc3339())
}

/// Deploys the plugins the pipeline uses from the registry folder, as `weir run` would.
fn deploy(args: &ReplayArgs, config: &PipelineConfig) -> anyhow::Result<PluginSlots> {
    let cache = args
        .cache_dir
        .clone()
        .or_else(weir::runtime::default_cache_dir)
        .map(CompiledCache::new);
    let slots = PluginSlots::default();
    let only = PipelineFile {
        pipelines: vec![config.clone()],
    };
    let deployer = Deployer::new(
        PluginRegistry::new(&args.plugins_dir),
        PluginRuntime::new(cache)?,
        slots.clone(),
        &only,
    );
    let names: Vec<String> = deployer.used_plugins().map(String::from).collect();
    for name in &names {
        deployer
            .deploy(name)
            .with_context(|| format!("{}: plugin `{name}`", args.config.display()))?;
    }
    for slot in slots.describe() {
        tracing::info!(plugin = %slot.name, version = %slot.current.version, "Plugin version the replay runs.");
    }
    Ok(slots)
}

/// `--dry-run`: reads every selected entry, prints the first `show`, and counts them by error
/// kind and plugin version. Nothing is written or marked.
async fn dry_run(
    config: &PipelineConfig,
    passes: &[Pass],
    filter: &Filter,
    show: usize,
) -> anyhow::Result<ExitCode> {
    let mut selected = 0u64;
    let mut scanned = 0u64;
    let mut excerpts = 0u64;
    let mut unknown_step = 0u64;
    let mut by_reason: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for pass in passes {
        let mut reader = replay::open(&config.dead_letter, &pass.cursor, true).await?;
        let pass_filter = Filter {
            step: Some(pass.step),
            ..filter.clone()
        };
        while let Some(entries) = reader.read(config.batch.size).await? {
            // Every pass reads the whole store; the first one's count is the store's.
            if pass.step == 0 {
                scanned += entries.len() as u64;
            }
            for entry in entries.iter().filter(|e| pass_filter.matches(e)) {
                if entry.is_excerpt() {
                    excerpts += 1;
                    continue;
                }
                if let Err(reason) = pass_filter.step_of(entry) {
                    unknown_step += 1;
                    if unknown_step <= show as u64 {
                        eprintln!(
                            "dead letter at {}/{}@{} cannot be replayed: {reason}",
                            entry.position.stream, entry.position.partition, entry.position.offset
                        );
                    }
                    continue;
                }
                if selected < show as u64 {
                    outln!("{}", describe(entry, &pass.config))?;
                }
                selected += 1;
                let text = |name| entry.header(name).unwrap_or("-").to_owned();
                *by_reason
                    .entry((
                        text(headers::ERROR_KIND),
                        // The step tells apart the uses of a plugin the chain repeats.
                        entry
                            .header(headers::STEP)
                            .or(entry.header(headers::PLUGIN))
                            .unwrap_or("-")
                            .to_owned(),
                        text(headers::PLUGIN_VERSION),
                    ))
                    .or_default() += 1;
            }
        }
    }
    outln!(
        "dry run: would replay {selected} of {scanned} dead letter(s) in {} through pipeline `{}`",
        config.dead_letter.describe(),
        config.name
    )?;
    for ((kind, plugin, version), count) in &by_reason {
        outln!("  {count:>8}  {kind}  plugin {plugin}  version {version}")?;
    }
    if excerpts > 0 {
        outln!(
            "  {excerpts:>8}  keep only an excerpt of their record and cannot be replayed; the records are in the source at the coordinates in their headers"
        )?;
    }
    if unknown_step > 0 {
        outln!("  {unknown_step:>8}  {UNKNOWN_STEP}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One entry as `--dry-run` prints it.
fn describe(entry: &Entry, pass: &PipelineConfig) -> serde_json::Value {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    serde_json::json!({
        "at": {
            "stream": &*entry.position.stream,
            "partition": entry.position.partition,
            "offset": entry.position.offset,
        },
        "time": entry.time,
        "kind": entry.header(headers::ERROR_KIND),
        "error": entry.header(headers::ERROR),
        "plugin": entry.header(headers::PLUGIN),
        "step": entry.header(headers::STEP),
        "version": entry.header(headers::PLUGIN_VERSION),
        "key": entry.record.key.as_deref().map(text),
        "value": text(&entry.record.value),
        "through": pass.transforms.iter().map(|t| t.plugin.as_str()).collect::<Vec<_>>(),
    })
}

/// Runs each pass as a pipeline over the dead letters, one after another.
async fn run(
    config: &PipelineConfig,
    passes: Vec<Pass>,
    filter: Filter,
    slots: PluginSlots,
) -> anyhow::Result<ExitCode> {
    let shutdown = Arc::new(tokio::sync::watch::channel(false).0);
    {
        let shutdown = Arc::clone(&shutdown);
        // Caught from here on (not from the task's first poll).
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("catching Ctrl-C")?;
        tokio::spawn(async move {
            if interrupt.recv().await.is_some() {
                tracing::info!(
                    "Interrupted; finishing the batches in flight, then stopping. Run the replay again to resume."
                );
                shutdown.send_replace(true);
            }
        });
    }
    let started = Instant::now();
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64);
    // Every pass's reader opens before any runs, so each sees the store as it was at the start:
    // what fails again during the replay waits for the next one.
    let mut opened = Vec::with_capacity(passes.len());
    for pass in passes {
        let reader = replay::open(&config.dead_letter, &pass.cursor, false)
            .await
            .with_context(|| format!("pipeline `{}`", config.name))?;
        opened.push((pass, reader));
    }
    for (pass, reader) in opened {
        if *shutdown.borrow() {
            break;
        }
        let remaining = reader.remaining();
        if remaining == 0 {
            continue;
        }
        let chain = {
            let (pass_config, slots) = (pass.config.clone(), slots.clone());
            // Labelled as the steps of the whole chain, so a record that fails again at
            // `filter#2` is dead-lettered as failed there.
            let before: Vec<String> = config.transforms[..pass.step]
                .iter()
                .map(|t| t.plugin.clone())
                .collect();
            tokio::task::spawn_blocking(move || {
                let before: Vec<&str> = before.iter().map(String::as_str).collect();
                pipeline::build_chain(&pass_config, &slots).map(|chain| chain.after(&before))
            })
            .await
            .context("building the plugin chain")??
        };
        let counters = Arc::new(ReplayCounters::default());
        let source = DeadLetterSource::new(
            reader,
            Filter {
                step: Some(pass.step),
                ..filter.clone()
            },
            Arc::clone(&counters),
        );
        let sink = config
            .sink
            .build(false)
            .await
            .with_context(|| format!("pipeline `{}`: sink", config.name))?;
        let dead_letter = config
            .dead_letter
            .build(true)
            .await
            .with_context(|| format!("pipeline `{}`: dead-letter destination", config.name))?;
        let through: Vec<&str> = pass
            .config
            .transforms
            .iter()
            .map(|t| t.plugin.as_str())
            .collect();
        tracing::info!(
            pipeline = %config.name,
            dead_letters = %config.dead_letter.describe(),
            entries = remaining,
            through = ?through,
            sink = %config.sink.describe(),
            "Replay pass started."
        );
        let stats = Arc::new(PipelineStats::new(&config.name));
        let label = if through.is_empty() {
            format!("replay {} into the sink", config.name)
        } else {
            format!("replay {} through {}", config.name, through.join(" > "))
        };
        let (done, finished) = tokio::sync::oneshot::channel();
        let progress = tokio::spawn(show_progress(
            label,
            remaining,
            Arc::clone(&counters),
            Arc::clone(&stats),
            config.name.clone(),
            finished,
        ));
        let result = pipeline::run_with(
            pass.config,
            Connectors {
                source: Box::new(source),
                sink,
                dead_letter,
            },
            chain,
            Arc::clone(&stats),
            shutdown.subscribe(),
        )
        .await;
        let _ = done.send(());
        let _ = progress.await;
        let report = result?;
        let excerpts = counters.excerpts.load(Ordering::Relaxed);
        let unknown_step = counters.unknown_step.load(Ordering::Relaxed);
        tracing::info!(
            pipeline = %config.name,
            scanned = counters.scanned.load(Ordering::Relaxed),
            replayed = report.records_in,
            written = report.records_out,
            failed_again = report.dead_lettered,
            excerpts,
            unknown_step,
            "Replay pass finished."
        );
        totals.0 += report.records_in;
        totals.1 += report.records_out;
        totals.2 += report.dead_lettered;
        totals.3 += excerpts;
        totals.4 += unknown_step;
    }
    let (replayed, written, failed, excerpts, unknown_step) = totals;
    eprintln!("replay of pipeline {}", config.name);
    eprintln!("  replayed         {replayed:>12}");
    eprintln!("  written to sink  {written:>12}");
    eprintln!("  failed again     {failed:>12}  (back in the dead-letter destination)");
    if excerpts > 0 {
        eprintln!("  excerpts skipped {excerpts:>12}  (the records are in the source)");
    }
    if unknown_step > 0 {
        eprintln!("  step unknown     {unknown_step:>12}  ({UNKNOWN_STEP})");
    }
    eprintln!(
        "  took             {:>12.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(finish(*shutdown.borrow()))
}

/// How a replay ends: success, or when Ctrl-C stopped it, a non-zero code and what to do.
fn finish(interrupted: bool) -> ExitCode {
    if interrupted {
        eprintln!(
            "interrupted: the replay stopped before its end; run the same command again to resume where it stopped (what was replayed is not replayed again)"
        );
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Advances a progress bar (plain lines off a terminal) with the entries read, and says how
/// many were replayed and failed again.
async fn show_progress(
    label: String,
    total: u64,
    counters: Arc<ReplayCounters>,
    stats: Arc<PipelineStats>,
    pipeline: String,
    mut finished: tokio::sync::oneshot::Receiver<()>,
) {
    let task = weir::progress::start(&label, Some(total), "dead letters");
    let mut shown = 0;
    loop {
        let done = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => false,
            _ = &mut finished => true,
        };
        let scanned = counters.scanned.load(Ordering::Relaxed).min(total);
        let report = stats.snapshot(&pipeline);
        let message = format!(
            "{} replayed, {} failed again",
            report.records_in, report.dead_lettered
        );
        task.advance(scanned - shown, &message);
        shown = scanned;
        if done {
            task.finish(&message);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_one_of_the_record_error_kinds() {
        for kind in [
            "bad-record",
            "plugin-failure",
            "trap",
            "timeout",
            "malformed",
            "sink-rejected",
        ] {
            assert_eq!(parse_kind(kind).as_deref(), Ok(kind));
        }
        let error = parse_kind("bad_record").unwrap_err();
        assert!(
            error.contains("`bad_record`")
                && error.contains(
                    "bad-record, plugin-failure, trap, timeout, malformed, sink-rejected"
                ),
            "{error}"
        );
    }

    #[test]
    fn since_must_come_before_until() {
        check_times(Some(1000), Some(2000)).unwrap();
        check_times(Some(1000), None).unwrap();
        check_times(None, Some(1000)).unwrap();
        for (since, until) in [(1000, 1000), (2000, 1000)] {
            let error = check_times(Some(since), Some(until))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("--since") && error.contains("1970-01-01T00:00:01"),
                "{error}"
            );
        }
    }

    #[test]
    fn an_interrupted_replay_exits_with_130() {
        assert_eq!(finish(true), ExitCode::from(130));
        assert_eq!(finish(false), ExitCode::SUCCESS);
    }
}
