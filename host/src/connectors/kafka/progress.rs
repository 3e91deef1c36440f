//! What the Kafka source fetched, handed to the pipeline, had acknowledged and committed, per
//! partition of the current assignment, so that a partition is given up in a rebalance only
//! after its in-flight records are acknowledged and committed (its next owner starts exactly
//! where this one stopped), and so that no commit ever moves an offset backwards.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::record::{SourcePosition, SourceRecord};

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// What one [`PartitionProgress::push`] did to the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Records the buffer held before the push.
    pub held_before: usize,
    /// Records the buffer holds after it.
    pub held_after: usize,
}

impl Pushed {
    /// Records kept (those of partitions still assigned): the push holds the buffer's lock, so
    /// nothing else changed it in between.
    pub fn kept(&self) -> usize {
        self.held_after - self.held_before
    }

    /// Whether a pipeline waiting for a batch of `batch` records has reason to look now: the
    /// buffer was empty (its first record starts the batch's linger) or it now holds a full
    /// batch. Every other push only adds to a batch that is waiting out its linger anyway, so
    /// waking the pipeline for it (a thread hand-over per fetch at a trickle) buys nothing.
    pub fn wakes_a_waiting_batch(&self, batch: usize) -> bool {
        self.kept() > 0 && (self.held_before == 0 || self.held_after >= batch)
    }
}

/// A partition of the current assignment.
#[derive(Debug, Default, Clone, Copy)]
struct Owned {
    /// The highest offset handed to the pipeline.
    delivered: Option<i64>,
    /// The highest offset the pipeline acknowledged.
    acknowledged: Option<i64>,
    /// The highest offset whose commit succeeded (the committed position is one past it).
    committed: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    /// Partitions assigned to this consumer now.
    assigned: BTreeMap<TopicPartition, Owned>,
    /// Partitions given up before everything handed to the pipeline from them was
    /// acknowledged: per assignment given up, in order, the last offset handed out then. Those
    /// records are still in the pipeline and their acknowledgements arrive late, in order, the
    /// last one naming exactly that offset; they belong to an old assignment and must neither
    /// count for a new one (the partition may be ours again meanwhile) nor be committed.
    stale: BTreeMap<TopicPartition, VecDeque<i64>>,
    /// Records fetched and not yet handed to the pipeline, oldest first.
    buffer: VecDeque<SourceRecord>,
    /// Bytes of key and value held in `buffer`.
    buffered_bytes: usize,
}

impl State {
    /// Drops the buffered records `keep` refuses, keeping `buffered_bytes` right; returns how
    /// many were dropped.
    fn retain_buffered(&mut self, mut keep: impl FnMut(&SourceRecord) -> bool) -> usize {
        let before = self.buffer.len();
        let mut dropped_bytes = 0;
        self.buffer.retain(|record| {
            let kept = keep(record);
            if !kept {
                dropped_bytes += size_of(record);
            }
            kept
        });
        self.buffered_bytes -= dropped_bytes;
        before - self.buffer.len()
    }
}

/// The bytes a buffered record holds: its key, value and headers' names and values (a message
/// may carry up to `MAX_HEADERS` of them, so they are not always small).
fn size_of(record: &SourceRecord) -> usize {
    let record = &record.record;
    let headers: usize = record
        .headers
        .iter()
        .map(|header| header.key.as_str().len() + header.value.len())
        .sum();
    record.value.len() + record.key.as_ref().map_or(0, |key| key.len()) + headers
}

/// The bookkeeping, shared by the polling thread (which fetches and serves rebalances), the
/// source (which hands records out and commits) and the pipeline's sink stage (through
/// [`crate::connectors::Acknowledgements`]).
#[derive(Debug, Default)]
pub struct PartitionProgress {
    state: Mutex<State>,
    acknowledged: Condvar,
    /// Held across computing, sending and recording a commit, and across giving a partition up,
    /// so that a commit computed before a revocation cannot land after the revocation's own.
    commits: Mutex<()>,
}

/// A commit to send: the offset of the last acknowledged record per partition.
pub type Commit = Vec<(TopicPartition, i64)>;

impl PartitionProgress {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serialises commits and revocations; hold the guard while committing.
    pub fn commit_guard(&self) -> MutexGuard<'_, ()> {
        self.commits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Partitions were assigned to this consumer: their bookkeeping starts afresh.
    pub fn assign(&self, partitions: &[TopicPartition]) {
        let mut state = self.state();
        for partition in partitions {
            state.assigned.insert(partition.clone(), Owned::default());
        }
    }

    /// The partitions assigned now.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        self.state().assigned.keys().cloned().collect()
    }

    /// Partitions are about to be revoked: what was fetched from them and not handed out is
    /// dropped (their next owner reads it again from the committed offset), and nothing more of
    /// them is handed out.
    pub fn stop_handing_out(&self, partitions: &[TopicPartition]) -> usize {
        self.state().retain_buffered(|record| {
            !partitions
                .iter()
                .any(|(topic, partition)| is_of(record, topic, *partition))
        })
    }

    /// Partitions were taken away. Records of them still in the pipeline are remembered so
    /// that their late acknowledgements are ignored.
    pub fn revoke(&self, partitions: &[TopicPartition]) {
        let mut state = self.state();
        for partition in partitions {
            state.retain_buffered(|r| !is_of(r, &partition.0, partition.1));
            let Some(owned) = state.assigned.remove(partition) else {
                continue;
            };
            if let Some(delivered) = owned.delivered
                && owned.acknowledged.is_none_or(|acked| acked < delivered)
            {
                state
                    .stale
                    .entry(partition.clone())
                    .or_default()
                    .push_back(delivered);
            }
        }
    }

    /// Records fetched, waiting to be handed out, under one lock; those of partitions not
    /// assigned (any more) are dropped. Says how many records the buffer held before and after.
    pub fn push(&self, records: impl IntoIterator<Item = SourceRecord>) -> Pushed {
        let mut state = self.state();
        let held_before = state.buffer.len();
        // Fetches come in runs of one partition: remember the last answer instead of looking
        // every record's partition up.
        let mut last: Option<(std::sync::Arc<str>, i32, bool)> = None;
        for record in records {
            let position = &record.position;
            let assigned = match &last {
                Some((stream, partition, assigned))
                    if *partition == position.partition
                        && std::sync::Arc::ptr_eq(stream, &position.stream) =>
                {
                    *assigned
                }
                _ => {
                    let assigned = state
                        .assigned
                        .contains_key(&(position.stream.to_string(), position.partition));
                    last = Some((
                        std::sync::Arc::clone(&position.stream),
                        position.partition,
                        assigned,
                    ));
                    assigned
                }
            };
            if assigned {
                state.buffered_bytes += size_of(&record);
                state.buffer.push_back(record);
            }
        }
        Pushed {
            held_before,
            held_after: state.buffer.len(),
        }
    }

    /// Records fetched and not yet handed out, and the bytes they hold.
    pub fn buffered(&self) -> (usize, usize) {
        let state = self.state();
        (state.buffer.len(), state.buffered_bytes)
    }

    /// Hands out at most `max` buffered records, oldest first, and counts them as delivered.
    pub fn take(&self, max: usize) -> Vec<SourceRecord> {
        let mut state = self.state();
        let count = max.min(state.buffer.len());
        let batch: Vec<SourceRecord> = state.buffer.drain(..count).collect();
        state.buffered_bytes -= batch.iter().map(size_of).sum::<usize>();
        for position in SourcePosition::highest(batch.iter().map(|r| &r.position)) {
            let key = (position.stream.to_string(), position.partition);
            if let Some(owned) = state.assigned.get_mut(&key) {
                owned.delivered = Some(
                    owned
                        .delivered
                        .map_or(position.offset, |d| d.max(position.offset)),
                );
            }
        }
        batch
    }

    /// Records up to these positions (one per stream and partition) were handed to the
    /// pipeline by another path than [`take`](Self::take).
    #[cfg(test)]
    fn delivered(&self, positions: &[SourcePosition]) {
        let mut state = self.state();
        for position in positions {
            let key = (position.stream.to_string(), position.partition);
            if let Some(owned) = state.assigned.get_mut(&key) {
                owned.delivered = Some(
                    owned
                        .delivered
                        .map_or(position.offset, |d| d.max(position.offset)),
                );
            }
        }
    }

    /// The pipeline acknowledged everything up to these positions.
    pub fn acknowledged(&self, positions: &[SourcePosition]) {
        let mut state = self.state();
        for position in positions {
            let key = (position.stream.to_string(), position.partition);
            if let Some(stale) = state.stale.get_mut(&key)
                && let Some(&last) = stale.front()
            {
                // Late: it belongs to an assignment given up earlier.
                if position.offset == last {
                    stale.pop_front();
                    if stale.is_empty() {
                        state.stale.remove(&key);
                    }
                }
                continue;
            }
            if let Some(owned) = state.assigned.get_mut(&key) {
                owned.acknowledged = Some(
                    owned
                        .acknowledged
                        .map_or(position.offset, |a| a.max(position.offset)),
                );
            }
        }
        drop(state);
        self.acknowledged.notify_all();
    }

    /// Waits until every record handed out from `partitions` is acknowledged, or `timeout`
    /// passes. Returns whether the wait completed (false: some were not acknowledged in time).
    pub fn drain(&self, partitions: &[TopicPartition], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        let pending = |state: &State| {
            partitions.iter().any(|partition| {
                state.assigned.get(partition).is_some_and(|owned| {
                    owned.delivered.is_some_and(|delivered| {
                        owned.acknowledged.is_none_or(|acked| acked < delivered)
                    })
                })
            })
        };
        while pending(&state) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .acknowledged
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// What to commit for `partitions` (those still assigned): the last acknowledged offset of
    /// each, where it is above the last one committed in this assignment. Never lower: a commit
    /// only moves forward.
    pub fn to_commit<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Commit {
        let state = self.state();
        partitions
            .into_iter()
            .filter_map(|partition| {
                let owned = state.assigned.get(partition)?;
                let acknowledged = owned.acknowledged?;
                owned
                    .committed
                    .is_none_or(|committed| committed < acknowledged)
                    .then(|| (partition.clone(), acknowledged))
            })
            .collect()
    }

    /// A commit of these offsets succeeded.
    pub fn committed(&self, commit: &Commit) {
        let mut state = self.state();
        for (partition, offset) in commit {
            if let Some(owned) = state.assigned.get_mut(partition) {
                owned.committed = Some(owned.committed.map_or(*offset, |c| c.max(*offset)));
            }
        }
    }
}

fn is_of(record: &SourceRecord, topic: &str, partition: i32) -> bool {
    record.position.partition == partition && &*record.position.stream == topic
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
    use crate::record::Record;

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

    fn record(partition: i32, offset: i64) -> SourceRecord {
        SourceRecord::new(
            Record::from_value(b"{}".to_vec()),
            position(partition, offset),
        )
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
        let drained = progress.drain(&[tp(0), tp(1)], Duration::from_secs(600));
        acker.join().unwrap();
        assert!(drained);
        assert_eq!(
            progress.to_commit(&[tp(0), tp(1)]),
            vec![(tp(0), 41), (tp(1), 7)]
        );
    }

    #[test]
    fn drain_gives_up_at_the_timeout_with_what_was_acknowledged() {
        let progress = PartitionProgress::default();
        progress.assign(&[tp(0)]);
        progress.delivered(&[position(0, 41)]);
        progress.acknowledged(&[position(0, 20)]);
        assert!(!progress.drain(&[tp(0)], Duration::ZERO));
        assert_eq!(progress.to_commit(&[tp(0)]), vec![(tp(0), 20)]);
    }

    #[test]
    fn buffered_records_of_a_revoked_partition_are_never_handed_out() {
        let progress = PartitionProgress::default();
        progress.assign(&[tp(0), tp(1)]);
        for offset in 0..3 {
            assert_eq!(
                progress.push([record(0, offset), record(1, offset)]).kept(),
                2
            );
        }
        assert_eq!(progress.stop_handing_out(&[tp(1)]), 3);
        progress.revoke(&[tp(1)]);
        assert_eq!(
            progress.push([record(1, 3), record(0, 3)]).kept(),
            1,
            "partition 1 is not assigned any more"
        );
        let batch = progress.take(10);
        assert_eq!(
            batch
                .iter()
                .map(|r| r.position.partition)
                .collect::<Vec<_>>(),
            vec![0, 0, 0, 0]
        );
        assert_eq!(progress.buffered(), (0, 0));
    }

    /// The polling thread wakes a pipeline waiting for a batch only when there is something
    /// new to see: a first record in an empty buffer, or a full batch.
    #[test]
    fn a_push_wakes_the_pipeline_only_for_a_first_record_or_a_full_batch() {
        let progress = PartitionProgress::default();
        progress.assign(&[tp(0), tp(1)]);
        let first = progress.push([record(0, 0)]);
        assert!(first.wakes_a_waiting_batch(3), "{first:?}");
        let more = progress.push([record(1, 0)]);
        assert!(!more.wakes_a_waiting_batch(3), "{more:?}");
        let full = progress.push([record(0, 1)]);
        assert!(full.wakes_a_waiting_batch(3), "{full:?}");
        let not_assigned = progress.push([record(2, 0)]);
        assert_eq!(not_assigned.kept(), 0);
        assert!(!not_assigned.wakes_a_waiting_batch(3), "{not_assigned:?}");
        assert_eq!(progress.take(3).len(), 3);
        let after_a_take = progress.push([record(1, 1)]);
        assert!(after_a_take.wakes_a_waiting_batch(3), "{after_a_take:?}");
    }

    /// The bytes held bound the buffer, so they must follow every way a record leaves it.
    #[test]
    fn buffered_bytes_follow_pushes_takes_and_revocations() {
        let progress = PartitionProgress::default();
        progress.assign(&[tp(0), tp(1)]);
        let size = super::size_of(&record(0, 0));
        assert!(size > 0);
        progress.push((0..4).flat_map(|offset| [record(0, offset), record(1, offset)]));
        assert_eq!(progress.buffered(), (8, 8 * size));
        progress.take(3);
        assert_eq!(progress.buffered(), (5, 5 * size));
        progress.stop_handing_out(&[tp(1)]);
        progress.revoke(&[tp(1)]);
        let (records, bytes) = progress.buffered();
        assert_eq!(bytes, records * size);
        progress.take(10);
        assert_eq!(progress.buffered(), (0, 0));
    }

    /// The rule of issue 12: a late acknowledgement (after a drain timed out and the partition
    /// moved away, and even after it came back) never moves a committed offset backwards.
    #[test]
    fn a_commit_never_moves_backwards_even_with_late_acknowledgements() {
        let progress = PartitionProgress::default();
        progress.assign(&[tp(0)]);
        progress.delivered(&[position(0, 41)]);
        progress.acknowledged(&[position(0, 20)]);
        let commit = progress.to_commit(&[tp(0)]);
        assert_eq!(commit, vec![(tp(0), 20)]);
        progress.committed(&commit);
        assert_eq!(progress.to_commit(&[tp(0)]), Vec::new(), "nothing new");
        // The drain times out with 21..=41 still in the pipeline; the partition moves away,
        // another member commits up to 99, and it comes back to us at 100.
        assert!(!progress.drain(&[tp(0)], Duration::ZERO));
        progress.revoke(&[tp(0)]);
        progress.acknowledged(&[position(0, 30)]);
        assert_eq!(progress.to_commit(&[tp(0)]), Vec::new(), "not ours");
        progress.assign(&[tp(0)]);
        progress.delivered(&[position(0, 120)]);
        // The old assignment's last acknowledgements arrive now: ignored, not committed.
        progress.acknowledged(&[position(0, 35)]);
        progress.acknowledged(&[position(0, 41)]);
        assert_eq!(progress.to_commit(&[tp(0)]), Vec::new());
        // This assignment's own acknowledgements count again.
        progress.acknowledged(&[position(0, 110)]);
        let commit = progress.to_commit(&[tp(0)]);
        assert_eq!(commit, vec![(tp(0), 110)]);
        progress.committed(&commit);
        // Out of order (it cannot happen within one assignment, but the rule holds anyway).
        progress.acknowledged(&[position(0, 105)]);
        assert_eq!(progress.to_commit(&[tp(0)]), Vec::new(), "never below 110");
        progress.acknowledged(&[position(0, 120)]);
        assert_eq!(progress.to_commit(&[tp(0)]), vec![(tp(0), 120)]);
    }

    #[test]
    fn a_drained_partition_leaves_nothing_stale() {
        let progress = PartitionProgress::default();
        progress.assign(&[tp(0)]);
        progress.delivered(&[position(0, 9)]);
        progress.acknowledged(&[position(0, 9)]);
        assert!(progress.drain(&[tp(0)], Duration::ZERO));
        progress.revoke(&[tp(0)]);
        progress.assign(&[tp(0)]);
        progress.delivered(&[position(0, 3)]);
        progress.acknowledged(&[position(0, 3)]);
        assert_eq!(progress.to_commit(&[tp(0)]), vec![(tp(0), 3)]);
    }
}
