//! The Kafka consumer's context, which librdkafka calls with statistics (for the lag) and around
//! rebalances: a partition is given up only after its in-flight records were acknowledged and
//! their offsets committed, so its next owner starts exactly where this one stopped.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Offset, TopicPartitionList};

use super::lag::ConsumerLag;
use super::progress::{PartitionProgress, TopicPartition};

/// Callbacks of one consumer.
pub struct GroupContext {
    name: String,
    lag: ConsumerLag,
    progress: Arc<PartitionProgress>,
    drain_timeout: Duration,
}

impl GroupContext {
    /// The context of the consumer called `name`.
    pub fn new(
        name: &str,
        lag: ConsumerLag,
        progress: Arc<PartitionProgress>,
        drain_timeout: Duration,
    ) -> Self {
        GroupContext {
            name: name.to_owned(),
            lag,
            progress,
            drain_timeout,
        }
    }

    /// Waits for the pipeline to acknowledge what it holds of `partitions`, then commits them.
    fn drain_and_commit(&self, consumer: &BaseConsumer<Self>, partitions: &[TopicPartition]) {
        let (acknowledged, drained) =
            outside_the_runtime(|| self.progress.drain(partitions, self.drain_timeout));
        if !drained {
            tracing::warn!(
                source = %self.name,
                timeout_ms = self.drain_timeout.as_millis() as u64,
                "In-flight records of revoked partitions were not acknowledged in time; their new owner re-delivers them."
            );
        }
        if acknowledged.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &acknowledged {
            if let Err(error) =
                offsets.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))
            {
                tracing::warn!(source = %self.name, %error, "Cannot name a revoked partition's offset.");
            }
        }
        match consumer.commit(&offsets, CommitMode::Sync) {
            Ok(()) => tracing::info!(
                source = %self.name,
                partitions = ?acknowledged,
                "Drained and committed revoked partitions."
            ),
            Err(error) => tracing::warn!(
                source = %self.name,
                %error,
                "Cannot commit revoked partitions; their new owner re-delivers from the last commit."
            ),
        }
    }
}

impl ClientContext for GroupContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.lag.update(statistics);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = partitions_of(list);
            if !partitions.is_empty() {
                self.drain_and_commit(consumer, &partitions);
                self.progress.revoke(&partitions);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                tracing::info!(source = %self.name, partitions = ?partitions, "Partitions assigned.");
                self.progress.assign(&partitions);
            }
            Rebalance::Revoke(list) => {
                tracing::info!(source = %self.name, partitions = ?partitions_of(list), "Partitions revoked.");
            }
            Rebalance::Error(error) => {
                // librdkafka dropped the whole assignment; whatever comes next is a new one.
                tracing::warn!(source = %self.name, %error, "Rebalance failed; the assignment was dropped.");
                self.progress.revoke(&self.progress.assigned());
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

/// Runs `wait` so that it cannot stall the async runtime: librdkafka calls the rebalance
/// callbacks from inside a poll, on a runtime worker, and the acknowledgements being waited for
/// come from tasks that need workers to run.
fn outside_the_runtime<R>(wait: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}
