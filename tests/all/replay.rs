//! `weir replay`: a buggy plugin version dead-letters part of a stream, a fixed version is
//! dropped into the folder, and the replay sends the dead letters through it into the sink,
//! exactly once, against a dead-letter Kafka topic, file and PostgreSQL table. The buggy version
//! is `fault-picky` (refuses records containing `legacy` as bad records); the fix is a plugin
//! that passes them through (`fault-panic`, which only acts on other words), deployed under the
//! same name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;

use crate::hot_swap::component;
use crate::services::{TopicCounter, consume_all, create_topic, topic_message_count};
use crate::support::{
    kafka_brokers, postgres_client, postgres_url, read_json_lines, repo_root, unique, weir,
};
use crate::swappable::drop_in;

/// The plugin's name in the pipelines; its file is swapped from buggy to fixed.
const PLUGIN: &str = "fixer";

/// A registry folder holding the buggy version as `fixer.wasm`.
fn buggy_registry(dir: &Path) -> PathBuf {
    let registry = dir.join("registry");
    std::fs::create_dir_all(&registry).unwrap();
    drop_in(&registry, "fixer.wasm", &component("fault-picky"));
    registry
}

/// Deploys the fixed version.
fn fix(registry: &Path) {
    drop_in(registry, "fixer.wasm", &component("fault-panic"));
}

/// Runs `weir replay` with `args` on the pipeline file, sharing the tests' compiled cache,
/// however it ends.
fn replay_ending(file: &Path, registry: &Path, args: &[&str]) -> Output {
    weir()
        .args(["replay", "--config"])
        .arg(file)
        .arg("--plugins")
        .arg(registry)
        .args(args)
        .env("WEIR_LOG", "info")
        .env(
            "WEIR_CACHE_DIR",
            repo_root().join("target/test-plugins/cache"),
        )
        .output()
        .expect("the weir binary runs")
}

/// [`replay_ending`], which must succeed.
fn replay(file: &Path, registry: &Path, args: &[&str]) -> Output {
    let output = replay_ending(file, registry, args);
    assert!(
        output.status.success(),
        "weir replay {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The number on the `  LABEL  N` line of a replay's summary.
fn summary(output: &Output, label: &str) -> u64 {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find_map(|line| {
            line.trim_start()
                .strip_prefix(label)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no `{label}` in the summary:\n{stderr}"))
}

/// The `would replay N of M` of a dry run.
fn would_replay(output: &Output) -> (u64, u64) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("dry run: would replay"))
        .unwrap_or_else(|| panic!("no dry-run count:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[4].parse().unwrap(), words[6].parse().unwrap())
}

/// Values with `legacy` every `every` records: what the buggy version refuses.
fn value(n: u64, every: u64) -> String {
    let format = if n.is_multiple_of(every) {
        "legacy"
    } else {
        "v2"
    };
    format!("{{\"n\":{n},\"format\":\"{format}\"}}")
}

/// Runs the pipelines of `text` with the registry's current versions until `done` holds.
async fn run_until(text: &str, registry: &Path, done: impl Fn() -> bool) {
    let file = PipelineFile::parse(Path::new("replay.toml"), text).unwrap();
    let mut options = RunOptions::for_registry(registry);
    options.watch = false;
    options.cache = Some(repo_root().join("target/test-plugins/cache"));
    let app = RunningApp::start(file, options).await.unwrap();
    crate::support::wait_for(
        "the pipeline to process its input",
        Duration::from_secs(240),
        done,
    )
    .await;
    // A file source may have ended the pipeline already.
    app.shutdown_handle().send_replace(true);
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}

/// Pipeline `orders`: topic `input` through the plugin into topic `output`, dead letters to
/// topic `dead`.
fn kafka_pipeline(brokers: &str, input: &str, output: &str, dead: &str) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "orders"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{input}"], group = "{group}" }}
        transforms = [{{ plugin = "{PLUGIN}" }}]
        sink = {{ type = "kafka", brokers = "{brokers}", topic = "{output}" }}
        dead_letter = {{ type = "kafka", brokers = "{brokers}", topic = "{dead}" }}
        "#,
        group = unique("replay_group"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_version_replays_the_dead_letters_of_a_kafka_topic_exactly_once() {
    const RECORDS: u64 = 20_000;
    const EVERY: u64 = 20; // 5%
    let brokers = kafka_brokers();
    let input = unique("replay_in");
    let output = unique("replay_out");
    let dead = unique("replay_dlq");
    for topic in [&input, &output, &dead] {
        create_topic(&brokers, topic, 3).await;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let sends: Vec<_> = (0..RECORDS)
        .map(|n| {
            let (key, payload) = (format!("k{n}"), value(n, EVERY));
            let producer = producer.clone();
            let topic = input.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        })
        .collect();
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let registry = buggy_registry(dir.path());
    let text = kafka_pipeline(&brokers, &input, &output, &dead);
    let file = dir.path().join("replay.toml");
    std::fs::write(&file, &text).unwrap();
    let rejected = (RECORDS / EVERY) as usize;
    let (outputs, dead_letters) = (
        TopicCounter::new(&brokers, &output),
        TopicCounter::new(&brokers, &dead),
    );
    run_until(&text, &registry, || {
        outputs.count() == RECORDS as usize - rejected && dead_letters.count() == rejected
    })
    .await;

    // The dry run counts and shows, and changes nothing.
    let dry = replay(&file, &registry, &["--pipeline", "orders", "--dry-run"]);
    assert_eq!(would_replay(&dry), (rejected as u64, rejected as u64));
    let shown = String::from_utf8_lossy(&dry.stdout);
    assert!(shown.contains("\"kind\":\"bad-record\""), "{shown}");

    fix(&registry);
    let first = replay(&file, &registry, &["--pipeline", "orders"]);
    assert_eq!(summary(&first, "replayed"), rejected as u64);
    assert_eq!(summary(&first, "failed again"), 0);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("Replay pass finished."), "{stderr}");
    assert!(
        stderr.contains(&format!("{rejected}/{rejected} dead letters")),
        "progress is shown: {stderr}"
    );

    let messages = consume_all(&brokers, &output, RECORDS as usize).await;
    let keys: BTreeSet<Vec<u8>> = messages.iter().filter_map(|(k, _)| k.clone()).collect();
    assert_eq!(keys.len(), RECORDS as usize, "every key reached the sink");
    assert_eq!(
        topic_message_count(&brokers, &output),
        RECORDS as usize,
        "and each exactly once"
    );

    let second = replay(&file, &registry, &["--pipeline", "orders"]);
    assert_eq!(summary(&second, "replayed"), 0, "nothing is replayed twice");
    assert_eq!(topic_message_count(&brokers, &output), RECORDS as usize);
    assert_eq!(topic_message_count(&brokers, &dead), rejected);
}

/// A message in a Kafka dead-letter topic with more headers than any dead letter weir writes
/// carries (a foreign producer's) stops the replay there, naming where it is and the way past it,
/// instead of being read whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_message_with_too_many_headers_stops_a_kafka_replay_naming_it() {
    use rdkafka::message::{Header, OwnedHeaders};

    let brokers = kafka_brokers();
    let (input, output, dead) = (
        unique("foreign_in"),
        unique("foreign_out"),
        unique("foreign_dlq"),
    );
    for topic in [&input, &output, &dead] {
        create_topic(&brokers, topic, 1).await;
    }
    let count = weir::connectors::kafka::MAX_DEAD_LETTER_HEADERS + 1;
    let names: Vec<String> = (0..count).map(|i| format!("h{i}")).collect();
    let headers = names.iter().fold(OwnedHeaders::new(), |headers, name| {
        headers.insert(Header {
            key: name,
            value: Some(""),
        })
    });
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<str, str>::to(&dead)
                .payload("{}")
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let registry = buggy_registry(dir.path());
    let file = dir.path().join("replay.toml");
    std::fs::write(&file, kafka_pipeline(&brokers, &input, &output, &dead)).unwrap();
    let refused = replay_ending(&file, &registry, &["--pipeline", "orders", "--dry-run"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    for expected in [
        format!("partition 0 offset 0 of `{dead}` has {count} headers"),
        "--reset-offsets --to-offset 1".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} not in:\n{stderr}");
    }
}

/// A read of a PostgreSQL dead-letter table holds at most 64 MiB of records beyond its first row,
/// however many rows it may take: twelve 8 MiB dead letters come back eight, then four.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_dead_letter_read_is_bounded_in_bytes() {
    let url = postgres_url();
    let table = unique("replay_big");
    let client = postgres_client(&url).await;
    // The layout the postgres dead-letter destination creates, filled by the server.
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key BYTEA, value BYTEA NOT NULL,
                 headers JSONB NOT NULL, error TEXT, source_id TEXT,
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now());
             INSERT INTO \"{table}\" (value, headers)
                 SELECT convert_to(repeat('x', 8 << 20), 'UTF8'), '{{}}'::jsonb
                 FROM generate_series(1, 12);"
        ))
        .await
        .unwrap();
    let text = format!(
        r#"
        [[pipeline]]
        name = "big"
        source = {{ type = "file", path = "unused.jsonl" }}
        sink = {{ type = "blackhole" }}
        dead_letter = {{ type = "postgres", url = "{url}", table = "{table}" }}
        "#
    );
    let file = PipelineFile::parse(Path::new("big.toml"), &text).unwrap();
    let dead_letter = &file.pipelines[0].dead_letter;
    let cursor = weir::connectors::replay::Cursor::default_for("big", dead_letter, "");
    let mut reader = weir::connectors::replay::open(dead_letter, &cursor, true)
        .await
        .unwrap();
    let mut reads = Vec::new();
    while let Some(entries) = reader.read(100).await.unwrap() {
        assert!(
            entries
                .iter()
                .all(|entry| entry.record.value.len() == 8 << 20)
        );
        reads.push(entries.len());
    }
    assert_eq!(reads, [8, 4]);
}

/// A PostgreSQL dead-letter table made by hand (`create_table = false`) may hold a NULL where
/// the destination's own table has none: the read stops with an error naming the row and the
/// column, where it used to panic (or, for a NULL value, leave the row out of every read).
#[tokio::test(flavor = "multi_thread")]
async fn a_null_in_a_hand_made_postgres_dead_letter_table_names_the_row_and_column() {
    let url = postgres_url();
    for (column, row) in [
        ("value", "NULL, '{}'::jsonb"),
        ("headers", "'\\x76'::bytea, NULL"),
    ] {
        let table = unique("replay_null");
        postgres_client(&url)
            .await
            .batch_execute(&format!(
                "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key BYTEA, value BYTEA,
                     headers JSONB, error TEXT, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
                 INSERT INTO \"{table}\" (value, headers) VALUES ('\\x76'::bytea, '{{}}'::jsonb);
                 INSERT INTO \"{table}\" (value, headers) VALUES ({row});"
            ))
            .await
            .unwrap();
        let text = format!(
            r#"
            [[pipeline]]
            name = "nulls"
            source = {{ type = "file", path = "unused.jsonl" }}
            sink = {{ type = "blackhole" }}
            dead_letter = {{ type = "postgres", url = "{url}", table = "{table}", create_table = false }}
            "#
        );
        let file = PipelineFile::parse(Path::new("nulls.toml"), &text).unwrap();
        let dead_letter = &file.pipelines[0].dead_letter;
        let cursor = weir::connectors::replay::Cursor::default_for("nulls", dead_letter, "");
        let mut reader = weir::connectors::replay::open(dead_letter, &cursor, true)
            .await
            .unwrap();
        let Err(error) = reader.read(100).await else {
            panic!("a row with a NULL {column} was read");
        };
        let message = error.to_string();
        assert!(
            message.contains("row 2") && message.contains(&format!("column `{column}`")),
            "{message}"
        );
        assert!(!error.is_transient(), "{message}");
    }
}

/// A file pipeline over numbered lines, every `every`th one `legacy`, into `out.jsonl`, with
/// dead letters in `dead_letter`.
fn file_pipeline(dir: &Path, records: u64, every: u64, dead_letter: &str) -> (PathBuf, String) {
    let input = dir.join("in.jsonl");
    let lines: String = (0..records).map(|n| value(n, every) + "\n").collect();
    std::fs::write(&input, lines).unwrap();
    let text = format!(
        r#"
        [[pipeline]]
        name = "lines"
        source = {{ type = "file", path = "{input}" }}
        transforms = [{{ plugin = "{PLUGIN}" }}]
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {dead_letter}
        "#,
        input = input.display(),
        out = dir.join("out.jsonl").display(),
    );
    let file = dir.join("replay.toml");
    std::fs::write(&file, &text).unwrap();
    (file, text)
}

/// The `n` of every line of the sink file.
fn numbers_out(dir: &Path) -> Vec<u64> {
    let mut numbers: Vec<u64> = read_json_lines(&dir.join("out.jsonl"))
        .iter()
        .map(|v| v["n"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    numbers
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_dead_letter_replay_resends_failures_again_and_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let registry = buggy_registry(dir.path());
    let dead = dir.path().join("dlq.jsonl");
    let (file, text) = file_pipeline(
        dir.path(),
        200,
        10,
        &format!(r#"{{ type = "file", path = "{}" }}"#, dead.display()),
    );
    let out = dir.path().join("out.jsonl");
    run_until(&text, &registry, || {
        out.exists()
            && read_json_lines(&out).len() == 180
            && dead.exists()
            && read_json_lines(&dead).len() == 20
    })
    .await;

    let dry = replay(&file, &registry, &["--dry-run", "--show", "3"]);
    assert_eq!(would_replay(&dry), (20, 20));
    let shown = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(shown.lines().filter(|l| l.starts_with('{')).count(), 3);
    let none = replay(&file, &registry, &["--dry-run", "--kind", "trap"]);
    assert_eq!(would_replay(&none).0, 0, "the kind filter selects nothing");

    // Still the buggy version: every record fails again and goes back with the new reason.
    let again = replay(&file, &registry, &[]);
    assert_eq!(summary(&again, "replayed"), 20);
    assert_eq!(summary(&again, "failed again"), 20);
    let entries = read_json_lines(&dead);
    assert_eq!(entries.len(), 40);
    let refailed = &entries[20];
    assert_eq!(refailed["headers"]["weir.error.kind"], "bad-record");
    assert_eq!(
        refailed["headers"]["weir.origin.stream"],
        dir.path().join("in.jsonl").display().to_string(),
        "the original source is still named"
    );
    let checkpoint = dir.path().join("dlq.jsonl.replay-lines.checkpoint");
    assert_eq!(std::fs::read_to_string(&checkpoint).unwrap(), "20");

    // Fixed: only the 20 new entries are replayed, and everything is in the sink once.
    fix(&registry);
    let fixed = replay(&file, &registry, &[]);
    assert_eq!(summary(&fixed, "replayed"), 20);
    assert_eq!(summary(&fixed, "failed again"), 0);
    assert_eq!(numbers_out(dir.path()), (0..200).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(&checkpoint).unwrap(), "40");
    let last = replay(&file, &registry, &[]);
    assert_eq!(summary(&last, "replayed"), 0);
    assert_eq!(read_json_lines(&dead).len(), 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_dead_letter_replay_marks_replayed_rows_and_skips_what_the_filter_left() {
    let url = postgres_url();
    let table = unique("replay_dlq");
    let dir = tempfile::tempdir().unwrap();
    let registry = buggy_registry(dir.path());
    let (file, text) = file_pipeline(
        dir.path(),
        100,
        10,
        &format!(r#"{{ type = "postgres", url = "{url}", table = "{table}" }}"#),
    );
    let out = dir.path().join("out.jsonl");
    run_until(&text, &registry, || {
        out.exists() && read_json_lines(&out).len() == 90
    })
    .await;
    let client = postgres_client(&url).await;
    let count = |sql: String| {
        let client = &client;
        async move {
            let row = client.query_one(&sql, &[]).await.unwrap();
            row.get::<_, i64>(0)
        }
    };
    assert_eq!(count(format!("SELECT count(*) FROM \"{table}\"")).await, 10);

    fix(&registry);
    let dry = replay(&file, &registry, &["--dry-run"]);
    assert_eq!(would_replay(&dry), (10, 10));
    let columns = count(format!(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = '{table}' AND column_name = 'replayed_at'"
    ))
    .await;
    assert_eq!(columns, 0, "a dry run adds no column");
    let other = replay(&file, &registry, &["--plugin-version", "0000000"]);
    assert_eq!(summary(&other, "replayed"), 0);
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM \"{table}\" WHERE replayed_at IS NULL"
        ))
        .await,
        10,
        "rows a filter skipped are not marked"
    );

    let first = replay(&file, &registry, &[]);
    assert_eq!(summary(&first, "replayed"), 10);
    assert_eq!(numbers_out(dir.path()), (0..100).collect::<Vec<_>>());
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM \"{table}\" WHERE replayed_at IS NOT NULL"
        ))
        .await,
        10
    );
    let second = replay(&file, &registry, &[]);
    assert_eq!(summary(&second, "replayed"), 0);
    assert_eq!(numbers_out(dir.path()).len(), 100);
}

#[test]
fn a_misspelt_kind_or_an_empty_time_window_is_refused_naming_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let registry = buggy_registry(dir.path());
    let dead = dir.path().join("dlq.jsonl");
    std::fs::write(&dead, "").unwrap();
    let (file, _) = file_pipeline(
        dir.path(),
        1,
        10,
        &format!(r#"{{ type = "file", path = "{}" }}"#, dead.display()),
    );
    let refused = |args: &[&str], wanted: &[&str]| {
        let output = replay_ending(&file, &registry, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted:\n{stderr}");
        for text in wanted {
            assert!(stderr.contains(text), "{args:?}: no {text:?} in:\n{stderr}");
        }
    };
    refused(
        &["--dry-run", "--kind", "trap,bad_record"],
        &[
            "`bad_record` is not an error kind",
            "bad-record, plugin-failure, trap, timeout, malformed, sink-rejected",
        ],
    );
    refused(
        &[
            "--dry-run",
            "--since",
            "2026-12-01T10:00:00Z",
            "--until",
            "2026-12-01T10:00:00Z",
        ],
        &["--since", "is not before --until"],
    );
    // The kinds as they are spelt pass.
    let none = replay(
        &file,
        &registry,
        &["--dry-run", "--kind", "bad-record,sink-rejected"],
    );
    assert_eq!(would_replay(&none), (0, 0));
}

/// The value of a dead-letter file's envelope, as JSON.
fn envelope_value(entry: &serde_json::Value) -> serde_json::Value {
    match &entry["value"] {
        serde_json::Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_failed_at_a_plugins_second_use_is_replayed_from_that_use() {
    // The chain uses the buggy fixer twice and pii-mask twice: the first pii-mask hashes `id`
    // (so hashing it again shows), the second redacts `format` to `legacy`, which the second use
    // of the fixer refuses. Records whose `format` is `legacy` from the start fail at the first
    // use; those with `v2` fail at the second, already hashed; those without pass.
    let dir = tempfile::tempdir().unwrap();
    let registry = buggy_registry(dir.path());
    drop_in(&registry, "pii-mask.wasm", &component("pii-mask"));
    let input = dir.path().join("in.jsonl");
    let lines: String = (0..30)
        .map(|n| match n % 3 {
            0 => format!("{{\"n\":{n},\"id\":\"secret\",\"format\":\"legacy\"}}\n"),
            1 => format!("{{\"n\":{n},\"id\":\"secret\",\"format\":\"v2\"}}\n"),
            _ => format!("{{\"n\":{n},\"id\":\"secret\"}}\n"),
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let dead = dir.path().join("dlq.jsonl");
    let out = dir.path().join("out.jsonl");
    let text = format!(
        r#"
        [[pipeline]]
        name = "lines"
        source = {{ type = "file", path = "{input}" }}
        transforms = [
            {{ plugin = "{PLUGIN}" }},
            {{ plugin = "pii-mask", config = {{ fields = "id" }} }},
            {{ plugin = "pii-mask", config = {{ fields = "format", mode = "redact", replacement = "legacy" }} }},
            {{ plugin = "{PLUGIN}" }},
        ]
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{dead}" }}
        "#,
        input = input.display(),
        out = out.display(),
        dead = dead.display(),
    );
    let file = dir.path().join("replay.toml");
    std::fs::write(&file, &text).unwrap();
    run_until(&text, &registry, || {
        out.exists()
            && read_json_lines(&out).len() == 10
            && dead.exists()
            && read_json_lines(&dead).len() == 20
    })
    .await;
    // `id` hashed once, as every record that passed has it.
    let hashed = read_json_lines(&out)[0]["id"].clone();
    assert_ne!(hashed, "secret");
    let steps = |entries: &[serde_json::Value]| {
        let mut steps: Vec<(u64, String)> = entries
            .iter()
            .map(|entry| {
                (
                    envelope_value(entry)["n"].as_u64().unwrap(),
                    entry["headers"]["weir.step"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        steps.sort();
        steps
    };
    let expected: Vec<(u64, String)> = (0..30)
        .filter(|n| n % 3 != 2)
        .map(|n| {
            let step = if n % 3 == 0 {
                PLUGIN.to_owned()
            } else {
                format!("{PLUGIN}#2")
            };
            (n, step)
        })
        .collect();
    let entries = read_json_lines(&dead);
    assert_eq!(steps(&entries), expected, "each dead letter names its step");

    let dry = replay(&file, &registry, &["--dry-run", "--show", "20"]);
    assert_eq!(would_replay(&dry), (20, 20));
    let shown: Vec<serde_json::Value> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for entry in &shown {
        let through = if entry["step"] == PLUGIN {
            serde_json::json!([PLUGIN, "pii-mask", "pii-mask", PLUGIN])
        } else {
            serde_json::json!([PLUGIN])
        };
        assert_eq!(entry["through"], through, "{entry}");
    }

    // Still buggy: every record fails again, at the same step as before.
    let again = replay(&file, &registry, &[]);
    assert_eq!(summary(&again, "replayed"), 20);
    assert_eq!(summary(&again, "failed again"), 20);
    let entries = read_json_lines(&dead);
    assert_eq!(entries.len(), 40);
    assert_eq!(steps(&entries[20..]), expected, "the steps are kept");
    assert!(
        dir.path()
            .join(format!("dlq.jsonl.replay-lines-from-{PLUGIN}#2.checkpoint"))
            .exists(),
        "the pass from the second use keeps its own progress"
    );

    // Fixed: each record is written once, `id` hashed once whichever use failed it.
    fix(&registry);
    let fixed = replay(&file, &registry, &[]);
    assert_eq!(summary(&fixed, "replayed"), 20);
    assert_eq!(summary(&fixed, "failed again"), 0);
    let written = read_json_lines(&out);
    assert_eq!(numbers_out(dir.path()), (0..30).collect::<Vec<_>>());
    for record in &written {
        assert_eq!(record["id"], hashed, "hashed once: {record}");
    }
}
