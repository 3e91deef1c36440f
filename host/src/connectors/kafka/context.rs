//! The Kafka consumer's context, which librdkafka calls with statistics (for the lag) and around
//! rebalances: a partition is given up only after its in-flight records were acknowledged and
//! their offsets committed, so its next owner starts exactly where this one stopped. With the
//! default cooperative-sticky assignor a rebalance names only the partitions that move, so only
//! those drain; the others keep flowing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::deleted_unread;
use super::group::GroupMetrics;
use super::lag::ConsumerLag;
use super::partition_queues::Splitter;
use super::progress::{Commit, PartitionProgress, TopicPartition};
use super::rebootstrap::BrokerWatch;
use super::start_at;

/// Callbacks of one consumer. They run on the source's polling thread, which may block.
pub struct GroupContext {
    name: String,
    lag: ConsumerLag,
    progress: Arc<PartitionProgress>,
    metrics: Arc<GroupMetrics>,
    drain_timeout: Duration,
    /// Set by every assignment and revocation, so the polling thread re-pauses what it had
    /// paused and reads the partitions it owns.
    assignment_changed: AtomicBool,
    /// Splits each partition's queue off before it is assigned, so it is read in turn.
    splitter: Splitter<GroupContext>,
    /// Gives the consumer its bootstrap servers back if it drops every broker.
    brokers: BrokerWatch,
    /// Where partitions the group never committed start, in milliseconds since the epoch
    /// (`start_at_time`); `None` leaves them to `offset_reset`.
    start_at: Option<i64>,
}

impl GroupContext {
    /// The context of the consumer called `name`.
    pub fn new(
        name: &str,
        lag: ConsumerLag,
        progress: Arc<PartitionProgress>,
        metrics: Arc<GroupMetrics>,
        drain_timeout: Duration,
        splitter: Splitter<GroupContext>,
        brokers: BrokerWatch,
    ) -> Self {
        GroupContext {
            name: name.to_owned(),
            lag,
            progress,
            metrics,
            drain_timeout,
            assignment_changed: AtomicBool::new(false),
            splitter,
            brokers,
            start_at: None,
        }
    }

    /// Starts the partitions the group never committed at their first record at or after
    /// `millis` (since the epoch) instead of where `offset_reset` says.
    pub fn starting_at(mut self, millis: Option<i64>) -> Self {
        self.start_at = millis;
        self
    }

    /// Sets the offsets of the partitions of `assignment` that the group never committed to
    /// where `start_at_time` places them. If the brokers cannot say, they start where
    /// `offset_reset` says, with an error line naming them.
    fn place_by_time(
        &self,
        consumer: &BaseConsumer<Self>,
        assignment: &mut TopicPartitionList,
        millis: i64,
    ) {
        let partitions = describe(&partitions_of(assignment));
        match start_at::place(consumer, assignment, millis) {
            Ok(placed) => tracing::info!(
                source = %self.name,
                partitions = %partitions,
                start_at_ms = millis,
                at_time = placed.at_time,
                at_end = placed.at_end,
                committed = placed.committed,
                "Partitions without a committed offset start at their first record at or after start_at_time (at their end where none is that late); the others resume from their commit."
            ),
            Err(error) => tracing::error!(
                source = %self.name,
                partitions = %partitions,
                %error,
                "Cannot learn the committed offsets or the offsets for start_at_time from the brokers; partitions without a committed offset start where offset_reset says."
            ),
        }
    }

    /// The watch over the consumer's broker list.
    pub fn brokers(&self) -> &BrokerWatch {
        &self.brokers
    }

    /// The member's group counters.
    pub fn metrics(&self) -> Arc<GroupMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Where the partitions' split queues wait for the polling thread.
    pub fn splitter(&self) -> &Splitter<GroupContext> {
        &self.splitter
    }

    /// Whether the assignment changed since the last call.
    pub fn take_assignment_changed(&self) -> bool {
        self.assignment_changed.swap(false, Ordering::SeqCst)
    }

    /// Waits for the pipeline to acknowledge what it holds of `partitions`, commits them, and
    /// lets them go. A lost assignment (the session expired, or the poll interval passed) is
    /// let go at once without a commit: the partitions already belong to other members, which
    /// re-deliver everything after the last commit.
    fn give_up(&self, consumer: &BaseConsumer<Self>, partitions: &[TopicPartition], lost: bool) {
        let dropped = self.progress.stop_handing_out(partitions);
        let drained = lost || self.progress.drain(partitions, self.drain_timeout);
        if !drained {
            tracing::warn!(
                source = %self.name,
                partitions = %describe(partitions),
                timeout_ms = self.drain_timeout.as_millis() as u64,
                "In-flight records of revoked partitions were not acknowledged in time; their new owner re-delivers them, and their late acknowledgements are not committed."
            );
        }
        let _commits = self.progress.commit_guard();
        if !lost {
            let commit = self.progress.to_commit(partitions);
            if !commit.is_empty() {
                match consumer.commit(&offsets(&commit), CommitMode::Sync) {
                    Ok(()) => self.progress.committed(&commit),
                    Err(error) => tracing::warn!(
                        source = %self.name,
                        %error,
                        "Cannot commit revoked partitions; their new owner re-delivers from the last commit."
                    ),
                }
            }
        }
        self.progress.revoke(partitions);
        self.assignment_changed.store(true, Ordering::SeqCst);
        self.metrics.revoked(partitions.len(), lost);
        tracing::info!(
            source = %self.name,
            partitions = %describe(partitions),
            lost,
            drained,
            dropped_unread = dropped,
            "Partitions revoked."
        );
    }
}

/// The offsets to commit for `commit`: one past each acknowledged record.
pub fn offsets(commit: &Commit) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in commit {
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))
        {
            tracing::warn!(%error, topic, partition, "Cannot name a partition's offset.");
        }
    }
    list
}

impl ClientContext for GroupContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.lag.update(statistics);
        self.brokers.observe(statistics);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if deleted_unread::is_deleted_unread(fac, message) {
            self.metrics.reset_past_deleted();
            deleted_unread::report(&self.name, message);
        } else {
            deleted_unread::forward(level, fac, message);
        }
    }
}

impl ConsumerContext for GroupContext {
    /// librdkafka's rebalance as rdkafka runs it (the callbacks below around the assignment
    /// change), with the partitions the group never committed placed by `start_at_time` in the
    /// assignment itself, before anything of theirs is fetched.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        assignment: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(millis) = self.start_at {
                    self.place_by_time(consumer, assignment, millis);
                }
                Rebalance::Assign(assignment)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(assignment),
            code => Rebalance::Error(KafkaError::Rebalance(code.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let changed = match (&rebalance, cooperative) {
            (Rebalance::Assign(list), true) => consumer.incremental_assign(list),
            (Rebalance::Assign(list), false) => consumer.assign(list),
            (_, true) => consumer.incremental_unassign(assignment),
            (_, false) => consumer.unassign(),
        };
        if let Err(error) = changed {
            tracing::warn!(source = %self.name, %error, "librdkafka refused the assignment change of a rebalance.");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    /// The answer to a commit; an asynchronous one is recorded as done only here.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let commit: Commit = offsets
                    .elements()
                    .iter()
                    .filter_map(|element| match element.offset() {
                        // One past the last acknowledged record.
                        Offset::Offset(next) => {
                            Some(((element.topic().to_owned(), element.partition()), next - 1))
                        }
                        _ => None,
                    })
                    .collect();
                self.progress.committed(&commit);
            }
            Err(KafkaError::ConsumerCommit(code)) if super::source::reassigned(code) => {
                tracing::debug!(source = %self.name, %code, "A commit met a rebalance; the partitions' next owner re-delivers, or the next commit carries the offsets.");
            }
            Err(error) => {
                self.metrics.commit_failed();
                tracing::warn!(source = %self.name, %error, "Commit failed; the next commit carries the same offsets.");
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let partitions = partitions_of(list);
                if !partitions.is_empty() {
                    self.give_up(consumer, &partitions, consumer.assignment_lost());
                }
            }
            // Before librdkafka starts fetching them, so no record of theirs reaches the
            // consumer queue first.
            Rebalance::Assign(list) => self.splitter.split(&partitions_of(list)),
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                self.progress.assign(&partitions);
                self.metrics.assigned(partitions.len());
                self.assignment_changed.store(true, Ordering::SeqCst);
                tracing::info!(
                    source = %self.name,
                    partitions = %describe(&partitions),
                    owned = self.progress.assigned().len(),
                    "Partitions assigned."
                );
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                // librdkafka dropped the whole assignment; whatever comes next is a new one.
                tracing::warn!(source = %self.name, %error, "Rebalance failed; the assignment was dropped.");
                let assigned = self.progress.assigned();
                let _commits = self.progress.commit_guard();
                self.progress.revoke(&assigned);
                self.assignment_changed.store(true, Ordering::SeqCst);
                self.metrics.revoked(assigned.len(), true);
            }
        }
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|element| (element.topic().to_owned(), element.partition()))
        .collect()
}

/// `topic/0,topic/3`: one field that logs and tests read alike.
fn describe(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(|(topic, partition)| format!("{topic}/{partition}"))
        .collect::<Vec<_>>()
        .join(",")
}
