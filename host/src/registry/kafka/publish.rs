//! Writing to the registry topic: a published version (its chunks, then its description, then
//! the head naming it, or a rollout record staging it beside the head), a rollback (a head
//! naming an earlier version), a rollout's promotion or abort, and the tombstones of pruned
//! versions. Everything goes to partition 0, so a reader sees a version's chunks before the
//! record that names it; the topics are created compacted when missing.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use sha2::{Digest, Sha256};

use super::catalog::{Head, HeadAction, PublishedVersion, RolloutAction, RolloutRecord};
use super::chunks::{
    MAX_COMPONENT_BYTES, MAX_MANIFEST_BYTES, WireRecord, chunk_count, chunk_key, chunk_records,
    head_key, headers, kinds, rollout_key, version_key,
};
use super::heartbeat::host_name;
use super::{KAFKA_TIMEOUT, KafkaRegistryError, RegistryAddress};
use crate::connectors::kafka::batch_producer::{self, BatchProducer, Outgoing};
use crate::registry::rollout::RolloutPlan;

/// Whether `name` can name a plugin in the registry: the names a pipeline's `plugin` takes
/// (ASCII letters, digits, `-` and `_`; [`crate::config::is_plugin_name`]) and `weir plugin
/// build` writes (at most 64 of them), so every plugin of a folder can move to a fleet. Keys
/// are built from it: it holds no `/`.
pub fn valid_plugin_name(name: &str) -> bool {
    name.len() <= 64 && crate::config::is_plugin_name(name)
}

/// Writes to one registry.
pub struct Publisher {
    address: RegistryAddress,
    producer: BatchProducer,
    host: String,
}

impl Publisher {
    /// A publisher to `address`. Idempotent and acknowledged by every in-sync replica, so a
    /// retried chunk is not written twice and an acknowledged one is not lost.
    pub fn new(address: &RegistryAddress) -> Result<Self, KafkaRegistryError> {
        let mut client = address.client_config();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        let producer = batch_producer::create(&format!("registry {address} publisher"), &client)
            .map_err(|e| KafkaRegistryError::kafka(address, "creating a producer", e))?;
        Ok(Publisher {
            address: address.clone(),
            producer,
            host: host_name(),
        })
    }

    /// Creates the registry topic and its fleet companion, compacted, when they are missing.
    /// The fleet topic only when this client may: a publisher's principal needs no ACL on it
    /// (the first `weir run --registry` creates it, and listing works without it).
    pub async fn ensure_topics(&self) -> Result<(), KafkaRegistryError> {
        ensure_registry_topics(
            &BrokerAdmin {
                address: &self.address,
            },
            &self.address,
        )
        .await
    }

    /// Publishes a validated component under `name` and makes it the fleet's head, or, with
    /// `stage`, stages it beside the head as a shadow or a canary.
    pub async fn publish(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: &str,
        label: Option<&str>,
        stage: Option<&RolloutPlan>,
    ) -> Result<PublishedVersion, KafkaRegistryError> {
        if !valid_plugin_name(name) {
            return Err(KafkaRegistryError::Refused(format!(
                "`{name}` cannot name a plugin in the registry: use letters, digits, `-` and `_` (at most 64)"
            )));
        }
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(KafkaRegistryError::Refused(format!(
                "plugin `{name}` is {} MiB, more than the registry's limit of {} MiB",
                bytes.len() / (1024 * 1024),
                MAX_COMPONENT_BYTES / (1024 * 1024)
            )));
        }
        if manifest.len() > MAX_MANIFEST_BYTES {
            return Err(KafkaRegistryError::Refused(format!(
                "the manifest of `{name}` is {} bytes, more than the registry's limit of {MAX_MANIFEST_BYTES}",
                manifest.len()
            )));
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let version = PublishedVersion {
            name: name.to_owned(),
            sha256: sha256.clone(),
            version: sha256[..12].to_owned(),
            label: label.map(str::to_owned),
            manifest: manifest.to_owned(),
            publisher: self.host.clone(),
            size: bytes.len(),
            chunks: chunk_count(bytes.len()),
            published_at: unix_millis(),
        };
        let mut common = vec![
            (headers::PLUGIN, name.as_bytes().to_vec()),
            (headers::SHA256, sha256.as_bytes().to_vec()),
            (headers::MANIFEST, manifest.as_bytes().to_vec()),
            (headers::PUBLISHER, self.host.as_bytes().to_vec()),
        ];
        if let Some(label) = label {
            common.push((headers::LABEL, label.as_bytes().to_vec()));
        }
        let mut records = chunk_records(name, bytes, &common);
        let mut described = vec![(headers::KIND, kinds::VERSION.as_bytes().to_vec())];
        described.extend(common);
        records.push(WireRecord {
            key: version_key(name, &sha256),
            headers: described,
            payload: serde_json::to_vec(&version).map_err(|e| {
                KafkaRegistryError::Refused(format!("cannot encode the version record: {e}"))
            })?,
        });
        // Chunks in order: the head goes last, once everything it names is written.
        for record in &records {
            self.send(record).await?;
        }
        match stage {
            Some(rollout) => {
                self.write_rollout(
                    &version,
                    RolloutAction::Stage {
                        rollout: rollout.clone(),
                    },
                )
                .await?
            }
            None => {
                self.write_head(&Head {
                    name: name.to_owned(),
                    sha256,
                    version: version.version.clone(),
                    action: HeadAction::Publish,
                    publisher: self.host.clone(),
                    at: unix_millis(),
                })
                .await?
            }
        }
        Ok(version)
    }

    /// Makes the staged candidate `version` the fleet's head, then ends its rollout: every
    /// process promotes it (or, if it never staged it, deploys it as a new version).
    pub async fn promote(&self, version: &PublishedVersion) -> Result<(), KafkaRegistryError> {
        self.write_head(&Head {
            name: version.name.clone(),
            sha256: version.sha256.clone(),
            version: version.version.clone(),
            action: HeadAction::Promote,
            publisher: self.host.clone(),
            at: unix_millis(),
        })
        .await?;
        self.write_rollout(version, RolloutAction::Promote).await
    }

    /// Ends the rollout of the staged candidate `version`: every process drops it.
    pub async fn abort(
        &self,
        version: &PublishedVersion,
        reason: &str,
    ) -> Result<(), KafkaRegistryError> {
        self.write_rollout(
            version,
            RolloutAction::Abort {
                reason: reason.to_owned(),
            },
        )
        .await
    }

    async fn write_rollout(
        &self,
        version: &PublishedVersion,
        action: RolloutAction,
    ) -> Result<(), KafkaRegistryError> {
        let record = RolloutRecord {
            name: version.name.clone(),
            sha256: version.sha256.clone(),
            version: version.version.clone(),
            action,
            publisher: self.host.clone(),
            at: unix_millis(),
        };
        self.write_control(
            kinds::ROLLOUT,
            rollout_key(&record.name),
            &record,
            &record.name,
            &record.sha256,
        )
        .await
    }

    /// Points `version`'s plugin's head back at it: every process following the registry
    /// deploys it again.
    pub async fn roll_back_to(&self, version: &PublishedVersion) -> Result<(), KafkaRegistryError> {
        self.write_head(&Head {
            name: version.name.clone(),
            sha256: version.sha256.clone(),
            version: version.version.clone(),
            action: HeadAction::Rollback,
            publisher: self.host.clone(),
            at: unix_millis(),
        })
        .await
    }

    /// Deletes `versions` from the registry: a tombstone for each one's description and each
    /// of its chunks, with the kind, plugin and sha256 in headers so that every process
    /// following the topic forgets them (and the chunks it held) at once; compaction then
    /// removes the records. The description goes first, so no reader is left with a version
    /// it can describe but not assemble.
    pub async fn prune(&self, versions: &[&PublishedVersion]) -> Result<(), KafkaRegistryError> {
        for version in versions {
            let common = |kind: &str| {
                vec![
                    (headers::KIND, kind.as_bytes().to_vec()),
                    (headers::PLUGIN, version.name.as_bytes().to_vec()),
                    (headers::SHA256, version.sha256.as_bytes().to_vec()),
                ]
            };
            self.send_tombstone(
                &version_key(&version.name, &version.sha256),
                common(kinds::VERSION),
            )
            .await?;
            // The chunk count comes from the topic: bounded by the largest component it takes.
            for index in 0..version.chunks.clamp(1, chunk_count(MAX_COMPONENT_BYTES)) {
                let mut headers = common(kinds::CHUNK);
                headers.push((headers::CHUNK_INDEX, index.to_string().into_bytes()));
                self.send_tombstone(&chunk_key(&version.name, &version.sha256, index), headers)
                    .await?;
            }
        }
        Ok(())
    }

    async fn send_tombstone(
        &self,
        key: &str,
        headers: Vec<(&'static str, Vec<u8>)>,
    ) -> Result<(), KafkaRegistryError> {
        self.send_message(key, &headers, None).await
    }

    async fn write_head(&self, head: &Head) -> Result<(), KafkaRegistryError> {
        self.write_control(
            kinds::HEAD,
            head_key(&head.name),
            head,
            &head.name,
            &head.sha256,
        )
        .await
    }

    /// Writes a head or rollout record: `value` as JSON under `key`, with its kind, plugin and
    /// sha256 in headers.
    async fn write_control(
        &self,
        kind: &'static str,
        key: String,
        value: &impl serde::Serialize,
        name: &str,
        sha256: &str,
    ) -> Result<(), KafkaRegistryError> {
        let payload = serde_json::to_vec(value).map_err(|e| {
            KafkaRegistryError::Refused(format!("cannot encode the {kind} record: {e}"))
        })?;
        self.send(&WireRecord {
            key,
            headers: vec![
                (headers::KIND, kind.as_bytes().to_vec()),
                (headers::PLUGIN, name.as_bytes().to_vec()),
                (headers::SHA256, sha256.as_bytes().to_vec()),
            ],
            payload,
        })
        .await
    }

    async fn send(&self, record: &WireRecord) -> Result<(), KafkaRegistryError> {
        self.send_message(&record.key, &record.headers, Some(&record.payload))
            .await
    }

    /// Writes one record to partition 0; `payload` `None` is a tombstone.
    async fn send_message(
        &self,
        key: &str,
        headers: &[(&'static str, Vec<u8>)],
        payload: Option<&[u8]>,
    ) -> Result<(), KafkaRegistryError> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let message = Outgoing {
            topic: &self.address.topic,
            payload,
            partition: Some(0),
            key: Some(key.as_bytes()),
            headers: Some(owned),
            timestamp: None,
        };
        batch_producer::send(&self.producer, message)
            .await
            .map_err(|error| {
                KafkaRegistryError::kafka(&self.address, format!("writing {key}"), error)
            })
    }
}

/// Creates each of `topics` with `cleanup.policy=compact` (one partition, the brokers' default
/// replication) unless it exists. The brokers are asked which exist first and only the missing
/// ones are created: a principal without the Create permission (the least-privilege ACLs of a
/// fleet) is refused a CreateTopics request even for a topic that exists.
pub(crate) async fn ensure_compacted(
    address: &RegistryAddress,
    topics: &[&str],
) -> Result<(), KafkaRegistryError> {
    ensure_compacted_with(&BrokerAdmin { address }, address, topics).await
}

/// [`Publisher::ensure_topics`] through `admin`.
async fn ensure_registry_topics(
    admin: &impl TopicAdmin,
    address: &RegistryAddress,
) -> Result<(), KafkaRegistryError> {
    ensure_compacted_with(admin, address, &[&address.topic]).await?;
    match ensure_compacted_with(admin, address, &[&address.fleet_topic()]).await {
        Err(KafkaRegistryError::TopicNotCreated { topic, .. }) => {
            tracing::debug!(registry = %address, topic, "The fleet topic is missing or not described to this client, which may not create it; the first `weir run --registry` does.");
            Ok(())
        }
        other => other,
    }
}

/// What [`ensure_compacted`] asks of the brokers, so that its decisions can be tested without
/// a broker that enforces ACLs.
trait TopicAdmin {
    /// Which of `topics` the brokers describe to this client: those that exist (a topic this
    /// client may not describe looks missing).
    async fn described(&self, topics: &[&str]) -> Result<BTreeSet<String>, KafkaRegistryError>;

    /// Creates `topics` compacted; what the brokers answered for each.
    async fn create(
        &self,
        topics: &[&str],
    ) -> Result<Vec<(String, Result<(), RDKafkaErrorCode>)>, KafkaRegistryError>;
}

async fn ensure_compacted_with(
    admin: &impl TopicAdmin,
    address: &RegistryAddress,
    topics: &[&str],
) -> Result<(), KafkaRegistryError> {
    let described = admin.described(topics).await?;
    let missing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|topic| !described.contains(*topic))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (topic, answer) in admin.create(&missing).await? {
        match answer {
            Ok(()) => {
                tracing::info!(registry = %address, topic, "Created the compacted registry topic.")
            }
            // Created meanwhile by another process.
            Err(RDKafkaErrorCode::TopicAlreadyExists) => {}
            Err(
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed),
            ) => {
                return Err(KafkaRegistryError::TopicNotCreated {
                    registry: address.to_string(),
                    topic,
                    code,
                });
            }
            Err(code) => {
                return Err(KafkaRegistryError::kafka(
                    address,
                    format!("creating topic {topic}"),
                    KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}

/// [`TopicAdmin`] of the registry's brokers.
struct BrokerAdmin<'a> {
    address: &'a RegistryAddress,
}

impl TopicAdmin for BrokerAdmin<'_> {
    async fn described(&self, topics: &[&str]) -> Result<BTreeSet<String>, KafkaRegistryError> {
        let address = self.address.clone();
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        // A metadata request blocks: off the async runtime.
        tokio::task::spawn_blocking(move || {
            // A consumer's metadata request never creates the topic it names (a producer's
            // would, on brokers with `auto.create.topics.enable`, and not compacted).
            let consumer: BaseConsumer = address
                .client_config()
                .set("allow.auto.create.topics", "false")
                .create()
                .map_err(|e| KafkaRegistryError::kafka(&address, "creating a consumer", e))?;
            let mut described = BTreeSet::new();
            for topic in topics {
                let metadata = consumer
                    .fetch_metadata(Some(&topic), KAFKA_TIMEOUT)
                    .map_err(|e| {
                        KafkaRegistryError::kafka(&address, format!("describing topic {topic}"), e)
                    })?;
                let exists = metadata.topics().iter().any(|t| {
                    t.name() == topic
                        && !matches!(
                            t.error().map(RDKafkaErrorCode::from),
                            Some(
                                RDKafkaErrorCode::UnknownTopicOrPartition
                                    | RDKafkaErrorCode::TopicAuthorizationFailed
                            )
                        )
                });
                if exists {
                    described.insert(topic);
                }
            }
            Ok(described)
        })
        .await
        .map_err(|e| {
            KafkaRegistryError::Refused(format!(
                "registry {}: describing its topics stopped: {e}",
                self.address
            ))
        })?
    }

    async fn create(
        &self,
        topics: &[&str],
    ) -> Result<Vec<(String, Result<(), RDKafkaErrorCode>)>, KafkaRegistryError> {
        let address = self.address;
        let admin: AdminClient<DefaultClientContext> = address
            .client_config()
            .create()
            .map_err(|e| KafkaRegistryError::kafka(address, "creating an admin client", e))?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|topic| {
                NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
                    .set("cleanup.policy", "compact")
                    // Versions are read from the start by every process: compaction may drop
                    // superseded heads, never a chunk (each has its own key).
                    .set("min.compaction.lag.ms", "60000")
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(&new, &options)
            .await
            .map_err(|e| KafkaRegistryError::kafka(address, "creating the registry topics", e))?;
        Ok(results
            .into_iter()
            .map(|result| match result {
                Ok(topic) => (topic, Ok(())),
                Err((topic, code)) => (topic, Err(code)),
            })
            .collect())
    }
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brokers that enforce ACLs as Kafka does for a principal without Create: every
    /// CreateTopics request is refused with TOPIC_AUTHORIZATION_FAILED, even for a topic that
    /// exists.
    struct NoCreateAcl {
        existing: BTreeSet<String>,
        create_requests: std::sync::Mutex<Vec<Vec<String>>>,
    }

    impl NoCreateAcl {
        fn with(existing: &[&str]) -> Self {
            NoCreateAcl {
                existing: existing.iter().map(|t| (*t).to_owned()).collect(),
                create_requests: std::sync::Mutex::default(),
            }
        }
    }

    impl TopicAdmin for NoCreateAcl {
        async fn described(&self, topics: &[&str]) -> Result<BTreeSet<String>, KafkaRegistryError> {
            Ok(topics
                .iter()
                .filter(|t| self.existing.contains(**t))
                .map(|t| (*t).to_owned())
                .collect())
        }

        async fn create(
            &self,
            topics: &[&str],
        ) -> Result<Vec<(String, Result<(), RDKafkaErrorCode>)>, KafkaRegistryError> {
            self.create_requests
                .lock()
                .unwrap()
                .push(topics.iter().map(|t| (*t).to_owned()).collect());
            Ok(topics
                .iter()
                .map(|t| {
                    (
                        (*t).to_owned(),
                        Err(RDKafkaErrorCode::TopicAuthorizationFailed),
                    )
                })
                .collect())
        }
    }

    fn ensure(admin: &NoCreateAcl, topics: &[&str]) -> Result<(), KafkaRegistryError> {
        let address: RegistryAddress = "kafka://b:9092/weir.plugins".parse().unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(ensure_compacted_with(admin, &address, topics))
    }

    #[test]
    fn existing_topics_are_not_created_again_so_no_create_acl_is_needed() {
        let admin = NoCreateAcl::with(&["weir.plugins", "weir.plugins.fleet"]);
        ensure(&admin, &["weir.plugins", "weir.plugins.fleet"]).unwrap();
        assert!(admin.create_requests.lock().unwrap().is_empty());
    }

    #[test]
    fn only_missing_topics_are_created_and_a_refusal_names_the_acl() {
        let admin = NoCreateAcl::with(&["weir.plugins"]);
        let error = ensure(&admin, &["weir.plugins", "weir.plugins.fleet"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            *admin.create_requests.lock().unwrap(),
            [vec!["weir.plugins.fleet".to_owned()]]
        );
        for needed in [
            "topic weir.plugins.fleet",
            "Describe on topic weir.plugins.fleet",
            "Create",
            "cleanup.policy=compact",
        ] {
            assert!(error.contains(needed), "{needed}: {error}");
        }
    }

    #[test]
    fn a_publisher_needs_no_acl_on_the_fleet_topic() {
        // The least-privilege ACLs: the publisher describes and writes the registry topic only.
        let admin = NoCreateAcl::with(&["weir.plugins"]);
        let address: RegistryAddress = "kafka://b:9092/weir.plugins".parse().unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(ensure_registry_topics(&admin, &address))
            .unwrap();
        assert_eq!(
            *admin.create_requests.lock().unwrap(),
            [vec!["weir.plugins.fleet".to_owned()]]
        );
        // Without the registry topic, it still says what is missing.
        let admin = NoCreateAcl::with(&[]);
        let error = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(ensure_registry_topics(&admin, &address))
            .unwrap_err();
        assert!(error.to_string().contains("topic weir.plugins "), "{error}");
    }

    #[test]
    fn plugin_names_that_can_be_keys() {
        // What `weir plugin build` writes and a pipeline's `plugin` takes.
        for good in [
            "user-profile",
            "a",
            "pii_mask2",
            "UserProfile",
            "1a",
            &"a".repeat(64),
        ] {
            assert!(valid_plugin_name(good), "{good}");
        }
        for bad in ["", "a/b", "a:b", "a.candidate", "é", &"a".repeat(65)] {
            assert!(!valid_plugin_name(bad), "{bad}");
        }
    }
}
