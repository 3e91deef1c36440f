//! The benchmarks users run from README (`weir bench swap`, `weir bench pipeline`), run small:
//! they finish, measure what they say, and report ratios against their in-process baseline.

use crate::support::{cassandra_nodes, kafka_brokers, plugin_registry, run_weir};

/// The number after `label` on the line of `report` that starts with it.
fn number_after(report: &str, label: &str) -> f64 {
    let line = report
        .lines()
        .find(|line| line.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{report}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in `{line}`"))
}

#[test]
fn bench_swap_measures_each_swap() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_weir(
        dir.path(),
        &[
            "bench",
            "swap",
            "--swaps",
            "3",
            "--rate",
            "2000",
            "--plugins",
            plugin_registry().to_str().unwrap(),
        ],
    );
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(number_after(&report, "swaps"), 3.0);
    let debounce = number_after(&report, "debounce");
    let p50 = number_after(&report, "landing -> first record p50");
    let p99 = number_after(&report, "landing -> first record p99");
    assert!(
        debounce <= p50 && p50 <= p99,
        "a swap takes at least the debounce, and p50 <= p99: {report}"
    );
    assert!(number_after(&report, "longest output gap in swap") > 0.0);
    assert!(number_after(&report, "usual gap between batches") > 0.0);
}

#[test]
fn bench_pipeline_reports_ratios_to_the_read_only_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let (brokers, nodes) = (kafka_brokers(), cassandra_nodes());
    let output = run_weir(
        dir.path(),
        &[
            "bench",
            "pipeline",
            "--brokers",
            &brokers,
            "--cassandra",
            &nodes,
            "--records",
            "3000",
            "--latency-rate",
            "500",
            "--latency-seconds",
            "2",
            "--plugins",
            plugin_registry().to_str().unwrap(),
        ],
    );
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ratios: Vec<(String, f64)> = report
        .lines()
        .filter(|line| line.starts_with("kafka ->") && !line.contains("latency"))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ratio = fields[fields.len() - 1].parse().unwrap();
            (fields[..fields.len() - 2].join(" "), ratio)
        })
        .collect();
    let names: Vec<&str> = ratios.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kafka -> blackhole (read-only ceiling)",
            "kafka -> user-profile -> blackhole",
            "kafka -> user-profile -> kafka",
            "kafka -> user-profile -> cassandra",
        ],
        "{report}"
    );
    assert_eq!(ratios[0].1, 1.0, "the ceiling is its own baseline");
    assert!(
        ratios.iter().all(|(_, ratio)| *ratio > 0.0),
        "every pipeline moved records: {report}"
    );
    let latency = report
        .lines()
        .find(|line| line.contains("latency at"))
        .unwrap_or_else(|| panic!("no latency line in {report}"));
    assert!(
        latency.contains("p50") && latency.contains("p99"),
        "{latency}"
    );
    assert!(!latency.contains("(0 samples)"), "{latency}");
}
