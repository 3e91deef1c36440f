//! The plugin registry of a fleet, kept in a compacted Kafka topic so that every `weir` process
//! reading it deploys the same versions in the same order. `chunks` is the wire format (a
//! component split into records that survive compaction), `catalog` rebuilds the plugins and
//! their history from those records, `publish` writes them (versions, heads, rollouts), `follow`
//! reads the topic and deploys or stages, and `heartbeat` tells the fleet topic which process
//! runs which version.

mod catalog;
mod chunks;
mod follow;
mod heartbeat;
mod properties;
mod publish;

pub use catalog::{
    Catalog, Change, Head, HeadAction, Incoming, PublishedVersion, RolloutAction, RolloutRecord,
};
pub use chunks::{CHUNK_BYTES, MAX_COMPONENT_BYTES, MAX_MANIFEST_BYTES};
pub use follow::{
    FollowHandle, RegistryFollower, deploy_from_registry, deploy_head, follow, read_catalog,
};
pub use heartbeat::{
    HEARTBEAT_EVERY, Heartbeat, HeartbeatHandle, STALE_AFTER, process_identity, read_heartbeats,
    start_heartbeat,
};
pub use properties::{MAX_PROPERTIES_BYTES, PropertiesError, parse_properties, read_properties};
pub use publish::{Publisher, valid_plugin_name};

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

/// How long a registry read or write waits on the brokers before it gives up.
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a fleet's registry lives: `kafka://BROKERS/TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAddress {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// The compacted topic holding the plugins.
    pub topic: String,
    /// Extra librdkafka properties of every registry client (TLS, SASL), from
    /// `--registry-properties`; never printed.
    pub properties: BTreeMap<String, crate::secret::Secret>,
}

impl RegistryAddress {
    /// The companion topic where each process publishes its heartbeat.
    pub fn fleet_topic(&self) -> String {
        format!("{}.fleet", self.topic)
    }

    /// A client configuration for the registry's brokers.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "weir-registry");
        for (key, value) in &self.properties {
            config.set(key, value.expose());
        }
        config
    }
}

impl RegistryAddress {
    /// Fails when the registry's brokers refuse its clients' credentials or TLS settings, with
    /// the brokers' reason; an outage is left to the reads and writes, which wait
    /// [`KAFKA_TIMEOUT`] and name it.
    pub fn check_access(&self) -> Result<(), KafkaRegistryError> {
        use crate::connectors::kafka::access::{
            AccessError, PROBE_TIMEOUT, check_access, probe_config,
        };
        let client = probe_config(&self.brokers, &self.properties);
        match check_access(&client, PROBE_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(AccessError::Refused(refusal)) => Err(KafkaRegistryError::Refused(format!(
                "registry {self}: {}",
                refusal
                    .to_string()
                    .replace("`properties`", "--registry-properties")
            ))),
            Err(AccessError::Client(source)) => {
                Err(KafkaRegistryError::kafka(self, "creating a client", source))
            }
        }
    }
}

impl fmt::Display for RegistryAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kafka://{}/{}", self.brokers, self.topic)
    }
}

impl FromStr for RegistryAddress {
    type Err = KafkaRegistryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| KafkaRegistryError::Address {
            address: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = text
            .strip_prefix("kafka://")
            .ok_or_else(|| invalid("it must start with kafka://"))?;
        let (brokers, topic) = rest
            .split_once('/')
            .ok_or_else(|| invalid("it names no topic after the brokers"))?;
        if brokers.is_empty() || brokers.split(',').any(str::is_empty) {
            return Err(invalid("it names no broker"));
        }
        let topic_ok = !topic.is_empty()
            && topic.len() <= 200
            && topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !topic_ok {
            return Err(invalid(
                "the topic must be 1 to 200 letters, digits, `.`, `_` or `-`",
            ));
        }
        Ok(RegistryAddress {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            properties: BTreeMap::new(),
        })
    }
}

/// The Kafka registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KafkaRegistryError {
    /// The `--registry` value is not a registry address.
    #[error(
        "`{address}` is not a registry address: {reason}; write kafka://HOST:PORT[,HOST:PORT]/TOPIC"
    )]
    Address {
        /// What was given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The brokers refused or did not answer.
    #[error("registry {registry}: {action}: {source}")]
    Kafka {
        /// The registry.
        registry: String,
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A component or manifest is too large, or its name cannot be used.
    #[error("{0}")]
    Refused(String),
    /// A record of the topic is not one Weir wrote, or is damaged.
    #[error("registry {registry}: record at partition {partition} offset {offset}: {reason}")]
    Malformed {
        /// The registry.
        registry: String,
        /// Where.
        partition: i32,
        /// Where.
        offset: i64,
        /// What is wrong.
        reason: String,
    },
    /// The registry's head of a plugin could not be deployed at start.
    #[error("plugin `{name}` version {version} from the registry: {source}")]
    Deploy {
        /// The plugin.
        name: String,
        /// The head's version.
        version: String,
        /// Why.
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
    /// A registry topic is missing, or this client may not describe it, and the brokers
    /// refused to create it: the principal lacks the ACLs.
    #[error(
        "registry {registry}: topic {topic} does not exist or this client may not describe it, and the brokers refused to create it ({code}). If it exists, grant this client's principal Describe on topic {topic}; if not, create it beforehand (cleanup.policy=compact, 1 partition) or grant the principal Create on it"
    )]
    TopicNotCreated {
        /// The registry.
        registry: String,
        /// The topic.
        topic: String,
        /// The brokers' answer to the creation.
        code: rdkafka::types::RDKafkaErrorCode,
    },
    /// A plugin or version asked for is not in the registry.
    #[error("registry {registry}: {reason}")]
    Missing {
        /// The registry.
        registry: String,
        /// What is missing and what to do.
        reason: String,
    },
}

impl KafkaRegistryError {
    /// The client's error while doing `action`; a property the client refused is named
    /// without its value (rdkafka's error would print it, and it may be a secret).
    pub(crate) fn kafka(
        registry: &RegistryAddress,
        action: impl Into<String>,
        source: rdkafka::error::KafkaError,
    ) -> Self {
        use crate::connectors::kafka::refused_property::refused_property;
        if let Some(refusal) = refused_property(&source) {
            return KafkaRegistryError::Refused(format!(
                "registry {registry}: {}: {refusal}; correct it in --registry-properties",
                action.into()
            ));
        }
        if source.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed) {
            return KafkaRegistryError::Refused(format!(
                "registry {registry}: {}: the brokers refused this principal the topic ({source}). Grant it DESCRIBE and READ on topics {topic} and {fleet} to follow the registry, WRITE on {topic} to publish, and WRITE on {fleet} to send heartbeats (README, Security), or fix the credentials in --registry-properties",
                action.into(),
                topic = registry.topic,
                fleet = registry.fleet_topic(),
            ));
        }
        KafkaRegistryError::Kafka {
            registry: registry.to_string(),
            action: action.into(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_addresses() {
        let address: RegistryAddress = "kafka://a:9092,b:9092/weir.plugins".parse().unwrap();
        assert_eq!(address.brokers, "a:9092,b:9092");
        assert_eq!(address.topic, "weir.plugins");
        assert_eq!(address.fleet_topic(), "weir.plugins.fleet");
        assert_eq!(address.to_string(), "kafka://a:9092,b:9092/weir.plugins");
        for wrong in [
            "a:9092/t",
            "kafka://a:9092",
            "kafka:///t",
            "kafka://a:9092/",
            "kafka://a/t/x",
        ] {
            let error = wrong.parse::<RegistryAddress>().unwrap_err().to_string();
            assert!(error.contains("kafka://HOST:PORT"), "{wrong}: {error}");
        }
    }

    #[test]
    fn a_misspelt_secret_registry_property_is_named_without_its_value() {
        use rdkafka::consumer::BaseConsumer;
        let mut address: RegistryAddress = "kafka://127.0.0.1:1/t".parse().unwrap();
        address.properties.insert(
            "sasl.pasword".into(),
            crate::secret::Secret::new("canary-registry-3c9d"),
        );
        let Err(error) = address.client_config().create::<BaseConsumer>() else {
            panic!("the consumer was created");
        };
        let error = KafkaRegistryError::kafka(&address, "creating a consumer", error);
        let message = format!("{error} {error:?}");
        assert!(message.contains("`sasl.pasword`"), "{message}");
        assert!(!message.contains("canary"), "{message}");
    }
}
