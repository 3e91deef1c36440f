//! Records deleted from a topic before the group read them: retention (here DeleteRecords, the
//! same move of the log's start) passes a stopped group's position. Reading goes on where
//! `offset_reset` says, as Kafka's consumers do, and weir counts the reset and says that records
//! were lost to the pipeline and what to change, rather than leaving it to a line of librdkafka's.

use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use crate::services::create_topic;
use crate::support::{
    Spawned, kafka_brokers, line_count, read_json_lines, send_numbered, spawn_pipeline, unique,
    wait_for,
};

/// Runs the group's pipeline into `out` until it holds `lines` lines, then stops it gracefully
/// (committing what it wrote); returns how many resets past deleted records its consumer saw.
async fn read_until(brokers: &str, topic: &str, group: &str, out: &Path, lines: usize) -> u64 {
    let toml = format!(
        r#"
        [[pipeline]]
        name = "retained"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}" }}
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{out}.dlq" }}
        batch = {{ size = 20, linger_ms = 5 }}
        "#,
        out = out.display(),
    );
    let Spawned {
        shutdown,
        run,
        stats,
    } = spawn_pipeline(&toml);
    wait_for(
        &format!("{lines} lines in {}", out.display()),
        Duration::from_secs(120),
        || line_count(out) >= lines || run.is_finished(),
    )
    .await;
    shutdown.send(true).unwrap();
    run.await.unwrap().unwrap_or_else(|e| panic!("{e:#}"));
    stats
        .consumer_group()
        .expect("a Kafka source reports its group")
        .resets_past_deleted_records
}

fn numbers(path: &Path) -> Vec<u64> {
    read_json_lines(path)
        .iter()
        .map(|record| record["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn records_deleted_before_the_group_read_them_are_counted_and_reading_goes_on() {
    crate::support::init_logs();
    let brokers = kafka_brokers();
    let topic = unique("retention");
    let group = unique("retention-group");
    create_topic(&brokers, &topic, 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    send_numbered(&producer, &topic, 1, 0..100, Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        dir.path().join("first.jsonl"),
        dir.path().join("second.jsonl"),
    );
    let resets = read_until(&brokers, &topic, &group, &first, 100).await;
    assert_eq!(resets, 0, "nothing was deleted yet");
    assert_eq!(numbers(&first), (0..100).collect::<Vec<_>>());

    // While the pipeline is stopped, 200 more arrive and the first 100 of them are deleted:
    // the group's position (100) is before the log's new start (200).
    send_numbered(&producer, &topic, 1, 100..300, Duration::from_secs(30)).await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(&topic, 0, Offset::Offset(200))
        .unwrap();
    let deleted = admin
        .delete_records(
            &before,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap();
    for element in deleted.elements() {
        element.error().unwrap_or_else(|e| panic!("{e:?}"));
    }

    let resets = read_until(&brokers, &topic, &group, &second, 100).await;
    assert_eq!(numbers(&second), (200..300).collect::<Vec<_>>());
    assert_eq!(resets, 1, "the reset past deleted records was not counted");
}
