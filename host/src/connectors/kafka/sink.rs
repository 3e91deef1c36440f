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
    /// Extra librdkafka producer properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
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

/// Produces records to a topic.
pub struct KafkaSink {
    name: String,
    topic: String,
    key_pointer: Option<String>,
    key_field: Option<String>,
    producer: FutureProducer,
}

impl KafkaSink {
    /// Creates the producer (it connects lazily).
    pub fn new(config: &KafkaSinkConfig) -> Result<Self, ConnectorError> {
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
        let producer: FutureProducer = client.create().map_err(|e| {
            ConnectorError::fatal(&name, format!("cannot create the producer: {e}"))
        })?;
        Ok(KafkaSink {
            name,
            topic: config.topic.clone(),
            key_pointer: config.key_field.as_deref().map(pointer),
            key_field: config.key_field.clone(),
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
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let mut rejected = Vec::new();
        let mut prepared = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match self.key_of(record) {
                Ok(key) => {
                    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
                    for header in &record.headers {
                        headers = headers.insert(Header {
                            key: &header.key,
                            value: Some(&header.value),
                        });
                    }
                    prepared.push((index, key, headers));
                }
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        let (producer, topic) = (&self.producer, self.topic.as_str());
        let deliveries = prepared.iter().map(|(index, key, headers)| {
            let record = &records[*index];
            let mut message = FutureRecord::<[u8], [u8]>::to(topic)
                .payload(&record.value)
                .headers(headers.clone());
            if let Some(key) = key {
                message = message.key(key.as_slice());
            }
            if let Some(timestamp) = record.timestamp {
                message = message.timestamp(timestamp);
            }
            async move {
                (
                    *index,
                    producer.send(message, Duration::from_secs(30)).await,
                )
            }
        });
        let mut transient = None;
        for (index, delivery) in futures::future::join_all(deliveries).await {
            match delivery {
                Ok(_) => {}
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    rejected.push(Rejected {
                        index,
                        reason:
                            "message larger than the topic or broker allows (message.max.bytes)"
                                .into(),
                    });
                }
                Err((error, _)) => transient = Some(error),
            }
        }
        if let Some(error) = transient {
            // Retrying the whole batch may write some records twice; consumers of an
            // at-least-once stream and idempotent sinks downstream absorb that.
            return Err(ConnectorError::transient(
                self.name.clone(),
                format!("delivery failed: {error}"),
            ));
        }
        rejected.sort_by_key(|r| r.index);
        Ok(rejected)
    }
}
