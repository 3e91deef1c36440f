//! Running a pipeline: source -> plugin chain -> sink, with dead letters beside the sink.
//!
//! Three stages joined by bounded channels, so a slow sink slows the source and memory stays
//! flat. Batches move in order through one chain, which preserves order per partition. A batch's
//! source positions are committed only after its outputs reached the sink and its failures the
//! dead-letter destination: at-least-once end to end.

mod chain;
mod retry;
mod stats;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::PipelineConfig;
use crate::connectors::{ConnectorError, Sink, Source};
use crate::observe::tap::{DEAD_LETTER_STAGE, SINK_STAGE, SOURCE_STAGE};
use crate::record::{Record, SourcePosition, SourceRecord};
use crate::registry::PluginSlots;
use crate::runtime::{PluginError, RecordError, RecordErrorKind};

pub use chain::{
    ChainBlueprint, ChainOutput, ChainStep, FailedAt, Failure, TransformChain, instantiate_step,
};
pub use stats::{
    LatencySummary, PipelineReport, PipelineStats, PipelineStatus, PluginStatus, QueueStatus,
};
pub use workers::MAX_WORKERS;
use workers::WorkerPool;

/// How often a running pipeline samples its counters for the rates.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often a running pipeline logs its progress, in samples.
const PROGRESS_EVERY_SAMPLES: u32 = 5;

/// A pipeline could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A plugin could not be instantiated with the pipeline's config.
    #[error("pipeline `{pipeline}`: {source}")]
    Plugin {
        /// The pipeline.
        pipeline: String,
        /// Why.
        source: PluginError,
    },
    /// A plugin named by the pipeline was not loaded.
    #[error("pipeline `{pipeline}`: plugin `{plugin}` is not loaded")]
    MissingPlugin {
        /// The pipeline.
        pipeline: String,
        /// The plugin.
        plugin: String,
    },
    /// A connector failed permanently, or while shutting down.
    #[error("pipeline `{pipeline}`: {source}")]
    Connector {
        /// The pipeline.
        pipeline: String,
        /// Why.
        source: ConnectorError,
    },
    /// A stage ended unexpectedly.
    #[error("pipeline `{pipeline}`: the {stage} stage stopped unexpectedly: {reason}")]
    Stage {
        /// The pipeline.
        pipeline: String,
        /// Which stage.
        stage: &'static str,
        /// Why.
        reason: String,
    },
}

/// A batch on its way from the source to the sink.
struct Batch {
    records: Vec<Record>,
    positions: Vec<SourcePosition>,
    /// Inputs the source could not decode, bound for the dead-letter destination.
    malformed: Vec<Failure>,
    /// Every input record, decodable or not.
    inputs: usize,
    /// The highest position per stream and partition: what acknowledging this batch commits.
    commit: Vec<SourcePosition>,
    /// When the source returned it.
    polled_at: Instant,
}

/// A batch after the chain.
struct Processed {
    inputs: usize,
    output: ChainOutput,
    commit: Vec<SourcePosition>,
    polled_at: Instant,
}

/// Builds the plugin chain of `config` from the live plugin slots (runs each plugin's `init`).
/// CPU-bound: call from a blocking thread.
pub fn build_chain(
    config: &PipelineConfig,
    plugins: &PluginSlots,
) -> Result<TransformChain, PipelineError> {
    let limits = config.limits.plugin_limits();
    let mut steps = Vec::with_capacity(config.transforms.len());
    for transform in &config.transforms {
        let slot = plugins
            .get(&transform.plugin)
            .ok_or_else(|| PipelineError::MissingPlugin {
                pipeline: config.name.clone(),
                plugin: transform.plugin.clone(),
            })?;
        let step = ChainStep::new(slot, transform.clone(), limits).map_err(|source| {
            PipelineError::Plugin {
                pipeline: config.name.clone(),
                source,
            }
        })?;
        steps.push(step);
    }
    Ok(TransformChain::new(steps))
}

/// The opened connectors of a pipeline.
pub struct Connectors {
    /// Where records come from.
    pub source: Box<dyn Source>,
    /// Where outputs go.
    pub sink: Box<dyn Sink>,
    /// Where failed records go.
    pub dead_letter: Box<dyn Sink>,
}

/// Runs one pipeline until its source is exhausted or `shutdown` turns true, then drains what is
/// in flight, commits it, and reports.
///
/// The connectors are opened first, each retried with backoff while its error is transient: a
/// store that is down when the process starts delays the pipeline instead of failing it (and
/// with it every other pipeline of the process). A shutdown before they opened ends the
/// pipeline with nothing read.
pub async fn run(
    config: PipelineConfig,
    chain: TransformChain,
    stats: Arc<PipelineStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<PipelineReport, PipelineError> {
    let opened = open_connectors(&config, &mut shutdown.clone())
        .await
        .map_err(|source| PipelineError::Connector {
            pipeline: config.name.clone(),
            source,
        })?;
    let Some(connectors) = opened else {
        tracing::info!(
            pipeline = %config.name,
            "Shutdown requested before the connectors opened; nothing was read."
        );
        return Ok(stats.snapshot(&config.name));
    };
    tracing::info!(
        pipeline = %config.name,
        source = %config.source.describe(),
        sink = %config.sink.describe(),
        dead_letter = %config.dead_letter.describe(),
        "Connectors opened."
    );
    run_with(config, connectors, chain, stats, shutdown).await
}

/// Opens the connectors of `config`, retrying transient failures until shutdown; `None` when
/// shutdown came first. The sinks open before the source, so a source that joins a consumer
/// group does not sit in it unpolled while a sink is still unreachable.
async fn open_connectors(
    config: &PipelineConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Connectors>, ConnectorError> {
    let pipeline = config.name.as_str();
    let Some(sink) = retry::open_with_backoff(
        pipeline,
        &format!("sink {}", config.sink.describe()),
        shutdown,
        || config.sink.build(false),
    )
    .await?
    else {
        return Ok(None);
    };
    let Some(dead_letter) = retry::open_with_backoff(
        pipeline,
        &format!("dead-letter destination {}", config.dead_letter.describe()),
        shutdown,
        || config.dead_letter.build(true),
    )
    .await?
    else {
        return Ok(None);
    };
    let Some(source) = retry::open_with_backoff(
        pipeline,
        &format!("source {}", config.source.describe()),
        shutdown,
        || config.source.build(),
    )
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(Connectors {
        source,
        sink,
        dead_letter,
    }))
}

/// Runs one pipeline over connectors opened by the caller; `config` supplies its name and
/// batching.
pub async fn run_with(
    config: PipelineConfig,
    connectors: Connectors,
    mut chain: TransformChain,
    stats: Arc<PipelineStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<PipelineReport, PipelineError> {
    let name = config.name.clone();
    let connector_error = |source| PipelineError::Connector {
        pipeline: name.clone(),
        source,
    };
    let Connectors {
        source,
        sink,
        dead_letter,
    } = connectors;
    tracing::info!(
        pipeline = %name,
        plugins = ?chain.steps().iter().map(|s| format!("{}@{}", s.instance().plugin().name(), s.instance().plugin().version())).collect::<Vec<_>>(),
        "Pipeline started."
    );

    // Register the stages in pipeline order for `weir tap`, and count each plugin's work.
    stats.taps().point(SOURCE_STAGE);
    chain.observe_into(&stats);
    stats.taps().point(SINK_STAGE);
    stats.taps().point(DEAD_LETTER_STAGE);

    // Half the in-flight budget waits before each worker, half before the sink.
    let depth = config.batch.max_in_flight.div_ceil(2).max(1);
    let (processed_tx, processed_rx) = mpsc::channel::<Processed>(depth);
    let mut workers = WorkerPool::start(
        &name,
        config.workers,
        chain,
        depth,
        processed_tx,
        Arc::clone(&stats),
    )
    .await
    .map_err(|source| PipelineError::Plugin {
        pipeline: name.clone(),
        source,
    })?;
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Vec<SourcePosition>>();
    let (sink_running, sink_watch) = watch::channel(());
    let acknowledgements = Acknowledged {
        channel: ack_tx,
        source: source.acknowledgements(),
        _running: sink_running,
    };

    let sink_stage = tokio::spawn(sink_stage(
        name.clone(),
        sink,
        dead_letter,
        processed_rx,
        acknowledgements,
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    let progress = tokio::spawn(monitor(name.clone(), Arc::clone(&stats)));

    let source_result = source_stage(
        &name,
        source,
        &config,
        &mut workers,
        FromSink {
            acknowledged: ack_rx,
            running: sink_watch,
        },
        &stats,
        shutdown,
    )
    .await;
    // Normally closed by the source stage already; an early error leaves that to here.
    workers.close();
    let sink_result = sink_stage.await;
    let mut transform_result = Ok(());
    for worker in workers.into_handles() {
        if let Err(error) = worker.await {
            transform_result = Err(error);
        }
    }
    progress.abort();

    let stage_error = |stage, reason: String| PipelineError::Stage {
        pipeline: name.clone(),
        stage,
        reason,
    };
    sink_result
        .map_err(|e| stage_error("sink", e.to_string()))?
        .map_err(connector_error)?;
    transform_result.map_err(|e| stage_error("transform", e.to_string()))?;
    source_result.map_err(connector_error)?;

    let report = stats.snapshot(&name);
    tracing::info!(
        pipeline = %name,
        records_in = report.records_in,
        records_out = report.records_out,
        dead_lettered = report.dead_lettered,
        "Pipeline finished."
    );
    Ok(report)
}

/// Polls batches and commits acknowledged positions. After the source ends (or shutdown, or the
/// sink stage ending early), it keeps committing until the sink has acknowledged everything in
/// flight.
async fn source_stage(
    pipeline: &str,
    mut source: Box<dyn Source>,
    config: &PipelineConfig,
    workers: &mut WorkerPool,
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
    loop {
        if let Some(lag) = source.lag() {
            stats.set_lag(lag);
        }
        while let Ok(positions) = ack_rx.try_recv() {
            commits.add(positions);
        }
        commits.try_commit(pipeline, source.as_mut()).await?;
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
            Err(error) if error.retry == crate::connectors::Retry::WithBackoff => {
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
        if !workers.route(records).await {
            break;
        }
    }
    // Closing the workers' queues lets them drain and end.
    workers.close();
    // The sink acknowledges every batch it received before it ends, in order.
    while let Some(positions) = ack_rx.recv().await {
        commits.add(positions);
    }
    let mut backoff = Duration::from_millis(100);
    for _ in 0..8 {
        if commits
            .try_commit(pipeline, source.as_mut())
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
        let size = record.value.len() + record.key.as_ref().map_or(0, Vec::len);
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

    /// Commits what is pending. A transient failure keeps it pending and is returned as
    /// `Some(error)`; a permanent one is an error.
    async fn try_commit(
        &mut self,
        pipeline: &str,
        source: &mut dyn Source,
    ) -> Result<Option<ConnectorError>, ConnectorError> {
        if self.highest.is_empty() {
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
        match source.commit(&positions).await {
            Ok(()) => {
                self.highest.clear();
                Ok(None)
            }
            Err(error) if error.retry == crate::connectors::Retry::WithBackoff => {
                tracing::warn!(pipeline, %error, "Commit failed; it will be retried with later positions.");
                Ok(Some(error))
            }
            Err(error) => Err(error),
        }
    }
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

/// Plugin calls are CPU-bound and synchronous, so the chain runs on its own blocking thread.
fn spawn_transform_stage(
    pipeline: String,
    mut chain: TransformChain,
    mut batch_rx: mpsc::Receiver<Batch>,
    processed_tx: mpsc::Sender<Processed>,
    stats: Arc<PipelineStats>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        while let Some(batch) = batch_rx.blocking_recv() {
            stats.transform_queue().left();
            let inputs = batch.inputs;
            let mut output = chain.apply(batch.records, &batch.positions);
            output.failures.extend(batch.malformed);
            for failure in &output.failures {
                tracing::debug!(
                    pipeline,
                    at = ?failure.at,
                    offset = failure.position.offset,
                    error = %failure.error,
                    "Record failed; sending it to the dead-letter destination."
                );
            }
            let processed = Processed {
                inputs,
                output,
                commit: batch.commit,
                polled_at: batch.polled_at,
            };
            stats.sink_queue().entering();
            if processed_tx.blocking_send(processed).is_err() {
                stats.sink_queue().left();
                break;
            }
        }
    })
}

/// What the source stage hears from the sink stage.
struct FromSink {
    /// The positions of each acknowledged batch, in order.
    acknowledged: mpsc::UnboundedReceiver<Vec<SourcePosition>>,
    /// Closes when the sink stage ends. While the source is idle nothing else would notice a
    /// sink that failed (only routing the next batch would), so every wait of the source stage
    /// also watches this.
    running: watch::Receiver<()>,
}

/// Where the sink stage reports acknowledged batches: the source stage, which commits them, and
/// the source itself where it wants to know at once.
struct Acknowledged {
    channel: mpsc::UnboundedSender<Vec<SourcePosition>>,
    source: Option<Arc<dyn crate::connectors::Acknowledgements>>,
    /// Dropped with the sink stage, however it ends (an error, a panic, or its input closing),
    /// which tells the source stage to stop polling.
    _running: watch::Sender<()>,
}

/// Writes outputs, then dead letters, then acknowledges the batch to the source.
async fn sink_stage(
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
            let rejected = retry::write_with_backoff(
                "sink",
                sink.as_mut(),
                &outputs,
                &mut shutdown,
                stats.sink_retries(),
            )
            .await?;
            stats.sink_write_latency().observe(writing.elapsed());
            written -= rejected.len();
            if sink_tap.is_watched() {
                let refused: std::collections::HashSet<usize> =
                    rejected.iter().map(|r| r.index).collect();
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
            let refused = retry::write_with_backoff(
                "dead-letter destination",
                dead_letter.as_mut(),
                &dead_letters,
                &mut shutdown,
                stats.dead_letter_retries(),
            )
            .await?;
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

/// Samples the counters every second for the rates, and logs progress every few seconds.
async fn monitor(pipeline: String, stats: Arc<PipelineStats>) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    let mut last_in = 0;
    let mut samples = 0u32;
    loop {
        ticker.tick().await;
        stats.sample_rates();
        samples += 1;
        if !samples.is_multiple_of(PROGRESS_EVERY_SAMPLES) {
            continue;
        }
        let report = stats.snapshot(&pipeline);
        let period = SAMPLE_EVERY * PROGRESS_EVERY_SAMPLES;
        let rate = (report.records_in - last_in) as f64 / period.as_secs_f64();
        last_in = report.records_in;
        tracing::info!(
            pipeline,
            records_in = report.records_in,
            records_out = report.records_out,
            dead_lettered = report.dead_lettered,
            records_per_second = rate.round() as u64,
            "Progress."
        );
    }
}
