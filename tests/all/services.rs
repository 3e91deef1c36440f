//! Smoke tests proving the test services are the real systems: a topic produced to and consumed
//! from with rdkafka, a Cassandra table written and read with the scylla driver, a PostgreSQL
//! table written and read with tokio-postgres.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::{cassandra_session, kafka_brokers, postgres_client, postgres_url, unique};

/// Creates a topic and waits until the broker reports it.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

/// Whether the brokers know `topic`, asked by a client that never creates topics.
pub fn topic_exists(brokers: &str, topic: &str) -> bool {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none())
}

/// How many messages `topic` holds: the high watermarks of its partitions added up (the tests'
/// topics are never compacted or truncated, and weir's producer writes no transaction markers).
pub fn topic_message_count(brokers: &str, topic: &str) -> usize {
    TopicCounter::new(brokers, topic).count()
}

/// [`topic_message_count`] asked again and again over one client, for a condition a test polls:
/// a client a poll would connect, fetch metadata and tear its threads down every 10 ms, loading
/// the shared cores and the broker while the test waits for weir.
pub struct TopicCounter {
    consumer: rdkafka::consumer::BaseConsumer,
    topic: String,
}

impl TopicCounter {
    /// A counter of `topic`'s messages on `brokers`.
    pub fn new(brokers: &str, topic: &str) -> Self {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
        Self {
            consumer,
            topic: topic.to_owned(),
        }
    }

    /// How many messages the topic holds now.
    pub fn count(&self) -> usize {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(30))
            .unwrap();
        let partitions = metadata.topics()[0].partitions();
        assert!(
            !partitions.is_empty(),
            "topic {} has no partitions",
            self.topic
        );
        partitions
            .iter()
            .map(|partition| {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, partition.id(), Duration::from_secs(30))
                    .unwrap();
                usize::try_from(high - low).unwrap()
            })
            .sum()
    }
}

/// A consumer of `topic` in a group of its own, from the beginning, committing nothing.
pub fn reader_from_the_start(brokers: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Reads every message of `topic` from the beginning until `expected` arrived.
pub async fn consume_all(
    brokers: &str,
    topic: &str,
    expected: usize,
) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let consumer = reader_from_the_start(brokers, topic);
    let mut messages = Vec::new();
    while messages.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {expected} messages arrived in {topic}",
                    messages.len()
                )
            })
            .unwrap();
        messages.push((
            message.key().map(<[u8]>::to_vec),
            message.payload().unwrap_or_default().to_vec(),
        ));
    }
    messages
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_is_real() {
    let brokers = kafka_brokers();
    let topic = unique("smoke");
    create_topic(&brokers, &topic, 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for n in 0..20 {
        let payload = format!("message {n}");
        let key = n.to_string();
        producer
            .send(
                FutureRecord::to(&topic).payload(&payload).key(&key),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let messages = consume_all(&brokers, &topic, 20).await;
    let payloads: Vec<String> = messages
        .iter()
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        .collect();
    assert_eq!(
        payloads,
        (0..20).map(|n| format!("message {n}")).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_is_real() {
    let session = cassandra_session().await;
    let table = unique("smoke");
    session
        .query_unpaged(
            "CREATE KEYSPACE IF NOT EXISTS weir_smoke WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            &[],
        )
        .await
        .unwrap();
    session
        .query_unpaged(
            format!("CREATE TABLE weir_smoke.{table} (id int PRIMARY KEY, name text)"),
            &[],
        )
        .await
        .unwrap();
    for (id, name) in [(1, "Ada"), (2, "Zoë")] {
        session
            .query_unpaged(
                format!("INSERT INTO weir_smoke.{table} (id, name) VALUES (?, ?)"),
                (id, name),
            )
            .await
            .unwrap();
    }
    let rows = session
        .query_unpaged(format!("SELECT id, name FROM weir_smoke.{table}"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut read: Vec<(i32, String)> = rows
        .rows::<(i32, String)>()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    read.sort();
    assert_eq!(read, [(1, "Ada".to_owned()), (2, "Zoë".to_owned())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_is_real() {
    let client = postgres_client(&postgres_url()).await;
    let table = unique("smoke");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, doc JSONB NOT NULL)"
        ))
        .await
        .unwrap();
    let doc = serde_json::json!({"name": "Zoë"});
    client
        .execute(
            &format!("INSERT INTO {table} (id, doc) VALUES ($1, $2)"),
            &[&7, &doc],
        )
        .await
        .unwrap();
    let row = client
        .query_one(&format!("SELECT id, doc FROM {table}"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    assert_eq!(row.get::<_, serde_json::Value>(1), doc);
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
