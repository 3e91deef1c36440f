//! The sink stage: writes the outputs of up to `batch.sink_in_flight` batches at once, and then,
//! one batch at a time in the order batches arrived, writes its failures to the dead-letter
//! destination and acknowledges it back to the source stage. A batch whose write finished early
//! waits for every batch before it (an ordered watermark, as Vector's ordered finalizer), so the
//! source commits only contiguous written positions. Nothing is acknowledged before both writes
//! succeeded.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, watch};

use crate::connectors::{ConnectorError, Rejected, Sink};
use crate::observe::tap::{DEAD_LETTER_STAGE, SINK_STAGE, TapPoint};
use crate::pipeline::batch::{Acknowledged, ChainOutput, Processed};
use crate::pipeline::retry;
use crate::pipeline::stats::{BatchStage, PipelineStats};
use crate::record::{FailedAt, Failure, Record, RecordError, RecordErrorKind};

/// Writes outputs (several batches at once), then, in arrival order, each batch's dead letters
/// and its acknowledgement to the source.
///
/// The writes run inside this task (not spawned), so they start in the order batches arrived:
/// a sink whose store orders writes by when they start relies on it (see [`Sink::fork`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    pipeline: String,
    sink: Box<dyn Sink>,
    mut dead_letter: Box<dyn Sink>,
    mut processed_rx: mpsc::Receiver<Processed>,
    acknowledged: Acknowledged,
    in_flight: usize,
    stats: Arc<PipelineStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectorError> {
    sink.warm_up();
    dead_letter.warm_up();
    let mut idle = handles(sink, in_flight);
    tracing::debug!(
        pipeline,
        in_flight = idle.len(),
        "Sink stage writes up to this many batches at once."
    );
    let mut writing = FuturesOrdered::new();
    let mut input_open = true;
    let mut done = Done {
        pipeline: &pipeline,
        dead_letter: dead_letter.as_mut(),
        acknowledged: &acknowledged,
        stats: &stats,
        sink_tap: stats.taps().point(SINK_STAGE),
        dead_letter_tap: stats.taps().point(DEAD_LETTER_STAGE),
        shutdown: shutdown.clone(),
    };
    loop {
        tokio::select! {
            // Finishing first frees a handle and releases acknowledgements before more is taken.
            biased;
            Some(written) = writing.next(), if !writing.is_empty() => {
                let Written { handle, processed, rejected, written_at } = written;
                idle.push(handle);
                let Some(rejected) = rejected? else {
                    // Shutdown during an outage: nothing more is acknowledged (the batches
                    // behind this one neither, being later), and closing would wait on the
                    // store that does not answer.
                    return Ok(());
                };
                if !done.finish(processed, rejected, written_at).await? {
                    break;
                }
            }
            received = processed_rx.recv(), if input_open && !idle.is_empty() => match received {
                Some(processed) => {
                    stats.sink_queue().left();
                    stats
                        .stage_latency(BatchStage::SinkQueue)
                        .observe(processed.transformed_at.elapsed());
                    let handle = idle.pop().expect("guarded: a handle is idle");
                    writing.push_back(write_outputs(handle, processed, Arc::clone(&stats), shutdown.clone()));
                }
                None => input_open = false,
            },
            else => break,
        }
    }
    // Writes still under way here have no one to acknowledge them to: the source stage is gone.
    drop(writing);
    for mut handle in idle {
        handle.close().await?;
    }
    dead_letter.close().await?;
    Ok(())
}

/// `sink` and up to `in_flight - 1` more handles on its store; just `sink` when it writes one
/// batch at a time.
fn handles(sink: Box<dyn Sink>, in_flight: usize) -> Vec<Box<dyn Sink>> {
    let mut handles = Vec::with_capacity(in_flight.max(1));
    while handles.len() + 1 < in_flight {
        let Some(handle) = sink.fork() else { break };
        handles.push(handle);
    }
    handles.push(sink);
    handles
}

/// A batch whose outputs were written (or not), with the handle that wrote them.
struct Written {
    handle: Box<dyn Sink>,
    processed: Processed,
    /// The outputs the sink refused; `Ok(None)` when shutdown ended the write unfinished.
    rejected: Result<Option<Vec<Rejected>>, ConnectorError>,
    /// When the write ended.
    written_at: Instant,
}

/// Writes a batch's outputs through `handle`, retrying as long as the pipeline runs.
async fn write_outputs(
    mut handle: Box<dyn Sink>,
    processed: Processed,
    stats: Arc<PipelineStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Written {
    let outputs = &processed.output.outputs;
    let rejected = if outputs.is_empty() {
        Ok(Some(Vec::new()))
    } else {
        let writing = Instant::now();
        let written = retry::write_with_backoff(
            "sink",
            handle.as_mut(),
            outputs,
            &mut shutdown,
            stats.sink_retries(),
        )
        .await;
        if matches!(written, Ok(Some(_))) {
            stats.sink_write_latency().observe(writing.elapsed());
        }
        written
    };
    Written {
        handle,
        processed,
        rejected,
        written_at: Instant::now(),
    }
}

/// What finishes a written batch, in arrival order: its dead letters, its counters and taps,
/// its acknowledgement.
struct Done<'a> {
    pipeline: &'a str,
    dead_letter: &'a mut dyn Sink,
    acknowledged: &'a Acknowledged,
    stats: &'a PipelineStats,
    sink_tap: Arc<TapPoint>,
    dead_letter_tap: Arc<TapPoint>,
    shutdown: watch::Receiver<bool>,
}

impl Done<'_> {
    /// Dead-letters the batch's failures and the outputs the sink refused, then acknowledges
    /// the batch. False when the source stage no longer listens.
    async fn finish(
        &mut self,
        processed: Processed,
        rejected: Vec<Rejected>,
        written_at: Instant,
    ) -> Result<bool, ConnectorError> {
        let stats = self.stats;
        let ChainOutput {
            outputs,
            positions,
            mut failures,
        } = processed.output;
        let written = outputs.len() - rejected.len();
        let sink_tap = &self.sink_tap;
        if sink_tap.is_watched() {
            let refused: HashSet<usize> = rejected.iter().map(|r| r.index).collect();
            sink_tap.offer(
                outputs
                    .iter()
                    .zip(&positions)
                    .enumerate()
                    .filter(|(i, _)| !refused.contains(i))
                    .map(|(_, (record, position))| (record, Some(position))),
            );
        }
        failures.extend(rejected.into_iter().filter_map(|rejected| {
            Some(Failure {
                record: outputs.get(rejected.index)?.clone(),
                position: positions.get(rejected.index)?.clone(),
                error: RecordError {
                    kind: RecordErrorKind::SinkRejected,
                    message: rejected.reason,
                },
                at: FailedAt::Sink,
            })
        }));
        stats.dead_letters().push(&failures);
        let dead_letters: Vec<Record> = failures
            .into_iter()
            .map(|failure| failure.into_dead_letter(self.pipeline))
            .collect();
        if !dead_letters.is_empty() {
            let Some(refused) = retry::write_with_backoff(
                "dead-letter destination",
                self.dead_letter,
                &dead_letters,
                &mut self.shutdown,
                stats.dead_letter_retries(),
            )
            .await?
            else {
                // Unlike outputs, which wait in the source, failed records that reached no
                // dead-letter destination are reported: the stop is not clean.
                return Err(ConnectorError::transient(
                    "dead-letter destination",
                    format!(
                        "shutdown while {} dead letter(s) could not be stored; their batch is not committed and is processed again after a restart",
                        dead_letters.len()
                    ),
                ));
            };
            if let Some(first) = refused.first() {
                // Nowhere is left to put these records: stop rather than drop them.
                return Err(ConnectorError::fatal(
                    "dead-letter destination",
                    format!(
                        "refused {} record(s), first: {}; change the destination so that it takes what the reason names, or choose one that stores any record (file, or a kafka topic that is not compacted)",
                        refused.len(),
                        first.reason
                    ),
                ));
            }
        }
        self.dead_letter_tap
            .offer(dead_letters.iter().map(|record| (record, None)));
        // The histograms before the counters: whoever reads a batch counted finds its times too.
        stats.batch_latency().observe(processed.polled_at.elapsed());
        stats
            .stage_latency(BatchStage::InOrder)
            .observe(written_at.elapsed());
        stats.record_batch(processed.inputs, written, dead_letters.len());
        if let Some(source) = &self.acknowledged.source {
            source.acknowledged(&processed.commit);
        }
        Ok(self.acknowledged.channel.send(processed.commit).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::connectors::blackhole::BlackholeSink;
    use crate::pipeline::batch::{FromSink, acknowledgement_channel};
    use crate::record::SourcePosition;

    /// Long enough for any healthy machine; only reached when the stage is broken.
    const PATIENCE: Duration = Duration::from_secs(60);

    /// Writes a batch (named by its first record's value) once the test releases it, and says
    /// when each write starts and finishes. Its forks share the gates.
    #[derive(Clone)]
    struct GatedSink {
        forks: bool,
        released: watch::Receiver<HashSet<Vec<u8>>>,
        started: mpsc::UnboundedSender<Vec<u8>>,
        finished: mpsc::UnboundedSender<Vec<u8>>,
    }

    #[async_trait]
    impl Sink for GatedSink {
        async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
            let name = records
                .first()
                .map(|r| r.value.to_vec())
                .unwrap_or_default();
            let _ = self.started.send(name.clone());
            self.released
                .wait_for(|released| released.contains(&name))
                .await
                .map_err(|_| ConnectorError::fatal("gated sink", "the test ended"))?;
            let _ = self.finished.send(name);
            Ok(Vec::new())
        }

        fn fork(&self) -> Option<Box<dyn Sink>> {
            self.forks.then(|| Box::new(self.clone()) as Box<dyn Sink>)
        }
    }

    /// A running sink stage over a [`GatedSink`], and the test's ends of it.
    struct Harness {
        release: watch::Sender<HashSet<Vec<u8>>>,
        started: mpsc::UnboundedReceiver<Vec<u8>>,
        finished: mpsc::UnboundedReceiver<Vec<u8>>,
        processed: mpsc::Sender<Processed>,
        from_sink: FromSink,
        shutdown: watch::Sender<bool>,
        stage: JoinHandle<Result<(), ConnectorError>>,
    }

    fn start(forks: bool, in_flight: usize) -> Harness {
        let (release, released) = watch::channel(HashSet::new());
        let (started_tx, started) = mpsc::unbounded_channel();
        let (finished_tx, finished) = mpsc::unbounded_channel();
        let (processed, processed_rx) = mpsc::channel(8);
        let (acknowledged, from_sink) = acknowledgement_channel(None);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let sink = GatedSink {
            forks,
            released,
            started: started_tx,
            finished: finished_tx,
        };
        let stage = tokio::spawn(run(
            "p".into(),
            Box::new(sink),
            Box::new(BlackholeSink),
            processed_rx,
            acknowledged,
            in_flight,
            Arc::new(PipelineStats::new("p")),
            shutdown_rx,
        ));
        Harness {
            release,
            started,
            finished,
            processed,
            from_sink,
            shutdown,
            stage,
        }
    }

    impl Harness {
        async fn send(&self, name: &str, offset: i64) {
            let position = SourcePosition {
                stream: Arc::from("s"),
                partition: 0,
                offset,
            };
            let processed = Processed {
                inputs: 1,
                output: ChainOutput {
                    outputs: vec![Record::from_value(name)],
                    positions: vec![position.clone()],
                    failures: Vec::new(),
                },
                commit: vec![position],
                polled_at: Instant::now(),
                transformed_at: Instant::now(),
            };
            assert!(self.processed.send(processed).await.is_ok());
        }

        fn release(&self, name: &str) {
            self.release.send_modify(|released| {
                released.insert(name.as_bytes().to_vec());
            });
        }

        /// The offsets acknowledged, in order, until the stage ends.
        async fn acknowledged(mut self) -> (Vec<i64>, Result<(), ConnectorError>) {
            drop(self.processed);
            let mut offsets = Vec::new();
            while let Some(commit) = next(self.from_sink.acknowledged.recv()).await {
                offsets.extend(commit.iter().map(|position| position.offset));
            }
            let ended = tokio::time::timeout(PATIENCE, self.stage)
                .await
                .expect("the sink stage ends")
                .expect("the sink stage does not panic");
            (offsets, ended)
        }
    }

    async fn next<T>(received: impl Future<Output = Option<T>>) -> Option<T> {
        tokio::time::timeout(PATIENCE, received)
            .await
            .expect("the sink stage answers")
    }

    #[tokio::test]
    async fn a_batch_written_before_an_earlier_one_is_acknowledged_after_it() {
        let mut harness = start(true, 4);
        harness.send("first", 10).await;
        harness.send("second", 20).await;
        harness.release("second");
        // The second write finishes while the first is still under way: both are in flight.
        assert_eq!(
            next(harness.finished.recv()).await,
            Some(b"second".to_vec())
        );
        harness.release("first");
        assert_eq!(next(harness.finished.recv()).await, Some(b"first".to_vec()));
        let (acknowledged, ended) = harness.acknowledged().await;
        assert!(ended.is_ok(), "{ended:?}");
        // Source order: offset 20 is never committed while 10 is unwritten.
        assert_eq!(acknowledged, [10, 20]);
    }

    #[tokio::test]
    async fn at_shutdown_a_written_batch_behind_an_unwritten_one_is_not_acknowledged() {
        let mut harness = start(true, 4);
        harness.send("first", 10).await;
        harness.send("second", 20).await;
        harness.release("second");
        assert_eq!(
            next(harness.finished.recv()).await,
            Some(b"second".to_vec())
        );
        // The first write never finishes; after the shutdown grace it is abandoned.
        assert!(harness.shutdown.send(true).is_ok());
        let (acknowledged, ended) = harness.acknowledged().await;
        assert!(ended.is_ok(), "{ended:?}");
        assert!(acknowledged.is_empty(), "{acknowledged:?}");
    }

    #[tokio::test]
    async fn a_sink_that_cannot_fork_writes_one_batch_at_a_time() {
        let mut harness = start(false, 4);
        harness.send("first", 10).await;
        harness.send("second", 20).await;
        assert_eq!(next(harness.started.recv()).await, Some(b"first".to_vec()));
        // Released first, but it cannot start before the first write ends.
        harness.release("second");
        harness.release("first");
        assert_eq!(next(harness.finished.recv()).await, Some(b"first".to_vec()));
        assert_eq!(
            next(harness.finished.recv()).await,
            Some(b"second".to_vec())
        );
        let (acknowledged, ended) = harness.acknowledged().await;
        assert!(ended.is_ok(), "{ended:?}");
        assert_eq!(acknowledged, [10, 20]);
    }

    #[tokio::test]
    async fn handles_are_forked_up_to_the_limit() {
        let sink = || {
            Box::new(GatedSink {
                forks: true,
                released: watch::channel(HashSet::new()).1,
                started: mpsc::unbounded_channel().0,
                finished: mpsc::unbounded_channel().0,
            })
        };
        assert_eq!(handles(sink(), 4).len(), 4);
        assert_eq!(handles(sink(), 1).len(), 1);
        assert_eq!(handles(Box::new(BlackholeSink), 3).len(), 3);
    }
}
