//! Puts a librdkafka client back in touch with its cluster after it has dropped every broker.
//!
//! librdkafka 2.12 removes each broker that a Metadata response leaves out, and a KRaft broker
//! answers for a few milliseconds of its controlled shutdown with a broker list that is empty
//! (the topics still listed). A client whose metadata request lands in that moment, which happens
//! about one restart in four when it refreshes often, keeps no broker at all, not even a
//! bootstrap one, and with its re-bootstrap timer stopped it never connects again: the source
//! stops reading and the sink stops delivering for good, though the broker is back seconds later
//! (librdkafka issue 5301). Each statistics report lists the brokers the client knows; when it
//! knows none, [`BrokerWatch`] adds the bootstrap servers back, as librdkafka's own
//! re-bootstrap would.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::client::{Client, ClientContext};
use rdkafka::types::RDKafka;
use serde::Deserialize;

/// How often a client that reports nothing else (a producer) emits the statistics the watch
/// reads, in milliseconds: how long a client may sit without a broker before it gets one back.
pub const STATISTICS_INTERVAL_MS: &str = "2000";

/// Watches one client's broker list and restores its bootstrap servers when the list is empty.
pub struct BrokerWatch {
    /// What the client serves (a connector's name, the registry), for the log.
    client_name: String,
    /// The `bootstrap.servers` the client was created with.
    bootstrap: CString,
    /// The client, set once it exists.
    client: OnceLock<ClientHandle>,
    /// How many times the bootstrap servers were added back.
    restored: AtomicU64,
    /// How many statistics reports the watch has read.
    reports: AtomicU64,
}

/// The client's handle, for librdkafka calls made from its own callbacks.
struct ClientHandle(*mut RDKafka);

// SAFETY: librdkafka's client handle may be used from any thread, and it is only used from the
// client's statistics callback, which runs while the client is polled, so while it is alive.
unsafe impl Send for ClientHandle {}
// SAFETY: as above; librdkafka serialises what it changes behind its own locks.
unsafe impl Sync for ClientHandle {}

impl BrokerWatch {
    /// A watch for the client of `client_name`, created with `bootstrap_servers`.
    pub fn new(client_name: &str, bootstrap_servers: &str) -> Self {
        BrokerWatch {
            client_name: client_name.to_owned(),
            // A server list with a NUL byte would not have made a client in the first place.
            bootstrap: CString::new(bootstrap_servers.replace('\0', "")).unwrap_or_default(),
            client: OnceLock::new(),
            restored: AtomicU64::new(0),
            reports: AtomicU64::new(0),
        }
    }

    /// Binds the watch to the client whose context holds it; call once, right after creation.
    pub fn attach<C: ClientContext>(&self, client: &Client<C>) {
        let _ = self.client.set(ClientHandle(client.native_ptr()));
    }

    /// How many times the client was found without a broker and given its bootstrap servers back.
    pub fn restored(&self) -> u64 {
        self.restored.load(Ordering::Relaxed)
    }

    /// How many statistics reports of the client the watch has read: none means the client is
    /// not watched (its context does not pass them on, or it reports no statistics).
    pub fn reports(&self) -> u64 {
        self.reports.load(Ordering::Relaxed)
    }

    /// Reads one statistics report (librdkafka's JSON) of the client; call from the context's
    /// `stats_raw`, which librdkafka invokes only while the client is being polled.
    pub fn observe(&self, statistics: &[u8]) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        if known_brokers(statistics) != Some(0) {
            return;
        }
        let Some(client) = self.client.get() else {
            return;
        };
        // SAFETY: the handle is the live client's (see `ClientHandle`), and `bootstrap` is a
        // NUL-terminated string that librdkafka copies.
        let added =
            unsafe { rdkafka::bindings::rd_kafka_brokers_add(client.0, self.bootstrap.as_ptr()) };
        self.restored.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            client = %self.client_name,
            bootstrap = ?self.bootstrap,
            added,
            "The Kafka client had dropped every broker (a broker answered metadata with none while it shut down); added its bootstrap servers back so that it reconnects."
        );
    }
}

/// The parts of librdkafka's statistics JSON that say which brokers a client knows.
#[derive(Debug, Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: BTreeMap<String, BrokerStatistics>,
}

/// One entry of the statistics' broker list.
#[derive(Debug, Deserialize)]
struct BrokerStatistics {
    /// `learned` (from metadata), `configured` (a bootstrap server), `internal` or `logical`
    /// (librdkafka's own stand-ins, which never connect to anything).
    #[serde(default)]
    source: String,
}

/// How many real brokers (learned from metadata or bootstrap servers) a statistics report
/// lists; `None` when the report cannot be read.
fn known_brokers(statistics: &[u8]) -> Option<usize> {
    let statistics: Statistics = serde_json::from_slice(statistics).ok()?;
    Some(
        statistics
            .brokers
            .values()
            .filter(|broker| matches!(broker.source.as_str(), "learned" | "configured"))
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statistics report as librdkafka 2.12 emits it, cut down to the fields around `brokers`.
    fn report(brokers: &[(&str, &str)]) -> Vec<u8> {
        let entries: Vec<String> = brokers
            .iter()
            .map(|(name, source)| {
                format!(
                    r#""{name}": {{"name": "{name}", "nodeid": 1, "source": "{source}", "state": "UP", "rtt": {{"avg": 0}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"name": "rdkafka#producer-1", "type": "producer", "ts": 1, "brokers": {{{}}}, "topics": {{"t": {{"partitions": {{}}}}}}}}"#,
            entries.join(", ")
        )
        .into_bytes()
    }

    #[test]
    fn only_learned_and_bootstrap_brokers_count() {
        assert_eq!(
            known_brokers(&report(&[
                ("127.0.0.1:9092/1", "learned"),
                (":0/internal", "internal"),
                ("GroupCoordinator", "logical"),
            ])),
            Some(1)
        );
        assert_eq!(
            known_brokers(&report(&[("127.0.0.1:9092/bootstrap", "configured")])),
            Some(1)
        );
        assert_eq!(
            known_brokers(&report(&[
                (":0/internal", "internal"),
                ("GroupCoordinator", "logical")
            ])),
            Some(0)
        );
        assert_eq!(known_brokers(&report(&[])), Some(0));
    }

    #[test]
    fn an_unreadable_report_counts_nothing() {
        assert_eq!(known_brokers(b"{\"brokers\": 7}"), None);
        assert_eq!(known_brokers(b"not json"), None);
    }

    #[test]
    fn a_watch_without_its_client_does_nothing_when_every_broker_is_gone() {
        let watch = BrokerWatch::new("test", "127.0.0.1:9092");
        watch.observe(&report(&[]));
        assert_eq!(watch.restored(), 0);
    }

    #[test]
    fn a_report_without_brokers_gives_the_attached_client_its_bootstrap_servers_back() {
        use rdkafka::ClientConfig;
        use rdkafka::producer::{BaseProducer, Producer};

        /// A context holding the watch, as weir's own contexts do.
        struct Watched(BrokerWatch);
        impl ClientContext for Watched {}
        impl rdkafka::producer::ProducerContext for Watched {
            type DeliveryOpaque = ();
            fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
        }

        // No broker needed: librdkafka only tries to connect, to a port nothing listens on.
        let producer: BaseProducer<Watched> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("log_level", "0")
            .create_with_context(Watched(BrokerWatch::new("test", "127.0.0.1:1")))
            .expect("a producer");
        let watch = &producer.context().0;
        watch.attach(producer.client());
        // A report with a bootstrap broker changes nothing; one without any restores them.
        watch.observe(&report(&[("127.0.0.1:1/bootstrap", "configured")]));
        assert_eq!(watch.restored(), 0);
        watch.observe(&report(&[]));
        assert_eq!(watch.restored(), 1);
    }
}
