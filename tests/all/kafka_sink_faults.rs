//! The Kafka sink under faults a broker can show without being stopped: a topic that does not
//! exist while the producer may not create it stops the pipeline with the fix, and an
//! idempotent producer in librdkafka's fatal state is replaced without losing or repeating a
//! record. (A broker restarted mid-batch is in tests/outages, since it stops Kafka.)

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::types::RDKafkaRespErr;
use weir::config::PipelineFile;
use weir::connectors::Sink;
use weir::connectors::kafka::{KafkaSink, KafkaSinkConfig};
use weir::record::Record;

use crate::services::{TopicCounter, consume_all, create_topic, topic_exists, topic_message_count};
use crate::support::{
    dead_letters_into_kafka, init_logs, kafka_brokers, outcome_within, unique, wait_for,
};

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_topic_with_auto_create_off_stops_the_pipeline_with_the_fix() {
    init_logs();
    let brokers = kafka_brokers();
    let topic = unique("sink_missing");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"n\":1}\n{\"n\":2}\n").unwrap();
    // The shared broker creates topics on demand (auto.create.topics.enable=true); librdkafka's
    // producer asks it to unless `allow.auto.create.topics` is false, as on a cluster where
    // creation is off.
    let toml = format!(
        r#"
        [[pipeline]]
        name = "missing-topic"
        source = {{ type = "file", path = "{input}" }}
        sink = {{ type = "kafka", brokers = "{brokers}", topic = "{topic}", properties = {{ "allow.auto.create.topics" = "false" }} }}
        dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
        "#,
        input = input.display(),
        dir = dir.path().display()
    );
    let error = outcome_within(&toml, Duration::from_secs(180))
        .await
        .expect("the pipeline stops instead of retrying a missing topic forever")
        .expect_err("a missing topic is not a passing outage")
        .to_string();
    assert!(
        error.contains(&format!("create topic {topic} or set auto-create")),
        "{error}"
    );
    assert!(
        !topic_exists(&brokers, &topic),
        "the producer did not create {topic}"
    );
    assert!(
        !dir.path().join("dlq.jsonl").exists()
            || std::fs::read_to_string(dir.path().join("dlq.jsonl"))
                .unwrap()
                .is_empty(),
        "records of a stopped pipeline are not dead-lettered: they stay in the source"
    );
}

/// A compacted topic keeps only the latest letter of each key and refuses keyless letters, so it
/// cannot hold dead letters: the pipeline refuses it when it starts, naming the setting to
/// change, before it reads a record. A topic with the default policy is taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_dead_letter_topic_is_refused_at_start_naming_its_policy() {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    init_logs();
    let brokers = kafka_brokers();
    let (compacted, deleting) = (unique("dlq_compacted"), unique("dlq_deleting"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let topics = [
        NewTopic::new(&compacted, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact"),
        NewTopic::new(&deleting, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "delete"),
    ];
    for created in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        created.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let toml = |dead_letters: &str| dead_letters_into_kafka(&input, &brokers, dead_letters, "{}");
    let error = outcome_within(&toml(&compacted), Duration::from_secs(180))
        .await
        .expect("the pipeline stops at start")
        .expect_err("a compacted dead-letter topic is refused")
        .to_string();
    assert!(
        error.contains(&format!(
            "topic `{compacted}` is compacted (cleanup.policy=compact)"
        )) && error.contains("cleanup.policy=delete"),
        "{error}"
    );
    assert_eq!(
        topic_message_count(&brokers, &compacted),
        0,
        "nothing was written to the refused topic"
    );

    let report = outcome_within(&toml(&deleting), Duration::from_secs(180))
        .await
        .expect("the pipeline reads its file to the end")
        .expect("a topic that keeps every letter is taken");
    assert_eq!(
        report.dead_lettered, 2,
        "the plugin refuses both: {report:?}"
    );
    assert_eq!(topic_message_count(&brokers, &deleting), 2);
}

#[test]
fn properties_that_weir_sets_are_refused_with_the_key_to_use() {
    let toml = |key: &str| {
        format!(
            r#"
            [[pipeline]]
            name = "p"
            source = {{ type = "generate", count = 1 }}
            sink = {{ type = "kafka", brokers = "127.0.0.1:9092", topic = "t", properties = {{ "{key}" = "x" }} }}
            dead_letter = {{ type = "stdout" }}
            "#
        )
    };
    for (key, hint) in [
        ("enable.idempotence", "idempotent producer"),
        ("acks", "acks=all"),
        ("message.timeout.ms", "delivery_timeout_ms"),
        ("compression.type", "compression"),
    ] {
        let error = PipelineFile::parse(Path::new("test.toml"), &toml(key))
            .map(|_| ())
            .expect_err(key)
            .to_string();
        assert!(
            error.contains(&format!("properties.\"{key}\"")) && error.contains(hint),
            "{error}"
        );
    }
    PipelineFile::parse(Path::new("test.toml"), &toml("allow.auto.create.topics")).unwrap();
}

/// `count` records keyed `{prefix}{n}`.
fn keyed(prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|n| Record {
            key: Some(format!("{prefix}{n}").into()),
            value: format!("{{\"n\":{n}}}").into_bytes().into(),
            ..Record::default()
        })
        .collect()
}

/// How many messages of `topic` carry each key.
async fn counts_per_key(brokers: &str, topic: &str) -> BTreeMap<String, usize> {
    let total = topic_message_count(brokers, topic);
    let mut counts = BTreeMap::new();
    for (key, _) in consume_all(brokers, topic, total).await {
        *counts
            .entry(String::from_utf8(key.unwrap()).unwrap())
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_idempotence_error_gets_a_new_producer_that_loses_and_repeats_nothing() {
    init_logs();
    let brokers = kafka_brokers();
    let topic = unique("sink_fatal");
    create_topic(&brokers, &topic, 3).await;
    let config: KafkaSinkConfig =
        toml::from_str(&format!("brokers = \"{brokers}\"\ntopic = \"{topic}\"")).unwrap();
    let mut sink = KafkaSink::new(&config, false).unwrap();
    let (first, second) = (keyed("a", 500), keyed("b", 500));
    assert!(sink.write(&first).await.unwrap().is_empty());
    // What librdkafka raises when the broker's view of the producer's sequence numbers
    // diverges from its own: the producer can send nothing more.
    sink.inject_fatal_error(RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match sink.write(&second).await {
            Ok(rejected) => {
                assert!(rejected.is_empty(), "{rejected:?}");
                break;
            }
            Err(error) => {
                assert!(error.is_transient(), "{error}");
                assert!(
                    attempts < 10,
                    "still failing after {attempts} writes: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let counts = counts_per_key(&brokers, &topic).await;
    assert_eq!(counts.len(), 1_000, "every record is stored");
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "written twice: {repeated:?}");
}

/// The fatal error strikes while a batch is being delivered: the records reported delivered
/// before it are not sent again, the others are sent by the new producer, and none is lost or
/// written twice. A round whose batch was all delivered before the error landed proves nothing
/// about that path, so rounds go on until one is cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_error_in_the_middle_of_a_batch_resends_only_what_was_not_delivered() {
    init_logs();
    let brokers = kafka_brokers();
    let topic = unique("sink_fatal_mid");
    create_topic(&brokers, &topic, 3).await;
    let config: KafkaSinkConfig =
        toml::from_str(&format!("brokers = \"{brokers}\"\ntopic = \"{topic}\"")).unwrap();
    let sink = KafkaSink::new(&config, false).unwrap();
    const BATCH: usize = 100_000;
    let counter = TopicCounter::new(&brokers, &topic);
    let mut stored = 0;
    let mut cut = None;
    for round in 0..5 {
        let records = keyed(&format!("r{round}-"), BATCH);
        // A handle on the same producer writes while this one injects the error.
        let mut writer = sink.fork().expect("the Kafka sink forks");
        let write = tokio::spawn(async move {
            let mut first = None;
            loop {
                match writer.write(&records).await {
                    Ok(rejected) => {
                        assert!(rejected.is_empty(), "{rejected:?}");
                        return first;
                    }
                    Err(error) => {
                        assert!(error.is_transient(), "{error}");
                        first.get_or_insert_with(|| error.to_string());
                    }
                }
            }
        });
        wait_for(
            "the batch's first deliveries",
            Duration::from_secs(120),
            || counter.count() > stored || write.is_finished(),
        )
        .await;
        sink.inject_fatal_error(RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
        let first_error = write.await.unwrap();
        stored += BATCH;
        if let Some(error) = first_error
            && let Some(resent) = error
                .split("a new producer sends the ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
            && resent > 0
            && resent < BATCH
        {
            cut = Some(resent);
            break;
        }
    }
    let resent = cut.expect("in five rounds the error never cut a batch mid-delivery");
    assert!(resent < BATCH);
    let counts = counts_per_key(&brokers, &topic).await;
    assert_eq!(counts.len(), stored, "every record is stored");
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(repeated.is_empty(), "written twice: {repeated:?}");
}
