//! The `kafka` connector: an idempotent producer sink that acknowledges only on delivery reports,
//! and a consumer-group source whose offsets are committed only after downstream
//! acknowledgement.

pub(crate) mod access;
pub(crate) mod batch_producer;
mod context;
mod delivery;
mod group;
mod lag;
mod partition_queues;
mod progress;
pub mod rebootstrap;
mod sink;
mod source;
mod unfinished;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::ClientConfig;

use super::{ConfigProblem, ConnectorError, Sink, SinkSpec, Source, SourceSpec};

pub use group::{GroupMetrics, GroupStatus};
pub use sink::{Compression, KafkaSink, KafkaSinkConfig};
pub use source::{KafkaSource, KafkaSourceConfig, OffsetReset};

#[async_trait]
impl SourceSpec for KafkaSourceConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        KafkaSourceConfig::validate(self)
    }

    async fn build(&self) -> Result<Box<dyn Source>, ConnectorError> {
        probe(self.describe(), &self.brokers, &self.properties).await?;
        Ok(Box::new(KafkaSource::open(self)?))
    }

    fn describe(&self) -> String {
        format!("kafka topics {}", self.topics.join(","))
    }

    /// The largest partition count among the topics (partition numbers are shared by them).
    fn partition_count(&self) -> Result<u32, ConnectorError> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = client_config(&self.brokers, &self.properties)
            .create()
            .map_err(|e| {
                ConnectorError::fatal(self.describe(), "cannot create a metadata client")
                    .caused_by(e)
            })?;
        let mut largest = 0;
        for topic in &self.topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(|e| {
                    ConnectorError::transient(
                        self.describe(),
                        format!("cannot read topic {topic}'s metadata"),
                    )
                    .caused_by(e)
                })?;
            let count = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
                .max()
                .unwrap_or(0);
            largest = largest.max(u32::try_from(count).unwrap_or(u32::MAX));
        }
        Ok(largest)
    }
}

/// How long a metadata request waits for the brokers.
const METADATA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[async_trait]
impl SinkSpec for KafkaSinkConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        KafkaSinkConfig::validate(self)
    }

    async fn build(&self, dead_letter: bool) -> Result<Box<dyn Sink>, ConnectorError> {
        probe(self.describe(), &self.brokers, &self.properties).await?;
        Ok(Box::new(KafkaSink::new(self, dead_letter)?))
    }

    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }
}

/// Stops a connector whose brokers refuse its credentials or its TLS settings (see
/// [`access`]); an outage is left to the connector's retries.
async fn probe(
    connector: String,
    brokers: &str,
    properties: &BTreeMap<String, crate::secret::Secret>,
) -> Result<(), ConnectorError> {
    let client = access::probe_config(brokers, properties);
    let checked =
        tokio::task::spawn_blocking(move || access::check_access(&client, access::PROBE_TIMEOUT))
            .await;
    match checked {
        Ok(Ok(())) => Ok(()),
        Ok(Err(access::AccessError::Refused(refusal))) => {
            Err(ConnectorError::fatal(connector, refusal.to_string()))
        }
        Ok(Err(access::AccessError::Client(error))) => {
            Err(ConnectorError::fatal(connector, "cannot create a client").caused_by(error))
        }
        Err(join) => Err(ConnectorError::fatal(
            connector,
            format!("the brokers' access check did not finish: {join}"),
        )),
    }
}

/// A Kafka message's headers as the host's own; a header without a value becomes empty.
pub(crate) fn headers_of(message: &impl rdkafka::message::Message) -> crate::record::Headers {
    use rdkafka::message::Headers;
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| crate::record::Header {
                    key: h.key.to_owned().into(),
                    value: h.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A client config with the brokers and the user's extra librdkafka properties.
fn client_config(
    brokers: &str,
    properties: &BTreeMap<String, crate::secret::Secret>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in properties {
        config.set(key, value.expose());
    }
    config
}
