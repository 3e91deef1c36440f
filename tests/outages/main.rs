//! Outages of the real services while pipelines run: Kafka down for 10 s and for 60 s, Cassandra
//! down for 60 s, PostgreSQL restarted. Weir waits and resumes by itself, commits nothing while
//! writes fail, keeps its memory bounded, and loses nothing.
//!
//! These tests stop and start the shared services with `scripts/services`, so they live in their
//! own test binary (cargo runs test binaries one after another) and take turns within it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;
use weir::config::PipelineFile;
use weir::pipeline::{self, PipelineReport, PipelineStats};
use weir::registry::{Deployer, PluginRegistry, PluginSlots};

/// One outage at a time: they stop services every other test needs.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn services(command: &str, service: &str) {
    let status = std::process::Command::new(repo_root().join("scripts/services"))
        .args([command, service])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "scripts/services {command} {service} failed"
    );
}

/// Restarts a stopped service even when the test fails, so later tests find it.
struct Outage(&'static str);

impl Outage {
    fn begin(service: &'static str) -> Self {
        services("stop", service);
        let port = match service {
            "kafka" => 9092,
            "cassandra" => 9042,
            _ => 5432,
        };
        // A service this checkout's script does not own would keep running: no outage at all.
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        assert!(
            !listening,
            "{service} still answers on {port} after `scripts/services stop {service}`; is it another checkout's?"
        );
        Outage(service)
    }

    fn end(self) {
        services("start", self.0);
        std::mem::forget(self);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        services("start", self.0);
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn wait_for(what: &str, timeout: Duration, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn produce(brokers: &str, topic: &str, count: usize) -> BTreeSet<String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut generator = weir::generator::UserGenerator::new(rand_seed());
    let mut ids = BTreeSet::new();
    for _ in 0..count.div_ceil(500) {
        let users: Vec<(String, String)> = (0..500.min(count - ids.len()))
            .map(|_| {
                let user = generator.next_user();
                (
                    user["login"]["uuid"].as_str().unwrap().to_owned(),
                    user.to_string(),
                )
            })
            .collect();
        let sends = users.iter().map(|(id, value)| {
            producer.send(
                FutureRecord::to(topic).key(id).payload(value),
                Duration::from_secs(30),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.unwrap();
        }
        ids.extend(users.into_iter().map(|(id, _)| id));
    }
    ids
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Starts the single pipeline of `toml` in this process; returns its stats, shutdown and task.
async fn start(
    toml: &str,
) -> (
    Arc<PipelineStats>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<PipelineReport, pipeline::PipelineError>>,
) {
    let file = PipelineFile::parse(Path::new("outage.toml"), toml).unwrap();
    let slots = PluginSlots::default();
    let registry = repo_root().join("target/test-plugins/registry");
    let deployer = Deployer::new(
        PluginRegistry::new(&registry),
        weir::runtime::PluginRuntime::new(None).unwrap(),
        slots.clone(),
        &file,
    );
    for name in deployer.used_plugins() {
        deployer
            .deploy(name)
            .unwrap_or_else(|e| panic!("{e}; run the `all` tests first, they build the plugins"));
    }
    let config = file.pipelines.into_iter().next().unwrap();
    let chain = pipeline::build_chain(&config, &slots).unwrap();
    let stats = Arc::new(PipelineStats::default());
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(pipeline::run(config, chain, Arc::clone(&stats), rx));
    (stats, shutdown, task)
}

/// Keys of every message in `topic`, read from the beginning until `expected` distinct ones.
async fn distinct_keys(brokers: &str, topic: &str, expected: usize) -> BTreeSet<String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut keys = BTreeSet::new();
    while keys.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(120), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} keys in {topic}", keys.len()))
            .unwrap();
        keys.insert(String::from_utf8(message.key().unwrap().to_vec()).unwrap());
    }
    keys
}

fn resident_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap()
        / 1024
}

async fn kafka_outage(seconds: u64) {
    let _turn = TURN.lock().await;
    let brokers = env_or("WEIR_KAFKA_BROKERS", "127.0.0.1:9092");
    let (input, output) = (unique("outage_in"), unique("outage_out"));
    let ids = produce(&brokers, &input, 20_000).await;
    let (stats, shutdown, task) = start(&format!(
        r#"
        [[pipeline]]
        name = "through-kafka"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{input}"], group = "{}" }}
        transforms = [{{ plugin = "user-profile" }}]
        sink = {{ type = "kafka", brokers = "{brokers}", topic = "{output}" }}
        dead_letter = {{ type = "file", path = "{}/outage-dlq.jsonl" }}
        batch = {{ size = 100, linger_ms = 5, max_in_flight = 4 }}
        "#,
        unique("group"),
        std::env::temp_dir().display()
    ))
    .await;
    let seen = Arc::clone(&stats);
    wait_for("the stream to flow", Duration::from_secs(60), move || {
        seen.snapshot("p").records_out > 0
    })
    .await;
    let outage = Outage::begin("kafka");
    tokio::time::sleep(Duration::from_secs(seconds)).await; // the outage itself
    assert!(
        !task.is_finished(),
        "the pipeline waits through the outage instead of failing"
    );
    outage.end();
    let seen = Arc::clone(&stats);
    wait_for(
        "every record after the outage",
        Duration::from_secs(300),
        move || seen.snapshot("p").records_in >= 20_000,
    )
    .await;
    let _ = shutdown.send(true);
    task.await.unwrap().unwrap();
    assert_eq!(distinct_keys(&brokers, &output, ids.len()).await, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_for_10_seconds() {
    kafka_outage(10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_for_60_seconds() {
    kafka_outage(60).await;
}

/// The group's committed offsets, summed over partitions.
fn committed(brokers: &str, group: &str, topic: &str) -> i64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..3 {
        list.add_partition(topic, partition);
    }
    consumer
        .committed_offsets(list, Duration::from_secs(30))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_down_for_60_seconds_commits_nothing_and_loses_nothing() {
    let _turn = TURN.lock().await;
    let brokers = env_or("WEIR_KAFKA_BROKERS", "127.0.0.1:9092");
    let nodes = env_or("WEIR_CASSANDRA_NODES", "127.0.0.1:9042");
    let (input, keyspace, group) = (unique("cql_outage"), unique("weir_outage"), unique("group"));
    {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap();
        for result in admin
            .create_topics(
                &[rdkafka::admin::NewTopic::new(
                    &input,
                    3,
                    rdkafka::admin::TopicReplication::Fixed(1),
                )],
                &rdkafka::admin::AdminOptions::new(),
            )
            .await
            .unwrap()
        {
            result.unwrap();
        }
    }
    let ids = produce(&brokers, &input, 30_000).await;
    let (stats, shutdown, task) = start(&format!(
        r#"
        [[pipeline]]
        name = "into-cassandra"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{input}"], group = "{group}" }}
        transforms = [{{ plugin = "user-profile" }}]
        dead_letter = {{ type = "file", path = "{}/outage-dlq.jsonl" }}
        batch = {{ size = 100, linger_ms = 5, max_in_flight = 4 }}
        [pipeline.sink]
        type = "cassandra"
        nodes = ["{nodes}"]
        keyspace = "{keyspace}"
        table = "created_users"
        consistency = "one"
        create = {{ primary_key = ["id"], columns = {{ id = "uuid", first_name = "text", last_name = "text", gender = "text", address = "text", post_code = "text", email = "text", username = "text", dob = "text", registered_date = "text", phone = "text", picture = "text" }} }}
        "#,
        std::env::temp_dir().display()
    ))
    .await;
    let seen = Arc::clone(&stats);
    wait_for("the stream to flow", Duration::from_secs(120), move || {
        seen.snapshot("p").records_out > 0
    })
    .await;
    let rss_before = resident_mib();
    let outage = Outage::begin("cassandra");
    // Batches acknowledged before the stop may still commit; after that, nothing may.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let committed_early = committed(&brokers, &group, &input);
    let acknowledged_early = stats.snapshot("p").records_in;
    tokio::time::sleep(Duration::from_secs(55)).await; // the rest of the outage
    assert_eq!(
        committed(&brokers, &group, &input),
        committed_early,
        "no offset committed while writes fail"
    );
    assert_eq!(
        stats.snapshot("p").records_in,
        acknowledged_early,
        "nothing acknowledged while writes fail"
    );
    let growth = resident_mib().saturating_sub(rss_before);
    assert!(
        growth < 256,
        "memory stays bounded while the sink is down (grew {growth} MiB)"
    );
    assert!(!task.is_finished(), "the pipeline waits instead of failing");
    outage.end();
    let seen = Arc::clone(&stats);
    wait_for(
        "every record after the outage",
        Duration::from_secs(300),
        move || seen.snapshot("p").records_in >= 30_000,
    )
    .await;
    let _ = shutdown.send(true);
    task.await.unwrap().unwrap();
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(&nodes)
        .build()
        .await
        .unwrap();
    let rows = session
        .query_unpaged(format!("SELECT id FROM {keyspace}.created_users"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let stored: BTreeSet<String> = rows
        .rows::<(uuid::Uuid,)>()
        .unwrap()
        .map(|r| r.unwrap().0.to_string())
        .collect();
    assert_eq!(stored, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_during_ingest_and_publish() {
    let _turn = TURN.lock().await;
    let brokers = env_or("WEIR_KAFKA_BROKERS", "127.0.0.1:9092");
    let url = env_or(
        "WEIR_POSTGRES_URL",
        "postgres://weir:weir@127.0.0.1:5432/weir",
    );
    let (table, topic) = (unique("pg_outage"), unique("pg_outage_topic"));
    let dir = std::env::temp_dir().join(unique("pg_outage_dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.jsonl");
    let mut generator = weir::generator::UserGenerator::new(rand_seed());
    let users: Vec<serde_json::Value> = (0..10_000).map(|_| generator.next_user()).collect();
    let ids: BTreeSet<String> = users
        .iter()
        .map(|u| u["login"]["uuid"].as_str().unwrap().to_owned())
        .collect();
    std::fs::write(
        &input,
        users
            .iter()
            .map(|u| u.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let (ingest_stats, ingest_stop, ingest) = start(&format!(
        r#"
        [[pipeline]]
        name = "ingest"
        source = {{ type = "file", path = "{}", follow = true }}
        sink = {{ type = "postgres", url = "{url}", table = "{table}", key_field = "login.uuid" }}
        dead_letter = {{ type = "file", path = "{}/dlq.jsonl" }}
        batch = {{ size = 50, linger_ms = 5, max_in_flight = 2 }}
        "#,
        input.display(),
        dir.display()
    ))
    .await;
    let (publish_stats, publish_stop, publish) = start(&format!(
        r#"
        [[pipeline]]
        name = "publish"
        source = {{ type = "postgres", url = "{url}", table = "{table}", consumer = "{}", poll_interval_ms = 200 }}
        sink = {{ type = "kafka", brokers = "{brokers}", topic = "{topic}", key_field = "login.uuid" }}
        dead_letter = {{ type = "file", path = "{}/dlq2.jsonl" }}
        batch = {{ size = 50, linger_ms = 5 }}
        "#,
        unique("consumer"),
        dir.display()
    ))
    .await;
    let seen = Arc::clone(&publish_stats);
    wait_for("the stream to flow", Duration::from_secs(60), move || {
        seen.snapshot("p").records_out > 0
    })
    .await;
    let outage = Outage::begin("postgres");
    tokio::time::sleep(Duration::from_secs(5)).await; // the restart's downtime
    outage.end();
    let (seen_in, seen_out) = (Arc::clone(&ingest_stats), Arc::clone(&publish_stats));
    wait_for(
        "every record after the restart",
        Duration::from_secs(300),
        move || {
            seen_in.snapshot("p").records_out >= 10_000
                && seen_out.snapshot("p").records_out >= 10_000
        },
    )
    .await;
    let _ = ingest_stop.send(true);
    let _ = publish_stop.send(true);
    ingest.await.unwrap().unwrap();
    publish.await.unwrap().unwrap();
    assert_eq!(distinct_keys(&brokers, &topic, ids.len()).await, ids);
    let _ = std::fs::remove_dir_all(&dir);
}
