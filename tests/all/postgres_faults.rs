//! Issue 12, PostgreSQL: faults injected for real against the test PostgreSQL. A proxy the test
//! owns stops forwarding without closing anything (a half-open connection): the sink notices
//! within its timeouts, reconnects once the proxy resumes and loses nothing, and SIGTERM during
//! the stall exits 0 without committing what was not written. And the refusals: a missing
//! table stops the pipeline with the fix, a unique violation outside the key dead-letters only
//! that record, and so do a number jsonb cannot hold and a key too long for the index; binary
//! keys stay distinct, `on_conflict` updates or ignores (counted), a key whose last write in a
//! batch is refused keeps the write before it, and a dead letter written twice is stored once,
//! while another record at the same position is stored too. And the warm-up: the sink connects
//! and creates its table when the pipeline starts, and a warm-up that cannot connect leaves
//! that to the write. A replay of a dead-letter table whose connection stalls gives up within
//! its statement limit and reads on a new connection. A server that turns read-only (a failover)
//! is retried until it takes writes again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use sha2::Digest;

use weir::connectors::postgres::{PostgresSink, PostgresSinkConfig};
use weir::connectors::replay::Cursor;
use weir::connectors::{Sink, SinkConfig};
use weir::record::Record;

use crate::support::{
    StallingProxy, append_numbered, postgres_client, postgres_url, read_json_lines, run_weir,
    unique, wait_for, wait_for_async, weir,
};

/// A `weir run` whose log goes to a file.
struct Weir {
    child: Child,
    log: PathBuf,
}

impl Weir {
    fn start(dir: &Path, config: &str) -> Weir {
        let toml = dir.join("p.toml");
        std::fs::write(&toml, config).unwrap();
        let log = dir.join(format!("weir-{}.log", unique("run")));
        let child = weir()
            .current_dir(dir)
            .args(["run", "p.toml", "--no-watch", "--no-admin"])
            .env("WEIR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Weir { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for_log(&self, needle: &str) {
        let log = self.log.clone();
        wait_for(
            &format!("`{needle}` in the log"),
            Duration::from_secs(60),
            || std::fs::read_to_string(&log).is_ok_and(|text| text.contains(needle)),
        )
        .await;
    }

    /// Sends SIGTERM and waits (up to a generous minute) for the exit: whether it exited 0,
    /// and the log.
    async fn terminate(mut self) -> (bool, String) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return (exit.success(), self.log());
            }
            if tokio::time::Instant::now() >= deadline {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
                panic!(
                    "weir did not exit within a minute of SIGTERM:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The `n` of every row of the landing `table` (empty while it does not exist).
async fn numbers(url: &str, table: &str) -> BTreeSet<u64> {
    postgres_client(url)
        .await
        .query(
            &format!("SELECT (value->>'n')::bigint FROM \"{table}\""),
            &[],
        )
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|row| row.get::<_, Option<i64>>(0))
        .map(|n| n as u64)
        .collect()
}

async fn wait_for_rows(url: &str, table: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rows = numbers(url, table).await;
        if rows.len() >= count {
            assert_eq!(rows, (0..count as u64).collect(), "every row, none other");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} rows after two minutes",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_checkpoint(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A pipeline from a followed file (with a checkpoint) into the landing `table` through `url`,
/// with timeouts short enough for a test.
fn stalling_pipeline(dir: &Path, url: &str, table: &str) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "stall"
        source = {{ type = "file", path = "{dir}/in.jsonl", follow = true, checkpoint = "{dir}/in.offset" }}
        sink = {{ type = "postgres", url = "{url}", table = "{table}", key_field = "n", connect_timeout_ms = 1000, statement_timeout_ms = 1000 }}
        dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
        batch = {{ size = 50, linger_ms = 5 }}
        "#,
        dir = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_connection_is_noticed_reopened_and_loses_nothing() {
    let url = postgres_url();
    let table = unique("pg_stall");
    let proxy = StallingProxy::to_postgres(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    append_numbered(&dir.join("in.jsonl"), 0..200);
    let weir = Weir::start(dir, &stalling_pipeline(dir, &proxy.url, &table));
    wait_for_rows(&url, &table, 200).await;

    // The connection stays open and nothing comes back.
    proxy.stall(true);
    append_numbered(&dir.join("in.jsonl"), 200..400);
    weir.wait_for_log("no answer").await;
    proxy.stall(false);
    wait_for_rows(&url, &table, 400).await;
    weir.wait_for_log("Recovered after retries.").await;

    let (clean, log) = weir.terminate().await;
    assert!(clean, "SIGTERM exits 0:\n{log}");
    assert!(
        !std::fs::read_to_string(dir.join("dlq.jsonl")).is_ok_and(|t| !t.is_empty()),
        "nothing was dead-lettered"
    );
}

/// `url` naming `database` instead of its own.
fn with_database(url: &str, database: &str) -> String {
    let (server, rest) = url.rsplit_once('/').expect("a url ending in /database");
    match rest.split_once('?') {
        Some((_, query)) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A server that stops taking writes, as a primary demoted by a failover does for the clients
/// that reach it again: the sink's session ends, every new one is read-only (SQLSTATE 25006 on
/// each insert), and the sink retries on new connections, writing everything once the server
/// takes writes again. It used to stop the pipeline at the first refusal.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_turns_read_only_is_retried_until_it_takes_writes_and_loses_nothing() {
    turn_read_only_and_back(with_database, "(SQLSTATE 25006)").await;
}

/// The url README suggests for a failover: every host listed, with
/// `target_session_attrs=read-write`. The first host is not there at all, the second is the
/// server; while it takes no writes, the client itself refuses its sessions, and the sink
/// retries until one is writable.
#[tokio::test(flavor = "multi_thread")]
async fn a_url_listing_hosts_with_target_session_attrs_read_write_waits_for_a_writable_one() {
    turn_read_only_and_back(
        |url, database| {
            let (credentials, server) = url.rsplit_once('@').unwrap();
            let address = server.split('/').next().unwrap();
            format!(
                "{credentials}@127.0.0.1:1,{address}/{database}?target_session_attrs=read-write"
            )
        },
        "database does not allow writes",
    )
    .await;
}

/// Lands 200 rows into a database of the test's own through `url_for(server url, database)`,
/// turns it read-only (new sessions take no writes, the sink's own is ended), appends 200 more,
/// waits for `refusal` in the log, and checks that nothing more was written or committed; then
/// makes it writable again and waits for every row.
async fn turn_read_only_and_back(url_for: impl Fn(&str, &str) -> String, refusal: &str) {
    let url = postgres_url();
    let admin = postgres_client(&url).await;
    let database = unique("pg_read_only");
    admin
        .batch_execute(&format!("CREATE DATABASE \"{database}\""))
        .await
        .unwrap();
    let database_url = with_database(&url, &database);
    let table = unique("pg_ro");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    append_numbered(&dir.join("in.jsonl"), 0..200);
    let weir = Weir::start(
        dir,
        &stalling_pipeline(dir, &url_for(&url, &database), &table),
    );
    wait_for_rows(&database_url, &table, 200).await;

    // The failover: new sessions take no writes, and the sink's session is ended.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{database}\" SET default_transaction_read_only = on"
        ))
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&database],
        )
        .await
        .unwrap();
    append_numbered(&dir.join("in.jsonl"), 200..400);
    weir.wait_for_log(refusal).await;
    assert_eq!(numbers(&database_url, &table).await.len(), 200);
    assert!(
        read_checkpoint(&dir.join("in.offset")) <= 200,
        "nothing unwritten is committed"
    );

    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{database}\" RESET default_transaction_read_only"
        ))
        .await
        .unwrap();
    wait_for_rows(&database_url, &table, 400).await;
    let (clean, log) = weir.terminate().await;
    assert!(clean, "SIGTERM exits 0:\n{log}");
    assert!(
        !std::fs::read_to_string(dir.join("dlq.jsonl")).is_ok_and(|t| !t.is_empty()),
        "nothing was dead-lettered"
    );
    admin
        .batch_execute(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_stall_exits_0_and_commits_nothing_unwritten() {
    let url = postgres_url();
    let table = unique("pg_stall_stop");
    let proxy = StallingProxy::to_postgres(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let checkpoint = dir.join("in.offset");
    append_numbered(&dir.join("in.jsonl"), 0..100);
    let weir = Weir::start(dir, &stalling_pipeline(dir, &proxy.url, &table));
    wait_for_rows(&url, &table, 100).await;
    wait_for(
        "the first 100 lines committed",
        Duration::from_secs(60),
        || read_checkpoint(&checkpoint) == 100,
    )
    .await;

    proxy.stall(true);
    append_numbered(&dir.join("in.jsonl"), 100..200);
    weir.wait_for_log("no answer").await;
    let (clean, log) = weir.terminate().await;
    assert!(clean, "SIGTERM during the stall exits 0:\n{log}");
    assert!(log.contains("abandoned unacknowledged"), "{log}");
    let committed = read_checkpoint(&checkpoint);
    let stored = numbers(&url, &table).await;
    assert_eq!(
        committed, 100,
        "only the lines written before the stall are committed"
    );
    assert!((0..committed).all(|n| stored.contains(&n)));

    // A restart (the store reachable again) writes the rest.
    proxy.stall(false);
    let weir = Weir::start(dir, &stalling_pipeline(dir, &proxy.url, &table));
    wait_for_rows(&url, &table, 200).await;
    let (clean, log) = weir.terminate().await;
    assert!(clean, "{log}");
}

/// Writes `records.jsonl` lines into the postgres sink `sink_options` and runs to the end.
fn run_to_end(dir: &Path, lines: &[&str], sink_options: &str) -> std::process::Output {
    std::fs::write(dir.join("in.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("p.toml"),
        format!(
            r#"
            [[pipeline]]
            name = "refusals"
            source = {{ type = "file", path = "in.jsonl" }}
            sink = {{ type = "postgres", {sink_options} }}
            dead_letter = {{ type = "file", path = "dlq.jsonl" }}
            "#
        ),
    )
    .unwrap();
    run_weir(dir, &["run", "p.toml", "--no-watch", "--no-admin"])
}

#[test]
fn a_missing_table_stops_the_pipeline_with_the_fix() {
    let url = postgres_url();
    let table = unique("pg_missing");
    let dir = tempfile::tempdir().unwrap();
    let output = run_to_end(
        dir.path(),
        &[r#"{"n":1}"#],
        &format!(r#"url = "{url}", table = "{table}", create_table = false"#),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("table `{table}` does not exist (SQLSTATE 42P01)"))
            && stderr.contains("set create_table = true"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unique_violation_outside_the_key_dead_letters_only_that_record() {
    let url = postgres_url();
    let table = unique("pg_unique");
    postgres_client(&url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE,
                value JSONB NOT NULL, ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                email TEXT GENERATED ALWAYS AS (value->>'email') STORED UNIQUE)"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = run_to_end(
        dir.path(),
        &[
            r#"{"n":0,"email":"a@x"}"#,
            r#"{"n":1,"email":"b@x"}"#,
            r#"{"n":2,"email":"a@x"}"#,
            r#"{"n":3,"email":"c@x"}"#,
        ],
        &format!(r#"url = "{url}", table = "{table}", key_field = "n", create_table = false"#),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        numbers(&url, &table).await,
        BTreeSet::from([0, 1, 3]),
        "the other records are written"
    );
    let dead = read_json_lines(&dir.path().join("dlq.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let error = dead[0]["headers"]["weir.error"].as_str().unwrap();
    assert!(
        error.contains("SQLSTATE 23505") && error.contains("email"),
        "{error}"
    );
    assert_eq!(dead[0]["headers"]["weir.source.offset"], "3");
}

/// At least `len` bytes of text that do not compress: the hex of a hash chain.
fn incompressible(len: usize) -> String {
    let mut text = String::new();
    let mut block = [0u8; 32];
    while text.len() < len {
        block = sha2::Sha256::digest(block).into();
        text.push_str(&hex::encode(block));
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn values_and_keys_postgres_refuses_dead_letter_only_their_records() {
    let url = postgres_url();
    let table = unique("pg_refused");
    // A key that outgrows a btree entry (2704 bytes).
    let long_key = incompressible(8_000);
    let long_fraction = format!("0.{}1", "0".repeat(16_400));
    let batch = [
        keyed(b"a", r#"{"n":0}"#),
        // serde_json reads 0.0; jsonb's numeric cannot hold it.
        keyed(b"b", r#"{"n":1,"x":1e-20000}"#),
        keyed(long_key.as_bytes(), r#"{"n":2}"#),
        keyed(b"c", &format!(r#"{{"n":3,"x":{long_fraction}}}"#)),
        keyed(b"d", r#"{"n":4}"#),
    ];
    let mut sink = PostgresSink::new(&sink_config(&url, &table, ""), false).unwrap();
    // Refused records, not a failed write: the pipeline dead-letters them and goes on.
    let rejected = sink.write(&batch).await.unwrap();
    assert_eq!(
        rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for refused in &rejected {
        let (sqlstate, says) = if refused.index == 2 {
            ("SQLSTATE 54000", "index row size")
        } else {
            ("SQLSTATE 22003", "value overflows numeric format")
        };
        let reason = &refused.reason;
        assert!(
            reason.contains(sqlstate) && reason.contains(says) && reason.len() <= 4096,
            "record {}: {}",
            refused.index,
            reason.chars().take(500).collect::<String>()
        );
    }
    assert_eq!(numbers(&url, &table).await, BTreeSet::from([0, 4]));
    // The next batch is written as usual.
    assert!(
        sink.write(&[keyed(b"e", r#"{"n":5}"#)])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(numbers(&url, &table).await, BTreeSet::from([0, 4, 5]));
}

fn sink_config(url: &str, table: &str, extra: &str) -> PostgresSinkConfig {
    toml::from_str(&format!("url = \"{url}\"\ntable = \"{table}\"\n{extra}")).unwrap()
}

fn keyed(key: &[u8], value: &str) -> Record {
    let mut record = Record::from_value(value);
    record.key = Some(key.to_vec().into());
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_keys_stay_distinct() {
    let url = postgres_url();
    // Lossy UTF-8 would turn both keys into U+FFFD, one row.
    let records = [keyed(&[0xff], r#"{"n":0}"#), keyed(&[0xfe], r#"{"n":1}"#)];

    let table = unique("pg_text_keys");
    let mut sink = PostgresSink::new(&sink_config(&url, &table, ""), false).unwrap();
    let rejected = sink.write(&records).await.unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected[0].reason.contains("not UTF-8")
            && rejected[0].reason.contains(r#"key_encoding = "hex""#),
        "{}",
        rejected[0].reason
    );

    let table = unique("pg_hex_keys");
    let mut sink =
        PostgresSink::new(&sink_config(&url, &table, r#"key_encoding = "hex""#), false).unwrap();
    assert!(sink.write(&records).await.unwrap().is_empty());
    let keys: BTreeSet<String> = postgres_client(&url)
        .await
        .query(&format!("SELECT key FROM \"{table}\""), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(keys, BTreeSet::from(["fe".to_owned(), "ff".to_owned()]));
}

/// The value stored under key `k` in `table`.
async fn stored(url: &str, table: &str, key: &str) -> serde_json::Value {
    postgres_client(url)
        .await
        .query_one(
            &format!("SELECT value FROM \"{table}\" WHERE key = $1"),
            &[&key],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn on_conflict_update_keeps_the_last_write_and_ignore_counts_what_it_left_out() {
    let url = postgres_url();
    let first = [keyed(b"k", r#"{"v":"old"}"#)];
    // Two writes of one key in one batch, then the last of them wins too.
    let second = [
        keyed(b"k", r#"{"v":"newer"}"#),
        keyed(b"k", r#"{"v":"new"}"#),
    ];

    let table = unique("pg_update");
    let mut sink = PostgresSink::new(&sink_config(&url, &table, ""), false).unwrap();
    assert!(sink.write(&first).await.unwrap().is_empty());
    assert!(sink.write(&second).await.unwrap().is_empty());
    assert_eq!(stored(&url, &table, "k").await["v"], "new");

    let table = unique("pg_ignore");
    let mut sink = PostgresSink::new(
        &sink_config(&url, &table, r#"on_conflict = "ignore""#),
        false,
    )
    .unwrap();
    assert!(sink.write(&first).await.unwrap().is_empty());
    assert!(sink.write(&second).await.unwrap().is_empty());
    assert_eq!(stored(&url, &table, "k").await["v"], "old");
    let ignored = weir::connectors::postgres::ignored_records();
    assert!(
        ignored.contains(&(table.clone(), 2)),
        "both records of the second batch are counted as ignored: {ignored:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_last_write_of_a_key_leaves_the_key_its_earlier_record() {
    let url = postgres_url();
    let table = unique("pg_update_refused");
    postgres_client(&url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE,
                value JSONB NOT NULL, ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                email TEXT GENERATED ALWAYS AS (value->>'email') STORED UNIQUE);
             INSERT INTO \"{table}\" (key, value) VALUES ('x', '{{\"n\":0,\"email\":\"a@x\"}}')"
        ))
        .await
        .unwrap();
    let mut sink =
        PostgresSink::new(&sink_config(&url, &table, "create_table = false"), false).unwrap();
    // The last write of `k` takes an email another row holds; the one before it is fine.
    let batch = [
        keyed(b"k", r#"{"n":1,"email":"b@x"}"#),
        keyed(b"k", r#"{"n":2,"email":"a@x"}"#),
    ];
    let rejected = sink.write(&batch).await.unwrap();
    assert_eq!(rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [1]);
    assert!(
        rejected[0].reason.contains("SQLSTATE 23505"),
        "{}",
        rejected[0].reason
    );
    assert_eq!(numbers(&url, &table).await, BTreeSet::from([0, 1]));
    assert_eq!(stored(&url, &table, "k").await["n"], 1);
}

/// A dead letter as the sink stage hands it over: the failure and its source coordinates.
fn dead_letter(offset: u64, value: &str) -> Record {
    let mut record = Record::from_value(value);
    record.set_header("weir.error", "refused");
    record.set_header("weir.pipeline", "p");
    record.set_header("weir.source.stream", "in.jsonl");
    record.set_header("weir.source.partition", "0");
    record.set_header("weir.source.offset", offset.to_string());
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_written_again_after_an_ambiguous_failure_is_stored_once() {
    let url = postgres_url();
    let table = unique("pg_dlq_once");
    // A table as an earlier version made it, with a dead letter in it: the sink adds the
    // idempotency column and index and keeps the row.
    postgres_client(&url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key BYTEA, value BYTEA NOT NULL,
                headers JSONB NOT NULL, error TEXT, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
             INSERT INTO \"{table}\" (value, headers) VALUES ('old', '{{}}'), ('older', '{{}}')"
        ))
        .await
        .unwrap();
    let mut sink = PostgresSink::new(&sink_config(&url, &table, ""), true).unwrap();
    // Two outputs of one source record, and a record of its own.
    let batch = [
        dead_letter(7, "a"),
        dead_letter(7, "b"),
        dead_letter(8, "c"),
    ];
    assert!(sink.write(&batch).await.unwrap().is_empty());
    // The retry after an INSERT whose answer was lost sends the same batch again.
    assert!(sink.write(&batch).await.unwrap().is_empty());
    let expected: Vec<&[u8]> = vec![b"old", b"older", b"a", b"b", b"c"];
    assert_eq!(dead_values(&url, &table).await, expected);
}

/// The values of a dead-letter `table`, in insertion order.
async fn dead_values(url: &str, table: &str) -> Vec<Vec<u8>> {
    postgres_client(url)
        .await
        .query(&format!("SELECT value FROM \"{table}\" ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn another_dead_letter_at_a_position_seen_before_is_stored_too() {
    let url = postgres_url();
    let table = unique("pg_dlq_position");
    let mut sink = PostgresSink::new(&sink_config(&url, &table, ""), true).unwrap();
    // A stream name too long for the unique index as it is.
    let mut long_stream = dead_letter(9, "long");
    long_stream.set_header("weir.source.stream", incompressible(3_000));
    let first = [dead_letter(7, "a"), long_stream];
    assert!(sink.write(&first).await.unwrap().is_empty());
    // A source that starts again at offset 0 (an HTTP source without a journal, a topic made
    // anew) brings another record to the same position; then the first batch is retried.
    assert!(sink.write(&[dead_letter(7, "b")]).await.unwrap().is_empty());
    assert!(sink.write(&first).await.unwrap().is_empty());
    let expected: Vec<&[u8]> = vec![b"a", b"long", b"b"];
    assert_eq!(dead_values(&url, &table).await, expected);
}

/// Whether `table` exists in the public schema.
async fn table_exists(url: &str, table: &str) -> bool {
    postgres_client(url)
        .await
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("public.\"{table}\"")],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_connects_and_creates_its_table_at_start_before_any_write() {
    let url = postgres_url();
    let table = unique("warm");
    let mut sink = PostgresSink::new(&sink_config(&url, &table, ""), false).unwrap();
    // Building the sink opens nothing: the pipeline must start while the database is down.
    assert!(!table_exists(&url, &table).await);
    sink.warm_up();
    wait_for_async(
        "the warm-up to create the table",
        Duration::from_secs(60),
        || table_exists(&url, &table),
    )
    .await;
    // The first write takes the warm-up's connection and lands its row.
    sink.write(&[keyed(b"k", r#"{"n":1}"#)]).await.unwrap();
    assert_eq!(numbers(&url, &table).await, BTreeSet::from([1]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_up_that_cannot_connect_leaves_the_first_write_to_report_it() {
    // A loopback port nothing listens on: the database is down.
    let url = "postgres://weir@127.0.0.1:1/weir";
    let config = sink_config(url, &unique("warm_down"), "connect_timeout_ms = 2000");
    let mut sink = PostgresSink::new(&config, false).unwrap();
    sink.warm_up();
    let error = sink
        .write(&[keyed(b"k", r#"{"n":1}"#)])
        .await
        .expect_err("no database to write to");
    assert!(error.is_transient(), "a database down is retried: {error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_whose_connection_stalls_gives_up_within_its_statement_limit_and_reconnects() {
    let url = postgres_url();
    let table = unique("pg_replay_stall");
    postgres_client(&url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key BYTEA, value BYTEA NOT NULL,
                headers JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
             INSERT INTO \"{table}\" (value, headers) VALUES ('a', '{{}}'), ('b', '{{}}')"
        ))
        .await
        .unwrap();
    let proxy = StallingProxy::to_postgres(&url).await;
    let dead_letter = SinkConfig::Postgres(sink_config(
        &proxy.url,
        &table,
        "statement_timeout_ms = 300\nconnect_timeout_ms = 300",
    ));
    let cursor = Cursor::default_for("p", &dead_letter, "0");
    let mut reader = weir::connectors::replay::open(&dead_letter, &cursor, false)
        .await
        .unwrap();

    // The connection stays open and nothing comes back: the read fails as transient instead
    // of waiting for ever (the guard below is only there to report a hang).
    proxy.stall(true);
    let stalled = tokio::time::timeout(Duration::from_secs(120), reader.read(10))
        .await
        .expect("a read on a stalled connection returns");
    let Err(error) = stalled else {
        panic!("a read on a stalled connection fails");
    };
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("no answer"), "{error}");

    // Once the proxy forwards again, the next read opens a new connection and reads both rows.
    proxy.stall(false);
    let entries = reader.read(10).await.unwrap().expect("two rows to replay");
    let values: Vec<&[u8]> = entries.iter().map(|e| e.record.value.as_ref()).collect();
    assert_eq!(values, vec![b"a".as_slice(), b"b".as_slice()]);
}

/// `url` with `setting` given to every session it opens (`-c name=value`).
fn with_setting(url: &str, setting: &str) -> String {
    let options = format!("options=-c%20{}", setting.replace('=', "%3D"));
    if url.contains('?') {
        format!("{url}&{options}")
    } else {
        format!("{url}?{options}")
    }
}

/// A landing table locked longer than the role's `lock_timeout` (a DBA's ALTER TABLE or VACUUM
/// FULL holds ACCESS EXCLUSIVE): each insert is refused with 55P03 and retried until the lock
/// goes, nothing lost or dead-lettered. It used to stop the pipeline at the first refusal.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_locked_past_lock_timeout_is_retried_until_the_lock_goes() {
    let url = postgres_url();
    let table = unique("pg_locked");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    append_numbered(&dir.join("in.jsonl"), 0..200);
    let weir = Weir::start(
        dir,
        &stalling_pipeline(dir, &with_setting(&url, "lock_timeout=100"), &table),
    );
    wait_for_rows(&url, &table, 200).await;

    let locker = postgres_client(&url).await;
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{table}\" IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    append_numbered(&dir.join("in.jsonl"), 200..400);
    weir.wait_for_log("SQLSTATE 55P03").await;
    locker.batch_execute("COMMIT").await.unwrap();
    wait_for_rows(&url, &table, 400).await;

    let (clean, log) = weir.terminate().await;
    assert!(clean, "SIGTERM exits 0:\n{log}");
    assert!(
        !std::fs::read_to_string(dir.join("dlq.jsonl")).is_ok_and(|t| !t.is_empty()),
        "nothing was dead-lettered"
    );
}
