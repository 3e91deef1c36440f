//! Watching a running weir: Kafka consumer lag counted from the committed offset, the status
//! page rendered by headless Chromium agreeing with the JSON API, and `weir tap` streaming the
//! records that leave each stage.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;

use crate::metrics::{parse, sample_with};
use crate::support::{kafka_brokers, plugin_registry, unique, weir, write_input};

/// Starts the pipelines of `toml` with the admin server on a free loopback port.
async fn start(toml: &str) -> RunningApp {
    let file =
        PipelineFile::parse(Path::new("observe.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    options.admin = Some("127.0.0.1:0".parse().unwrap());
    RunningApp::start(file, options).await.unwrap()
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Polls `/api/status` until `done` holds for it; fails naming `what` after two minutes.
async fn wait_for_status(app: &RunningApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let url = format!("http://{}/api/status", app.admin_addr().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = get_json(&url).await;
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last status:\n{status:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pipeline<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pipelines"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["pipeline"] == name))
        .unwrap_or_else(|| panic!("no pipeline {name} in {status:#}"))
}

/// The lag the pipeline reports for partition 0 of `topic`, once it reports one.
fn lag_of(status: &Value, name: &str, topic: &str) -> Option<i64> {
    pipeline(status, name)["lag"]
        .as_array()?
        .iter()
        .find(|p| p["topic"] == topic && p["partition"] == 0)
        .and_then(|p| p["lag"].as_i64())
}

async fn stop(app: RunningApp) {
    app.shutdown_handle().send(true).unwrap();
    // A pipeline whose dead letters could not be stored ends with an error; that is its job.
    let _ = app.wait().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_lag_counts_from_the_committed_offset_per_partition() {
    let brokers = kafka_brokers();
    let topic = unique("lag");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut generator = weir::generator::UserGenerator::new(5);
    let mut payloads: Vec<String> = (0..20).map(|_| generator.next_user().to_string()).collect();
    payloads.push("{\"not\":\"a user\"}".into());
    payloads.extend((0..20).map(|_| generator.next_user().to_string()));
    for payload in &payloads {
        producer
            .send(
                // One partition, so the order of the messages (and of the commits) is known.
                FutureRecord::<str, str>::to(&topic)
                    .partition(0)
                    .payload(payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let total = payloads.len() as i64;

    let dir = tempfile::tempdir().unwrap();
    // Two groups read the same 41 messages. `drained` stores its one dead letter and commits
    // everything; `stuck` cannot store it (its dead-letter database is down), so it commits
    // nothing from that record's batch on, although it has fetched every message.
    let app = start(&format!(
        r#"
        [[pipeline]]
        name = "drained"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{topic}-drained" }}
        transforms = [{{ plugin = "user-profile" }}]
        sink = {{ type = "blackhole" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        batch = {{ size = 5, linger_ms = 5 }}

        [[pipeline]]
        name = "stuck"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{topic}-stuck" }}
        transforms = [{{ plugin = "user-profile" }}]
        sink = {{ type = "blackhole" }}
        dead_letter = {{ type = "postgres", url = "postgres://weir:weir@127.0.0.1:1/weir", table = "dlq" }}
        batch = {{ size = 5, linger_ms = 5 }}
        "#,
        dlq = dir.path().join("dlq.jsonl").display()
    ))
    .await;

    let status = wait_for_status(
        &app,
        "drained to commit everything and stuck to retry",
        |s| {
            pipeline(s, "drained")["records_in"] == total
                && lag_of(s, "drained", &topic) == Some(0)
                && pipeline(s, "stuck")["dead_letter_retries"].as_u64() >= Some(2)
                && lag_of(s, "stuck", &topic).is_some()
        },
    )
    .await;
    let stuck = pipeline(&status, "stuck");
    let stuck_lag = lag_of(&status, "stuck", &topic).unwrap();
    // The bad record is message 20: at least it and the 20 after it are uncommitted.
    assert!(
        (21..=total).contains(&stuck_lag),
        "stuck lag {stuck_lag} should count every message after the last commit:\n{stuck:#}"
    );
    assert!(stuck["records_in"].as_i64().unwrap() <= 20, "{stuck:#}");
    assert_eq!(stuck["lag_total"].as_i64(), Some(stuck_lag));

    let text = reqwest::get(format!("http://{}/metrics", app.admin_addr().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = parse(&text);
    let lag_metric = |name: &str| {
        sample_with(
            &scrape,
            "weir_kafka_consumer_lag",
            &[("pipeline", name), ("topic", &topic), ("partition", "0")],
        )
    };
    assert_eq!(lag_metric("drained"), Some(0.0));
    let stuck_metric = lag_metric("stuck").unwrap();
    assert!((21.0..=total as f64).contains(&stuck_metric), "{text}");
    assert!(
        sample_with(
            &scrape,
            "weir_sink_retries_total",
            &[("pipeline", "stuck"), ("destination", "dead_letter")]
        )
        .unwrap()
            >= 2.0
    );
    stop(app).await;
}

/// Headless Chromium: `WEIR_CHROMIUM`, else `chromium` on the PATH (Debian's package, which
/// `scripts/test` installs). Panics with the fix when it is missing.
pub fn chromium() -> PathBuf {
    let candidate = std::env::var_os("WEIR_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("chromium"))
                    .find(|path| path.is_file())
            })
        });
    candidate.unwrap_or_else(|| {
        panic!("headless Chromium is needed for the status page test: install Debian's `chromium` package (scripts/test does), or point WEIR_CHROMIUM at a Chromium binary")
    })
}

/// Runs headless Chromium on `url` with `args`, letting the page's script run for a few
/// seconds of virtual time first.
fn run_chromium(url: &str, profile: &Path, args: &[&str]) -> Output {
    run_chromium_sized(url, profile, "1400,1100", args)
}

/// [`run_chromium`] in a window of `size` (`WIDTH,HEIGHT`): a screenshot shows that much.
pub fn run_chromium_sized(url: &str, profile: &Path, size: &str, args: &[&str]) -> Output {
    let output = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--window-size={size}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The text of the `data-field="FIELD"` cell in the element that carries `anchor` (an
/// attribute such as `data-pipeline="paged"`), as the page rendered it.
fn cell(dom: &str, anchor: &str, field: &str) -> String {
    let row = dom
        .find(anchor)
        .unwrap_or_else(|| panic!("no `{anchor}` in the page:\n{dom}"));
    let row_end = dom[row..].find("</tr>").map_or(dom.len(), |end| row + end);
    let marker = format!("data-field=\"{field}\"");
    let at = dom[row..row_end]
        .find(&marker)
        .unwrap_or_else(|| panic!("no {field} in the row of {anchor}"));
    let start = row + at + dom[row + at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end].to_owned()
}

fn number(text: &str) -> u64 {
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("`{text}` is not a count: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_in_chromium_shows_what_the_json_api_reports() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = weir::generator::UserGenerator::new(21);
    let mut lines: Vec<String> = (0..30).map(|_| generator.next_user().to_string()).collect();
    lines.insert(7, "{\"name\": \"<b>not</b> a user\"}".into());
    lines.push("not json at all".into());
    let input = write_input(dir.path(), &lines);
    let app = start(&format!(
        r#"
        [[pipeline]]
        name = "paged"
        source = {{ type = "file", path = "{input}", follow = true }}
        transforms = [{{ plugin = "user-profile" }}, {{ plugin = "pii-mask", config = {{ fields = "email" }} }}]
        sink = {{ type = "blackhole" }}
        dead_letter = {{ type = "file", path = "{}/dlq.jsonl" }}
        "#,
        dir.path().display()
    ))
    .await;
    let status = wait_for_status(&app, "every line to be acknowledged", |s| {
        pipeline(s, "paged")["records_in"] == 32
    })
    .await;
    let url = format!("http://{}/", app.admin_addr().unwrap());
    let profile = dir.path().join("chromium-profile");

    let dom = String::from_utf8(run_chromium(&url, &profile, &["--dump-dom"]).stdout).unwrap();
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never loaded its data:\n{dom}"
    );
    // It keeps polling: within the seconds Chromium gives its script it redrew more than once.
    let updates: u32 = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data-updates on the page:\n{dom}"));
    assert!(
        updates >= 2,
        "the page drew {updates} time(s): it does not poll"
    );
    let paged = pipeline(&status, "paged");
    let row = "data-pipeline=\"paged\"";
    for field in ["records_in", "records_out", "dead_lettered"] {
        assert_eq!(
            number(&cell(&dom, row, field)),
            paged[field].as_u64().unwrap(),
            "{field}"
        );
    }
    assert_eq!(number(&cell(&dom, row, "records_out")), 30);
    assert_eq!(number(&cell(&dom, row, "dead_lettered")), 2);
    let step = "data-step=\"paged/user-profile\"";
    let user_profile = &paged["plugins"][0];
    assert_eq!(user_profile["name"], "user-profile");
    for field in ["records_in", "records_out", "records_failed"] {
        assert_eq!(
            number(&cell(&dom, step, field)),
            user_profile[field].as_u64().unwrap(),
            "user-profile {field}"
        );
    }
    let plugin = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "user-profile")
        .unwrap();
    assert_eq!(
        cell(&dom, "data-plugin=\"user-profile\"", "version"),
        plugin["current"]["version"].as_str().unwrap()
    );
    // Both dead letters are listed with their reasons; the record's markup stays text.
    assert_eq!(dom.matches("data-dead-letter=").count(), 2);
    let newest = &paged["recent_dead_letters"][0];
    let reason = newest["error"].as_str().unwrap();
    assert!(
        dom.contains(
            &reason
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        ),
        "the newest reason `{reason}` is not on the page"
    );
    assert!(
        !dom.contains("<b>not</b>"),
        "record content must never become markup"
    );

    let screenshot = dir.path().join("status.png");
    run_chromium(
        &url,
        &profile,
        &[&format!("--screenshot={}", screenshot.display())],
    );
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a {} byte screenshot is blank",
        png.len()
    );
    if let Some(keep) = std::env::var_os("WEIR_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).unwrap();
    }

    // Ready while running; not ready once draining begins.
    let ready = format!("http://{}/ready", app.admin_addr().unwrap());
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 200);
    app.shutdown_handle().send(true).unwrap();
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 503);
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}

/// Runs `weir tap` against `app` with `args`.
async fn tap(app: &RunningApp, args: &[&str]) -> Output {
    let mut command = weir();
    command
        .arg("tap")
        .args(args)
        .arg("--admin")
        .arg(app.admin_addr().unwrap().to_string())
        .env("WEIR_ADMIN_TOKEN", app.admin_token().unwrap().expose());
    tokio::task::spawn_blocking(move || command.output().expect("weir runs"))
        .await
        .unwrap()
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn weir_tap_streams_the_records_leaving_each_stage() {
    let app = start(
        r#"
        [[pipeline]]
        name = "tapped"
        source = { type = "generate", rate = 500, seed = 3 }
        transforms = [{ plugin = "user-profile" }, { plugin = "pii-mask", config = { fields = "email", salt = "s" } }]
        sink = { type = "blackhole" }
        dead_letter = { type = "stdout" }
        batch = { size = 16, linger_ms = 10 }
        "#,
    )
    .await;

    let source = tap(&app, &["tapped", "--stage", "source", "--count", "3"]).await;
    assert!(
        source.status.success(),
        "{}",
        String::from_utf8_lossy(&source.stderr)
    );
    let records = json_lines(&source);
    assert_eq!(records.len(), 3);
    for record in &records {
        assert_eq!(record["pipeline"], "tapped");
        assert_eq!(record["stage"], "source");
        assert!(
            record["value"]["login"]["uuid"].is_string(),
            "raw users: {record}"
        );
        assert!(record["source"]["offset"].is_i64());
    }

    // Piped into a reader that stops early (`| head -1`): the tap ends quietly, as with a count.
    let mut piped = weir();
    piped
        .args(["tap", "tapped", "--stage", "source", "--admin"])
        .arg(app.admin_addr().unwrap().to_string())
        .env("WEIR_ADMIN_TOKEN", app.admin_token().unwrap().expose())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut child = piped.spawn().expect("weir runs");
        let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(first.contains("\"stage\":\"source\""), "{first}");
        drop(reader);
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        (child.wait().unwrap(), stderr)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("error"), "{stderr}");

    let mapped = tap(&app, &["tapped", "--stage", "user-profile", "--count", "5"]).await;
    assert!(
        mapped.status.success(),
        "{}",
        String::from_utf8_lossy(&mapped.stderr)
    );
    let records = json_lines(&mapped);
    assert_eq!(records.len(), 5);
    for record in &records {
        assert_eq!(record["stage"], "user-profile");
        let row = &record["value"];
        assert!(
            row["id"].is_string() && row["first_name"].is_string(),
            "{record}"
        );
        assert!(
            row["email"].as_str().unwrap().contains('@'),
            "not masked yet: {record}"
        );
        assert!(record["headers"]["weir.version.user-profile"].is_string());
    }

    let sink = tap(&app, &["tapped", "--count", "5"]).await;
    assert!(
        sink.status.success(),
        "{}",
        String::from_utf8_lossy(&sink.stderr)
    );
    for record in json_lines(&sink) {
        assert_eq!(record["stage"], "sink");
        let email = record["value"]["email"].as_str().unwrap();
        assert!(
            email.len() == 64 && email.chars().all(|c| c.is_ascii_hexdigit()),
            "masked at the sink: {record}"
        );
        assert!(record["headers"]["weir.version.pii-mask"].is_string());
    }

    let unknown_stage = tap(&app, &["tapped", "--stage", "nope", "--count", "1"]).await;
    assert!(!unknown_stage.status.success());
    let stderr = String::from_utf8_lossy(&unknown_stage.stderr);
    assert!(
        stderr.contains("no stage `nope`")
            && stderr.contains(r#"["source", "user-profile", "pii-mask", "sink", "dead_letter"]"#),
        "{stderr}"
    );
    let unknown_pipeline = tap(&app, &["missing", "--count", "1"]).await;
    assert!(!unknown_pipeline.status.success());
    let stderr = String::from_utf8_lossy(&unknown_pipeline.stderr);
    assert!(
        stderr.contains("no pipeline `missing`") && stderr.contains("tapped"),
        "{stderr}"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn weir_tap_ends_when_its_pipeline_ends_while_others_run_on() {
    let app = start(
        r#"
        [[pipeline]]
        name = "finite"
        source = { type = "generate", count = 2000, rate = 500, seed = 4 }
        transforms = [{ plugin = "user-profile" }]
        sink = { type = "blackhole" }
        dead_letter = { type = "stdout" }

        [[pipeline]]
        name = "endless"
        source = { type = "generate", rate = 50, seed = 5 }
        transforms = [{ plugin = "user-profile" }]
        sink = { type = "blackhole" }
        dead_letter = { type = "stdout" }
        "#,
    )
    .await;
    // No --count: only the end of `finite` ends the watch (the guard only reports a hang).
    let watched = tokio::time::timeout(
        Duration::from_secs(300),
        tap(&app, &["finite", "--stage", "sink"]),
    )
    .await
    .expect("weir tap ends once its pipeline has ended");
    let stderr = String::from_utf8_lossy(&watched.stderr);
    assert!(watched.status.success(), "{stderr}");
    assert!(stderr.contains("the pipeline ended"), "{stderr}");
    app.shutdown_handle().send_replace(true);
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}
