//! Reading the registry topic: every process reads all of it from the beginning (partitions
//! assigned, never a consumer group that would share them, nothing committed), deploys the head
//! of each plugin it runs and stages its candidate when a rollout is under way, then follows the
//! topic on a thread of its own: every new head is deployed with the folder watcher's checks
//! (hash, contract, type-check, `init` per pipeline, swap between batches, the same log line
//! when a version is rejected), every staged candidate is staged with the same checks, and a
//! promotion or an abort moves this process with the rest of the fleet.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;

use super::catalog::{Catalog, Change, Head, HeadAction, Incoming, RolloutAction, RolloutRecord};
use super::{KAFKA_TIMEOUT, KafkaRegistryError, RegistryAddress};
use crate::connectors::kafka::rebootstrap::{BrokerWatch, STATISTICS_INTERVAL_MS};
use crate::registry::{Deployer, Deployment, RegistryError};

/// A reader of one topic of the registry, from its beginning.
pub(crate) struct TopicReader {
    address: RegistryAddress,
    topic: String,
    consumer: BaseConsumer<Quiet>,
}

/// The client's callbacks: the end of a partition is how a reader knows it caught up, not an
/// error worth a log line (librdkafka's default context logs it as one). A reader follows the
/// registry for the life of the process, so it too gets its bootstrap servers back if it drops
/// every broker.
struct Quiet {
    brokers: BrokerWatch,
}

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            tracing::warn!(%error, reason, "Registry client error.");
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.brokers.observe(statistics);
    }
}

impl ConsumerContext for Quiet {}

/// What one poll found.
pub(crate) enum Polled {
    /// A record: partition, offset, headers, key, value (`None` for a tombstone).
    Record {
        partition: i32,
        offset: i64,
        headers: BTreeMap<String, Vec<u8>>,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
    },
    /// The end of a partition, for now.
    End(i32),
    /// Nothing within the timeout.
    Nothing,
}

impl TopicReader {
    /// Assigns every partition of `topic` from its beginning. The group id only satisfies the
    /// client: nothing subscribes and nothing is committed, so every reader reads everything.
    pub(crate) fn open(address: &RegistryAddress, topic: &str) -> Result<Self, KafkaRegistryError> {
        let consumer: BaseConsumer<Quiet> = address
            .client_config()
            .set("group.id", "weir-registry-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
            .create_with_context(Quiet {
                brokers: BrokerWatch::new(&format!("registry {address} reader"), &address.brokers),
            })
            .map_err(|e| KafkaRegistryError::kafka(address, "creating a consumer", e))?;
        consumer.context().brokers.attach(consumer.client());
        let metadata = consumer
            .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
            .map_err(|e| KafkaRegistryError::kafka(address, format!("reading topic {topic}"), e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(KafkaRegistryError::Missing {
                registry: address.to_string(),
                reason: format!(
                    "topic {topic} does not exist; publish a plugin with `weir plugin publish NAME.wasm --registry {address}` first"
                ),
            });
        }
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(|e| KafkaRegistryError::kafka(address, "assigning partitions", e))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| KafkaRegistryError::kafka(address, "assigning partitions", e))?;
        Ok(TopicReader {
            address: address.clone(),
            topic: topic.to_owned(),
            consumer,
        })
    }

    /// The partitions read.
    pub(crate) fn partitions(&self) -> BTreeSet<i32> {
        self.consumer
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for the next record or partition end.
    pub(crate) fn poll(&self, timeout: Duration) -> Result<Polled, KafkaRegistryError> {
        match self.consumer.poll(timeout) {
            None => Ok(Polled::Nothing),
            Some(Err(KafkaError::PartitionEOF(partition))) => Ok(Polled::End(partition)),
            Some(Err(error)) => Err(KafkaRegistryError::kafka(
                &self.address,
                format!("reading topic {}", self.topic),
                error,
            )),
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Polled::Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    headers,
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                })
            }
        }
    }

    /// Reads every record up to the end of every partition, handing each to `take`. Gives up
    /// when nothing arrives for [`KAFKA_TIMEOUT`].
    pub(crate) fn read_to_end(
        &self,
        mut take: impl FnMut(Polled),
    ) -> Result<(), KafkaRegistryError> {
        let mut open = self.partitions();
        let mut last_progress = Instant::now();
        while !open.is_empty() {
            match self.poll(Duration::from_millis(200)) {
                Ok(Polled::Nothing) => {
                    if last_progress.elapsed() > KAFKA_TIMEOUT {
                        return Err(KafkaRegistryError::kafka(
                            &self.address,
                            format!("reading topic {} to its end", self.topic),
                            KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
                        ));
                    }
                }
                Ok(Polled::End(partition)) => {
                    open.remove(&partition);
                    last_progress = Instant::now();
                }
                Ok(record) => {
                    take(record);
                    last_progress = Instant::now();
                }
                Err(error) if is_transient(&error) => {
                    tracing::debug!(%error, "Registry read error; retrying.");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Whether the client recovers from `error` by itself (a broker went away for a moment).
fn is_transient(error: &KafkaRegistryError) -> bool {
    let KafkaRegistryError::Kafka { source, .. } = error else {
        return false;
    };
    matches!(
        source.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
        )
    )
}

/// Applies a polled record to `catalog`, logging a record it cannot use instead of failing:
/// a damaged record is skipped, the rest of the registry still works.
fn apply(catalog: &mut Catalog, polled: Polled) -> Option<Change> {
    let Polled::Record {
        partition,
        offset,
        headers,
        payload,
        ..
    } = polled
    else {
        return None;
    };
    let incoming = Incoming {
        partition,
        offset,
        headers: &headers,
        payload: payload.as_deref(),
    };
    match catalog.apply(incoming) {
        Ok(head) => head,
        Err(error) => {
            tracing::warn!(%error, "Registry record skipped.");
            None
        }
    }
}

/// Reads the whole registry at `address`, keeping the components of the plugins in `keep`
/// (all when `None`). Returns the catalog and the reader, positioned at the end, to follow with.
pub fn read_catalog(
    address: &RegistryAddress,
    keep: Option<BTreeSet<String>>,
) -> Result<(Catalog, RegistryFollower), KafkaRegistryError> {
    let reader = TopicReader::open(address, &address.topic)?;
    let mut catalog = Catalog::new(&address.to_string(), keep);
    reader.read_to_end(|polled| {
        apply(&mut catalog, polled);
    })?;
    Ok((catalog, RegistryFollower { reader }))
}

/// Reads the registry at `address` and deploys the head of every plugin `deployer` runs, as
/// `weir run --registry` starts: a plugin without a head, or whose head is rejected, stops the
/// start. A candidate under rollout is staged beside its head; one that is rejected is logged
/// and the head runs every record. Blocking (reads Kafka, compiles): call from a blocking thread.
pub fn deploy_from_registry(
    deployer: &Deployer,
    address: &RegistryAddress,
) -> Result<(Catalog, RegistryFollower), KafkaRegistryError> {
    let used: BTreeSet<String> = deployer.used_plugins().map(str::to_owned).collect();
    // Only what this process runs: records of other plugins are not even described.
    let reader = TopicReader::open(address, &address.topic)?;
    let mut catalog = Catalog::new(&address.to_string(), Some(used.clone())).only_kept();
    reader.read_to_end(|polled| {
        apply(&mut catalog, polled);
    })?;
    let follower = RegistryFollower { reader };
    for name in &used {
        let Some(head) = catalog.heads().get(name) else {
            return Err(KafkaRegistryError::Missing {
                registry: address.to_string(),
                reason: format!(
                    "plugin `{name}` was never published; publish it with `weir plugin publish {name}.wasm --registry {address}`"
                ),
            });
        };
        deploy_head(deployer, &catalog, address, head).map_err(|source| {
            KafkaRegistryError::Deploy {
                name: name.clone(),
                version: head.version.clone(),
                source: Box::new(source),
            }
        })?;
        if let Some((record, _)) = catalog.staged(name) {
            let _ = apply_rollout(deployer, &catalog, address, record);
        }
    }
    Ok((catalog, follower))
}

/// A reader at the registry's end, ready to follow it.
pub struct RegistryFollower {
    reader: TopicReader,
}

/// Stops the follower's thread when dropped.
#[derive(Debug)]
pub struct FollowHandle {
    stop: Arc<AtomicBool>,
}

impl Drop for FollowHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Deploys `head` of the registry at `address` from `catalog` into `deployer`'s slots; logs the
/// folder watcher's lines (activated, or rejected with the running version kept).
pub fn deploy_head(
    deployer: &Deployer,
    catalog: &Catalog,
    address: &RegistryAddress,
    head: &Head,
) -> Result<Deployment, RegistryError> {
    let file = format!("{address}#{}@{}", head.name, head.version);
    if head.action == HeadAction::Promote
        && staged_sha256(deployer, &head.name).as_deref() == Some(head.sha256.as_str())
    {
        // The candidate this process staged becomes its live version.
        let previous = deployer
            .slots()
            .get(&head.name)
            .map(|slot| slot.current().1.plugin.version().to_owned());
        // In the slots only: with --registry the plugin folder is neither read nor written, so
        // a `NAME.candidate.wasm` there is not moved over `NAME.wasm` as a folder promotion does.
        let version = deployer.slots().promote(&head.name)?;
        tracing::info!(plugin = %head.name, version = %head.version, publisher = %head.publisher, "Plugin candidate promoted by the registry.");
        return Ok(Deployment::Activated { version, previous });
    }
    let deployed = catalog
        .component(&head.name, &head.sha256)
        .map_err(|e| RegistryError::Read {
            path: file.clone(),
            source: std::io::Error::other(e.to_string()),
        })
        .and_then(|(bytes, manifest)| match head.action {
            HeadAction::Rollback => deployer.roll_back_bytes(
                &head.name,
                &bytes,
                manifest,
                &format!("requested in the fleet's registry by {}", head.publisher),
            ),
            HeadAction::Publish | HeadAction::Promote => {
                deployer.deploy_bytes(&head.name, &bytes, manifest)
            }
        });
    match &deployed {
        Ok(Deployment::Activated { .. }) => {
            if head.action == HeadAction::Rollback {
                tracing::warn!(plugin = %head.name, version = %head.version, publisher = %head.publisher, "Plugin rolled back by the registry.");
            }
        }
        Ok(Deployment::Unchanged) => {
            tracing::debug!(%file, "Plugin version unchanged.");
        }
        // A head activates; candidates are staged by `apply_rollout`.
        Ok(Deployment::Staged { .. }) => {}
        Err(error) => {
            if matches!(error, RegistryError::Read { .. }) {
                deployer
                    .slots()
                    .note_rejection(&head.name, &error.to_string());
            }
            tracing::error!(%file, reason = %error, "Plugin rejected; the running version keeps running.");
        }
    }
    deployed
}

/// The sha256 of the candidate staged for `name` in this process, if any.
fn staged_sha256(deployer: &Deployer, name: &str) -> Option<String> {
    let (version, _) = deployer.slots().get(name)?.staged()?;
    Some(version.plugin.sha256().to_owned())
}

/// Applies a rollout record of the registry at `address` to `deployer`'s slots: stages the
/// candidate it names (with the checks of a deploy), or drops the candidate it aborts. A
/// promotion needs nothing here: the head written before it promoted the candidate.
pub fn apply_rollout(
    deployer: &Deployer,
    catalog: &Catalog,
    address: &RegistryAddress,
    record: &RolloutRecord,
) -> Result<(), RegistryError> {
    let file = format!("{address}#{}@{}", record.name, record.version);
    match &record.action {
        RolloutAction::Stage { rollout } => {
            let staged = catalog
                .component(&record.name, &record.sha256)
                .map_err(|e| RegistryError::Read {
                    path: file.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
                .and_then(|(bytes, manifest)| {
                    deployer.stage_bytes(&record.name, &bytes, Arc::new(manifest), rollout.clone())
                });
            if let Err(error) = &staged {
                tracing::error!(%file, reason = %error, "Plugin candidate rejected; the live version keeps every record.");
            }
            staged.map(|_| ())
        }
        RolloutAction::Abort { reason } => {
            if staged_sha256(deployer, &record.name).as_deref() == Some(record.sha256.as_str()) {
                deployer.abort(
                    &record.name,
                    &format!("aborted in the registry by {}: {reason}", record.publisher),
                )?;
            }
            Ok(())
        }
        RolloutAction::Promote => Ok(()),
    }
}

/// How often the follower looks for candidates this process aborted by the automatic rule.
const ABORT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Carries this process's automatic aborts of registry-staged candidates to the registry, so
/// that the whole fleet drops a canary that failed here (and a process that starts later does
/// not stage it again).
struct FleetAborts {
    address: RegistryAddress,
    runtime: Option<tokio::runtime::Handle>,
    publisher: Option<super::Publisher>,
    /// Candidates (sha256) already reported.
    reported: BTreeSet<String>,
    last_check: Instant,
}

impl FleetAborts {
    fn new(address: &RegistryAddress) -> Self {
        FleetAborts {
            address: address.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            publisher: None,
            reported: BTreeSet::new(),
            last_check: Instant::now(),
        }
    }

    /// For each plugin whose registry candidate is no longer staged here because the automatic
    /// rule aborted it, publishes an abort record naming this process and the rule's reason.
    fn report(&mut self, deployer: &Deployer, catalog: &Catalog, used: &BTreeSet<String>) {
        if self.last_check.elapsed() < ABORT_CHECK_EVERY {
            return;
        }
        self.last_check = Instant::now();
        for info in deployer.slots().describe() {
            if !used.contains(&info.name) {
                continue;
            }
            let Some((record, _)) = catalog.staged(&info.name) else {
                continue;
            };
            let still_staged = info
                .staged
                .as_ref()
                .is_some_and(|staged| staged.version == record.version);
            let automatic = format!("aborted {}: automatic", record.version);
            let Some(reason) = info
                .last_abort
                .as_deref()
                .filter(|abort| !still_staged && abort.starts_with(&automatic))
            else {
                continue;
            };
            if !self.reported.insert(record.sha256.clone()) {
                continue;
            }
            let reason = format!(
                "{} on {}",
                reason.trim_start_matches(&format!("aborted {}: ", record.version)),
                super::process_identity()
            );
            if let Err(error) = self.publish(catalog, record, &reason) {
                tracing::warn!(plugin = %info.name, candidate = %record.version, %error, "Cannot tell the registry that the canary was aborted; the other processes judge it on their own records.");
            } else {
                tracing::info!(plugin = %info.name, candidate = %record.version, "Automatic abort published to the registry for the whole fleet.");
            }
        }
    }

    fn publish(
        &mut self,
        catalog: &Catalog,
        record: &RolloutRecord,
        reason: &str,
    ) -> Result<(), KafkaRegistryError> {
        let version = catalog
            .published(&record.name, &record.sha256)
            .ok_or_else(|| KafkaRegistryError::Missing {
                registry: self.address.to_string(),
                reason: format!(
                    "plugin `{}` version {} has no version record",
                    record.name, record.version
                ),
            })?;
        let runtime = self.runtime.clone().ok_or_else(|| {
            KafkaRegistryError::Refused("the follower was started outside an async runtime".into())
        })?;
        if self.publisher.is_none() {
            self.publisher = Some(super::Publisher::new(&self.address)?);
        }
        let publisher = self.publisher.as_ref().expect("created above");
        runtime.block_on(publisher.abort(version, reason))
    }
}

/// Follows the registry on a thread of its own: every head that arrives for a plugin
/// `deployer` runs is deployed, every rollout applied, and a registry candidate this process
/// aborts by the automatic rule is aborted in the registry too. Stops when the handle is
/// dropped.
pub fn follow(
    deployer: Deployer,
    mut catalog: Catalog,
    follower: RegistryFollower,
    address: RegistryAddress,
) -> FollowHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let used: BTreeSet<String> = deployer.used_plugins().map(str::to_owned).collect();
    let mut fleet_aborts = FleetAborts::new(&address);
    let spawned = std::thread::Builder::new()
        .name("weir-registry".into())
        .spawn(move || {
            tracing::info!(registry = %address, "Following the plugin registry.");
            while !stopped.load(Ordering::SeqCst) {
                match follower.reader.poll(Duration::from_millis(200)) {
                    Ok(polled) => match apply(&mut catalog, polled) {
                        Some(Change::Head(head)) if used.contains(&head.name) => {
                            let _ = deploy_head(&deployer, &catalog, &address, &head);
                        }
                        Some(Change::Rollout(record)) if used.contains(&record.name) => {
                            let _ = apply_rollout(&deployer, &catalog, &address, &record);
                        }
                        _ => fleet_aborts.report(&deployer, &catalog, &used),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "Cannot read the plugin registry; retrying.");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "Cannot start the registry follower; new versions will not deploy.");
    }
    FollowHandle { stop }
}
