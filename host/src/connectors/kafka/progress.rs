//! What the Kafka source handed to the pipeline and what the pipeline acknowledged, per
//! partition, so that a partition can be given up in a rebalance only after its in-flight
//! records are acknowledged and committed: the next owner starts exactly where this one stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::record::SourcePosition;

/// A topic and partition.
pub type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct State {
    /// Partitions assigned to this consumer now.
    assigned: BTreeSet<TopicPartition>,
    /// The highest offset per partition returned to the pipeline.
    delivered: BTreeMap<TopicPartition, i64>,
    /// The highest offset per partition the pipeline acknowledged.
    acknowledged: BTreeMap<TopicPartition, i64>,
    /// For each partition, the revocation (epoch) that last took it away.
    revoked_in: BTreeMap<TopicPartition, u64>,
}

/// Delivered and acknowledged offsets per partition, shared by the source, the pipeline's sink
/// stage (through [`crate::connectors::Acknowledgements`]) and the rebalance callback.
#[derive(Debug, Default)]
pub struct PartitionProgress {
    state: Mutex<State>,
    acknowledged: Condvar,
    revocations: AtomicU64,
}

impl PartitionProgress {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Partitions were assigned to this consumer.
    pub fn assign(&self, partitions: &[TopicPartition]) {
        let mut state = self.state();
        state.assigned.extend(partitions.iter().cloned());
    }

    /// The partitions assigned now.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        self.state().assigned.iter().cloned().collect()
    }

    /// Partitions were taken away; their bookkeeping starts afresh if they come back.
    pub fn revoke(&self, partitions: &[TopicPartition]) {
        let epoch = self.revocations.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.state();
        for partition in partitions {
            state.assigned.remove(partition);
            state.delivered.remove(partition);
            state.acknowledged.remove(partition);
            state.revoked_in.insert(partition.clone(), epoch);
        }
    }

    /// How many revocations happened so far: lets a poll notice one that happened inside it.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::SeqCst)
    }

    /// Whether `partition` was revoked after revocation number `epoch`.
    pub fn revoked_since(&self, epoch: u64, partition: &TopicPartition) -> bool {
        self.state()
            .revoked_in
            .get(partition)
            .is_some_and(|&revoked| revoked > epoch)
    }

    /// Records up to these positions (one per stream and partition) were handed to the
    /// pipeline.
    pub fn delivered(&self, positions: &[SourcePosition]) {
        let mut state = self.state();
        for position in positions {
            let partition = (position.stream.to_string(), position.partition);
            if state.assigned.contains(&partition) {
                let entry = state.delivered.entry(partition).or_insert(position.offset);
                *entry = (*entry).max(position.offset);
            }
        }
    }

    /// The pipeline acknowledged everything up to these positions.
    pub fn acknowledged(&self, positions: &[SourcePosition]) {
        let mut state = self.state();
        for position in positions {
            let partition = (position.stream.to_string(), position.partition);
            if state.assigned.contains(&partition) {
                let entry = state
                    .acknowledged
                    .entry(partition)
                    .or_insert(position.offset);
                *entry = (*entry).max(position.offset);
            }
        }
        drop(state);
        self.acknowledged.notify_all();
    }

    /// Waits until every record delivered from `partitions` is acknowledged, or `timeout`
    /// passes. Returns the acknowledged offset of each of them that has one, and whether the
    /// wait completed (false: some in-flight records were not acknowledged in time).
    pub fn drain(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> (Vec<(TopicPartition, i64)>, bool) {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        let pending = |state: &State| {
            partitions.iter().any(|partition| {
                state.delivered.get(partition).is_some_and(|&delivered| {
                    state
                        .acknowledged
                        .get(partition)
                        .is_none_or(|&acknowledged| acknowledged < delivered)
                })
            })
        };
        let mut drained = true;
        while pending(&state) {
            let now = Instant::now();
            if now >= deadline {
                drained = false;
                break;
            }
            state = self
                .acknowledged
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let acknowledged = partitions
            .iter()
            .filter_map(|p| state.acknowledged.get(p).map(|&offset| (p.clone(), offset)))
            .collect();
        (acknowledged, drained)
    }

    /// The subset of `positions` whose partition is still assigned: committing a partition that
    /// moved to another member could move its offset backwards under the new owner.
    pub fn still_assigned(&self, positions: &[SourcePosition]) -> Vec<SourcePosition> {
        let state = self.state();
        positions
            .iter()
            .filter(|p| {
                state
                    .assigned
                    .contains(&(p.stream.to_string(), p.partition))
            })
            .cloned()
            .collect()
    }
}

impl crate::connectors::Acknowledgements for PartitionProgress {
    fn acknowledged(&self, positions: &[SourcePosition]) {
        PartitionProgress::acknowledged(self, positions);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        ("users".to_owned(), partition)
    }

    fn position(partition: i32, offset: i64) -> SourcePosition {
        SourcePosition {
            stream: Arc::from("users"),
            partition,
            offset,
        }
    }

    #[test]
    fn drain_waits_for_the_acknowledgement_of_every_delivered_record() {
        let progress = Arc::new(PartitionProgress::default());
        progress.assign(&[tp(0), tp(1)]);
        progress.delivered(&[position(0, 41), position(1, 7)]);
        progress.acknowledged(&[position(0, 20), position(1, 7)]);
        let acker = {
            let progress = Arc::clone(&progress);
            std::thread::spawn(move || progress.acknowledged(&[position(0, 41)]))
        };
        let (offsets, drained) = progress.drain(&[tp(0), tp(1)], Duration::from_secs(600));
        acker.join().unwrap();
        assert!(drained);
        assert_eq!(offsets, vec![(tp(0), 41), (tp(1), 7)]);
    }

    #[test]
    fn drain_gives_up_at_the_timeout_with_what_was_acknowledged() {
        let progress = PartitionProgress::default();
        progress.assign(&[tp(0)]);
        progress.delivered(&[position(0, 41)]);
        progress.acknowledged(&[position(0, 20)]);
        let (offsets, drained) = progress.drain(&[tp(0)], Duration::ZERO);
        assert!(!drained);
        assert_eq!(offsets, vec![(tp(0), 20)]);
    }

    #[test]
    fn revoked_partitions_are_neither_tracked_nor_committed() {
        let progress = PartitionProgress::default();
        progress.assign(&[tp(0), tp(1)]);
        let before = progress.revocations();
        progress.revoke(&[tp(1)]);
        assert!(progress.revoked_since(before, &tp(1)));
        assert!(!progress.revoked_since(before, &tp(0)));
        assert!(!progress.revoked_since(progress.revocations(), &tp(1)));
        progress.delivered(&[position(1, 5)]);
        progress.acknowledged(&[position(1, 5)]);
        assert_eq!(progress.drain(&[tp(1)], Duration::ZERO), (Vec::new(), true));
        assert_eq!(
            progress.still_assigned(&[position(0, 3), position(1, 5)]),
            vec![position(0, 3)]
        );
        // Back again: tracked from scratch.
        progress.assign(&[tp(1)]);
        assert_eq!(
            progress.still_assigned(&[position(1, 9)]),
            vec![position(1, 9)]
        );
    }
}
