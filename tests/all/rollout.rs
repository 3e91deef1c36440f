//! Staged rollouts through a running weir and its CLI: a shadow reports how its outputs differ
//! and writes none of them; a canary takes exactly its partitions of a real Kafka topic until it
//! is promoted or aborted, and a failing canary is aborted by itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;

use crate::hot_swap::{component, variant};
use crate::support::{kafka_brokers, line_count, read_json_lines, run_weir, unique, wait_for};
use crate::swappable::drop_in;

const WAIT: Duration = Duration::from_secs(120);

/// A running weir over `file`, with its admin address and token.
async fn start(file: PipelineFile, registry: &Path) -> (RunningApp, String, String) {
    let mut options = RunOptions::for_registry(registry);
    options.admin = Some("127.0.0.1:0".parse().unwrap());
    options.debounce = Duration::from_millis(20);
    options.cache = Some(crate::support::repo_root().join("target/test-plugins/cache"));
    let app = RunningApp::start(file, options).await.unwrap();
    let admin = app.admin_addr().unwrap().to_string();
    let token = app.admin_token().unwrap().expose().to_owned();
    (app, admin, token)
}

/// Runs `weir plugin ARGS... --admin ADMIN --admin-token TOKEN`; its stdout, after asserting
/// it succeeded.
fn plugin_cli(dir: &Path, args: &[&str], admin: &str, token: &str) -> String {
    let mut all = vec!["plugin"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--admin", admin, "--admin-token", token]);
    let output = run_weir(dir, &all);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "weir {all:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn stop(app: RunningApp) {
    app.shutdown_handle().send(true).unwrap();
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

/// A pipeline from a followed file through plugin `mask` to a file with headers; the file,
/// its input and its output.
fn file_pipeline(dir: &Path) -> (PipelineFile, std::path::PathBuf, std::path::PathBuf) {
    let input = dir.join("input.jsonl");
    std::fs::write(&input, "").unwrap();
    let out = dir.join("out.jsonl");
    let file = PipelineFile::parse(
        Path::new("shadow.toml"),
        &format!(
            r#"
            [[pipeline]]
            name = "shadow"
            source = {{ type = "file", path = "{}", follow = true }}
            transforms = [{{ plugin = "mask" }}]
            sink = {{ type = "file", path = "{}", encoding = "envelope" }}
            dead_letter = {{ type = "file", path = "{}/dlq.jsonl" }}
            batch = {{ size = 8, linger_ms = 5 }}
            "#,
            input.display(),
            out.display(),
            dir.display()
        ),
    )
    .unwrap();
    (file, input, out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_reports_the_share_of_records_it_changes_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    // The live version masks `email`; the candidate also masks `secret`, which one record in
    // four has: it changes exactly that share of records.
    drop_in(
        &registry,
        "mask.wasm",
        &variant(&component("pii-mask"), "live"),
    );
    drop_in(
        &registry,
        "mask.toml",
        b"version = \"1.0.0\"\n[config]\nfields = \"email\"\nmode = \"redact\"\n",
    );
    let (file, input, out) = file_pipeline(dir.path());
    let (app, admin, token) = start(file, &registry).await;
    let slot = app.slots().get("mask").unwrap();
    let live = slot.current().1.plugin.version().to_owned();

    let candidate_bytes = variant(&component("pii-mask"), "candidate");
    drop_in(&registry, "mask.candidate.wasm", &candidate_bytes);
    drop_in(
        &registry,
        "mask.candidate.toml",
        b"version = \"1.1.0\"\n[config]\nfields = \"email,secret\"\nmode = \"redact\"\n",
    );
    let said = plugin_cli(
        dir.path(),
        &["stage", "mask", "--shadow", "1"],
        &admin,
        &token,
    );
    let candidate = slot.rollout().expect("a staged candidate").version;
    assert!(said.contains(&candidate), "{said}");
    assert_ne!(candidate, live);
    let listing = plugin_cli(dir.path(), &["list"], &admin, &token);
    assert!(
        listing.contains(&format!("staged: {candidate} as shadow on every 1 batch")),
        "{listing}"
    );

    let records = 400u64;
    append(
        &input,
        (0..records).map(|n| {
            if n % 4 == 0 {
                format!(r#"{{"n":{n},"email":"u{n}@example.com","secret":"s{n}"}}"#)
            } else {
                format!(r#"{{"n":{n},"email":"u{n}@example.com"}}"#)
            }
        }),
    );
    let written = out.clone();
    wait_for("every record written", WAIT, move || {
        line_count(&written) >= records as usize
    })
    .await;
    let watched = std::sync::Arc::clone(&slot);
    wait_for("every record compared", WAIT, move || {
        watched
            .rollout()
            .and_then(|r| r.shadow)
            .is_some_and(|s| s.compared >= records)
    })
    .await;

    // Nothing of the shadow's was written: each record once, from the live version, secrets
    // unmasked.
    let outputs = read_json_lines(&out);
    assert_eq!(outputs.len(), records as usize);
    for output in &outputs {
        assert_eq!(output["headers"]["weir.version.mask"], live.as_str());
        let value: serde_json::Value =
            serde_json::from_str(output["value"].as_str().unwrap()).unwrap();
        assert_eq!(value["email"], "***");
        if let Some(secret) = value.get("secret") {
            assert!(secret.as_str().unwrap().starts_with('s'), "{value}");
        }
    }
    assert_eq!(line_count(&dir.path().join("dlq.jsonl")), 0);

    let shadow = slot.rollout().unwrap().shadow.unwrap();
    assert_eq!((shadow.compared, shadow.differing), (records, records / 4));
    assert_eq!(shadow.differing_share, 0.25);
    assert_eq!(shadow.failed, 0);
    assert_eq!(shadow.samples.len(), 20, "a bounded sample");
    assert!(shadow.samples[0].live.contains("\"secret\":\"s"));
    assert!(shadow.samples[0].candidate.contains("\"secret\":\"***\""));

    // The CLI, /metrics and the open API show the share; only the guarded diff shows records.
    let diff = plugin_cli(dir.path(), &["diff", "mask"], &admin, &token);
    assert!(diff.contains("25.00%"), "{diff}");
    assert!(diff.contains("\"secret\":\"***\""), "{diff}");
    let client = reqwest::Client::new();
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "weir_plugin_shadow_differing_ratio{{plugin=\"mask\",version=\"{candidate}\",rollout=\"shadow\"}} 0.25"
        )),
        "{metrics}"
    );
    let plugins: serde_json::Value = client
        .get(format!("http://{admin}/api/plugins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let staged = &plugins[0]["staged"]["shadow"];
    assert_eq!(staged["differing_share"], 0.25);
    assert_eq!(staged["samples"], serde_json::json!([]));
    let unauthorized = client
        .get(format!("http://{admin}/api/plugins/mask/diff"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), reqwest::StatusCode::UNAUTHORIZED);

    // Promoted, the candidate is live and its files replace the live version's.
    let said = plugin_cli(dir.path(), &["promote", "mask"], &admin, &token);
    assert!(said.contains(&candidate), "{said}");
    assert_eq!(slot.current().1.plugin.version(), candidate);
    assert!(slot.rollout().is_none());
    assert_eq!(
        std::fs::read(registry.join("mask.wasm")).unwrap(),
        candidate_bytes
    );
    assert!(!registry.join("mask.candidate.wasm").exists());
    append(
        &input,
        [r#"{"n":400,"email":"e","secret":"s400"}"#.to_owned()],
    );
    let written = out.clone();
    wait_for("the record after the promotion", WAIT, move || {
        line_count(&written) > records as usize
    })
    .await;
    let last = read_json_lines(&out).pop().unwrap();
    assert_eq!(last["headers"]["weir.version.mask"], candidate.as_str());
    assert!(
        last["value"]
            .as_str()
            .unwrap()
            .contains("\"secret\":\"***\"")
    );
    // The watcher saw the files move and found the version it already runs.
    assert!(app.slots().get("mask.candidate").is_none());
    assert_eq!(slot.current().1.plugin.version(), candidate);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_s_failures_are_counted_and_never_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    // Live: a pass-through. Candidate: the same, but it fails records that say `fail`.
    drop_in(&registry, "mask.wasm", &component("pii-mask"));
    drop_in(&registry, "mask.toml", b"[config]\nfields = \"none\"\n");
    let (file, input, out) = file_pipeline(dir.path());
    let (app, admin, token) = start(file, &registry).await;
    drop_in(
        &registry,
        "mask.candidate.wasm",
        &variant(&component("fault-panic"), "shadow"),
    );
    plugin_cli(
        dir.path(),
        &["stage", "mask", "--shadow", "1"],
        &admin,
        &token,
    );
    append(
        &input,
        (0..40).map(|n| {
            let note = if n % 10 == 0 { "fail" } else { "ok" };
            format!(r#"{{"n":{n},"note":"{note}"}}"#)
        }),
    );
    let slot = app.slots().get("mask").unwrap();
    let watched = std::sync::Arc::clone(&slot);
    wait_for("every record compared", WAIT, move || {
        watched
            .rollout()
            .and_then(|r| r.shadow)
            .is_some_and(|s| s.compared >= 40)
    })
    .await;
    let shadow = slot.rollout().unwrap().shadow.unwrap();
    assert_eq!((shadow.failed, shadow.differing), (4, 4), "{shadow:?}");
    assert!(
        shadow.samples[0]
            .candidate
            .starts_with("failed (plugin-failure)")
    );
    let written = out.clone();
    wait_for("every record written", WAIT, move || {
        line_count(&written) >= 40
    })
    .await;
    assert_eq!(
        line_count(&out),
        40,
        "each record once, from the live version"
    );
    assert_eq!(
        line_count(&dir.path().join("dlq.jsonl")),
        0,
        "the shadow's failures are never dead-lettered"
    );
    stop(app).await;
}

/// A Kafka topic of 6 partitions read by a running weir whose plugin `canary` is a pass-through,
/// written to a file with headers.
struct KafkaHarness {
    dir: tempfile::TempDir,
    registry: std::path::PathBuf,
    topic: String,
    out: std::path::PathBuf,
    app: RunningApp,
    admin: String,
    token: String,
    producer: FutureProducer,
}

const PARTITIONS: i32 = 6;

impl KafkaHarness {
    async fn start() -> Self {
        let brokers = kafka_brokers();
        let topic = unique("rollout");
        crate::services::create_topic(&brokers, &topic, PARTITIONS).await;
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry");
        std::fs::create_dir(&registry).unwrap();
        drop_in(
            &registry,
            "canary.wasm",
            &variant(&component("fault-panic"), "live"),
        );
        let out = dir.path().join("out.jsonl");
        let file = PipelineFile::parse(
            Path::new("canary.toml"),
            &format!(
                r#"
                [[pipeline]]
                name = "canary"
                source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}" }}
                transforms = [{{ plugin = "canary" }}]
                sink = {{ type = "file", path = "{out}", encoding = "envelope" }}
                dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
                batch = {{ size = 20, linger_ms = 5 }}
                "#,
                group = unique("group"),
                out = out.display(),
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let (app, admin, token) = start(file, &registry).await;
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        KafkaHarness {
            dir,
            registry,
            topic,
            out,
            app,
            admin,
            token,
            producer,
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        plugin_cli(self.dir.path(), args, &self.admin, &self.token)
    }

    fn live(&self) -> String {
        let slot = self.app.slots().get("canary").unwrap();
        slot.current().1.plugin.version().to_owned()
    }

    /// Places a candidate and stages it as a canary of a third of the partitions (the share
    /// resolved by the running weir against its source topic's 6 partitions).
    fn stage(&self, bytes: &[u8]) -> String {
        drop_in(&self.registry, "canary.candidate.wasm", bytes);
        self.cli(&["stage", "canary", "--canary", "33%"]);
        self.app
            .slots()
            .get("canary")
            .unwrap()
            .rollout()
            .expect("a staged candidate")
            .version
    }

    /// Produces `{"phase":PHASE,"p":P,"n":N,"note":NOTE}` to each partition P, `count` each.
    async fn produce(&self, phase: &str, partitions: &[i32], count: usize, note: &str) {
        crate::support::produce_phase(&self.producer, &self.topic, phase, partitions, count, note)
            .await;
    }

    /// Waits for `count` outputs of `phase`; the version each partition's outputs carry.
    async fn versions_of(&self, phase: &str, count: usize) -> BTreeMap<i64, Vec<String>> {
        let out = self.out.clone();
        let wanted = phase.to_owned();
        wait_for(
            &format!("{count} outputs of phase {phase}"),
            WAIT,
            move || phase_outputs(&out, &wanted).len() >= count,
        )
        .await;
        let mut versions: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (value, version) in phase_outputs(&self.out, phase) {
            let list = versions.entry(value["p"].as_i64().unwrap()).or_default();
            if !list.contains(&version) {
                list.push(version);
            }
        }
        versions
    }
}

/// The values and plugin versions of the outputs of `phase`.
fn phase_outputs(out: &Path, phase: &str) -> Vec<(serde_json::Value, String)> {
    if !out.exists() {
        return Vec::new();
    }
    read_json_lines(out)
        .into_iter()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line["value"].as_str()?).ok()?;
            (value["phase"] == phase).then(|| {
                let version = line["headers"]["weir.version.canary"]
                    .as_str()
                    .unwrap_or("none")
                    .to_owned();
                (value, version)
            })
        })
        .collect()
}

/// Each of the 6 partitions mapped to the one version its outputs carry.
fn expect(canary: &str, live: &str) -> BTreeMap<i64, Vec<String>> {
    (0..i64::from(PARTITIONS))
        .map(|p| {
            let version = if p < 2 { canary } else { live };
            (p, vec![version.to_owned()])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_runs_exactly_its_partitions_until_promoted_and_abort_returns_them() {
    let kafka = KafkaHarness::start().await;
    let all: Vec<i32> = (0..PARTITIONS).collect();
    let first = kafka.live();
    let second = kafka.stage(&variant(&component("fault-panic"), "second"));
    assert_ne!(first, second);

    // 33% of 6 partitions: partitions 0 and 1 run the candidate, the others the live version.
    kafka.produce("canary", &all, 30, "").await;
    assert_eq!(
        kafka.versions_of("canary", 180).await,
        expect(&second, &first)
    );

    // Promoted, every partition runs it.
    let said = kafka.cli(&["promote", "canary"]);
    assert!(said.contains(&second), "{said}");
    kafka.produce("promoted", &all, 30, "").await;
    assert_eq!(
        kafka.versions_of("promoted", 180).await,
        expect(&second, &second)
    );

    // A new canary, then aborted: its partitions return to the live version.
    let third = kafka.stage(&variant(&component("fault-panic"), "third"));
    kafka.produce("third", &all, 30, "").await;
    assert_eq!(
        kafka.versions_of("third", 180).await,
        expect(&third, &second)
    );
    let said = kafka.cli(&["abort", "canary"]);
    assert!(said.contains(&third), "{said}");
    kafka.produce("aborted", &all, 30, "").await;
    assert_eq!(
        kafka.versions_of("aborted", 180).await,
        expect(&second, &second)
    );
    assert_eq!(kafka.live(), second);
    stop(kafka.app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_canary_is_aborted_automatically() {
    let kafka = KafkaHarness::start().await;
    let live = kafka.live();
    // The candidate fails records whose value says `fail` (a plugin failure, which counts
    // against it). Only the canary's partitions get such records, so the live version sees none.
    let candidate = kafka.stage(&variant(&component("fault-panic"), "failing"));
    kafka
        .produce("good", &(0..PARTITIONS).collect::<Vec<_>>(), 10, "")
        .await;
    assert_eq!(
        kafka.versions_of("good", 60).await,
        expect(&candidate, &live)
    );
    kafka.produce("bad", &[0, 1], 70, "fail").await;
    let slot = kafka.app.slots().get("canary").unwrap();
    let watched = std::sync::Arc::clone(&slot);
    wait_for("the automatic abort", WAIT, move || {
        watched.rollout().is_none()
    })
    .await;
    let info = kafka
        .app
        .slots()
        .describe()
        .into_iter()
        .find(|s| s.name == "canary")
        .unwrap();
    let reason = info.last_abort.unwrap();
    assert!(reason.contains("automatic"), "{reason}");
    assert!(reason.contains("canary records failed"), "{reason}");
    assert_eq!(
        slot.current().1.plugin.version(),
        live,
        "the live version stays"
    );
    assert_eq!(slot.generation(), 0, "no swap and no rollback");
    let listing = kafka.cli(&["list"]);
    assert!(
        listing.contains(&format!("last rollout: aborted {candidate}: automatic")),
        "{listing}"
    );

    // Every partition is back on the live version.
    kafka
        .produce("after", &(0..PARTITIONS).collect::<Vec<_>>(), 10, "")
        .await;
    assert_eq!(kafka.versions_of("after", 60).await, expect(&live, &live));
    stop(kafka.app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_whose_manifest_changed_after_staging_is_promoted_but_its_files_stay() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let live_bytes = variant(&component("pii-mask"), "live");
    let live_manifest = b"version = \"1.0.0\"\n[config]\nfields = \"email\"\n";
    drop_in(&registry, "mask.wasm", &live_bytes);
    drop_in(&registry, "mask.toml", live_manifest);
    let (file, _input, _out) = file_pipeline(dir.path());
    let (app, admin, token) = start(file, &registry).await;
    let slot = app.slots().get("mask").unwrap();

    let candidate_bytes = variant(&component("pii-mask"), "candidate");
    drop_in(&registry, "mask.candidate.wasm", &candidate_bytes);
    drop_in(
        &registry,
        "mask.candidate.toml",
        b"version = \"1.1.0\"\n[config]\nfields = \"email\"\n",
    );
    plugin_cli(
        dir.path(),
        &["stage", "mask", "--shadow", "1"],
        &admin,
        &token,
    );
    let candidate = slot.rollout().expect("a staged candidate").version;
    // After the review, the candidate's manifest is widened in the folder.
    let widened =
        b"version = \"1.1.0\"\ncapabilities = [\"clock\"]\n[config]\nfields = \"email\"\n";
    std::fs::write(registry.join("mask.candidate.toml"), widened).unwrap();

    // The version reviewed is promoted; the files that are not what was staged are not adopted,
    // so a restart runs the live files, not a manifest nobody staged.
    plugin_cli(dir.path(), &["promote", "mask"], &admin, &token);
    assert_eq!(slot.current().1.plugin.version(), candidate);
    // Compared without printing: a component is half a megabyte.
    let holds = |file: &str, bytes: &[u8]| std::fs::read(registry.join(file)).unwrap() == bytes;
    assert!(
        holds("mask.wasm", &live_bytes),
        "mask.wasm is still the live version"
    );
    assert!(
        holds("mask.toml", live_manifest),
        "mask.toml is still the live manifest"
    );
    assert!(
        holds("mask.candidate.wasm", &candidate_bytes),
        "the candidate stays"
    );
    assert!(holds("mask.candidate.toml", widened), "its manifest stays");
    let leftovers: Vec<String> = std::fs::read_dir(&registry)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".promoting."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    stop(app).await;
}

/// Staging from the folder without a `NAME.candidate.wasm` says how to make one: copy the
/// built component to that name (`weir plugin build` only writes `NAME.wasm`), or stage it on
/// a fleet through the registry; never to build a plugin named `NAME.candidate`.
#[test]
fn staging_without_a_candidate_file_says_how_to_make_one() {
    use weir::registry::{Deployer, PluginRegistry, PluginSlots, RolloutPlan};
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("plugins");
    std::fs::create_dir(&registry).unwrap();
    drop_in(&registry, "mask.wasm", &component("fault-picky"));
    let (file, _, _) = file_pipeline(dir.path());
    let deployer = Deployer::new(
        PluginRegistry::new(&registry),
        crate::support::test_runtime(),
        PluginSlots::default(),
        &file,
    );
    deployer.deploy("mask").unwrap();
    let error = deployer
        .stage("mask", RolloutPlan::Shadow { every_nth_batch: 1 })
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("{}/mask.candidate.wasm", registry.display())),
        "{error}"
    );
    assert!(
        !error.contains("weir plugin build PATH/TO/mask.candidate"),
        "{error}"
    );
    assert!(
        error.contains("--shadow") && error.contains("copy"),
        "{error}"
    );
}
