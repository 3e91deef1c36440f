//! Faults a production stream meets: a plugin trying to leave its sandbox, a graceful shutdown
//! mid-stream, a dead-letter destination that is down, a sink that fails while the source is
//! idle, and secrets that must never reach logs, metrics or error messages. These run the real
//! `weir` binary where the process boundary matters.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{
    FileRun, append_numbered, line_count, postgres_client, postgres_url, read_json_lines,
    serve_http, unique, wait_for, weir,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_escape_its_sandbox() {
    let lines: Vec<String> = [
        "calm 0", "recurse", "calm 1", "file", "socket", "env", "calm 2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let files = FileRun::new(&lines);
    let report = files
        .run("escape", r#"transforms = [{ plugin = "fault-escape" }]"#)
        .await;
    assert_eq!((report.records_out, report.dead_lettered), (3, 4));
    let output = std::fs::read_to_string(&files.out).unwrap();
    assert!(!output.contains("ESCAPED"), "{output}");
    let dead = read_json_lines(&files.dlq);
    let reason = |i: usize| {
        dead[i]["headers"]["weir.error"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(dead[0]["headers"]["weir.error.kind"], "trap");
    // Rust guests keep large frames on a shadow stack in linear memory, which runs out (an
    // out-of-bounds access) before wasmtime's stack limit (call stack exhausted): either is a trap.
    assert!(
        reason(0).contains("call stack exhausted")
            || reason(0).contains("out of bounds memory access"),
        "{}",
        reason(0)
    );
    assert!(reason(1).starts_with("file access denied"), "{}", reason(1));
    assert!(reason(2).starts_with("socket denied"), "{}", reason(2));
    assert_eq!(reason(3), "environment is empty");
}

/// A running `weir run` whose stderr is collected as it comes.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) stderr: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

pub(crate) fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Running {
    let mut command = weir();
    command
        .current_dir(dir)
        .args(["run", config, "--no-watch"])
        .env("WEIR_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&stderr);
    let pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    Running {
        child,
        stderr,
        reader,
    }
}

impl Running {
    pub(crate) async fn wait_for_log(&self, needle: &str) {
        let stderr = Arc::clone(&self.stderr);
        let needle_owned = needle.to_owned();
        wait_for(
            &format!("`{needle}` in the log"),
            Duration::from_secs(60),
            move || stderr.lock().unwrap().contains(&needle_owned),
        )
        .await;
    }

    /// Sends SIGTERM and waits for the exit; true when it exited successfully.
    pub(crate) fn terminate(self) -> (bool, String) {
        self.signal("-TERM")
    }

    /// Sends `signal` (`-TERM`, or `-INT` as Ctrl-C does) and waits for the exit; true when it
    /// exited successfully.
    pub(crate) fn signal(mut self, signal: &str) -> (bool, String) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        (exit.success(), self.log_to_the_end())
    }

    /// Waits up to `timeout` for the process to exit by itself: whether it exited successfully,
    /// or `None` when it had to be killed.
    async fn exit(mut self, timeout: Duration) -> (Option<bool>, String) {
        let deadline = tokio::time::Instant::now() + timeout;
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break Some(exit.success());
            }
            if tokio::time::Instant::now() >= deadline {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        (exit, self.log_to_the_end())
    }

    /// The whole log of an exited process: the reader thread ends with the pipe.
    fn log_to_the_end(self) -> String {
        self.reader.join().unwrap();
        self.stderr.lock().unwrap().clone()
    }
}

/// The first run ends with SIGTERM (as a service manager stops it), the second with SIGINT (as
/// Ctrl-C does): both drain and commit.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_commits_and_a_restart_neither_loses_nor_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    append_numbered(&input, 0..20_000);
    std::fs::write(
        dir.path().join("p.toml"),
        format!(
            "[[pipeline]]\nname = \"drain\"\nsource = {{ type = \"file\", path = \"{}\", follow = true, checkpoint = \"{}\" }}\nsink = {{ type = \"file\", path = \"{}\" }}\ndead_letter = {{ type = \"file\", path = \"dlq.jsonl\" }}\nbatch = {{ size = 100, linger_ms = 5 }}\n",
            input.display(),
            dir.path().join("in.offset").display(),
            out.display()
        ),
    )
    .unwrap();
    let first = start(dir.path(), "p.toml", &[("WEIR_ADMIN", "127.0.0.1:0")]);
    let out_path = out.clone();
    wait_for("some output", Duration::from_secs(60), move || {
        line_count(&out_path) >= 1_000
    })
    .await;
    let (clean, log) = first.terminate();
    assert!(clean, "SIGTERM exits 0 after draining:\n{log}");
    assert!(log.contains("Shutdown signal received"), "{log}");

    append_numbered(&input, 20_000..25_000);
    let second = start(dir.path(), "p.toml", &[("WEIR_ADMIN", "127.0.0.1:0")]);
    let out_path = out.clone();
    wait_for("all output", Duration::from_secs(120), move || {
        line_count(&out_path) >= 25_000
    })
    .await;
    append_numbered(&input, 25_000..30_000);
    let out_path = out.clone();
    wait_for(
        "output after the second append",
        Duration::from_secs(60),
        move || line_count(&out_path) >= 26_000,
    )
    .await;
    let (clean, log) = second.signal("-INT");
    assert!(clean, "SIGINT exits 0 after draining:\n{log}");
    assert!(log.contains("Shutdown signal received"), "{log}");

    // The second run may have drained everything before its signal: the third gets lines of
    // its own, so waiting for them proves it ran, however fast the second one was.
    append_numbered(&input, 30_000..35_000);
    let third = start(dir.path(), "p.toml", &[("WEIR_ADMIN", "127.0.0.1:0")]);
    let out_path = out.clone();
    wait_for(
        "the rest of the output",
        Duration::from_secs(120),
        move || line_count(&out_path) >= 35_000,
    )
    .await;
    let (clean, log) = third.terminate();
    assert!(clean, "{log}");
    let mut ns: Vec<u64> = read_json_lines(&out)
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns.len(), 35_000, "nothing repeated after the restarts");
    ns.sort();
    ns.dedup();
    assert_eq!(ns.len(), 35_000, "nothing lost");
}

/// What a clean stop leaves in the log: the signal acknowledged, nothing failed.
fn assert_clean_stop(moment: &str, clean: bool, log: &str) {
    assert!(clean, "SIGTERM {moment} exits 0:\n{log}");
    assert!(
        log.contains("Shutdown signal received"),
        "SIGTERM {moment} is acknowledged:\n{log}"
    );
    assert!(
        !log.contains("ERROR") && !log.contains("panicked"),
        "SIGTERM {moment} leaves a clean log:\n{log}"
    );
}

/// Whether the process `pid` has a handler for SIGTERM, from the caught-signals mask in
/// /proc: the first moment a program can honour the signal at all (before it, the kernel's
/// default action kills any program).
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

fn send_sigterm(running: &Running) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A stop request can come at any moment of start-up (a supervisor restarting a service, a
/// test that found nothing left to wait for): while the configuration is read, as soon as the
/// process can catch a signal at all, right after its first log line. Each ends with exit 0
/// and a clean log; a signal before the pipelines start leaves nothing to drain.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_at_any_moment_of_start_up_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    append_numbered(&input, 0..1_000);
    let config = format!(
        "[[pipeline]]\nname = \"early\"\nsource = {{ type = \"file\", path = \"{}\", follow = true, checkpoint = \"in.offset\" }}\ntransforms = [{{ plugin = \"pii-mask\", config = {{ fields = \"n\" }} }}]\nsink = {{ type = \"file\", path = \"out.jsonl\" }}\ndead_letter = {{ type = \"file\", path = \"dlq.jsonl\" }}\n",
        input.display()
    );
    std::fs::write(dir.path().join("p.toml"), &config).unwrap();
    let registry = crate::support::plugin_registry()
        .to_str()
        .unwrap()
        .to_owned();
    let env = [("WEIR_ADMIN", "127.0.0.1:0"), ("WEIR_PLUGINS", &registry)];

    // While weir reads its configuration: the file is a FIFO, so weir is blocked reading it
    // exactly when the test's open for writing returns.
    let fifo = dir.path().join("fifo.toml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let running = start(dir.path(), "fifo.toml", &env);
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let writer_path = fifo.clone();
    std::thread::spawn(move || {
        let writer = std::fs::OpenOptions::new().write(true).open(writer_path);
        let _ = opened_tx.send(writer);
    });
    let opened = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&opened);
    wait_for(
        "weir to open its configuration",
        Duration::from_secs(60),
        move || {
            let mut slot = slot.lock().unwrap();
            if slot.is_none() {
                *slot = opened_rx.try_recv().ok();
            }
            slot.is_some()
        },
    )
    .await;
    send_sigterm(&running);
    {
        use std::io::Write;
        let mut writer = opened.lock().unwrap().take().unwrap().unwrap();
        writer.write_all(config.as_bytes()).unwrap();
    }
    let (exit, log) = running.exit(Duration::from_secs(120)).await;
    let clean = exit.expect("weir exits by itself after SIGTERM");
    assert_clean_stop("while the configuration is read", clean, &log);
    assert!(log.contains("nothing to drain"), "{log}");
    assert!(
        !dir.path().join("out.jsonl").exists(),
        "no pipeline started"
    );

    // As soon as the process can catch it, a few times (each start races differently).
    for attempt in 0..3 {
        let running = start(dir.path(), "p.toml", &env);
        let pid = running.child.id();
        wait_for(
            "weir to catch SIGTERM",
            Duration::from_secs(60),
            move || catches_sigterm(pid),
        )
        .await;
        send_sigterm(&running);
        let (exit, log) = running.exit(Duration::from_secs(120)).await;
        let clean = exit.expect("weir exits by itself after SIGTERM");
        assert_clean_stop(
            &format!("at the first instant (attempt {attempt})"),
            clean,
            &log,
        );
    }

    // Right after the first log line.
    let running = start(dir.path(), "p.toml", &env);
    let stderr = Arc::clone(&running.stderr);
    wait_for("a first log line", Duration::from_secs(60), move || {
        !stderr.lock().unwrap().is_empty()
    })
    .await;
    let (clean, log) = running.terminate();
    assert_clean_stop("after the first log line", clean, &log);

    // Whatever was written before a stop is never written twice by the next run. The run
    // before may have drained the whole input: new lines prove this one ran.
    append_numbered(&input, 1_000..2_000);
    let running = start(dir.path(), "p.toml", &env);
    let out = dir.path().join("out.jsonl");
    let out_path = out.clone();
    wait_for("the whole input", Duration::from_secs(120), move || {
        line_count(&out_path) >= 2_000
    })
    .await;
    let (clean, log) = running.terminate();
    assert_clean_stop("after the input was drained", clean, &log);
    let lines = std::fs::read_to_string(&out).unwrap();
    let mut distinct: Vec<&str> = lines.lines().collect();
    assert_eq!(distinct.len(), 2_000, "nothing written twice");
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 2_000, "nothing lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_destination_that_is_down_stops_the_pipeline_from_committing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"n\":1}\nnot json\n{\"n\":3}\n").unwrap();
    let checkpoint = dir.path().join("in.offset");
    std::fs::write(
        dir.path().join("p.toml"),
        format!(
            "[[pipeline]]\nname = \"stuck\"\nsource = {{ type = \"file\", path = \"{}\", checkpoint = \"{}\" }}\ntransforms = [{{ plugin = \"pii-mask\", config = {{ fields = \"n\" }} }}]\nsink = {{ type = \"file\", path = \"out.jsonl\" }}\ndead_letter = {{ type = \"postgres\", url = \"postgres://weir:weir@127.0.0.1:1/weir\", table = \"dlq\" }}\n",
            input.display(),
            checkpoint.display()
        ),
    )
    .unwrap();
    let running = start(
        dir.path(),
        "p.toml",
        &[
            (
                "WEIR_PLUGINS",
                crate::support::plugin_registry().to_str().unwrap(),
            ),
            ("WEIR_ADMIN", "127.0.0.1:0"),
        ],
    );
    running.wait_for_log("dead-letter destination").await;
    running.wait_for_log("retrying").await;
    assert!(
        !checkpoint.exists(),
        "nothing may be committed while a dead letter cannot be stored"
    );
    let (clean, log) = running.terminate();
    assert!(
        !clean,
        "stopping with an unstored dead letter is a failure:\n{log}"
    );
    assert!(!checkpoint.exists(), "nothing committed at shutdown either");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_from_the_environment_never_reach_logs_metrics_the_api_or_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    // Three secrets: a database password in three sinks' connection strings (a URL, a URL's
    // `?password=`, a key/value string; none of them connects), the salt of a hashing pii-mask
    // whose pipeline writes output and a dead letter, and an API token sent as a header and a
    // query value to an API that echoes both back in a body that is not JSON.
    let canary = "canary-7f3d9e1b";
    let salt = "salt-canary-41c2a0";
    let token = "token-canary-92be11";
    let api = echoing_api(200).await;
    let mut generator = weir::generator::UserGenerator::new(9);
    let users: Vec<serde_json::Value> = (0..3).map(|_| generator.next_user()).collect();
    let mut input: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    input.push("{\"name\": \"not a user\"}".into());
    std::fs::write(dir.path().join("in.jsonl"), input.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[[pipeline]]\nname = \"secret\"\nsource = { type = \"generate\", count = 10 }\nsink = { type = \"postgres\", url = \"postgres://weir:${CANARY_PASSWORD}@127.0.0.1:1/weir\", table = \"landing\" }\ndead_letter = { type = \"file\", path = \"dlq.jsonl\" }\n\n[[pipeline]]\nname = \"salted\"\nsource = { type = \"file\", path = \"in.jsonl\" }\ntransforms = [{ plugin = \"user-profile\" }, { plugin = \"pii-mask\", config = { fields = \"email\", salt = \"${CANARY_SALT}\" } }]\nsink = { type = \"file\", path = \"salted.jsonl\" }\ndead_letter = { type = \"file\", path = \"salted-dlq.jsonl\" }\n\n[[pipeline]]\nname = \"conninfo\"\nsource = { type = \"generate\", count = 10 }\nsink = { type = \"postgres\", url = \"host=127.0.0.1 port=1 user=weir password=${CANARY_PASSWORD} dbname=weir\", table = \"landing\" }\ndead_letter = { type = \"file\", path = \"conninfo-dlq.jsonl\" }\n\n[[pipeline]]\nname = \"query\"\nsource = { type = \"generate\", count = 10 }\nsink = { type = \"postgres\", url = \"postgres://weir@127.0.0.1:1/weir?password=${CANARY_PASSWORD}\", table = \"landing\" }\ndead_letter = { type = \"file\", path = \"query-dlq.jsonl\" }\n",
    )
    .unwrap();
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("p.toml"))
        .unwrap();
    std::io::Write::write_all(
        &mut config,
        format!("\n[[pipeline]]\nname = \"api\"\nsource = {{ type = \"http\", url = \"{api}\", headers = {{ X-Api-Token = \"${{CANARY_TOKEN}}\" }}, query = {{ key = \"${{CANARY_TOKEN}}\" }}, count = 1 }}\nsink = {{ type = \"file\", path = \"api.jsonl\" }}\ndead_letter = {{ type = \"file\", path = \"api-dlq.jsonl\" }}\n").as_bytes(),
    )
    .unwrap();
    let running = start(
        dir.path(),
        "p.toml",
        &[
            ("CANARY_PASSWORD", canary),
            ("CANARY_SALT", salt),
            ("CANARY_TOKEN", token),
            ("WEIR_ADMIN", "127.0.0.1:0"),
            (
                "WEIR_PLUGINS",
                crate::support::plugin_registry().to_str().unwrap(),
            ),
        ],
    );
    running.wait_for_log("retrying").await;
    running.wait_for_log("Admin API listening").await;
    let (salted, salted_dlq) = (
        dir.path().join("salted.jsonl"),
        dir.path().join("salted-dlq.jsonl"),
    );
    let api_dlq = dir.path().join("api-dlq.jsonl");
    wait_for(
        "the salted pipeline's output and dead letter, and the API's dead letter",
        Duration::from_secs(60),
        || line_count(&salted) == 3 && line_count(&salted_dlq) == 1 && line_count(&api_dlq) == 1,
    )
    .await;
    for shown in ["password=***", "?password=***"] {
        running.wait_for_log(shown).await;
    }
    let log = running.stderr.lock().unwrap().clone();
    let addr = log
        .lines()
        .find(|l| l.contains("Admin API listening"))
        .and_then(|l| l.split("addr=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_owned())
        .unwrap();
    let mut served = Vec::new();
    for path in [
        "/metrics",
        "/api/pipelines",
        "/api/status",
        "/api/plugins",
        "/",
    ] {
        let text = reqwest::get(format!("http://{addr}{path}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        served.push((path, text));
    }
    let (_, log) = running.terminate();
    assert!(
        log.contains("weir:***@127.0.0.1:1"),
        "the URL is shown redacted:\n{log}"
    );
    // The salt was substituted: each email is the sha256 of the salt followed by the address.
    let rows = crate::support::read_json_lines(&salted);
    for (row, user) in rows.iter().zip(&users) {
        let email = user["email"].as_str().unwrap();
        let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!(
            "{salt}{email}"
        )));
        assert_eq!(row["email"], expected.as_str());
    }
    let dead_letters = std::fs::read_to_string(&salted_dlq).unwrap();
    assert!(dead_letters.contains("weir.error"), "{dead_letters}");
    let other_dead_letters: String = ["dlq.jsonl", "conninfo-dlq.jsonl", "query-dlq.jsonl"]
        .iter()
        .map(|name| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default())
        .collect();
    // The API's answer is there, with the token hidden where it echoed it.
    let api_dead_letters = std::fs::read_to_string(&api_dlq).unwrap();
    assert!(
        api_dead_letters.contains("x-api-token: ***") && api_dead_letters.contains("key=***"),
        "{api_dead_letters}"
    );
    let mut places: Vec<(&str, &String)> = vec![
        ("log", &log),
        ("dead letters", &dead_letters),
        ("the other dead letters", &other_dead_letters),
        ("the API's dead letters", &api_dead_letters),
    ];
    places.extend(served.iter().map(|(path, text)| (*path, text)));
    for (what, text) in places {
        for secret in [canary, salt, token] {
            assert!(
                !text.contains(secret),
                "the secret {secret} leaked into {what}:\n{text}"
            );
        }
    }
}

/// A local API that answers every request with `status` and a body echoing the request's query
/// and headers, as some APIs' error pages do; its URL.
async fn echoing_api(status: u16) -> String {
    let handler = move |headers: axum::http::HeaderMap,
                        axum::extract::RawQuery(query): axum::extract::RawQuery| async move {
        let mut body = format!(
            "not what you meant; query {}; headers",
            query.unwrap_or_default()
        );
        for (name, value) in &headers {
            body.push_str(&format!(" {name}: {}", value.to_str().unwrap_or("?")));
        }
        (axum::http::StatusCode::from_u16(status).unwrap(), body)
    };
    let router = axum::Router::new().route("/api", axum::routing::get(handler));
    format!("{}/api", serve_http(router).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_echoing_its_token_in_a_client_error_never_puts_it_in_the_log() {
    let token = "token-canary-c4e7a0";
    let api = echoing_api(401).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        format!("[[pipeline]]\nname = \"api\"\nsource = {{ type = \"http\", url = \"{api}\", headers = {{ Authorization = \"Bearer ${{API_TOKEN}}\" }}, query = {{ key = \"${{API_TOKEN}}\" }} }}\nsink = {{ type = \"file\", path = \"out.jsonl\" }}\ndead_letter = {{ type = \"file\", path = \"dlq.jsonl\" }}\n"),
    )
    .unwrap();
    let running = start(
        dir.path(),
        "p.toml",
        &[("API_TOKEN", token), ("WEIR_ADMIN", "127.0.0.1:0")],
    );
    let (exit, log) = running.exit(Duration::from_secs(60)).await;
    assert_eq!(exit, Some(false), "a 4xx stops the pipeline:\n{log}");
    // The excerpt is there, with the token hidden where the API echoed it.
    assert!(
        log.contains("HTTP 401") && log.contains("authorization: ***") && log.contains("key=***"),
        "{log}"
    );
    assert!(
        !log.contains(token),
        "the token leaked into the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_fails_while_the_source_is_idle_stops_the_process_with_its_error() {
    let url = postgres_url();
    let table = unique("incompatible");
    let client = postgres_client(&url).await;
    // A landing table whose `value` cannot take JSON: the first insert fails with a type
    // mismatch (SQLSTATE 42804), which no retry cures.
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE, value INTEGER NOT NULL)"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    append_numbered(&dir.path().join("in.jsonl"), 0..3);
    std::fs::write(
        dir.path().join("p.toml"),
        format!(
            "[[pipeline]]\nname = \"idle\"\nsource = {{ type = \"file\", path = \"in.jsonl\", follow = true }}\nsink = {{ type = \"postgres\", url = \"{url}\", table = \"{table}\", create_table = false }}\ndead_letter = {{ type = \"file\", path = \"dlq.jsonl\" }}\n"
        ),
    )
    .unwrap();
    // The source follows a file that never grows: only the sink's failure can end the process.
    let running = start(dir.path(), "p.toml", &[("WEIR_ADMIN", "127.0.0.1:0")]);
    let (exit, log) = running.exit(Duration::from_secs(60)).await;
    client
        .batch_execute(&format!("DROP TABLE \"{table}\""))
        .await
        .unwrap();
    let clean = exit.unwrap_or_else(|| panic!("weir did not exit within 60s:\n{log}"));
    assert!(!clean, "a failed sink is a failed run:\n{log}");
    let failure = log
        .lines()
        .find(|line| line.contains("Pipeline failed"))
        .unwrap_or_else(|| panic!("the failure is logged:\n{log}"));
    assert!(
        failure.contains(&format!("postgres sink {table}")) && failure.contains("42804"),
        "the error names the sink and the cause: {failure}"
    );
}

#[test]
fn config_errors_show_the_file_as_written_not_substituted_secrets() {
    let canary = "canary-5e0c2d91";
    let dir = tempfile::tempdir().unwrap();
    let sink = "sink = { type = \"postgres\", url = \"postgres://weir:${CANARY_PASSWORD}@127.0.0.1:1/weir\", table = \"landing\" }";
    let head = "[[pipeline]]\nname = \"secret\"\nsource = { type = \"generate\", count = 1 }\n";
    let tail = "\ndead_letter = { type = \"file\", path = \"dlq.jsonl\" }\n";
    let cases = [
        // A syntax error on the line holding the secret: a missing comma.
        ("syntax", sink.replace(", table", " table")),
        // A type error in the table holding the secret.
        (
            "type",
            sink.replace("\"landing\"", "\"landing\", create_table = \"yes\""),
        ),
        // A type error about the substituted value itself.
        (
            "value",
            sink.replace(
                "\"landing\"",
                "\"landing\", create_table = \"${CANARY_PASSWORD}\"",
            ),
        ),
    ];
    for (case, line) in cases {
        std::fs::write(dir.path().join("p.toml"), format!("{head}{line}{tail}")).unwrap();
        for command in ["validate", "run"] {
            let output = run_weir_with(
                dir.path(),
                &[command, "p.toml"],
                ("CANARY_PASSWORD", canary),
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{case}, {command}: {stderr}");
            assert!(
                stderr.contains("p.toml") && stderr.contains("line 4"),
                "{case}, {command}: the error names the file and line:\n{stderr}"
            );
            assert!(
                stderr.contains("${CANARY_PASSWORD}"),
                "{case}, {command}: the line is shown as written:\n{stderr}"
            );
            assert!(
                !stderr.contains(canary)
                    && !String::from_utf8_lossy(&output.stdout).contains(canary),
                "{case}, {command}: the secret leaked:\n{stderr}"
            );
        }
    }
    // The same file without the mistake is fine: the secret was substituted, not dropped.
    std::fs::write(dir.path().join("p.toml"), format!("{head}{sink}{tail}")).unwrap();
    let output = run_weir_with(
        dir.path(),
        &["validate", "p.toml"],
        ("CANARY_PASSWORD", canary),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_weir_with(dir: &Path, args: &[&str], env: (&str, &str)) -> std::process::Output {
    weir()
        .current_dir(dir)
        .args(args)
        .env("WEIR_LOG", "info")
        .env(env.0, env.1)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_source_never_logs_the_credentials_or_query_of_its_url() {
    // An API that fails every request, counting them.
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let router = axum::Router::new().route(
        "/api",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                )
            }
        }),
    );
    let base = serve_http(router).await;
    let address = base.strip_prefix("http://").unwrap();

    let (password, token, key) = ("canary-pass-31f8", "canary-token-31f8", "canary-key-31f8");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        format!(
            "[[pipeline]]\nname = \"api\"\nsource = {{ type = \"http\", url = \"http://user:${{API_PASSWORD}}@{address}/api?token=${{API_TOKEN}}\", query = {{ key = \"${{API_KEY}}\" }}, retries = 1, interval_ms = 10 }}\nsink = {{ type = \"file\", path = \"out.jsonl\" }}\ndead_letter = {{ type = \"file\", path = \"dlq.jsonl\" }}\n"
        ),
    )
    .unwrap();
    let running = start(
        dir.path(),
        "p.toml",
        &[
            ("API_PASSWORD", password),
            ("API_TOKEN", token),
            ("API_KEY", key),
            ("WEIR_ADMIN", "127.0.0.1:0"),
        ],
    );
    running.wait_for_log("Source failed; retrying.").await;
    let seen = Arc::clone(&requests);
    wait_for("a second failed poll", Duration::from_secs(60), move || {
        seen.load(std::sync::atomic::Ordering::SeqCst) >= 4
    })
    .await;
    let (_, log) = running.terminate();
    assert!(log.contains("HTTP 500"), "the failure is logged:\n{log}");
    assert!(
        log.contains(&format!("http://user:***@{address}/api?token=***")),
        "the URL is shown redacted:\n{log}"
    );
    for secret in [password, token, key] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

/// `weir run` into the `stdout` sink piped into a reader that stops early (`| head -2`): the
/// pipeline stops with the reason instead of retrying a pipe nobody will read again.
#[tokio::test(flavor = "multi_thread")]
async fn a_stdout_sink_whose_reader_goes_away_stops_the_run_instead_of_retrying() {
    let dir = tempfile::tempdir().unwrap();
    append_numbered(&dir.path().join("in.jsonl"), 0..200_000);
    std::fs::write(
        dir.path().join("pipeline.toml"),
        "[[pipeline]]\nname = \"piped\"\nsource = { type = \"file\", path = \"in.jsonl\" }\nsink = { type = \"stdout\" }\ndead_letter = { type = \"file\", path = \"dlq.jsonl\" }\n",
    )
    .unwrap();
    let mut child = weir()
        .current_dir(dir.path())
        .args(["run", "pipeline.toml", "--no-admin", "--no-watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "{\"n\":0}\n");
    // The reader goes away, as `head` does once it has its lines.
    drop(stdout);
    let stderr = child.stderr.take().unwrap();
    let collected = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let child = Mutex::new(child);
    wait_for(
        "weir to stop once its stdout is closed",
        Duration::from_secs(120),
        || child.lock().unwrap().try_wait().unwrap().is_some(),
    )
    .await;
    let status = child.into_inner().unwrap().wait().unwrap();
    let stderr = collected.join().unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("standard output was closed by its reader"),
        "{stderr}"
    );
}
