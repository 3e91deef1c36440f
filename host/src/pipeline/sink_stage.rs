//! The sink stage: writes each processed batch's outputs, then its failures to the dead-letter
//! destination, then acknowledges the batch back to the source stage, in the order batches
//! arrive. Nothing is acknowledged before both writes succeeded.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::connectors::{ConnectorError, Sink};
use crate::observe::tap::{DEAD_LETTER_STAGE, SINK_STAGE};
use crate::pipeline::batch::{Acknowledged, ChainOutput, Processed};
use crate::pipeline::retry;
use crate::pipeline::stats::PipelineStats;
use crate::record::{FailedAt, Failure, Record, RecordError, RecordErrorKind};

/// Writes outputs, then dead letters, then acknowledges the batch to the source.
pub(super) async fn run(
    pipeline: String,
    mut sink: Box<dyn Sink>,
    mut dead_letter: Box<dyn Sink>,
    mut processed_rx: mpsc::Receiver<Processed>,
    acknowledged: Acknowledged,
    stats: Arc<PipelineStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectorError> {
    let sink_tap = stats.taps().point(SINK_STAGE);
    let dead_letter_tap = stats.taps().point(DEAD_LETTER_STAGE);
    while let Some(processed) = processed_rx.recv().await {
        stats.sink_queue().left();
        let ChainOutput {
            outputs,
            positions,
            mut failures,
        } = processed.output;
        let mut written = outputs.len();
        if !outputs.is_empty() {
            let writing = Instant::now();
            let Some(rejected) = retry::write_with_backoff(
                "sink",
                sink.as_mut(),
                &outputs,
                &mut shutdown,
                stats.sink_retries(),
            )
            .await?
            else {
                // Shutdown during an outage: nothing more is acknowledged, and closing would
                // wait on the store that does not answer.
                return Ok(());
            };
            stats.sink_write_latency().observe(writing.elapsed());
            written -= rejected.len();
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
        }
        stats.dead_letters().push(&failures);
        let dead_letters: Vec<Record> = failures
            .into_iter()
            .map(|failure| failure.into_dead_letter(&pipeline))
            .collect();
        if !dead_letters.is_empty() {
            let Some(refused) = retry::write_with_backoff(
                "dead-letter destination",
                dead_letter.as_mut(),
                &dead_letters,
                &mut shutdown,
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
                        "refused {} record(s), first: {}; choose a destination that stores any bytes (file or kafka)",
                        refused.len(),
                        first.reason
                    ),
                ));
            }
        }
        dead_letter_tap.offer(dead_letters.iter().map(|record| (record, None)));
        stats.record_batch(processed.inputs, written, dead_letters.len());
        stats.batch_latency().observe(processed.polled_at.elapsed());
        if let Some(source) = &acknowledged.source {
            source.acknowledged(&processed.commit);
        }
        if acknowledged.channel.send(processed.commit).is_err() {
            break;
        }
    }
    sink.close().await?;
    dead_letter.close().await?;
    Ok(())
}
