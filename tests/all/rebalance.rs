//! The Kafka source as a consumer-group member: rebalances while records flow (a second weir
//! joins the group, then leaves it; each member drains and commits a partition before giving it
//! up, so across both outputs every record arrives exactly once), a transform worker per
//! assigned partition, each partition in order, and partitions read in turn.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;

use crate::support::{kafka_brokers, plugin_registry, send_numbered, unique, wait_for};

/// Records produced in all.
const RECORDS: u32 = 12_000;
/// Records per produce step, one step every 50 ms: about 6 s of traffic.
const STEP: u32 = 100;

/// One weir process: a pipeline of the shared group writing to its own file, reading each
/// partition from its own queue when `in_turn`.
async fn member(
    name: &str,
    brokers: &str,
    topic: &str,
    group: &str,
    dir: &Path,
    in_turn: bool,
) -> RunningApp {
    let toml = format!(
        r#"
        [[pipeline]]
        name = "{name}"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}", read_partitions_in_turn = {in_turn} }}
        sink = {{ type = "file", path = "{out}", fsync = true }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        batch = {{ size = 10, linger_ms = 5 }}
        "#,
        out = dir.join(format!("{name}.jsonl")).display(),
        dlq = dir.join(format!("{name}.dlq.jsonl")).display(),
    );
    let file = PipelineFile::parse(Path::new("rebalance.toml"), &toml).unwrap();
    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    RunningApp::start(file, options).await.unwrap()
}

/// How many times each `n` was written to the outputs of `names`.
fn deliveries(dir: &Path, names: &[&str]) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    for name in names {
        let text = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap_or_default();
        // A line being written right now may be partial; only complete lines count.
        for line in text.lines() {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(n) = value["n"].as_u64()
            {
                *seen.entry(n).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// Waits until every record below `count` is in the outputs of `names`; fails naming the
/// missing ones after two minutes.
async fn wait_for_every_record(dir: &Path, names: &[&str], count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while deliveries(dir, names).len() < count as usize {
        if tokio::time::Instant::now() >= deadline {
            let seen = deliveries(dir, names);
            let missing: Vec<u64> = (0..count).filter(|n| !seen.contains_key(n)).collect();
            panic!(
                "{} record(s) never arrived after 120 s, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(20)]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Record `n` was sent to partition `n % partitions` in increasing `n`: each partition's
/// records in `ns` must keep that order, and the partitions share them evenly.
fn assert_each_partition_in_order(ns: &[u64], partitions: u64) {
    for partition in 0..partitions {
        let order: Vec<u64> = ns
            .iter()
            .copied()
            .filter(|n| n % partitions == partition)
            .collect();
        assert!(
            order.windows(2).all(|pair| pair[0] < pair[1]),
            "partition {partition} out of order"
        );
        assert_eq!(order.len() as u64, ns.len() as u64 / partitions);
    }
}

async fn stop(app: RunningApp) {
    app.shutdown_handle().send(true).unwrap();
    for (name, result) in app.wait().await {
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_joining_and_leaving_mid_stream_loses_and_repeats_nothing() {
    joining_and_leaving(false).await;
}

/// The same with each partition read from its own librdkafka queue: the queues of the
/// partitions that move are split off before they are fetched and dropped when revoked.
#[tokio::test(flavor = "multi_thread")]
async fn with_partitions_read_in_turn_a_member_joining_and_leaving_loses_and_repeats_nothing() {
    joining_and_leaving(true).await;
}

/// A second member joins the group mid-stream and leaves again; across both outputs every
/// record arrives exactly once.
async fn joining_and_leaving(in_turn: bool) {
    crate::support::init_logs();
    let brokers = kafka_brokers();
    let topic = unique("rebalance");
    let group = unique("rebalance-group");
    crate::services::create_topic(&brokers, &topic, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let producer_brokers = brokers.clone();
    let producer_topic = topic.clone();
    let producing = tokio::spawn(async move {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &producer_brokers)
            .create()
            .unwrap();
        let mut ticker = tokio::time::interval(Duration::from_millis(50));
        for start in (0..RECORDS).step_by(STEP as usize) {
            ticker.tick().await;
            // Record n goes to partition n % 4, so a gap names its partition.
            send_numbered(
                &producer,
                &producer_topic,
                4,
                u64::from(start)..u64::from(start + STEP),
                Duration::from_secs(30),
            )
            .await;
        }
    });

    let first = member("first", &brokers, &topic, &group, dir, in_turn).await;
    wait_for(
        "the first member to write",
        Duration::from_secs(120),
        || deliveries(dir, &["first"]).len() >= 1_000,
    )
    .await;
    // A second member joins: the first drains and commits what it gives up.
    let second = member("second", &brokers, &topic, &group, dir, in_turn).await;
    wait_for(
        "the second member to be given partitions",
        Duration::from_secs(120),
        || deliveries(dir, &["second"]).len() >= 500,
    )
    .await;
    // It leaves again: its partitions return to the first member.
    stop(second).await;
    let after_leaving = deliveries(dir, &["second"]).len();
    producing.await.unwrap();
    wait_for_every_record(dir, &["first", "second"], u64::from(RECORDS)).await;
    stop(first).await;

    let seen = deliveries(dir, &["first", "second"]);
    assert_eq!(seen.len(), RECORDS as usize, "nothing lost");
    assert_eq!(
        deliveries(dir, &["second"]).len(),
        after_leaving,
        "the member that left wrote nothing after"
    );
    let repeated: Vec<_> = seen.iter().filter(|&(_, &count)| count > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} record(s) were delivered twice across two rebalances, e.g. {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_starts_for_each_partition_and_each_partition_stays_in_order() {
    let brokers = kafka_brokers();
    let topic = unique("per-partition");
    crate::services::create_topic(&brokers, &topic, 3).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    // Record n goes to partition n % 3, in increasing n within each partition.
    for n in 0..3_000u32 {
        let payload = format!("{{\"n\":{n}}}");
        producer
            .send(
                FutureRecord::<str, str>::to(&topic)
                    .partition((n % 3) as i32)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let toml = format!(
        r#"
        [[pipeline]]
        name = "partitioned"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}" }}
        transforms = [{{ plugin = "pii-mask", config = {{ fields = "secret" }} }}]
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        batch = {{ size = 64, linger_ms = 5 }}
        "#,
        group = unique("per-partition-group"),
        out = out.display(),
        dlq = dir.path().join("dlq.jsonl").display(),
    );
    let file = PipelineFile::parse(Path::new("partitioned.toml"), &toml).unwrap();
    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    options.admin = Some("127.0.0.1:0".parse().unwrap());
    let app = RunningApp::start(file, options).await.unwrap();
    let status_url = format!("http://{}/api/status", app.admin_addr().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status: serde_json::Value = reqwest::get(&status_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["pipelines"][0]["records_out"] == 3_000 {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything arrived: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status["pipelines"][0]["workers"], 3,
        "one worker per partition"
    );
    stop(app).await;

    let ns: Vec<u64> = crate::support::read_json_lines(&out)
        .iter()
        .map(|record| record["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns.len(), 3_000);
    assert_each_partition_in_order(&ns, 3);
}

/// A topic whose partitions each hold thousands of records before the pipeline starts: one fetch
/// brings them all, and librdkafka's consumer queue would hand them out a whole partition after
/// another. With `read_partitions_in_turn` the source reads each partition's own queue in turn,
/// so with one worker (the output in the order read) the partitions alternate every batch or so.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_fetched_together_are_read_in_turn_not_one_whole_partition_after_another() {
    const PER_PARTITION: u64 = 4_000;
    const BATCH: u64 = 64;
    let brokers = kafka_brokers();
    let topic = unique("in-turn");
    crate::services::create_topic(&brokers, &topic, 3).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    send_numbered(
        &producer,
        &topic,
        3,
        0..3 * PER_PARTITION,
        Duration::from_secs(30),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let toml = format!(
        r#"
        [[pipeline]]
        name = "in-turn"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}", read_partitions_in_turn = true }}
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        batch = {{ size = {BATCH}, linger_ms = 5 }}
        workers = 1
        "#,
        group = unique("in-turn-group"),
        out = out.display(),
        dlq = dir.path().join("dlq.jsonl").display(),
    );
    let file = PipelineFile::parse(Path::new("in-turn.toml"), &toml).unwrap();
    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    let app = RunningApp::start(file, options).await.unwrap();
    let all = (3 * PER_PARTITION) as usize;
    wait_for("every record written", Duration::from_secs(120), || {
        crate::support::line_count(&out) >= all
    })
    .await;
    stop(app).await;

    let ns: Vec<u64> = crate::support::read_json_lines(&out)
        .iter()
        .map(|record| record["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns.len(), all, "each record once");
    assert_each_partition_in_order(&ns, 3);
    let partitions: Vec<u64> = ns.iter().map(|n| n % 3).collect();
    // Runs of one partition in the order read.
    let mut runs: Vec<usize> = vec![1];
    for pair in partitions.windows(2) {
        if pair[0] == pair[1] {
            *runs.last_mut().unwrap() += 1;
        } else {
            runs.push(1);
        }
    }
    let longest = runs.iter().copied().max().unwrap();
    // Read one partition after another, there would be 3 runs of 4,000; read in turns of a
    // batch, about 190 runs of 64. The bound leaves room for partitions whose records reach
    // their queues later than the others': with three busy loops beside the test on two
    // cores, one partition was often read alone for 2,000 to 3,600 records before the others
    // arrived, leaving 140 to 150 runs. When a turn was the polling thread's run of 256
    // records instead of a batch, such a start left 21 to 45 runs.
    assert!(
        runs.len() >= 30,
        "{} runs of one partition, the longest {longest} records: the partitions were not read \
         in turn; the first runs as (records, partition): {:?}",
        runs.len(),
        runs.iter()
            .zip(run_partitions(&partitions))
            .take(20)
            .collect::<Vec<_>>()
    );
}

/// The partition of each run in `partitions`, the partitions of records in the order read.
fn run_partitions(partitions: &[u64]) -> Vec<u64> {
    let mut out = vec![partitions[0]];
    for pair in partitions.windows(2) {
        if pair[0] != pair[1] {
            out.push(pair[1]);
        }
    }
    out
}

/// Partitions added to a topic while weir reads it (`kafka-topics.sh --alter --partitions`) are
/// found at the next metadata refresh, here every second, and read from their first record:
/// what was produced to them before weir was assigned them is not skipped.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_added_mid_stream_are_read_from_their_first_record() {
    partitions_added_mid_stream(false).await;
}

/// The same with each partition read from its own queue, which the new partitions get too.
#[tokio::test(flavor = "multi_thread")]
async fn with_partitions_read_in_turn_partitions_added_mid_stream_are_read_whole() {
    partitions_added_mid_stream(true).await;
}

async fn partitions_added_mid_stream(in_turn: bool) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;
    crate::support::init_logs();
    let brokers = kafka_brokers();
    let topic = unique("growing");
    crate::services::create_topic(&brokers, &topic, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let toml = format!(
        r#"
        [[pipeline]]
        name = "growing"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}", read_partitions_in_turn = {in_turn}, properties = {{ "topic.metadata.refresh.interval.ms" = "1000" }} }}
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        batch = {{ size = 10, linger_ms = 5 }}
        "#,
        group = unique("growing-group"),
        out = dir.join("growing.jsonl").display(),
        dlq = dir.join("growing.dlq.jsonl").display(),
    );
    let file = PipelineFile::parse(Path::new("growing.toml"), &toml).unwrap();
    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    let app = RunningApp::start(file, options).await.unwrap();

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    // Records 0..200 go to partition n % 2.
    send_numbered(&producer, &topic, 2, 0..200, Duration::from_secs(30)).await;
    wait_for("the first 200 records", Duration::from_secs(120), || {
        deliveries(dir, &["growing"]).len() >= 200
    })
    .await;

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for result in admin
        .create_partitions(
            &[NewPartitions::new(&topic, 4)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap()
    {
        result.unwrap();
    }
    // Records 200..600 go to partition n % 4, half of them to the two new partitions, sent at
    // once: weir cannot have been assigned those yet. A producer that started before the
    // partitions existed learns of them with its next metadata refresh.
    let grown: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    wait_for_partitions(&grown, &topic, 4).await;
    send_numbered(&grown, &topic, 4, 200..600, Duration::from_secs(30)).await;
    wait_for_every_record(dir, &["growing"], 600).await;
    stop(app).await;

    let seen = deliveries(dir, &["growing"]);
    assert_eq!(seen.len(), 600);
    let repeated: Vec<_> = seen.iter().filter(|&(_, &count)| count > 1).collect();
    assert!(repeated.is_empty(), "delivered twice: {repeated:?}");
    // Each partition's records in the order they were sent.
    let ns: Vec<u64> = crate::support::read_json_lines(&dir.join("growing.jsonl"))
        .iter()
        .map(|record| record["n"].as_u64().unwrap())
        .collect();
    for partition in 0..4 {
        let order: Vec<u64> = ns
            .iter()
            .copied()
            .filter(|&n| if n < 200 { n % 2 } else { n % 4 } == partition)
            .collect();
        assert!(
            order.windows(2).all(|pair| pair[0] < pair[1]),
            "partition {partition} out of order: {order:?}"
        );
    }
}

/// Waits until `producer`'s client knows `count` partitions of `topic`.
async fn wait_for_partitions(producer: &FutureProducer, topic: &str, count: usize) {
    use rdkafka::producer::Producer;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .unwrap();
        if metadata.topics()[0].partitions().len() == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker does not report {count} partitions of {topic} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
