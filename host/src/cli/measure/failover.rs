//! `weir bench failover`: how long a killed member's partitions wait before another member (or
//! the member itself, restarted with static membership) resumes them, and how long the rest of
//! the group pauses meanwhile, measured on real `weir run` processes over real Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::BenchError;
use super::leftovers::{Cleanup, Leftovers};

/// How long after the take-over the other partitions' gaps are measured.
const AFTER: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Debug, Clone)]
pub struct FailoverBench {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The `weir` binary that runs the members.
    pub weir: PathBuf,
    /// Members of the group.
    pub members: usize,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Records per second produced, over all partitions.
    pub rate: f64,
    /// The source's `session_timeout_ms`; `None` keeps weir's default.
    pub session_timeout_ms: Option<u64>,
    /// Keep each run's topic and scratch folder instead of removing them when it ends.
    pub keep: bool,
}

/// One failover.
#[derive(Debug, Clone)]
pub struct FailoverLine {
    /// `dynamic` (the default) or `static` (restarted at once with the same `instance_id`).
    pub membership: &'static str,
    /// The partitions the killed member owned.
    pub killed_partitions: Vec<i32>,
    /// From the kill to the first record of each of them written again, longest.
    pub waited: Duration,
    /// The longest gap in the output of any other partition from the kill until 3 s after the
    /// take-over.
    pub others_longest_gap: Duration,
    /// The longest gap in any partition's output during the 3 s of steady flow before the kill:
    /// what the output's grain (batches, the producer's ticks, the 5 ms reads) alone gives, to
    /// compare the others' longest gap with.
    pub steady_longest_gap: Duration,
}

/// Runs a dynamic-membership failover (the member is killed and not restarted) and a
/// static-membership one (the member is killed and restarted at once), each followed by the
/// removal of what it created; on failure the removals so far are printed beside the error.
pub async fn run(bench: &FailoverBench) -> Result<(Vec<FailoverLine>, Vec<Cleanup>), BenchError> {
    let memberships = ["dynamic", "static"];
    let progress = weir::progress::start("bench failover", Some(memberships.len() as u64), "runs");
    let mut lines = Vec::new();
    let mut cleanups = Vec::new();
    for membership in memberships {
        progress.println(&format!("failing over a {membership} member..."));
        let (line, cleanup) = failover(bench, membership).await;
        cleanups.push(cleanup);
        let line = match line {
            Ok(line) => line,
            Err(error) => {
                for cleanup in &cleanups {
                    progress.println(&cleanup.to_string());
                }
                return Err(error);
            }
        };
        progress.advance(
            1,
            &format!(
                "{membership}: partitions waited {:.2} s",
                line.waited.as_secs_f64()
            ),
        );
        lines.push(line);
    }
    progress.finish("measured");
    Ok((lines, cleanups))
}

/// A `weir run` process writing to its own file.
struct Member {
    child: Child,
    out: PathBuf,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup(message: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(message.to_string())
}

fn start_member(
    bench: &FailoverBench,
    dir: &Path,
    file: &str,
    source: &str,
    instance: Option<usize>,
) -> Result<Member, BenchError> {
    let out = dir.join(format!("{file}.jsonl"));
    let instance_id = instance.map_or(String::new(), |i| format!(", instance_id = \"member-{i}\""));
    let toml = format!(
        "[[pipeline]]\nname = \"failover\"\nsource = {{ {source}{instance_id} }}\nsink = {{ type = \"file\", path = \"{}\" }}\ndead_letter = {{ type = \"file\", path = \"{}\" }}\nbatch = {{ size = 100, linger_ms = 5 }}\n",
        out.display(),
        dir.join(format!("{file}.dlq.jsonl")).display()
    );
    let config = dir.join(format!("{file}.toml"));
    std::fs::write(&config, toml).map_err(setup)?;
    let child = Command::new(&bench.weir)
        .arg("run")
        .arg(&config)
        .args(["--no-watch", "--admin", "127.0.0.1:0"])
        .env("WEIR_PLUGINS", dir)
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| setup(format!("cannot start {}: {e}", bench.weir.display())))?;
    Ok(Member { child, out })
}

/// Reads the complete lines appended to the members' files: when each partition's records
/// were seen, and by which file.
#[derive(Default)]
struct Watcher {
    offsets: BTreeMap<PathBuf, u64>,
    /// Per partition: (when seen, which file) in order.
    seen: BTreeMap<i32, Vec<(Instant, PathBuf)>>,
}

impl Watcher {
    fn poll(&mut self, files: &[PathBuf]) {
        let now = Instant::now();
        for file in files {
            let Ok(mut handle) = std::fs::File::open(file) else {
                continue;
            };
            let offset = self.offsets.entry(file.clone()).or_insert(0);
            if handle.seek(std::io::SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut reader = std::io::BufReader::new(handle);
            let mut line = String::new();
            while let Ok(read) = reader.read_line(&mut line) {
                if read == 0 || !line.ends_with('\n') {
                    break;
                }
                *offset += read as u64;
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(partition) = value["p"].as_i64()
                {
                    self.seen
                        .entry(partition as i32)
                        .or_default()
                        .push((now, file.clone()));
                }
                line.clear();
            }
        }
    }

    /// Partitions whose latest record came from `file`.
    fn owned_by(&self, file: &Path) -> Vec<i32> {
        self.seen
            .iter()
            .filter(|(_, seen)| seen.last().is_some_and(|(_, f)| f == file))
            .map(|(&p, _)| p)
            .collect()
    }

    /// When `partition` was first seen after `after` in a file other than `not_from`.
    fn resumed(&self, partition: i32, after: Instant, not_from: &Path) -> Option<Instant> {
        self.seen
            .get(&partition)?
            .iter()
            .find(|(at, file)| *at > after && file != not_from)
            .map(|(at, _)| *at)
    }

    /// The longest gap between consecutive sightings of `partition` within `from..to`.
    fn longest_gap(&self, partition: i32, from: Instant, to: Instant) -> Duration {
        let times: Vec<Instant> = self
            .seen
            .get(&partition)
            .map(|seen| seen.iter().map(|(at, _)| *at).collect())
            .unwrap_or_default();
        let mut longest = Duration::ZERO;
        let mut previous = from;
        for at in times.into_iter().filter(|at| *at > from && *at <= to) {
            longest = longest.max(at - previous);
            previous = at;
        }
        longest.max(to.saturating_duration_since(previous))
    }

    /// The longest gap of `partition` within `from..to`, and when it started.
    fn longest_gap_at(&self, partition: i32, from: Instant, to: Instant) -> (Duration, Instant) {
        let times: Vec<Instant> = self
            .seen
            .get(&partition)
            .map(|seen| seen.iter().map(|(at, _)| *at).collect())
            .unwrap_or_default();
        let mut longest = (Duration::ZERO, from);
        let mut previous = from;
        for at in times.into_iter().filter(|at| *at > from && *at <= to) {
            if at - previous > longest.0 {
                longest = (at - previous, previous);
            }
            previous = at;
        }
        if to.saturating_duration_since(previous) > longest.0 {
            longest = (to.saturating_duration_since(previous), previous);
        }
        longest
    }

    fn gaps_between(&self, since: Instant, before: Instant) -> Vec<Duration> {
        let mut gaps = Vec::new();
        for seen in self.seen.values() {
            let times: Vec<Instant> = seen
                .iter()
                .map(|(at, _)| *at)
                .filter(|at| *at >= since && *at < before)
                .collect();
            gaps.extend(times.windows(2).map(|pair| pair[1] - pair[0]));
        }
        gaps.sort();
        gaps
    }
}

/// One failover, then the removal of its topic and folder (unless `bench.keep`), measured or
/// failed. The group is not deleted: its killed members hold it until their sessions expire,
/// and Kafka drops it by itself once it is empty and its topic's offsets went with the topic.
async fn failover(
    bench: &FailoverBench,
    membership: &'static str,
) -> (Result<FailoverLine, BenchError>, Cleanup) {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut leftovers = Leftovers::new(&bench.brokers);
    let topic = leftovers.topic(format!("weir-bench-failover-{membership}-{stamp}"));
    let dir = std::env::temp_dir().join(&topic);
    leftovers.folder(&dir);
    let result = match std::fs::create_dir_all(&dir) {
        Ok(()) => measure(bench, membership, &topic, &dir).await,
        Err(error) => Err(setup(error)),
    };
    (result, leftovers.finish(bench.keep).await)
}

async fn measure(
    bench: &FailoverBench,
    membership: &'static str,
    topic: &str,
    dir: &Path,
) -> Result<FailoverLine, BenchError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bench.brokers)
        .create()
        .map_err(setup)?;
    admin
        .create_topics(
            &[NewTopic::new(
                topic,
                bench.partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .map_err(setup)?;
    let session = bench
        .session_timeout_ms
        .map_or(String::new(), |ms| format!(", session_timeout_ms = {ms}"));
    let source = format!(
        "type = \"kafka\", brokers = \"{}\", topics = [\"{topic}\"], group = \"{topic}\"{session}",
        bench.brokers
    );
    let statically = membership == "static";
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(produce(
        bench.brokers.clone(),
        topic.to_owned(),
        bench.partitions,
        bench.rate,
        Arc::clone(&stop),
    ));
    let mut members = Vec::new();
    for i in 0..bench.members {
        members.push(start_member(
            bench,
            dir,
            &format!("member-{i}"),
            &source,
            statically.then_some(i),
        )?);
    }
    let mut files: Vec<PathBuf> = members.iter().map(|m| m.out.clone()).collect();
    let mut watcher = Watcher::default();
    let everyone_writes = |watcher: &Watcher| {
        watcher.seen.len() == bench.partitions as usize
            && files.iter().all(|f| !watcher.owned_by(f).is_empty())
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !everyone_writes(&watcher) {
        if Instant::now() > deadline {
            stop.store(true, Ordering::SeqCst);
            return Err(setup("the members did not all get partitions within 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        watcher.poll(&files);
    }
    // A few seconds of steady flow for the steady longest gap.
    let steady_from = Instant::now();
    let steady = steady_from + Duration::from_secs(3);
    while Instant::now() < steady {
        tokio::time::sleep(Duration::from_millis(5)).await;
        watcher.poll(&files);
    }

    let victim = members.remove(0);
    let victim_file = victim.out.clone();
    let killed_partitions = watcher.owned_by(&victim_file);
    let killed_at = Instant::now();
    drop(victim); // SIGKILL
    if statically {
        let restarted = start_member(bench, dir, "member-0-restarted", &source, Some(0))?;
        files.push(restarted.out.clone());
        members.push(restarted);
    }
    let deadline = killed_at + Duration::from_secs(300);
    let resumed_at = loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        watcher.poll(&files);
        let resumed: Option<Vec<Instant>> = killed_partitions
            .iter()
            .map(|&p| watcher.resumed(p, killed_at, &victim_file))
            .collect();
        if let Some(resumed) = resumed {
            break resumed.into_iter().max().unwrap_or(killed_at);
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::SeqCst);
            return Err(setup(
                "the killed member's partitions were not resumed within 300 s",
            ));
        }
    };
    // More flow after, so that a pause of the others around the take-over shows whole.
    let after = Instant::now() + Duration::from_secs(AFTER.as_secs() + 1);
    while Instant::now() < after {
        tokio::time::sleep(Duration::from_millis(5)).await;
        watcher.poll(&files);
    }
    stop.store(true, Ordering::SeqCst);
    let _ = producing.await;
    drop(members);

    let others: BTreeSet<i32> = (0..bench.partitions)
        .filter(|p| !killed_partitions.contains(p))
        .collect();
    let others_longest_gap = others
        .iter()
        .map(|&p| watcher.longest_gap(p, killed_at, resumed_at + AFTER))
        .max()
        .unwrap_or_default();
    for &p in &others {
        let (gap, start) = watcher.longest_gap_at(p, killed_at, resumed_at + AFTER);
        eprintln!(
            "{membership}: partition {p}: longest gap {:.2} s, from {:.2} s after the kill (take-over at {:.2} s)",
            gap.as_secs_f64(),
            start.saturating_duration_since(killed_at).as_secs_f64(),
            (resumed_at - killed_at).as_secs_f64()
        );
    }
    let steady_longest_gap = watcher
        .gaps_between(steady_from, killed_at)
        .last()
        .copied()
        .unwrap_or_default();
    Ok(FailoverLine {
        membership,
        killed_partitions,
        waited: resumed_at - killed_at,
        others_longest_gap,
        steady_longest_gap,
    })
}

/// Produces `{"n":N,"p":P}` to partition P = N % partitions at `rate` records per second.
async fn produce(
    brokers: String,
    topic: String,
    partitions: i32,
    rate: f64,
    stop: Arc<AtomicBool>,
) {
    let Ok(producer) = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "1")
        .create::<FutureProducer>()
    else {
        return;
    };
    let tick = Duration::from_millis(10);
    let per_tick = ((rate * tick.as_secs_f64()).round() as u64).max(1);
    let mut ticker = tokio::time::interval(tick);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        ticker.tick().await;
        let sends = (n..n + per_tick).map(|n| {
            let partition = (n % partitions as u64) as i32;
            let payload = format!("{{\"n\":{n},\"p\":{partition}}}");
            let producer = &producer;
            let topic = &topic;
            async move {
                let _ = producer
                    .send(
                        FutureRecord::<(), _>::to(topic)
                            .partition(partition)
                            .payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await;
            }
        });
        futures::future::join_all(sends).await;
        n += per_tick;
    }
}
