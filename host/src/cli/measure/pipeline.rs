//! `weir bench pipeline`: sustained throughput of whole pipelines over real Kafka and Cassandra,
//! as ratios to a consumer that only reads (the ceiling), plus end-to-end latency of
//! Kafka -> user-profile -> Cassandra under a steady produce rate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;

use super::{BenchError, quantile};
use weir::config::PipelineFile;
use weir::connectors::{ConnectorError, Rejected, Sink};
use weir::generator::UserGenerator;
use weir::pipeline::{self, Connectors, PipelineStats};
use weir::record::Record;
use weir::registry::{Deployer, PluginRegistry, PluginSlots};
use weir::runtime::PluginRuntime;

/// Where the services are and what to run.
#[derive(Debug, Clone)]
pub struct PipelineBench {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// A Cassandra contact point.
    pub cassandra: String,
    /// The registry folder holding `user-profile.wasm`.
    pub registry: PathBuf,
    /// Records pre-loaded and drained per throughput run.
    pub records: usize,
    /// Records per second produced during the latency run.
    pub latency_rate: f64,
    /// Seconds the latency run lasts.
    pub latency_seconds: f64,
}

/// One throughput run.
#[derive(Debug, Clone)]
pub struct ThroughputLine {
    /// What ran.
    pub name: &'static str,
    /// Records per second.
    pub per_second: f64,
}

/// What the pipeline benchmark measured.
#[derive(Debug, Clone)]
pub struct PipelineReportBench {
    /// Throughput runs; the first is the read-only ceiling.
    pub throughput: Vec<ThroughputLine>,
    /// End-to-end latencies (Kafka create time to Cassandra acknowledgement), sorted.
    pub latencies: Vec<Duration>,
}

/// Records per record timestamp how long after its creation it was acknowledged. Forks with
/// the sink it wraps, so the pipeline writes as many batches at once as it would without it.
struct LatencySink {
    inner: Box<dyn Sink>,
    samples: Arc<Mutex<Vec<Duration>>>,
}

#[async_trait]
impl Sink for LatencySink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let rejected = self.inner.write(records).await?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.extend(
            records
                .iter()
                .filter_map(|r| r.timestamp)
                .map(|created| Duration::from_millis((now - created).max(0) as u64)),
        );
        Ok(rejected)
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        self.inner.close().await
    }

    fn fork(&self) -> Option<Box<dyn Sink>> {
        Some(Box::new(LatencySink {
            inner: self.inner.fork()?,
            samples: Arc::clone(&self.samples),
        }))
    }
}

/// Work that runs while a pipeline drains (the latency run's producer).
type Concurrent =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BenchError>> + Send>>;

fn setup(error: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(error.to_string())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

async fn create_topic(brokers: &str, topic: &str) -> Result<(), BenchError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(setup)?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(setup)?;
    for result in results {
        result.map_err(|(topic, code)| setup(format!("cannot create {topic}: {code}")))?;
    }
    Ok(())
}

/// Produces `count` users to `topic`, at `rate` records/s when given, else as fast as possible.
async fn produce(
    brokers: &str,
    topic: &str,
    count: usize,
    seed: u64,
    rate: Option<f64>,
) -> Result<(), BenchError> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .map_err(setup)?;
    let mut generator = UserGenerator::new(seed);
    let started = Instant::now();
    let mut sent = 0;
    while sent < count {
        let chunk = if rate.is_some() { 20 } else { 1000 }.min(count - sent);
        let users: Vec<(String, String)> = (0..chunk)
            .map(|_| {
                let user = generator.next_user();
                (
                    user["login"]["uuid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    user.to_string(),
                )
            })
            .collect();
        let deliveries = users.iter().map(|(key, value)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(30),
            )
        });
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|(e, _)| setup(format!("produce failed: {e}")))?;
        }
        sent += chunk;
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    Ok(())
}

/// Runs one pipeline from TOML until `records` inputs were acknowledged; returns records/s and
/// the sink's latency samples.
async fn drain(
    toml: &str,
    slots: &PluginSlots,
    records: usize,
    during: Option<Concurrent>,
) -> Result<(f64, Vec<Duration>), BenchError> {
    let file = PipelineFile::parse(Path::new("bench.toml"), toml).map_err(setup)?;
    let config = file
        .pipelines
        .into_iter()
        .next()
        .ok_or_else(|| setup("no pipeline"))?;
    let chain = pipeline::build_chain(&config, slots).map_err(setup)?;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sink = LatencySink {
        inner: config.sink.build(false).await.map_err(setup)?,
        samples: Arc::clone(&samples),
    };
    let connectors = Connectors {
        source: config.source.build().await.map_err(setup)?,
        sink: Box::new(sink),
        dead_letter: config.dead_letter.build(true).await.map_err(setup)?,
    };
    let stats = Arc::new(PipelineStats::default());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let started = Instant::now();
    let run = tokio::spawn(pipeline::run_with(
        config,
        connectors,
        chain,
        Arc::clone(&stats),
        shutdown_rx,
    ));
    if let Some(during) = during {
        during.await?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    // Joining a consumer group takes seconds; time from the first acknowledged batch on.
    let mut first: Option<(Instant, u64)> = None;
    while (stats.snapshot("bench").records_in as usize) < records {
        let done = stats.snapshot("bench").records_in;
        if first.is_none() && done > 0 {
            first = Some((Instant::now(), done));
        }
        if Instant::now() > deadline || run.is_finished() {
            let _ = shutdown.send(true);
            let outcome = run.await.map_err(setup)?;
            return Err(setup(format!(
                "only {} of {records} records were processed ({:?})",
                stats.snapshot("bench").records_in,
                outcome.err()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (timed_from, already) = first.unwrap_or((started, 0));
    let elapsed = timed_from.elapsed();
    let _ = shutdown.send(true);
    run.await.map_err(setup)?.map_err(setup)?;
    let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    samples.sort();
    Ok((
        (records as u64 - already) as f64 / elapsed.as_secs_f64(),
        samples,
    ))
}

/// Runs the benchmark.
pub async fn run(bench: &PipelineBench) -> Result<PipelineReportBench, BenchError> {
    let (brokers, nodes) = (&bench.brokers, &bench.cassandra);
    let input = unique("bench_users");
    let output = unique("bench_profiles");
    let keyspace = unique("weir_bench");
    create_topic(brokers, &input).await?;
    create_topic(brokers, &output).await?;
    produce(brokers, &input, bench.records, 1, None).await?;

    let dead_letter = format!(
        "{}/weir-bench-dead-letters-{}.jsonl",
        std::env::temp_dir().display(),
        std::process::id()
    );
    let pipeline_toml = |group: &str, transforms: &str, sink: &str| {
        format!(
            r#"
            [[pipeline]]
            name = "bench"
            source = {{ type = "kafka", brokers = "{brokers}", topics = ["{input}"], group = "{group}" }}
            transforms = [{transforms}]
            dead_letter = {{ type = "file", path = "{dead_letter}" }}
            batch = {{ size = 512, linger_ms = 5, max_in_flight = 8 }}
            [pipeline.sink]
            {sink}
            "#
        )
    };
    let cassandra_sink = format!(
        r#"type = "cassandra"
            nodes = ["{nodes}"]
            keyspace = "{keyspace}"
            table = "created_users"
            consistency = "one"
            concurrency = 128
            create = {{ primary_key = ["id"], columns = {{ id = "uuid", first_name = "text", last_name = "text", gender = "text", address = "text", post_code = "text", email = "text", username = "text", dob = "text", registered_date = "text", phone = "text", picture = "text" }} }}"#
    );
    let file = PipelineFile::parse(
        Path::new("bench.toml"),
        &pipeline_toml(
            "g",
            r#"{ plugin = "user-profile" }"#,
            r#"type = "blackhole""#,
        ),
    )
    .map_err(setup)?;
    let slots = PluginSlots::default();
    let deployer = Deployer::new(
        PluginRegistry::new(&bench.registry),
        PluginRuntime::new(None).map_err(setup)?,
        slots.clone(),
        &file,
    );
    deployer.deploy("user-profile").map_err(setup)?;

    let runs: [(&'static str, &str, String); 4] = [
        (
            "kafka -> blackhole (read-only ceiling)",
            "",
            r#"type = "blackhole""#.to_owned(),
        ),
        (
            "kafka -> user-profile -> blackhole",
            r#"{ plugin = "user-profile" }"#,
            r#"type = "blackhole""#.to_owned(),
        ),
        (
            "kafka -> user-profile -> kafka",
            r#"{ plugin = "user-profile" }"#,
            format!(
                r#"type = "kafka"
            brokers = "{brokers}"
            topic = "{output}""#
            ),
        ),
        (
            "kafka -> user-profile -> cassandra",
            r#"{ plugin = "user-profile" }"#,
            cassandra_sink.clone(),
        ),
    ];
    let mut throughput = Vec::new();
    // The four throughput runs, then the latency run.
    let progress = weir::progress::start(
        &format!("bench pipeline ({} records a run)", bench.records),
        Some(runs.len() as u64 + 1),
        "runs",
    );
    for (name, transforms, sink) in runs {
        progress.println(&format!("running {name} over {} records...", bench.records));
        let toml = pipeline_toml(&unique("group"), transforms, &sink);
        let (per_second, _) = drain(&toml, &slots, bench.records, None).await?;
        progress.advance(1, &format!("{name}: {per_second:.0} records/s"));
        throughput.push(ThroughputLine { name, per_second });
    }

    progress.println(&format!(
        "measuring latency at {} records/s for {} s...",
        bench.latency_rate, bench.latency_seconds
    ));
    // A group that starts at the end: it sees only the records produced while it runs.
    let latency_records = (bench.latency_rate * bench.latency_seconds) as usize;
    let toml = pipeline_toml(
        &unique("latency"),
        r#"{ plugin = "user-profile" }"#,
        &cassandra_sink,
    )
    .replace("group = ", "offset_reset = \"latest\", group = ");
    let (brokers_owned, input_owned, rate) = (brokers.clone(), input.clone(), bench.latency_rate);
    let producing = Box::pin(async move {
        // Give the consumer time to join its group before the timed records start.
        tokio::time::sleep(Duration::from_secs(5)).await;
        produce(&brokers_owned, &input_owned, latency_records, 2, Some(rate)).await
    });
    let (_, latencies) = drain(&toml, &slots, latency_records, Some(producing)).await?;
    progress.advance(1, &format!("latency: {} samples", latencies.len()));
    progress.finish("measured");
    let _ = std::fs::remove_file(&dead_letter);
    Ok(PipelineReportBench {
        throughput,
        latencies,
    })
}

impl PipelineReportBench {
    /// The latency at quantile `q`.
    pub fn latency(&self, q: f64) -> Duration {
        quantile(&self.latencies, q).unwrap_or_default()
    }
}
