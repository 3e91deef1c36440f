//! The `kafka` connector: an idempotent producer sink that acknowledges only on delivery reports,
//! and a consumer-group source whose offsets are committed only after downstream
//! acknowledgement.

pub(crate) mod access;
pub(crate) mod batch_producer;
mod context;
mod dead_letter_topic;
mod deleted_unread;
mod delivery;
mod group;
mod lag;
mod partition_queues;
mod progress;
pub mod rebootstrap;
pub(crate) mod refused_property;
mod sink;
mod source;
mod start_at;
mod topic_template;
mod topics;
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
        self.report_pattern_matches().await;
        Ok(Box::new(KafkaSource::open(self)?))
    }

    fn describe(&self) -> String {
        format!("kafka topics {}", self.topics.join(","))
    }

    /// The largest partition count among the topics (partition numbers are shared by them),
    /// those its patterns match now included.
    fn partition_count(&self) -> Result<u32, ConnectorError> {
        let largest = self
            .subscribed_topics()?
            .iter()
            .map(|(_, partitions)| *partitions)
            .max()
            .unwrap_or(0);
        Ok(u32::try_from(largest).unwrap_or(u32::MAX))
    }
}

impl KafkaSourceConfig {
    /// The topics the source subscribes to that exist now, by name, with their partition counts:
    /// each named one, and every topic a pattern matches (one metadata request for all topics).
    /// Blocks on the network.
    fn subscribed_topics(&self) -> Result<Vec<(String, usize)>, ConnectorError> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = client_config(&self.brokers, &self.properties)
            .create()
            .map_err(|e| {
                refused_property::creation_failed(
                    &self.describe(),
                    "cannot create a metadata client",
                    e,
                )
            })?;
        let requests: Vec<Option<&str>> = if self.topics.iter().any(|t| topics::is_pattern(t)) {
            vec![None]
        } else {
            self.topics.iter().map(|t| Some(t.as_str())).collect()
        };
        let mut found = Vec::new();
        for request in requests {
            let metadata = consumer
                .fetch_metadata(request, METADATA_TIMEOUT)
                .map_err(|e| {
                    ConnectorError::transient(
                        self.describe(),
                        format!(
                            "cannot read {}'s metadata",
                            request.map_or("the cluster".into(), |t| format!("topic {t}"))
                        ),
                    )
                    .caused_by(e)
                })?;
            let existing = metadata.topics().iter().filter(|t| t.error().is_none());
            let names = topics::subscribed(&self.topics, existing.clone().map(|t| t.name()))
                .map_err(|reason| ConnectorError::fatal(self.describe(), reason))?;
            found.extend(
                existing
                    .filter(|t| names.contains(&t.name()))
                    .map(|t| (t.name().to_owned(), t.partitions().len())),
            );
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// Logs the topics the source's patterns match at start, so that what a pattern reads is
    /// on record (a pattern that matches none is reported by the consumer, as a missing topic).
    async fn report_pattern_matches(&self) {
        if !self.topics.iter().any(|t| topics::is_pattern(t)) {
            return;
        }
        let config = self.clone();
        let found = tokio::task::spawn_blocking(move || config.subscribed_topics()).await;
        let patterns = self
            .topics
            .iter()
            .filter(|t| topics::is_pattern(t))
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        match found {
            Ok(Ok(found)) => tracing::info!(
                source = %self.describe(),
                %patterns,
                topics = %found.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(","),
                "Topics subscribed through patterns."
            ),
            Ok(Err(error)) => tracing::debug!(
                source = %self.describe(),
                error = %error,
                "Could not list the topics the source's patterns match."
            ),
            Err(error) => tracing::debug!(error = %error, "The pattern report's task failed."),
        }
    }
}

/// How long a metadata request waits for the brokers.
const METADATA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[async_trait]
impl SinkSpec for KafkaSinkConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        KafkaSinkConfig::validate(self)
    }

    fn validate_as_dead_letter(&self) -> Result<(), ConfigProblem> {
        KafkaSinkConfig::validate_as_dead_letter(self)
    }

    async fn build(&self, dead_letter: bool) -> Result<Box<dyn Sink>, ConnectorError> {
        probe(self.describe(), &self.brokers, &self.properties).await?;
        if dead_letter {
            dead_letter_topic::refuse_compacted(
                &self.describe(),
                &self.brokers,
                &self.properties,
                &self.topic,
            )
            .await?;
        }
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
        Ok(Err(access::AccessError::Client(error))) => Err(refused_property::creation_failed(
            &connector,
            "cannot create a client",
            error,
        )),
        Err(join) => Err(ConnectorError::fatal(
            connector,
            format!("the brokers' access check did not finish: {join}"),
        )),
    }
}

/// Most headers the Kafka source takes from one message. A header is two bytes on the wire at
/// the least and tens of bytes on the host (its name's and value's handles, and the name copied),
/// so a 1 MB message of empty headers would take the host tens of MB; a message with more is
/// dead-lettered without its headers. Dead letters may carry weir's own headers beside the
/// record's, so a replay of them takes [`MAX_DEAD_LETTER_HEADERS`].
pub const MAX_HEADERS: usize = 1024;

/// Most headers a replay takes from one dead letter: a record's [`MAX_HEADERS`] and weir's own.
pub const MAX_DEAD_LETTER_HEADERS: usize = MAX_HEADERS + 64;

/// A Kafka message's headers as the host's own (a header without a value becomes empty), or
/// their number when there are more than `most`; none is copied then.
pub(crate) fn headers_of(
    message: &impl rdkafka::message::Message,
    most: usize,
) -> Result<crate::record::Headers, usize> {
    use rdkafka::message::Headers;
    let Some(headers) = message.headers() else {
        return Ok(crate::record::Headers::default());
    };
    let count = headers.count();
    if count > most {
        return Err(count);
    }
    Ok(headers
        .iter()
        .map(|h| crate::record::Header {
            key: h.key.to_owned().into(),
            value: h.value.map(Bytes::copy_from_slice).unwrap_or_default(),
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    use super::*;

    /// A message carrying `count` headers, `h0` (valued `0`) and on, the last without a value.
    fn message_with_headers(count: usize) -> OwnedMessage {
        let values: Vec<String> = (0..count).map(|i| i.to_string()).collect();
        let headers = (0..count).fold(OwnedHeaders::new(), |headers, i| {
            headers.insert(Header {
                key: &format!("h{i}"),
                value: (i + 1 < count).then_some(values[i].as_str()),
            })
        });
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        )
    }

    #[test]
    fn headers_are_taken_up_to_the_bound_and_counted_past_it() {
        let taken = headers_of(&message_with_headers(3), 3).unwrap();
        let pairs: Vec<(&str, &[u8])> = taken
            .iter()
            .map(|header| (header.key.as_str(), &header.value[..]))
            .collect();
        assert_eq!(pairs, [("h0", &b"0"[..]), ("h1", b"1"), ("h2", b"")]);
        assert_eq!(headers_of(&message_with_headers(4), 3).unwrap_err(), 4);
        let none = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        assert!(headers_of(&none, 0).unwrap().is_empty());
    }
}
