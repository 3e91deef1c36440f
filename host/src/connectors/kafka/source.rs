//! The `kafka` source: a consumer-group member that commits offsets only after the pipeline
//! acknowledged everything before them, so a crash re-delivers instead of losing, and that
//! drains and commits a partition before giving it up in a rebalance, so its next owner neither
//! misses nor repeats a record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::time::Instant;

use super::client_config;
use super::context::GroupContext;
use super::lag::{ConsumerLag, STATISTICS_INTERVAL_MS};
use super::progress::PartitionProgress;
use crate::connectors::{ConfigProblem, ConnectorError, Source};
use crate::record::{Header, Record, SourcePosition, SourceRecord};

/// Where a consumer group starts on a partition it has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// From the oldest retained message.
    #[default]
    Earliest,
    /// From new messages only.
    Latest,
}

/// Options of the `kafka` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// The consumer group; committed offsets always take precedence, so a restart resumes.
    pub group: String,
    /// Where to start on partitions the group has no committed offset for.
    #[serde(default)]
    pub offset_reset: OffsetReset,
    /// How long a rebalance waits for the records in flight from a revoked partition to be
    /// acknowledged before committing and giving it up; what is still unacknowledged then is
    /// re-delivered to the partition's next owner.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Extra librdkafka consumer properties. Every value is a secret (`sasl.password`,
    /// `ssl.key.pem` and others carry credentials), so none is ever printed.
    #[serde(default)]
    pub properties: BTreeMap<String, crate::secret::Secret>,
}

fn default_drain_timeout_ms() -> u64 {
    10_000
}

impl KafkaSourceConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.brokers.trim().is_empty() {
            return Err(("brokers".into(), "must list at least one broker".into()));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(("topics".into(), "must list at least one topic".into()));
        }
        if self.group.trim().is_empty() {
            return Err(("group".into(), "must name a consumer group".into()));
        }
        Ok(())
    }
}

/// Consumes topics as a group member.
pub struct KafkaSource {
    name: String,
    consumer: Arc<StreamConsumer<GroupContext>>,
    lag: ConsumerLag,
    progress: Arc<PartitionProgress>,
    streams: BTreeMap<String, Arc<str>>,
}

/// How long an empty poll waits before returning, so acknowledged offsets get committed while
/// a topic is quiet.
const IDLE_POLL: Duration = Duration::from_millis(500);

impl KafkaSource {
    /// Joins the group and subscribes.
    pub fn open(config: &KafkaSourceConfig) -> Result<Self, ConnectorError> {
        let name = format!("kafka source {}", config.topics.join(","));
        let mut client = client_config(&config.brokers, &config.properties);
        client
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
            .set(
                "auto.offset.reset",
                match config.offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        let lag = ConsumerLag::new(config.offset_reset == OffsetReset::Earliest);
        let progress = Arc::new(PartitionProgress::default());
        let context = GroupContext::new(
            &name,
            lag.clone(),
            Arc::clone(&progress),
            Duration::from_millis(config.drain_timeout_ms),
        );
        let consumer: StreamConsumer<GroupContext> = client
            .create_with_context(context)
            .map_err(|e| ConnectorError::fatal(&name, "cannot create the consumer").caused_by(e))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| ConnectorError::fatal(&name, "cannot subscribe").caused_by(e))?;
        Ok(KafkaSource {
            name,
            consumer: Arc::new(consumer),
            lag,
            progress,
            streams: config
                .topics
                .iter()
                .map(|t| (t.clone(), Arc::from(t.as_str())))
                .collect(),
        })
    }

    fn convert(&mut self, message: &BorrowedMessage<'_>) -> SourceRecord {
        let stream = self
            .streams
            .entry(message.topic().to_owned())
            .or_insert_with(|| Arc::from(message.topic()))
            .clone();
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| Header {
                        key: h.key.to_owned(),
                        value: h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let record = Record {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            timestamp: message.timestamp().to_millis(),
        };
        let position = SourcePosition {
            stream,
            partition: message.partition(),
            offset: message.offset(),
        };
        if message.payload().is_none() {
            SourceRecord::malformed(record, position, "message has no payload (a tombstone)")
        } else {
            SourceRecord::new(record, position)
        }
    }
}

impl KafkaSource {
    /// Drops the records gathered from partitions revoked by a rebalance that ran inside a poll
    /// since `revocations` was read. They were never delivered, and the partition's next owner
    /// (perhaps this consumer again) starts after the offset committed when it was revoked, so
    /// they are read again there: dropping them here loses nothing and repeats nothing.
    fn forget_revoked(&self, batch: &mut Vec<SourceRecord>, revocations: &mut u64) {
        let now = self.progress.revocations();
        if now == *revocations {
            return;
        }
        let before = batch.len();
        batch.retain(|r| {
            !self.progress.revoked_since(
                *revocations,
                &(r.position.stream.to_string(), r.position.partition),
            )
        });
        tracing::debug!(source = %self.name, dropped = before - batch.len(), "Dropped undelivered records of revoked partitions.");
        *revocations = now;
    }
}

fn transient(name: &str, error: KafkaError) -> ConnectorError {
    ConnectorError::transient(name, "consume failed").caused_by(error)
}

#[async_trait]
impl Source for KafkaSource {
    async fn poll_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
        let consumer = Arc::clone(&self.consumer);
        let first = match tokio::time::timeout(IDLE_POLL.max(linger), consumer.recv()).await {
            Err(_) => return Ok(Some(Vec::new())),
            Ok(Err(error)) => return Err(transient(&self.name, error)),
            Ok(Ok(message)) => self.convert(&message),
        };
        // Rebalances that ran inside the first poll concern nothing gathered here.
        let mut revocations = self.progress.revocations();
        let mut batch = Vec::with_capacity(max);
        batch.push(first);
        let deadline = Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => break,
                Ok(Err(error)) => {
                    tracing::warn!(source = %self.name, %error, "Consume error; returning the partial batch.");
                    break;
                }
                Ok(Ok(message)) => {
                    // The message itself comes from the assignment in force after any rebalance
                    // that ran inside this poll, so it is kept; what came before may not be.
                    self.forget_revoked(&mut batch, &mut revocations);
                    let record = self.convert(&message);
                    batch.push(record);
                }
            }
        }
        self.forget_revoked(&mut batch, &mut revocations);
        self.progress
            .delivered(&SourcePosition::highest(batch.iter().map(|r| &r.position)));
        Ok(Some(batch))
    }

    fn acknowledgements(&self) -> Option<Arc<dyn crate::connectors::Acknowledgements>> {
        Some(Arc::clone(&self.progress) as Arc<dyn crate::connectors::Acknowledgements>)
    }

    fn lag(&self) -> Option<Vec<crate::observe::PartitionLag>> {
        self.lag.latest()
    }

    async fn commit(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        // A partition revoked since was drained and committed then; its new owner commits it now.
        let positions = self.progress.still_assigned(positions);
        if positions.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for position in &positions {
            list.add_partition_offset(
                &position.stream,
                position.partition,
                Offset::Offset(position.offset + 1),
            )
            .map_err(|e| ConnectorError::fatal(&self.name, e.to_string()))?;
        }
        let consumer = Arc::clone(&self.consumer);
        let name = self.name.clone();
        let result = tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|e| ConnectorError::transient(&name, e.to_string()))?;
        match result {
            Ok(()) => Ok(()),
            // The partitions moved to another member in a rebalance: it resumes from the last
            // committed offset and re-delivers what we could not commit. Nothing is lost.
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::AssignmentLost,
            )) => {
                tracing::warn!(source = %name, "Partitions were reassigned before this commit; their new owner re-delivers.");
                Ok(())
            }
            Err(error) => Err(ConnectorError::transient(&name, "commit failed").caused_by(error)),
        }
    }
}
