//! Scaling out and failing over as separate `weir run` processes in one consumer group: with
//! cooperative-sticky assignment a member joining, leaving (SIGTERM) or dying (SIGKILL) moves
//! only the partitions that must move, every record arrives, and duplicates come only from the
//! dead member's unacknowledged batches. And a member whose sink stalls for longer than
//! `max_poll_interval_ms` stays in the group (it keeps polling with its partitions paused) while
//! another joins: the rebalance completes and nothing is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;

use crate::services::create_topic;
use crate::support::{
    StallingProxy, kafka_brokers, postgres_client, postgres_url, send_numbered, unique, wait_for,
    weir,
};

/// One `weir run` process of the group, logging JSON to a file.
struct Member {
    name: String,
    child: Child,
    log: PathBuf,
    out: PathBuf,
}

/// A rebalance callback as the member logged it.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Assigned(Vec<i32>),
    Revoked { partitions: Vec<i32>, lost: bool },
}

impl Member {
    /// Starts `weir run` on a pipeline called `name` of the group, with `source_extra` appended
    /// to its source table and `sink` as its sink table.
    fn start(dir: &Path, name: &str, source: &str, sink: &str) -> Member {
        let out = dir.join(format!("{name}.jsonl"));
        let toml = format!(
            "[[pipeline]]\nname = \"{name}\"\nsource = {{ {source} }}\nsink = {{ {sink} }}\ndead_letter = {{ type = \"file\", path = \"{name}.dlq.jsonl\" }}\nbatch = {{ size = 50, linger_ms = 5 }}\n",
            sink = sink.replace("@OUT@", &out.display().to_string()),
        );
        std::fs::write(dir.join(format!("{name}.toml")), toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let child = weir()
            .current_dir(dir)
            .args([
                "run",
                &format!("{name}.toml"),
                "--no-watch",
                "--admin",
                "127.0.0.1:0",
            ])
            .env("WEIR_PLUGINS", &plugins)
            .env("WEIR_LOG", "info")
            .env("WEIR_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Member {
            name: name.to_owned(),
            child,
            log,
            out,
        }
    }

    /// The rebalance callbacks it logged so far, in order.
    fn events(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|line| {
                let partitions = || -> Vec<i32> {
                    line["partitions"]
                        .as_str()
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|p| p.rsplit_once('/')?.1.parse().ok())
                        .collect()
                };
                match line["message"].as_str()? {
                    "Partitions assigned." => Some(Event::Assigned(partitions())),
                    "Partitions revoked." => Some(Event::Revoked {
                        partitions: partitions(),
                        lost: line["lost"].as_bool().unwrap_or(false),
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// The partitions it owns by its log.
    fn owned(&self) -> BTreeSet<i32> {
        let mut owned = BTreeSet::new();
        for event in self.events() {
            match event {
                Event::Assigned(partitions) => owned.extend(partitions),
                Event::Revoked { partitions, .. } => {
                    for p in partitions {
                        owned.remove(&p);
                    }
                }
            }
        }
        owned
    }

    /// Every partition ever revoked from it.
    fn revoked(&self) -> Vec<(i32, bool)> {
        self.events()
            .into_iter()
            .flat_map(|event| match event {
                Event::Revoked { partitions, lost } => {
                    partitions.into_iter().map(|p| (p, lost)).collect()
                }
                Event::Assigned(_) => Vec::new(),
            })
            .collect()
    }

    /// Every partition ever assigned to it.
    fn assigned(&self) -> BTreeSet<i32> {
        self.events()
            .into_iter()
            .flat_map(|event| match event {
                Event::Assigned(partitions) => partitions,
                Event::Revoked { .. } => Vec::new(),
            })
            .collect()
    }

    fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {}", self.name);
    }

    /// SIGTERM, then the exit, which must be clean.
    fn terminate(mut self) {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "{} exits 0 on SIGTERM: {status}",
            self.name
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many times each `n` is in each of `files` (complete JSON lines only).
fn numbers_in(file: &Path) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for line in text.lines() {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line)
            && let Some(n) = value["n"].as_u64()
        {
            *seen.entry(n).or_insert(0) += 1;
        }
    }
    seen
}

/// How many times each `n` is in all of `files` together.
fn numbers_in_all(files: &[PathBuf]) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    for file in files {
        for (n, count) in numbers_in(file) {
            *seen.entry(n).or_insert(0) += count;
        }
    }
    seen
}

/// Fails naming the first few of `0..total` that are not in `seen`.
fn assert_none_lost(seen: &BTreeMap<u64, u32>, total: u64) {
    let missing: Vec<u64> = (0..total).filter(|n| !seen.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// The numbers seen more than once.
fn repeated(seen: &BTreeMap<u64, u32>) -> Vec<u64> {
    seen.iter()
        .filter(|&(_, &count)| count > 1)
        .map(|(&n, _)| n)
        .collect()
}

/// Produces `{"n": N}` to partition N % `partitions`, `step` records every 50 ms, until `stop`;
/// returns how many.
fn produce_until(
    brokers: &str,
    topic: &str,
    partitions: u64,
    step: u64,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::spawn(async move {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let mut ticker = tokio::time::interval(Duration::from_millis(50));
        let mut next = 0u64;
        while !stop.load(Ordering::SeqCst) {
            ticker.tick().await;
            send_numbered(
                &producer,
                &topic,
                partitions,
                next..next + step,
                Duration::from_secs(30),
            )
            .await;
            next += step;
            produced.store(next, Ordering::SeqCst);
        }
        next
    })
}

fn kafka_source(brokers: &str, topic: &str, group: &str, extra: &str) -> String {
    format!(
        "type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{group}\", session_timeout_ms = 6000, heartbeat_interval_ms = 1000{extra}"
    )
}

const FILE_SINK: &str = "type = \"file\", path = \"@OUT@\", fsync = true";

#[tokio::test(flavor = "multi_thread")]
async fn three_processes_join_leave_and_die_and_only_the_moved_partitions_stop() {
    const PARTITIONS: u64 = 6;
    let brokers = kafka_brokers();
    let topic = unique("failover");
    let group = unique("failover-group");
    create_topic(&brokers, &topic, PARTITIONS as i32).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let source = kafka_source(&brokers, &topic, &group, "");
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producing = produce_until(
        &brokers,
        &topic,
        PARTITIONS,
        60,
        Arc::clone(&stop),
        Arc::clone(&produced),
    );
    let started = Instant::now();
    let all: BTreeSet<i32> = (0..PARTITIONS as i32).collect();
    let writes = |member: &Member| numbers_in(&member.out).len();

    let first = Member::start(dir, "first", &source, FILE_SINK);
    let second = Member::start(dir, "second", &source, FILE_SINK);
    wait_for(
        "the first two members to share the partitions",
        Duration::from_secs(120),
        || {
            let (a, b) = (first.owned(), second.owned());
            a.len() + b.len() == PARTITIONS as usize
                && a.union(&b).copied().collect::<BTreeSet<_>>() == all
                && writes(&first) > 0
                && writes(&second) > 0
        },
    )
    .await;
    println!(
        "two members own {:?} and {:?} after {:?}",
        first.owned(),
        second.owned(),
        started.elapsed()
    );

    // A third member joins mid-stream.
    let joining = Instant::now();
    let third = Member::start(dir, "third", &source, FILE_SINK);
    wait_for(
        "the third member to take its share",
        Duration::from_secs(120),
        || {
            let (a, b, c) = (first.owned(), second.owned(), third.owned());
            !c.is_empty()
                && a.len() + b.len() + c.len() == PARTITIONS as usize
                && writes(&third) > 0
        },
    )
    .await;
    println!(
        "join: third owns {:?} (first {:?}, second {:?}) {:?} after it started",
        third.owned(),
        first.owned(),
        second.owned(),
        joining.elapsed()
    );

    // The second leaves with SIGTERM: it drains, commits and leaves the group.
    let leaving = Instant::now();
    let second_had = second.owned();
    let second_written = numbers_in(&second.out);
    let second_out = second.out.clone();
    let second_log = second.log_text();
    let second_revoked = second.revoked();
    let second_assigned = second.assigned();
    second.terminate();
    wait_for(
        "the others to take the leaver's partitions",
        Duration::from_secs(120),
        || first.owned().len() + third.owned().len() == PARTITIONS as usize,
    )
    .await;
    println!(
        "leave (SIGTERM): {second_had:?} moved in {:?}; first owns {:?}, third {:?}",
        leaving.elapsed(),
        first.owned(),
        third.owned()
    );

    // The first dies with SIGKILL: no drain, no commit, no leave.
    let killed_partitions = first.owned();
    let mut first = first;
    let killing = Instant::now();
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    wait_for(
        "the survivor to take the dead member's partitions",
        Duration::from_secs(120),
        || third.owned() == all,
    )
    .await;
    println!(
        "kill (SIGKILL): {killed_partitions:?} resumed by the survivor {:?} after the kill",
        killing.elapsed()
    );
    // Let the survivor process records of every partition produced after the take-over.
    let taken_over = produced.load(Ordering::SeqCst);
    wait_for(
        "records after the take-over",
        Duration::from_secs(60),
        || produced.load(Ordering::SeqCst) >= taken_over + 600,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let total = producing.await.unwrap();

    let outputs = [first.out.clone(), second_out.clone(), third.out.clone()];
    let union = || numbers_in_all(&outputs);
    wait_for("every record", Duration::from_secs(120), || {
        union().len() as u64 >= total
    })
    .await;
    let third_events = third.events();
    let third_revoked = third.revoked();
    let third_assigned = third.assigned();
    third.terminate();

    let seen = union();
    assert_none_lost(&seen, total);
    let first_written = numbers_in(&first.out);
    let duplicates = repeated(&seen);
    println!(
        "records {total}, lost 0, duplicates {} (all from the killed member's unacknowledged batches)",
        duplicates.len()
    );
    for n in &duplicates {
        assert!(
            killed_partitions.contains(&((n % PARTITIONS) as i32)) && first_written.contains_key(n),
            "record {n} was repeated but is not from the killed member's partitions {killed_partitions:?}"
        );
    }
    assert!(
        second_written.values().all(|&c| c == 1),
        "the member that left repeated nothing"
    );

    // Nobody lost a partition it was not asked to give up. The third member only ever gained
    // (it joined, then the others left or died); under an eager assignor each of those
    // rebalances would have revoked everything it owned.
    assert!(
        third_revoked.is_empty(),
        "the third member had {third_revoked:?} revoked: {third_events:?}"
    );
    // What the first two gave up when the third joined moved to the third, and never came
    // back to them (an eager assignor revokes everything and hands most of it back).
    let first_revoked = first.revoked();
    for (member, revoked, assigned) in [
        ("first", &first_revoked, first.assigned()),
        ("second", &second_revoked, second_assigned),
    ] {
        for &(partition, lost) in revoked.iter() {
            assert!(!lost, "{member} lost {partition} instead of giving it up");
            assert!(
                third_assigned.contains(&partition),
                "{member} gave up {partition}, which did not move to the joining member"
            );
        }
        let revoked: BTreeSet<i32> = revoked.iter().map(|&(p, _)| p).collect();
        assert!(
            revoked.len() < assigned.len(),
            "{member} gave up {revoked:?} of {assigned:?} when the third joined: more than its share"
        );
    }
    assert!(
        second_log.contains("Partitions assigned."),
        "the second member's log is readable"
    );
}

/// The `n` of every row in the PostgreSQL landing `table`.
async fn numbers_in_table(url: &str, table: &str) -> BTreeSet<u64> {
    let client = postgres_client(url).await;
    let rows = client
        .query(&format!("SELECT (value->>'n')::bigint FROM {table}"), &[])
        .await
        .unwrap_or_default();
    rows.iter()
        .filter_map(|row| row.get::<_, Option<i64>>(0))
        .map(|n| n as u64)
        .collect()
}

/// Issue 12: the sink of one member stalls (a proxy in front of PostgreSQL stops forwarding)
/// for longer than a lowered `max_poll_interval_ms`, and a second member joins meanwhile. The
/// stalled member keeps polling with its partitions paused, so it is not evicted and serves
/// the rebalance: the partitions it gives up drain until `drain_timeout_ms`, then move; their
/// records still in its pipeline are written again by the new owner (counted), and their late
/// acknowledgements are never committed. Nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_stalled_past_max_poll_interval_stays_in_the_group_and_loses_nothing() {
    const PARTITIONS: u64 = 4;
    const RECORDS: u64 = 4_000;
    const MAX_POLL_INTERVAL: Duration = Duration::from_millis(6_000);
    let brokers = kafka_brokers();
    let url = postgres_url();
    let topic = unique("stalled");
    let group = unique("stalled-group");
    let table = unique("stalled_landing");
    create_topic(&brokers, &topic, PARTITIONS as i32).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producing = produce_until(
        &brokers,
        &topic,
        PARTITIONS,
        40,
        Arc::clone(&stop),
        Arc::clone(&produced),
    );

    let proxy = StallingProxy::to_postgres(&url).await;
    let proxied_url = proxy.url.clone();
    let extra = format!(
        ", max_poll_interval_ms = {}, drain_timeout_ms = 2000",
        MAX_POLL_INTERVAL.as_millis()
    );
    let source = kafka_source(&brokers, &topic, &group, &extra);
    let stalled = Member::start(
        dir,
        "stalled",
        &source,
        &format!(
            "type = \"postgres\", url = \"{proxied_url}\", table = \"{table}\", key_field = \"n\""
        ),
    );
    let rows = || {
        let (url, table) = (url.clone(), table.clone());
        async move { numbers_in_table(&url, &table).await }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while rows().await.len() < 200 {
        assert!(
            Instant::now() < deadline,
            "the first member never wrote: {}",
            stalled.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stalled.owned().len(), PARTITIONS as usize);

    // The sink stalls: its connection stays open and nothing comes back.
    proxy.stall(true);
    let stalling = Instant::now();
    // The stall must outlast max.poll.interval.ms before anyone joins.
    tokio::time::sleep(MAX_POLL_INTERVAL + Duration::from_secs(2)).await;
    let joining = Instant::now();
    let joiner = Member::start(dir, "joiner", &source, FILE_SINK);
    wait_for(
        "the joiner to take partitions and write",
        Duration::from_secs(120),
        || !joiner.owned().is_empty() && !numbers_in(&joiner.out).is_empty(),
    )
    .await;
    println!(
        "stalled for {:?}; the joiner got {:?} {:?} after it started; the stalled member kept {:?}",
        stalling.elapsed(),
        joiner.owned(),
        joining.elapsed(),
        stalled.owned()
    );
    assert!(
        !stalled.owned().is_empty(),
        "the stalled member kept the partitions it was not asked to give up: {:?}",
        stalled.events()
    );
    // Still stalled past another poll interval, then it recovers.
    tokio::time::sleep(MAX_POLL_INTERVAL).await;
    proxy.stall(false);
    println!("stall ended after {:?}", stalling.elapsed());
    wait_for("records after the stall", Duration::from_secs(60), || {
        produced.load(Ordering::SeqCst) >= RECORDS
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let total = producing.await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(180);
    let (in_table, in_file) = loop {
        let in_table = rows().await;
        let in_file: BTreeSet<u64> = numbers_in(&joiner.out).into_keys().collect();
        if in_table.union(&in_file).count() as u64 >= total {
            break (in_table, in_file);
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} arrived after the stall",
            in_table.union(&in_file).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let revoked: Vec<(i32, bool)> = stalled.revoked();
    let stalled_log = stalled.log_text();

    // The partitions the stalled member gave up while they were paused come back to it when the
    // joiner leaves. librdkafka keeps a partition paused across rebalances until it is resumed:
    // the member must fetch them again, or their records never arrive.
    joiner.terminate();
    wait_for(
        "the stalled member to own every partition again",
        Duration::from_secs(120),
        || stalled.owned().len() == PARTITIONS as usize,
    )
    .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let later = total..total + 400;
    send_numbered(
        &producer,
        &topic,
        PARTITIONS,
        later.clone(),
        Duration::from_secs(30),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let in_table = rows().await;
        let missing: BTreeSet<i32> = later
            .clone()
            .filter(|n| !in_table.contains(n))
            .map(|n| (n % PARTITIONS) as i32)
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records produced after the joiner left never arrived from partitions {missing:?} (given up while paused: {revoked:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stalled.terminate();

    let missing: Vec<u64> = (0..total)
        .filter(|n| !in_table.contains(n) && !in_file.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        revoked.iter().all(|&(_, lost)| !lost),
        "the stalled member was evicted (assignment lost) instead of serving the rebalance: {revoked:?}"
    );
    // The backlog filled the stalled member's buffer: after taking nothing for a while its
    // pipeline had the partitions paused (how the member kept polling), and resumed them after.
    assert!(
        stalled_log.contains("partitions paused") && stalled_log.contains("partitions resumed"),
        "the stalled member never paused and resumed its partitions: {stalled_log}"
    );
    assert!(
        !stalled_log.contains("MAX_POLL_EXCEEDED")
            && !stalled_log.contains("maximum poll interval"),
        "the stalled member exceeded max.poll.interval.ms"
    );
    let moved: BTreeSet<i32> = revoked.iter().map(|&(p, _)| p).collect();
    let duplicates: Vec<u64> = in_table.intersection(&in_file).copied().collect();
    println!(
        "records {total}, lost 0, written by both members {} (records of the moved partitions {moved:?} that were in the stalled pipeline)",
        duplicates.len()
    );
    for n in &duplicates {
        assert!(
            moved.contains(&((n % PARTITIONS) as i32)),
            "record {n} was written twice but its partition never moved"
        );
    }
}

/// Static membership (`instance_id`): a member killed with SIGKILL and started again with the
/// same `instance_id` within the session timeout takes its own partitions back without a
/// rebalance. The other member never gives up or gains a partition, and every record arrives.
#[tokio::test(flavor = "multi_thread")]
async fn a_static_member_restarted_within_the_session_timeout_takes_its_partitions_back_without_a_rebalance()
 {
    const PARTITIONS: u64 = 4;
    let brokers = kafka_brokers();
    let topic = unique("static");
    let group = unique("static-group");
    create_topic(&brokers, &topic, PARTITIONS as i32).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // A session timeout far longer than a restart takes on a loaded machine: the test never
    // waits for it to expire, it only needs the restarted member back before it does.
    let source = |instance: &str| {
        format!(
            "type = \"kafka\", brokers = \"{brokers}\", topics = [\"{topic}\"], group = \"{group}\", session_timeout_ms = 60000, heartbeat_interval_ms = 1000, instance_id = \"{instance}\""
        )
    };
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producing = produce_until(
        &brokers,
        &topic,
        PARTITIONS,
        40,
        Arc::clone(&stop),
        Arc::clone(&produced),
    );
    let all: BTreeSet<i32> = (0..PARTITIONS as i32).collect();

    // The steady member joins first, so it is the group's leader: the restarted member is then
    // a follower, whose return the coordinator answers from the stored assignment.
    let steady = Member::start(dir, "steady", &source("steady"), FILE_SINK);
    wait_for(
        "the first member to own every partition",
        Duration::from_secs(120),
        || steady.owned() == all,
    )
    .await;
    let restarted = Member::start(dir, "restarted", &source("restarted"), FILE_SINK);
    wait_for(
        "the two members to share the partitions and write",
        Duration::from_secs(120),
        || {
            let (a, b) = (steady.owned(), restarted.owned());
            !a.is_empty()
                && !b.is_empty()
                && a.len() + b.len() == PARTITIONS as usize
                && !numbers_in(&restarted.out).is_empty()
        },
    )
    .await;
    let its_partitions = restarted.owned();
    let steady_events_before = steady.events();

    let mut restarted = restarted;
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
    let restarting = Instant::now();
    let again = Member::start(dir, "again", &source("restarted"), FILE_SINK);
    wait_for(
        "the restarted member to get partitions and write",
        Duration::from_secs(120),
        || !again.owned().is_empty() && !numbers_in(&again.out).is_empty(),
    )
    .await;
    println!(
        "static member killed and restarted: {:?} back {:?} after the restart began",
        again.owned(),
        restarting.elapsed()
    );
    let resumed = produced.load(Ordering::SeqCst);
    wait_for("records after the restart", Duration::from_secs(60), || {
        produced.load(Ordering::SeqCst) >= resumed + 400
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let total = producing.await.unwrap();
    let outputs = [steady.out.clone(), restarted.out.clone(), again.out.clone()];
    let union = || numbers_in_all(&outputs);
    wait_for("every record", Duration::from_secs(120), || {
        union().len() as u64 >= total
    })
    .await;
    let steady_events_after = steady.events();
    let again_events = again.events();
    let again_assigned = again.assigned();
    steady.terminate();
    again.terminate();

    assert_eq!(
        again_assigned, its_partitions,
        "the restarted member got back exactly the partitions it had: {again_events:?}"
    );
    assert_eq!(
        steady_events_after, steady_events_before,
        "the steady member saw no rebalance while the other restarted"
    );
    let seen = union();
    assert_none_lost(&seen, total);
    let duplicates = repeated(&seen);
    println!(
        "records {total}, lost 0, duplicates {} (the killed member's unacknowledged batches)",
        duplicates.len()
    );
    for n in &duplicates {
        assert!(
            its_partitions.contains(&((n % PARTITIONS) as i32)),
            "record {n} was repeated but its partition was not the restarted member's"
        );
    }
}
