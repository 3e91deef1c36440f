//! Shared fixtures: the plugins built once per test run, the `weir` binary, temp folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Every plugin crate the tests use, by folder relative to the repository root.
const PLUGIN_CRATES: &[&str] = &[
    "plugins/user-profile",
    "plugins/pii-mask",
    "plugins/filter",
    "tests/plugins/panic",
    "tests/plugins/spin",
    "tests/plugins/hog",
    "tests/plugins/escape",
    "tests/plugins/wrong-version",
    "tests/plugins/missing-export",
    "tests/plugins/loud",
    "tests/plugins/picky",
    "tests/plugins/contract-0-1-0",
];

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// The `weir` binary under test.
pub fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

/// `child`'s exit status once it ends, or `None` if it still runs after `timeout` (looked at
/// every 20 ms); the caller says what still running means, and stops it.
pub fn exit_within(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("the child's status can be read") {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `weir` with `args` in `dir`, returning its output.
pub fn run_weir(dir: &Path, args: &[&str]) -> Output {
    weir()
        .current_dir(dir)
        .args(args)
        .env("WEIR_LOG", "info")
        .output()
        .expect("the weir binary runs")
}

/// The registry folder holding every test plugin, built on first call. Building goes through
/// `weir plugin build`, so this also tests that command. A separate target dir keeps the nested
/// cargo off the lock of the `cargo test` that runs us.
pub fn plugin_registry() -> &'static Path {
    static REGISTRY: OnceLock<PathBuf> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let target = repo_root().join("target/test-plugins");
        let registry = target.join("registry");
        for krate in PLUGIN_CRATES {
            let output = weir()
                .current_dir(repo_root())
                .args(["plugin", "build", krate, "--plugins"])
                .arg(&registry)
                .env("CARGO_TARGET_DIR", &target)
                .output()
                .expect("the weir binary runs");
            assert!(
                output.status.success(),
                "weir plugin build {krate} failed:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        registry
    })
}

/// Appends a line `{"n":N}` for each N of `range` to `path`, creating it if missing: the
/// numbered input the file-source tests feed and then count.
pub fn append_numbered(path: &Path, range: std::ops::Range<u64>) {
    use std::io::Write;
    let text: String = range.map(|n| format!("{{\"n\":{n}}}\n")).collect();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", path.display()));
}

/// Reads a JSON-lines file into values.
pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Writes `lines` as a JSON-lines file in `dir`.
pub fn write_input(dir: &Path, lines: &[String]) -> String {
    let path = dir.join("input.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.display().to_string()
}

/// A pipeline from a JSON-lines file to files, in a temp folder: the input written, the output
/// and dead-letter files beside it.
pub struct FileRun {
    /// The folder, removed when the run is dropped.
    _dir: tempfile::TempDir,
    /// The input file.
    pub input: String,
    /// The sink's file.
    pub out: PathBuf,
    /// The dead-letter file.
    pub dlq: PathBuf,
}

impl FileRun {
    /// A folder holding `lines` as the input.
    pub fn new(lines: &[String]) -> FileRun {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(dir.path(), lines);
        let (out, dlq) = (dir.path().join("out.jsonl"), dir.path().join("dlq.jsonl"));
        FileRun {
            _dir: dir,
            input,
            out,
            dlq,
        }
    }

    /// Runs the pipeline `name` from the input to the output, dead letters to `dlq`, with
    /// `extra` (transforms, batch, limits) added to its table, until the input ends.
    pub async fn run(&self, name: &str, extra: &str) -> weir::pipeline::PipelineReport {
        run_pipeline(&format!(
            r#"
            [[pipeline]]
            name = "{name}"
            source = {{ type = "file", path = "{}" }}
            sink = {{ type = "file", path = "{}" }}
            dead_letter = {{ type = "file", path = "{}" }}
            {extra}
            "#,
            self.input,
            self.out.display(),
            self.dlq.display()
        ))
        .await
    }
}

/// The single pipeline of a test's TOML, running in a task.
pub struct Spawned {
    /// Tells the pipeline to stop (it may have ended already).
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The pipeline's task.
    pub run: tokio::task::JoinHandle<
        Result<weir::pipeline::PipelineReport, weir::pipeline::PipelineError>,
    >,
    /// Its live counters (retried writes among them).
    pub stats: std::sync::Arc<weir::pipeline::PipelineStats>,
}

/// Parses `toml`, loads its plugins from the test registry, and starts its single pipeline in a
/// task.
pub fn spawn_pipeline(toml: &str) -> Spawned {
    use weir::registry::{Deployer, PluginRegistry, PluginSlots};
    let file = weir::config::PipelineFile::parse(Path::new("test.toml"), toml)
        .unwrap_or_else(|e| panic!("{e}"));
    let slots = PluginSlots::default();
    let deployer = Deployer::new(
        PluginRegistry::new(plugin_registry()),
        test_runtime(),
        slots.clone(),
        &file,
    );
    for name in deployer.used_plugins() {
        deployer.deploy(name).unwrap_or_else(|e| panic!("{e}"));
    }
    let config = file.pipelines.into_iter().next().unwrap();
    let chain = weir::pipeline::build_chain(&config, &slots).unwrap();
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let stats = std::sync::Arc::new(weir::pipeline::PipelineStats::default());
    let run = tokio::spawn(weir::pipeline::run(
        config,
        chain,
        std::sync::Arc::clone(&stats),
        shutdown_rx,
    ));
    Spawned {
        shutdown,
        run,
        stats,
    }
}

/// Runs the single pipeline of `toml` until its source ends; it must succeed.
pub async fn run_pipeline(toml: &str) -> weir::pipeline::PipelineReport {
    // Kept until the end: a dropped sender would read as a shutdown.
    let Spawned {
        shutdown: _shutdown,
        run,
        ..
    } = spawn_pipeline(toml);
    run.await.unwrap().unwrap()
}

/// Runs the single pipeline of `toml` until `done` holds or it ends by itself, then shuts it
/// down gracefully; it must succeed.
pub async fn run_until(toml: &str, done: impl Fn() -> bool) -> weir::pipeline::PipelineReport {
    let Spawned { shutdown, run, .. } = spawn_pipeline(toml);
    let finished = || run.is_finished();
    wait_for(
        "the pipeline's output",
        std::time::Duration::from_secs(120),
        || done() || finished(),
    )
    .await;
    // A file source may have ended the pipeline already; then there is no one to tell.
    let _ = shutdown.send(true);
    run.await.unwrap().unwrap()
}

/// How the single pipeline of `toml` ends by itself, or `None` when it is still running after
/// `within` (for the pipelines that must stop on an error instead of retrying it).
pub async fn outcome_within(
    toml: &str,
    within: std::time::Duration,
) -> Option<Result<weir::pipeline::PipelineReport, weir::pipeline::PipelineError>> {
    let Spawned {
        shutdown: _shutdown,
        mut run,
        ..
    } = spawn_pipeline(toml);
    match tokio::time::timeout(within, &mut run).await {
        Ok(joined) => Some(joined.unwrap()),
        Err(_) => {
            run.abort();
            None
        }
    }
}

/// A plugin runtime whose compiled cache is shared by the whole test run, so each plugin is
/// compiled once.
pub fn test_runtime() -> weir::runtime::PluginRuntime {
    let cache = weir::runtime::CompiledCache::new(repo_root().join("target/test-plugins/cache"));
    weir::runtime::PluginRuntime::new(Some(cache)).expect("the Wasm engine starts")
}

/// Waits until `condition` holds, polling; fails the test naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: std::time::Duration, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// [`wait_for`] with a condition that must itself wait (a query to a store).
pub async fn wait_for_async<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: std::time::Duration,
    mut condition: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Where the tests find Kafka: `WEIR_KAFKA_BROKERS`, by default the loopback broker that
/// `scripts/services start` runs. Panics with the command to run when nothing answers there.
pub fn kafka_brokers() -> String {
    let brokers = std::env::var("WEIR_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    require_listening("Kafka", "WEIR_KAFKA_BROKERS", &brokers);
    brokers
}

/// Where the tests find the Cassandra node that takes only a login (`cassandra-auth` in
/// `scripts/services`): `WEIR_CASSANDRA_AUTH_NODES` (default 127.0.0.1:9043).
pub fn cassandra_auth_nodes() -> String {
    let nodes =
        std::env::var("WEIR_CASSANDRA_AUTH_NODES").unwrap_or_else(|_| "127.0.0.1:9043".into());
    require_listening(
        "Cassandra (with logins)",
        "WEIR_CASSANDRA_AUTH_NODES",
        &nodes,
    );
    nodes
}

/// Where the tests find Cassandra: `WEIR_CASSANDRA_NODES` (default 127.0.0.1:9042).
pub fn cassandra_nodes() -> String {
    let nodes = std::env::var("WEIR_CASSANDRA_NODES").unwrap_or_else(|_| "127.0.0.1:9042".into());
    require_listening("Cassandra", "WEIR_CASSANDRA_NODES", &nodes);
    nodes
}

/// A client of the PostgreSQL server at `url`, its connection driven on a task of its own, to
/// look at what a pipeline wrote or to set a table up.
pub async fn postgres_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A driver session on the test Cassandra node ([`cassandra_nodes`]), to look at what a
/// pipeline wrote or to set a table up.
pub async fn cassandra_session() -> scylla::client::session::Session {
    scylla::client::session_builder::SessionBuilder::new()
        .known_node(cassandra_nodes())
        .build()
        .await
        .expect("a driver session on the test Cassandra node")
}

/// Where the tests find PostgreSQL: `WEIR_POSTGRES_URL`
/// (default postgres://weir:weir@127.0.0.1:5432/weir).
pub fn postgres_url() -> String {
    let url = std::env::var("WEIR_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://weir:weir@127.0.0.1:5432/weir".into());
    let address = url
        .rsplit_once('@')
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_owned())
        .unwrap_or_else(|| "127.0.0.1:5432".into());
    require_listening("PostgreSQL", "WEIR_POSTGRES_URL", &address);
    url
}

/// Panics, naming `variable` and how to start the services, when nothing answers at the first of
/// `addresses`.
pub fn require_listening(service: &str, variable: &str, addresses: &str) {
    let first = addresses.split(',').next().unwrap_or(addresses).trim();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(first)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "{service} is not reachable at {first} ({variable}). Start the test services with `scripts/services start`, or point {variable} at a running {service}."
    );
}

/// A name unique to this test run, for topics, tables and keyspaces.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Sends the library's logs to the test's captured output, shown when a test fails.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info".into()),
        ))
        .with_test_writer()
        .try_init();
}

/// Serves `router` on a loopback port for the rest of the test, as a fake HTTP API the test
/// owns; its base URL, e.g. `http://127.0.0.1:40211`.
pub async fn serve_http(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

/// A TCP forwarder a test owns, in front of a real service: it can stop forwarding without
/// closing anything, as a half-open connection or a hung server would, and resume.
pub struct StallingProxy {
    /// Where clients connect.
    pub address: std::net::SocketAddr,
    /// The PostgreSQL URL through the proxy (set by [`StallingProxy::to_postgres`]).
    pub url: String,
    stalled: tokio::sync::watch::Sender<bool>,
}

impl StallingProxy {
    /// A proxy forwarding to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> StallingProxy {
        use tokio::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stalled, watching) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, watching.clone()));
                tokio::spawn(forward(server_read, client_write, watching.clone()));
            }
        });
        StallingProxy {
            address,
            url: String::new(),
            stalled,
        }
    }

    /// A proxy in front of the PostgreSQL of `url` (a `postgres://user:pw@host:port/db` URL),
    /// with [`StallingProxy::url`] pointing through it.
    pub async fn to_postgres(url: &str) -> StallingProxy {
        let (user, rest) = url
            .rsplit_once('@')
            .expect("WEIR_POSTGRES_URL is postgres://user:password@host:port/db");
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .ok()
            .and_then(|mut addresses| addresses.next())
            .expect("WEIR_POSTGRES_URL names host:port");
        let mut proxy = StallingProxy::start(upstream).await;
        proxy.url = format!("{user}@{}/{database}", proxy.address);
        proxy
    }

    /// Stops (`true`) or resumes (`false`) forwarding; connections stay open either way.
    pub fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        // Hold what was read (the connection stays open) until the stall ends.
        if stalled.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Produces `{"phase":PHASE,"p":P,"n":N,"note":NOTE}` to each partition P of `partitions` of
/// `topic`, `count` each, N from 0 in order: records a test can tell apart by phase and partition.
pub async fn produce_phase(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    phase: &str,
    partitions: &[i32],
    count: usize,
    note: &str,
) {
    for n in 0..count {
        for &p in partitions {
            let payload = format!(r#"{{"phase":"{phase}","p":{p},"n":{n},"note":"{note}"}}"#);
            producer
                .send(
                    rdkafka::producer::FutureRecord::<str, str>::to(topic)
                        .partition(p)
                        .payload(&payload),
                    std::time::Duration::from_secs(30),
                )
                .await
                .expect("the broker takes the record");
        }
    }
}

/// Sends `{"n":N}`, keyed by N, to partition N % `partitions` of `topic` for each N of
/// `numbers`, all at once, and waits for every delivery (each within `timeout`): a gap in what a
/// pipeline writes then names its partition.
pub async fn send_numbered(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    partitions: u64,
    numbers: std::ops::Range<u64>,
    timeout: std::time::Duration,
) {
    let sends = numbers.map(|n| {
        let (key, payload) = (n.to_string(), format!("{{\"n\":{n}}}"));
        async move {
            producer
                .send(
                    rdkafka::producer::FutureRecord::to(topic)
                        .partition((n % partitions) as i32)
                        .key(&key)
                        .payload(&payload),
                    timeout,
                )
                .await
                .expect("the broker takes the record");
        }
    });
    futures::future::join_all(sends).await;
}

/// The number of lines in a file, 0 while it does not exist.
pub fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// How the single pipeline of `toml`, which must not get going (refused credentials or
/// certificates), ends: by itself, with an error, which is returned with its causes. Fails the
/// test when it succeeds or is still retrying after three minutes.
pub async fn refusal(toml: &str) -> String {
    match outcome_within(toml, std::time::Duration::from_secs(180)).await {
        Some(Err(error)) => format!("{error:#}"),
        Some(Ok(report)) => panic!("the pipeline succeeded: {report:?}"),
        None => panic!("the pipeline kept retrying instead of stopping"),
    }
}

/// A pipeline that dead-letters every line of a file into a Kafka topic: `input` gets two
/// records that `fault-picky` refuses as bad records, and the pipeline reads it through that
/// plugin into a blackhole, its dead letters to `topic` on `brokers` with `properties` (a TOML
/// inline table, `{}` for none).
pub fn dead_letters_into_kafka(
    input: &std::path::Path,
    brokers: &str,
    topic: &str,
    properties: &str,
) -> String {
    std::fs::write(
        input,
        "{\"n\":1,\"format\":\"legacy\"}\n{\"n\":2,\"format\":\"legacy\"}\n",
    )
    .unwrap();
    format!(
        r#"
        [[pipeline]]
        name = "to-dead-letters"
        source = {{ type = "file", path = "{input}" }}
        transforms = [{{ plugin = "fault-picky" }}]
        sink = {{ type = "blackhole" }}
        dead_letter = {{ type = "kafka", brokers = "{brokers}", topic = "{topic}", properties = {properties} }}
        "#,
        input = input.display(),
    )
}
