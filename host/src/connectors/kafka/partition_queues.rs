//! Each assigned partition's own librdkafka queue, read in turn. librdkafka's one consumer queue
//! hands the partitions out in runs of a whole fetch (thousands of records of one partition), so
//! a pipeline with a transform worker per partition kept one worker busy while the others
//! waited. Taking a batch from each partition's queue in turn keeps every worker fed. It is the
//! source's `read_partitions_in_turn` option, off by default: librdkafka's prefetch limit then
//! holds for each partition instead of for the whole consumer, which costs memory.
//!
//! A partition's queue must be split off before librdkafka starts fetching it: records already
//! forwarded to the consumer queue would otherwise be read after later ones from the split
//! queue. So the split happens in the rebalance callback, before the assignment takes effect,
//! and the polling thread adopts the split queues when its poll returns.

use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;

use super::progress::TopicPartition;

/// Wakes the polling thread when any of its queues turns non-empty. A generation counter: the
/// thread reads it before polling and waits only while it is unchanged, so a record arriving
/// between its last poll and its wait is never missed.
#[derive(Default)]
pub struct Wakeup {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Wakeup {
    /// A queue turned non-empty. Called by librdkafka's threads, with the queue's lock held: it
    /// must not call back into librdkafka.
    pub fn notify(&self) {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// The generation to pass to [`Wakeup::wait`] after polling.
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a queue turned non-empty after `seen` was read, or `timeout` passes.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        drop(
            self.changed
                .wait_timeout_while(generation, timeout, |generation| *generation == seen)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }
}

/// One partition's queue, split off the consumer queue.
type SplitQueue<C> = (TopicPartition, PartitionQueue<C>);

/// Splits partitions' queues off in the rebalance callback, where only a borrowed consumer is at
/// hand (librdkafka's split needs the shared one), and holds them until the polling thread
/// adopts them. The split queues hold the consumer, so [`Splitter::clear`] must run before the
/// polling thread lets go of it, or the consumer would never be dropped.
pub struct Splitter<C: ConsumerContext> {
    consumer: OnceLock<Weak<BaseConsumer<C>>>,
    wakeup: Arc<Wakeup>,
    split: Mutex<Vec<SplitQueue<C>>>,
}

impl<C: ConsumerContext + 'static> Splitter<C> {
    /// Splits nothing until [`Splitter::attach`] names the consumer.
    pub fn new(wakeup: Arc<Wakeup>) -> Self {
        Splitter {
            consumer: OnceLock::new(),
            wakeup,
            split: Mutex::new(Vec::new()),
        }
    }

    /// Names the consumer whose partitions to split, before it polls for the first time. A
    /// splitter never attached splits nothing: every partition is read from the consumer queue.
    pub fn attach(&self, consumer: &Arc<BaseConsumer<C>>) {
        // A second attach would be a programming error; the first consumer stays.
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    /// Splits the queues of `partitions`, about to be assigned. A partition that cannot be split
    /// (the consumer is closing) stays on the consumer queue, which is still read.
    pub fn split(&self, partitions: &[TopicPartition]) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut split = self.split.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, partition) in partitions {
            let Some(mut queue) = consumer.split_partition_queue(topic, *partition) else {
                tracing::warn!(
                    topic,
                    partition,
                    "Cannot read a partition from its own queue; it is read from the consumer queue."
                );
                continue;
            };
            let wakeup = Arc::clone(&self.wakeup);
            queue.set_nonempty_callback(move || wakeup.notify());
            split.push(((topic.clone(), *partition), queue));
        }
    }

    /// The queues split since the last call.
    fn take(&self) -> Vec<SplitQueue<C>> {
        std::mem::take(&mut *self.split.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Drops the queues not yet adopted, and with them their hold on the consumer.
    pub fn clear(&self) {
        drop(self.take());
    }
}

/// The polling thread's split queues, read in turn.
pub struct PartitionQueues<C: ConsumerContext> {
    queues: Vec<SplitQueue<C>>,
    turns: Turns,
}

impl<C: ConsumerContext + 'static> Default for PartitionQueues<C> {
    fn default() -> Self {
        PartitionQueues {
            queues: Vec::new(),
            turns: Turns::default(),
        }
    }
}

impl<C: ConsumerContext + 'static> PartitionQueues<C> {
    /// Takes over the queues split since the last call; a partition split again (assigned
    /// anew) replaces its old queue.
    pub fn adopt(&mut self, splitter: &Splitter<C>) {
        for (partition, queue) in splitter.take() {
            match self.queues.iter_mut().find(|(held, _)| *held == partition) {
                Some(held) => held.1 = queue,
                None => self.queues.push((partition, queue)),
            }
        }
    }

    /// Whether no partition is read from its own queue (the option is off, or nothing split
    /// is assigned).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Drops the queues of partitions no longer assigned.
    pub fn keep_only(&mut self, assigned: &[TopicPartition]) {
        self.queues
            .retain(|(partition, _)| assigned.contains(partition));
        self.turns.restart_within(self.queues.len());
    }

    /// Polls the queues in turn without waiting (see [`Turns::run`]).
    pub fn poll_run(
        &mut self,
        run: usize,
        turn: usize,
        take: impl FnMut(KafkaResult<BorrowedMessage<'_>>) -> bool,
    ) -> usize {
        self.turns.run(
            &self.queues,
            run,
            turn,
            |(_, queue)| queue.poll(Duration::ZERO),
            take,
        )
    }
}

/// Whose turn it is among a set of queues: a turn takes up to `turn` records from one queue,
/// then passes on, so consecutive batches come from different partitions.
#[derive(Default)]
struct Turns {
    /// The queue whose turn it is.
    next: usize,
    /// Records taken in the current turn.
    taken_in_turn: usize,
}

impl Turns {
    /// After the set shrank to `len` queues: starts over if the turn was past its end.
    fn restart_within(&mut self, len: usize) {
        if self.next >= len {
            self.next = 0;
            self.taken_in_turn = 0;
        }
    }

    /// Polls the queue whose turn it is, passing each result to `take` until it returns false
    /// or `run` results, or what is left of the turn, were taken. A queue found empty passes the turn on at once, as does
    /// one that gave `turn` records in this turn. Returns how many results were taken: 0 only
    /// when every queue was empty.
    fn run<'q, Q, R>(
        &mut self,
        queues: &'q [Q],
        run: usize,
        turn: usize,
        mut poll: impl FnMut(&'q Q) -> Option<R>,
        mut take: impl FnMut(R) -> bool,
    ) -> usize {
        for _ in 0..queues.len() {
            let queue = &queues[self.next];
            // A run ends with the turn: a run longer than what is left of it would hand one
            // partition's records to several batches in a row.
            let left_in_turn = turn.saturating_sub(self.taken_in_turn).max(1);
            let mut taken = 0;
            let mut ran_dry = false;
            while taken < run.min(left_in_turn) {
                let Some(result) = poll(queue) else {
                    ran_dry = true;
                    break;
                };
                taken += 1;
                if !take(result) {
                    break;
                }
            }
            self.taken_in_turn += taken;
            if ran_dry || self.taken_in_turn >= turn {
                self.next = (self.next + 1) % queues.len();
                self.taken_in_turn = 0;
            }
            if taken > 0 {
                return taken;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use super::*;

    #[test]
    fn a_wait_returns_at_once_when_a_queue_turned_non_empty_after_the_generation_was_read() {
        let wakeup = Wakeup::default();
        let seen = wakeup.generation();
        wakeup.notify();
        // Had the notification been lost, this would wait for the whole hour.
        wakeup.wait(seen, Duration::from_secs(3600));
        assert_eq!(wakeup.generation(), seen + 1);
    }

    #[test]
    fn a_wait_wakes_on_a_notification_from_another_thread() {
        let wakeup = Arc::new(Wakeup::default());
        let seen = wakeup.generation();
        let notifier = {
            let wakeup = Arc::clone(&wakeup);
            std::thread::spawn(move || wakeup.notify())
        };
        wakeup.wait(seen, Duration::from_secs(3600));
        notifier.join().unwrap();
        assert_ne!(wakeup.generation(), seen);
    }

    /// Polls `queues` with `turns` until all are empty, `run` at a time; the order records
    /// came out in.
    fn drain(
        turns: &mut Turns,
        queues: &[RefCell<VecDeque<u32>>],
        run: usize,
        turn: usize,
    ) -> Vec<u32> {
        let mut out = Vec::new();
        while turns.run(
            queues,
            run,
            turn,
            |queue| queue.borrow_mut().pop_front(),
            |record| {
                out.push(record);
                true
            },
        ) > 0
        {}
        out
    }

    fn queues_of(contents: &[&[u32]]) -> Vec<RefCell<VecDeque<u32>>> {
        contents
            .iter()
            .map(|records| RefCell::new(records.iter().copied().collect()))
            .collect()
    }

    #[test]
    fn each_queue_gives_a_turn_of_records_then_passes_it_on() {
        let queues = queues_of(&[&[1, 2, 3, 4, 5], &[11, 12, 13], &[21, 22, 23, 24]]);
        let out = drain(&mut Turns::default(), &queues, 1, 2);
        assert_eq!(out, [1, 2, 11, 12, 21, 22, 3, 4, 13, 23, 24, 5]);
    }

    #[test]
    fn a_run_longer_than_a_turn_ends_with_the_turn() {
        let queues = queues_of(&[&[1, 2, 3, 4, 5], &[11, 12, 13, 14, 15]]);
        let mut turns = Turns::default();
        let mut runs = Vec::new();
        loop {
            let mut run = Vec::new();
            let taken = turns.run(
                &queues,
                256,
                2,
                |q| q.borrow_mut().pop_front(),
                |r| {
                    run.push(r);
                    true
                },
            );
            if taken == 0 {
                break;
            }
            runs.push(run);
        }
        assert_eq!(
            runs,
            [
                vec![1, 2],
                vec![11, 12],
                vec![3, 4],
                vec![13, 14],
                vec![5],
                vec![15]
            ]
        );
    }

    #[test]
    fn a_turn_may_span_several_runs_and_an_empty_queue_passes_it_on_at_once() {
        let queues = queues_of(&[&[1, 2, 3, 4, 5, 6, 7], &[], &[21, 22, 23]]);
        let mut turns = Turns::default();
        let mut first = Vec::new();
        // Runs of 2 within turns of 4: the first two runs come from the first queue.
        for _ in 0..2 {
            turns.run(
                &queues,
                2,
                4,
                |q| q.borrow_mut().pop_front(),
                |r| {
                    first.push(r);
                    true
                },
            );
        }
        assert_eq!(first, [1, 2, 3, 4]);
        // The second queue is empty: the next run comes from the third.
        let mut next = Vec::new();
        turns.run(
            &queues,
            2,
            4,
            |q| q.borrow_mut().pop_front(),
            |r| {
                next.push(r);
                true
            },
        );
        assert_eq!(next, [21, 22]);
        assert_eq!(drain(&mut turns, &queues, 2, 4), [23, 5, 6, 7]);
    }

    #[test]
    fn a_refused_result_ends_the_run_and_nothing_is_taken_from_empty_queues() {
        let queues = queues_of(&[&[1, 2, 3], &[]]);
        let mut turns = Turns::default();
        let mut seen = Vec::new();
        let taken = turns.run(
            &queues,
            10,
            10,
            |q| q.borrow_mut().pop_front(),
            |r| {
                seen.push(r);
                r != 2
            },
        );
        assert_eq!((taken, seen), (2, vec![1, 2]));
        assert_eq!(drain(&mut turns, &queues, 10, 10), [3]);
        let empty = queues_of(&[&[], &[]]);
        assert_eq!(
            turns.run(&empty, 10, 10, |q| q.borrow_mut().pop_front(), |_| true),
            0
        );
        assert_eq!(
            Turns::default().run(
                &empty[..0],
                10,
                10,
                |q| q.borrow_mut().pop_front(),
                |_| true
            ),
            0
        );
    }
}
