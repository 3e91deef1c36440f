//! Crash safety: `kill -9` at random moments while the seed's process pipeline (Kafka ->
//! user-profile -> sink) runs, restarting it each time. Every id arrives; re-processed records
//! are counted, and in Cassandra they collapse by primary key.
//!
//! CI runs a short variant; `WEIR_CRASH_RECORDS=200000 WEIR_CRASH_KILLS=10 cargo test -p weir
//! --test all crash -- --nocapture` runs the long one and prints its numbers.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use rand::RngExt;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::services::create_topic;
use crate::support::{
    cassandra_nodes, cassandra_session, kafka_brokers, plugin_registry, unique, wait_for, weir,
};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Produces `count` users with unique ids; returns the ids.
async fn produce_users(brokers: &str, topic: &str, count: usize) -> BTreeSet<String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut generator = weir::generator::UserGenerator::new(rand::rng().random());
    let mut ids = BTreeSet::new();
    let mut remaining = count;
    while remaining > 0 {
        let chunk: Vec<(String, String)> = (0..remaining.min(1000))
            .map(|_| {
                let user = generator.next_user();
                (
                    user["login"]["uuid"].as_str().unwrap().to_owned(),
                    user.to_string(),
                )
            })
            .collect();
        remaining -= chunk.len();
        let sends = chunk.iter().map(|(id, value)| {
            producer.send(
                FutureRecord::to(topic).key(id).payload(value),
                Duration::from_secs(30),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.unwrap();
        }
        ids.extend(chunk.into_iter().map(|(id, _)| id));
    }
    assert_eq!(ids.len(), count, "generated ids are unique");
    ids
}

fn spawn(dir: &Path) -> Child {
    weir()
        .current_dir(dir)
        .args(["run", "p.toml", "--no-watch", "--admin", "127.0.0.1:0"])
        .env("WEIR_PLUGINS", plugin_registry())
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the pipeline in `dir`, killing it with SIGKILL `kills` times once `progress` has moved
/// past a random point, then lets a last run finish until `done`.
async fn run_with_kills(
    dir: &Path,
    kills: usize,
    progress: impl Fn() -> usize + Clone + Send + 'static,
    target: usize,
) {
    for kill in 0..kills {
        let before = progress();
        let step = rand::rng()
            .random_range(target / (kills * 4).max(1)..=target / (kills * 2).max(1))
            .max(1);
        let mut child = spawn(dir);
        let watch = progress.clone();
        wait_for(
            &format!("progress before kill {kill}"),
            Duration::from_secs(120),
            move || watch() >= (before + step).min(target),
        )
        .await;
        child.kill().unwrap(); // SIGKILL: no drain, no final commit
        child.wait().unwrap();
    }
    let mut last = spawn(dir);
    let watch = progress.clone();
    wait_for("every record", Duration::from_secs(600), move || {
        watch() >= target
    })
    .await;
    last.kill().unwrap();
    last.wait().unwrap();
}

/// The ids in the file sink's output. Every complete line must parse: a line torn by SIGKILL
/// is dropped by the sink when it reopens the file, so it never has a record glued onto it.
/// Only the bytes after the last newline may be partial (a write in progress, or the torn line
/// of the last kill, which no restart repaired); their record was never acknowledged.
fn file_ids(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let Some(last) = bytes.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    let text = std::str::from_utf8(&bytes[..last])
        .unwrap_or_else(|e| panic!("{} is not UTF-8 before its last line: {e}", path.display()));
    text.split('\n')
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("unparsable line in {}: {e}: {line}", path.display()));
            row["id"]
                .as_str()
                .unwrap_or_else(|| panic!("line without an id: {line}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_nothing_and_counts_what_is_processed_again() {
    let records = setting("WEIR_CRASH_RECORDS", 20_000);
    let kills = setting("WEIR_CRASH_KILLS", 3);
    let brokers = kafka_brokers();
    let topic = unique("crash");
    create_topic(&brokers, &topic, 3).await;
    let ids = produce_users(&brokers, &topic, records).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    std::fs::write(
        dir.path().join("p.toml"),
        format!(
            "[[pipeline]]\nname = \"process\"\nsource = {{ type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{}\", session_timeout_ms = 6000, heartbeat_interval_ms = 1000 }}\ntransforms = [{{ plugin = \"user-profile\" }}]\nsink = {{ type = \"file\", path = \"{}\" }}\ndead_letter = {{ type = \"file\", path = \"dlq.jsonl\" }}\nbatch = {{ size = 200, linger_ms = 10 }}\n",
            unique("group"),
            out.display()
        ),
    )
    .unwrap();
    let watched = out.clone();
    let distinct = move || {
        file_ids(&watched)
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len()
    };
    run_with_kills(dir.path(), kills, distinct, records).await;
    let written = file_ids(&out);
    let seen: BTreeSet<String> = written.iter().cloned().collect();
    assert_eq!(seen, ids, "every id arrived, and nothing else");
    let reprocessed = written.len() - records;
    println!(
        "crash (file witness): records {records}, kills {kills}, lost 0, re-processed {reprocessed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_into_cassandra_collapses_replays_by_primary_key() {
    let records = setting("WEIR_CRASH_RECORDS", 20_000);
    let kills = setting("WEIR_CRASH_KILLS", 3);
    let (brokers, nodes) = (kafka_brokers(), cassandra_nodes());
    let topic = unique("crash_cql");
    let keyspace = unique("weir_crash");
    create_topic(&brokers, &topic, 3).await;
    let ids = produce_users(&brokers, &topic, records).await;
    let dir = tempfile::tempdir().unwrap();
    let seed =
        std::fs::read_to_string(crate::support::repo_root().join("examples/seed.toml")).unwrap();
    // The seed's process pipeline, as it is, on this test's topic, group and keyspace.
    let process = &seed[seed.rfind("[[pipeline]]").unwrap()..];
    let config = process
        .replace("${WEIR_KAFKA_BROKERS:-127.0.0.1:9092}", &brokers)
        .replace("${WEIR_CASSANDRA_NODES:-127.0.0.1:9042}", &nodes)
        .replace("\"users_created\"", &format!("\"{topic}\""))
        .replace("\"users_created.dlq\"", &format!("\"{topic}.dlq\""))
        // A killed member holds its partitions until its session times out: keep that short.
        .replace(
            "group = \"weir-process\"",
            &format!(
                "group = \"{}\", session_timeout_ms = 6000, heartbeat_interval_ms = 1000",
                unique("group")
            ),
        )
        .replace("\"spark_streams\"", &format!("\"{keyspace}\""));
    std::fs::write(dir.path().join("p.toml"), config).unwrap();
    let session = std::sync::Arc::new(cassandra_session().await);
    let count_query = format!("SELECT COUNT(*) FROM {keyspace}.created_users");
    let counter = {
        let session = std::sync::Arc::clone(&session);
        let query = count_query.clone();
        let handle = tokio::runtime::Handle::current();
        move || {
            let (session, query, handle) = (
                std::sync::Arc::clone(&session),
                query.clone(),
                handle.clone(),
            );
            std::thread::spawn(move || {
                handle.block_on(async move {
                    session
                        .query_unpaged(query.as_str(), &[])
                        .await
                        .ok()
                        .and_then(|r| r.into_rows_result().ok())
                        .and_then(|r| r.single_row::<(i64,)>().ok())
                        .map_or(0, |(n,)| n as usize)
                })
            })
            .join()
            .unwrap_or(0)
        }
    };
    run_with_kills(dir.path(), kills, counter.clone(), records).await;
    assert_eq!(
        counter(),
        records,
        "one row per id: replays collapsed by primary key"
    );
    let rows = session
        .query_unpaged(format!("SELECT id FROM {keyspace}.created_users"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let stored: BTreeSet<String> = rows
        .rows::<(uuid::Uuid,)>()
        .unwrap()
        .map(|row| row.unwrap().0.to_string())
        .collect();
    assert_eq!(stored, ids, "every id is in Cassandra");
    // Cassandra counts the row writes (partition updates) it applied per table (a virtual table
    // since 4.1; one node, replication factor 1): every write beyond one per id is a replay that
    // the primary key collapsed. Not the coordinated writes: the sink sends rows in batches.
    let writes = session
        .query_unpaged(
            "SELECT count FROM system_views.local_write_latency WHERE keyspace_name = ? AND table_name = 'created_users'",
            (keyspace.as_str(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(i64,)>()
        .unwrap()
        .0 as usize;
    assert!(
        writes >= records,
        "Cassandra applied {writes} row writes for {records} rows"
    );
    let reprocessed = writes - records;
    println!(
        "crash (cassandra): records {records}, kills {kills}, lost 0, re-processed {reprocessed}, rows {}",
        stored.len()
    );
}
