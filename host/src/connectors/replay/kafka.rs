//! Dead letters from a `kafka` destination: every partition of the topic, read from the replay's
//! consumer group's committed offsets up to the high watermarks found at opening. The partitions
//! are assigned, not subscribed, so no rebalance ever moves them; the offsets are committed to
//! the group only after the replayed records were acknowledged. Like every long-lived Kafka
//! client of weir's, the consumer is watched for having dropped every broker (see
//! [`BrokerWatch`]), so a replay running through a broker restart reconnects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::{DeadLetterReader, Entry};
use crate::connectors::ConnectorError;
use crate::connectors::kafka::KafkaSinkConfig;
use crate::connectors::kafka::rebootstrap::{BrokerWatch, STATISTICS_INTERVAL_MS};
use crate::connectors::kafka::refused_property::creation_failed;
use crate::record::{Record, SourcePosition};

/// How long a metadata, watermark or commit request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call that failed before the consumer reads anything waits for the consumer's
/// pending events, which may explain it.
const EXPLAINING_EVENTS_WAIT: Duration = Duration::from_millis(200);
/// How long one poll waits for a message.
const POLL: Duration = Duration::from_millis(200);

/// Reads a dead-letter topic up to its end at opening.
pub struct KafkaReader {
    reading: Reading,
    consumer: BaseConsumer<ReplayContext>,
    /// Per partition still to read: the next offset and the end (high watermark at opening).
    partitions: BTreeMap<i32, (i64, i64)>,
    remaining: u64,
}

/// The consumer's callbacks: its statistics reports feed the broker watch, and its error events
/// keep the last refusal of a right.
struct ReplayContext {
    brokers: BrokerWatch,
    /// The last authorization refusal librdkafka reported as an error event. Some refusals come
    /// only that way: a consumer group the principal may not use fails librdkafka's coordinator
    /// lookup, and the call waiting for the group's offsets sees only its own timeout.
    refused: Mutex<Option<RDKafkaErrorCode>>,
}

impl ReplayContext {
    fn refused(&self) -> Option<RDKafkaErrorCode> {
        *self.refused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `error` when it refuses a right.
    fn note(&self, error: &KafkaError) {
        if let Some(
            code @ (RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed),
        ) = error.rdkafka_error_code()
        {
            *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(code);
        }
    }
}

impl ClientContext for ReplayContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.brokers.observe(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note(&error);
        tracing::error!(%error, reason, "Kafka client error.");
    }
}

impl ConsumerContext for ReplayContext {}

/// The replay's consumer of `config`'s topic in `group`, its broker list watched. `name` says
/// what it reads, in errors and the watch's log line.
fn watched_consumer(
    config: &KafkaSinkConfig,
    group: &str,
    name: &str,
) -> Result<BaseConsumer<ReplayContext>, ConnectorError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (key, value) in &config.properties {
        client.set(key, value.expose());
    }
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    // The watch reads the statistics; a user's own interval (the sink's properties) stands.
    if client.get("statistics.interval.ms").is_none() {
        client.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    }
    let consumer: BaseConsumer<ReplayContext> = client
        .create_with_context(ReplayContext {
            brokers: BrokerWatch::new(name, &config.brokers),
            refused: Mutex::new(None),
        })
        .map_err(|e| creation_failed(name, "cannot create the consumer", e))?;
    consumer.context().brokers.attach(consumer.client());
    Ok(consumer)
}

/// What a replay reads, for its errors: the topic in its consumer group.
struct Reading {
    /// The reader's name in errors (`dead-letter topic T`).
    name: String,
    /// The topic, also the stream of the positions it reads.
    topic: Arc<str>,
    group: String,
}

impl Reading {
    /// A driver error of a call of `consumer` as a connector error: an unknown topic or a
    /// refused right is fatal, the rest (brokers away, timeouts) transient. A refused right,
    /// the call's own or one the consumer reported meanwhile, names the grant it needs.
    fn classify(&self, consumer: &ReplayContext, what: &str, error: KafkaError) -> ConnectorError {
        let Reading { name, topic, group } = self;
        let code = match error.rdkafka_error_code() {
            Some(
                code @ (RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed),
            ) => Some(code),
            _ => consumer.refused(),
        };
        match code {
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => ConnectorError::fatal(
                name,
                format!(
                    "{what}: not authorized to read the topic: grant this principal READ and DESCRIBE on topic {topic}, or fix the credentials in the dead-letter destination's `properties`"
                ),
            )
            .caused_by(error),
            Some(RDKafkaErrorCode::GroupAuthorizationFailed) => ConnectorError::fatal(
                name,
                format!(
                    "{what}: not authorized to use the replay's consumer group: grant this principal READ on group {group}, or name a group it may use with --group"
                ),
            )
            .caused_by(error),
            Some(_) => ConnectorError::fatal(name, what).caused_by(error),
            None => ConnectorError::transient(name, what).caused_by(error),
        }
    }
}

/// Runs a blocking librdkafka call without stalling the async workers.
fn blocking<R>(call: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

impl KafkaReader {
    /// Creates the consumer, finds each partition's committed offset and end, and assigns the
    /// partitions with something left to read.
    pub async fn open(config: &KafkaSinkConfig, group: &str) -> Result<Self, ConnectorError> {
        let reading = Reading {
            name: format!("dead-letter topic {}", config.topic),
            topic: Arc::from(config.topic.as_str()),
            group: group.to_owned(),
        };
        let name = &reading.name;
        let consumer = watched_consumer(config, group, name)?;
        let classify = |what: &str, error: KafkaError| {
            // Nothing is assigned yet, so a poll takes no message: it serves the events that
            // explain a timeout (a refused group comes only as one). A poll without a wait
            // serves none of them.
            let deadline = Instant::now() + EXPLAINING_EVENTS_WAIT;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match consumer.poll(left) {
                    None => break,
                    Some(Err(event)) => consumer.context().note(&event),
                    Some(Ok(_)) => {}
                }
            }
            reading.classify(consumer.context(), what, error)
        };
        let topic = config.topic.clone();
        let (partitions, remaining) = blocking(|| {
            let metadata = consumer
                .fetch_metadata(Some(&topic), REQUEST_TIMEOUT)
                .map_err(|e| classify("cannot read the topic's metadata", e))?;
            let ids: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if ids.is_empty() {
                return Err(ConnectorError::fatal(
                    name,
                    "the topic does not exist or has no partitions: nothing was ever dead-lettered there",
                ));
            }
            let mut wanted = TopicPartitionList::new();
            for id in &ids {
                wanted.add_partition(&topic, *id);
            }
            let committed = consumer
                .committed_offsets(wanted, REQUEST_TIMEOUT)
                .map_err(|e| classify("cannot read the replay's committed offsets", e))?;
            let mut partitions = BTreeMap::new();
            let mut remaining = 0u64;
            let mut assignment = TopicPartitionList::new();
            for id in ids {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, id, REQUEST_TIMEOUT)
                    .map_err(|e| classify("cannot read the partition's offsets", e))?;
                let start = match committed.find_partition(&topic, id).map(|p| p.offset()) {
                    Some(Offset::Offset(offset)) => offset.max(low),
                    _ => low,
                };
                if start < high {
                    remaining += u64::try_from(high - start).unwrap_or(0);
                    partitions.insert(id, (start, high));
                    assignment
                        .add_partition_offset(&topic, id, Offset::Offset(start))
                        .map_err(|e| classify("cannot assign the partition", e))?;
                }
            }
            consumer
                .assign(&assignment)
                .map_err(|e| classify("cannot assign the partitions", e))?;
            Ok((partitions, remaining))
        })?;
        Ok(KafkaReader {
            reading,
            consumer,
            partitions,
            remaining,
        })
    }

    fn poll(&mut self, max: usize) -> Result<Vec<Entry>, ConnectorError> {
        let mut entries = Vec::new();
        while entries.len() < max && !self.partitions.is_empty() {
            let Some(polled) = self.consumer.poll(POLL) else {
                // Nothing came: a partition whose last offsets hold no message (deleted by
                // retention or compaction) is done once the consumer's position passed its end.
                if let Ok(positions) = self.consumer.position() {
                    for element in positions.elements() {
                        if let Offset::Offset(at) = element.offset()
                            && self
                                .partitions
                                .get(&element.partition())
                                .is_some_and(|&(_, end)| at >= end)
                        {
                            self.partitions.remove(&element.partition());
                        }
                    }
                }
                break;
            };
            let message = polled.map_err(|e| {
                self.reading
                    .classify(self.consumer.context(), "poll failed", e)
            })?;
            let partition = message.partition();
            let Some((next, end)) = self.partitions.get_mut(&partition) else {
                continue;
            };
            if message.offset() >= *end {
                // Written after opening (a replayed record failing again, say): the next replay's.
                self.partitions.remove(&partition);
                continue;
            }
            *next = message.offset() + 1;
            if *next >= *end {
                self.partitions.remove(&partition);
            }
            let most = crate::connectors::kafka::MAX_DEAD_LETTER_HEADERS;
            let headers = crate::connectors::kafka::headers_of(&message, most).map_err(|count| {
                ConnectorError::fatal(
                    &self.reading.name,
                    format!(
                        "the message at partition {partition} offset {} of `{}` has {count} headers, more than the {most} a dead letter weir writes can carry, so another producer wrote it; the replay stops there. To go on without it, move the replay's group past it (`kafka-consumer-groups.sh --reset-offsets --to-offset {}` for that partition)",
                        message.offset(),
                        self.reading.topic,
                        message.offset() + 1
                    ),
                )
            })?;
            let timestamp = message.timestamp().to_millis();
            entries.push(Entry {
                record: Record {
                    key: message.key().map(Bytes::copy_from_slice),
                    value: message
                        .payload()
                        .map(Bytes::copy_from_slice)
                        .unwrap_or_default(),
                    headers,
                    timestamp,
                },
                position: SourcePosition {
                    stream: Arc::clone(&self.reading.topic),
                    partition,
                    offset: message.offset(),
                },
                time: timestamp,
            });
        }
        Ok(entries)
    }
}

#[async_trait]
impl DeadLetterReader for KafkaReader {
    async fn read(&mut self, max: usize) -> Result<Option<Vec<Entry>>, ConnectorError> {
        if self.partitions.is_empty() {
            return Ok(None);
        }
        let max = max.max(1);
        blocking(|| self.poll(max)).map(Some)
    }

    async fn commit(
        &mut self,
        _replayed: &[SourcePosition],
        highest: &[SourcePosition],
    ) -> Result<(), ConnectorError> {
        if highest.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for position in highest {
            offsets
                .add_partition_offset(
                    &position.stream,
                    position.partition,
                    Offset::Offset(position.offset + 1),
                )
                .map_err(|e| {
                    self.reading.classify(
                        self.consumer.context(),
                        "cannot list the offsets to commit",
                        e,
                    )
                })?;
        }
        blocking(|| self.consumer.commit(&offsets, CommitMode::Sync)).map_err(|e| {
            self.reading.classify(
                self.consumer.context(),
                "cannot commit the replay's offsets",
                e,
            )
        })
    }

    fn remaining(&self) -> u64 {
        self.remaining
    }

    fn describe(&self) -> String {
        self.reading.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_replays_consumer_reports_statistics_to_its_broker_watch_by_default() {
        // No broker needed: the consumer only tries to connect, to a port nothing listens on.
        let config: KafkaSinkConfig = toml::from_str(
            "brokers = \"127.0.0.1:1\"\ntopic = \"dead\"\n[properties]\n\"log_level\" = \"0\"",
        )
        .expect("a dead-letter topic's settings");
        let consumer = watched_consumer(&config, "replay-test", "dead-letter topic dead").unwrap();
        // librdkafka reports no statistics unless asked; the watch needs them. They are served
        // while the consumer is polled, as the replay polls it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while consumer.context().brokers.reports() == 0 {
            assert!(
                Instant::now() < deadline,
                "no statistics report reached the watch in 60 s of polling"
            );
            let _ = consumer.poll(Duration::from_millis(100));
        }
    }
}
