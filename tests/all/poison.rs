//! Poison records in a real stream: 1% malformed JSON, 1% missing required fields and a few
//! oversized records among valid users, from a file through user-profile into Kafka, with a Kafka
//! dead-letter topic. The dead-letter count equals the injected count exactly, each entry
//! carries its source coordinates and reason, and every valid record arrives.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};

use crate::services::{consume_all, create_topic};
use crate::support::{kafka_brokers, run_pipeline, unique, write_input};

#[tokio::test(flavor = "multi_thread")]
async fn every_poison_record_is_dead_lettered_exactly_once_and_the_rest_arrive() {
    let brokers = kafka_brokers();
    let (output, dead_letters) = (unique("poison_out"), unique("poison_dlq"));
    create_topic(&brokers, &output, 3).await;
    create_topic(&brokers, &dead_letters, 1).await;
    let mut generator = weir::generator::UserGenerator::new(77);
    let mut lines = Vec::new();
    let mut injected: BTreeMap<usize, &str> = BTreeMap::new();
    let mut valid_ids = Vec::new();
    for n in 0..5_000usize {
        let mut user = generator.next_user();
        if n % 100 == 17 {
            lines.push(format!("{{\"broken\": {n}"));
            injected.insert(n + 1, "not valid JSON");
        } else if n % 100 == 53 {
            user["login"].as_object_mut().unwrap().remove("uuid");
            lines.push(user.to_string());
            injected.insert(n + 1, "missing required field `login.uuid`");
        } else if n % 2_000 == 999 {
            user["padding"] = "x".repeat(2 << 20).into();
            lines.push(user.to_string());
            // The file source reads lines up to `limits.max_record_bytes` and dead-letters a
            // longer one without holding it.
            injected.insert(n + 1, "more than max_line_bytes (1048576)");
        } else {
            valid_ids.push(user["login"]["uuid"].as_str().unwrap().to_owned());
            lines.push(user.to_string());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    let report = run_pipeline(&format!(
        r#"
        [[pipeline]]
        name = "poison"
        source = {{ type = "file", path = "{input}" }}
        transforms = [{{ plugin = "user-profile" }}]
        sink = {{ type = "kafka", brokers = "{brokers}", topic = "{output}" }}
        dead_letter = {{ type = "kafka", brokers = "{brokers}", topic = "{dead_letters}" }}
        batch = {{ size = 256 }}
        "#
    ))
    .await;
    assert_eq!(report.dead_lettered as usize, injected.len());
    assert_eq!(report.records_out as usize, valid_ids.len());

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("dlq_reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[dead_letters.as_str()]).unwrap();
    let mut entries = BTreeMap::new();
    while entries.len() < injected.len() {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap()
            .unwrap();
        let headers: BTreeMap<String, String> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let line: usize = headers["weir.source.offset"].parse().unwrap();
        assert_eq!(headers["weir.source.stream"], input);
        assert_eq!(headers["weir.pipeline"], "poison");
        assert!(
            entries.insert(line, headers).is_none(),
            "line {line} dead-lettered twice"
        );
    }
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        injected.keys().collect::<Vec<_>>()
    );
    for (line, expected) in &injected {
        let reason = &entries[line]["weir.error"];
        assert!(reason.contains(expected), "line {line}: {reason}");
        if expected.contains("max_line_bytes") {
            let size: usize = entries[line]["weir.record.bytes"].parse().unwrap();
            assert!(size > 2 << 20, "the full size is kept: {size}");
            assert_eq!(entries[line]["weir.record.sha256"].len(), 64);
        }
    }
    let mut keys: Vec<String> = consume_all(&brokers, &output, valid_ids.len())
        .await
        .into_iter()
        .map(|(key, _)| String::from_utf8(key.unwrap()).unwrap())
        .collect();
    keys.sort();
    valid_ids.sort();
    assert_eq!(keys, valid_ids);
}

/// A record under `limits.max_record_bytes` (1 MiB) but over Kafka's default message size
/// (~1,000,000 bytes) passes the pipeline's own check, is refused by the Kafka sink, and must
/// still fit the Kafka dead-letter topic: as an excerpt with its full size and sha256.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_too_large_for_kafka_is_dead_lettered_to_kafka_as_an_excerpt() {
    crate::support::init_logs();
    let brokers = kafka_brokers();
    let (output, dead_letters) = (unique("big_out"), unique("big_dlq"));
    create_topic(&brokers, &output, 1).await;
    create_topic(&brokers, &dead_letters, 1).await;
    let big = format!("{{\"n\":3,\"padding\":\"{}\"}}", "x".repeat(1_020_000));
    assert!(big.len() > 1_000_000 && big.len() < 1 << 20);
    let mut lines: Vec<String> = (0..6).map(|n| format!("{{\"n\":{n}}}")).collect();
    lines[3] = big.clone();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    let report = run_pipeline(&format!(
        r#"
        [[pipeline]]
        name = "big"
        source = {{ type = "file", path = "{input}" }}
        sink = {{ type = "kafka", brokers = "{brokers}", topic = "{output}" }}
        dead_letter = {{ type = "kafka", brokers = "{brokers}", topic = "{dead_letters}" }}
        "#
    ))
    .await;
    assert_eq!((report.records_out, report.dead_lettered), (5, 1));

    let mut stored: Vec<String> = consume_all(&brokers, &output, 5)
        .await
        .into_iter()
        .map(|(_, value)| String::from_utf8(value).unwrap())
        .collect();
    stored.sort();
    let mut normal: Vec<String> = lines.iter().filter(|l| **l != big).cloned().collect();
    normal.sort();
    assert_eq!(stored, normal);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("big_dlq_reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[dead_letters.as_str()]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .unwrap()
        .unwrap();
    let headers = header_map(&message);
    assert_eq!(headers["weir.source.offset"], "4");
    assert_eq!(headers["weir.stage"], "sink");
    assert!(
        headers["weir.error"].contains("larger than the producer or topic allows"),
        "{headers:?}"
    );
    assert_eq!(headers["weir.record.bytes"], big.len().to_string());
    assert_eq!(
        headers["weir.record.sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(big.as_bytes()))
    );
    let excerpt = message.payload().unwrap();
    assert!(!excerpt.is_empty() && excerpt.len() < 1_000_000);
    assert!(big.as_bytes().starts_with(excerpt));
}

/// A message's headers as text, by name.
fn header_map(message: &impl Message) -> BTreeMap<String, String> {
    message
        .headers()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect()
}

/// Records written in 2001, as a topic replayed from an archive holds them.
const OLD: i64 = 1_000_000_000_000;

/// Creates `input` and, refusing records more than a day old, `output` and `dead_letters`
/// (with the extra topic settings given), then writes `values` to `input` dated [`OLD`].
async fn old_records_and_refusing_topics(
    brokers: &str,
    (input, output, dead_letters): (&str, &str, &str),
    dead_letter_settings: &[(&str, &str)],
    values: &[String],
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    crate::support::init_logs();

    create_topic(brokers, input, 1).await;
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let day = (24 * 3_600_000).to_string();
    let refusing = |topic| {
        NewTopic::new(topic, 1, TopicReplication::Fixed(1))
            .set("message.timestamp.before.max.ms", &day)
    };
    let topics = [
        refusing(output),
        dead_letter_settings
            .iter()
            .fold(refusing(dead_letters), |topic, (key, value)| {
                topic.set(key, value)
            }),
    ];
    for created in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        created.unwrap();
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for value in values {
        producer
            .send(
                FutureRecord::<(), _>::to(input)
                    .payload(value)
                    .timestamp(OLD),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
}

/// Runs a pipeline from `input` to `output` with `dead_letters` as its dead-letter topic (`extra`
/// added to that sink's table) until `count` dead letters are stored, and reads them back: each
/// stored after [`OLD`], with `weir.record.timestamp` naming it. Gives each one's headers and
/// stored value size.
async fn dead_letters_restamped(
    brokers: &str,
    (input, output, dead_letters): (&str, &str, &str),
    extra: &str,
    count: usize,
) -> Vec<(BTreeMap<String, String>, usize)> {
    let group = unique("old_group");
    let dead_letter_count = crate::services::TopicCounter::new(brokers, dead_letters);
    let report = crate::support::run_until(
        &format!(
            r#"
            [[pipeline]]
            name = "old"
            source = {{ type = "kafka", brokers = "{brokers}", topics = ["{input}"], group = "{group}" }}
            sink = {{ type = "kafka", brokers = "{brokers}", topic = "{output}" }}
            dead_letter = {{ type = "kafka", brokers = "{brokers}", topic = "{dead_letters}"{extra} }}
            "#
        ),
        || dead_letter_count.count() >= count,
    )
    .await;
    assert_eq!(
        (report.records_out, report.dead_lettered),
        (0, count as u64)
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("old_dlq_reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[dead_letters]).unwrap();
    let mut stored = Vec::new();
    for _ in 0..count {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap()
            .unwrap();
        let headers = header_map(&message);
        assert_eq!(
            headers.get("weir.record.timestamp").map(String::as_str),
            Some("1000000000000")
        );
        assert!(
            message.timestamp().to_millis().unwrap() > OLD,
            "stored with the time it was written"
        );
        stored.push((headers, message.payload().map_or(0, <[u8]>::len)));
    }
    stored
}

/// A topic that refuses old timestamps (`message.timestamp.before.max.ms`) refuses an old
/// record's dead letter exactly as it refused the record: the dead-letter topic stores it with
/// the time it is written instead, the original in `weir.record.timestamp`, and the pipeline
/// goes on instead of stopping for want of a place to put it.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_whose_old_timestamp_its_topic_refuses_is_stored_with_the_original_in_a_header()
 {
    let brokers = kafka_brokers();
    let (input, output, dead_letters) = (unique("old_in"), unique("old_out"), unique("old_dlq"));
    let topics = (input.as_str(), output.as_str(), dead_letters.as_str());
    let values: Vec<String> = (0..5).map(|n| format!("{{\"n\":{n}}}")).collect();
    old_records_and_refusing_topics(&brokers, topics, &[], &values).await;
    for (headers, _) in dead_letters_restamped(&brokers, topics, "", values.len()).await {
        let error = &headers["weir.error"];
        assert!(error.contains("timestamp"), "{error}");
    }
}

/// An old dead letter too large for a dead-letter topic that also refuses old timestamps is
/// stored as an excerpt with the time it is written (the original in `weir.record.timestamp`),
/// and so is one the header with its original timestamp makes too large; every other one is
/// stored whole, restamped. The pipeline goes on instead of stopping, or retrying forever.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_dead_letter_too_large_for_its_topic_is_stored_as_a_restamped_excerpt() {
    let brokers = kafka_brokers();
    let (input, output, dead_letters) = (unique("big_in"), unique("big_out"), unique("big_dlq"));
    let topics = (input.as_str(), output.as_str(), dead_letters.as_str());
    // Values from 3,000 bytes to past the dead-letter topic's limit, 10 bytes apart, so that for
    // some the dead letter fits only without the header the original timestamp goes in (about
    // 35 bytes); and one of 10 KB.
    let mut sizes: Vec<usize> = (3_000..4_200).step_by(10).collect();
    sizes.push(10 * 1024);
    let values: Vec<String> = sizes.iter().map(|size| "x".repeat(*size)).collect();
    old_records_and_refusing_topics(&brokers, topics, &[("max.message.bytes", "4096")], &values)
        .await;
    // Uncompressed and one record a request, so each dead letter's size is what the topic sees.
    let extra = r#", compression = "none", properties = { "batch.num.messages" = "1" }"#;
    let (mut whole, mut excerpts) = (Vec::new(), Vec::new());
    for (headers, stored) in dead_letters_restamped(&brokers, topics, extra, sizes.len()).await {
        match headers.get("weir.record.bytes") {
            Some(size) => {
                let size: usize = size.parse().unwrap();
                assert!(stored < size, "an excerpt of {size} bytes kept {stored}");
                excerpts.push(size);
            }
            None => whole.push(stored),
        }
    }
    assert!(excerpts.contains(&(10 * 1024)), "{excerpts:?}");
    assert!(!whole.is_empty(), "the smallest are stored whole");
    // Stored whole up to a size, as excerpts past it: none was lost nor stored twice.
    let mut all: Vec<usize> = whole.iter().chain(&excerpts).copied().collect();
    all.sort_unstable();
    assert_eq!(all, sizes);
    assert!(
        whole.iter().max() < excerpts.iter().min(),
        "{whole:?} {excerpts:?}"
    );
}
