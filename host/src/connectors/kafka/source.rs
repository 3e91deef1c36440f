//! The `kafka` source: a consumer-group member that commits offsets only after the pipeline
//! acknowledged everything before them, so a crash re-delivers instead of losing, and that
//! drains and commits a partition before giving it up in a rebalance, so its next owner neither
//! misses nor repeats a record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::client_config;
use super::context::{GroupContext, offsets};
use super::group::GroupMetrics;
use super::lag::{ConsumerLag, STATISTICS_INTERVAL_MS};
use super::partition_queues::{PartitionQueues, Splitter, Wakeup};
use super::progress::{PartitionProgress, TopicPartition};
use super::rebootstrap::BrokerWatch;
use super::refused_property::creation_failed;
use crate::connectors::slab::Slab;
use crate::connectors::{ConfigProblem, ConnectorError, Source};
use crate::record::{Headers, Record, SourcePosition, SourceRecord};

/// Where a consumer group starts on a partition it has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// From the oldest retained message.
    #[default]
    Earliest,
    /// From new messages only.
    Latest,
}

/// Options of the `kafka` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Topics to consume: names, or patterns starting with `^` (POSIX extended regular
    /// expressions, as librdkafka reads them) that subscribe to every topic they match, those
    /// created later too once the client's metadata refresh sees them
    /// (`topic.metadata.refresh.interval.ms` in `properties`, 300000 by default).
    pub topics: Vec<String>,
    /// The consumer group; committed offsets always take precedence, so a restart resumes.
    pub group: String,
    /// Where to start on partitions the group has no committed offset for.
    #[serde(default)]
    pub offset_reset: OffsetReset,
    /// Start partitions the group has no committed offset for at their first record whose
    /// timestamp is at or after this time (RFC 3339, `2026-12-01T00:00:00Z`, or milliseconds
    /// since the epoch), or at their end where none is that late, instead of where
    /// `offset_reset` says (Spark's `startingTimestamp`). Committed offsets still win.
    #[serde(default)]
    pub start_at_time: Option<String>,
    /// How long a rebalance waits for the records in flight from a revoked partition to be
    /// acknowledged before committing and giving it up; what is still unacknowledged then is
    /// re-delivered to the partition's next owner.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Static membership (librdkafka's `group.instance.id`): a member that restarts within
    /// `session_timeout_ms` gets its partitions back without a rebalance, and nobody else's
    /// partitions stop. `"auto"` derives it from the host name and the pipeline name (stable on
    /// one machine, or for a StatefulSet's pods); any other value is used as it is and must be
    /// unique in the group. Unset: dynamic membership, every start and stop rebalances.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// How long the group coordinator waits for a heartbeat before it declares this member dead
    /// and hands its partitions to the others (librdkafka's `session.timeout.ms`): how long a
    /// killed member's partitions wait. Lower fails over faster; too low and a starved machine
    /// loses its partitions spuriously. The broker accepts 6,000 to 1,800,000 by default.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// How often this member tells the coordinator it is alive, and learns that a rebalance
    /// started (librdkafka's `heartbeat.interval.ms`); below a third of `session_timeout_ms`.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// The longest the consumer may go without polling before librdkafka leaves the group
    /// (librdkafka's `max.poll.interval.ms`). At least `session_timeout_ms`, and above
    /// `drain_timeout_ms`, since a rebalance waits for the drain inside a poll.
    #[serde(default = "default_max_poll_interval_ms")]
    pub max_poll_interval_ms: u64,
    /// Read each assigned partition from its own librdkafka queue, a batch at a time in turn,
    /// instead of from the one consumer queue, which hands the partitions out in runs of a whole
    /// fetch (thousands of records of one partition). With a transform worker per partition this
    /// keeps every worker fed when a topic is read faster than it is written (a backlog, a
    /// replay). The cost is memory: librdkafka's prefetch limit (`queued.max.messages.kbytes`)
    /// then holds for each partition, not for the whole consumer, so three partitions of an lz4
    /// topic peaked 15 to 20 MiB higher (docs/performance.md, twenty-second session).
    #[serde(default)]
    pub read_partitions_in_turn: bool,
    /// Extra librdkafka consumer properties. `partition.assignment.strategy` defaults to
    /// `cooperative-sticky` and may be overridden here; the properties that have their own key
    /// above (and those weir relies on: group id, offset handling) are refused here. Every
    /// value is a secret (`sasl.password`, `ssl.key.pem` and others carry credentials), so none
    /// is ever printed.
    #[serde(default)]
    pub properties: BTreeMap<String, crate::secret::Secret>,
    /// The pipeline's name, filled in by the pipeline (not read from the file): part of the
    /// derived `instance_id`.
    #[serde(skip)]
    pub pipeline: String,
}

fn default_drain_timeout_ms() -> u64 {
    10_000
}

fn default_session_timeout_ms() -> u64 {
    10_000
}

fn default_heartbeat_interval_ms() -> u64 {
    1_000
}

fn default_max_poll_interval_ms() -> u64 {
    300_000
}

/// The assignor unless the user picks another: incremental rebalances, in which members keep
/// (and keep processing) the partitions they are not asked to give up.
const DEFAULT_ASSIGNOR: &str = "cooperative-sticky";

/// librdkafka properties that weir sets itself, from a key of the source or because its
/// delivery guarantees depend on them; `properties` may not set them.
const RESERVED_PROPERTIES: [(&str, &str); 10] = [
    ("group.id", "use `group`"),
    ("group.instance.id", "use `instance_id`"),
    ("session.timeout.ms", "use `session_timeout_ms`"),
    ("heartbeat.interval.ms", "use `heartbeat_interval_ms`"),
    ("max.poll.interval.ms", "use `max_poll_interval_ms`"),
    ("auto.offset.reset", "use `offset_reset`"),
    (
        "enable.auto.commit",
        "weir commits acknowledged offsets itself",
    ),
    (
        "enable.auto.offset.store",
        "weir commits acknowledged offsets itself",
    ),
    ("bootstrap.servers", "use `brokers`"),
    (
        "statistics.interval.ms",
        "weir reads the lag from statistics every second",
    ),
];

/// Kafka's limit on a `group.instance.id`.
const MAX_INSTANCE_ID: usize = 249;

impl KafkaSourceConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.brokers.trim().is_empty() {
            return Err(("brokers".into(), "must list at least one broker".into()));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(("topics".into(), "must list at least one topic".into()));
        }
        for (index, entry) in self.topics.iter().enumerate() {
            if let Some(problem) = super::topics::problem(entry) {
                return Err((format!("topics[{index}]"), problem));
            }
        }
        if self.group.trim().is_empty() {
            return Err(("group".into(), "must name a consumer group".into()));
        }
        if let Some(time) = &self.start_at_time {
            super::start_at::parse(time).map_err(|problem| ("start_at_time".into(), problem))?;
        }
        for (key, instead) in RESERVED_PROPERTIES {
            if self.properties.contains_key(key) {
                return Err((
                    format!("properties.\"{key}\""),
                    format!("is set by weir: {instead}"),
                ));
            }
        }
        if let Some(id) = &self.instance_id
            && id != "auto"
            && let Some(problem) = instance_id_problem(id)
        {
            return Err(("instance_id".into(), problem));
        }
        if self.session_timeout_ms == 0 {
            return Err(("session_timeout_ms".into(), "must be at least 1".into()));
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms.saturating_mul(3) > self.session_timeout_ms
        {
            return Err((
                "heartbeat_interval_ms".into(),
                format!(
                    "must be between 1 and a third of session_timeout_ms ({})",
                    self.session_timeout_ms / 3
                ),
            ));
        }
        if self.max_poll_interval_ms < self.session_timeout_ms
            || self.max_poll_interval_ms <= self.drain_timeout_ms
        {
            return Err((
                "max_poll_interval_ms".into(),
                format!(
                    "must be at least session_timeout_ms ({}) and above drain_timeout_ms ({}): a rebalance drains inside a poll",
                    self.session_timeout_ms, self.drain_timeout_ms
                ),
            ));
        }
        Ok(())
    }

    /// The `group.instance.id` to use, if any: `auto` becomes `{host}-{pipeline}`.
    pub fn resolved_instance_id(&self) -> Result<Option<String>, String> {
        let Some(id) = &self.instance_id else {
            return Ok(None);
        };
        if id != "auto" {
            return Ok(Some(id.clone()));
        }
        let host = host_name().ok_or(
            "instance_id = \"auto\" needs the host name, which cannot be read here; set instance_id to a name unique in the group",
        )?;
        let pipeline = if self.pipeline.is_empty() {
            self.group.as_str()
        } else {
            self.pipeline.as_str()
        };
        let derived: String = format!("{host}-{pipeline}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(MAX_INSTANCE_ID)
            .collect();
        Ok(Some(derived))
    }
}

/// Why `id` cannot be a `group.instance.id`, if it cannot.
fn instance_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > MAX_INSTANCE_ID {
        return Some(format!(
            "must be 1 to {MAX_INSTANCE_ID} characters, or \"auto\""
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Some("may hold only letters, digits, `.`, `_` and `-`".into());
    }
    None
}

/// This machine's name: stable across restarts (a StatefulSet pod keeps its name too).
fn host_name() -> Option<String> {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// Consumes topics as a group member. A thread of its own polls the consumer without pause, so
/// the member answers rebalances and stays in the group however long the pipeline is
/// backpressured (a stalled sink): while the pipeline does not take records, the assigned
/// partitions are paused instead of left unpolled.
pub struct KafkaSource {
    name: String,
    /// Shared with the polling thread; taken in `drop` so that the thread drops the last
    /// handle and the consumer leaves the group there.
    consumer: Option<Arc<BaseConsumer<GroupContext>>>,
    shared: Arc<Shared>,
    lag: ConsumerLag,
    metrics: Arc<GroupMetrics>,
    poller: Option<std::thread::JoinHandle<()>>,
}

/// What the polling thread and the source share.
struct Shared {
    progress: Arc<PartitionProgress>,
    /// Wakes a `poll_batch` waiting for records: when the first arrives in an empty buffer, or
    /// a full batch is buffered (`Pushed::wakes_a_waiting_batch`), and on a consume error.
    fetched: Notify,
    /// Counts the batches the pipeline took, so the polling thread, waiting for room in a full
    /// buffer, wakes as soon as there is some (a generation: no wake-up is lost between its
    /// check and its wait).
    taken: Mutex<u64>,
    room: Condvar,
    /// The largest batch the pipeline asks for: the buffer holds a few of them.
    wanted: AtomicUsize,
    /// Set when the source is dropped: the thread leaves the group and ends.
    stop: AtomicBool,
    /// A consume error for the next `poll_batch` to report.
    error: Mutex<Option<ConnectorError>>,
    /// Wakes the polling thread, while it reads split queues (`read_partitions_in_turn`), when
    /// one of them or the consumer queue turns non-empty, or the source is dropped.
    wakeup: Arc<Wakeup>,
    /// The topics and group, named in consume errors.
    subscription: Subscription,
}

/// What the source reads, as its errors name it.
struct Subscription {
    /// The subscribed topics, comma-separated.
    topics: String,
    group: String,
}

impl Shared {
    fn fail(&self, error: ConnectorError) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.fetched.notify_one();
    }

    fn take_error(&self) -> Option<ConnectorError> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// How many batches the pipeline has taken so far.
    fn taken(&self) -> u64 {
        *self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pipeline took a batch.
    fn took(&self) {
        *self.taken.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.room.notify_one();
    }

    /// Waits until the pipeline took a batch after the `seen`-th, or `timeout` passes.
    fn wait_for_room(&self, seen: u64, timeout: Duration) {
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        drop(
            self.room
                .wait_timeout_while(taken, timeout, |taken| *taken == seen)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }

    /// Whether the buffer holds as much as it may: `BUFFERED_BATCHES` of the pipeline's
    /// batches (at least `MIN_BUFFERED` records), or `MAX_BUFFERED_BYTES`.
    fn is_full(&self, (records, bytes): (usize, usize)) -> bool {
        records >= self.records_limit() || bytes >= MAX_BUFFERED_BYTES
    }

    /// The records the buffer may hold: `BUFFERED_BATCHES` of the pipeline's batches, at least
    /// `MIN_BUFFERED`.
    fn records_limit(&self) -> usize {
        (BUFFERED_BATCHES * self.wanted.load(Ordering::Relaxed)).max(MIN_BUFFERED)
    }

    /// Whether a paused assignment may resume: the buffer is down to half of what it may hold.
    fn has_room_to_resume(&self, (records, bytes): (usize, usize)) -> bool {
        records <= self.records_limit() / 2 && bytes <= MAX_BUFFERED_BYTES / 2
    }
}

/// How long an empty poll waits before returning, so acknowledged offsets get committed while
/// a topic is quiet.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long one poll of the polling thread blocks: how quickly it notices a stop, and how often
/// it checks whether to pause or resume.
const THREAD_POLL: Duration = Duration::from_millis(100);
/// Batches of fetched records held for the pipeline before the thread stops fetching.
/// librdkafka's prefetch queue holds more behind it, so this only has to cover the moments the
/// thread is not polling: 4 batches (1,024 records at least) read as fast as 8 (4,096 at least)
/// into a blackhole and cost 5 to 6 MiB less peak RSS into Cassandra (docs/performance.md).
const BUFFERED_BATCHES: usize = 4;
/// Records held before the thread stops fetching, whatever the batch size.
const MIN_BUFFERED: usize = 1_024;
/// Bytes (keys and values) held before the thread stops fetching, whatever the record count.
const MAX_BUFFERED_BYTES: usize = 8 << 20;
/// How long the buffer may stay full, the pipeline taking nothing, before the partitions are
/// paused. Until then the thread just waits for room, which costs nothing; a pause costs the
/// records librdkafka had prefetched and a fetch round trip at the resume, so it is kept for a
/// pipeline that is truly stuck (a stalled sink), where the thread must go on polling to serve
/// rebalances and stay in the group.
const STALL_BEFORE_PAUSE: Duration = Duration::from_secs(1);
/// Messages moved from librdkafka to the buffer under one lock.
const POLL_RUN: usize = 256;
/// The batch size assumed until the pipeline asks for one.
const DEFAULT_WANTED: usize = 500;
/// librdkafka settings the source uses unless `properties` sets them:
/// - `partition.assignment.strategy`: [`DEFAULT_ASSIGNOR`].
/// - `queued.max.messages.kbytes` (the prefetch queue, in KiB): 1 MiB. librdkafka counts the
///   bytes as fetched, so a compressed topic (weir's Kafka sink writes lz4 by default) holds
///   several times that once decompressed: at 4 MiB, an lz4 topic of users kept about 30 MiB
///   in the queue, and `weir run` into Cassandra peaked at 80 MiB instead of 57. Pipelines
///   with a plugin read as fast at 1 MiB; a consumer that only reads, about a fifth slower
///   (docs/performance.md, nineteenth session). 16 MiB measured the same records/s as 4.
/// - `fetch.queue.backoff.ms`: how long librdkafka waits before fetching again once the
///   prefetch queue is full: 2 ms. Its default of 1 s starves a pipeline slower than the
///   brokers: it drains the queue in well under a second, then waits for the rest of it with
///   nothing to read (34,000 records/s of kafka -> user-profile -> blackhole at 1 s). A 1 MiB
///   queue holds about 4 ms of input at a plugin pipeline's rate, so 10 ms still left it
///   waiting: 234,000 to 238,000 records/s at 10 ms, 351,000 to 365,000 at 2 ms, and a
///   read-only consumer 405,000 to 413,000 against 565,000 to 612,000, at the same CPU and
///   broker CPU per record. 1 ms read as fast but cost a slow pipeline (into Cassandra, its
///   queue full most of the time) about 4% more CPU in wake-ups; 0 spins (docs/performance.md,
///   twenty-ninth session).
/// - `max.partition.fetch.bytes`: at most 512 KiB of a partition in one fetch response, against
///   librdkafka's 1 MiB. At 1 MiB, `weir run` into Cassandra from an lz4 topic of three
///   partitions held 9.4 MiB of decompressed batches at its peak (heaptrack), allocated on
///   librdkafka's broker thread and freed on the polling one; at 512 KiB it peaked about 2.5 MiB
///   lower at the same CPU and broker CPU. 256 KiB saved 7 MiB but fetched twice as often: the
///   broker's CPU per record read rose by half (docs/performance.md, twenty-eighth session). A
///   larger batch still arrives whole (librdkafka raises the limit for it), so nothing stalls.
const CONSUMER_DEFAULTS: [(&str, &str); 4] = [
    ("partition.assignment.strategy", DEFAULT_ASSIGNOR),
    ("queued.max.messages.kbytes", "1024"),
    ("fetch.queue.backoff.ms", "2"),
    ("max.partition.fetch.bytes", "524288"),
];

/// The [`CONSUMER_DEFAULTS`] that the user's `properties` leave unset.
fn defaults_not_set_in(
    properties: &BTreeMap<String, crate::secret::Secret>,
) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    CONSUMER_DEFAULTS
        .into_iter()
        .filter(|(key, _)| !properties.contains_key(*key))
}

/// How often acknowledged offsets are committed while the pipeline runs (asynchronously; the
/// last commit at shutdown and a rebalance's commit wait for the broker). A crash re-delivers
/// at most this much more; each commit is a request the group coordinator must serve.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

impl KafkaSource {
    /// Joins the group and subscribes.
    pub fn open(config: &KafkaSourceConfig) -> Result<Self, ConnectorError> {
        let name = format!("kafka source {}", config.topics.join(","));
        let mut client = client_config(&config.brokers, &config.properties);
        for (key, value) in defaults_not_set_in(&config.properties) {
            client.set(key, value);
        }
        let instance_id = config
            .resolved_instance_id()
            .map_err(|problem| ConnectorError::fatal(&name, problem))?;
        if let Some(id) = &instance_id {
            client.set("group.instance.id", id);
        }
        client
            .set("group.id", &config.group)
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                config.heartbeat_interval_ms.to_string(),
            )
            .set(
                "max.poll.interval.ms",
                config.max_poll_interval_ms.to_string(),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
            .set(
                "auto.offset.reset",
                match config.offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        let lag = ConsumerLag::new(config.offset_reset == OffsetReset::Earliest);
        let progress = Arc::new(PartitionProgress::default());
        let metrics = Arc::new(GroupMetrics::default());
        let wakeup = Arc::new(Wakeup::default());
        let start_at = config
            .start_at_time
            .as_deref()
            .map(super::start_at::parse)
            .transpose()
            .map_err(|problem| ConnectorError::fatal(&name, format!("start_at_time: {problem}")))?;
        let context = GroupContext::new(
            &name,
            lag.clone(),
            Arc::clone(&progress),
            Arc::clone(&metrics),
            Duration::from_millis(config.drain_timeout_ms),
            Splitter::new(Arc::clone(&wakeup)),
            BrokerWatch::new(&name, &config.brokers),
        )
        .starting_at(start_at);
        let mut consumer: BaseConsumer<GroupContext> = client
            .create_with_context(context)
            .map_err(|e| creation_failed(&name, "cannot create the consumer", e))?;
        consumer.context().brokers().attach(consumer.client());
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| ConnectorError::fatal(&name, "cannot subscribe").caused_by(e))?;
        tracing::info!(
            source = %name,
            group = %config.group,
            instance_id = instance_id.as_deref().unwrap_or("(dynamic membership)"),
            session_timeout_ms = config.session_timeout_ms,
            "Joining the consumer group."
        );
        if config.read_partitions_in_turn {
            // Records arrive on several queues, so the polling thread waits on none of them.
            consumer.set_nonempty_callback({
                let wakeup = Arc::clone(&wakeup);
                move || wakeup.notify()
            });
        }
        let consumer = Arc::new(consumer);
        if config.read_partitions_in_turn {
            consumer.context().splitter().attach(&consumer);
        }
        let shared = Arc::new(Shared {
            progress,
            fetched: Notify::new(),
            taken: Mutex::new(0),
            room: Condvar::new(),
            wanted: AtomicUsize::new(DEFAULT_WANTED),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
            wakeup,
            subscription: Subscription {
                topics: config.topics.join(","),
                group: config.group.clone(),
            },
        });
        let poller = {
            let (consumer, shared, thread_name) =
                (Arc::clone(&consumer), Arc::clone(&shared), name.clone());
            std::thread::Builder::new()
                .name("weir-kafka-poll".into())
                .spawn(move || poll_until_stopped(&thread_name, &consumer, &shared))
                .map_err(|e| {
                    ConnectorError::fatal(&name, format!("cannot start the polling thread: {e}"))
                })?
        };
        Ok(KafkaSource {
            name,
            consumer: Some(consumer),
            shared,
            lag,
            metrics,
            poller: Some(poller),
        })
    }
}

/// The polling thread: fetches into the shared buffer, waits for room while it is full, pauses
/// the assignment when the pipeline stays stuck, serves rebalances (inside the consumer queue's
/// poll), and leaves the group when told to stop. Records come from the consumer queue, or with
/// `read_partitions_in_turn` from each partition's own queue, a batch's worth at a time in turn
/// (see `partition_queues`), and from the consumer queue for any that could not be split off.
fn poll_until_stopped(name: &str, consumer: &Arc<BaseConsumer<GroupContext>>, shared: &Shared) {
    let mut intake = Intake::new(name, shared);
    let mut queues: PartitionQueues<GroupContext> = PartitionQueues::default();
    let mut brake = Brake::new(consumer.context().metrics());
    let mut full_since: Option<std::time::Instant> = None;
    let mut last_commit = std::time::Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if consumer.context().take_assignment_changed() {
            let assigned = shared.progress.assigned();
            brake.after_rebalance(name, consumer, &assigned);
            queues.keep_only(&assigned);
        }
        // On this thread, the interval commit cannot interleave with a rebalance's own.
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            last_commit = std::time::Instant::now();
            match commit_acknowledged(consumer, &shared.progress, CommitMode::Async) {
                Ok(()) => {}
                Err(KafkaError::ConsumerCommit(code)) if reassigned(code) => {}
                Err(error) => {
                    tracing::warn!(source = %name, %error, "Cannot send a commit; the next one carries the same offsets.")
                }
            }
        }
        let taken = shared.taken();
        let buffered = shared.progress.buffered();
        if shared.is_full(buffered) {
            let since = *full_since.get_or_insert_with(std::time::Instant::now);
            if !brake.is_paused() && since.elapsed() < STALL_BEFORE_PAUSE {
                shared.wait_for_room(taken, THREAD_POLL);
                continue;
            }
            brake.pause(name, consumer);
        } else {
            full_since = None;
            if brake.is_paused() && shared.has_room_to_resume(buffered) {
                brake.resume(name, consumer);
            }
        }
        // Read before polling: a queue that turns non-empty after its poll moves it on.
        let seen = shared.wakeup.generation();
        // The consumer queue serves rebalances (which split the queues of new partitions),
        // commits and statistics. Alone, it is waited on, then drained of what librdkafka
        // already holds, up to a run; beside split queues, it is only drained.
        let mut timeout = if queues.is_empty() {
            THREAD_POLL
        } else {
            Duration::ZERO
        };
        let mut polled = 0;
        while polled < POLL_RUN {
            let Some(result) = consumer.poll(timeout) else {
                break;
            };
            polled += 1;
            timeout = Duration::ZERO;
            if !intake.take(&mut brake, result) {
                break;
            }
        }
        if !intake.fatal {
            // The queues that poll split off, read at once.
            queues.adopt(consumer.context().splitter());
            let turn = shared.wanted.load(Ordering::Relaxed);
            polled += queues.poll_run(POLL_RUN, turn, |result| intake.take(&mut brake, result));
        }
        if !intake.run.is_empty()
            && shared
                .progress
                .push(intake.run.drain(..))
                .wakes_a_waiting_batch(shared.wanted.load(Ordering::Relaxed))
        {
            shared.fetched.notify_one();
        }
        if intake.fatal {
            break;
        }
        if polled == 0 && !queues.is_empty() {
            shared.wakeup.wait(seen, THREAD_POLL);
        }
    }
    // The split queues hold the consumer: let them go first, so that the last handle on it is
    // dropped (by this thread, normally: the source dropped its own first). That leaves the
    // group, giving every partition up through the rebalance callback, which finds them drained
    // since the pipeline committed before dropping the source. A static member does not leave:
    // its partitions wait for it until its session times out.
    drop(queues);
    consumer.context().splitter().clear();
}

/// Turns what the consumer's queues return into records for the buffer, a run at a time.
struct Intake<'a> {
    name: &'a str,
    shared: &'a Shared,
    /// Each topic's name, shared by its records.
    streams: BTreeMap<String, Arc<str>>,
    /// Where the records' keys and payloads are copied to.
    copies: Slab,
    /// Records taken since the last push to the buffer.
    run: Vec<SourceRecord>,
    /// The consumer failed for good; the thread stops.
    fatal: bool,
}

impl<'a> Intake<'a> {
    fn new(name: &'a str, shared: &'a Shared) -> Self {
        Intake {
            name,
            shared,
            streams: BTreeMap::new(),
            copies: Slab::default(),
            run: Vec::with_capacity(POLL_RUN),
            fatal: false,
        }
    }

    /// Takes one poll's result; false when the run should end there (an error).
    fn take(&mut self, brake: &mut Brake, result: KafkaResult<BorrowedMessage<'_>>) -> bool {
        match result {
            Ok(message) => {
                let record = convert(&mut self.streams, &mut self.copies, &message);
                brake.consumed(&record.position);
                self.run.push(record);
                true
            }
            Err(KafkaError::MessageConsumptionFatal(code)) => {
                self.shared.fail(ConnectorError::fatal(
                    self.name,
                    format!("the consumer failed for good: {code}{}", fatal_hint(code)),
                ));
                self.fatal = true;
                false
            }
            Err(error) => {
                let failure = consume_failure(self.name, &self.shared.subscription, error);
                if failure.is_transient() {
                    tracing::warn!(source = %self.name, error = %failure, "Consume error; librdkafka retries.");
                } else {
                    self.fatal = true;
                }
                self.shared.fail(failure);
                false
            }
        }
    }
}

/// Pauses partitions while the pipeline is stuck, so the member keeps polling (serving
/// rebalances, staying in the group) without fetching more; a pipeline that is merely slower
/// than Kafka never gets here, the thread waits for room instead.
struct Brake {
    metrics: Arc<GroupMetrics>,
    /// Partitions that returned a record in this assignment. Only those are paused: librdkafka
    /// resumes a paused partition at the last record it returned, and one paused before it
    /// returned any may not resume at all.
    consumed: BTreeSet<(Arc<str>, i32)>,
    paused: BTreeSet<(Arc<str>, i32)>,
    /// The partition of the last record taken, already in `consumed`: librdkafka hands records
    /// out a fetch's run of one partition at a time, and a run skips the set.
    last: Option<(Arc<str>, i32)>,
}

impl Brake {
    fn new(metrics: Arc<GroupMetrics>) -> Self {
        Brake {
            metrics,
            consumed: BTreeSet::new(),
            paused: BTreeSet::new(),
            last: None,
        }
    }

    fn consumed(&mut self, position: &SourcePosition) {
        let same_as_last = self.last.as_ref().is_some_and(|(stream, partition)| {
            *partition == position.partition && Arc::ptr_eq(stream, &position.stream)
        });
        if same_as_last {
            return;
        }
        let key = (Arc::clone(&position.stream), position.partition);
        if !self.consumed.contains(&key) {
            self.consumed.insert(key.clone());
        }
        self.last = Some(key);
    }

    fn is_paused(&self) -> bool {
        !self.paused.is_empty()
    }

    /// After a rebalance: resumes every partition it paused and forgets those no longer
    /// assigned. librdkafka keeps a partition paused across rebalances until it is resumed, so
    /// one paused, given up and later assigned back would otherwise never be fetched again; if
    /// the pipeline is still stuck, the partitions are paused again.
    fn after_rebalance(
        &mut self,
        name: &str,
        consumer: &BaseConsumer<GroupContext>,
        assigned: &[TopicPartition],
    ) {
        if !self.paused.is_empty() {
            let paused: Vec<(Arc<str>, i32)> =
                std::mem::take(&mut self.paused).into_iter().collect();
            if let Err(error) = consumer.resume(&list(&paused)) {
                tracing::warn!(source = %name, %error, "Cannot resume the partitions paused before the rebalance.");
            }
        }
        self.keep_only(assigned);
    }

    /// Forgets the partitions no longer assigned.
    fn keep_only(&mut self, assigned: &[TopicPartition]) {
        let assigned: BTreeSet<(&str, i32)> =
            assigned.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        self.consumed
            .retain(|(topic, partition)| assigned.contains(&(&**topic, *partition)));
        // It may have been dropped above: its next record must add it back.
        self.last = None;
    }

    fn pause(&mut self, name: &str, consumer: &BaseConsumer<GroupContext>) {
        let more: Vec<(Arc<str>, i32)> = self.consumed.difference(&self.paused).cloned().collect();
        if more.is_empty() {
            return;
        }
        match consumer.pause(&list(&more)) {
            Ok(()) => {
                if self.paused.is_empty() {
                    self.metrics.paused();
                    tracing::info!(source = %name, partitions = more.len(), stalled_ms = STALL_BEFORE_PAUSE.as_millis() as u64, "The pipeline took nothing while the buffer was full; partitions paused, the member keeps polling and stays in the group.");
                } else {
                    tracing::debug!(source = %name, partitions = more.len(), "More partitions paused.");
                }
                self.paused.extend(more);
            }
            Err(error) => tracing::warn!(source = %name, %error, "Cannot pause partitions."),
        }
    }

    fn resume(&mut self, name: &str, consumer: &BaseConsumer<GroupContext>) {
        if self.paused.is_empty() {
            return;
        }
        let paused: Vec<(Arc<str>, i32)> = std::mem::take(&mut self.paused).into_iter().collect();
        match consumer.resume(&list(&paused)) {
            Ok(()) => {
                tracing::info!(source = %name, partitions = paused.len(), "The pipeline takes records again; partitions resumed.")
            }
            Err(error) => {
                tracing::warn!(source = %name, %error, "Cannot resume partitions.");
                self.paused.extend(paused);
            }
        }
    }
}

fn list(partitions: &[(Arc<str>, i32)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    list
}

/// A consume error (other than librdkafka's fatal one) as the pipeline reports it. A refusal of
/// this member's rights stops the source with the grant it needs, as the sink does for its own;
/// a topic that does not exist (yet) is waited for, saying so; anything else librdkafka retries.
fn consume_failure(name: &str, subscription: &Subscription, error: KafkaError) -> ConnectorError {
    use RDKafkaErrorCode as Code;
    let Subscription { topics, group } = subscription;
    let code = match &error {
        KafkaError::MessageConsumption(code) => Some(*code),
        _ => None,
    };
    match code {
        Some(Code::TopicAuthorizationFailed) => ConnectorError::fatal(
            name,
            format!(
                "not authorized to read topics {topics}: grant this principal READ and DESCRIBE on them, or fix the credentials in the source's `properties`"
            ),
        ),
        Some(Code::GroupAuthorizationFailed) => ConnectorError::fatal(
            name,
            format!(
                "not authorized to use consumer group `{group}`: grant this principal READ on group {group}, or fix the credentials in the source's `properties`"
            ),
        ),
        Some(Code::UnknownTopicOrPartition | Code::UnknownTopic) if topics.contains('^') => {
            ConnectorError::transient(
                name,
                format!(
                    "a pattern of `topics` ({topics}) matches no topic yet, or a topic it names does not exist: create one, or fix `topics`; the source reads a new topic once the client's metadata refresh sees it (`topic.metadata.refresh.interval.ms` in `properties`, 5 minutes by default)"
                ),
            )
        }
        Some(Code::UnknownTopicOrPartition | Code::UnknownTopic) => ConnectorError::transient(
            name,
            format!(
                "a subscribed topic ({topics}) does not exist yet: create it, or fix `topics`; the source reads it once it exists"
            ),
        ),
        _ => ConnectorError::transient(name, "consume failed").caused_by(error),
    }
}

/// What to do about a fatal consume error.
fn fatal_hint(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::FencedInstanceId => {
            "; another member of the group uses the same instance_id: give each member its own"
        }
        _ => "",
    }
}

fn convert(
    streams: &mut BTreeMap<String, Arc<str>>,
    copies: &mut Slab,
    message: &BorrowedMessage<'_>,
) -> SourceRecord {
    // Looked up by `&str` first: no allocation per record for the topic's name.
    let stream = match streams.get(message.topic()) {
        Some(stream) => Arc::clone(stream),
        None => {
            let stream: Arc<str> = Arc::from(message.topic());
            streams.insert(message.topic().to_owned(), Arc::clone(&stream));
            stream
        }
    };
    let (headers, too_many) = match super::headers_of(message, super::MAX_HEADERS) {
        Ok(headers) => (headers, None),
        Err(count) => (Headers::default(), Some(count)),
    };
    let record = Record {
        key: message.key().map(|key| copies.copy(key)),
        value: message
            .payload()
            .map(|payload| copies.copy(payload))
            .unwrap_or_default(),
        headers,
        timestamp: message.timestamp().to_millis(),
    };
    let position = SourcePosition {
        stream,
        partition: message.partition(),
        offset: message.offset(),
    };
    if let Some(count) = too_many {
        SourceRecord::malformed(
            record,
            position,
            format!(
                "message has {count} headers, more than the {} the kafka source takes from one; the dead letter keeps none of them",
                super::MAX_HEADERS
            ),
        )
    } else if message.payload().is_none() {
        SourceRecord::malformed(record, position, "message has no payload (a tombstone)")
    } else {
        SourceRecord::new(record, position)
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wakeup.notify();
        drop(self.consumer.take());
        if let Some(poller) = self.poller.take() {
            // Leaving the group takes a round trip to the coordinator; wait for it so that a
            // process that exits right after does not leave its partitions waiting for the
            // session timeout.
            outside_the_runtime(|| {
                if poller.join().is_err() {
                    tracing::warn!(source = %self.name, "The polling thread panicked.");
                }
            });
        }
    }
}

/// Runs `wait` so that it cannot stall the async runtime.
fn outside_the_runtime<R>(wait: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn poll_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
        let max = max.max(1);
        self.shared.wanted.store(max, Ordering::Relaxed);
        let progress = &self.shared.progress;
        let first = Instant::now() + IDLE_POLL.max(linger);
        while progress.buffered().0 == 0 {
            if let Some(error) = self.shared.take_error() {
                return Err(error);
            }
            if tokio::time::timeout_at(first, self.shared.fetched.notified())
                .await
                .is_err()
            {
                return Ok(Some(Vec::new()));
            }
        }
        let deadline = Instant::now() + linger;
        while progress.buffered().0 < max {
            if tokio::time::timeout_at(deadline, self.shared.fetched.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        let batch = progress.take(max);
        self.shared.took();
        Ok(Some(batch))
    }

    fn acknowledgements(&self) -> Option<Arc<dyn crate::connectors::Acknowledgements>> {
        Some(Arc::clone(&self.shared.progress) as Arc<dyn crate::connectors::Acknowledgements>)
    }

    fn lag_handle(&self) -> Option<crate::connectors::LagHandle> {
        let lag = self.lag.clone();
        Some(crate::connectors::LagHandle::new(move || lag.latest()))
    }

    fn group_metrics(&self) -> Option<Arc<GroupMetrics>> {
        Some(Arc::clone(&self.metrics))
    }

    /// Nothing to do here: the sink stage reports acknowledgements straight to the partition
    /// bookkeeping, and the polling thread commits them every `COMMIT_INTERVAL`.
    async fn commit(&mut self, _positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn commit_final(&mut self, _positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        self.send_commit(CommitMode::Sync).await
    }
}

impl KafkaSource {
    /// Commits the acknowledged offsets of the current assignment and waits for the answer
    /// (see [`commit_acknowledged`]).
    async fn send_commit(&mut self, mode: CommitMode) -> Result<(), ConnectorError> {
        let Some(consumer) = self.consumer.clone() else {
            return Ok(());
        };
        let shared = Arc::clone(&self.shared);
        let name = self.name.clone();
        let result = tokio::task::spawn_blocking(move || {
            commit_acknowledged(&consumer, &shared.progress, mode)
        })
        .await
        .map_err(|e| ConnectorError::transient(&name, e.to_string()))?;
        match result {
            Ok(()) => Ok(()),
            Err(KafkaError::ConsumerCommit(code)) if reassigned(code) => {
                tracing::warn!(source = %name, "Partitions were reassigned before this commit; their new owner re-delivers.");
                Ok(())
            }
            Err(error) => Err(ConnectorError::transient(&name, "commit failed").caused_by(error)),
        }
    }
}

/// Commits the acknowledged offsets of the current assignment. What is committed comes from the
/// acknowledgements of the current assignment, never from the pipeline's positions: those may
/// include acknowledgements from before a rebalance, which would move a partition's offset
/// backwards under its new owner (or under us again). An asynchronous commit is recorded as done
/// by the consumer's commit callback once the broker accepts it.
fn commit_acknowledged(
    consumer: &BaseConsumer<GroupContext>,
    progress: &PartitionProgress,
    mode: CommitMode,
) -> Result<(), KafkaError> {
    let _commits = progress.commit_guard();
    let commit = progress.to_commit(&progress.assigned());
    if commit.is_empty() {
        return Ok(());
    }
    consumer.commit(&offsets(&commit), mode)?;
    if matches!(mode, CommitMode::Sync) {
        progress.committed(&commit);
    }
    Ok(())
}

/// Whether a commit failed because the partitions moved to another member in a rebalance: it
/// resumes from the last committed offset and re-delivers what could not be committed, so
/// nothing is lost.
pub(super) fn reassigned(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::AssignmentLost
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_is_bounded_unless_the_user_sets_the_bound() {
        let unset = BTreeMap::new();
        let defaults: BTreeMap<_, _> = defaults_not_set_in(&unset).collect();
        assert_eq!(defaults.get("max.partition.fetch.bytes"), Some(&"524288"));
        assert_eq!(defaults.get("queued.max.messages.kbytes"), Some(&"1024"));
        assert_eq!(defaults.get("fetch.queue.backoff.ms"), Some(&"2"));

        let set = BTreeMap::from([(
            "max.partition.fetch.bytes".to_owned(),
            crate::secret::Secret::from("1048576"),
        )]);
        let defaults: BTreeMap<_, _> = defaults_not_set_in(&set).collect();
        assert_eq!(defaults.get("max.partition.fetch.bytes"), None);
        assert_eq!(defaults.len(), CONSUMER_DEFAULTS.len() - 1);
    }

    #[test]
    fn a_refused_right_stops_the_source_naming_the_grant_and_a_missing_topic_is_waited_for() {
        use RDKafkaErrorCode as Code;
        let subscription = Subscription {
            topics: "users,orders".into(),
            group: "weir".into(),
        };
        let failure = |code| {
            consume_failure(
                "kafka source",
                &subscription,
                KafkaError::MessageConsumption(code),
            )
        };
        let topic = failure(Code::TopicAuthorizationFailed);
        assert!(!topic.is_transient());
        assert!(
            topic.to_string().contains("READ and DESCRIBE on them"),
            "{topic}"
        );
        assert!(topic.to_string().contains("users,orders"), "{topic}");
        let group = failure(Code::GroupAuthorizationFailed);
        assert!(!group.is_transient());
        assert!(group.to_string().contains("READ on group weir"), "{group}");
        let missing = failure(Code::UnknownTopicOrPartition);
        assert!(missing.is_transient());
        assert!(
            missing.to_string().contains("does not exist yet"),
            "{missing}"
        );
        let other = failure(Code::BrokerTransportFailure);
        assert!(other.is_transient());
        assert!(other.to_string().contains("consume failed"), "{other}");
    }

    #[test]
    fn the_brake_knows_every_partition_a_record_came_from_across_runs_and_rebalances() {
        let topic: Arc<str> = Arc::from("users");
        let at = |partition| SourcePosition {
            stream: Arc::clone(&topic),
            partition,
            offset: 0,
        };
        let mut brake = Brake::new(Arc::new(GroupMetrics::default()));
        for partition in [0, 0, 1, 1, 0, 2] {
            brake.consumed(&at(partition));
        }
        let consumed = |brake: &Brake| {
            let partitions: Vec<i32> = brake.consumed.iter().map(|(_, p)| *p).collect();
            partitions
        };
        assert_eq!(consumed(&brake), [0, 1, 2]);
        // Partition 2, the last one read, is revoked and then assigned again: its next record
        // must count although it repeats the last partition seen before the rebalance.
        brake.keep_only(&[("users".to_owned(), 0), ("users".to_owned(), 1)]);
        assert_eq!(consumed(&brake), [0, 1]);
        brake.consumed(&at(2));
        assert_eq!(consumed(&brake), [0, 1, 2]);
    }
}
