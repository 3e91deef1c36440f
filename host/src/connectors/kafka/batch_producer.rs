//! The Kafka sink's producer: librdkafka's, with its delivery reports gathered per batch. Each
//! record carries its batch's tally and its index there, and the task that sent the batch is
//! woken once, when the last report is in. rdkafka's `FutureProducer` gives every record its
//! own future, channel and wake instead: about an eighth of a kafka -> kafka pipeline's CPU
//! (docs/performance.md). The reports are served by a thread of this module's own rather than
//! rdkafka's `ThreadedProducer`, whose polling spins (see [`REPORT_POLL_WINDOW`]).

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio::sync::Notify;

use super::rebootstrap::{BrokerWatch, STATISTICS_INTERVAL_MS};

/// How long a record may wait for room in librdkafka's queue (`queue.buffering.max.*`) before
/// its send fails (and the batch is retried): as long as `FutureProducer::send` was given.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait before trying a full queue again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);

/// How long one poll for delivery reports may block; a report is served as soon as it arrives,
/// whatever the window. rdkafka's poll rounds the time left down to whole milliseconds, so the
/// last fraction of a millisecond of every window is spent polling without waiting, over and
/// over. `ThreadedProducer`'s 100 ms windows make that 9 ms of CPU a second per producer, idle
/// or busy (docs/performance.md); one-second windows spin a tenth as much. The window is also
/// how long the producer outlives its last handle.
const REPORT_POLL_WINDOW: Duration = Duration::from_secs(1);

/// A producer shared by the handles of one sink; its own thread serves the delivery reports.
pub type BatchProducer = Arc<PolledProducer>;

/// Creates a producer with `client`'s settings and starts the thread serving its reports (and
/// its statistics, which [`BrokerWatch`] reads, every [`STATISTICS_INTERVAL_MS`] unless the
/// settings say otherwise).
/// `name` says what the producer serves, in its log lines.
pub fn create(name: &str, client: &ClientConfig) -> KafkaResult<BatchProducer> {
    let mut client = client.clone();
    if client.get("statistics.interval.ms").is_none() {
        client.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    }
    let brokers = BrokerWatch::new(name, client.get("bootstrap.servers").unwrap_or_default());
    let producer: Arc<BaseProducer<BatchContext>> =
        Arc::new(client.create_with_context(BatchContext { brokers })?);
    producer.context().brokers.attach(producer.client());
    let stop = Arc::new(AtomicBool::new(false));
    thread::Builder::new()
        .name("weir-kafka-reports".into())
        .spawn({
            let producer = Arc::clone(&producer);
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::Acquire) {
                    producer.poll(REPORT_POLL_WINDOW);
                }
                // The last handle to the producer, usually: dropping it purges what is still
                // queued and serves those reports (as failures, so their batches send again).
            }
        })
        .map_err(|e| {
            KafkaError::ClientCreation(format!("cannot start the delivery-report thread: {e}"))
        })?;
    Ok(Arc::new(PolledProducer { producer, stop }))
}

/// librdkafka's producer and the thread that serves its delivery reports. Dropping it asks the
/// thread to stop after its current poll window instead of waiting for it.
pub struct PolledProducer {
    producer: Arc<BaseProducer<BatchContext>>,
    stop: Arc<AtomicBool>,
}

impl Deref for PolledProducer {
    type Target = BaseProducer<BatchContext>;

    fn deref(&self) -> &Self::Target {
        &self.producer
    }
}

impl Drop for PolledProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// One record to produce, borrowed from the batch.
pub struct Outgoing<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The message value; `None` is a tombstone (a null value, which compaction removes).
    pub payload: Option<&'a [u8]>,
    /// The partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// The message key, if any.
    pub key: Option<&'a [u8]>,
    /// The message headers, if any.
    pub headers: Option<OwnedHeaders>,
    /// The create time in milliseconds since the epoch, if any.
    pub timestamp: Option<i64>,
}

/// Produces `messages` and waits for every delivery report: one result per message, in order.
/// A full queue is waited out for up to [`QUEUE_TIMEOUT`]; a record librdkafka will not take
/// fails with its error, as does one whose report never comes (the producer was destroyed).
pub async fn send_all(
    producer: &BatchProducer,
    messages: Vec<Outgoing<'_>>,
) -> Vec<Result<(), KafkaError>> {
    let tally = Arc::new(Tally::new(messages.len()));
    for (index, message) in messages.into_iter().enumerate() {
        let pending = Box::new(Pending {
            tally: Some(Arc::clone(&tally)),
            index,
        });
        let mut record = BaseRecord::with_opaque_to(message.topic, pending);
        if let Some(payload) = message.payload {
            record = record.payload(payload);
        }
        if let Some(partition) = message.partition {
            record = record.partition(partition);
        }
        if let Some(key) = message.key {
            record = record.key(key);
        }
        if let Some(headers) = message.headers {
            record = record.headers(headers);
        }
        if let Some(timestamp) = message.timestamp {
            record = record.timestamp(timestamp);
        }
        let queued = Instant::now();
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if queued.elapsed() < QUEUE_TIMEOUT =>
                {
                    record = returned;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((error, mut returned)) => {
                    returned.delivery_opaque.report(Err(error));
                    break;
                }
            }
        }
    }
    tally.wait().await
}

/// Produces one message and waits for its delivery report.
pub async fn send(producer: &BatchProducer, message: Outgoing<'_>) -> Result<(), KafkaError> {
    send_all(producer, vec![message])
        .await
        .pop()
        .unwrap_or(Err(KafkaError::Canceled))
}

/// Routes each delivery report to its batch's tally.
pub struct BatchContext {
    /// Gives the producer its bootstrap servers back if it drops every broker.
    brokers: BrokerWatch,
}

impl ClientContext for BatchContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.brokers.observe(statistics);
    }
}

impl ProducerContext for BatchContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, mut pending: Box<Pending>) {
        pending.report(match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.clone()),
        });
    }
}

/// One record in flight: its batch's tally and its index there.
pub struct Pending {
    /// Taken when the report is made, so that dropping an unreported record reports it.
    tally: Option<Arc<Tally>>,
    index: usize,
}

impl Pending {
    fn report(&mut self, outcome: Result<(), KafkaError>) {
        if let Some(tally) = self.tally.take() {
            tally.record(self.index, outcome);
        }
    }
}

impl Drop for Pending {
    /// A record dropped without a report (librdkafka destroyed it, or it was never queued)
    /// fails as cancelled, which the sink sends again, so its batch never waits forever.
    fn drop(&mut self) {
        if let Some(tally) = self.tally.take() {
            tally.record(self.index, Err(KafkaError::Canceled));
        }
    }
}

/// The reports of one batch as they arrive.
struct Tally {
    state: Mutex<TallyState>,
    /// Notified when the last report is in (the permit is kept if nobody waits yet).
    complete: Notify,
}

struct TallyState {
    outcomes: Vec<Option<Result<(), KafkaError>>>,
    missing: usize,
}

impl Tally {
    fn new(records: usize) -> Self {
        Tally {
            state: Mutex::new(TallyState {
                outcomes: (0..records).map(|_| None).collect(),
                missing: records,
            }),
            complete: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TallyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the report of record `index`; the first report of a record counts.
    fn record(&self, index: usize, outcome: Result<(), KafkaError>) {
        let mut state = self.lock();
        let Some(slot) = state.outcomes.get_mut(index) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        *slot = Some(outcome);
        state.missing -= 1;
        if state.missing == 0 {
            self.complete.notify_one();
        }
    }

    /// Waits for every report and returns them in order.
    async fn wait(&self) -> Vec<Result<(), KafkaError>> {
        loop {
            {
                let mut state = self.lock();
                if state.missing == 0 {
                    return std::mem::take(&mut state.outcomes)
                        .into_iter()
                        .map(|outcome| outcome.unwrap_or(Err(KafkaError::Canceled)))
                        .collect();
                }
            }
            self.complete.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tally_returns_every_report_in_order_once_the_last_is_in() {
        let tally = Arc::new(Tally::new(3));
        let waiter = tokio::spawn({
            let tally = Arc::clone(&tally);
            async move { tally.wait().await }
        });
        tally.record(2, Ok(()));
        tally.record(0, Err(KafkaError::Canceled));
        // A second report of the same record does not count.
        tally.record(0, Ok(()));
        // Let the waiter run: it must still be waiting for record 1.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tally.record(1, Ok(()));
        let outcomes = waiter.await.expect("the waiter ends");
        assert_eq!(outcomes.len(), 3);
        assert!(matches!(outcomes[0], Err(KafkaError::Canceled)));
        assert!(outcomes[1].is_ok() && outcomes[2].is_ok());
    }

    #[tokio::test]
    async fn a_record_dropped_without_a_report_fails_as_cancelled() {
        let tally = Arc::new(Tally::new(2));
        Pending {
            tally: Some(Arc::clone(&tally)),
            index: 0,
        }
        .report(Ok(()));
        drop(Pending {
            tally: Some(Arc::clone(&tally)),
            index: 1,
        });
        let outcomes = tally.wait().await;
        assert!(outcomes[0].is_ok());
        assert!(matches!(outcomes[1], Err(KafkaError::Canceled)));
    }

    #[tokio::test]
    async fn dropping_the_producer_ends_its_report_thread_and_frees_the_client() {
        // No broker needed: librdkafka only tries to connect, to a port nothing listens on.
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("log_level", "0");
        let producer = create("test", &client).expect("a producer");
        let report_thread_holds = Arc::downgrade(&producer.producer);
        drop(producer);
        let freed = Instant::now();
        while report_thread_holds.upgrade().is_some() {
            assert!(
                freed.elapsed() < 30 * REPORT_POLL_WINDOW,
                "the report thread still holds the producer {:?} after its last handle went",
                freed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_empty_batch_needs_no_report() {
        assert!(Tally::new(0).wait().await.is_empty());
    }
}
