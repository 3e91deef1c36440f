//! What passes between the stages of a pipeline, and nothing else: the batch the source stage
//! hands to the transform stage, what the transform stage hands to the sink stage, and the
//! acknowledgements the sink stage sends back. Stages import this module, never each other.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::connectors::Acknowledgements;
use crate::record::{
    FailedAt, Failure, Record, RecordError, RecordErrorKind, SourcePosition, SourceRecord,
};

/// A batch on its way from the source to the sink.
pub(super) struct Batch {
    pub(super) records: Vec<Record>,
    pub(super) positions: Vec<SourcePosition>,
    /// Inputs the source could not decode, bound for the dead-letter destination.
    pub(super) malformed: Vec<Failure>,
    /// Every input record, decodable or not.
    pub(super) inputs: usize,
    /// The highest position per stream and partition: what acknowledging this batch commits.
    pub(super) commit: Vec<SourcePosition>,
    /// When the source returned it.
    pub(super) polled_at: Instant,
}

/// What one batch became in the transform chain.
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// Records for the sink, in input order.
    pub outputs: Vec<Record>,
    /// For each output, the source position of the input it came from.
    pub positions: Vec<SourcePosition>,
    /// Records for the dead-letter destination.
    pub failures: Vec<Failure>,
}

/// A batch after the transform stage, on its way to the sink stage.
pub(super) struct Processed {
    pub(super) inputs: usize,
    pub(super) output: ChainOutput,
    pub(super) commit: Vec<SourcePosition>,
    pub(super) polled_at: Instant,
    /// When the transform stage finished it.
    pub(super) transformed_at: Instant,
}

impl From<Vec<SourceRecord>> for Batch {
    fn from(source_records: Vec<SourceRecord>) -> Self {
        let inputs = source_records.len();
        let commit = SourcePosition::highest(source_records.iter().map(|r| &r.position));
        let mut records = Vec::with_capacity(source_records.len());
        let mut positions = Vec::with_capacity(source_records.len());
        let mut malformed = Vec::new();
        for SourceRecord {
            record,
            position,
            malformed: reason,
        } in source_records
        {
            match reason {
                Some(message) => malformed.push(Failure {
                    record,
                    position,
                    error: RecordError {
                        kind: RecordErrorKind::Malformed,
                        message,
                    },
                    at: FailedAt::Source,
                }),
                None => {
                    records.push(record);
                    positions.push(position);
                }
            }
        }
        Batch {
            records,
            positions,
            malformed,
            inputs,
            commit,
            polled_at: Instant::now(),
        }
    }
}

/// The transform stage's input, as the source stage sees it.
pub(super) trait ToTransform {
    /// Sends records on, keeping each partition's order. False when the transform stage is gone.
    async fn route(&mut self, records: Vec<SourceRecord>) -> bool;

    /// Closes the transform stage's input: it drains what it holds, and then the sink stage's
    /// input ends.
    fn close(&mut self);
}

/// What the source stage hears from the sink stage.
pub(super) struct FromSink {
    /// The positions of each acknowledged batch, in order.
    pub(super) acknowledged: mpsc::UnboundedReceiver<Vec<SourcePosition>>,
    /// Closes when the sink stage ends. While the source is idle nothing else would notice a
    /// sink that failed (only routing the next batch would), so every wait of the source stage
    /// also watches this.
    pub(super) running: watch::Receiver<()>,
}

/// Where the sink stage reports acknowledged batches: the source stage, which commits them, and
/// the source itself where it wants to know at once.
pub(super) struct Acknowledged {
    pub(super) channel: mpsc::UnboundedSender<Vec<SourcePosition>>,
    pub(super) source: Option<Arc<dyn Acknowledgements>>,
    /// Dropped with the sink stage, however it ends (an error, a panic, or its input closing),
    /// which tells the source stage to stop polling.
    pub(super) _running: watch::Sender<()>,
}

/// The acknowledgement path from the sink stage back to the source stage, and to the source
/// itself where it listens.
pub(super) fn acknowledgement_channel(
    source: Option<Arc<dyn Acknowledgements>>,
) -> (Acknowledged, FromSink) {
    let (channel, acknowledged) = mpsc::unbounded_channel();
    let (running_tx, running) = watch::channel(());
    (
        Acknowledged {
            channel,
            source,
            _running: running_tx,
        },
        FromSink {
            acknowledged,
            running,
        },
    )
}
