//! The `postgres` source tailing a table that a `postgres` sink fills, as the seed's publish
//! pipeline does: with a poll interval of ten minutes, rows still arrive at once because the
//! sink's trigger NOTIFYs and the source LISTENs; the position it keeps in `weir_offsets` ends at
//! the last row acknowledged.

use std::path::Path;
use std::time::Duration;

use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;

use crate::support::{
    Spawned, append_numbered, line_count, plugin_registry, postgres_client, postgres_url,
    read_json_lines, spawn_pipeline, unique, wait_for, wait_for_async,
};

fn land(name: &str, input: &Path, url: &str, table: &str, follow: bool) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "{name}"
        source = {{ type = "file", path = "{}", follow = {follow} }}
        sink = {{ type = "postgres", url = "{url}", table = "{table}", key_field = "n" }}
        dead_letter = {{ type = "file", path = "{}.dlq.jsonl" }}
        batch = {{ size = 100, linger_ms = 10 }}
        "#,
        input.display(),
        input.display()
    )
}

/// A pipeline tailing `table` as `consumer` into the file `out`, on a ten-minute poll so that
/// only a NOTIFY brings new rows at once; `listen` adds source options (a `channel`).
fn tail(url: &str, table: &str, consumer: &str, listen: &str, out: &Path) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "tail"
        source = {{ type = "postgres", url = "{url}", table = "{table}", consumer = "{consumer}"{listen}, poll_interval_ms = 600000 }}
        sink = {{ type = "file", path = "{}" }}
        dead_letter = {{ type = "file", path = "{}.dlq" }}
        batch = {{ size = 100, linger_ms = 10 }}
        "#,
        out.display(),
        out.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_wakes_the_tailing_source_and_its_position_follows_the_acknowledgements() {
    crate::support::init_logs();
    let url = postgres_url();
    let table = unique("tailed");
    let consumer = unique("tail");
    let dir = tempfile::tempdir().unwrap();
    // A first run creates the table and its NOTIFY trigger, and lands rows 0..10.
    let first = dir.path().join("first.jsonl");
    append_numbered(&first, 0..10);
    let config = PipelineFile::parse(
        Path::new("land.toml"),
        &land("land-first", &first, &url, &table, false),
    )
    .unwrap();
    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    let app = RunningApp::start(config, options.clone()).await.unwrap();
    for (name, result) in app.wait().await {
        result.unwrap_or_else(|e| panic!("pipeline {name} failed: {e}"));
    }

    // Then the tail runs beside a lander that follows its input.
    let input = dir.path().join("more.jsonl");
    std::fs::write(&input, "").unwrap();
    let out = dir.path().join("out.jsonl");
    let text = format!(
        "{}{}",
        land("land", &input, &url, &table, true),
        tail(&url, &table, &consumer, "", &out)
    );
    let app = RunningApp::start(
        PipelineFile::parse(Path::new("tail.toml"), &text).unwrap(),
        options,
    )
    .await
    .unwrap();
    let tailed = out.clone();
    wait_for(
        "the rows already there",
        Duration::from_secs(60),
        move || line_count(&tailed) == 10,
    )
    .await;
    // The source now waits on its ten-minute poll: only a NOTIFY can bring the next rows.
    for round in 1..3u64 {
        append_numbered(&input, round * 10..(round + 1) * 10);
        let tailed = out.clone();
        let expected = ((round + 1) * 10) as usize;
        wait_for(
            &format!("{expected} rows, woken by NOTIFY"),
            Duration::from_secs(60),
            move || line_count(&tailed) == expected,
        )
        .await;
    }
    app.shutdown_handle().send(true).unwrap();
    for (name, result) in app.wait().await {
        result.unwrap_or_else(|e| panic!("pipeline {name} failed: {e}"));
    }

    let values: Vec<u64> = read_json_lines(&out)
        .iter()
        .map(|row| row["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        values,
        (0..30).collect::<Vec<_>>(),
        "every row once, in id order"
    );
    let client = postgres_client(&url).await;
    let last_id: i64 = client
        .query_one(&format!("SELECT MAX(id) FROM \"{table}\""), &[])
        .await
        .unwrap()
        .get(0);
    let position: i64 = client
        .query_one(
            "SELECT position FROM weir_offsets WHERE consumer = $1 AND source = $2",
            &[&consumer, &table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        position, last_id,
        "the committed position is the last row written out"
    );
}

/// A channel named as PostgreSQL allows inside quotes, not as a bare identifier: the source
/// listens on it exactly, so a NOTIFY on it (and only on it: the poll is ten minutes) brings
/// the new rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_channel_with_a_dash_and_a_dot_is_listened_to() {
    crate::support::init_logs();
    let url = postgres_url();
    let table = unique("dotted");
    let consumer = unique("dotted");
    let channel = format!("{}-events.v1", unique("orders"));
    let dir = tempfile::tempdir().unwrap();
    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    let land_rows = |file: &str, rows: std::ops::Range<u64>| {
        let input = dir.path().join(file);
        append_numbered(&input, rows);
        let text = land(file, &input, &url, &table, false);
        let options = options.clone();
        async move {
            let app = RunningApp::start(
                PipelineFile::parse(Path::new("land.toml"), &text).unwrap(),
                options,
            )
            .await
            .unwrap();
            for (name, result) in app.wait().await {
                result.unwrap_or_else(|e| panic!("pipeline {name} failed: {e}"));
            }
        }
    };
    land_rows("first", 0..5).await;
    let out = dir.path().join("out.jsonl");
    let text = tail(
        &url,
        &table,
        &consumer,
        &format!(", channel = \"{channel}\""),
        &out,
    );
    let app = RunningApp::start(
        PipelineFile::parse(Path::new("tail.toml"), &text).unwrap(),
        options.clone(),
    )
    .await
    .unwrap();
    let tailed = out.clone();
    wait_for(
        "the rows already there",
        Duration::from_secs(60),
        move || line_count(&tailed) == 5,
    )
    .await;
    // The sink's trigger announces these on its own channel, which the source does not hear.
    land_rows("second", 5..10).await;
    let client = postgres_client(&url).await;
    client
        .execute("SELECT pg_notify($1, '')", &[&channel])
        .await
        .unwrap();
    let tailed = out.clone();
    wait_for(
        "the new rows, woken by the NOTIFY on the channel",
        Duration::from_secs(60),
        move || line_count(&tailed) == 10,
    )
    .await;
    app.shutdown_handle().send(true).unwrap();
    for (name, result) in app.wait().await {
        result.unwrap_or_else(|e| panic!("pipeline {name} failed: {e}"));
    }
}

/// Two writers of one landing table whose INSERTs overlap, and a source tailing it. The first
/// writer's INSERT is held inside its statement with an id drawn but not committed (a test
/// trigger waits on an advisory lock the test holds), and the second writer's rows come
/// meanwhile. Had the second committed its higher ids first, the source would have read them
/// and passed over the first writer's lower id for good; the writers take turns instead, so the
/// source reads every row.
#[tokio::test(flavor = "multi_thread")]
async fn a_tail_misses_no_row_of_two_writers_whose_inserts_overlap() {
    crate::support::init_logs();
    let url = postgres_url();
    let table = unique("overlap");
    let dir = tempfile::tempdir().unwrap();
    // After the first, the writers leave the table as it is: replacing its trigger would wait
    // for the held INSERT's lock on the table.
    let landing = |file: &str, rows: std::ops::Range<u64>| {
        let input = dir.path().join(file);
        append_numbered(&input, rows);
        let text = land(file, &input, &url, &table, false);
        spawn_pipeline(&if file == "first" {
            text
        } else {
            text.replace(
                "key_field = \"n\"",
                "key_field = \"n\", create_table = false",
            )
        })
    };
    // Runs a landing to its end; its shutdown sender is held until then, since a dropped one
    // reads as a shutdown.
    let finished = |spawned: Spawned| async move {
        let Spawned { shutdown, run, .. } = spawned;
        run.await.unwrap().unwrap();
        drop(shutdown);
    };
    finished(landing("first", 0..1)).await;

    // Rows 100 to 199 wait in their BEFORE trigger, their id drawn, while the gate is held.
    let gate: i64 = rand::random::<u32>().into();
    let admin = postgres_client(&url).await;
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION \"{table}_gate\"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                 IF (NEW.value->>'n')::int BETWEEN 100 AND 199 THEN
                     PERFORM pg_advisory_lock_shared({gate});
                     PERFORM pg_advisory_unlock_shared({gate});
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER gate BEFORE INSERT ON \"{table}\" FOR EACH ROW EXECUTE FUNCTION \"{table}_gate\"();
             SELECT pg_advisory_lock({gate});"
        ))
        .await
        .unwrap();

    let out = dir.path().join("out.jsonl");
    let tail = spawn_pipeline(&tail(&url, &table, &unique("overlap"), "", &out));
    wait_for("the first row", Duration::from_secs(60), || {
        line_count(&out) == 1
    })
    .await;

    let waiting = |class: i64, object: i64| {
        let admin = &admin;
        async move {
            let waiting: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                     AND classid::bigint = $1 AND objid::bigint = $2",
                    &[&class, &object],
                )
                .await
                .unwrap()
                .get(0);
            waiting > 0
        }
    };
    let held = landing("held", 100..110);
    wait_for_async(
        "the first writer at the gate",
        Duration::from_secs(60),
        || waiting(0, gate),
    )
    .await;
    let table_oid: i64 = admin
        .query_one(&format!("SELECT '\"{table}\"'::regclass::oid::bigint"), &[])
        .await
        .unwrap()
        .get(0);
    let second = landing("second", 200..210);
    // The second writer waits its turn (on the sink's lock space, "weir" in ASCII, and the
    // table's oid); had it not, the source would read its rows now.
    wait_for_async(
        "the second writer waiting its turn, or its rows read",
        Duration::from_secs(60),
        || async { waiting(0x7765_6972, table_oid).await || line_count(&out) > 1 },
    )
    .await;
    admin
        .batch_execute(&format!("SELECT pg_advisory_unlock({gate})"))
        .await
        .unwrap();
    finished(held).await;
    finished(second).await;
    wait_for_async("every row tailed", Duration::from_secs(60), || async {
        line_count(&out) >= 21
    })
    .await;
    tail.shutdown.send(true).unwrap();
    tail.run.await.unwrap().unwrap();
    let mut values: Vec<u64> = read_json_lines(&out)
        .iter()
        .map(|row| row["n"].as_u64().unwrap())
        .collect();
    values.sort_unstable();
    let expected: Vec<u64> = (0..1).chain(100..110).chain(200..210).collect();
    assert_eq!(values, expected, "every row once");
}
