//! The transform stage: workers that run a batch through the plugin chain. Each source
//! partition is bound to one worker for the pipeline's life, so its records stay in order. By
//! default a worker starts for each partition when its first records arrive (for Kafka, one per
//! assigned partition); a pipeline may instead fix their number, and then partitions share them.

mod chain;
mod staged;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use chain::{ChainBlueprint, ChainStep, TransformChain};

use crate::config::{MAX_WORKERS, Workers};
use crate::pipeline::batch::{Batch, Processed, ToTransform};
use crate::pipeline::stats::{BatchStage, PipelineStats};
use crate::record::SourceRecord;

/// The running workers and which partition goes to which.
pub(in crate::pipeline) struct WorkerPool {
    pipeline: String,
    mode: Workers,
    blueprint: ChainBlueprint,
    senders: Vec<mpsc::Sender<Batch>>,
    handles: Vec<JoinHandle<()>>,
    bound: HashMap<(Arc<str>, i32), usize>,
    depth: usize,
    /// Taken when the pool closes, so the sink stage sees the end of its input.
    processed_tx: Option<mpsc::Sender<Processed>>,
    stats: Arc<PipelineStats>,
}

impl WorkerPool {
    /// Starts the first worker on `chain`, and in fixed mode the others, each queueing at most
    /// `depth` batches.
    pub(in crate::pipeline) async fn start(
        pipeline: &str,
        mode: Workers,
        chain: TransformChain,
        depth: usize,
        processed_tx: mpsc::Sender<Processed>,
        stats: Arc<PipelineStats>,
    ) -> Result<Self, crate::runtime::PluginError> {
        let mut pool = WorkerPool {
            pipeline: pipeline.to_owned(),
            mode,
            blueprint: chain.blueprint(),
            senders: Vec::new(),
            handles: Vec::new(),
            bound: HashMap::new(),
            depth,
            processed_tx: Some(processed_tx),
            stats,
        };
        pool.spawn(chain);
        if let Workers::Fixed(count) = mode {
            for _ in 1..count {
                let chain = pool.build_chain().await?;
                pool.spawn(chain);
            }
        }
        Ok(pool)
    }

    /// Instantiates the plugins for another worker, off the async runtime's threads.
    async fn build_chain(&self) -> Result<TransformChain, crate::runtime::PluginError> {
        let blueprint = self.blueprint.clone();
        tokio::task::spawn_blocking(move || blueprint.build())
            .await
            .map_err(|e| crate::runtime::PluginError::Start {
                name: "transform chain".into(),
                reason: format!("building a worker's plugin instances panicked: {e}"),
            })?
    }

    /// Starts a worker on `chain`; returns its index. A closed pool starts nothing.
    fn spawn(&mut self, chain: TransformChain) -> usize {
        let Some(processed_tx) = &self.processed_tx else {
            return 0;
        };
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(self.depth);
        self.handles.push(spawn_worker(
            self.pipeline.clone(),
            chain,
            batch_rx,
            processed_tx.clone(),
            Arc::clone(&self.stats),
        ));
        self.senders.push(batch_tx);
        // Each worker's queue plus the queue before the sink.
        self.stats
            .set_queue_capacity(self.depth * (self.senders.len() + 1));
        self.stats.set_workers(self.senders.len());
        self.senders.len() - 1
    }

    /// The worker of a partition, starting one for a partition seen for the first time.
    async fn worker_for(&mut self, stream: &Arc<str>, partition: i32) -> usize {
        if let Workers::Fixed(count) = self.mode {
            return partition.unsigned_abs() as usize % count;
        }
        let key = (Arc::clone(stream), partition);
        if let Some(&worker) = self.bound.get(&key) {
            return worker;
        }
        let worker = if self.bound.is_empty() {
            // The worker started with the pipeline takes the first partition.
            0
        } else if self.senders.len() < MAX_WORKERS {
            match self.build_chain().await {
                Ok(chain) => {
                    let worker = self.spawn(chain);
                    tracing::info!(pipeline = %self.pipeline, stream = %stream, partition, worker, "Started a transform worker for a new partition.");
                    worker
                }
                Err(error) => {
                    tracing::warn!(pipeline = %self.pipeline, stream = %stream, partition, %error, "Cannot start a worker for a new partition; it shares an existing one.");
                    self.bound.len() % self.senders.len()
                }
            }
        } else {
            self.bound.len() % self.senders.len()
        };
        self.bound.insert(key, worker);
        worker
    }

    /// The workers, to wait for.
    pub(in crate::pipeline) fn into_handles(self) -> Vec<JoinHandle<()>> {
        self.handles
    }
}

impl ToTransform for WorkerPool {
    /// Sends records to their partitions' workers, in order. False when the workers are gone.
    async fn route(&mut self, records: Vec<SourceRecord>) -> bool {
        let mut shares: BTreeMap<usize, Vec<SourceRecord>> = BTreeMap::new();
        let mut last: Option<(Arc<str>, i32, usize)> = None;
        for record in records {
            let (stream, partition) = (&record.position.stream, record.position.partition);
            // Records of one partition come in runs: look the worker up once per run.
            let worker = match &last {
                Some((last_stream, last_partition, worker))
                    if *last_partition == partition && last_stream == stream =>
                {
                    *worker
                }
                _ => {
                    let worker = self.worker_for(stream, partition).await;
                    last = Some((Arc::clone(stream), partition, worker));
                    worker
                }
            };
            shares.entry(worker).or_default().push(record);
        }
        for (worker, share) in shares {
            let Some(sender) = self.senders.get(worker) else {
                return false;
            };
            let batch = Batch::from(share);
            self.stats.transform_queue().entering();
            if sender.send(batch).await.is_err() {
                self.stats.transform_queue().left();
                return false;
            }
        }
        true
    }

    /// Closes the workers' queues; the workers end once they drained them, and then the sink
    /// stage's input ends.
    fn close(&mut self) {
        self.senders.clear();
        self.processed_tx = None;
    }
}

/// Plugin calls are CPU-bound and synchronous, so each worker runs on its own blocking thread.
fn spawn_worker(
    pipeline: String,
    mut chain: TransformChain,
    mut batch_rx: mpsc::Receiver<Batch>,
    processed_tx: mpsc::Sender<Processed>,
    stats: Arc<PipelineStats>,
) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        while let Some(batch) = batch_rx.blocking_recv() {
            stats.transform_queue().left();
            let taken = Instant::now();
            stats
                .stage_latency(BatchStage::TransformQueue)
                .observe(taken.saturating_duration_since(batch.polled_at));
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
            let transformed_at = Instant::now();
            stats
                .stage_latency(BatchStage::Transform)
                .observe(transformed_at.saturating_duration_since(taken));
            let processed = Processed {
                inputs,
                output,
                commit: batch.commit,
                polled_at: batch.polled_at,
                transformed_at,
            };
            stats.sink_queue().entering();
            if processed_tx.blocking_send(processed).is_err() {
                stats.sink_queue().left();
                break;
            }
        }
    })
}
