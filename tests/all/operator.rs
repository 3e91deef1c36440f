//! What an operator looks at: the status page's charts and pipeline diagram rendered by
//! headless Chromium over a running Kafka pipeline (with a hot swap and a rollback marked), the
//! Grafana dashboard and Prometheus alert rules in deploy/ checked against what a running weir
//! exports, and the plain progress lines long commands print when stderr is not a terminal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;

use crate::observe::run_chromium_sized;
use crate::services::create_topic;
use crate::support::{kafka_brokers, plugin_registry, repo_root, unique};

/// A registry folder of its own (watched, so a test can swap plugins in it) holding copies of
/// `plugins` from the test registry; compiled code comes from the test registry's cache.
fn registry_with(dir: &Path, plugins: &[&str]) -> RunOptions {
    let registry = dir.join("registry");
    std::fs::create_dir(&registry).unwrap();
    for plugin in plugins {
        std::fs::copy(
            plugin_registry().join(format!("{plugin}.wasm")),
            registry.join(format!("{plugin}.wasm")),
        )
        .unwrap();
    }
    let mut options = RunOptions::for_registry(&registry);
    options.cache = Some(plugin_registry().join(".cache"));
    options.debounce = Duration::from_millis(50);
    options.admin = Some("127.0.0.1:0".parse().unwrap());
    options
}

/// A generator publishing `rate` users/s into a new 3-partition topic, and `process` reading it
/// through user-profile and pii-mask into a blackhole.
async fn start_kafka_pipelines(dir: &Path, options: RunOptions, rate: u32) -> (RunningApp, String) {
    let brokers = kafka_brokers();
    let topic = unique("operator");
    create_topic(&brokers, &topic, 3).await;
    let toml = format!(
        r#"
        [[pipeline]]
        name = "publish"
        source = {{ type = "generate", rate = {rate}, seed = 7 }}
        sink = {{ type = "kafka", brokers = "{brokers}", topic = "{topic}" }}
        dead_letter = {{ type = "file", path = "{dir}/publish-dlq.jsonl" }}
        batch = {{ size = 50, linger_ms = 20 }}

        [[pipeline]]
        name = "process"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{topic}", offset_reset = "earliest" }}
        transforms = [{{ plugin = "user-profile" }}, {{ plugin = "pii-mask", config = {{ fields = "email,phone" }} }}]
        sink = {{ type = "blackhole" }}
        dead_letter = {{ type = "file", path = "{dir}/process-dlq.jsonl" }}
        batch = {{ size = 50, linger_ms = 20 }}
        "#,
        dir = dir.display()
    );
    let file =
        PipelineFile::parse(Path::new("operator.toml"), &toml).unwrap_or_else(|e| panic!("{e}"));
    (RunningApp::start(file, options).await.unwrap(), topic)
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Polls `url` until `done` holds for its JSON; fails naming `what` after two minutes.
async fn wait_for_json(url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let value = get_json(url).await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last answer:\n{value:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The values of series `name` of `group` in a history.
fn series<'a>(history: &'a Value, group: &str, name: &str) -> Vec<&'a Value> {
    history["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["group"] == group && s["name"] == name)
        .map(|s| s["values"].as_array().unwrap().iter().collect())
        .unwrap_or_default()
}

/// Points measured (not null) of series `name` of `group`.
fn measured(history: &Value, group: &str, name: &str) -> usize {
    series(history, group, name)
        .iter()
        .filter(|v| !v.is_null())
        .count()
}

/// The same component with a custom section appended: a new version (hash) of the same code.
fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"weir-test-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

fn current_version(plugins: &Value, name: &str) -> String {
    plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["current"]["version"].as_str())
        .unwrap_or_else(|| panic!("no plugin {name} in {plugins:#}"))
        .to_owned()
}

/// The value of attribute `attribute` in every element that has `anchor` in its start tag.
fn attributes(dom: &str, anchor: &str, attribute: &str) -> Vec<String> {
    let marker = format!("{attribute}=\"");
    dom.match_indices(anchor)
        .filter_map(|(at, _)| {
            let start = dom[..at].rfind('<')?;
            let end = at + dom[at..].find('>')?;
            let tag = &dom[start..end];
            let value = tag.split(&marker).nth(1)?;
            Some(value[..value.find('"')?].to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_charts_the_last_minutes_and_marks_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let options = registry_with(dir.path(), &["user-profile", "pii-mask"]);
    let registry = options.registry.clone();
    let (app, topic) = start_kafka_pipelines(dir.path(), options, 300).await;
    let admin = app.admin_addr().unwrap();
    let history_url = format!("http://{admin}/api/pipelines/process/history");
    wait_for_json(
        &history_url,
        "a few seconds of records through process",
        |h| {
            measured(h, "throughput", "in") >= 3
                && series(h, "throughput", "in")
                    .iter()
                    .any(|v| v.as_f64() > Some(0.0))
                && h["series"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["group"] == "lag")
        },
    )
    .await;

    // Some records no plugin can read: the dead-letter chart and edge show them.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    for n in 0..20 {
        producer
            .send(
                FutureRecord::<str, str>::to(&topic).payload(&format!("not json {n}")),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }

    // A new version of pii-mask lands in the folder, then an operator rolls it back.
    let plugins_url = format!("http://{admin}/api/plugins");
    let before = current_version(&get_json(&plugins_url).await, "pii-mask");
    let bytes = std::fs::read(registry.join("pii-mask.wasm")).unwrap();
    let temporary = registry.join(".pii-mask.wasm.partial");
    std::fs::write(&temporary, variant(&bytes, "operator-2")).unwrap();
    std::fs::rename(&temporary, registry.join("pii-mask.wasm")).unwrap();
    let history = wait_for_json(&history_url, "the swap to be on the time axis", |h| {
        h["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "swap" && e["plugin"] == "pii-mask" && e["from"] == before)
    })
    .await;
    let swapped = current_version(&get_json(&plugins_url).await, "pii-mask");
    assert_ne!(swapped, before);
    let swaps_seen = history["times"].as_array().unwrap().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let response = reqwest::Client::new()
        .post(format!("http://{admin}/api/plugins/pii-mask/rollback"))
        .bearer_auth(app.admin_token().unwrap().expose())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let history = wait_for_json(
        &history_url,
        "the rollback, dead letters and later samples",
        |h| {
            h["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "rollback" && e["to"] == before)
                && h["times"].as_array().unwrap().len() >= swaps_seen + 6
                && series(h, "throughput", "dead-lettered")
                    .iter()
                    .any(|v| v.as_f64() > Some(0.0))
        },
    )
    .await;
    assert_eq!(
        current_version(&get_json(&plugins_url).await, "pii-mask"),
        before
    );
    // The diagram in the JSON: source -> user-profile -> pii-mask -> sink, and dead letters.
    let kinds: Vec<&str> = history["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["source", "plugin", "plugin", "sink", "dead_letter"]);

    let profile = dir.path().join("chromium-profile");
    let url = format!("http://{admin}/");
    let output = run_chromium_sized(&url, &profile, "1400,1100", &["--dump-dom"]);
    let dom = String::from_utf8(output.stdout).unwrap();
    assert!(
        dom.contains("data-card=\"process\""),
        "no card for process:\n{dom}"
    );
    // Each plugin box shows the live version.
    let plugins = get_json(&plugins_url).await;
    let versions = attributes(&dom, "data-stage=\"plugin\"", "data-version");
    for plugin in ["user-profile", "pii-mask"] {
        let version = current_version(&plugins, plugin);
        assert!(
            versions.contains(&version),
            "the diagram shows versions {versions:?}, not {plugin}'s {version}"
        );
        assert!(
            dom.contains(&format!(">{version}<")),
            "{plugin}'s version {version} is not written in its box"
        );
    }
    // The charts have lines of more than one point.
    for chart in [
        "throughput",
        "dead_letters",
        "lag",
        "batch_latency",
        "plugin_latency",
        "plugin_cpu",
    ] {
        let points: Vec<usize> =
            attributes(&dom, &format!("data-chart=\"{chart}\""), "data-points")
                .iter()
                .map(|p| p.parse().unwrap())
                .collect();
        assert!(
            points.iter().any(|&p| p > 1),
            "chart {chart} has {points:?} points:\n{dom}"
        );
    }
    // The swap and the rollback are marked on the time axis of every chart.
    let swap_marks = attributes(&dom, "data-marker=\"swap\"", "data-for");
    assert!(
        swap_marks.contains(&format!("pii-mask@{swapped}")),
        "no swap marker: {swap_marks:?}"
    );
    let rollback_marks = attributes(&dom, "data-marker=\"rollback\"", "data-for");
    assert!(
        rollback_marks.contains(&format!("pii-mask@{before}")),
        "no rollback marker: {rollback_marks:?}"
    );
    // The edges carry rates (publish: source -> sink and its dead letters; process: three
    // arrows and its dead letters); the dead-letter branch is drawn.
    assert!(dom.contains("data-stage=\"dead_letter\""));
    assert_eq!(dom.matches("data-field=\"edge-rate\"").count(), 6);

    let screenshot = dir.path().join("status.png");
    run_chromium_sized(
        &url,
        &profile,
        "1400,1250",
        &[&format!("--screenshot={}", screenshot.display())],
    );
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 30_000,
        "a {} byte screenshot is blank",
        png.len()
    );
    if let Some(keep) = std::env::var_os("WEIR_STATUS_SCREENSHOT") {
        let keep = screenshot_destination(Path::new(&keep));
        std::fs::copy(&screenshot, &keep).unwrap_or_else(|e| {
            panic!(
                "cannot copy the screenshot to {} (WEIR_STATUS_SCREENSHOT; a relative path is from the repository root, and its folder must exist): {e}",
                keep.display()
            )
        });
    }
    app.shutdown_handle().send(true).unwrap();
    for (name, result) in app.wait().await {
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Where `WEIR_STATUS_SCREENSHOT` asks for the screenshot: a relative path is from the
/// repository root (cargo runs the tests in host/, where `docs/status-page.png` has no folder).
fn screenshot_destination(keep: &Path) -> PathBuf {
    if keep.is_absolute() {
        keep.to_owned()
    } else {
        repo_root().join(keep)
    }
}

#[test]
fn a_relative_screenshot_path_is_from_the_repository_root() {
    assert_eq!(
        screenshot_destination(Path::new("docs/status-page.png")),
        repo_root().join("docs/status-page.png")
    );
    assert!(repo_root().join("docs").is_dir(), "the README's folder");
    assert_eq!(
        screenshot_destination(Path::new("/tmp/status.png")),
        Path::new("/tmp/status.png")
    );
}

/// `promtool`: `WEIR_PROMTOOL`, else on the PATH (Debian's `prometheus` package, which
/// `scripts/ensure-toolchain --with-chromium` installs). Panics with the fix when missing.
fn promtool() -> PathBuf {
    std::env::var_os("WEIR_PROMTOOL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("promtool"))
                    .find(|path| path.is_file())
            })
        })
        .unwrap_or_else(|| {
            panic!("promtool is needed to check deploy/prometheus/rules.yml: install Debian's `prometheus` package (scripts/ensure-toolchain --with-chromium does), or point WEIR_PROMTOOL at it")
        })
}

/// Every `weir_…` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices("weir_") {
        let preceded = at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if preceded {
            continue;
        }
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| at + n);
        names.insert(text[at..end].to_owned());
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_alert_rules_name_only_metrics_weir_exports() {
    let rules = repo_root().join("deploy/prometheus/rules.yml");
    let output = std::process::Command::new(promtool())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let rules_yaml: serde_yaml::Value = serde_yaml::from_str(&rules_text).unwrap();
    let alerts: Vec<&str> = rules_yaml["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        alerts,
        [
            "WeirKafkaLagGrowing",
            "WeirDeadLetterRateHigh",
            "WeirPluginRolledBack",
            "WeirNotReady",
            "WeirSinkRetriesSustained",
            "WeirCommitsFailing",
            "WeirKafkaRecordsDeletedUnread"
        ]
    );
    let dashboard_text =
        std::fs::read_to_string(repo_root().join("deploy/grafana/weir.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard_text).unwrap();
    let mut expressions = Vec::new();
    collect_expressions(&dashboard, &mut expressions);
    assert!(expressions.len() >= 15, "{expressions:?}");
    let named: BTreeSet<String> = metric_names(&expressions.join("\n"))
        .into_iter()
        .chain(metric_names(&rules_text))
        .collect();

    // A running weir with a Kafka source (so lag is reported) and plugins.
    let dir = tempfile::tempdir().unwrap();
    let options = registry_with(dir.path(), &["user-profile", "pii-mask"]);
    let (app, _) = start_kafka_pipelines(dir.path(), options, 100).await;
    let admin = app.admin_addr().unwrap();
    let metrics_url = format!("http://{admin}/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let exported = loop {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Names of series present, not only announced by `# TYPE`.
        let exported: BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(metric_names)
            .collect();
        if named.is_subset(&exported) {
            break exported;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deploy/ names metrics weir does not export: {:?}\n{text}",
            named.difference(&exported).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(exported.contains("weir_kafka_consumer_lag"));
    app.shutdown_handle().send(true).unwrap();
    for (name, result) in app.wait().await {
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Every PromQL expression of a dashboard: panel targets, variables, annotations.
fn collect_expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(text)) => out.push(text.clone()),
                    ("query", Value::String(text)) => out.push(text.clone()),
                    _ => collect_expressions(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_expressions(v, out)),
        _ => {}
    }
}

/// Off a terminal (stderr is a pipe here), long commands print progress as plain lines with
/// counts and rates: no carriage returns or escape sequences of a redrawn bar.
#[test]
fn long_commands_print_plain_progress_lines_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let registry = plugin_registry();
    let bench = crate::support::weir()
        .args([
            "bench",
            "plugin",
            "--records",
            "32",
            "--seconds",
            "0.05",
            "--plugins",
        ])
        .arg(registry)
        .output()
        .expect("the weir binary runs");
    let stderr = String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success(), "{stderr}");
    // Three batch sizes, each measured native and Wasm in alternating rounds; the last line
    // says so.
    assert!(
        stderr.contains("bench plugin: 3/3 batch sizes ("),
        "no final count line:\n{stderr}"
    );
    assert!(
        stderr.contains("bench plugin: measured (3 batch sizes in "),
        "no summary line:\n{stderr}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "terminal control characters off a terminal:\n{stderr:?}"
    );

    let build = crate::support::weir()
        .current_dir(repo_root())
        .args(["plugin", "build", "plugins/filter", "--plugins"])
        .arg(dir.path())
        .env("CARGO_TARGET_DIR", repo_root().join("target/test-plugins"))
        .output()
        .expect("the weir binary runs");
    let stderr = String::from_utf8_lossy(&build.stderr);
    assert!(build.status.success(), "{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("building filter: built ("))
        .unwrap_or_else(|| panic!("no summary line:\n{stderr}"));
    // Every crate of the build counts, compiled now or fresh from an earlier build.
    let crates: u64 = summary["building filter: built (".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no crate count in `{summary}`"));
    assert!(crates >= 3, "{summary}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "{stderr:?}"
    );
    assert!(dir.path().join("filter.wasm").is_file());
}
