//! The last fifteen minutes of every pipeline at one-second resolution, kept in memory for the
//! status page's charts and diagram: an operator who opens the page during an incident sees
//! whether throughput fell, lag grew or dead letters jumped after the last swap, and which stage
//! is in trouble, not only the numbers of this second.
//!
//! Memory is bounded per pipeline, whatever the pipeline looks like: a ring of [`CAPACITY`]
//! timestamps, at most [`MAX_SERIES`] series of as many `f32` values, and at most [`MAX_EVENTS`]
//! version changes, which [`MAX_BYTES`] bounds (a test fills every ring and checks it).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::PipelineConfig;
use crate::observe::{HistogramSnapshot, PartitionLag};
use crate::pipeline::{PipelineStats, step_labels};
use crate::registry::{PluginSlots, SlotInfo};

/// Samples kept per series: fifteen minutes at one a second.
pub const CAPACITY: usize = 15 * 60;
/// Time between samples.
pub const STEP: Duration = Duration::from_secs(1);
/// Series kept per pipeline. A pipeline has 10 of its own, 6 per plugin and one per Kafka
/// partition, so this covers four plugins and thirty partitions; series beyond it are not
/// kept (and counted in `dropped_series`) rather than growing memory with the partition count.
pub const MAX_SERIES: usize = 64;
/// Version changes (swaps, rollbacks) kept per pipeline; older ones are forgotten first.
pub const MAX_EVENTS: usize = 32;
/// Longest topic or plugin name, version or event text kept, in bytes (a Kafka topic name may
/// be 249 bytes, a rollback reason a sentence); a series name adds a short suffix to one.
const MAX_TEXT: usize = 160;
/// How many recent samples the diagram's rates and health look at.
const RECENT: usize = 5;
/// What one pipeline's history holds at most, by [`PipelineHistory::approx_bytes`]:
/// 900 timestamps × 8 B (7 KB) + 64 series × (900 values × 4 B + a name of at most 180 B)
/// (242 KB) + 32 events × (their struct and five texts of at most 160 B) (30 KB) + the last
/// reading, kept for differences (a few KB) ≈ 285 KB.
pub const MAX_BYTES: usize = 300 * 1024;

/// The charts a series belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Records per second in, out and dead-lettered (acknowledged).
    Throughput,
    /// Kafka consumer lag, per partition and in total.
    Lag,
    /// Source-to-acknowledgement time of the batches of each second, p50 and p99, in ms.
    BatchLatency,
    /// One `transform` call of each plugin, p50 and p99, in ms.
    PluginLatency,
    /// Records per second into, out of and failed by each plugin.
    PluginThroughput,
    /// CPU time inside each plugin's calls, in percent of one core (two decimals, so a plugin
    /// using a hundredth of a percent still shows).
    PluginCpu,
    /// Sink and dead-letter writes retried per second.
    Retries,
    /// Batches waiting between stages.
    Queues,
}

/// The shape of a pipeline, for its diagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// The source, as the logs describe it (`kafka topics users_created`).
    pub source: String,
    /// The plugins, in chain order.
    pub plugins: Vec<String>,
    /// The sink.
    pub sink: String,
    /// The dead-letter destination.
    pub dead_letter: String,
}

impl Topology {
    /// The shape of pipeline `config`.
    pub fn of(config: &PipelineConfig) -> Self {
        Topology {
            source: cut(config.source.describe()),
            plugins: config.transforms.iter().map(|t| t.plugin.clone()).collect(),
            sink: cut(config.sink.describe()),
            dead_letter: cut(config.dead_letter.describe()),
        }
    }
}

/// Whether a pipeline still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    /// Its stages run.
    Running,
    /// It ended normally (its source ended, or a shutdown drained it).
    Finished,
    /// It stopped on an error.
    Failed {
        /// The error.
        reason: String,
    },
}

/// A plugin's active version changed while the pipeline ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionEvent {
    /// When it was noticed (within a second of the change), ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// `swap` (a new version deployed) or `rollback` (returned to an earlier one).
    pub kind: &'static str,
    /// The plugin.
    pub plugin: String,
    /// The version before.
    pub from: String,
    /// The version after.
    pub to: String,
    /// The manifest's version string of the new version, if any.
    pub label: Option<String>,
    /// Why, for a rollback.
    pub reason: Option<String>,
}

/// How a stage of the diagram is doing over the last few seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing moved through it.
    Idle,
    /// Records flow.
    Ok,
    /// It waits for the next stage: the queue after it is full.
    Backpressured,
    /// Some of its records fail (they go to the dead-letter destination).
    Failing,
    /// Its writes fail and are retried.
    Retrying,
    /// The pipeline stopped on an error.
    Failed,
}

/// One box of the pipeline diagram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageView {
    /// `source`, `plugin`, `sink` or `dead_letter`.
    pub kind: &'static str,
    /// The connector's description, or the plugin's name.
    pub name: String,
    /// The plugin's live version.
    pub version: Option<String>,
    /// The plugin's manifest version string.
    pub label: Option<String>,
    /// How it is doing.
    pub health: Health,
    /// Why, when not ok.
    pub reason: Option<String>,
}

/// One arrow of the diagram, between two stages (indexes into `stages`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeView {
    /// Index of the stage it leaves.
    pub from: usize,
    /// Index of the stage it enters.
    pub to: usize,
    /// Records per second along it, over the last few seconds.
    pub records_per_second: f64,
}

/// One chart line.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    /// Which chart.
    pub group: Group,
    /// The line's name (`in`, `p99`, `user-profile p50`, `users_created[2]`).
    pub name: String,
    /// One value per entry of `times`; `null` where nothing was measured (no batch that
    /// second, a partition not assigned then).
    pub values: Vec<Option<f32>>,
}

/// A pipeline's history as the admin API serves it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// The pipeline.
    pub pipeline: String,
    /// Seconds between samples.
    pub step_seconds: u64,
    /// Samples kept at most.
    pub capacity: usize,
    /// Whether the pipeline still runs.
    pub state: RunState,
    /// The diagram's boxes: source, each plugin, sink, dead-letter destination.
    pub stages: Vec<StageView>,
    /// The diagram's arrows.
    pub edges: Vec<EdgeView>,
    /// Sample times, ms since the Unix epoch, oldest first.
    pub times: Vec<u64>,
    /// The chart lines.
    pub series: Vec<SeriesView>,
    /// Version changes within the window, oldest first.
    pub events: Vec<VersionEvent>,
    /// Series not kept because [`MAX_SERIES`] were already.
    pub dropped_series: u64,
}

/// What one plugin of a pipeline reads at one moment.
#[derive(Debug, Clone)]
pub struct PluginReading {
    /// The plugin.
    pub name: String,
    /// Its active version, if loaded.
    pub version: Option<String>,
    /// The manifest's version string.
    pub label: Option<String>,
    /// Rollbacks of the plugin so far.
    pub rollbacks: u64,
    /// Why the last rollback happened.
    pub last_rollback: Option<String>,
    /// Records given to it.
    pub records_in: u64,
    /// Records it returned.
    pub records_out: u64,
    /// Records it failed.
    pub records_failed: u64,
    /// Its call latency histogram.
    pub call_latency: HistogramSnapshot,
    /// CPU time spent in its calls so far.
    pub cpu: Duration,
}

/// A pipeline's counters at one moment: what a sample is the difference of.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Wall-clock time, for the chart's axis.
    pub at: SystemTime,
    /// Monotonic time, for rates.
    pub instant: Instant,
    /// Records in, out and dead-lettered (acknowledged).
    pub records: [u64; 3],
    /// Sink writes retried.
    pub sink_retries: u64,
    /// Dead-letter writes retried.
    pub dead_letter_retries: u64,
    /// Consumer lag per partition.
    pub lag: Vec<PartitionLag>,
    /// The batch latency histogram.
    pub batch_latency: HistogramSnapshot,
    /// Batches waiting for a transform worker.
    pub transform_queue: u64,
    /// Batches waiting for the sink.
    pub sink_queue: u64,
    /// Batches all queues hold at most.
    pub queue_capacity: u64,
    /// Transform workers.
    pub workers: u64,
    /// The plugins, in chain order.
    pub plugins: Vec<PluginReading>,
}

impl Reading {
    /// Reads `stats` now, with the versions of `plugins` (in chain order) from `slots`.
    pub fn take(stats: &PipelineStats, plugins: &[String], slots: &[SlotInfo]) -> Self {
        let report = stats.snapshot("");
        let steps = stats.plugin_stats();
        Reading {
            at: SystemTime::now(),
            instant: Instant::now(),
            records: [report.records_in, report.records_out, report.dead_lettered],
            sink_retries: stats
                .sink_retries()
                .load(std::sync::atomic::Ordering::Relaxed),
            dead_letter_retries: stats
                .dead_letter_retries()
                .load(std::sync::atomic::Ordering::Relaxed),
            lag: stats.lag(),
            batch_latency: stats.batch_latency().snapshot(),
            transform_queue: stats.transform_queue().get(),
            sink_queue: stats.sink_queue().get(),
            queue_capacity: stats.queue_capacity(),
            workers: stats.workers(),
            plugins: plugins
                .iter()
                .zip(step_labels(plugins.iter().map(String::as_str)))
                .map(|(name, label)| {
                    let slot = slots.iter().find(|s| &s.name == name);
                    let step = steps.iter().find(|(n, _)| *n == label).map(|(_, s)| s);
                    let load = |f: fn(
                        &crate::observe::PluginStepStats,
                    ) -> &std::sync::atomic::AtomicU64| {
                        step.map_or(0, |s| f(s).load(std::sync::atomic::Ordering::Relaxed))
                    };
                    PluginReading {
                        name: label,
                        version: slot.map(|s| s.current.version.clone()),
                        label: slot.and_then(|s| s.current.label.clone()),
                        rollbacks: slot.map_or(0, |s| s.rollbacks),
                        last_rollback: slot.and_then(|s| s.last_rollback.clone()),
                        records_in: load(|s| &s.records_in),
                        records_out: load(|s| &s.records_out),
                        records_failed: load(|s| &s.records_failed),
                        call_latency: step.map_or_else(
                            || crate::observe::LatencyHistogram::default().snapshot(),
                            |s| s.call_latency.snapshot(),
                        ),
                        cpu: step.map_or(Duration::ZERO, |s| s.cpu()),
                    }
                })
                .collect(),
        }
    }
}

impl Reading {
    /// What the next sample needs of this reading: counters and versions, texts cut to size;
    /// lag is a gauge, so none of it.
    fn kept(&self) -> Reading {
        Reading {
            lag: Vec::new(),
            plugins: self
                .plugins
                .iter()
                .map(|p| PluginReading {
                    name: cut(p.name.clone()),
                    version: p.version.clone().map(cut),
                    label: p.label.clone().map(cut),
                    last_rollback: p.last_rollback.clone().map(cut),
                    ..p.clone()
                })
                .collect(),
            ..self.clone()
        }
    }
}

/// One chart line's ring.
#[derive(Debug)]
struct Series {
    group: Group,
    name: String,
    /// `NaN` where nothing was measured.
    values: VecDeque<f32>,
}

#[derive(Debug)]
struct Inner {
    times: VecDeque<u64>,
    series: Vec<Series>,
    events: VecDeque<VersionEvent>,
    previous: Option<Reading>,
    state: RunState,
    dropped_series: u64,
}

/// The bounded history of one pipeline.
#[derive(Debug)]
pub struct PipelineHistory {
    pipeline: String,
    topology: Topology,
    inner: Mutex<Inner>,
}

impl PipelineHistory {
    /// An empty history of pipeline `pipeline` shaped as `topology`.
    pub fn new(pipeline: &str, topology: Topology) -> Self {
        PipelineHistory {
            pipeline: pipeline.to_owned(),
            topology,
            inner: Mutex::new(Inner {
                times: VecDeque::with_capacity(CAPACITY),
                series: Vec::new(),
                events: VecDeque::new(),
                previous: None,
                state: RunState::Running,
                dropped_series: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The diagram's shape.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Marks the pipeline finished, or failed with `reason`.
    pub fn set_state(&self, state: RunState) {
        if let RunState::Failed { reason } = &state {
            self.lock().state = RunState::Failed {
                reason: cut(reason.clone()),
            };
        } else {
            self.lock().state = state;
        }
    }

    /// Adds the sample between the previous reading and `reading` (the first reading only
    /// starts the history), and notes every plugin whose version changed in between.
    pub fn record(&self, mut reading: Reading) {
        let lag = std::mem::take(&mut reading.lag);
        let reading = reading.kept();
        let mut inner = self.lock();
        let Some(previous) = inner.previous.replace(reading.clone()) else {
            return;
        };
        let seconds = reading
            .instant
            .duration_since(previous.instant)
            .as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let per_second = |now: u64, before: u64| round(now.saturating_sub(before) as f64 / seconds);
        let mut values: Vec<(Group, String, f32)> = Vec::with_capacity(16);
        for (i, name) in ["in", "out", "dead-lettered"].into_iter().enumerate() {
            values.push((
                Group::Throughput,
                name.into(),
                per_second(reading.records[i], previous.records[i]),
            ));
        }
        let batch = delta(&reading.batch_latency, &previous.batch_latency);
        values.push((Group::BatchLatency, "p50".into(), quantile_ms(&batch, 0.5)));
        values.push((Group::BatchLatency, "p99".into(), quantile_ms(&batch, 0.99)));
        values.push((
            Group::Retries,
            "sink".into(),
            per_second(reading.sink_retries, previous.sink_retries),
        ));
        values.push((
            Group::Retries,
            "dead-letter".into(),
            per_second(reading.dead_letter_retries, previous.dead_letter_retries),
        ));
        values.push((
            Group::Queues,
            "transform".into(),
            reading.transform_queue as f32,
        ));
        values.push((Group::Queues, "sink".into(), reading.sink_queue as f32));
        if !lag.is_empty() {
            let total: i64 = lag.iter().map(|p| p.lag.max(0)).sum();
            values.push((Group::Lag, "total".into(), total as f32));
            for partition in &lag {
                values.push((
                    Group::Lag,
                    format!("{}[{}]", cut(partition.topic.clone()), partition.partition),
                    partition.lag.max(0) as f32,
                ));
            }
        }
        let at_unix_ms = unix_ms(reading.at);
        for plugin in &reading.plugins {
            let before = previous.plugins.iter().find(|p| p.name == plugin.name);
            let calls = before.map_or_else(
                || plugin.call_latency.clone(),
                |b| delta(&plugin.call_latency, &b.call_latency),
            );
            // Already cut to size by `kept`, so the suffixes below stay distinct.
            let name = &plugin.name;
            values.push((
                Group::PluginLatency,
                format!("{name} p50"),
                quantile_ms(&calls, 0.5),
            ));
            values.push((
                Group::PluginLatency,
                format!("{name} p99"),
                quantile_ms(&calls, 0.99),
            ));
            let counts = [
                ("in", plugin.records_in, before.map_or(0, |b| b.records_in)),
                (
                    "out",
                    plugin.records_out,
                    before.map_or(0, |b| b.records_out),
                ),
                (
                    "failed",
                    plugin.records_failed,
                    before.map_or(0, |b| b.records_failed),
                ),
            ];
            for (what, now, then) in counts {
                values.push((
                    Group::PluginThroughput,
                    format!("{name} {what}"),
                    per_second(now, then),
                ));
            }
            let cpu_before = before.map_or(Duration::ZERO, |b| b.cpu);
            values.push((
                Group::PluginCpu,
                name.clone(),
                round(plugin.cpu.saturating_sub(cpu_before).as_secs_f64() / seconds * 100.0),
            ));
            if let (Some(before), Some(to)) = (before, &plugin.version)
                && let Some(from) = &before.version
                && from != to
            {
                let rollback = plugin.rollbacks > before.rollbacks;
                let event = VersionEvent {
                    at_unix_ms,
                    kind: if rollback { "rollback" } else { "swap" },
                    plugin: cut(name.clone()),
                    from: cut(from.clone()),
                    to: cut(to.clone()),
                    label: plugin.label.clone().map(cut),
                    reason: if rollback {
                        plugin.last_rollback.clone().map(cut)
                    } else {
                        None
                    },
                };
                if inner.events.len() == MAX_EVENTS {
                    inner.events.pop_front();
                }
                inner.events.push_back(event);
            }
        }
        inner.push(at_unix_ms, values);
    }

    /// The history as the admin API serves it.
    pub fn view(&self) -> HistoryView {
        let inner = self.lock();
        let (stages, edges) = self.diagram(&inner);
        HistoryView {
            pipeline: self.pipeline.clone(),
            step_seconds: STEP.as_secs(),
            capacity: CAPACITY,
            state: inner.state.clone(),
            stages,
            edges,
            times: inner.times.iter().copied().collect(),
            series: inner
                .series
                .iter()
                .map(|s| SeriesView {
                    group: s.group,
                    name: s.name.clone(),
                    values: s
                        .values
                        .iter()
                        .map(|v| if v.is_nan() { None } else { Some(*v) })
                        .collect(),
                })
                .collect(),
            events: inner.events.iter().cloned().collect(),
            dropped_series: inner.dropped_series,
        }
    }

    /// The mean of series `name` of `group` over the last few samples; `None` without one.
    pub fn recent(&self, group: Group, name: &str) -> Option<f64> {
        recent_mean(&self.lock(), group, name)
    }

    /// The latest value of series `name` of `group`.
    pub fn latest(&self, group: Group, name: &str) -> Option<f64> {
        let inner = self.lock();
        let series = inner
            .series
            .iter()
            .find(|s| s.group == group && s.name == name)?;
        series
            .values
            .back()
            .filter(|v| !v.is_nan())
            .map(|v| f64::from(*v))
    }

    /// Samples kept now.
    pub fn len(&self) -> usize {
        self.lock().times.len()
    }

    /// Whether no sample was kept yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the history holds, structs and heap together: what [`MAX_BYTES`] bounds.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let inner = self.lock();
        let text = |s: &str| s.len();
        let option_text = |s: &Option<String>| s.as_deref().map_or(0, text);
        size_of::<Self>()
            + inner.times.capacity() * size_of::<u64>()
            + inner.series.capacity() * size_of::<Series>()
            + inner
                .series
                .iter()
                .map(|s| s.values.capacity() * size_of::<f32>() + s.name.capacity())
                .sum::<usize>()
            + inner.events.capacity() * size_of::<VersionEvent>()
            + inner
                .events
                .iter()
                .map(|e| {
                    text(&e.plugin)
                        + text(&e.from)
                        + text(&e.to)
                        + option_text(&e.label)
                        + option_text(&e.reason)
                })
                .sum::<usize>()
            + inner.previous.as_ref().map_or(0, reading_bytes)
    }

    fn diagram(&self, inner: &Inner) -> (Vec<StageView>, Vec<EdgeView>) {
        let recent = |group, name: &str| recent_mean(inner, group, name).unwrap_or(0.0);
        let failed = match &inner.state {
            RunState::Failed { reason } => Some(reason.clone()),
            _ => None,
        };
        let previous = inner.previous.as_ref();
        // Each worker's queue and the sink's hold the same number of batches.
        let per_queue = previous.map_or(0, |r| r.queue_capacity / (r.workers + 1));
        let full = |depth: u64| per_queue > 0 && depth >= per_queue;
        let stage = |kind, name: String, flow: f64, trouble: Option<(Health, String)>| {
            let (health, reason) = match (&failed, trouble) {
                (Some(reason), _) => (Health::Failed, Some(reason.clone())),
                (None, Some((health, reason))) => (health, Some(reason)),
                (None, None) if flow > 0.0 => (Health::Ok, None),
                (None, None) => (Health::Idle, None),
            };
            StageView {
                kind,
                name,
                version: None,
                label: None,
                health,
                reason,
            }
        };
        let records_in = recent(Group::Throughput, "in");
        let mut stages = vec![stage(
            "source",
            self.topology.source.clone(),
            records_in,
            previous
                .filter(|r| full(r.transform_queue))
                .map(|_| (Health::Backpressured, "the transform queue is full".into())),
        )];
        let mut edges = Vec::new();
        for name in &self.topology.plugins {
            let flow_in = recent(Group::PluginThroughput, &format!("{name} in"));
            let failing = recent(Group::PluginThroughput, &format!("{name} failed"));
            let trouble = if failing > 0.0 {
                Some((
                    Health::Failing,
                    format!("{failing:.1} records/s fail (dead-lettered)"),
                ))
            } else {
                previous
                    .filter(|r| full(r.sink_queue))
                    .map(|_| (Health::Backpressured, "the sink queue is full".into()))
            };
            let mut view = stage("plugin", name.clone(), flow_in, trouble);
            if let Some(plugin) = previous.and_then(|r| r.plugins.iter().find(|p| &p.name == name))
            {
                view.version = plugin.version.clone();
                view.label = plugin.label.clone();
            }
            edges.push(EdgeView {
                from: stages.len() - 1,
                to: stages.len(),
                records_per_second: flow_in,
            });
            stages.push(view);
        }
        let retrying = |rate: f64| {
            (rate > 0.0).then(|| (Health::Retrying, format!("{rate:.1} writes/s retried")))
        };
        let records_out = recent(Group::Throughput, "out");
        edges.push(EdgeView {
            from: stages.len() - 1,
            to: stages.len(),
            records_per_second: records_out,
        });
        stages.push(stage(
            "sink",
            self.topology.sink.clone(),
            records_out,
            retrying(recent(Group::Retries, "sink")),
        ));
        let dead = recent(Group::Throughput, "dead-lettered");
        // Dead letters leave from every stage; the diagram draws them from the source's row.
        edges.push(EdgeView {
            from: 0,
            to: stages.len(),
            records_per_second: dead,
        });
        stages.push(stage(
            "dead_letter",
            self.topology.dead_letter.clone(),
            dead,
            retrying(recent(Group::Retries, "dead-letter")),
        ));
        (stages, edges)
    }
}

impl Inner {
    /// Appends one sample; the oldest goes once [`CAPACITY`] are kept, series that had no value
    /// over the whole window go, and a new series starts with `NaN` for the samples before it.
    fn push(&mut self, at_unix_ms: u64, values: Vec<(Group, String, f32)>) {
        let full = self.times.len() == CAPACITY;
        if full {
            self.times.pop_front();
        }
        self.times.push_back(at_unix_ms);
        let len = self.times.len();
        for series in &mut self.series {
            if full {
                series.values.pop_front();
            }
            series.values.push_back(f32::NAN);
        }
        for (group, name, value) in values {
            let index = match self
                .series
                .iter()
                .position(|s| s.group == group && s.name == name)
            {
                Some(index) => index,
                // Nothing to draw yet: no series until something is measured.
                None if value.is_nan() => continue,
                None if self.series.len() < MAX_SERIES => {
                    let mut values = VecDeque::with_capacity(CAPACITY);
                    values.resize(len, f32::NAN);
                    self.series.push(Series {
                        group,
                        name,
                        values,
                    });
                    self.series.len() - 1
                }
                None => {
                    self.dropped_series += 1;
                    continue;
                }
            };
            if let Some(last) = self.series[index].values.back_mut() {
                *last = value;
            }
        }
        // A partition revoked fifteen minutes ago leaves nothing to draw.
        self.series.retain(|s| s.values.iter().any(|v| !v.is_nan()));
    }
}

/// The histories of every pipeline of a process, by name.
#[derive(Debug, Clone, Default)]
pub struct Histories {
    pipelines: Arc<BTreeMap<String, Arc<PipelineHistory>>>,
}

impl Histories {
    /// An empty history for each pipeline of `configs`.
    pub fn new<'a>(configs: impl IntoIterator<Item = &'a PipelineConfig>) -> Self {
        Histories {
            pipelines: Arc::new(
                configs
                    .into_iter()
                    .map(|c| {
                        (
                            c.name.clone(),
                            Arc::new(PipelineHistory::new(&c.name, Topology::of(c))),
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// The history of pipeline `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<PipelineHistory>> {
        self.pipelines.get(name)
    }

    /// Every pipeline's history, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<PipelineHistory>)> {
        self.pipelines.iter()
    }

    /// Samples every pipeline once a [`STEP`], forever (abort the task to stop).
    pub async fn record(self, stats: BTreeMap<String, Arc<PipelineStats>>, slots: PluginSlots) {
        let mut ticker = tokio::time::interval(STEP);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let described = slots.describe();
            for (name, history) in self.pipelines.iter() {
                if let Some(stats) = stats.get(name) {
                    history.record(Reading::take(stats, &history.topology.plugins, &described));
                }
            }
        }
    }
}

fn recent_mean(inner: &Inner, group: Group, name: &str) -> Option<f64> {
    let series = inner
        .series
        .iter()
        .find(|s| s.group == group && s.name == name)?;
    let values: Vec<f64> = series
        .values
        .iter()
        .rev()
        .take(RECENT)
        .filter(|v| !v.is_nan())
        .map(|v| f64::from(*v))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// What was recorded between two snapshots of one histogram.
fn delta(now: &HistogramSnapshot, before: &HistogramSnapshot) -> HistogramSnapshot {
    HistogramSnapshot {
        buckets: now
            .buckets
            .iter()
            .zip(before.buckets.iter().chain(std::iter::repeat(&0)))
            .map(|(n, b)| n.saturating_sub(*b))
            .collect(),
        count: now.count.saturating_sub(before.count),
        sum_seconds: (now.sum_seconds - before.sum_seconds).max(0.0),
    }
}

/// Quantile `q` in ms, `NaN` when nothing was recorded (a gap in the chart, not a zero).
fn quantile_ms(snapshot: &HistogramSnapshot, q: f64) -> f32 {
    snapshot.quantile(q).map_or(f32::NAN, |s| round(s * 1000.0))
}

/// Two decimals are all a chart shows; fewer digits keep the JSON small.
fn round(value: f64) -> f32 {
    ((value * 100.0).round() / 100.0) as f32
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `text` cut to [`MAX_TEXT`] bytes at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Heap and struct bytes of the reading kept for the next sample's differences.
fn reading_bytes(reading: &Reading) -> usize {
    use std::mem::size_of;
    let histogram = |h: &HistogramSnapshot| h.buckets.capacity() * size_of::<u64>();
    size_of::<Reading>()
        + reading.lag.capacity() * size_of::<PartitionLag>()
        + reading
            .lag
            .iter()
            .map(|p| p.topic.capacity())
            .sum::<usize>()
        + histogram(&reading.batch_latency)
        + reading
            .plugins
            .iter()
            .map(|p| {
                size_of::<PluginReading>()
                    + p.name.capacity()
                    + p.version.as_ref().map_or(0, String::capacity)
                    + p.label.as_ref().map_or(0, String::capacity)
                    + p.last_rollback.as_ref().map_or(0, String::capacity)
                    + histogram(&p.call_latency)
            })
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::LatencyHistogram;

    fn topology(plugins: &[&str]) -> Topology {
        Topology {
            source: "kafka topics t".into(),
            plugins: plugins.iter().map(|p| p.to_string()).collect(),
            sink: "blackhole".into(),
            dead_letter: "file dlq.jsonl".into(),
        }
    }

    fn plugin(name: &str, version: &str, records: u64) -> PluginReading {
        PluginReading {
            name: name.into(),
            version: Some(version.into()),
            label: None,
            rollbacks: 0,
            last_rollback: None,
            records_in: records,
            records_out: records,
            records_failed: 0,
            call_latency: LatencyHistogram::default().snapshot(),
            cpu: Duration::ZERO,
        }
    }

    fn reading(start: Instant, second: u64, records: u64, plugins: Vec<PluginReading>) -> Reading {
        Reading {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + second),
            instant: start + Duration::from_secs(second),
            records: [records, records, 0],
            sink_retries: 0,
            dead_letter_retries: 0,
            lag: Vec::new(),
            batch_latency: LatencyHistogram::default().snapshot(),
            transform_queue: 0,
            sink_queue: 0,
            queue_capacity: 8,
            workers: 1,
            plugins,
        }
    }

    fn values(view: &HistoryView, group: Group, name: &str) -> Vec<Option<f32>> {
        view.series
            .iter()
            .find(|s| s.group == group && s.name == name)
            .unwrap_or_else(|| panic!("no {group:?} {name}"))
            .values
            .clone()
    }

    #[test]
    fn rates_latencies_and_swaps_per_second() {
        let start = Instant::now();
        let history = PipelineHistory::new("p", topology(&["a"]));
        history.record(reading(start, 0, 0, vec![plugin("a", "v1", 0)]));
        assert!(history.is_empty(), "the first reading only starts it");
        let batch = LatencyHistogram::default();
        batch.observe(Duration::from_millis(7));
        let mut second = reading(start, 2, 200, vec![plugin("a", "v1", 200)]);
        second.batch_latency = batch.snapshot();
        second.plugins[0].cpu = Duration::from_millis(500);
        history.record(second);
        // No batch in the third second: a gap, not a zero.
        let mut third = reading(start, 3, 300, vec![plugin("a", "v2", 300)]);
        third.batch_latency = batch.snapshot();
        third.plugins[0].cpu = Duration::from_millis(1250);
        history.record(third);
        let view = history.view();
        assert_eq!(view.times.len(), 2);
        assert_eq!(
            values(&view, Group::Throughput, "in"),
            [Some(100.0), Some(100.0)]
        );
        // Half a CPU-second over the first two seconds, three quarters in the third.
        assert_eq!(
            values(&view, Group::PluginCpu, "a"),
            [Some(25.0), Some(75.0)]
        );
        let p50 = values(&view, Group::BatchLatency, "p50");
        assert!((p50[0].unwrap() - 7.5).abs() < 0.01, "{p50:?}");
        assert_eq!(p50[1], None);
        assert_eq!(view.events.len(), 1);
        assert_eq!(view.events[0].kind, "swap");
        assert_eq!((&*view.events[0].from, &*view.events[0].to), ("v1", "v2"));
        // The diagram: source -> a -> sink, and the dead-letter branch.
        let kinds: Vec<_> = view.stages.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["source", "plugin", "sink", "dead_letter"]);
        assert_eq!(view.stages[1].version.as_deref(), Some("v2"));
        assert_eq!(view.stages[1].health, Health::Ok);
        assert_eq!(view.stages[3].health, Health::Idle);
        assert_eq!(view.edges.len(), 3);
        assert_eq!(view.edges[0].records_per_second, 100.0);

        let mut fourth = reading(start, 4, 300, vec![plugin("a", "v1", 300)]);
        fourth.plugins[0].rollbacks = 1;
        fourth.plugins[0].last_rollback = Some("too many failures".into());
        fourth.sink_retries = 3;
        history.record(fourth);
        let view = history.view();
        assert_eq!(view.events[1].kind, "rollback");
        assert_eq!(view.events[1].reason.as_deref(), Some("too many failures"));
        assert_eq!(view.stages[2].health, Health::Retrying);
        history.set_state(RunState::Failed {
            reason: "sink refused".into(),
        });
        assert!(
            history
                .view()
                .stages
                .iter()
                .all(|s| s.health == Health::Failed)
        );
    }

    #[test]
    fn partitions_come_and_go_as_series() {
        let start = Instant::now();
        let history = PipelineHistory::new("p", topology(&[]));
        let lag = |partition, lag| PartitionLag {
            topic: "t".into(),
            partition,
            lag,
        };
        history.record(reading(start, 0, 0, vec![]));
        let mut one = reading(start, 1, 0, vec![]);
        one.lag = vec![lag(0, 5)];
        history.record(one);
        let mut two = reading(start, 2, 0, vec![]);
        two.lag = vec![lag(0, 7), lag(1, 3)];
        history.record(two);
        let view = history.view();
        assert_eq!(values(&view, Group::Lag, "t[0]"), [Some(5.0), Some(7.0)]);
        assert_eq!(values(&view, Group::Lag, "t[1]"), [None, Some(3.0)]);
        assert_eq!(values(&view, Group::Lag, "total"), [Some(5.0), Some(10.0)]);
    }

    /// The worst case: every series slot used, names and event texts at their longest, every
    /// ring full (and wrapped). It stays under [`MAX_BYTES`].
    #[test]
    fn memory_stays_bounded_when_every_ring_is_full() {
        let start = Instant::now();
        let long = "x".repeat(1000);
        let plugins: Vec<String> = (0..8).map(|i| format!("{long}{i}")).collect();
        let history = PipelineHistory::new("p", topology(&[]));
        let topology = Topology {
            plugins: plugins.clone(),
            ..history.topology().clone()
        };
        let history = PipelineHistory::new("p", topology);
        for second in 0..(2 * CAPACITY as u64 + 10) {
            let mut reading = reading(
                start,
                second,
                second * 10,
                plugins
                    .iter()
                    .map(|p| {
                        let mut reading = plugin(p, &format!("{}{long}", second % 2), second);
                        reading.label = Some(long.clone());
                        reading
                    })
                    .collect(),
            );
            reading.lag = (0..100)
                .map(|partition| PartitionLag {
                    topic: long.clone(),
                    partition,
                    lag: 1,
                })
                .collect();
            history.record(reading);
        }
        let view = history.view();
        assert_eq!(view.times.len(), CAPACITY);
        assert_eq!(view.series.len(), MAX_SERIES);
        assert!(view.dropped_series > 0);
        assert_eq!(view.events.len(), MAX_EVENTS);
        let bytes = history.approx_bytes();
        assert!(
            bytes <= MAX_BYTES,
            "{bytes} bytes held, more than {MAX_BYTES}"
        );
        // The reading kept for differences is as large as the pipeline is wide; here, a
        // hundred partitions with 1000-byte topic names.
        assert!(bytes > MAX_SERIES * CAPACITY * 4, "{bytes} is not measured");
    }
}
