//! Tells a refusal from an outage before a Kafka client starts. librdkafka retries a broker
//! that refuses the credentials or fails the TLS handshake exactly as one that is down, and its
//! requests then only time out; the reason is in an error event nobody waits for. A connector
//! that opens with a wrong password or an untrusted CA would retry forever. So each connector
//! first asks the brokers for metadata with a probe client that listens to those events: a
//! refusal stops it with the brokers' reason, anything else (an outage included) is left to
//! the connector's own retries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

/// How long the probe waits for the brokers before it leaves the question to the connector.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one metadata request of the probe waits, between looks at its error events.
const PROBE_STEP: Duration = Duration::from_millis(250);

/// Prefixes of the librdkafka properties that decide whether a connection is made and accepted;
/// the probe takes only those from a connector's `properties`, so a consumer's or a producer's
/// own settings do not make librdkafka warn that the probe ignores them.
const CONNECTION_PREFIXES: &[&str] = &[
    "security.",
    "ssl",
    "sasl.",
    "enable.ssl.",
    "enable.sasl.",
    "socket.",
    "broker.",
    "client.",
    "api.version.",
    "resolve_canonical_bootstrap_servers_only",
];

/// The probe's settings: the brokers and the connection's properties among `properties`.
pub fn probe_config(
    brokers: &str,
    properties: &BTreeMap<String, crate::secret::Secret>,
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    for (key, value) in properties {
        if CONNECTION_PREFIXES
            .iter()
            .any(|prefix| key.starts_with(prefix))
        {
            client.set(key, value.expose());
        }
    }
    client
}

/// The brokers refused this client: retrying with the same settings cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// SASL authentication failed.
    #[error(
        "the brokers refused the credentials: {reason}; check sasl.mechanism, sasl.username and sasl.password in `properties`"
    )]
    Credentials {
        /// librdkafka's account, naming the broker and the mechanism.
        reason: String,
    },
    /// The TLS handshake failed over a certificate.
    #[error(
        "the TLS handshake with the brokers failed: {reason}; check ssl.ca.location (the CA that signed the brokers' certificates; the certificate must name the address in `brokers`) and, for client certificates, ssl.certificate.location and ssl.key.location in `properties`"
    )]
    Tls {
        /// librdkafka's and OpenSSL's account, naming the broker and the check that failed.
        reason: String,
    },
}

/// Whether a client-level error is a refusal (and which), or something retrying may cure. A
/// TLS failure counts only when it is about a certificate: librdkafka reports a connection
/// dropped during the handshake (a broker restarting) with the same code.
pub fn refusal(code: RDKafkaErrorCode, reason: &str) -> Option<Refusal> {
    let reason = reason.trim().to_owned();
    match code {
        RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::UnsupportedSASLMechanism => Some(Refusal::Credentials { reason }),
        RDKafkaErrorCode::SSL if reason.to_ascii_lowercase().contains("certificate") => {
            Some(Refusal::Tls { reason })
        }
        _ => None,
    }
}

/// Asks the brokers of `client` for metadata for up to `timeout`, with the client's security
/// settings; `Err` only when they refused it. An outage, an unknown host or a slow broker is
/// `Ok`: the connector meets it again and retries. A setting librdkafka rejects is `Err` too,
/// as it would be for the connector's own client.
pub fn check_access(client: &ClientConfig, timeout: Duration) -> Result<(), AccessError> {
    let probe: BaseProducer<Probe> = client
        .create_with_context(Probe::default())
        .map_err(AccessError::Client)?;
    let deadline = Instant::now() + timeout;
    let bootstrap = client
        .get("bootstrap.servers")
        .unwrap_or_default()
        .split(',')
        .map(broker_address)
        .filter(|broker| !broker.is_empty())
        .collect();
    wait_for_verdict(deadline, &bootstrap, || {
        let answered = probe.client().fetch_metadata(None, PROBE_STEP).is_ok();
        // Serves the error events raised meanwhile to `Probe::error`.
        probe.poll(Duration::ZERO);
        (answered, probe.context().take())
    })
    .map_err(AccessError::Refused)
}

/// `host:port` of a broker as `bootstrap.servers` or librdkafka's broker names spell it
/// (`sasl_ssl://host:port/bootstrap`), lower-case.
fn broker_address(name: &str) -> String {
    let name = name.trim();
    let name = name.split_once("://").map_or(name, |(_, rest)| rest);
    let name = name.split_once('/').map_or(name, |(address, _)| address);
    name.to_ascii_lowercase()
}

/// Takes `step`s (a metadata request of [`PROBE_STEP`], then what the error events said) until
/// one is conclusive: a refusal is `Err`; an answer, every broker of `bootstrap` unreachable
/// at least once (or librdkafka saying all are down), or `deadline` is `Ok`. A broker that
/// cannot be reached is not conclusive while another may still be tried: that one may refuse
/// the client.
fn wait_for_verdict(
    deadline: Instant,
    bootstrap: &BTreeSet<String>,
    mut step: impl FnMut() -> (bool, Seen),
) -> Result<(), Refusal> {
    let mut unreachable = BTreeSet::new();
    loop {
        let (answered, seen) = step();
        if let Some(refusal) = seen.refusal {
            return Err(refusal);
        }
        unreachable.extend(seen.unreachable);
        let all_tried = !bootstrap.is_empty() && bootstrap.is_subset(&unreachable);
        if answered || seen.all_down || all_tried || Instant::now() >= deadline {
            return Ok(());
        }
    }
}

/// Why [`check_access`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The brokers refused the client.
    #[error(transparent)]
    Refused(Refusal),
    /// librdkafka rejected the settings.
    #[error("cannot create a Kafka client: {0}")]
    Client(KafkaError),
}

/// What the probe's error events said since it was last asked.
#[derive(Debug, Default)]
struct Seen {
    /// The first refusal.
    refusal: Option<Refusal>,
    /// The brokers (`host:port`) that could not be reached: down, a name that does not
    /// resolve, a handshake cut short. Once every bootstrap broker is among them, retrying is
    /// the connector's business and the probe stops waiting; one broker down among several is
    /// not enough, another may refuse the client.
    unreachable: BTreeSet<String>,
    /// Whether librdkafka said every broker is down.
    all_down: bool,
}

/// The probe's context: keeps what its error events said.
#[derive(Default)]
struct Probe {
    seen: Mutex<Seen>,
}

impl Probe {
    fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ClientContext for Probe {
    fn error(&self, error: KafkaError, reason: &str) {
        let Some(code) = error.rdkafka_error_code() else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match refusal(code, reason) {
            Some(refused) => {
                seen.refusal.get_or_insert(refused);
            }
            None if code == RDKafkaErrorCode::AllBrokersDown => seen.all_down = true,
            // librdkafka's account starts with the broker's name.
            None => {
                if let Some((broker, _)) = reason.split_once(": ") {
                    seen.unreachable.insert(broker_address(broker));
                }
            }
        }
    }
}

impl ProducerContext for Probe {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_failures_are_refusals_of_the_credentials() {
        for code in [
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::UnsupportedSASLMechanism,
        ] {
            let refused = refusal(code, "SASL authentication error: invalid credentials ").unwrap();
            assert_eq!(
                refused,
                Refusal::Credentials {
                    reason: "SASL authentication error: invalid credentials".into()
                }
            );
            assert!(refused.to_string().contains("sasl.password"));
        }
    }

    #[test]
    fn only_certificate_failures_of_tls_are_refusals() {
        let verify = "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed";
        let refused = refusal(RDKafkaErrorCode::SSL, verify).unwrap();
        assert!(matches!(refused, Refusal::Tls { .. }));
        assert!(refused.to_string().contains("ssl.ca.location"));
        // A broker going away mid-handshake is an outage, retried like any other.
        assert_eq!(
            refusal(RDKafkaErrorCode::SSL, "SSL handshake failed: Disconnected"),
            None
        );
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::OperationTimedOut,
        ] {
            assert_eq!(refusal(code, "certificate"), None, "{code:?}");
        }
    }

    #[test]
    fn the_probe_takes_only_the_connection_settings() {
        let properties: BTreeMap<String, crate::secret::Secret> = [
            ("security.protocol", "SASL_SSL"),
            ("ssl.ca.location", "/ca.pem"),
            ("sasl.password", "secret"),
            ("fetch.wait.max.ms", "100"),
            ("linger.ms", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
        let client = probe_config("a:9092", &properties);
        for key in [
            "bootstrap.servers",
            "security.protocol",
            "ssl.ca.location",
            "sasl.password",
        ] {
            assert!(client.get(key).is_some(), "{key}");
        }
        assert_eq!(client.get("fetch.wait.max.ms"), None);
        assert_eq!(client.get("linger.ms"), None);
    }

    #[test]
    fn an_unreachable_broker_is_left_to_the_connector() {
        // Nothing listens on port 1 of loopback: every broker is down at once.
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", "127.0.0.1:1");
        assert!(check_access(&client, PROBE_TIMEOUT).is_ok());
    }

    #[test]
    fn one_broker_down_does_not_end_the_probe_before_another_refuses() {
        // Bootstrap "a,b": a is down and its error comes in one step, then b refuses the
        // password in the next.
        let probe = Probe::default();
        probe.error(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "a:9094/bootstrap: Connect to ipv4#127.0.0.1:9094 failed: Connection refused",
        );
        let a_down = probe.take();
        probe.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "b:9094/bootstrap: SASL authentication error: Authentication failed",
        );
        let b_refuses = probe.take();
        let mut steps = vec![(false, a_down), (false, b_refuses)].into_iter();
        let far = Instant::now() + Duration::from_secs(3600);
        let bootstrap = ["a:9094", "b:9094"].map(str::to_owned).into();
        let verdict = wait_for_verdict(far, &bootstrap, || steps.next().unwrap());
        assert!(
            matches!(verdict, Err(Refusal::Credentials { .. })),
            "{verdict:?}"
        );
    }

    #[test]
    fn every_broker_unreachable_or_an_answer_ends_the_probe() {
        let bootstrap = ["a:9094", "b:9094"].map(str::to_owned).into();
        let far = Instant::now() + Duration::from_secs(3600);
        let probe = Probe::default();
        let down = |broker: &str| {
            probe.error(
                KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
                &format!("sasl_ssl://{broker}/bootstrap: Connect failed: Connection refused"),
            );
            probe.take()
        };
        let mut steps = vec![(false, down("a:9094")), (false, down("B:9094"))].into_iter();
        assert!(wait_for_verdict(far, &bootstrap, || steps.next().unwrap()).is_ok());
        assert!(steps.next().is_none(), "both steps taken");
        let probe = Probe::default();
        probe.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "2/2 brokers are down",
        );
        let mut steps = vec![(false, probe.take())].into_iter();
        assert!(wait_for_verdict(far, &bootstrap, || steps.next().unwrap()).is_ok());
        let mut steps = vec![(true, Seen::default())].into_iter();
        assert!(wait_for_verdict(far, &bootstrap, || steps.next().unwrap()).is_ok());
    }

    #[test]
    fn a_setting_librdkafka_rejects_is_an_error() {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("security.protocol", "carrier-pigeon");
        let error = check_access(&client, PROBE_TIMEOUT).unwrap_err();
        assert!(matches!(error, AccessError::Client(_)), "{error}");
    }
}
