//! Prometheus text exposition of the counters Weir keeps: records per pipeline, plugin versions,
//! swaps, rejected files and the counters plugins report through the host interface.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use crate::pipeline::PipelineStats;
use crate::registry::PluginSlots;

/// Reads one counter out of a pipeline's report.
type ReportField = fn(&crate::pipeline::PipelineReport) -> u64;

/// Renders every metric in the Prometheus text format (version 0.0.4).
pub fn render(pipelines: &BTreeMap<String, Arc<PipelineStats>>, slots: &PluginSlots) -> String {
    let mut out = String::new();
    let reports: Vec<_> = pipelines
        .iter()
        .map(|(name, stats)| stats.snapshot(name))
        .collect();
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
    header(
        &mut out,
        "weir_plugin_counter_total",
        "Counters plugins report through the host interface.",
        "counter",
    );
    for plugin in &plugins {
        if let Some(slot) = slots.get(&plugin.name) {
            for (counter, value) in slot.current().1.plugin.counters().snapshot() {
                let _ = writeln!(
                    out,
                    "weir_plugin_counter_total{{plugin=\"{}\",name=\"{}\"}} {value}",
                    escape(&plugin.name),
                    escape(&counter)
                );
            }
        }
    }
    out
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
}
