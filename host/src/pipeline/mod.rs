//! Running a pipeline: source -> plugin chain -> sink, with dead letters beside the sink.
//!
//! Three stages joined by bounded channels, so a slow sink slows the source and memory stays
//! flat. Batches move in order through one chain, which preserves order per partition. A batch's
//! source positions are committed only after its outputs reached the sink and its failures the
//! dead-letter destination: at-least-once end to end.
//!
//! This module only opens the connectors and wires the stages; each stage lives in its own
//! module (`source_stage`, `transform_stage`, `sink_stage`), and they share nothing but
//! `batch`, what passes between them. docs/architecture.md draws the picture.

mod batch;
mod monitor;
mod retry;
mod sink_stage;
mod source_stage;
mod stats;
mod transform_stage;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::PipelineConfig;
use crate::connectors::{ConnectorError, Sink, Source};
use crate::observe::tap::{DEAD_LETTER_STAGE, SINK_STAGE, SOURCE_STAGE};
use crate::runtime::{LiveSlots, PluginError};

pub use crate::config::MAX_WORKERS;
pub use crate::record::{FailedAt, Failure};
pub use batch::ChainOutput;
use batch::Processed;
pub use stats::{
    BatchStage, LatencySummary, PipelineReport, PipelineStats, PipelineStatus, PluginStatus,
    QueueStatus, step_labels,
};
use transform_stage::WorkerPool;
pub use transform_stage::{ChainBlueprint, ChainStep, TransformChain};

/// Closes a pipeline's taps when dropped.
struct CloseTaps<'a>(&'a PipelineStats);

impl Drop for CloseTaps<'_> {
    fn drop(&mut self) {
        self.0.taps().close();
    }
}

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

/// Builds the plugin chain of `config` from the live plugin slots (runs each plugin's `init`).
/// CPU-bound: call from a blocking thread.
pub fn build_chain(
    config: &PipelineConfig,
    plugins: &dyn LiveSlots,
) -> Result<TransformChain, PipelineError> {
    let limits = config.limits.plugin_limits();
    let mut steps = Vec::with_capacity(config.transforms.len());
    for transform in &config.transforms {
        let slot = plugins
            .live(&transform.plugin)
            .ok_or_else(|| PipelineError::MissingPlugin {
                pipeline: config.name.clone(),
                plugin: transform.plugin.clone(),
            })?;
        let step = ChainStep::from_live(slot, transform.clone(), limits).map_err(|source| {
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
    let mut config = config;
    // A Kafka source derives its static member id from the pipeline's name.
    if let crate::connectors::SourceConfig::Kafka(kafka) = &mut config.source {
        kafka.pipeline.clone_from(&config.name);
    }
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
    // However the pipeline ends, once every stage has (the guard drops last), the watchers of
    // its stages hear that it ended.
    let _close_taps = CloseTaps(&stats);
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

    if let Some(group) = source.group_metrics() {
        stats.set_consumer_group(group);
    }
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
    let (acknowledged, from_sink) = batch::acknowledgement_channel(source.acknowledgements());

    let sink_stage = tokio::spawn(sink_stage::run(
        name.clone(),
        sink,
        dead_letter,
        processed_rx,
        acknowledged,
        config.batch.sink_in_flight,
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    let progress = tokio::spawn(monitor::run(name.clone(), Arc::clone(&stats)));

    let source_result = source_stage::run(
        &name,
        source,
        &config,
        &mut workers,
        from_sink,
        &stats,
        shutdown,
    )
    .await;
    // Normally closed by the source stage already; an early error leaves that to here.
    batch::ToTransform::close(&mut workers);
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
