//! The source stage: polls batches, marks oversized records, hands them to the transform stage,
//! and commits the positions the sink stage acknowledged. It is the only stage that talks to the
//! source, so commits happen in one place and in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::PipelineConfig;
use crate::connectors::{ConnectorError, Source};
use crate::observe::tap::SOURCE_STAGE;
use crate::pipeline::batch::{FromSink, ToTransform};
use crate::pipeline::stats::PipelineStats;
use crate::record::{SourcePosition, SourceRecord};

/// Polls batches and commits acknowledged positions. After the source ends (or shutdown, or the
/// sink stage ending early), it keeps committing until the sink has acknowledged everything in
/// flight.
pub(super) async fn run(
    pipeline: &str,
    mut source: Box<dyn Source>,
    config: &PipelineConfig,
    transform: &mut impl ToTransform,
    from_sink: FromSink,
    stats: &PipelineStats,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectorError> {
    let FromSink {
        acknowledged: mut ack_rx,
        running: mut sink_running,
    } = from_sink;
    let mut result = Ok(());
    let mut commits = PendingCommits::default();
    let source_tap = stats.taps().point(SOURCE_STAGE);
    if let Some(lag) = source.lag_handle() {
        stats.set_lag_handle(lag);
    }
    loop {
        while let Ok(positions) = ack_rx.try_recv() {
            commits.add(positions);
        }
        commits.try_commit(pipeline, source.as_mut(), false).await?;
        if *shutdown.borrow() {
            tracing::info!(pipeline, "Shutdown requested; draining in-flight batches.");
            break;
        }
        // The sender is never used: the channel closing is the whole message.
        if sink_running.has_changed().is_err() {
            // Its error (or panic) is what the pipeline reports once the stages are joined.
            tracing::warn!(pipeline, "The sink stage ended; the source stops polling.");
            break;
        }
        // A poll cancelled half-way may drop records it had read; that loses nothing, because
        // either branch ends the loop and no later position is committed after them.
        let polled = tokio::select! {
            polled = source.poll_batch(config.batch.size, config.batch.linger()) => polled,
            _ = shutdown.changed() => continue,
            _ = sink_running.changed() => continue,
        };
        let mut records = match polled {
            Ok(Some(records)) if records.is_empty() => continue,
            Ok(Some(records)) => records,
            Ok(None) => break,
            Err(error) if error.is_transient() => {
                tracing::warn!(pipeline, %error, "Source failed; retrying.");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                    _ = sink_running.changed() => {}
                }
                continue;
            }
            Err(error) => {
                result = Err(error);
                break;
            }
        };
        stats.record_polled(records.len());
        source_tap.offer(records.iter().map(|r| (&r.record, Some(&r.position))));
        reject_oversized(&mut records, config.limits.max_record_bytes);
        if !transform.route(records).await {
            break;
        }
    }
    // Closing the workers' queues lets them drain and end.
    transform.close();
    // The sink acknowledges every batch it received before it ends, in order.
    while let Some(positions) = ack_rx.recv().await {
        commits.add(positions);
    }
    let mut backoff = Duration::from_millis(100);
    for _ in 0..8 {
        if commits
            .try_commit(pipeline, source.as_mut(), true)
            .await?
            .is_none()
        {
            return result;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    Err(ConnectorError::transient(
        "source",
        "could not commit the final positions; the records after the last committed position will be processed again on restart",
    ))
}

/// Bytes of an oversized record's value kept in its dead letter.
const OVERSIZED_EXCERPT: usize = 64 * 1024;

/// Marks records larger than `max_bytes` as malformed. Their dead letter keeps only the start of
/// the value, with the full size and sha256 in headers: an oversized record would not fit most
/// dead-letter destinations either, and the whole record stays in the source at the coordinates
/// the dead letter names.
fn reject_oversized(records: &mut [SourceRecord], max_bytes: usize) {
    for source_record in records.iter_mut().filter(|r| r.malformed.is_none()) {
        let record = &mut source_record.record;
        let size = record.value.len() + record.key.as_ref().map_or(0, |key| key.len());
        if size <= max_bytes {
            continue;
        }
        source_record.malformed = Some(format!(
            "record of {size} bytes exceeds limits.max_record_bytes ({max_bytes}); the dead letter keeps its first {OVERSIZED_EXCERPT} bytes"
        ));
        record.keep_excerpt(OVERSIZED_EXCERPT);
    }
}

/// Acknowledged positions not yet committed, merged per stream and partition. Commits are
/// cumulative, so a failed commit is simply retried with the later positions included.
#[derive(Default)]
struct PendingCommits {
    highest: BTreeMap<(Arc<str>, i32), i64>,
}

impl PendingCommits {
    fn add(&mut self, positions: Vec<SourcePosition>) {
        for position in positions {
            let offset = self
                .highest
                .entry((position.stream, position.partition))
                .or_insert(position.offset);
            *offset = (*offset).max(position.offset);
        }
    }

    /// Commits what is pending; `last` when the pipeline has drained and this commit must be
    /// durable before returning. A transient failure keeps it pending and is returned as
    /// `Some(error)`; a permanent one is an error.
    async fn try_commit(
        &mut self,
        pipeline: &str,
        source: &mut dyn Source,
        last: bool,
    ) -> Result<Option<ConnectorError>, ConnectorError> {
        // The last commit always goes out: a source that commits on an interval may hold
        // acknowledgements that no pending position names any more.
        if self.highest.is_empty() && !last {
            return Ok(None);
        }
        let positions: Vec<SourcePosition> = self
            .highest
            .iter()
            .map(|((stream, partition), offset)| SourcePosition {
                stream: Arc::clone(stream),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        let committed = if last {
            source.commit_final(&positions).await
        } else {
            source.commit(&positions).await
        };
        match committed {
            Ok(()) => {
                self.highest.clear();
                Ok(None)
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(pipeline, %error, "Commit failed; it will be retried with later positions.");
                Ok(Some(error))
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::sync::{Notify, mpsc};

    use super::*;
    use crate::connectors::LagHandle;
    use crate::observe::PartitionLag;
    use crate::record::Record;

    /// A source with a record in every poll and a lag the test moves.
    struct Lagging {
        lag: Arc<Mutex<i64>>,
    }

    #[async_trait]
    impl Source for Lagging {
        async fn poll_batch(
            &mut self,
            _max: usize,
            _linger: Duration,
        ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
            Ok(Some(vec![SourceRecord {
                record: Record::from_value("{}"),
                position: SourcePosition {
                    stream: Arc::from("t"),
                    partition: 0,
                    offset: 0,
                },
                malformed: None,
            }]))
        }

        async fn commit(&mut self, _positions: &[SourcePosition]) -> Result<(), ConnectorError> {
            Ok(())
        }

        fn lag_handle(&self) -> Option<LagHandle> {
            let lag = Arc::clone(&self.lag);
            Some(LagHandle::new(move || {
                Some(vec![PartitionLag {
                    topic: "t".into(),
                    partition: 0,
                    lag: *lag.lock().unwrap(),
                }])
            }))
        }
    }

    /// A transform stage whose queues are full for good: `route` never returns.
    struct Stalled {
        routed: Arc<Notify>,
    }

    impl ToTransform for Stalled {
        async fn route(&mut self, _records: Vec<SourceRecord>) -> bool {
            self.routed.notify_one();
            std::future::pending().await
        }

        fn close(&mut self) {}
    }

    #[tokio::test]
    async fn the_lag_keeps_moving_while_the_source_waits_on_a_stalled_sink() {
        let config = crate::config::PipelineFile::parse(
            Path::new("t.toml"),
            r#"
            [[pipeline]]
            name = "p"
            source = { type = "generate" }
            sink = { type = "blackhole" }
            dead_letter = { type = "stdout" }
            "#,
        )
        .unwrap()
        .pipelines
        .remove(0);
        let lag = Arc::new(Mutex::new(1));
        let stats = Arc::new(PipelineStats::new("p"));
        let routed = Arc::new(Notify::new());
        let (_ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (_running_tx, running_rx) = watch::channel(());
        let (_shutdown_tx, shutdown_rx) = watch::channel(false);
        let stage = tokio::spawn({
            let source = Box::new(Lagging {
                lag: Arc::clone(&lag),
            });
            let stats = Arc::clone(&stats);
            let mut transform = Stalled {
                routed: Arc::clone(&routed),
            };
            async move {
                let from_sink = FromSink {
                    acknowledged: ack_rx,
                    running: running_rx,
                };
                run(
                    "p",
                    source,
                    &config,
                    &mut transform,
                    from_sink,
                    &stats,
                    shutdown_rx,
                )
                .await
            }
        });
        // The source stage is stuck handing its first batch on, and stays so.
        routed.notified().await;
        for produced in [20, 300] {
            *lag.lock().unwrap() = produced;
            let reported: Vec<i64> = stats.lag().iter().map(|p| p.lag).collect();
            assert_eq!(reported, [produced]);
        }
        stage.abort();
    }
}
