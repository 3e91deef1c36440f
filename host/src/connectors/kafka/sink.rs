//! The `kafka` sink: librdkafka's idempotent producer with `acks=all`; a batch is acknowledged
//! only once every record's delivery report came back, so a broker outage delays but never drops.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

use super::client_config;
use crate::connectors::fields::{pointer, text_at};
use crate::connectors::{ConfigProblem, ConnectorError, Rejected, Sink};
use crate::record::Record;

/// Compression codecs the producer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default: cheap and effective on JSON).
    #[default]
    Lz4,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// Options of the `kafka` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, comma-separated (`127.0.0.1:9092`).
    pub brokers: String,
    /// The topic to write to.
    pub topic: String,
    /// Dotted path of the JSON field used as the message key; by default the record key.
    #[serde(default)]
    pub key_field: Option<String>,
    /// `none`, `gzip`, `snappy` or `lz4`.
    #[serde(default)]
    pub compression: Compression,
    /// Longest a delivery may take before the batch is retried, in milliseconds.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// Extra librdkafka producer properties. Every value is a secret (`sasl.password`,
    /// `ssl.key.pem` and others carry credentials), so none is ever printed.
    #[serde(default)]
    pub properties: BTreeMap<String, crate::secret::Secret>,
}

fn default_delivery_timeout_ms() -> u64 {
    30_000
}

impl KafkaSinkConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.brokers.trim().is_empty() {
            return Err(("brokers".into(), "must list at least one broker".into()));
        }
        if self.topic.trim().is_empty() {
            return Err(("topic".into(), "must name a topic".into()));
        }
        Ok(())
    }
}

/// How much of a value a dead letter keeps when the whole record is too large for the topic:
/// tried in turn, so a topic with a small `max.message.bytes` still gets the record's
/// coordinates, reason, size and digest.
const EXCERPT_BYTES: [usize; 3] = [64 * 1024, 4 * 1024, 0];

/// Produces records to a topic.
pub struct KafkaSink {
    name: String,
    topic: String,
    key_pointer: Option<String>,
    key_field: Option<String>,
    /// Whether this sink is a dead-letter destination, which must not refuse a record for its
    /// size: nowhere is left to send it.
    dead_letter: bool,
    producer: FutureProducer,
}

/// What a delivery came to.
enum Delivery {
    Stored,
    TooLarge,
    Failed(KafkaError),
}

impl KafkaSink {
    /// Creates the producer (it connects lazily). `dead_letter` makes it keep an excerpt of a
    /// record too large for the topic instead of refusing it.
    pub fn new(config: &KafkaSinkConfig, dead_letter: bool) -> Result<Self, ConnectorError> {
        let name = format!("kafka sink {}", config.topic);
        let mut client = client_config(&config.brokers, &config.properties);
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", config.compression.as_str())
            .set("linger.ms", "5")
            .set(
                "delivery.timeout.ms",
                config.delivery_timeout_ms.to_string(),
            );
        let producer: FutureProducer = client
            .create()
            .map_err(|e| ConnectorError::fatal(&name, "cannot create the producer").caused_by(e))?;
        Ok(KafkaSink {
            name,
            topic: config.topic.clone(),
            key_pointer: config.key_field.as_deref().map(pointer),
            key_field: config.key_field.clone(),
            dead_letter,
            producer,
        })
    }

    fn key_of(&self, record: &Record) -> Result<Option<Vec<u8>>, String> {
        let Some(pointer) = &self.key_pointer else {
            return Ok(record.key.clone());
        };
        let field = self.key_field.as_deref().unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&record.value).map_err(|e| {
            format!("value is not JSON, so key field `{field}` cannot be read: {e}")
        })?;
        text_at(&value, pointer)
            .map(|key| Some(key.into_bytes()))
            .ok_or_else(|| format!("key field `{field}` is missing or not a scalar"))
    }

    /// Sends one record and waits for its delivery report.
    async fn send(&self, record: &Record, key: Option<&[u8]>) -> Delivery {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for header in &record.headers {
            headers = headers.insert(Header {
                key: &header.key,
                value: Some(&header.value),
            });
        }
        let mut message = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(&record.value)
            .headers(headers);
        if let Some(key) = key {
            message = message.key(key);
        }
        if let Some(timestamp) = record.timestamp {
            message = message.timestamp(timestamp);
        }
        match self.producer.send(message, Duration::from_secs(30)).await {
            Ok(_) => Delivery::Stored,
            // Raised by librdkafka before sending (message.max.bytes) or by the broker (the
            // topic's max.message.bytes): either way, sending it again cannot help.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                Delivery::TooLarge
            }
            Err((error, _)) => Delivery::Failed(error),
        }
    }

    /// Stores a dead letter too large for the topic as an excerpt of its value, with its full
    /// size and sha256 in headers; the whole record stays in the source at the coordinates its
    /// headers name. Refuses it only if even its headers alone are too large.
    async fn send_excerpt(&self, record: &Record, key: Option<&[u8]>) -> Result<Delivery, String> {
        let size = record.value.len() + key.map_or(0, <[u8]>::len);
        for keep in EXCERPT_BYTES {
            let mut excerpt = record.clone();
            excerpt.keep_excerpt(keep);
            match self.send(&excerpt, key).await {
                Delivery::TooLarge => continue,
                delivered => {
                    if matches!(delivered, Delivery::Stored) {
                        tracing::warn!(
                            connector = %self.name,
                            size,
                            kept = keep.min(record.value.len()),
                            "Dead letter too large for the topic; stored an excerpt of its value with its size and sha256."
                        );
                    }
                    return Ok(delivered);
                }
            }
        }
        Err(format!(
            "dead letter too large for the topic even without its value ({} bytes of headers); raise the topic's max.message.bytes",
            record
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.len())
                .sum::<usize>()
        ))
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let mut rejected = Vec::new();
        let mut prepared = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match self.key_of(record) {
                Ok(key) => prepared.push((index, key)),
                // Dead letters are often not JSON (that may be why they are dead): keep their
                // own key rather than refusing them.
                Err(_) if self.dead_letter => prepared.push((index, record.key.clone())),
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        let this = &*self;
        let deliveries = prepared.iter().map(|(index, key)| async move {
            (
                *index,
                key,
                this.send(&records[*index], key.as_deref()).await,
            )
        });
        let mut transient = None;
        let mut too_large = Vec::new();
        for (index, key, delivery) in futures::future::join_all(deliveries).await {
            match delivery {
                Delivery::Stored => {}
                Delivery::TooLarge => too_large.push((index, key)),
                Delivery::Failed(error) => transient = Some(error),
            }
        }
        for (index, key) in too_large {
            let record = &records[index];
            if !self.dead_letter {
                rejected.push(Rejected {
                    index,
                    reason: format!(
                        "message of {} bytes is larger than the producer or topic allows (message.max.bytes, max.message.bytes)",
                        record.value.len() + key.as_ref().map_or(0, Vec::len)
                    ),
                });
                continue;
            }
            match self.send_excerpt(record, key.as_deref()).await {
                Ok(Delivery::Failed(error)) => transient = Some(error),
                Ok(_) => {}
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        if let Some(error) = transient {
            // Retrying the whole batch may write some records twice; consumers of an
            // at-least-once stream and idempotent sinks downstream absorb that.
            return Err(
                ConnectorError::transient(self.name.clone(), "delivery failed").caused_by(error),
            );
        }
        rejected.sort_by_key(|r| r.index);
        Ok(rejected)
    }
}
