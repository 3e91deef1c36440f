//! Pipelines run through the library on files: bad records become dead letters with their reason
//! and source coordinates, order is preserved, a restarted file source resumes where it was
//! acknowledged, and a connector whose store is down at start is retried instead of failing.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    FileRun, Spawned, postgres_client, read_json_lines, run_pipeline, spawn_pipeline, wait_for,
    write_input,
};

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_are_dead_lettered_with_reason_and_coordinates() {
    let mut generator = weir::generator::UserGenerator::new(9);
    let mut lines: Vec<String> = (0..50).map(|_| generator.next_user().to_string()).collect();
    lines[10] = "{not json".into();
    let mut missing = generator.next_user();
    missing["name"].as_object_mut().unwrap().remove("first");
    lines[20] = missing.to_string();
    let files = FileRun::new(&lines);
    let report = files
        .run(
            "bad-records",
            r#"transforms = [{ plugin = "user-profile" }]
            batch = { size = 16 }"#,
        )
        .await;
    assert_eq!(
        (report.records_in, report.records_out, report.dead_lettered),
        (50, 48, 2)
    );

    let rows = read_json_lines(&files.out);
    let expected_ids: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 10 && *i != 20)
        .map(|(_, l)| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["login"]["uuid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected_ids, "outputs keep input order");

    let dead = read_json_lines(&files.dlq);
    assert_eq!(dead.len(), 2);
    let headers = &dead[0]["headers"];
    assert_eq!(dead[0]["value"], "{not json");
    assert_eq!(headers["weir.error.kind"], "bad-record");
    assert!(
        headers["weir.error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(headers["weir.plugin"], "user-profile");
    assert_eq!(headers["weir.plugin.version"].as_str().unwrap().len(), 12);
    assert_eq!(headers["weir.pipeline"], "bad-records");
    assert_eq!(headers["weir.source.stream"], files.input.as_str());
    assert_eq!(
        headers["weir.source.offset"], "11",
        "line numbers are 1-based"
    );
    assert_eq!(
        dead[1]["headers"]["weir.error"],
        "missing required field `name.first`"
    );
    assert_eq!(dead[1]["headers"]["weir.source.offset"], "21");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_filters_and_fans_out_through_several_plugins() {
    let mut generator = weir::generator::UserGenerator::new(5);
    // Each record is a whole API response with 3 users: user-profile fans it out.
    let lines: Vec<String> = (0..20)
        .map(|_| generator.next_response(3).to_string())
        .collect();
    let females = lines
        .iter()
        .flat_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["results"]
                .as_array()
                .unwrap()
                .clone()
        })
        .filter(|u| u["gender"] == "female")
        .count();
    let files = FileRun::new(&lines);
    let report = files
        .run(
            "chain",
            r#"transforms = [
                { plugin = "user-profile" },
                { plugin = "filter", config = { field = "gender", equals = "female" } },
                { plugin = "pii-mask", config = { fields = "email", mode = "redact" } },
            ]"#,
        )
        .await;
    assert_eq!(report.records_in, 20);
    assert_eq!(report.records_out, females as u64);
    let rows = read_json_lines(&files.out);
    assert_eq!(rows.len(), females);
    assert!(
        rows.iter()
            .all(|r| r["gender"] == "female" && r["email"] == "***")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_file_source_resumes_after_the_acknowledged_line() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..30).map(|i| format!("{{\"n\":{i}}}")).collect();
    let input = write_input(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let toml = format!(
        r#"
        [[pipeline]]
        name = "resume"
        source = {{ type = "file", path = "{input}", checkpoint = "{0}/input.offset" }}
        sink = {{ type = "file", path = "{1}" }}
        dead_letter = {{ type = "file", path = "{0}/dlq.jsonl" }}
        batch = {{ size = 7 }}
        "#,
        dir.path().display(),
        out.display()
    );
    let first = run_pipeline(&toml).await;
    assert_eq!(first.records_out, 30);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("input.offset"))
            .unwrap()
            .split_whitespace()
            .next(),
        Some("30"),
        "the checkpoint starts with the line number"
    );
    let more: Vec<String> = (30..40).map(|i| format!("{{\"n\":{i}}}")).collect();
    let mut all = lines.clone();
    all.extend(more);
    write_input(dir.path(), &all);
    let second = run_pipeline(&toml).await;
    assert_eq!(second.records_in, 10, "only the new lines are read again");
    let ns: Vec<i64> = read_json_lines(&out)
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..40).collect::<Vec<_>>());
}

/// Stands in for a PostgreSQL that is down at first: it accepts each connection and closes it
/// at once, and from the `down_for`-th on (if any) relays it to the real PostgreSQL. Returns the
/// URL to reach it and the count of connections.
async fn database_down_at_first(
    down_for: Option<usize>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let real = crate::support::postgres_url();
    let (credentials, rest) = real.rsplit_once('@').unwrap();
    let (real_address, database) = rest.split_once('/').unwrap();
    let real_address = real_address.to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "{credentials}@{}/{database}",
        listener.local_addr().unwrap()
    );
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if down_for.is_some_and(|down_for| attempt > down_for) {
                let address = real_address.clone();
                tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(address).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        }
    });
    (url, connections)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_whose_database_is_down_at_start_waits_for_it_and_then_runs() {
    crate::support::init_logs();
    let (url, connections) = database_down_at_first(Some(3)).await;
    let table = crate::support::unique("late_db");
    let client = postgres_client(&crate::support::postgres_url()).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key TEXT, value JSONB NOT NULL);
             INSERT INTO \"{table}\" (key, value) VALUES ('a', '{{\"n\":1}}'), ('b', '{{\"n\":2}}')"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let Spawned { shutdown, run, .. } = spawn_pipeline(&format!(
        r#"
        [[pipeline]]
        name = "late-db"
        source = {{ type = "postgres", url = "{url}", table = "{table}" }}
        sink = {{ type = "file", path = "{}" }}
        dead_letter = {{ type = "file", path = "{}" }}
        "#,
        out.display(),
        dir.path().join("dlq.jsonl").display()
    ));
    let finished = || run.is_finished();
    let written = || std::fs::read_to_string(&out).map_or(0, |t| t.lines().count());
    wait_for(
        "the rows, once the database answers",
        Duration::from_secs(60),
        || written() == 2 || finished(),
    )
    .await;
    // A pipeline that failed is gone and cannot be told.
    let _ = shutdown.send(true);
    let report = run.await.unwrap();
    // Best effort: a failed run may not have created its offsets row.
    for cleanup in [
        format!("DROP TABLE \"{table}\""),
        format!("DELETE FROM weir_offsets WHERE source = '{table}'"),
    ] {
        let _ = client.batch_execute(&cleanup).await;
    }
    let report = report.unwrap_or_else(|e| panic!("the pipeline failed: {e}"));
    assert_eq!(report.records_out, 2);
    assert!(
        connections.load(std::sync::atomic::Ordering::SeqCst) > 3,
        "it connected after three refused attempts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_while_a_connector_cannot_open_is_a_clean_stop() {
    crate::support::init_logs();
    let (url, connections) = database_down_at_first(None).await;
    let dir = tempfile::tempdir().unwrap();
    let Spawned { shutdown, run, .. } = spawn_pipeline(&format!(
        r#"
        [[pipeline]]
        name = "never-db"
        source = {{ type = "postgres", url = "{url}", table = "users" }}
        sink = {{ type = "file", path = "{}" }}
        dead_letter = {{ type = "file", path = "{}" }}
        "#,
        dir.path().join("out.jsonl").display(),
        dir.path().join("dlq.jsonl").display()
    ));
    let finished = || run.is_finished();
    wait_for("three attempts to connect", Duration::from_secs(60), || {
        connections.load(std::sync::atomic::Ordering::SeqCst) >= 3 || finished()
    })
    .await;
    assert!(
        !run.is_finished(),
        "a database that is down must not fail the pipeline: {:?}",
        run.await.unwrap().map(|report| report.to_string())
    );
    shutdown.send(true).unwrap();
    let report = run
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("stopping while connecting is clean: {e}"));
    assert_eq!(report.records_in, 0);
}
