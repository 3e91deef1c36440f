//! The fleet topic: every `weir run` following a registry writes, every few seconds, which
//! pipelines it runs and which version of each plugin, keyed by its identity in a compacted
//! topic, so `weir plugin list --registry` can say which process runs which version. A process
//! that stops cleanly writes a tombstone; one that dies leaves a heartbeat that grows stale.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::follow::{Polled, TopicReader};
use super::publish::unix_millis;
use super::{KafkaRegistryError, RegistryAddress};
use crate::connectors::kafka::batch_producer::{self, BatchProducer, Outgoing};
use crate::registry::PluginSlots;

/// How often a process writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

/// A heartbeat older than this is shown as stale: the process died or lost the brokers.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The largest heartbeat read back; anything larger is not one Weir wrote.
const MAX_HEARTBEAT_BYTES: usize = 1024 * 1024;

/// One process's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The process's identity: `HOST/PID`.
    pub process: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The pipelines it runs.
    pub pipelines: Vec<String>,
    /// Plugin name to the 12-digit version it runs.
    pub plugins: BTreeMap<String, String>,
    /// Plugin name to the 12-digit version of the candidate it runs beside it (a shadow or a
    /// canary), for the plugins that have one.
    #[serde(default)]
    pub candidates: BTreeMap<String, String>,
    /// When it was written, milliseconds since the Unix epoch.
    pub at: u64,
}

/// This machine's name (a pod keeps its name across restarts), or `unknown-host`.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// This process's identity in the fleet topic.
pub fn process_identity() -> String {
    format!("{}/{}", host_name(), std::process::id())
}

/// Stops the heartbeat; [`HeartbeatHandle::finish`] also removes the process from the topic.
pub struct HeartbeatHandle {
    task: tokio::task::JoinHandle<()>,
    producer: BatchProducer,
    topic: String,
    process: String,
}

impl std::fmt::Debug for HeartbeatHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatHandle")
            .field("topic", &self.topic)
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl HeartbeatHandle {
    /// Stops beating and writes a tombstone, so `weir plugin list` forgets this process.
    pub async fn finish(self) {
        self.task.abort();
        let tombstone = Outgoing {
            topic: &self.topic,
            payload: None,
            partition: None,
            key: Some(self.process.as_bytes()),
            headers: None,
            timestamp: None,
        };
        let wait = Duration::from_secs(5);
        match tokio::time::timeout(wait, batch_producer::send(&self.producer, tombstone)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, topic = self.topic, "Cannot remove this process from the fleet topic; it shows as stale.");
            }
            Err(_) => {
                tracing::warn!(
                    topic = self.topic,
                    ?wait,
                    "The fleet topic did not acknowledge this process's removal in time; it shows as stale."
                );
            }
        }
    }
}

impl Drop for HeartbeatHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts writing this process's heartbeat to `address`'s fleet topic (created compacted when
/// missing) every [`HEARTBEAT_EVERY`]. Must be called inside a tokio runtime.
pub async fn start_heartbeat(
    address: &RegistryAddress,
    pipelines: Vec<String>,
    slots: PluginSlots,
) -> Result<HeartbeatHandle, KafkaRegistryError> {
    let topic = address.fleet_topic();
    super::publish::ensure_compacted(address, &[&topic]).await?;
    let mut client = address.client_config();
    client.set("linger.ms", "0");
    let producer = batch_producer::create(&format!("registry {address} heartbeat"), &client)
        .map_err(|e| KafkaRegistryError::kafka(address, "creating a producer", e))?;
    let process = process_identity();
    let task = {
        let (producer, topic, process) = (Arc::clone(&producer), topic.clone(), process.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                ticker.tick().await;
                let described = slots.describe();
                let heartbeat = Heartbeat {
                    process: process.clone(),
                    host: host_name(),
                    pid: std::process::id(),
                    pipelines: pipelines.clone(),
                    candidates: described
                        .iter()
                        .filter_map(|slot| {
                            Some((slot.name.clone(), slot.staged.as_ref()?.version.clone()))
                        })
                        .collect(),
                    plugins: described
                        .into_iter()
                        .map(|slot| (slot.name, slot.current.version))
                        .collect(),
                    at: unix_millis(),
                };
                let Ok(payload) = serde_json::to_vec(&heartbeat) else {
                    continue;
                };
                let beat = Outgoing {
                    topic: &topic,
                    payload: Some(&payload),
                    partition: None,
                    key: Some(process.as_bytes()),
                    headers: None,
                    timestamp: None,
                };
                if let Err(error) = batch_producer::send(&producer, beat).await {
                    tracing::warn!(%error, topic, "Cannot write this process's heartbeat.");
                }
            }
        })
    };
    Ok(HeartbeatHandle {
        task,
        producer,
        topic,
        process,
    })
}

/// The latest heartbeat of every process in `address`'s fleet topic (none when it does not
/// exist yet). Blocking: call from a thread that may block.
pub fn read_heartbeats(address: &RegistryAddress) -> Result<Vec<Heartbeat>, KafkaRegistryError> {
    let reader = match TopicReader::open(address, &address.fleet_topic()) {
        Ok(reader) => reader,
        Err(KafkaRegistryError::Missing { .. }) => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut latest: BTreeMap<Vec<u8>, Option<Heartbeat>> = BTreeMap::new();
    reader.read_to_end(|polled| {
        if let Polled::Record { key, payload, .. } = polled {
            let Some(key) = key else { return };
            let heartbeat = payload
                .filter(|p| p.len() <= MAX_HEARTBEAT_BYTES)
                .and_then(|p| serde_json::from_slice::<Heartbeat>(&p).ok());
            latest.insert(key, heartbeat);
        }
    })?;
    Ok(latest.into_values().flatten().collect())
}
