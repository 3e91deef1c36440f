//! The fleet's registry in a compacted Kafka topic: components larger than the broker's message
//! limit travel in chunks and come back byte for byte; every `weir run --registry` process
//! deploys each published version with the folder watcher's checks, rejects a bad one with the
//! same log line, and follows a rollback record; and three processes in one consumer group take
//! a new version mid-stream while one is killed and restarted and another joins, losing nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use sha2::{Digest, Sha256};
use weir::registry::kafka::{Publisher, RegistryAddress, read_catalog};

use crate::services::create_topic;
use crate::support::{
    kafka_brokers, plugin_registry, repo_root, run_weir, send_numbered, unique, wait_for, weir,
};

/// The pass-through test plugin every test here deploys (it refuses only records containing
/// `legacy`, which none does).
const PLUGIN: &str = "fault-picky";
const VERSION_HEADER: &str = "weir.version.fault-picky";
const REJECTED: &str = "Plugin rejected; the running version keeps running.";

/// `bytes` with a custom section of `pad` bytes appended: the same code, another version.
fn variant(bytes: &[u8], tag: &str, pad: usize) -> Vec<u8> {
    let name = b"weir-test-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    payload.resize(payload.len() + pad, 0);
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

fn version_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..12].to_owned()
}

fn picky() -> Vec<u8> {
    std::fs::read(plugin_registry().join(format!("{PLUGIN}.wasm"))).unwrap()
}

/// Writes `bytes` as `dir/tag/fault-picky.wasm` and publishes it with `weir plugin publish`.
fn publish(dir: &Path, registry: &RegistryAddress, bytes: &[u8], tag: &str) -> String {
    publish_with(dir, registry, bytes, tag, &[])
}

/// [`publish`] with more flags (`--shadow N`, `--canary-partitions LIST`).
fn publish_with(
    dir: &Path,
    registry: &RegistryAddress,
    bytes: &[u8],
    tag: &str,
    flags: &[&str],
) -> String {
    let folder = dir.join(tag);
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join(format!("{PLUGIN}.wasm"));
    std::fs::write(&file, bytes).unwrap();
    let registry = registry.to_string();
    let mut args = vec![
        "plugin",
        "publish",
        file.to_str().unwrap(),
        "--registry",
        &registry,
        "--label",
        tag,
    ];
    args.extend_from_slice(flags);
    let output = run_weir(dir, &args);
    assert!(
        output.status.success(),
        "publish {tag}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    version_of(bytes)
}

fn new_registry(brokers: &str) -> RegistryAddress {
    format!("kafka://{brokers}/{}", unique("weir-registry"))
        .parse()
        .unwrap()
}

/// One `weir run --registry` process, logging JSON to a file, writing envelopes to `out`.
struct Member {
    name: String,
    child: Child,
    log: PathBuf,
    out: PathBuf,
}

impl Member {
    fn start(dir: &Path, name: &str, source: &str, registry: &RegistryAddress) -> Member {
        let out = dir.join(format!("{name}.jsonl"));
        let toml = format!(
            "[[pipeline]]\nname = \"{name}\"\nsource = {{ {source} }}\ntransforms = [{{ plugin = \"{PLUGIN}\" }}]\nsink = {{ type = \"file\", path = \"{}\", encoding = \"envelope\" }}\ndead_letter = {{ type = \"file\", path = \"{name}.dlq.jsonl\" }}\nbatch = {{ size = 500, linger_ms = 5 }}\n",
            out.display()
        );
        std::fs::write(dir.join(format!("{name}.toml")), toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = weir()
            .current_dir(dir)
            .args([
                "run",
                &format!("{name}.toml"),
                "--registry",
                &registry.to_string(),
                "--admin",
                "127.0.0.1:0",
            ])
            // An empty folder: the registry is the only source of plugins.
            .env("WEIR_PLUGINS", dir.join("no-plugins"))
            .env(
                "WEIR_CACHE_DIR",
                repo_root().join("target/test-plugins/fleet-cache"),
            )
            .env("WEIR_LOG", "info")
            .env("WEIR_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Member {
            name: name.to_owned(),
            child,
            log,
            out,
        }
    }

    fn logs(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Whether it logged an error before activating anything (a failed start).
    fn failed(&self) -> bool {
        self.activated().is_empty() && self.logs().iter().any(|l| l["level"] == "ERROR")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The versions it activated, in order.
    fn activated(&self) -> Vec<String> {
        self.logs()
            .iter()
            .filter(|l| l["message"] == "Plugin activated." && l["plugin"] == PLUGIN)
            .filter_map(|l| l["version"].as_str().map(str::to_owned))
            .collect()
    }

    fn runs(&self, version: &str) -> bool {
        self.activated().last().is_some_and(|v| v == version)
    }

    /// Whether its log has a line saying `message` with `field` equal to `version`.
    fn logged(&self, message: &str, field: &str, version: &str) -> bool {
        self.logs()
            .iter()
            .any(|l| l["message"] == message && l[field] == version)
    }

    /// The log lines saying a version was rejected.
    fn rejections(&self) -> Vec<serde_json::Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["message"] == REJECTED)
            .collect()
    }

    /// `host/pid`, as its heartbeat names it.
    fn identity(&self) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        format!("{host}/{}", self.child.id())
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit, which must be clean.
    fn terminate(mut self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "{} exits 0 on SIGTERM: {status}",
            self.name
        );
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weir ARGS` in `dir`, which must succeed; its output.
fn run_weir_ok(dir: &Path, args: &[&str]) -> std::process::Output {
    let output = run_weir(dir, args);
    assert!(
        output.status.success(),
        "weir {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// One output line: the record's number and the plugin version that wrote it.
fn outputs(file: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line["value"].as_str()?).ok()?;
            Some((
                value["n"].as_u64()?,
                line["headers"][VERSION_HEADER].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn listing(dir: &Path, registry: &RegistryAddress) -> String {
    let output = run_weir_ok(
        dir,
        &["plugin", "list", "--registry", &registry.to_string()],
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The processes `weir plugin list` shows on `version`'s line.
fn listed_on(listing: &str, version: &str) -> String {
    listing
        .lines()
        .find(|line| line.trim_start_matches(['*', ' ']).starts_with(version))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_larger_than_a_broker_message_round_trips_in_chunks() {
    let brokers = kafka_brokers();
    let registry = new_registry(&brokers);
    let dir = tempfile::tempdir().unwrap();
    // 3 MiB of custom section: six chunks, each under the broker's default 1 MB limit.
    let big = variant(&picky(), "big", 3 * 1024 * 1024);
    assert!(big.len() > 3 * 1024 * 1024);
    let version = publish(dir.path(), &registry, &big, "big");

    let (catalog, _) = read_catalog(&registry, None).unwrap();
    let head = &catalog.heads()[PLUGIN];
    assert_eq!(head.version, version);
    let published = catalog.published(PLUGIN, &head.sha256).unwrap();
    assert_eq!(
        published.chunks, 7,
        "3 MiB and the component in 512 KiB chunks"
    );
    assert_eq!(published.label.as_deref(), Some("big"));
    let (bytes, manifest) = catalog.component(PLUGIN, &head.sha256).unwrap();
    assert!(
        bytes == big,
        "the chunks reassemble the component byte for byte"
    );
    assert_eq!(manifest.version.as_deref(), Some("big"));

    // A process deploys it from the chunks, with no plugin folder.
    let topic = unique("fleet-big-in");
    create_topic(&brokers, &topic, 1).await;
    let source = format!(
        "type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{}\"",
        unique("fleet-big")
    );
    let member = Member::start(dir.path(), "big", &source, &registry);
    wait_for(
        "the process to deploy the chunked version",
        Duration::from_secs(180),
        || member.runs(&version) || member.failed(),
    )
    .await;
    assert!(member.runs(&version), "{}", member.log_text());
    member.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_process_rejects_a_bad_version_and_follows_a_rollback_record() {
    let brokers = kafka_brokers();
    let registry = new_registry(&brokers);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let topic = unique("fleet-rollback-in");
    create_topic(&brokers, &topic, 2).await;
    let source = format!(
        "type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{}\", session_timeout_ms = 6000, heartbeat_interval_ms = 1000",
        unique("fleet-rollback")
    );
    let v1 = publish(dir, &registry, &variant(&picky(), "v1", 0), "v1");
    let members = [
        Member::start(dir, "one", &source, &registry),
        Member::start(dir, "two", &source, &registry),
    ];
    wait_for("both processes on v1", Duration::from_secs(180), || {
        members.iter().all(|m| m.runs(&v1))
    })
    .await;
    let v2 = publish(dir, &registry, &variant(&picky(), "v2", 0), "v2");
    wait_for("both processes on v2", Duration::from_secs(180), || {
        members.iter().all(|m| m.runs(&v2))
    })
    .await;

    // `weir plugin publish` refuses a component built for another contract...
    let wrong = std::fs::read(plugin_registry().join("fault-wrong-version.wasm")).unwrap();
    let refused_dir = dir.join("refused");
    std::fs::create_dir_all(&refused_dir).unwrap();
    let refused_file = refused_dir.join(format!("{PLUGIN}.wasm"));
    std::fs::write(&refused_file, &wrong).unwrap();
    let refused = run_weir(
        dir,
        &[
            "plugin",
            "publish",
            refused_file.to_str().unwrap(),
            "--registry",
            &registry.to_string(),
        ],
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("not published"), "{said}");
    // ...and one that reaches the topic anyway (another publisher, no validation) is rejected by
    // every process, each with the folder watcher's line, and v2 keeps running.
    let publisher = Publisher::new(&registry).unwrap();
    publisher
        .publish(PLUGIN, &wrong, "", Some("bad"), None)
        .await
        .unwrap();
    wait_for(
        "both processes to reject the bad version",
        Duration::from_secs(120),
        || members.iter().all(|m| !m.rejections().is_empty()),
    )
    .await;
    let bad = version_of(&wrong);
    for member in &members {
        let rejection = &member.rejections()[0];
        let file = rejection["file"].as_str().unwrap();
        assert!(
            file.contains(&registry.topic) && file.contains(&bad),
            "{rejection}"
        );
        assert!(
            rejection["reason"]
                .as_str()
                .unwrap()
                .contains("weir:plugin@"),
            "{rejection}"
        );
        assert!(member.runs(&v2), "{} keeps v2", member.name);
    }

    // A rollback record (to v1, by its label) rolls every process back.
    run_weir_ok(
        dir,
        &[
            "plugin",
            "rollback",
            PLUGIN,
            "--registry",
            &registry.to_string(),
            "--to",
            "v1",
        ],
    );
    wait_for(
        "both processes back on v1",
        Duration::from_secs(120),
        || members.iter().all(|m| m.runs(&v1)),
    )
    .await;
    for member in &members {
        assert!(
            member
                .logs()
                .iter()
                .any(|l| l["message"] == "Plugin rolled back by the registry."),
            "{}",
            member.log_text()
        );
    }
    // The listing: every version, v1 the head, both processes on it (their next heartbeat).
    let identities: Vec<String> = members.iter().map(Member::identity).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let list = loop {
        let list = listing(dir, &registry);
        let on_v1 = listed_on(&list, &v1);
        if identities.iter().all(|id| on_v1.contains(id.as_str())) {
            break list;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(list.contains(&format!("(head {v1})")), "{list}");
    for version in [&v1, &v2, &bad] {
        assert!(list.contains(version.as_str()), "{list}");
    }
    // `weir validate --registry` checks the pipeline against the registry's head.
    let validated = run_weir(
        dir,
        &["validate", "one.toml", "--registry", &registry.to_string()],
    );
    let said = String::from_utf8_lossy(&validated.stdout);
    assert!(
        validated.status.success() && said.contains(&format!("{PLUGIN}@{v1}")),
        "{said}{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    let [one, two] = members;
    one.terminate();
    two.terminate();
}

/// `weir plugin rollback NAME --registry` without `--to` returns to the previous head: not a
/// candidate that was staged and aborted, nor a version the fleet was rolled back from.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_without_to_returns_to_the_previous_head() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let registry = new_registry(&kafka_brokers());
    let address = registry.to_string();
    let base = picky();
    let rollback = |expect_success: bool| {
        let output = run_weir(dir, &["plugin", "rollback", PLUGIN, "--registry", &address]);
        assert_eq!(
            output.status.success(),
            expect_success,
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let head = || {
        read_catalog(&registry, Some(BTreeSet::new()))
            .unwrap()
            .0
            .heads()[PLUGIN]
            .version
            .clone()
    };

    let v1 = publish(dir, &registry, &variant(&base, "v1", 0), "v1");
    let v2 = publish(dir, &registry, &variant(&base, "v2", 0), "v2");
    rollback(true);
    assert_eq!(head(), v1);
    // v3 is staged as a shadow and aborted: it never becomes the head.
    let v3 = publish_with(
        dir,
        &registry,
        &variant(&base, "v3", 0),
        "v3",
        &["--shadow", "1"],
    );
    run_weir_ok(
        dir,
        &[
            "plugin",
            "abort",
            PLUGIN,
            "--registry",
            &address,
            "--reason",
            "no",
        ],
    );
    let v4 = publish(dir, &registry, &variant(&base, "v4", 0), "v4");
    assert_eq!(head(), v4);

    let said = String::from_utf8(rollback(true).stdout).unwrap();
    assert!(said.contains(&format!("from {v4} to {v1}")), "{said}");
    assert_eq!(
        head(),
        v1,
        "neither the aborted candidate {v3} nor {v2}, rolled back from"
    );
    // v1 was the first head: nothing earlier to return to.
    let refused = String::from_utf8(rollback(false).stderr).unwrap();
    assert!(refused.contains("--to"), "{refused}");
    assert_eq!(head(), v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_deletes_old_versions_but_never_one_in_use_and_the_fleet_carries_on() {
    let brokers = kafka_brokers();
    let registry = new_registry(&brokers);
    let address = registry.to_string();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let topic = unique("fleet-prune-in");
    create_topic(&brokers, &topic, 1).await;
    let source = format!(
        "type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{}\"",
        unique("fleet-prune")
    );
    let v: Vec<String> = (1..=4)
        .map(|i| {
            let tag = format!("v{i}");
            publish(dir, &registry, &variant(&picky(), &tag, 0), &tag)
        })
        .collect();
    let one = Member::start(dir, "one", &source, &registry);
    wait_for("the process on v4", Duration::from_secs(180), || {
        one.runs(&v[3])
    })
    .await;
    // A head the process rejects: it keeps running v4, which only its heartbeat now names.
    let wrong = std::fs::read(plugin_registry().join("fault-wrong-version.wasm")).unwrap();
    let bad = version_of(&wrong);
    Publisher::new(&registry)
        .unwrap()
        .publish(PLUGIN, &wrong, "", Some("bad"), None)
        .await
        .unwrap();
    wait_for(
        "the process to reject the bad version",
        Duration::from_secs(120),
        || !one.rejections().is_empty(),
    )
    .await;
    let identity = one.identity();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !listed_on(&listing(dir, &registry), &v[3]).contains(&identity) {
        assert!(
            Instant::now() < deadline,
            "no heartbeat on v4: {}",
            listing(dir, &registry)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Keep one: the newest (the bad head) stays, and v4 because a process runs it.
    let prune = |dry_run: bool| {
        let mut args = vec![
            "plugin",
            "prune",
            PLUGIN,
            "--registry",
            &address,
            "--keep",
            "1",
        ];
        if dry_run {
            args.push("--dry-run");
        }
        String::from_utf8(run_weir_ok(dir, &args).stdout).unwrap()
    };
    let said = prune(true);
    assert!(said.contains("would prune 3 versions"), "{said}");
    for old in &v[..3] {
        assert!(said.contains(old.as_str()), "{said}");
    }
    assert!(listing(dir, &registry).contains(&v[0]), "a dry run deleted");
    let said = prune(false);
    assert!(
        said.contains("pruned 3 versions") && said.contains("kept 2"),
        "{said}"
    );
    let list = listing(dir, &registry);
    for old in &v[..3] {
        assert!(
            !list.contains(old.as_str()),
            "{old} is still listed: {list}"
        );
    }
    assert!(
        list.contains(&v[3]) && list.contains(&format!("(head {bad})")),
        "{list}"
    );
    let said = prune(false);
    assert!(said.contains("nothing to prune"), "{said}");

    // A pruned version cannot be rolled back to.
    let refused = run_weir(
        dir,
        &[
            "plugin",
            "rollback",
            PLUGIN,
            "--registry",
            &address,
            "--to",
            "v1",
        ],
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("has no version `v1`"),
        "{said}"
    );

    // The running process read the tombstones and still follows the topic; a process that
    // starts now reads the pruned topic and deploys the head.
    let v5 = publish(dir, &registry, &variant(&picky(), "v5", 0), "v5");
    let two = Member::start(dir, "two", &source, &registry);
    wait_for("both processes on v5", Duration::from_secs(180), || {
        one.runs(&v5) && two.runs(&v5)
    })
    .await;
    assert_eq!(one.rejections().len(), 1, "{}", one.log_text());
    one.terminate();
    two.terminate();
}

/// As `wait_for`, polling every half second: the conditions on output files parse every line
/// written so far, which polling every 10 ms would turn into a busy loop beside the processes.
async fn wait_patiently(what: &str, timeout: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Records produced per tick of [`produce_steadily`].
const PER_TICK: u64 = 300;

/// Produces `{"n": N}` for N in `0..total` to partition N % `partitions`, [`PER_TICK`] records
/// every 100 ms (about 3,000 a second), so the stream is still flowing while versions change and
/// processes die. Stores in `begun` the first record of each tick before sending it.
fn produce_steadily(
    brokers: &str,
    topic: &str,
    partitions: u64,
    total: u64,
    begun: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let topic = topic.to_owned();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        let mut next = 0;
        while next < total {
            ticker.tick().await;
            let end = (next + PER_TICK).min(total);
            begun.store(next, Ordering::SeqCst);
            send_numbered(
                &producer,
                &topic,
                partitions,
                next..end,
                Duration::from_secs(60),
            )
            .await;
            next = end;
        }
    })
}

/// The proof: three processes in one consumer group over six partitions and 300,000
/// records. A new version is published mid-stream, one process is killed with SIGKILL and
/// restarted, and one more joins. Every record arrives (duplicates are counted and reported),
/// every live process ends on the new version, and every record produced once all processes ran
/// it was written by it, on every partition.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_takes_a_new_version_mid_stream_through_a_kill_a_restart_and_a_join() {
    const PARTITIONS: u64 = 6;
    const RECORDS: u64 = 300_000;
    /// Written before the new version is published.
    const MID_STREAM: u64 = 30_000;
    let brokers = kafka_brokers();
    let registry = new_registry(&brokers);
    let topic = unique("fleet-in");
    let group = unique("fleet-group");
    create_topic(&brokers, &topic, PARTITIONS as i32).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let source = format!(
        "type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{group}\", session_timeout_ms = 6000, heartbeat_interval_ms = 1000"
    );
    let begun = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let v1 = publish(dir, &registry, &variant(&picky(), "v1", 0), "v1");
    let mut members = vec![
        Member::start(dir, "a", &source, &registry),
        Member::start(dir, "b", &source, &registry),
        Member::start(dir, "c", &source, &registry),
    ];
    wait_for("three processes on v1", Duration::from_secs(240), || {
        members.iter().all(|m| m.runs(&v1))
    })
    .await;
    let producing = produce_steadily(&brokers, &topic, PARTITIONS, RECORDS, Arc::clone(&begun));
    let written =
        |members: &[Member]| -> usize { members.iter().map(|m| outputs(&m.out).len()).sum() };
    wait_patiently(
        "the fleet to be mid-stream",
        Duration::from_secs(600),
        || written(&members) as u64 >= MID_STREAM,
    )
    .await;

    // Mid-stream: the new version is published, one process dies, comes back, one joins; the
    // stream goes on throughout.
    let v2 = publish(dir, &registry, &variant(&picky(), "v2", 0), "v2");
    let published_at = started.elapsed();
    members[1].kill();
    members.push(Member::start(dir, "b-again", &source, &registry));
    members.push(Member::start(dir, "d", &source, &registry));
    let live = [0usize, 2, 3, 4];
    wait_for("every live process on v2", Duration::from_secs(300), || {
        live.iter().all(|&i| members[i].runs(&v2))
    })
    .await;
    // Every record from the tick after the one under way was sent after all of them ran v2.
    let swapped = begun.load(Ordering::SeqCst) + PER_TICK;
    println!(
        "v2 published after {published_at:?}; every live process ran it after {:?}, records from {swapped} on were produced after that",
        started.elapsed(),
    );
    assert!(swapped < RECORDS, "the stream ended before the swap");
    producing.await.unwrap();

    let files: Vec<PathBuf> = members.iter().map(|m| m.out.clone()).collect();
    let all_outputs = || -> Vec<(u64, String)> { files.iter().flat_map(|f| outputs(f)).collect() };
    wait_patiently("every record", Duration::from_secs(1200), || {
        let seen: BTreeSet<u64> = all_outputs().into_iter().map(|(n, _)| n).collect();
        seen.len() as u64 >= RECORDS
    })
    .await;
    println!(
        "all {RECORDS} records written after {:?}",
        started.elapsed()
    );

    // Every live process ends on v2, and says so in the fleet topic.
    let identities: Vec<String> = live.iter().map(|&i| members[i].identity()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = listing(dir, &registry);
        let on_v2 = listed_on(&list, &v2);
        if identities.iter().all(|id| on_v2.contains(id.as_str())) {
            assert!(list.contains(&format!("(head {v2})")), "{list}");
            break;
        }
        assert!(Instant::now() < deadline, "not every process on v2: {list}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for &i in &live {
        assert!(members[i].runs(&v2), "{} ends on v2", members[i].name);
    }

    let mut per_file: Vec<Vec<(u64, String)>> = files.iter().map(|f| outputs(f)).collect();
    let mut copies: BTreeMap<u64, u32> = BTreeMap::new();
    for (n, _) in per_file.iter().flatten() {
        *copies.entry(*n).or_insert(0) += 1;
    }
    let missing: Vec<u64> = (0..RECORDS).filter(|n| !copies.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates = copies.values().filter(|&&c| c > 1).count();
    let on = |version: &str| {
        per_file
            .iter()
            .flatten()
            .filter(|(_, v)| v == version)
            .count()
    };
    println!(
        "records {RECORDS}, lost 0, duplicates {duplicates} (re-delivered after the kill), written by v1 {}, by v2 {}",
        on(&v1),
        on(&v2)
    );
    assert!(on(&v1) > 0 && on(&v2) > 0, "the swap happened mid-stream");
    // After the swap point every partition's output is on v2: each record produced once every
    // live process ran v2 was written by v2 in every copy, and within each process's output of
    // each partition, v1 never follows v2.
    for (file, lines) in files.iter().zip(per_file.iter_mut()) {
        let mut on_v2: BTreeSet<u64> = BTreeSet::new();
        for (n, version) in lines.iter() {
            let partition = n % PARTITIONS;
            assert!(
                *n < swapped || *version == v2,
                "record {n} (partition {partition}), produced after the swap, written by {version} in {}",
                file.display()
            );
            if *version == v2 {
                on_v2.insert(partition);
            } else {
                assert!(
                    !on_v2.contains(&partition),
                    "partition {partition} went back to {version} after v2 in {}",
                    file.display()
                );
            }
        }
    }
    let partitions_on_v2: BTreeSet<u64> = copies
        .keys()
        .filter(|&&n| n >= swapped)
        .map(|n| n % PARTITIONS)
        .collect();
    assert_eq!(partitions_on_v2.len(), PARTITIONS as usize);
    for i in [4, 3, 2, 0] {
        members.remove(i).terminate();
    }
}

/// Every output line of `members` whose value is of `phase`: each partition's plugin versions.
fn phase_versions(members: &[&Member], phase: &str) -> (usize, BTreeMap<i64, BTreeSet<String>>) {
    let mut count = 0;
    let mut versions: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for member in members {
        let text = std::fs::read_to_string(&member.out).unwrap_or_default();
        for line in text.lines() {
            let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(value) = line["value"]
                .as_str()
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            else {
                continue;
            };
            if value["phase"] != phase {
                continue;
            }
            count += 1;
            let version = line["headers"][VERSION_HEADER].as_str().unwrap_or("none");
            versions
                .entry(value["p"].as_i64().unwrap())
                .or_default()
                .insert(version.to_owned());
        }
    }
    (count, versions)
}

/// Produces `per_partition` records of `phase` to each of `partitions` partitions and waits
/// until the members wrote them all; returns each partition's plugin versions.
async fn produce_phase(
    brokers: &str,
    topic: &str,
    members: &[&Member],
    phase: &str,
    partitions: i32,
    per_partition: usize,
) -> BTreeMap<i64, BTreeSet<String>> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let all: Vec<i32> = (0..partitions).collect();
    crate::support::produce_phase(&producer, topic, phase, &all, per_partition, "").await;
    let expected = per_partition * partitions as usize;
    wait_patiently(
        &format!("{expected} outputs of phase {phase}"),
        Duration::from_secs(180),
        || phase_versions(members, phase).0 >= expected,
    )
    .await;
    phase_versions(members, phase).1
}

/// Each of `partitions` partitions mapped to the one version its outputs carry: `canary` for
/// those in `canaried`, `live` for the rest.
fn expected_versions(
    partitions: i32,
    canaried: &[i64],
    canary: &str,
    live: &str,
) -> BTreeMap<i64, BTreeSet<String>> {
    (0..i64::from(partitions))
        .map(|p| {
            let version = if canaried.contains(&p) { canary } else { live };
            (p, BTreeSet::from([version.to_owned()]))
        })
        .collect()
}

/// Staged rollouts through the registry: a canary published with `--canary 33%` (no partition
/// count: each process resolves it against its source's 6 partitions) runs on exactly
/// partitions 0 and 1 in every process until `promote --registry` makes it every
/// process's version; a shadow published with `--shadow 1` is staged on every process (and on
/// one that joins during the rollout), writes nothing, and `abort --registry` drops it
/// everywhere; a canary aborted by the automatic rule in the one process that saw it fail is
/// aborted in every process.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_published_to_the_registry_stages_promotes_and_aborts_on_every_process() {
    const PARTITIONS: i32 = 6;
    let brokers = kafka_brokers();
    let registry = new_registry(&brokers);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let topic = unique("fleet-rollout-in");
    create_topic(&brokers, &topic, PARTITIONS).await;
    let source = format!(
        "type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{}\", session_timeout_ms = 6000, heartbeat_interval_ms = 1000",
        unique("fleet-rollout")
    );
    let v1 = publish(dir, &registry, &variant(&picky(), "v1", 0), "v1");
    let one = Member::start(dir, "one", &source, &registry);
    let two = Member::start(dir, "two", &source, &registry);
    wait_for("both processes on v1", Duration::from_secs(180), || {
        one.runs(&v1) && two.runs(&v1)
    })
    .await;
    let both = [&one, &two];

    // A canary of 33%: partitions 0 and 1 of 6, staged on both processes; the head stays v1.
    let v2 = publish_with(
        dir,
        &registry,
        &variant(&picky(), "v2", 0),
        "v2",
        &["--canary", "33%"],
    );
    wait_for(
        "both processes to stage v2",
        Duration::from_secs(120),
        || {
            both.iter()
                .all(|m| m.logged("Plugin candidate staged.", "candidate", &v2))
        },
    )
    .await;
    assert_eq!(
        produce_phase(&brokers, &topic, &both, "canary", PARTITIONS, 20).await,
        expected_versions(PARTITIONS, &[0, 1], &v2, &v1)
    );

    // Promoted through the registry: every partition of every process runs v2.
    run_weir_ok(
        dir,
        &[
            "plugin",
            "promote",
            PLUGIN,
            "--registry",
            &registry.to_string(),
        ],
    );
    wait_for(
        "both processes to promote v2",
        Duration::from_secs(120),
        || {
            both.iter()
                .all(|m| m.logged("Plugin candidate promoted by the registry.", "version", &v2))
        },
    )
    .await;
    assert_eq!(
        produce_phase(&brokers, &topic, &both, "promoted", PARTITIONS, 20).await,
        expected_versions(PARTITIONS, &[], &v2, &v2)
    );

    // A shadow: staged on both, and on a process that joins during the rollout; it writes
    // nothing, so every output still carries v2.
    let v3 = publish_with(
        dir,
        &registry,
        &variant(&picky(), "v3", 0),
        "v3",
        &["--shadow", "1"],
    );
    let three = Member::start(dir, "three", &source, &registry);
    let all = [&one, &two, &three];
    wait_for(
        "every process to stage v3",
        Duration::from_secs(180),
        || {
            all.iter()
                .all(|m| m.logged("Plugin candidate staged.", "candidate", &v3))
        },
    )
    .await;
    assert!(three.runs(&v2), "{}", three.log_text());
    assert_eq!(
        produce_phase(&brokers, &topic, &all, "shadow", PARTITIONS, 20).await,
        expected_versions(PARTITIONS, &[], &v2, &v2)
    );
    // The listing names the candidate and, once every process has sent a heartbeat since, the
    // processes that run it.
    let identities: Vec<String> = all.iter().map(|m| m.identity()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = listing(dir, &registry);
        let line = list
            .lines()
            .find(|l| l.contains(&format!("candidate {v3}")))
            .unwrap_or_default()
            .to_owned();
        if line.contains("a shadow on every 1 batch(es)")
            && identities.iter().all(|id| line.contains(id.as_str()))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Aborted through the registry: dropped on every process, with the reason given.
    run_weir_ok(
        dir,
        &[
            "plugin",
            "abort",
            PLUGIN,
            "--registry",
            &registry.to_string(),
            "--reason",
            "diff too large",
        ],
    );
    wait_for(
        "every process to abort v3",
        Duration::from_secs(120),
        || {
            all.iter()
                .all(|m| m.logged("Plugin rollout aborted.", "candidate", &v3))
        },
    )
    .await;
    for member in all {
        let abort = member
            .logs()
            .into_iter()
            .find(|l| l["message"] == "Plugin rollout aborted.")
            .unwrap();
        assert!(
            abort["reason"].as_str().unwrap().contains("diff too large"),
            "{abort}"
        );
    }
    let list = listing(dir, &registry);
    assert!(!list.contains("candidate "), "{list}");
    assert!(list.contains(&format!("(head {v2})")), "{list}");
    // Nothing is staged any more: another abort is refused with what to do.
    let again = run_weir(
        dir,
        &[
            "plugin",
            "abort",
            PLUGIN,
            "--registry",
            &registry.to_string(),
        ],
    );
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("has no candidate staged"), "{said}");

    // A canary that fails (`fault-panic` fails records containing `fail`, a failure by the
    // version's fault): the process that owns partition 0 aborts it by the automatic rule (more
    // than 100 of its first 200 records failing) and publishes the abort, so every process
    // drops it, though the others never saw a failure.
    let v4 = publish_with(
        dir,
        &registry,
        &variant(&crate::hot_swap::component("fault-panic"), "v4", 0),
        "v4",
        &["--canary", "33%"],
    );
    wait_for(
        "every process to stage v4",
        Duration::from_secs(120),
        || {
            all.iter()
                .all(|m| m.logged("Plugin candidate staged.", "candidate", &v4))
        },
    )
    .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    crate::support::produce_phase(&producer, &topic, "failing", &[0], 110, "fail").await;
    wait_for(
        "every process to abort v4",
        Duration::from_secs(120),
        || {
            all.iter()
                .all(|m| m.logged("Plugin rollout aborted.", "candidate", &v4))
        },
    )
    .await;
    let reasons: Vec<String> = all
        .iter()
        .map(|m| {
            m.logs()
                .into_iter()
                .filter(|l| l["message"] == "Plugin rollout aborted." && l["candidate"] == v4)
                .map(|l| l["reason"].as_str().unwrap_or_default().to_owned())
                .next()
                .unwrap()
        })
        .collect();
    let by_rule = reasons
        .iter()
        .filter(|r| r.starts_with("automatic:"))
        .count();
    let by_registry = reasons
        .iter()
        .filter(|r| r.contains("aborted in the registry") && r.contains("automatic:"))
        .count();
    assert_eq!((by_rule, by_registry), (1, 2), "{reasons:#?}");
    let list = listing(dir, &registry);
    assert!(!list.contains("candidate "), "{list}");
    for member in all {
        assert!(
            !member.logs().iter().any(|l| l["message"]
                .as_str()
                .is_some_and(|m| m.contains("rolled back"))),
            "the live version v2 stays: {}",
            member.log_text()
        );
    }
    for member in [one, two, three] {
        member.terminate();
    }
}

/// `/metrics` of `member`, from the address its `Admin API listening.` line names.
fn scrape_metrics(member: &Member) -> String {
    use std::io::{Read, Write};
    let addr = member
        .logs()
        .iter()
        .find(|line| line["message"] == "Admin API listening.")
        .and_then(|line| line["addr"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no `Admin API listening.` line in:\n{}", member.log_text()));
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the `fault-picky` series of counter `name` in `metrics`.
fn plugin_counter(metrics: &str, name: &str) -> u64 {
    let series = format!("{name}{{plugin=\"{PLUGIN}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

/// A rollback written to the registry counts, on every process that follows it, as the
/// rollback it is (the rollbacks counter the `WeirPluginRolledBack` alert watches, and the
/// status page's history), not as one more swap.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_rollback_counts_as_a_rollback_on_each_process() {
    let brokers = kafka_brokers();
    let registry = new_registry(&brokers);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let topic = unique("fleet-counted-in");
    create_topic(&brokers, &topic, 1).await;
    let source = format!(
        "type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{}\"",
        unique("fleet-counted")
    );
    let v1 = publish(dir, &registry, &variant(&picky(), "v1", 0), "v1");
    let member = Member::start(dir, "one", &source, &registry);
    wait_for("the process on v1", Duration::from_secs(180), || {
        member.runs(&v1)
    })
    .await;
    let v2 = publish(dir, &registry, &variant(&picky(), "v2", 0), "v2");
    wait_for("the process on v2", Duration::from_secs(120), || {
        member.runs(&v2)
    })
    .await;
    let metrics = scrape_metrics(&member);
    assert_eq!(plugin_counter(&metrics, "weir_plugin_rollbacks_total"), 0);
    let swaps = plugin_counter(&metrics, "weir_plugin_swaps_total");

    run_weir_ok(
        dir,
        &[
            "plugin",
            "rollback",
            PLUGIN,
            "--registry",
            &registry.to_string(),
        ],
    );
    wait_for("the process back on v1", Duration::from_secs(120), || {
        member.runs(&v1)
    })
    .await;
    let metrics = scrape_metrics(&member);
    assert_eq!(
        plugin_counter(&metrics, "weir_plugin_rollbacks_total"),
        1,
        "{metrics}"
    );
    // A rollback is a change of the active version too, as a local one is.
    assert_eq!(
        plugin_counter(&metrics, "weir_plugin_swaps_total"),
        swaps + 1
    );
    member.terminate();
}

/// A process following the registry never touches the plugin folder: promoting the candidate
/// it staged from the registry leaves a `NAME.candidate.wasm` holding the same component where
/// it is (a folder promotion would move it over `NAME.wasm`).
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_promotion_leaves_the_plugin_folder_alone() {
    let brokers = kafka_brokers();
    let registry = new_registry(&brokers);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let topic = unique("fleet-folder-in");
    create_topic(&brokers, &topic, 1).await;
    let source = format!(
        "type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{}\"",
        unique("fleet-folder")
    );
    let v2_bytes = variant(&picky(), "v2", 0);
    // The folder `Member` names as WEIR_PLUGINS, holding the very candidate the registry stages.
    let folder = dir.join("no-plugins");
    std::fs::create_dir_all(&folder).unwrap();
    let candidate = folder.join(format!("{PLUGIN}.candidate.wasm"));
    std::fs::write(&candidate, &v2_bytes).unwrap();

    let v1 = publish(dir, &registry, &variant(&picky(), "v1", 0), "v1");
    let member = Member::start(dir, "one", &source, &registry);
    wait_for("the process on v1", Duration::from_secs(180), || {
        member.runs(&v1)
    })
    .await;
    let v2 = publish_with(dir, &registry, &v2_bytes, "v2", &["--shadow", "1"]);
    wait_for("the process to stage v2", Duration::from_secs(120), || {
        member.logged("Plugin candidate staged.", "candidate", &v2)
    })
    .await;
    run_weir_ok(
        dir,
        &[
            "plugin",
            "promote",
            PLUGIN,
            "--registry",
            &registry.to_string(),
        ],
    );
    wait_for(
        "the process to promote v2",
        Duration::from_secs(120),
        || member.logged("Plugin candidate promoted by the registry.", "version", &v2),
    )
    .await;
    member.terminate();
    assert!(
        std::fs::read(&candidate).is_ok_and(|bytes| bytes == v2_bytes),
        "the candidate file stays where it was, unchanged"
    );
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [format!("{PLUGIN}.candidate.wasm")]);
}

/// `weir plugin publish` validates `init` under the limits it is given, as the fleet's
/// pipelines would run it: a memory cap below what the component needs refuses it, and the
/// engine's per-component limits are taken as `weir run` takes them.
#[test]
fn publish_validates_under_the_limits_its_flags_give() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let registry = new_registry(&kafka_brokers()).to_string();
    let file = dir.join(format!("{PLUGIN}.wasm"));
    std::fs::write(&file, picky()).unwrap();
    let file = file.to_str().unwrap();

    // Rust components start with more than one MiB of linear memory.
    let refused = run_weir(
        dir,
        &[
            "plugin",
            "publish",
            file,
            "--registry",
            &registry,
            "--memory-mib",
            "1",
        ],
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("not published") && said.contains("memory"),
        "{said}"
    );

    let accepted = run_weir(
        dir,
        &[
            "plugin",
            "publish",
            file,
            "--registry",
            &registry,
            "--memory-mib",
            "128",
            "--deadline-ms",
            "5000",
            "--max-core-instances",
            "64",
            "--max-memories",
            "8",
            "--max-tables",
            "16",
        ],
    );
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}

/// A rollback the fleet's registry decided leaves the process's history as a local rollback
/// does: the version rolled back from is gone, so `POST /plugins/NAME/rollback` on that process
/// goes on to an earlier version, never back to the one the fleet abandoned, and the status
/// page does not show it as the previous version.
#[test]
fn a_registry_rollback_drops_the_abandoned_version_from_the_history() {
    use weir::registry::{PluginSlots, PluginVersion, RollbackPolicy};
    use weir::runtime::LoadedPlugin;

    let runtime = crate::support::test_runtime();
    let base = picky();
    let version = |tag: &str| {
        PluginVersion::bare(
            LoadedPlugin::from_bytes(&runtime, PLUGIN, &variant(&base, tag, 0)).unwrap(),
        )
    };
    let slots = PluginSlots::new(RollbackPolicy {
        window: 4,
        max_failure_ratio: 0.5,
    });
    let (v0, v1, v2) = (version("v0"), version("v1"), version("v2"));
    let live = |slot: &weir::registry::PluginSlot| slot.current().1.plugin.version().to_owned();
    let history = || -> Vec<String> {
        slots.describe()[0]
            .history
            .iter()
            .map(|v| v.version.clone())
            .collect()
    };
    let slot = slots.activate(v0.clone());
    slot.activate(v1.clone());
    slot.activate(v2.clone());
    assert_eq!(history(), [v1.plugin.version(), v0.plugin.version()]);

    // The fleet goes back from v2 to v1.
    slots.activate_rollback(v1.clone(), "the fleet's registry rolled it back");
    assert_eq!(live(&slot), v1.plugin.version());
    assert_eq!(
        history(),
        [v0.plugin.version()],
        "neither v2, rolled back from, nor v1, active"
    );
    assert_eq!(slots.describe()[0].rollbacks, 1);

    // A local rollback then goes on to v0, not back to v2.
    let back = slots.rollback(PLUGIN).unwrap();
    assert_eq!(back.plugin.version(), v0.plugin.version());
    assert!(history().is_empty(), "{:?}", history());
}
