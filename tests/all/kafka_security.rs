//! Weir's Kafka clients through the test broker's SASL_SSL listener (TLS with a certificate from
//! a local CA, SCRAM-SHA-512 users; `scripts/services` runs it): a pipeline writes a
//! zstd-compressed topic and another reads it back whole, the fleet's registry is published and
//! listed with `--registry-properties`, a wrong password or an untrusted CA stops a pipeline
//! with an error that says which, and so does the broker's authorizer refusing the user a topic
//! or a group.

use std::collections::BTreeSet;
use std::path::Path;

use crate::services::{create_topic, topic_message_count};
use crate::support::{
    append_numbered, dead_letters_into_kafka, kafka_brokers, line_count, plugin_registry,
    read_json_lines, refusal, require_listening, run_pipeline, run_until, unique, weir,
};

/// The password's variable: configs name it, so it never sits in a file.
const PASSWORD: &str = "${WEIR_KAFKA_SCRAM_PASSWORD}";

/// The broker's SASL_SSL listener and its SCRAM user, from `scripts/services env`.
struct Secured {
    brokers: String,
    /// The CA that signed the broker's certificate (PEM).
    ca: String,
    /// A CA that signed nothing the broker uses (PEM).
    untrusted_ca: String,
    user: String,
}

fn secured() -> Secured {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: start the broker with `scripts/services start kafka` and run `eval \"$(scripts/services env)\"`"
            )
        })
    };
    let brokers = var("WEIR_KAFKA_TLS_BROKERS");
    require_listening(
        "Kafka's SASL_SSL listener",
        "WEIR_KAFKA_TLS_BROKERS",
        &brokers,
    );
    // Read by the configs through `${WEIR_KAFKA_SCRAM_PASSWORD}`.
    var("WEIR_KAFKA_SCRAM_PASSWORD");
    Secured {
        brokers,
        ca: var("WEIR_KAFKA_TLS_CA"),
        untrusted_ca: var("WEIR_KAFKA_UNTRUSTED_CA"),
        user: var("WEIR_KAFKA_SCRAM_USER"),
    }
}

impl Secured {
    /// A kafka connector's `properties` table: SASL_SSL with SCRAM-SHA-512, trusting `ca`.
    fn properties(&self, ca: &str, password: &str) -> String {
        format!(
            r#"{{ "security.protocol" = "SASL_SSL", "ssl.ca.location" = "{ca}", "sasl.mechanism" = "SCRAM-SHA-512", "sasl.username" = "{}", "sasl.password" = "{password}" }}"#,
            self.user
        )
    }

    /// A pipeline from `input` (a file) to `topic` over the listener.
    fn writing_topic(&self, input: &Path, topic: &str, properties: &str, dlq: &Path) -> String {
        format!(
            r#"
            [[pipeline]]
            name = "to-secured-kafka"
            source = {{ type = "file", path = "{input}" }}
            sink = {{ type = "kafka", brokers = "{brokers}", topic = "{topic}", compression = "zstd", delivery_timeout_ms = 20000, properties = {properties} }}
            dead_letter = {{ type = "file", path = "{dlq}" }}
            "#,
            input = input.display(),
            brokers = self.brokers,
            dlq = dlq.display(),
        )
    }

    /// A pipeline from `topic` over the listener to `out` (a file), in a group of its own.
    fn reading_topic(&self, topic: &str, properties: &str, out: &Path, dlq: &Path) -> String {
        self.reading_topic_in(topic, &unique("secured-group"), properties, out, dlq)
    }

    /// A pipeline from `topic` over the listener, in consumer group `group`, to `out` (a file).
    fn reading_topic_in(
        &self,
        topic: &str,
        group: &str,
        properties: &str,
        out: &Path,
        dlq: &Path,
    ) -> String {
        format!(
            r#"
            [[pipeline]]
            name = "from-secured-kafka"
            source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}", properties = {properties} }}
            sink = {{ type = "file", path = "{out}" }}
            dead_letter = {{ type = "file", path = "{dlq}" }}
            batch = {{ size = 100, linger_ms = 20 }}
            "#,
            brokers = self.brokers,
            out = out.display(),
            dlq = dlq.display(),
        )
    }

    /// A registry properties file in `dir` for the listener, with `password`.
    fn registry_properties(&self, dir: &Path, password: &str) -> std::path::PathBuf {
        let path = dir.join(format!("registry-{}.properties", unique("p")));
        std::fs::write(
            &path,
            format!(
                "# the fleet's brokers ask for TLS and SCRAM\nsecurity.protocol=SASL_SSL\n\
                 ssl.ca.location={}\nsasl.mechanism=SCRAM-SHA-512\nsasl.username={}\n\
                 sasl.password={password}\n",
                self.ca, self.user
            ),
        )
        .unwrap();
        path
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_writes_and_reads_a_zstd_topic_over_sasl_ssl() {
    let kafka = secured();
    let topic = unique("secured");
    // The topic is the broker's, whichever listener reaches it: made over plaintext, counted
    // over plaintext, written and read over SASL_SSL.
    create_topic(&kafka_brokers(), &topic, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    append_numbered(&input, 0..500);
    let properties = kafka.properties(&kafka.ca, PASSWORD);
    let dlq = dir.path().join("dlq.jsonl");

    let written = run_pipeline(&kafka.writing_topic(&input, &topic, &properties, &dlq)).await;
    assert_eq!(written.records_out, 500);
    assert_eq!(topic_message_count(&kafka_brokers(), &topic), 500);

    let out = dir.path().join("out.jsonl");
    let toml = kafka.reading_topic(&topic, &properties, &out, &dlq);
    let read = run_until(&toml, || line_count(&out) >= 500).await;
    assert_eq!(read.records_out, 500);
    let numbers: BTreeSet<u64> = read_json_lines(&out)
        .iter()
        .map(|record| record["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..500).collect::<BTreeSet<u64>>());
    assert_eq!(line_count(&dlq), 0, "nothing was dead-lettered");
}

/// How a sink writing ten records to `topic` (created here) with `properties` ends: it must
/// stop by itself, having written and dead-lettered nothing. Its error.
async fn sink_refusal(kafka: &Secured, topic: &str, properties: &str) -> String {
    create_topic(&kafka_brokers(), topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    append_numbered(&input, 0..10);
    let dlq = dir.path().join("dlq.jsonl");
    let error = refusal(&kafka.writing_topic(&input, topic, properties, &dlq)).await;
    assert_eq!(
        topic_message_count(&kafka_brokers(), topic),
        0,
        "nothing was written: {error}"
    );
    assert_eq!(
        line_count(&dlq),
        0,
        "a refusal is not a bad record: {error}"
    );
    error
}

/// How a sink and then a source with `properties` end: both must stop by themselves, and the
/// sink must have written nothing. Their errors, in that order.
async fn sink_and_source_refusals(kafka: &Secured, properties: &str) -> (String, String) {
    let topic = unique("secured-refused");
    let sink = sink_refusal(kafka, &topic, properties).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, dlq) = (dir.path().join("out.jsonl"), dir.path().join("dlq.jsonl"));
    let source = refusal(&kafka.reading_topic(&topic, properties, &out, &dlq)).await;
    (sink, source)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_stops_the_sink_and_the_source_naming_the_credentials() {
    let kafka = secured();
    let wrong = kafka.properties(&kafka.ca, "not-the-password");
    let (sink, source) = sink_and_source_refusals(&kafka, &wrong).await;
    for error in [sink, source] {
        assert!(error.contains("refused the credentials"), "{error}");
        assert!(!error.contains("not-the-password"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_broker_certificate_stops_the_sink_and_the_source_naming_tls() {
    let kafka = secured();
    let untrusting = kafka.properties(&kafka.untrusted_ca, PASSWORD);
    let (sink, source) = sink_and_source_refusals(&kafka, &untrusting).await;
    for error in [sink, source] {
        assert!(
            error.contains("TLS handshake") && error.contains("certificate"),
            "{error}"
        );
    }
}

#[test]
fn the_registry_is_published_and_listed_over_sasl_ssl_with_a_properties_file() {
    let kafka = secured();
    let dir = tempfile::tempdir().unwrap();
    let registry = format!("kafka://{}/{}", kafka.brokers, unique("weir-registry"));
    let component = dir.path().join("fault-picky.wasm");
    std::fs::copy(plugin_registry().join("fault-picky.wasm"), &component).unwrap();
    let properties = kafka.registry_properties(dir.path(), PASSWORD);

    let published = weir()
        .current_dir(dir.path())
        .args(["plugin", "publish", component.to_str().unwrap()])
        .args(["--registry", &registry, "--label", "over-tls"])
        .arg("--registry-properties")
        .arg(&properties)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&published.stderr);
    assert!(published.status.success(), "publish: {stderr}");

    // The variable works as the flag does.
    let listed = weir()
        .current_dir(dir.path())
        .args(["plugin", "list", "--registry", &registry])
        .env("WEIR_REGISTRY_PROPERTIES", &properties)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "list: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        stdout.contains("fault-picky") && stdout.contains("over-tls"),
        "{stdout}"
    );

    // A wrong password is refused by the brokers, and said so at once; the password is not shown.
    let wrong = kafka.registry_properties(dir.path(), "not-the-password");
    let stderr = failed_listing(dir.path(), &registry, &wrong);
    assert!(
        stderr.contains("refused the credentials") && stderr.contains("--registry-properties"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    // A file weir cannot use is refused before any connection, naming the file and the line.
    let bad = dir.path().join("bad.properties");
    std::fs::write(
        &bad,
        "security.protocol=SASL_SSL\nbootstrap.servers=elsewhere:9092\n",
    )
    .unwrap();
    let stderr = failed_listing(dir.path(), &registry, &bad);
    assert!(
        stderr.contains("bad.properties") && stderr.contains("line 2"),
        "{stderr}"
    );
}

/// `weir plugin list --registry REGISTRY --registry-properties PROPERTIES`, which must fail: its
/// stderr.
fn failed_listing(dir: &Path, registry: &str, properties: &Path) -> String {
    let listed = weir()
        .current_dir(dir)
        .args(["plugin", "list", "--registry", registry])
        .arg("--registry-properties")
        .arg(properties)
        .output()
        .unwrap();
    assert!(!listed.status.success(), "the listing succeeded");
    String::from_utf8_lossy(&listed.stderr).into_owned()
}

/// A bootstrap list whose first broker is down and whose second refuses the password is
/// refused at once: the down broker's error does not end the probe before the other answers.
/// librdkafka picks the broker it tries first at random, so the listing runs several times.
#[test]
fn a_broker_down_before_one_that_refuses_the_password_is_still_a_refusal() {
    let kafka = secured();
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let registry = format!(
        "kafka://{closed},{}/{}",
        kafka.brokers,
        unique("weir-registry")
    );
    let wrong = kafka.registry_properties(dir.path(), "not-the-password");
    for attempt in 0..5 {
        let stderr = failed_listing(dir.path(), &registry, &wrong);
        assert!(
            stderr.contains("refused the credentials") && stderr.contains("--registry-properties"),
            "attempt {attempt}: {stderr}"
        );
        assert!(!stderr.contains("not-the-password"), "{stderr}");
    }
}

// The broker's authorizer refusing the SCRAM user (scripts/services.d/KafkaTestAcls.java denies
// it rights on names under `weir-acl-*` prefixes; plaintext clients, which set the tests up, are
// super users).

/// `count` numbered records written to `topic` over plaintext.
async fn produce_plainly(topic: &str, count: u64) {
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    crate::support::send_numbered(
        &producer,
        topic,
        1,
        0..count,
        std::time::Duration::from_secs(30),
    )
    .await;
}

/// A sink whose principal may see its topic but not write to it stops with the grant it needs,
/// and writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_topic_the_user_may_not_write_stops_the_sink_naming_the_grant() {
    let kafka = secured();
    let topic = unique("weir-acl-no-write.out");
    let properties = kafka.properties(&kafka.ca, PASSWORD);
    let error = sink_refusal(&kafka, &topic, &properties).await;
    assert!(
        error.contains(&format!(
            "not authorized to write to topic `{topic}`: grant this principal WRITE"
        )),
        "{error}"
    );
}

/// How a source reading `topic` (ten records, written over plaintext) in `group` ends: it must
/// stop by itself having read nothing. Its error.
async fn source_refusal(kafka: &Secured, topic: &str, group: &str) -> String {
    create_topic(&kafka_brokers(), topic, 1).await;
    produce_plainly(topic, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, dlq) = (dir.path().join("out.jsonl"), dir.path().join("dlq.jsonl"));
    let properties = kafka.properties(&kafka.ca, PASSWORD);
    let error = refusal(&kafka.reading_topic_in(topic, group, &properties, &out, &dlq)).await;
    assert_eq!(line_count(&out), 0, "nothing was read: {error}");
    error
}

/// A source whose principal may see its topic but not read it stops with the grant it needs.
#[tokio::test(flavor = "multi_thread")]
async fn a_topic_the_user_may_not_read_stops_the_source_naming_the_grant() {
    let kafka = secured();
    let topic = unique("weir-acl-no-read.in");
    let error = source_refusal(&kafka, &topic, &unique("acl-group")).await;
    assert!(
        error.contains("not authorized to read topics") && error.contains(&topic),
        "{error}"
    );
}

/// A source whose principal may read its topic but not use its consumer group stops with the
/// grant it needs, naming the group.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_the_user_may_not_use_stops_the_source_naming_the_grant() {
    let kafka = secured();
    let group = unique("weir-acl-no-group.g");
    let error = source_refusal(&kafka, &unique("acl-readable"), &group).await;
    assert!(
        error.contains(&format!("not authorized to use consumer group `{group}`")),
        "{error}"
    );
}

/// The check that a dead-letter topic is not compacted reads the topic's configuration; a
/// principal without `DescribeConfigs` on it leaves the check undone and the pipeline
/// dead-letters into the topic as usual.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_topic_whose_configuration_the_user_may_not_read_is_used() {
    let kafka = secured();
    let dead_letters = unique("weir-acl-no-describe-configs.dlq");
    create_topic(&kafka_brokers(), &dead_letters, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = dead_letters_into_kafka(
        &dir.path().join("in.jsonl"),
        &kafka.brokers,
        &dead_letters,
        &kafka.properties(&kafka.ca, PASSWORD),
    );
    let report = run_pipeline(&toml).await;
    assert_eq!(report.dead_lettered, 2, "{report:?}");
    assert_eq!(topic_message_count(&kafka_brokers(), &dead_letters), 2);
}

/// Publishing to a registry whose topics do not exist, as a principal that may not create them,
/// fails naming the topic and both ways out (create it beforehand, or grant Create), and leaves
/// no topic behind.
#[test]
fn a_registry_the_user_may_not_create_is_refused_naming_the_grant() {
    let kafka = secured();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("weir-acl-no-create.registry");
    let registry = format!("kafka://{}/{topic}", kafka.brokers);
    let component = dir.path().join("fault-picky.wasm");
    std::fs::copy(plugin_registry().join("fault-picky.wasm"), &component).unwrap();
    let properties = kafka.registry_properties(dir.path(), PASSWORD);
    let published = weir()
        .current_dir(dir.path())
        .args(["plugin", "publish", component.to_str().unwrap()])
        .args(["--registry", &registry])
        .arg("--registry-properties")
        .arg(&properties)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&published.stderr);
    assert!(
        !published.status.success(),
        "the publish succeeded: {stderr}"
    );
    assert!(
        stderr.contains(&format!("topic {topic} does not exist"))
            && stderr.contains("the brokers refused to create it")
            && stderr.contains("grant the principal Create on it"),
        "{stderr}"
    );
    assert!(
        !crate::services::topic_exists(&kafka_brokers(), &topic),
        "{topic} was not created"
    );
}

/// `weir replay` of a dead-letter topic the user may not read, or in a consumer group it may not
/// use, fails naming the grant, with a status that says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_the_user_may_not_read_or_group_it_may_not_use_names_the_grant() {
    let kafka = secured();
    let dir = tempfile::tempdir().unwrap();
    let replay = |dead_letters: &str, group: &str| {
        let file = dir.path().join(format!("{}.toml", unique("replay")));
        std::fs::write(
            &file,
            format!(
                r#"
                [[pipeline]]
                name = "replayed"
                source = {{ type = "generate", count = 1 }}
                sink = {{ type = "blackhole" }}
                dead_letter = {{ type = "kafka", brokers = "{brokers}", topic = "{dead_letters}", properties = {properties} }}
                "#,
                brokers = kafka.brokers,
                properties = kafka.properties(&kafka.ca, PASSWORD),
            ),
        )
        .unwrap();
        let output = weir()
            .args(["replay", "--config"])
            .arg(&file)
            .arg("--plugins")
            .arg(dir.path())
            .args(["--pipeline", "replayed", "--group", group])
            .output()
            .unwrap();
        assert!(!output.status.success(), "the replay succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    let unreadable = unique("weir-acl-no-read.dlq");
    create_topic(&kafka_brokers(), &unreadable, 1).await;
    produce_plainly(&unreadable, 3).await;
    let stderr = replay(&unreadable, &unique("replay-group"));
    assert!(
        stderr.contains(&format!(
            "grant this principal READ and DESCRIBE on topic {unreadable}"
        )),
        "{stderr}"
    );

    let readable = unique("acl-dlq");
    create_topic(&kafka_brokers(), &readable, 1).await;
    produce_plainly(&readable, 3).await;
    let group = unique("weir-acl-no-group.replay");
    let stderr = replay(&readable, &group);
    assert!(
        stderr.contains(&format!("grant this principal READ on group {group}")),
        "{stderr}"
    );
}

/// Following a registry whose topic the user may not read (`weir plugin list` here, as `weir run
/// --registry` reads it) fails naming the rights each use of the registry needs.
#[test]
fn a_registry_the_user_may_not_read_is_refused_naming_the_grants() {
    let kafka = secured();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("weir-acl-no-read.registry");
    let component = dir.path().join("fault-picky.wasm");
    std::fs::copy(plugin_registry().join("fault-picky.wasm"), &component).unwrap();
    // Published over plaintext, whose principal may do anything.
    let published = weir()
        .current_dir(dir.path())
        .args(["plugin", "publish", component.to_str().unwrap()])
        .args([
            "--registry",
            &format!("kafka://{}/{topic}", kafka_brokers()),
        ])
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "publish: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    let properties = kafka.registry_properties(dir.path(), PASSWORD);
    let stderr = failed_listing(
        dir.path(),
        &format!("kafka://{}/{topic}", kafka.brokers),
        &properties,
    );
    assert!(
        stderr.contains("the brokers refused this principal the topic")
            && stderr.contains(&format!(
                "DESCRIBE and READ on topics {topic} and {topic}.fleet"
            )),
        "{stderr}"
    );
}
