//! Prometheus text exposition of what Weir measures: records per pipeline and per plugin,
//! batch, sink and plugin-call latency histograms, Kafka consumer lag, sink retries, queue
//! depths, readiness, plugin versions, swaps, rollbacks, rejected files and the counters plugins
//! report.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::observe::HistogramSnapshot;
use crate::pipeline::{BatchStage, PipelineStats};
use crate::registry::{PluginSlots, PluginVersion};

/// Reads one counter out of a pipeline's report.
type ReportField = fn(&crate::pipeline::PipelineReport) -> u64;

/// Reads one value of a pipeline's live stats.
type StatsField = fn(&PipelineStats) -> u64;

/// Renders every metric in the Prometheus text format (version 0.0.4).
pub fn render(pipelines: &BTreeMap<String, Arc<PipelineStats>>, slots: &PluginSlots) -> String {
    let mut out = String::new();
    let reports: Vec<_> = pipelines
        .iter()
        .map(|(name, stats)| stats.snapshot(name))
        .collect();
    per_pipeline(
        &mut out,
        pipelines,
        ("weir_source_records_polled_total", "counter"),
        "Records the source handed to the pipeline, acknowledged or not.",
        None,
        &[("", |s| s.records_polled())],
    );
    let counters: [(&str, &str, ReportField); 4] = [
        (
            "weir_records_in_total",
            "Source records whose batch was acknowledged.",
            |r| r.records_in,
        ),
        (
            "weir_records_out_total",
            "Records written to the sink.",
            |r| r.records_out,
        ),
        (
            "weir_records_dead_lettered_total",
            "Records written to the dead-letter destination.",
            |r| r.dead_lettered,
        ),
        ("weir_batches_total", "Batches acknowledged.", |r| r.batches),
    ];
    for (name, help, value) in counters {
        header(&mut out, name, help, "counter");
        for report in &reports {
            let _ = writeln!(
                out,
                "{name}{{pipeline=\"{}\"}} {}",
                escape(&report.pipeline),
                value(report)
            );
        }
    }
    render_pipeline_details(&mut out, pipelines);
    header(
        &mut out,
        "weir_postgres_ignored_records_total",
        "Records a postgres sink left out because the landing table held their key already (on_conflict = \"ignore\").",
        "counter",
    );
    for (table, ignored) in crate::connectors::postgres::ignored_records() {
        let _ = writeln!(
            out,
            "weir_postgres_ignored_records_total{{table=\"{}\"}} {ignored}",
            escape(&table)
        );
    }
    let plugins = slots.describe();
    header(
        &mut out,
        "weir_plugin_info",
        "The active version of each plugin (always 1).",
        "gauge",
    );
    for plugin in &plugins {
        let _ = writeln!(
            out,
            "weir_plugin_info{{plugin=\"{}\",version=\"{}\"}} 1",
            escape(&plugin.name),
            plugin.current.version
        );
    }
    header(
        &mut out,
        "weir_plugin_swaps_total",
        "Changes of a plugin's active version.",
        "counter",
    );
    for plugin in &plugins {
        let _ = writeln!(
            out,
            "weir_plugin_swaps_total{{plugin=\"{}\"}} {}",
            escape(&plugin.name),
            plugin.swaps
        );
    }
    header(
        &mut out,
        "weir_plugin_rollbacks_total",
        "Returns of a plugin to an earlier version, automatic or requested.",
        "counter",
    );
    for plugin in &plugins {
        let _ = writeln!(
            out,
            "weir_plugin_rollbacks_total{{plugin=\"{}\"}} {}",
            escape(&plugin.name),
            plugin.rollbacks
        );
    }
    header(
        &mut out,
        "weir_plugin_rejected_files_total",
        "Plugin files rejected by validation.",
        "counter",
    );
    for plugin in &plugins {
        let count = plugin.last_rejection.as_ref().map_or(0, |r| r.count);
        let _ = writeln!(
            out,
            "weir_plugin_rejected_files_total{{plugin=\"{}\"}} {count}",
            escape(&plugin.name)
        );
    }
    render_rollouts(&mut out, &plugins);
    // Per version: a version's counters live in its loaded component, so a swap would reset a
    // series without the version and a rollback would jump it back. The versions that run are
    // the active one and a staged candidate; a version swapped out keeps its counts, and its
    // series resumes where it stopped if a rollback brings it back.
    let running: Vec<(String, Vec<PluginVersion>)> = plugins
        .iter()
        .filter_map(|plugin| {
            let slot = slots.get(&plugin.name)?;
            let mut versions = vec![slot.current().1];
            if let Some((staged, _)) = slot.staged()
                && staged.plugin.version() != versions[0].plugin.version()
            {
                versions.push(staged);
            }
            Some((plugin.name.clone(), versions))
        })
        .collect();
    header(
        &mut out,
        "weir_plugin_counter_total",
        "Counters plugins report through the host interface, per plugin version.",
        "counter",
    );
    for (name, versions) in &running {
        for version in versions {
            for (counter, value) in version.plugin.counters().snapshot() {
                let _ = writeln!(
                    out,
                    "weir_plugin_counter_total{{plugin=\"{}\",version=\"{}\",name=\"{}\"}} {value}",
                    escape(name),
                    escape(version.plugin.version()),
                    escape(&counter)
                );
            }
        }
    }
    header(
        &mut out,
        "weir_plugin_host_calls_dropped_total",
        "Plugin log and counter-add calls the host dropped for exceeding their rate or size bound, per plugin version.",
        "counter",
    );
    for (name, versions) in &running {
        for version in versions {
            let dropped = version.plugin.counters().dropped();
            for (call, count) in [("log", dropped.log), ("counter-add", dropped.counter_add)] {
                let _ = writeln!(
                    out,
                    "weir_plugin_host_calls_dropped_total{{plugin=\"{}\",version=\"{}\",call=\"{call}\"}} {count}",
                    escape(name),
                    escape(version.plugin.version())
                );
            }
        }
    }
    out
}

/// `weir_ready`: 1 while the process serves its pipelines, 0 once a shutdown or a failed
/// pipeline started the drain (what `/ready` answers, for alerting on it).
pub fn render_ready(ready: bool) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "weir_ready",
        "1 while every pipeline runs; 0 once a shutdown or a failed pipeline started the drain.",
        "gauge",
    );
    let _ = writeln!(out, "weir_ready {}", u8::from(ready));
    out
}

/// Retries, queues, lag, latencies and per-plugin counts of every pipeline.
fn render_pipeline_details(out: &mut String, pipelines: &BTreeMap<String, Arc<PipelineStats>>) {
    per_pipeline(
        out,
        pipelines,
        ("weir_sink_retries_total", "counter"),
        "Writes retried after a transient failure, by destination (sink or dead_letter).",
        Some("destination"),
        &[
            ("sink", |s| s.sink_retries().load(Ordering::Relaxed)),
            ("dead_letter", |s| {
                s.dead_letter_retries().load(Ordering::Relaxed)
            }),
        ],
    );
    per_pipeline(
        out,
        pipelines,
        ("weir_source_retries_total", "counter"),
        "Source polls that failed for now (an outage, a journal on a full disk) and were retried with backoff.",
        None,
        &[("", |s| s.source_retries().load(Ordering::Relaxed))],
    );
    per_pipeline(
        out,
        pipelines,
        ("weir_source_commit_failures_total", "counter"),
        "Commits of acknowledged source positions that failed for now and are retried with backoff; records go on flowing, and a restart reads again what is not committed.",
        None,
        &[("", |s| s.commit_failures_total())],
    );
    per_pipeline(
        out,
        pipelines,
        ("weir_queue_depth_batches", "gauge"),
        "Batches waiting between stages, by queue (transform or sink).",
        Some("queue"),
        &[
            ("transform", |s| s.transform_queue().get()),
            ("sink", |s| s.sink_queue().get()),
        ],
    );
    per_pipeline(
        out,
        pipelines,
        ("weir_transform_workers", "gauge"),
        "Transform workers running, each with its own plugin instances.",
        None,
        &[("", |s| s.workers())],
    );
    per_pipeline(
        out,
        pipelines,
        ("weir_queue_capacity_batches", "gauge"),
        "Batches the queues between stages hold at most.",
        None,
        &[("", |s| s.queue_capacity())],
    );
    header(
        out,
        "weir_kafka_consumer_lag",
        "Messages after the last committed offset, per assigned partition.",
        "gauge",
    );
    for (name, stats) in pipelines {
        for lag in stats.lag() {
            let _ = writeln!(
                out,
                "weir_kafka_consumer_lag{{pipeline=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                escape(name),
                escape(&lag.topic),
                lag.partition,
                lag.lag
            );
        }
    }
    consumer_group(out, pipelines);
    header(
        out,
        "weir_batch_duration_seconds",
        "From a batch leaving the source to its acknowledgement by the sink and dead-letter destination.",
        "histogram",
    );
    for (name, stats) in pipelines {
        let labels = format!("pipeline=\"{}\"", escape(name));
        histogram(
            out,
            "weir_batch_duration_seconds",
            &labels,
            &stats.batch_latency().snapshot(),
        );
    }
    header(
        out,
        "weir_sink_write_duration_seconds",
        "One sink write, retries included.",
        "histogram",
    );
    for (name, stats) in pipelines {
        let labels = format!("pipeline=\"{}\"", escape(name));
        histogram(
            out,
            "weir_sink_write_duration_seconds",
            &labels,
            &stats.sink_write_latency().snapshot(),
        );
    }
    header(
        out,
        "weir_batch_stage_seconds",
        "Where a batch spent its time besides the sink write: waiting for a transform worker (transform_queue), in the chain (transform), waiting for a sink write slot (sink_queue), and after its write waiting for earlier batches and its dead letters (in_order).",
        "histogram",
    );
    for (name, stats) in pipelines {
        for stage in BatchStage::ALL {
            let labels = format!("pipeline=\"{}\",stage=\"{}\"", escape(name), stage.as_str());
            histogram(
                out,
                "weir_batch_stage_seconds",
                &labels,
                &stats.stage_latency(stage).snapshot(),
            );
        }
    }
    let plugin_counters: [(&str, &str, PluginValue); 4] = [
        (
            "weir_plugin_records_in_total",
            "Records given to a plugin.",
            |p| p.records_in.load(Ordering::Relaxed).to_string(),
        ),
        (
            "weir_plugin_records_out_total",
            "Records a plugin returned.",
            |p| p.records_out.load(Ordering::Relaxed).to_string(),
        ),
        (
            "weir_plugin_records_dead_lettered_total",
            "Records a plugin failed, each sent to the dead-letter destination.",
            |p| p.records_failed.load(Ordering::Relaxed).to_string(),
        ),
        (
            "weir_plugin_cpu_seconds_total",
            "CPU time of the worker threads inside a plugin's calls: the guest's work plus the copying of records into and out of it.",
            |p| p.cpu().as_secs_f64().to_string(),
        ),
    ];
    for (metric, help, value) in plugin_counters {
        header(out, metric, help, "counter");
        for (name, stats) in pipelines {
            for (plugin, step) in stats.plugin_stats() {
                let _ = writeln!(
                    out,
                    "{metric}{{pipeline=\"{}\",plugin=\"{}\"}} {}",
                    escape(name),
                    escape(&plugin),
                    value(&step)
                );
            }
        }
    }
    header(
        out,
        "weir_plugin_call_duration_seconds",
        "One call of a plugin's transform on a batch.",
        "histogram",
    );
    for (name, stats) in pipelines {
        for (plugin, step) in stats.plugin_stats() {
            let labels = format!(
                "pipeline=\"{}\",plugin=\"{}\"",
                escape(name),
                escape(&plugin)
            );
            histogram(
                out,
                "weir_plugin_call_duration_seconds",
                &labels,
                &step.call_latency.snapshot(),
            );
        }
    }
}

/// Reads one counter of a plugin's step, as the sample's text.
type PluginValue = fn(&crate::observe::PluginStepStats) -> String;

/// Writes a histogram's `_bucket`, `_sum` and `_count` series.
fn histogram(out: &mut String, name: &str, labels: &str, snapshot: &HistogramSnapshot) {
    for (bound, count) in snapshot.cumulative() {
        let le = if bound.is_infinite() {
            "+Inf".to_owned()
        } else {
            bound.to_string()
        };
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", snapshot.sum_seconds);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", snapshot.count);
}

/// One metric with a series per pipeline, or with `label` a series per pipeline and
/// `(label value, field)` of `series`.
fn per_pipeline(
    out: &mut String,
    pipelines: &BTreeMap<String, Arc<PipelineStats>>,
    (metric, kind): (&str, &str),
    help: &str,
    label: Option<&str>,
    series: &[(&str, StatsField)],
) {
    header(out, metric, help, kind);
    for (name, stats) in pipelines {
        let pipeline = escape(name);
        for (value, field) in series {
            let extra = label.map_or(String::new(), |label| format!(",{label}=\"{value}\""));
            let _ = writeln!(
                out,
                "{metric}{{pipeline=\"{pipeline}\"{extra}}} {}",
                field(stats)
            );
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The consumer-group membership of every pipeline with a Kafka source.
fn consumer_group(out: &mut String, pipelines: &BTreeMap<String, Arc<PipelineStats>>) {
    type GroupField = fn(&crate::connectors::kafka::GroupStatus) -> f64;
    let groups: Vec<_> = pipelines
        .iter()
        .filter_map(|(name, stats)| Some((name, stats.consumer_group()?)))
        .collect();
    let series: [(&str, &str, &str, GroupField); 6] = [
        (
            "weir_kafka_rebalances_total",
            "Rebalances this process's consumer completed.",
            "counter",
            |g| g.rebalances as f64,
        ),
        (
            "weir_kafka_partitions_owned",
            "Partitions this process's consumer owns.",
            "gauge",
            |g| g.partitions_owned as f64,
        ),
        (
            "weir_kafka_partitions_revoked_total",
            "Partitions taken from this process's consumer in rebalances.",
            "counter",
            |g| g.partitions_revoked as f64,
        ),
        (
            "weir_kafka_unowned_seconds_total",
            "Seconds this process's consumer owned no partition (joining, or everything moved away).",
            "counter",
            |g| g.unowned_seconds,
        ),
        (
            "weir_kafka_backpressure_pauses_total",
            "Times this process's consumer paused its partitions because the pipeline took nothing (a stalled sink).",
            "counter",
            |g| g.backpressure_pauses as f64,
        ),
        (
            "weir_kafka_resets_past_deleted_records_total",
            "Times a partition's position had been deleted from the topic (retention) before this process's consumer read it, so reading moved on to where offset_reset says: records lost to the pipeline.",
            "counter",
            |g| g.resets_past_deleted_records as f64,
        ),
    ];
    for (name, help, kind, value) in series {
        header(out, name, help, kind);
        for (pipeline, group) in &groups {
            let _ = writeln!(
                out,
                "{name}{{pipeline=\"{}\"}} {}",
                escape(pipeline),
                value(group)
            );
        }
    }
}

/// Staged candidates: which runs how, and what its shadow or canary counted so far.
fn render_rollouts(out: &mut String, plugins: &[crate::registry::SlotInfo]) {
    use crate::registry::rollout::{Rollout, RolloutInfo};
    type Value = fn(&RolloutInfo) -> Option<String>;
    let series: [(&str, &str, &str, Value); 7] = [
        (
            "weir_plugin_staged_info",
            "The candidate staged beside a plugin's live version (always 1).",
            "gauge",
            |_| Some("1".into()),
        ),
        (
            "weir_plugin_shadow_records_compared_total",
            "Records a shadow candidate processed and compared with the live version's results.",
            "counter",
            |r| r.shadow.as_ref().map(|s| s.compared.to_string()),
        ),
        (
            "weir_plugin_shadow_records_differing_total",
            "Records whose results differ between a shadow candidate and the live version.",
            "counter",
            |r| r.shadow.as_ref().map(|s| s.differing.to_string()),
        ),
        (
            "weir_plugin_shadow_differing_ratio",
            "Share of compared records whose results differ (0 to 1).",
            "gauge",
            |r| r.shadow.as_ref().map(|s| s.differing_share.to_string()),
        ),
        (
            "weir_plugin_shadow_failures_total",
            "Records a shadow candidate failed (counted, never dead-lettered).",
            "counter",
            |r| r.shadow.as_ref().map(|s| s.failed.to_string()),
        ),
        (
            "weir_plugin_canary_records_total",
            "Records of a canary's partitions its candidate processed, within its abort window.",
            "counter",
            |r| r.canary.as_ref().map(|c| c.records.to_string()),
        ),
        (
            "weir_plugin_canary_failures_total",
            "Of those, failures by the candidate's fault (plugin failures, traps, timeouts).",
            "counter",
            |r| r.canary.as_ref().map(|c| c.failed.to_string()),
        ),
    ];
    for (name, help, kind, value) in series {
        header(out, name, help, kind);
        for plugin in plugins {
            let Some(staged) = &plugin.staged else {
                continue;
            };
            let Some(value) = value(staged) else {
                continue;
            };
            let rollout = match staged.rollout {
                Rollout::Shadow { .. } => "shadow",
                Rollout::Canary { .. } => "canary",
            };
            let _ = writeln!(
                out,
                "{name}{{plugin=\"{}\",version=\"{}\",rollout=\"{rollout}\"}} {value}",
                escape(&plugin.name),
                staged.version
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_pipeline_counters_with_escaped_labels() {
        let stats = Arc::new(PipelineStats::default());
        stats.record_batch(10, 8, 2);
        let pipelines = BTreeMap::from([("a\"b".to_owned(), stats)]);
        let text = render(&pipelines, &PluginSlots::default());
        assert!(
            text.contains("weir_records_in_total{pipeline=\"a\\\"b\"} 10"),
            "{text}"
        );
        assert!(text.contains("weir_records_dead_lettered_total{pipeline=\"a\\\"b\"} 2"));
        assert!(text.contains("# TYPE weir_batches_total counter"));
    }

    #[test]
    fn histograms_have_cumulative_buckets_sum_and_count() {
        let stats = Arc::new(PipelineStats::new("p"));
        stats
            .batch_latency()
            .observe(std::time::Duration::from_millis(3));
        stats
            .stage_latency(BatchStage::InOrder)
            .observe(std::time::Duration::from_millis(1));
        stats.plugin("user-profile").record_call(
            4,
            3,
            1,
            std::time::Duration::from_micros(200),
            std::time::Duration::from_micros(150),
        );
        let pipelines = BTreeMap::from([("p".to_owned(), stats)]);
        let text = render(&pipelines, &PluginSlots::default());
        for expected in [
            "weir_batch_duration_seconds_bucket{pipeline=\"p\",le=\"0.0025\"} 0",
            "weir_batch_duration_seconds_bucket{pipeline=\"p\",le=\"0.005\"} 1",
            "weir_batch_duration_seconds_bucket{pipeline=\"p\",le=\"+Inf\"} 1",
            "weir_batch_duration_seconds_count{pipeline=\"p\"} 1",
            "weir_batch_stage_seconds_count{pipeline=\"p\",stage=\"in_order\"} 1",
            "weir_batch_stage_seconds_count{pipeline=\"p\",stage=\"transform_queue\"} 0",
            "weir_plugin_call_duration_seconds_count{pipeline=\"p\",plugin=\"user-profile\"} 1",
            "weir_plugin_records_in_total{pipeline=\"p\",plugin=\"user-profile\"} 4",
            "weir_plugin_records_out_total{pipeline=\"p\",plugin=\"user-profile\"} 3",
            "weir_plugin_records_dead_lettered_total{pipeline=\"p\",plugin=\"user-profile\"} 1",
            "weir_plugin_cpu_seconds_total{pipeline=\"p\",plugin=\"user-profile\"} 0.00015",
            "weir_queue_depth_batches{pipeline=\"p\",queue=\"sink\"} 0",
            "weir_sink_retries_total{pipeline=\"p\",destination=\"dead_letter\"} 0",
            "weir_source_commit_failures_total{pipeline=\"p\"} 0",
            "weir_source_retries_total{pipeline=\"p\"} 0",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }
}
