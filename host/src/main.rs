//! The `weir` command line: parses arguments, sets up logging, and hands each subcommand to its
//! module under `cli/`. All IO and plugin work lives in the library.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Weir runs stream pipelines whose IO is native and whose transforms are WebAssembly plugins.
///
/// A pipeline file (TOML) names a source, a chain of plugins, a sink and a dead-letter
/// destination. Plugins are components in the registry folder (`plugin-registry/` by default),
/// built from Rust, Python or JavaScript projects with `weir plugin build`; a fleet of processes
/// shares a registry in a Kafka topic instead (`weir plugin publish`, `weir run --registry`).
#[derive(Debug, Parser)]
#[command(name = "weir", version, propagate_version = true)]
struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WEIR_LOG_FORMAT", global = true)]
    log_format: LogFormat,

    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `weir=debug`).
    #[arg(long, default_value = "info", env = "WEIR_LOG", global = true)]
    log: String,

    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where plugins are found.
#[derive(Debug, clap::Args)]
struct PluginsDir {
    /// The plugin registry folder, holding `NAME.wasm` files.
    #[arg(long = "plugins", value_name = "DIR", env = "WEIR_PLUGINS", default_value = weir::registry::DEFAULT_DIR)]
    dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipelines of a pipeline file until their sources end or Ctrl-C / SIGTERM.
    ///
    /// On shutdown, batches in flight are finished, written and committed before exit; a second
    /// signal does not abort that. Prints a summary per pipeline: records in, out,
    /// dead-lettered, and throughput.
    Run {
        /// The pipeline file (TOML).
        file: PathBuf,
        #[command(flatten)]
        plugins: PluginsDir,
        /// Take plugins from the fleet's registry in Kafka instead of the folder: the latest
        /// published version of each at start, then every version published or rolled back while
        /// running (with the folder watcher's checks). Also writes this process's heartbeat to
        /// TOPIC.fleet for `weir plugin list --registry`.
        #[arg(long, value_name = "kafka://BROKERS/TOPIC", env = "WEIR_REGISTRY", value_parser = parse_registry)]
        registry: Option<weir::registry::kafka::RegistryAddress>,
        #[command(flatten)]
        registry_properties: RegistryProperties,
        #[command(flatten)]
        admin: AdminAddr,
        /// Another `Host` name the admin API answers to (repeatable, or comma-separated in the
        /// variable), e.g. `weir` or `weir.internal:9620` when it is reached through a proxy or
        /// a container network. Loopback names and the bound address always work; any other
        /// Host is refused, which defeats DNS rebinding.
        #[arg(
            long = "admin-host",
            value_name = "HOST",
            env = "WEIR_ADMIN_HOSTS",
            value_delimiter = ','
        )]
        admin_hosts: Vec<String>,
        /// Do not serve the admin API.
        #[arg(long)]
        no_admin: bool,
        /// Do not deploy plugins dropped into the folder while running.
        #[arg(long)]
        no_watch: bool,
        /// Quiet time, in milliseconds, a plugin file needs before it is loaded; lets writers
        /// finish.
        #[arg(long, default_value_t = 200, value_name = "MS")]
        debounce_ms: u64,
        /// Where compiled plugins are cached across restarts (default: $XDG_CACHE_HOME/weir, else
        /// ~/.cache/weir). Must be private to this user (weir creates it 0700): its entries are
        /// native code, each authenticated with a key kept there.
        #[arg(long, value_name = "DIR", env = "WEIR_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Compile every plugin at start instead of using the compiled cache.
        #[arg(long)]
        no_cache: bool,
        /// Records a newly deployed version is watched for automatic rollback.
        #[arg(long, default_value_t = 200, value_name = "RECORDS")]
        rollback_window: u64,
        /// Share of records (0 to 1) within the window that the new version itself failed
        /// (plugin failures, traps, timeouts; not `bad-record`, which is the input's fault) above
        /// which it is rolled back automatically.
        #[arg(long, default_value_t = 0.5, value_name = "SHARE", value_parser = parse_share)]
        rollback_threshold: f64,
        /// Do not print the one-line live summary per pipeline (records/s, lag, dead letters)
        /// every few seconds; it is printed only on a terminal with text logs anyway.
        #[arg(long)]
        no_summary: bool,
        #[command(flatten)]
        component_limits: ComponentLimitArgs,
    },
    /// Check a pipeline file without running it: schema, values, plugins present, compiled,
    /// type-checked, and their `init` accepting the config.
    Validate {
        /// The pipeline file (TOML).
        file: PathBuf,
        #[command(flatten)]
        plugins: PluginsDir,
        /// Check the plugins published in the fleet's registry in Kafka instead of the folder's.
        #[arg(long, value_name = "kafka://BROKERS/TOPIC", env = "WEIR_REGISTRY", value_parser = parse_registry)]
        registry: Option<weir::registry::kafka::RegistryAddress>,
        #[command(flatten)]
        registry_properties: RegistryProperties,
        /// The limits `weir run` would be given, so a plugin it runs is not refused here.
        #[command(flatten)]
        component_limits: ComponentLimitArgs,
    },
    /// Print sample records leaving a stage of a running pipeline, one JSON object per line.
    ///
    /// Connects to the admin API of a running `weir run`. Each line carries the pipeline, the
    /// stage, the key, the value (as JSON where it parses), the headers, the timestamp and the
    /// source coordinates. At most `--max-per-second` records are printed each second; how many
    /// were left out is reported on stderr. Stops after `--count` records, or on Ctrl-C.
    Tap {
        /// The pipeline to watch.
        pipeline: String,
        /// The stage: `source` (before any plugin), a plugin's name (its outputs), `sink` (what
        /// the sink acknowledged) or `dead_letter`.
        #[arg(long, default_value = "sink")]
        stage: String,
        /// Stop after this many records.
        #[arg(long, value_name = "COUNT")]
        count: Option<u64>,
        /// Records per second printed at most; the rest are sampled away.
        #[arg(long, default_value_t = 100, value_name = "N")]
        max_per_second: u32,
        #[command(flatten)]
        admin: AdminAddr,
    },
    /// Send dead letters back through a pipeline's plugins, as they are now, into its sink.
    ///
    /// Reads the pipeline's dead-letter destination (a file, a Kafka topic or a PostgreSQL
    /// table), selects entries by error kind, plugin, plugin version and time, and replays the
    /// original records; records that fail again go back to the dead-letter destination with
    /// the new reason. Resumable, and no entry is replayed twice.
    Replay(cli::replay::ReplayArgs),
    /// Create, build, test and publish plugins; list, stage, promote, abort and roll back running ones.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Measure Weir against baselines run in the same process.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// A Wasm plugin against the same logic compiled natively.
    ///
    /// Runs a `user-profile` plugin (by default the Rust one; give the name or path of its
    /// Python or JavaScript twin to measure those) and the native Rust build on the same
    /// randomuser.me-shaped records, for batches of 1, 64 and 1024 records, and prints records
    /// per second, the Wasm/native ratio, and the plugin's first-load (compile) and
    /// compiled-cache load times. Native and Wasm alternate in 8 rounds per batch size, so a
    /// busy neighbour slows both alike; the ratio is the median round's, printed with the
    /// lowest and highest round's. Last, what the epoch deadlines cost at batch 1024, measured
    /// the same way against the plugin compiled without them.
    Plugin {
        /// The plugin to measure: a name in the registry folder or a path to a `.wasm` file.
        #[arg(default_value = "user-profile")]
        plugin: String,
        /// Distinct records generated for the run.
        #[arg(long, default_value_t = 4096)]
        records: usize,
        /// Seconds spent measuring each batch size on each side (native, Wasm), split over
        /// the 8 rounds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[command(flatten)]
        plugins: PluginsDir,
    },
    /// Hot-swap latency: from a component landing in the watched folder to the first record
    /// processed by the new version (p50, p99), and the longest pause in output during a swap.
    ///
    /// Streams generated users through `user-profile` and deploys a new version of it (same
    /// code, new content hash, so each swap compiles) SWAPS times.
    Swap {
        /// How many swaps to measure.
        #[arg(long, default_value_t = 20)]
        swaps: u32,
        /// The folder watcher's debounce, in milliseconds (as `weir run --debounce-ms`).
        #[arg(long, default_value_t = 200, value_name = "MS")]
        debounce_ms: u64,
        /// Records per second of the stream.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        #[command(flatten)]
        plugins: PluginsDir,
    },
    /// Consumer-group failover: how long a killed member's partitions wait, and how long the
    /// rest of the group pauses.
    ///
    /// Runs MEMBERS `weir run` processes in one group over a new topic with a steady produce
    /// rate, kills one with SIGKILL, and reports how long its partitions waited before records
    /// of each were written again, and the longest gap in the other partitions' output. Once
    /// with dynamic membership (another member takes over after the session timeout), once with
    /// static membership (the member restarts at once with the same `instance_id`).
    Failover {
        /// Kafka bootstrap servers.
        #[arg(long, env = "WEIR_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Members of the group.
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Records per second produced.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// The source's session_timeout_ms (default: the source's default).
        #[arg(long, value_name = "MS")]
        session_timeout_ms: Option<u64>,
        /// Keep each run's topic and scratch folder for inspection. By default they are removed
        /// when the run ends (its consumer group Kafka drops by itself once the killed members'
        /// sessions expire).
        #[arg(long)]
        keep: bool,
    },
    /// Whole pipelines over real Kafka and Cassandra, as ratios to a consumer that only reads.
    ///
    /// Pre-loads RECORDS users into a new topic, then drains it with: a read-only pipeline (the
    /// ceiling), user-profile into a blackhole, user-profile into another topic, and user-profile
    /// into Cassandra; the scylla driver alone then writes the same rows (the Cassandra
    /// pipeline's baseline). These five runs repeat `--rounds` times (3 by default), each
    /// ratio is taken between runs of the same round, and the table shows the medians, with
    /// each round's ratios listed below it. The driver then writes again, to new keys, no faster
    /// than the Cassandra pipeline did in its median round (what the node costs at that rate
    /// without weir); then the bench measures end-to-end latency (Kafka create time to
    /// Cassandra acknowledgement) at a steady produce rate, with a producer that hands over each
    /// record at its own time and lingers `--latency-producer-linger-ms` (5, its client's
    /// default) before sending, and `batch.linger_ms = 1`, and weir's own share of it
    /// from the pipeline's histograms. Each run reports weir's CPU-seconds per million
    /// records, the part of them spent inside plugin calls, and its peak RSS; with the pid
    /// files, the broker's and the Cassandra node's CPU-seconds too. Start the services with
    /// `scripts/services start`.
    /// Each run starts once the Cassandra node has no flush or compaction running or queued (read
    /// from `system_views.thread_pools`, at most 60 s), so that no run shares the cores with the
    /// node's housekeeping of the runs before it; the report says how long that took. Before
    /// the latency run the bench empties (TRUNCATE) the tables the runs before it wrote, so
    /// the node does not flush their rows during it; the report counts the flushes that still
    /// ran. The latency run's records over 15 ms end to end are grouped into stalls (slow
    /// records created within 200 ms of each other), each listed with its wall-clock time, to
    /// find it in the stores' logs. Everything the run creates on the services is removed when
    /// it ends, unless `--keep`.
    Pipeline {
        /// Kafka bootstrap servers.
        #[arg(long, env = "WEIR_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// A Cassandra contact point.
        #[arg(long, env = "WEIR_CASSANDRA_NODES", default_value = "127.0.0.1:9042")]
        cassandra: String,
        /// Records per throughput run.
        #[arg(long, default_value_t = 50_000)]
        records: usize,
        /// Rounds of the throughput runs: each ratio is taken within a round, and the table
        /// shows their median, so a machine whose speed drifts between rounds moves both sides
        /// of a ratio together. 1 runs each pipeline once.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Records per second during the latency run.
        #[arg(long, default_value_t = 2000.0)]
        latency_rate: f64,
        /// Seconds of the latency run.
        #[arg(long, default_value_t = 10.0)]
        latency_seconds: f64,
        /// The latency run's producer's `linger.ms`: how long it holds a record to send it with
        /// the next ones. 5 is librdkafka's default and the Java client's since Kafka 4.0; 0 sends
        /// each record in a request of its own, which costs the broker more CPU on the cores the
        /// pipeline shares. A record's latency counts from its send, so the linger is part of it.
        #[arg(long, value_name = "MS", default_value_t = 5)]
        latency_producer_linger_ms: u64,
        /// The `compression` of the Kafka sink in the kafka -> user-profile -> kafka run: lz4 is
        /// the sink's default; the others measure what a codec costs weir and the broker (which
        /// reads each batch it is sent to check it).
        #[arg(long, value_name = "CODEC", default_value = "lz4", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
        kafka_sink_compression: String,
        /// The Kafka broker's pid file (`scripts/services` keeps it in `.services/kafka/pid`), to
        /// report the broker's CPU time per run too.
        #[arg(long, value_name = "PATH")]
        broker_pid_file: Option<PathBuf>,
        /// The Cassandra node's pid file (`scripts/services` keeps it in
        /// `.services/cassandra/pid`), to report the node's CPU time in the runs that write to
        /// it: what each row cost the store in the pipeline's run and in the driver's.
        #[arg(long, value_name = "PATH")]
        cassandra_pid_file: Option<PathBuf>,
        /// Keep what the run created (its two topics, its consumer groups, its keyspace and its
        /// scratch folder with the dead letters) for inspection. By default they are removed
        /// when the run ends, measured or failed, and the last line of the report names them.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        plugins: PluginsDir,
    },
    /// Produces generated users to a topic at a steady rate: the producer of `weir bench
    /// pipeline`'s latency run, in its own process so that its CPU is not counted as weir's.
    #[command(hide = true)]
    Produce {
        /// Kafka bootstrap servers.
        #[arg(long, env = "WEIR_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// The topic (it must exist).
        #[arg(long)]
        topic: String,
        /// Records produced.
        #[arg(long)]
        count: usize,
        /// Records per second.
        #[arg(long)]
        rate: f64,
        /// The generator's seed.
        #[arg(long, default_value_t = 2)]
        seed: u64,
        /// The producer's `linger.ms` (librdkafka's default is 5; 0 sends each record alone).
        #[arg(long, value_name = "MS", default_value_t = 5)]
        linger_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Build a plugin (a Rust crate, a Python or a JavaScript project) into a wasm32-wasip2
    /// component and place `NAME.wasm` in the registry folder.
    ///
    /// NAME is the project's package name. The file is written under a temporary name and
    /// renamed into place, so a running host never loads half a file.
    Build {
        /// The plugin crate's folder.
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        plugins: PluginsDir,
    },
    /// List the plugins of a running weir (versions, history, swaps), or of the registry folder
    /// when none runs; with --registry, every published version of each plugin in the fleet's
    /// registry and which processes run which version.
    List {
        #[command(flatten)]
        plugins: PluginsDir,
        #[command(flatten)]
        admin: AdminAddr,
        /// The fleet's registry in Kafka.
        #[arg(long, value_name = "kafka://BROKERS/TOPIC", env = "WEIR_REGISTRY", value_parser = parse_registry)]
        registry: Option<weir::registry::kafka::RegistryAddress>,
        #[command(flatten)]
        registry_properties: RegistryProperties,
    },
    /// Validate a component as `weir run` would (contract version, type-check, `init` with its
    /// manifest's defaults) and publish it to the fleet's registry in Kafka.
    ///
    /// The component is split into chunks under the broker's message limit, in a compacted topic
    /// (created when missing) keyed so that every published version stays readable; every
    /// `weir run --registry` deploys it. At most 256 MiB. With --shadow or --canary it is staged
    /// beside the fleet's version instead, on every process, until `weir plugin promote NAME
    /// --registry ...` or `weir plugin abort NAME --registry ...`.
    Publish {
        /// The component, NAME.wasm; NAME is the plugin's name.
        file: PathBuf,
        /// Its manifest (default: NAME.toml beside it, when present).
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// The fleet's registry.
        #[arg(long, value_name = "kafka://BROKERS/TOPIC", env = "WEIR_REGISTRY", value_parser = parse_registry)]
        registry: weir::registry::kafka::RegistryAddress,
        #[command(flatten)]
        registry_properties: RegistryProperties,
        /// The version label shown beside the hash (default: the manifest's `version`).
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
        /// A config (JSON object, over the manifest's defaults) to validate `init` with, for a
        /// plugin whose `init` needs keys its manifest does not default. Not published: each
        /// pipeline's own config is checked when a process deploys the version.
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        /// Longest `init` may run in the validation, in milliseconds: the `limits.deadline_ms`
        /// of the pipelines that will run it (default 1000; from 1 to 365 days, as that key).
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=weir::config::MAX_DURATION_MS))]
        deadline_ms: Option<u64>,
        /// Most memory the instance may use in the validation, in MiB: the `limits.memory_mib`
        /// of the pipelines that will run it (default 64; from 1 to 1024, as that key).
        #[arg(long, value_name = "MIB", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..=1024), |mib| mib as usize))]
        memory_mib: Option<usize>,
        /// The fleet's per-component limits, as `weir run` takes them: a component needing
        /// more than the defaults is refused without them.
        #[command(flatten)]
        component_limits: ComponentLimitArgs,
        #[command(flatten)]
        stage: cli::plugin_rollout::StageArgs,
    },
    /// Create a plugin project that builds and passes its golden test as it is.
    ///
    /// Writes NAME/ (or --dir) with the plugin source (a transform that passes records
    /// through, with a comment where the logic goes), NAME.toml (the manifest),
    /// samples/input.jsonl and samples/expected.jsonl, and for Rust a native unit test and a
    /// copy of the SDK compiled into this weir (weir-plugin/), unless --sdk-path names a
    /// checkout to depend on.
    New {
        /// The plugin's name: lower-case letters, digits, `-` and `_`, starting with a letter.
        name: String,
        /// The plugin's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: cli::plugin_new::NewLanguage,
        /// The folder to create (default: ./NAME); it must not exist or be empty.
        #[arg(long, value_name = "PATH")]
        dir: Option<PathBuf>,
        /// Rust only: depend on the SDK crate in this folder (plugins/sdk of a Weir checkout)
        /// instead of a copy in the project.
        #[arg(long, value_name = "DIR")]
        sdk_path: Option<PathBuf>,
    },
    /// Run a built plugin over sample records and compare with a golden file.
    ///
    /// Uses the runtime, deadline, memory cap and manifest handling of `weir run`, one record
    /// per input line. Each expected line is {"outputs": [JSON values]} or
    /// {"dead_letter": {"kind": KIND, "message": SUBSTRING}}. Prints each record that differs
    /// (the field, expected and actual) and exits non-zero on any difference.
    Test {
        /// A plugin project folder (tests PLUGINS/NAME.wasm, built by `weir plugin build`) or a
        /// .wasm file.
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        golden: GoldenArgs,
        /// Rewrite the expected file with what the plugin did, instead of comparing.
        #[arg(long)]
        update: bool,
        #[command(flatten)]
        plugins: PluginsDir,
    },
    /// Rebuild, test and deploy a plugin on every save.
    ///
    /// After each burst of changes to the project's files, builds it into a private folder, runs
    /// its golden test, and only when that passes places NAME.toml and NAME.wasm in the registry
    /// folder (write then rename), where a running `weir run` hot-swaps it. A failed build or
    /// test leaves the registry's version in place. Changes inside the registry folder (which may
    /// sit in the project) never start a round. Ctrl-C or SIGTERM stops; a round it interrupts
    /// deploys nothing.
    Dev {
        /// The plugin project folder.
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        golden: GoldenArgs,
        /// Quiet time after a change before rebuilding, in milliseconds.
        #[arg(long, default_value_t = 300, value_name = "MS")]
        debounce_ms: u64,
        #[command(flatten)]
        plugins: PluginsDir,
    },
    /// Return a plugin of a running weir to its previous version; with --registry, return the
    /// whole fleet to the version published before the current one (or to --to).
    Rollback {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        admin: AdminAddr,
        /// The fleet's registry in Kafka: the rollback is published there, for every process.
        #[arg(long, value_name = "kafka://BROKERS/TOPIC", env = "WEIR_REGISTRY", value_parser = parse_registry)]
        registry: Option<weir::registry::kafka::RegistryAddress>,
        #[command(flatten)]
        registry_properties: RegistryProperties,
        /// With --registry: the version to return to (a version, sha256 or label).
        #[arg(long, value_name = "VERSION", requires = "registry")]
        to: Option<String>,
    },
    /// Stage a candidate beside a running plugin's live version: as a shadow (compared, never
    /// written) or a canary (a share of the source's partitions).
    ///
    /// The running weir loads NAME.candidate.wasm (and NAME.candidate.toml, else NAME.toml)
    /// from its registry folder, with the checks of a deploy; the watcher never deploys those
    /// files. `promote` makes the candidate live (its files replace NAME.wasm and NAME.toml),
    /// `abort` drops it; a canary is aborted automatically by the --rollback-* rule.
    Stage {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        how: cli::plugin_rollout::StageArgs,
        #[command(flatten)]
        admin: AdminAddr,
    },
    /// Make a plugin's staged candidate its live version; with --registry, on every process of
    /// the fleet.
    Promote {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        admin: AdminAddr,
        /// The fleet's registry in Kafka: the promotion is published there, for every process.
        #[arg(long, value_name = "kafka://BROKERS/TOPIC", env = "WEIR_REGISTRY", value_parser = parse_registry)]
        registry: Option<weir::registry::kafka::RegistryAddress>,
        #[command(flatten)]
        registry_properties: RegistryProperties,
    },
    /// Drop a plugin's staged candidate; every record goes to the live version again. With
    /// --registry, on every process of the fleet.
    Abort {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        admin: AdminAddr,
        /// The fleet's registry in Kafka: the abort is published there, for every process.
        #[arg(long, value_name = "kafka://BROKERS/TOPIC", env = "WEIR_REGISTRY", value_parser = parse_registry)]
        registry: Option<weir::registry::kafka::RegistryAddress>,
        #[command(flatten)]
        registry_properties: RegistryProperties,
        /// With --registry: why, shown in every process's log and status.
        #[arg(
            long,
            value_name = "TEXT",
            requires = "registry",
            default_value = "an operator aborted it"
        )]
        reason: String,
    },
    /// Delete a plugin's old versions from the fleet's registry in Kafka, so that the topic
    /// and every process following it stop holding them.
    ///
    /// Kept: the KEEP most recently published versions, the head (the version the fleet runs),
    /// a staged candidate, and every version a live process runs or stages (by its heartbeat
    /// in TOPIC.fleet; a process silent for 30 s does not count). The others get tombstones:
    /// each process forgets them at once, compaction removes their records, and `rollback
    /// --to` can no longer name them.
    Prune {
        /// The plugin's name.
        name: String,
        /// The fleet's registry in Kafka.
        #[arg(long, value_name = "kafka://BROKERS/TOPIC", env = "WEIR_REGISTRY", value_parser = parse_registry)]
        registry: weir::registry::kafka::RegistryAddress,
        #[command(flatten)]
        registry_properties: RegistryProperties,
        /// How many of the most recently published versions to keep besides those in use.
        #[arg(long, value_name = "N", default_value_t = 5)]
        keep: usize,
        /// Print what would be deleted and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show how a staged shadow's outputs differ from the live version's, or a canary's counts.
    Diff {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        admin: AdminAddr,
    },
}

/// The golden test's files, config and sandbox.
#[derive(Debug, clap::Args)]
struct GoldenArgs {
    /// The sample input, one record value per line (default: PATH/samples/input.jsonl).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// The expected file (default: PATH/samples/expected.jsonl).
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// The plugin's config, a JSON object, over its manifest's defaults (default: the contents
    /// of PATH/samples/config.json when present).
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    /// Grant a capability the manifest asks for (`clock`, `random`); repeatable.
    #[arg(long, value_name = "CAPABILITY", value_parser = parse_capability)]
    allow: Vec<weir::runtime::Capability>,
    /// Longest one call may run, in milliseconds (a pipeline's `limits.deadline_ms`).
    #[arg(long, value_name = "MS")]
    deadline_ms: Option<u64>,
    /// Most memory the instance may use, in MiB (a pipeline's `limits.memory_mib`).
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<usize>,
    /// Largest input line (one record), in bytes (a pipeline's `limits.max_record_bytes`).
    #[arg(long, value_name = "BYTES")]
    max_record_bytes: Option<usize>,
}

impl GoldenArgs {
    fn request(
        self,
        path: PathBuf,
        registry: PathBuf,
        update: bool,
    ) -> cli::plugin_test::TestRequest {
        let mut limits = weir::config::LimitsConfig::default();
        if let Some(deadline_ms) = self.deadline_ms {
            limits.deadline_ms = deadline_ms;
        }
        if let Some(memory_mib) = self.memory_mib {
            limits.memory_mib = memory_mib;
        }
        if let Some(max_record_bytes) = self.max_record_bytes {
            limits.max_record_bytes = max_record_bytes;
        }
        cli::plugin_test::TestRequest {
            target: path,
            registry,
            input: self.input,
            expect: self.expect,
            config: self.config,
            update,
            allow: self.allow,
            limits: limits.plugin_limits(),
            max_record_bytes: limits.max_record_bytes,
        }
    }
}

/// The librdkafka properties of the registry's clients, for brokers that ask for TLS or SASL.
#[derive(Debug, clap::Args)]
struct RegistryProperties {
    /// With --registry: a properties file for the registry's brokers, as Kafka's own tools take
    /// with --command-config: `key=value` lines of librdkafka settings (`security.protocol`,
    /// `ssl.ca.location`, `sasl.mechanism`, `sasl.username`, `sasl.password`, ...), `#`
    /// comments, `${VAR}` from the environment. Values are never printed.
    #[arg(long, value_name = "FILE", env = "WEIR_REGISTRY_PROPERTIES")]
    registry_properties: Option<PathBuf>,
}

impl RegistryProperties {
    /// The registry address with the file's properties, when a file is given, once its brokers
    /// accepted them.
    fn apply(
        &self,
        mut address: weir::registry::kafka::RegistryAddress,
    ) -> anyhow::Result<weir::registry::kafka::RegistryAddress> {
        if let Some(path) = &self.registry_properties {
            address.properties = weir::registry::kafka::read_properties(path)?;
        }
        address.check_access()?;
        Ok(address)
    }

    /// [`RegistryProperties::apply`] to an optional address.
    fn apply_to(
        &self,
        address: Option<weir::registry::kafka::RegistryAddress>,
    ) -> anyhow::Result<Option<weir::registry::kafka::RegistryAddress>> {
        address.map(|address| self.apply(address)).transpose()
    }
}

fn parse_registry(text: &str) -> Result<weir::registry::kafka::RegistryAddress, String> {
    text.parse()
        .map_err(|e: weir::registry::kafka::KafkaRegistryError| e.to_string())
}

fn parse_capability(text: &str) -> Result<weir::runtime::Capability, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("unknown capability `{text}`: use `clock` or `random`"))
}

/// Per-component limits of the Wasm engine; each applies when larger than the default and than
/// every pipeline's `limits` table.
#[derive(Debug, clap::Args)]
struct ComponentLimitArgs {
    /// Most core module instances one plugin component may create (`limits.core_instances`).
    #[arg(long, value_name = "N", env = "WEIR_MAX_CORE_INSTANCES")]
    max_core_instances: Option<u32>,
    /// Most linear memories one plugin component may define (`limits.memories`).
    #[arg(long, value_name = "N", env = "WEIR_MAX_MEMORIES")]
    max_memories: Option<u32>,
    /// Most tables one plugin component may define (`limits.tables`).
    #[arg(long, value_name = "N", env = "WEIR_MAX_TABLES")]
    max_tables: Option<u32>,
}

impl ComponentLimitArgs {
    fn limits(&self) -> weir::runtime::ComponentLimits {
        let default = weir::runtime::ComponentLimits::default();
        default.max(weir::runtime::ComponentLimits {
            core_instances: self.max_core_instances.unwrap_or(0),
            memories: self.max_memories.unwrap_or(0),
            tables: self.max_tables.unwrap_or(0),
        })
    }
}

/// Where a running weir serves its admin API, and the token it wants.
#[derive(Debug, clap::Args)]
struct AdminAddr {
    /// The admin server's address: the status page at `/`, `/metrics` and the JSON API
    /// (loopback by default; beyond loopback a token is required).
    #[arg(
        long = "admin",
        value_name = "ADDR",
        env = "WEIR_ADMIN",
        default_value = "127.0.0.1:9620"
    )]
    addr: std::net::SocketAddr,
    #[command(flatten)]
    token: AdminTokenArgs,
}

/// The admin API's bearer token, which guards rollback and the tap.
#[derive(Debug, clap::Args)]
pub struct AdminTokenArgs {
    /// The admin API's bearer token (at least 16 characters). Without it (and without
    /// --admin-token-file), `weir run` on loopback generates one and writes it to
    /// `$XDG_RUNTIME_DIR/weir/admin-PORT.token` (else `~/.cache/weir/`), where the other
    /// commands find it.
    #[arg(
        long = "admin-token",
        value_name = "TOKEN",
        env = "WEIR_ADMIN_TOKEN",
        hide_env_values = true,
        value_parser = parse_token
    )]
    pub token: Option<weir::admin::auth::AdminToken>,
    /// A file whose first line is the admin API's bearer token; --admin-token wins over it.
    #[arg(
        long = "admin-token-file",
        value_name = "FILE",
        env = "WEIR_ADMIN_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
}

fn parse_token(text: &str) -> Result<weir::admin::auth::AdminToken, String> {
    weir::admin::auth::AdminToken::new(text, "given with --admin-token or WEIR_ADMIN_TOKEN")
        .map_err(|e| e.to_string())
}

/// A share from 0 to 1, for `--rollback-threshold`: outside that range automatic rollback
/// would never or always fire, which is a typo rather than a policy.
fn parse_share(text: &str) -> Result<f64, String> {
    let share: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number; give a share from 0 to 1, like 0.5"))?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err(format!(
            "{share} is not a share from 0 to 1 (0.5 rolls a new version back when more than half of its first records fail)"
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `weir run` catches SIGTERM and Ctrl-C before it reads its configuration or compiles a
    // plugin, so a stop request at any moment ends in a clean exit.
    let startup = matches!(cli.command, Command::Run { .. }).then(cli::run::Startup::begin);
    cli::logging::init(cli.log_format, &cli.log);
    // `weir run`'s stderr carries its logs, which a collector may parse: progress only when a
    // person watches it on a terminal.
    cli::progress::install(matches!(
        cli.command,
        Command::Run { .. } | Command::Validate { .. }
    ));
    let result = match cli.command {
        Command::Run {
            file,
            plugins,
            registry,
            admin,
            admin_hosts,
            no_admin,
            no_watch,
            debounce_ms,
            cache_dir,
            no_cache,
            rollback_window,
            rollback_threshold,
            no_summary,
            component_limits,
            registry_properties,
        } => registry_properties.apply_to(registry).and_then(|registry| {
            let mut options = weir::app::RunOptions::for_registry(&plugins.dir);
            options.admin = (!no_admin).then_some(admin.addr);
            options.admin_hosts = admin_hosts;
            options.watch = !no_watch;
            options.kafka_registry = registry;
            options.debounce = std::time::Duration::from_millis(debounce_ms);
            if let Some(dir) = cache_dir {
                options.cache = Some(dir);
            }
            if no_cache {
                options.cache = None;
            }
            options.component_limits = component_limits.limits();
            options.rollback = weir::registry::RollbackPolicy {
                window: rollback_window,
                max_failure_ratio: rollback_threshold,
            };
            let startup = startup.unwrap_or_else(cli::run::Startup::begin);
            cli::admin::server_token(&admin.token).and_then(|token| {
                options.admin_token = token;
                // JSON logs carry the summary in their `Pipeline finished.` lines; text gets a
                // table.
                let text = cli.log_format == LogFormat::Text;
                let live =
                    text && !no_summary && std::io::IsTerminal::is_terminal(&std::io::stderr());
                cli::run::run(&file, options, text, live, startup)
            })
        }),
        Command::Validate {
            file,
            plugins,
            registry,
            registry_properties,
            component_limits,
        } => registry_properties.apply_to(registry).and_then(|registry| {
            cli::run::validate(
                &file,
                &plugins.dir,
                registry.as_ref(),
                component_limits.limits(),
            )
        }),
        Command::Tap {
            pipeline,
            stage,
            count,
            max_per_second,
            admin,
        } => cli::tap::tap(
            &cli::tap::TapRequest {
                pipeline,
                stage,
                count,
                max_per_second,
            },
            admin.addr,
            &admin.token,
        ),
        Command::Replay(args) => cli::replay::replay(args),
        Command::Plugin(PluginCommand::Build { path, plugins }) => {
            cli::plugin::build(&path, &plugins.dir)
        }
        Command::Plugin(PluginCommand::List {
            plugins,
            admin,
            registry,
            registry_properties,
        }) => match registry_properties.apply_to(registry) {
            Ok(Some(registry)) => cli::plugin_publish::list(&registry),
            Ok(None) => cli::plugin::list(&plugins.dir, admin.addr, &admin.token),
            Err(e) => Err(e),
        },
        Command::Plugin(PluginCommand::Publish {
            file,
            manifest,
            registry,
            registry_properties,
            label,
            config,
            deadline_ms,
            memory_mib,
            component_limits,
            stage,
        }) => registry_properties.apply(registry).and_then(|registry| {
            let stage = stage.rollout()?;
            let mut limits = weir::config::LimitsConfig::default();
            if let Some(deadline_ms) = deadline_ms {
                limits.deadline_ms = deadline_ms;
            }
            if let Some(memory_mib) = memory_mib {
                limits.memory_mib = memory_mib;
            }
            cli::plugin_publish::publish(&cli::plugin_publish::PublishRequest {
                file: &file,
                manifest: manifest.as_deref(),
                registry: &registry,
                label: label.as_deref(),
                config: config.as_deref(),
                limits: limits.plugin_limits(),
                component_limits: component_limits.limits(),
                stage,
            })
        }),
        Command::Plugin(PluginCommand::New {
            name,
            lang,
            dir,
            sdk_path,
        }) => cli::plugin_new::new(&cli::plugin_new::NewPlugin {
            name: &name,
            language: lang,
            dir: dir.as_deref(),
            sdk_path: sdk_path.as_deref(),
        }),
        Command::Plugin(PluginCommand::Test {
            path,
            golden,
            update,
            plugins,
        }) => cli::plugin_test::test(&golden.request(path, plugins.dir, update)),
        Command::Plugin(PluginCommand::Dev {
            path,
            golden,
            debounce_ms,
            plugins,
        }) => cli::plugin_dev::dev(
            &golden.request(path, plugins.dir, false),
            std::time::Duration::from_millis(debounce_ms),
        ),
        Command::Plugin(PluginCommand::Stage { name, how, admin }) => {
            cli::plugin_rollout::stage(&name, &how, admin.addr, &admin.token)
        }
        Command::Plugin(PluginCommand::Promote {
            name,
            admin,
            registry,
            registry_properties,
        }) => match registry_properties.apply_to(registry) {
            Ok(Some(registry)) => cli::plugin_publish::promote(&name, &registry),
            Ok(None) => cli::plugin_rollout::promote(&name, admin.addr, &admin.token),
            Err(e) => Err(e),
        },
        Command::Plugin(PluginCommand::Abort {
            name,
            admin,
            registry,
            registry_properties,
            reason,
        }) => match registry_properties.apply_to(registry) {
            Ok(Some(registry)) => cli::plugin_publish::abort(&name, &reason, &registry),
            Ok(None) => cli::plugin_rollout::abort(&name, admin.addr, &admin.token),
            Err(e) => Err(e),
        },
        Command::Plugin(PluginCommand::Diff { name, admin }) => {
            cli::plugin_rollout::diff(&name, admin.addr, &admin.token)
        }
        Command::Plugin(PluginCommand::Rollback {
            name,
            admin,
            registry,
            registry_properties,
            to,
        }) => match registry_properties.apply_to(registry) {
            Ok(Some(registry)) => cli::plugin_publish::rollback(&name, to.as_deref(), &registry),
            Ok(None) => cli::plugin::rollback(&name, admin.addr, &admin.token),
            Err(e) => Err(e),
        },
        Command::Plugin(PluginCommand::Prune {
            name,
            registry,
            registry_properties,
            keep,
            dry_run,
        }) => registry_properties
            .apply(registry)
            .and_then(|registry| cli::plugin_publish::prune(&name, keep, dry_run, &registry)),
        Command::Bench(BenchCommand::Plugin {
            plugin,
            records,
            seconds,
            plugins,
        }) => cli::bench::plugin(&plugin, records, seconds, &plugins.dir),
        Command::Bench(BenchCommand::Swap {
            swaps,
            debounce_ms,
            rate,
            plugins,
        }) => cli::bench::swap(swaps, debounce_ms, rate, &plugins.dir),
        Command::Bench(BenchCommand::Failover {
            brokers,
            members,
            partitions,
            rate,
            session_timeout_ms,
            keep,
        }) => cli::bench::failover(brokers, members, partitions, rate, session_timeout_ms, keep),
        Command::Bench(BenchCommand::Pipeline {
            brokers,
            cassandra,
            records,
            rounds,
            latency_rate,
            latency_seconds,
            latency_producer_linger_ms,
            kafka_sink_compression,
            broker_pid_file,
            cassandra_pid_file,
            keep,
            plugins,
        }) => cli::bench::pipeline(cli::measure::pipeline::PipelineBench {
            brokers,
            cassandra,
            registry: plugins.dir,
            records,
            rounds,
            latency_rate,
            latency_seconds,
            latency_producer_linger_ms,
            kafka_sink_compression,
            broker_pid_file,
            cassandra_pid_file,
            keep,
        }),
        Command::Bench(BenchCommand::Produce {
            brokers,
            topic,
            count,
            rate,
            seed,
            linger_ms,
        }) => cli::bench::produce(&brokers, &topic, count, rate, seed, linger_ms),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`weir replay --dry-run | head`): nobody is left to print for,
        // which ends the command as a finished one, as `weir tap` does.
        Err(error) if cli::stdout::was_closed(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", chain_once(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", each once: many of Weir's errors already quote their
/// source in their own message, and anyhow's `{:#}` would print it again.
fn chain_once(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_prints_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("plugin `x`: {source}")]
        struct Outer {
            source: std::io::Error,
        }
        let inner = std::io::Error::other("holds 14 core instances");
        let error = anyhow::Error::new(Outer { source: inner }).context("starting");
        assert_eq!(
            chain_once(&error),
            "starting: plugin `x`: holds 14 core instances"
        );
    }

    fn threshold(value: &str) -> Result<f64, String> {
        let flag = format!("--rollback-threshold={value}");
        let cli =
            Cli::try_parse_from(["weir", "run", "p.toml", &flag]).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Run {
                rollback_threshold, ..
            } => Ok(rollback_threshold),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// `weir plugin publish` with `extra` flags, as parsed.
    fn publish(extra: &[&str]) -> Result<(Option<u64>, Option<usize>), String> {
        let mut args = vec!["weir", "plugin", "publish", "p.wasm"];
        args.extend(["--registry", "kafka://localhost:9092/weir-plugins"]);
        args.extend(extra);
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Plugin(PluginCommand::Publish {
                deadline_ms,
                memory_mib,
                ..
            }) => Ok((deadline_ms, memory_mib)),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn publish_takes_the_deadline_and_memory_a_pipeline_may_have() {
        assert_eq!(publish(&[]), Ok((None, None)));
        let most = weir::config::MAX_DURATION_MS.to_string();
        assert_eq!(
            publish(&["--deadline-ms", &most, "--memory-mib", "1024"]),
            Ok((Some(weir::config::MAX_DURATION_MS), Some(1024)))
        );
        assert_eq!(
            publish(&["--deadline-ms", "1", "--memory-mib", "1"]),
            Ok((Some(1), Some(1)))
        );
        let too_long = (weir::config::MAX_DURATION_MS + 1).to_string();
        for (flag, wrong) in [
            ("--deadline-ms", "0"),
            ("--deadline-ms", too_long.as_str()),
            ("--memory-mib", "0"),
            ("--memory-mib", "2048"),
            ("--memory-mib", "18446744073709551615"),
        ] {
            let error = publish(&[flag, wrong]).unwrap_err();
            assert!(error.contains(flag), "{flag} {wrong}: {error}");
        }
    }

    #[test]
    fn the_rollback_threshold_is_a_share_from_0_to_1() {
        assert_eq!(threshold("0"), Ok(0.0));
        assert_eq!(threshold("0.25"), Ok(0.25));
        assert_eq!(threshold("1"), Ok(1.0));
        for wrong in ["1.5", "-0.1", "NaN", "half"] {
            let error = threshold(wrong).unwrap_err();
            assert!(
                error.contains("--rollback-threshold") && error.contains("from 0 to 1"),
                "{wrong}: {error}"
            );
        }
    }
}
