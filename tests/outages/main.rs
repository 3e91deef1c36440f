//! Outages of the real services while pipelines run: Kafka down for 10 s and for 60 s, Cassandra
//! down for 60 s, PostgreSQL restarted under the seed's ingest (HTTP API -> PostgreSQL) and publish
//! (PostgreSQL -> Kafka). Each outage hits a stream in motion: records keep coming
//! in the background across it, and each test asserts that work was still ahead of the pipeline
//! when the service went down. Weir waits and resumes by itself, commits nothing while writes
//! fail, stops reading when its queues are full (so its memory stays bounded), and loses nothing.
//! Kafka clients stranded without any broker by a restart (librdkafka 2.12) reconnect.
//!
//! These tests stop and start the shared services with `scripts/services`, so they live in their
//! own test binary (cargo runs test binaries one after another) and take turns within it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use weir::config::PipelineFile;
use weir::generator::UserGenerator;
use weir::pipeline::{self, PipelineReport, PipelineStats};
use weir::registry::{Deployer, PluginRegistry, PluginSlots};

/// One outage at a time: they stop services every other test needs.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How often the background feeds and writers send their next chunk.
const TICK: Duration = Duration::from_millis(100);

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

/// A service's address from `variable` (or the loopback default that `scripts/services start`
/// serves); fails the test, naming the command to run, when nothing answers there.
fn service_setting(variable: &str, default: &str) -> String {
    let value = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    // `postgres://user:password@host:port/db`, or `host:port[,host:port...]`.
    let after_userinfo = value
        .rsplit_once('@')
        .map_or(value.as_str(), |(_, rest)| rest);
    let address = after_userinfo
        .split(['/', ','])
        .next()
        .unwrap_or(after_userinfo);
    assert!(
        std::net::TcpStream::connect(address).is_ok(),
        "nothing answers at {address} ({variable}). Start the test services with `scripts/services start`; the outage tests stop and start them, so they must be this checkout's."
    );
    value
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn wait_for(what: &str, timeout: Duration, condition: impl Fn() -> bool) {
    wait_until(timeout, condition, || what.to_owned()).await;
}

/// Waits until `condition` holds; a timeout fails the test with `describe()`, which may name
/// the state it was in.
async fn wait_until(
    timeout: Duration,
    condition: impl Fn() -> bool,
    describe: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 300 s) until the pipeline acknowledged `total` records; a timeout names its
/// counts.
async fn wait_all_acknowledged(stats: &PipelineStats, total: u64) {
    wait_until(
        Duration::from_secs(300),
        || stats.snapshot("p").records_in >= total,
        || format!("every record after the outage: {:?}", stats.snapshot("p")),
    )
    .await;
}

/// Sends weir's logs to the test's captured output, shown when a test fails (`WEIR_TEST_LOG`
/// sets the filter; `info` by default).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info".into()),
        ))
        .with_test_writer()
        .try_init();
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
    for result in admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                topic,
                partitions,
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

/// Users produced to a topic in the background at a steady pace, each keyed by its unique id, so
/// that an outage hits a stream in motion rather than an input weir already drained.
struct Feed {
    total: usize,
    sent: Arc<AtomicUsize>,
    delivered: Arc<AtomicUsize>,
    failures: Arc<FeedFailures>,
    task: JoinHandle<BTreeSet<String>>,
}

/// Failed sends of a feed, so that a feed that stalls says why.
#[derive(Default)]
struct FeedFailures {
    /// Sends whose first delivery failed.
    first: AtomicUsize,
    /// Sends made again after a failed delivery.
    again: AtomicUsize,
    /// Producers replaced after failing the same record twice in a row.
    replaced: AtomicUsize,
    /// The latest delivery error.
    last: std::sync::Mutex<Option<String>>,
}

impl FeedFailures {
    fn failed(&self, error: &str) {
        *self.last.lock().unwrap() = Some(error.to_owned());
    }
}

/// How long a send may go without a delivery report: librdkafka reports one within the feed's
/// `message.timeout.ms` (30 s), so a longer silence means its producer is stuck.
const REPORT_WAIT: Duration = Duration::from_secs(45);

/// A send's outcome: delivered, or why not (a failed delivery, or no report in time).
async fn reported<T, U>(
    delivery: impl std::future::Future<Output = Result<T, (rdkafka::error::KafkaError, U)>>,
) -> Result<(), String> {
    match tokio::time::timeout(REPORT_WAIT, delivery).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(error.to_string()),
        Err(_) => Err(format!("no delivery report within {REPORT_WAIT:?}")),
    }
}

/// Sends a record (topic, key, value) whose delivery through producer `generation` failed with `error` again, until
/// it is delivered (at least once, as an upstream producer would: a record that did land the
/// first time changes no set of ids); the producer is replaced when it fails the record twice in
/// a row.
async fn send_again(
    (topic, id, value): (&str, &str, &str),
    mut error: String,
    mut generation: u64,
    producers: &Arc<FeedProducer>,
    failures: &FeedFailures,
) {
    for attempt in 0..10 {
        failures.failed(&error);
        if attempt > 0 && producers.replace(generation).await {
            failures.replaced.fetch_add(1, Ordering::Relaxed);
        }
        failures.again.fetch_add(1, Ordering::Relaxed);
        let producer;
        (generation, producer) = producers.current();
        let record = FutureRecord::to(topic).key(id).payload(value);
        match reported(producer.send(record, Duration::ZERO)).await {
            Ok(()) => return,
            Err(again) => error = again,
        }
    }
    panic!("the record is not delivered after 10 attempts, the latest failing with {error}");
}

/// The feed's producer. One that fails to deliver the same record twice in a row is replaced:
/// after a broker restart, a librdkafka producer of the feed was seen never to deliver again
/// (the input topic got no record after the outage, while weir's own clients resumed), and an
/// upstream that stops for good is not what these tests are about. Producers are created off
/// the runtime, and a replaced one is kept until the feed ends: creating and destroying a
/// librdkafka client blocks, and the test's runtime also runs the pipeline under test.
struct FeedProducer {
    config: ClientConfig,
    /// The producer new sends go to, and how many were replaced before it.
    current: std::sync::Mutex<(u64, FutureProducer)>,
    /// Replaced producers; their sends still report.
    retired: std::sync::Mutex<Vec<FutureProducer>>,
}

impl FeedProducer {
    fn new(config: ClientConfig) -> Arc<Self> {
        let producer = config.create().unwrap();
        Arc::new(FeedProducer {
            config,
            current: std::sync::Mutex::new((0, producer)),
            retired: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn current(&self) -> (u64, FutureProducer) {
        let current = self.current.lock().unwrap();
        (current.0, current.1.clone())
    }

    /// Replaces producer `generation`, unless another send replaced it already; whether this
    /// call did.
    async fn replace(self: &Arc<Self>, generation: u64) -> bool {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut current = this.current.lock().unwrap();
            if current.0 != generation {
                return false;
            }
            let fresh = this.config.create().unwrap();
            let old = std::mem::replace(&mut current.1, fresh);
            current.0 += 1;
            this.retired.lock().unwrap().push(old);
            true
        })
        .await
        .unwrap()
    }

    /// Drops every producer off the runtime.
    async fn close(self: Arc<Self>) {
        tokio::task::spawn_blocking(move || drop(self))
            .await
            .unwrap();
    }
}

impl Feed {
    /// Starts producing `total` records to `topic`, `per_second` of them a second.
    fn start(brokers: &str, topic: &str, total: usize, per_second: usize) -> Self {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            // A send waits in the producer for up to 30 s, then is sent again (below).
            .set("message.timeout.ms", "30000")
            // Not idempotent, as many upstream producers are not: an idempotent librdkafka
            // producer that loses the broker mid-request can be left with a gap in its sequence
            // numbers (the restarted broker answers `OutOfOrderSequence`) and then delivers
            // only a burst every 30 s, so the feed, not weir, set the pace after the outage. A
            // record sent again may land twice: the checks compare sets of ids, and
            // `records_in` with at least the total.
            .set("enable.idempotence", "false")
            .set("acks", "all");
        // librdkafka's debug contexts for the feed's producer (`broker,topic,metadata`, say),
        // shown with `WEIR_TEST_LOG=info,librdkafka=debug`.
        if let Ok(contexts) = std::env::var("WEIR_TEST_FEED_DEBUG") {
            config.set("debug", contexts);
        }
        let producers = FeedProducer::new(config);
        let (sent, delivered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let failures = Arc::new(FeedFailures::default());
        let (topic, sent_so_far, delivered_so_far, failed_so_far) = (
            topic.to_owned(),
            Arc::clone(&sent),
            Arc::clone(&delivered),
            Arc::clone(&failures),
        );
        let per_tick = (per_second * TICK.as_millis() as usize / 1000).max(1);
        let task = tokio::spawn(async move {
            let mut generator = UserGenerator::new(rand_seed());
            let mut ids = BTreeSet::new();
            let mut chunks = Vec::new();
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            while ids.len() < total {
                ticks.tick().await;
                let (generation, producer) = producers.current();
                let mut deliveries = Vec::new();
                for _ in 0..per_tick.min(total - ids.len()) {
                    let user = generator.next_user();
                    let id = user["login"]["uuid"].as_str().unwrap().to_owned();
                    let value = user.to_string();
                    // Queued without waiting for the broker: sending goes on during an outage.
                    let delivery = producer
                        .send_result(FutureRecord::to(&topic).key(&id).payload(&value))
                        .map_err(|(error, _)| error)
                        .expect("the producer queues the record");
                    deliveries.push((id.clone(), value, delivery));
                    assert!(ids.insert(id), "every record has its own id");
                }
                sent_so_far.store(ids.len(), Ordering::Relaxed);
                let (delivered, failures) =
                    (Arc::clone(&delivered_so_far), Arc::clone(&failed_so_far));
                let (producers, topic) = (Arc::clone(&producers), topic.clone());
                chunks.push(tokio::spawn(async move {
                    let count = deliveries.len();
                    let (records, futures): (Vec<_>, Vec<_>) = deliveries
                        .into_iter()
                        .map(|(id, value, delivery)| ((id, value), delivery))
                        .unzip();
                    let outcomes = futures::future::join_all(futures.into_iter().map(|delivery| {
                        reported(async move {
                            match delivery.await {
                                Ok(result) => result.map(|_| ()).map_err(|(error, _)| (error, ())),
                                Err(_) => Err((rdkafka::error::KafkaError::Canceled, ())),
                            }
                        })
                    }))
                    .await;
                    for ((id, value), outcome) in records.into_iter().zip(outcomes) {
                        let Err(error) = outcome else { continue };
                        failures.first.fetch_add(1, Ordering::Relaxed);
                        let record = (topic.as_str(), id.as_str(), value.as_str());
                        send_again(record, error, generation, &producers, &failures).await;
                    }
                    delivered.fetch_add(count, Ordering::Relaxed);
                }));
            }
            for chunk in chunks {
                chunk.await.unwrap();
            }
            producers.close().await;
            ids
        });
        Feed {
            total,
            sent,
            delivered,
            failures,
            task,
        }
    }

    /// What the feed has done so far, for a failure message.
    fn describe(&self) -> String {
        format!(
            "{} of {} sent, {} delivered, {} first deliveries failed, {} sent again, {} producers replaced, latest error {:?}",
            self.sent(),
            self.total,
            self.delivered(),
            self.failures.first.load(Ordering::Relaxed),
            self.failures.again.load(Ordering::Relaxed),
            self.failures.replaced.load(Ordering::Relaxed),
            self.failures.last.lock().unwrap()
        )
    }

    /// Records handed to the producer so far.
    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Records the broker has confirmed so far.
    fn delivered(&self) -> usize {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Waits until every record is sent and delivered; returns their ids.
    async fn finish(mut self) -> BTreeSet<String> {
        let deadline = Instant::now() + Duration::from_secs(300);
        let ids = loop {
            // Every 5 s, a line in the captured output: a stalled feed shows when it stalled.
            match tokio::time::timeout(Duration::from_secs(5), &mut self.task).await {
                Ok(ids) => break ids.unwrap(),
                Err(_) => println!("feed: {}", self.describe()),
            }
            assert!(
                Instant::now() < deadline,
                "the feed did not deliver every record within 300 s: {}",
                self.describe()
            );
        };
        assert_eq!(ids.len(), self.total);
        ids
    }
}

/// A local randomuser.me-shaped API that hands out `users` in order, `results` at a time, as
/// the seed's ingest pipeline polls it.
struct UserApi {
    url: String,
    handed_out: Arc<AtomicUsize>,
    total: usize,
}

impl UserApi {
    async fn start(users: Vec<serde_json::Value>) -> Self {
        type Shared = (Arc<Vec<serde_json::Value>>, Arc<AtomicUsize>);
        async fn respond(
            axum::extract::State((users, next)): axum::extract::State<Shared>,
            axum::extract::Query(query): axum::extract::Query<
                std::collections::BTreeMap<String, String>,
            >,
        ) -> axum::Json<serde_json::Value> {
            let wanted: usize = query
                .get("results")
                .and_then(|r| r.parse().ok())
                .unwrap_or(1);
            let start = next.fetch_add(wanted, Ordering::SeqCst).min(users.len());
            let end = (start + wanted).min(users.len());
            axum::Json(serde_json::json!({
                "results": users[start..end],
                "info": { "seed": "outage", "results": end - start, "page": 1, "version": "1.4" }
            }))
        }
        let total = users.len();
        let handed_out = Arc::new(AtomicUsize::new(0));
        let router = axum::Router::new()
            .route("/api/", axum::routing::get(respond))
            .with_state((Arc::new(users), Arc::clone(&handed_out)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        UserApi {
            url,
            handed_out,
            total,
        }
    }

    /// Users the API has handed out so far.
    fn handed_out(&self) -> usize {
        self.handed_out.load(Ordering::SeqCst).min(self.total)
    }
}

type Running = JoinHandle<Result<PipelineReport, pipeline::PipelineError>>;

/// Starts the single pipeline of `toml` in this process; returns its stats, shutdown and task.
async fn start(toml: &str) -> (Arc<PipelineStats>, watch::Sender<bool>, Running) {
    init_logs();
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

/// Waits until the pipeline has written a record; a pipeline that ended (a service it needs is
/// missing, say) fails the test at once rather than at the timeout.
async fn wait_flowing(stats: &PipelineStats, task: &Running, timeout: Duration) {
    wait_for("the stream to flow", timeout, || {
        assert!(
            !task.is_finished(),
            "the pipeline ended before writing anything; are the services running?"
        );
        stats.snapshot("p").records_out > 0
    })
    .await;
}

/// Waits until the pipeline neither acknowledges nor polls a record for `quiet`; returns the
/// records acknowledged and polled then.
async fn standstill(stats: &PipelineStats, quiet: Duration, timeout: Duration) -> (u64, u64) {
    let read = || (stats.snapshot("p").records_in, stats.records_polled());
    let deadline = Instant::now() + timeout;
    let mut last = read();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = read();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for the pipeline to stand still; it still acknowledges or polls ({} acknowledged, {} polled)",
            now.0,
            now.1
        );
    }
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
    const TOTAL: usize = 20_000;
    let _turn = TURN.lock().await;
    let brokers = service_setting("WEIR_KAFKA_BROKERS", "127.0.0.1:9092");
    let (input, output) = (unique("outage_in"), unique("outage_out"));
    create_topic(&brokers, &input, 3).await;
    // Spread over the outage and 20 s more: the broker stops, and comes back, while the feed is
    // still sending, so weir's consumer and producer both lose a broker mid-stream.
    let feed = Feed::start(&brokers, &input, TOTAL, TOTAL / (seconds as usize + 20));
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
    wait_flowing(&stats, &task, Duration::from_secs(60)).await;
    let outage = Outage::begin("kafka");
    // The broker is gone: what is acknowledged now is all weir could acknowledge before it.
    let (acknowledged, sent) = (stats.snapshot("p").records_in, feed.sent());
    assert!(
        acknowledged < TOTAL as u64 && sent < TOTAL,
        "the broker stops mid-stream: {acknowledged} of {TOTAL} records acknowledged, {sent} sent"
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await; // the outage itself
    assert!(
        !task.is_finished(),
        "the pipeline waits through the outage instead of failing"
    );
    outage.end();
    // Includes the sends made while the broker was down.
    let ids = feed.finish().await;
    wait_all_acknowledged(&stats, TOTAL as u64).await;
    // Read while the same pipeline still runs: nothing is lost, and nothing needed a restart.
    assert_eq!(distinct_keys(&brokers, &output, ids.len()).await, ids);
    let _ = shutdown.send(true);
    let report = task.await.unwrap().unwrap();
    println!(
        "kafka down {seconds} s: records {TOTAL}, acknowledged when the broker stopped {acknowledged} (sent {sent}), acknowledged after the restart {}, lost 0",
        report.records_in - acknowledged
    );
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
    const TOTAL: usize = 40_000;
    const BATCH: u64 = 100;
    const OUTAGE: Duration = Duration::from_secs(60);
    let _turn = TURN.lock().await;
    let brokers = service_setting("WEIR_KAFKA_BROKERS", "127.0.0.1:9092");
    let nodes = service_setting("WEIR_CASSANDRA_NODES", "127.0.0.1:9042");
    let (input, keyspace, group) = (unique("cql_outage"), unique("weir_outage"), unique("group"));
    create_topic(&brokers, &input, 3).await;
    // Sent over 40 s, most of it during the outage: records wait in Kafka the whole time, so
    // only backpressure can keep the source from reading them.
    let feed = Feed::start(&brokers, &input, TOTAL, 1_000);
    let (stats, shutdown, task) = start(&format!(
        r#"
        [[pipeline]]
        name = "into-cassandra"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{input}"], group = "{group}" }}
        transforms = [{{ plugin = "user-profile" }}]
        dead_letter = {{ type = "file", path = "{}/outage-dlq.jsonl" }}
        batch = {{ size = {BATCH}, linger_ms = 5, max_in_flight = 4 }}
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
    wait_flowing(&stats, &task, Duration::from_secs(120)).await;
    let rss_before = resident_mib();
    let outage = Outage::begin("cassandra");
    let began = Instant::now();
    // Writes in flight when Cassandra went down fail and are retried; batches acknowledged before
    // may still commit. Once the queues fill, the source stops polling and nothing moves.
    let (acknowledged, polled) =
        standstill(&stats, Duration::from_secs(3), Duration::from_secs(50)).await;
    let committed_early = committed(&brokers, &group, &input);
    assert!(
        acknowledged < TOTAL as u64,
        "Cassandra stops mid-stream: {acknowledged} of {TOTAL} records acknowledged"
    );
    // What the source may have handed on and not seen acknowledged: every queue full, plus the
    // batch each worker transforms, the batch the sink writes and the poll the source routes.
    let (capacity, workers) = (stats.queue_capacity(), stats.workers());
    let bound = (capacity + workers + 2) * BATCH;
    let in_flight = polled - acknowledged;
    assert!(
        in_flight <= bound,
        "full queues pause the source: {in_flight} records in flight, more than the {bound} the queues ({capacity} batches) and {workers} workers hold"
    );
    // Otherwise a source that read on would also stay within the bound.
    let to_come = TOTAL as u64 - acknowledged;
    assert!(
        bound * 4 <= to_come,
        "the bound ({bound}) is well below the {to_come} records still to come"
    );
    tokio::time::sleep(OUTAGE.saturating_sub(began.elapsed())).await; // the rest of the outage
    assert_eq!(
        committed(&brokers, &group, &input),
        committed_early,
        "no offset committed while writes fail"
    );
    assert_eq!(
        stats.snapshot("p").records_in,
        acknowledged,
        "nothing acknowledged while writes fail"
    );
    assert_eq!(
        stats.records_polled(),
        polled,
        "the source read nothing more during the outage"
    );
    let waiting = (feed.delivered() as u64).saturating_sub(polled);
    assert!(
        waiting > bound,
        "records were there to read: {waiting} in Kafka that the source had not polled"
    );
    let growth = resident_mib().saturating_sub(rss_before);
    assert!(
        growth < 256,
        "memory stays bounded while the sink is down (grew {growth} MiB)"
    );
    assert!(!task.is_finished(), "the pipeline waits instead of failing");
    outage.end();
    let ids = feed.finish().await;
    wait_all_acknowledged(&stats, TOTAL as u64).await;
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
    println!(
        "cassandra down 60 s: records {TOTAL}, acknowledged when it stopped {acknowledged}, in flight {in_flight} (bound {bound}: {capacity} queued + {workers} workers + 2 batches of {BATCH}), unread in Kafka at the end of the outage {waiting}, memory growth {growth} MiB, lost 0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_during_ingest_and_publish() {
    const TOTAL: usize = 20_000;
    let _turn = TURN.lock().await;
    let brokers = service_setting("WEIR_KAFKA_BROKERS", "127.0.0.1:9092");
    let url = service_setting(
        "WEIR_POSTGRES_URL",
        "postgres://weir:weir@127.0.0.1:5432/weir",
    );
    let (table, topic) = (unique("pg_outage"), unique("pg_outage_topic"));
    let dir = std::env::temp_dir().join(unique("pg_outage_dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut generator = UserGenerator::new(rand_seed());
    let users: Vec<serde_json::Value> = (0..TOTAL).map(|_| generator.next_user()).collect();
    let ids: BTreeSet<String> = users
        .iter()
        .map(|u| u["login"]["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), TOTAL, "every user has its own id");
    let api = UserApi::start(users).await;
    // The seed's ingest: the API polled 50 users at a time every 25 ms (2,000 users/s, so about
    // 10 s in all): ingest still has users to fetch, and rows to write, when PostgreSQL restarts.
    let (ingest_stats, ingest_stop, ingest) = start(&format!(
        r#"
        [[pipeline]]
        name = "ingest"
        source = {{ type = "http", url = "{}", query = {{ results = "50" }}, split_at = "/results", interval_ms = 25, count = {TOTAL} }}
        sink = {{ type = "postgres", url = "{url}", table = "{table}", key_field = "login.uuid" }}
        dead_letter = {{ type = "file", path = "{}/dlq.jsonl" }}
        batch = {{ size = 50, linger_ms = 5, max_in_flight = 2 }}
        "#,
        api.url,
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
    wait_flowing(&publish_stats, &publish, Duration::from_secs(60)).await;
    let outage = Outage::begin("postgres");
    // PostgreSQL is down: the rows ingest wrote so far are all that landed before the restart.
    let (landed, fetched) = (ingest_stats.snapshot("p").records_out, api.handed_out());
    assert!(
        landed < TOTAL as u64,
        "PostgreSQL restarts mid-ingest: {landed} of {TOTAL} rows landed ({fetched} users fetched)"
    );
    tokio::time::sleep(Duration::from_secs(5)).await; // the restart's downtime
    outage.end();
    let (seen_in, seen_out) = (Arc::clone(&ingest_stats), Arc::clone(&publish_stats));
    wait_for(
        "every record after the restart",
        Duration::from_secs(300),
        move || {
            seen_in.snapshot("p").records_out >= TOTAL as u64
                && seen_out.snapshot("p").records_out >= TOTAL as u64
        },
    )
    .await;
    let _ = ingest_stop.send(true);
    let _ = publish_stop.send(true);
    ingest.await.unwrap().unwrap();
    publish.await.unwrap().unwrap();
    assert_eq!(distinct_keys(&brokers, &topic, ids.len()).await, ids);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "postgres restarted: records {TOTAL}, rows landed when it stopped {landed} (users fetched {fetched}), lost 0"
    );
}

/// How many messages of `topic` carry each key, read from the beginning until the high
/// watermarks (the topic's single partition, never compacted, holds no transaction markers).
async fn counts_per_key(brokers: &str, topic: &str) -> std::collections::BTreeMap<String, usize> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(30))
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for read in 0..(high - low) {
        let message = tokio::time::timeout(Duration::from_secs(120), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {read} of {} messages in {topic}", high - low))
            .unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// A broker restarted while one batch is being written: the records whose delivery was
/// reported before it went down are not sent again (the old sink re-sent the whole batch, so
/// each of them landed twice), and every record lands. Only records whose fate librdkafka could
/// not know (in flight when the broker stopped) may be written twice; they are counted.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_restarted_mid_batch_writes_no_reported_delivery_twice() {
    use weir::connectors::Sink;
    use weir::connectors::kafka::{KafkaSink, KafkaSinkConfig};
    use weir::record::Record;

    const RECORDS: usize = 6_000;
    init_logs();
    let _turn = TURN.lock().await;
    let brokers = service_setting("WEIR_KAFKA_BROKERS", "127.0.0.1:9092");
    let topic = unique("restart_mid_batch");
    create_topic(&brokers, &topic, 1).await;
    // One record per request and one request at a time: the batch takes tens of seconds to
    // deliver (about 100 records/s on two busy cores), so the broker stops while it is partly
    // written. The delivery timeout runs from the write's start, so it must outlast the time to
    // the stop; a retry that cannot deliver everything within it delivers the rest next time.
    let config: KafkaSinkConfig = toml::from_str(&format!(
        r#"
        brokers = "{brokers}"
        topic = "{topic}"
        delivery_timeout_ms = 30000
        properties = {{ "batch.num.messages" = "1", "max.in.flight.requests.per.connection" = "1" }}
        "#
    ))
    .unwrap();
    let mut sink = KafkaSink::new(&config, false).unwrap();
    let records: Arc<Vec<Record>> = Arc::new(
        (0..RECORDS)
            .map(|n| Record {
                key: Some(format!("k{n}").into()),
                value: format!("{{\"n\":{n}}}").into_bytes().into(),
                ..Record::default()
            })
            .collect(),
    );
    let batch = Arc::clone(&records);
    let writing = tokio::spawn(async move {
        let first = sink.write(&batch).await;
        (sink, first)
    });
    let watermark: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let stored = || {
        watermark
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .map_or(0, |(low, high)| high - low)
    };
    wait_for(
        "part of the batch to be stored",
        Duration::from_secs(60),
        || stored() >= 300,
    )
    .await;
    assert!(
        !writing.is_finished(),
        "the batch was written before the broker could be stopped; the test needs a slower producer"
    );
    let outage = Outage::begin("kafka");
    // Kept down until the write gives up on what it has not delivered (the delivery timeout).
    let (mut sink, first) = tokio::time::timeout(Duration::from_secs(120), writing)
        .await
        .expect("the write ends once the undelivered records time out")
        .unwrap();
    let error =
        first.expect_err("records still queued when the broker stopped cannot be delivered");
    assert!(
        error.is_transient(),
        "a broker outage is transient: {error}"
    );
    let reported = sink.delivered_before_failure();
    assert!(
        !reported.is_empty() && reported.len() < RECORDS,
        "the broker stopped mid-batch: {} of {RECORDS} delivered before",
        reported.len()
    );
    outage.end();
    // What the pipeline's retry does, with a fixed wait: write the same batch until it is in.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut attempts = 1;
    loop {
        attempts += 1;
        match sink.write(&records).await {
            Ok(rejected) => {
                assert!(rejected.is_empty(), "{rejected:?}");
                break;
            }
            Err(error) => {
                assert!(error.is_transient(), "{error}");
                assert!(
                    Instant::now() < deadline,
                    "still not written after the restart: {error}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let counts = counts_per_key(&brokers, &topic).await;
    let missing: Vec<usize> = (0..RECORDS)
        .filter(|n| !counts.contains_key(&format!("k{n}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<&usize> = reported
        .iter()
        .filter(|n| counts[&format!("k{n}")] > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "{} records written twice although their delivery had been reported, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    println!(
        "kafka restarted mid-batch: records {RECORDS}, delivered before the stop {}, writes {attempts}, written twice among those reported 0, written twice among those in flight {duplicates}, lost 0",
        reported.len()
    );
}

/// A KRaft broker answers metadata with an empty broker list for a moment while it shuts down,
/// and librdkafka 2.12 then drops every broker it knew and never reconnects (librdkafka issue
/// 5301). Clients that ask for metadata all through a broker restart, until one of them got that
/// answer, all reach the broker again once it is back: weir's broker watch gave the stranded ones
/// their bootstrap servers back.
#[tokio::test(flavor = "multi_thread")]
async fn clients_stranded_without_brokers_by_a_shutting_down_broker_reconnect() {
    use rdkafka::client::ClientContext;
    use rdkafka::producer::{Producer, ThreadedProducer};
    use std::sync::atomic::AtomicBool;
    use weir::connectors::kafka::rebootstrap::{BrokerWatch, STATISTICS_INTERVAL_MS};

    /// A client context holding the watch, as weir's sink and source contexts do.
    struct Watched(BrokerWatch);
    impl ClientContext for Watched {
        fn stats_raw(&self, statistics: &[u8]) {
            self.0.observe(statistics);
        }
    }
    impl rdkafka::producer::ProducerContext for Watched {
        type DeliveryOpaque = ();
        fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
    }

    const CLIENTS: usize = 6;
    const RESTARTS: usize = 6;
    init_logs();
    let _turn = TURN.lock().await;
    let brokers = service_setting("WEIR_KAFKA_BROKERS", "127.0.0.1:9092");
    let clients: Vec<Arc<ThreadedProducer<Watched>>> = (0..CLIENTS)
        .map(|_| {
            let client: ThreadedProducer<Watched> = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
                .create_with_context(Watched(BrokerWatch::new("stranded-test", &brokers)))
                .unwrap();
            client.context().0.attach(client.client());
            Arc::new(client)
        })
        .collect();
    let stranded = || -> Vec<usize> {
        (0..CLIENTS)
            .filter(|&n| clients[n].context().0.restored() > 0)
            .collect()
    };
    let mut restarts = 0;
    while stranded().is_empty() {
        assert!(
            restarts < RESTARTS,
            "no client got a metadata answer without brokers in {RESTARTS} broker restarts; the test could not provoke what it checks"
        );
        restarts += 1;
        // Every client asks for metadata without pause while the broker stops.
        let asking = Arc::new(AtomicBool::new(true));
        let askers: Vec<_> = clients
            .iter()
            .map(|client| {
                let (client, asking) = (Arc::clone(client), Arc::clone(&asking));
                std::thread::spawn(move || {
                    while asking.load(Ordering::Relaxed) {
                        let _ = client
                            .client()
                            .fetch_metadata(None, Duration::from_millis(500));
                    }
                })
            })
            .collect();
        let outage = Outage::begin("kafka");
        asking.store(false, Ordering::Relaxed);
        for asker in askers {
            asker.join().unwrap();
        }
        outage.end();
        // A stranded client is noticed at its next statistics report; give each a few.
        let interval = Duration::from_millis(STATISTICS_INTERVAL_MS.parse().unwrap());
        let reports_due = Instant::now() + 3 * interval;
        while stranded().is_empty() && Instant::now() < reports_due {
            tokio::time::sleep(interval / 4).await;
        }
    }
    let stranded = stranded();
    for (n, client) in clients.iter().enumerate() {
        let client = Arc::clone(client);
        wait_until(
            Duration::from_secs(120),
            move || {
                client
                    .client()
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok_and(|metadata| !metadata.brokers().is_empty())
            },
            || {
                format!(
                    "client {n} to reach the restarted broker (stranded without brokers: {})",
                    stranded.contains(&n)
                )
            },
        )
        .await;
    }
    println!(
        "broker restarts {restarts}; clients stranded without brokers {} of {CLIENTS}; all reconnected",
        stranded.len()
    );
}
