//! One row of `weir bench pipeline`'s table from several rounds: each ratio is taken between
//! runs of the same round, minutes apart at most, and the row shows the median, so that a
//! machine whose speed drifts between rounds moves both sides of a ratio together.

use super::pipeline::ThroughputLine;

/// A row of the table: the median over the rounds of every column.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// What ran.
    pub name: &'static str,
    /// Records per second, the median round's.
    pub per_second: f64,
    /// The median of each round's records/s over that round's read-only ceiling, for the
    /// pipelines over Kafka.
    pub of_ceiling: Option<f64>,
    /// The median of each round's records/s over that round's baseline (the driver alone), for
    /// the rows that have one.
    pub of_baseline: Option<f64>,
    /// The per-round ratios the medians came from, in run order: over the baseline where the
    /// row has one, else over the ceiling.
    pub ratios: Vec<f64>,
    /// Weir's CPU-seconds per million records.
    pub cpu_per_million: f64,
    /// The CPU-seconds per million records spent inside plugin calls, for a run with plugins.
    pub plugin_per_million: Option<f64>,
    /// Peak RSS in MiB, the least of the rounds': memory that earlier runs in the same process
    /// left behind (heap glibc could not return) raises later rounds' peaks, never lowers them.
    pub peak_mib: f64,
    /// The broker's CPU-seconds per million records, where metered.
    pub broker_per_million: Option<f64>,
    /// The Cassandra node's CPU-seconds per million records, where metered.
    pub cassandra_per_million: Option<f64>,
}

impl Summary {
    /// Summarizes one row's runs, one per round, with each round's ceiling and baseline rates
    /// (`None`: the row has no such ratio). Each rate slice has one entry per run.
    ///
    /// # Panics
    /// When `runs` is empty or a rate slice's length differs from `runs`'s: the bench always
    /// runs every row in every round.
    pub fn of(
        runs: &[&ThroughputLine],
        ceilings: Option<&[f64]>,
        baselines: Option<&[f64]>,
    ) -> Summary {
        assert!(!runs.is_empty(), "a row has at least one run");
        let ratios_to = |rates: &[f64]| -> Vec<f64> {
            assert_eq!(rates.len(), runs.len(), "one rate per round");
            runs.iter()
                .zip(rates)
                .map(|(run, rate)| run.per_second / rate)
                .collect()
        };
        let of_ceiling = ceilings.map(ratios_to);
        let of_baseline = baselines.map(ratios_to);
        let each = |value: fn(&ThroughputLine) -> f64| median(runs.iter().map(|run| value(run)));
        let each_optional = |value: fn(&ThroughputLine) -> Option<f64>| {
            let values: Option<Vec<f64>> = runs.iter().map(|run| value(run)).collect();
            values.map(median)
        };
        Summary {
            name: runs[0].name,
            per_second: each(|run| run.per_second),
            of_ceiling: of_ceiling.as_deref().map(|r| median(r.iter().copied())),
            of_baseline: of_baseline.as_deref().map(|r| median(r.iter().copied())),
            ratios: of_baseline.or(of_ceiling).unwrap_or_default(),
            cpu_per_million: each(|run| run.cost.cpu_per_million()),
            plugin_per_million: each_optional(|run| run.cost.plugin_per_million()),
            peak_mib: runs
                .iter()
                .map(|run| run.cost.peak_mib())
                .fold(f64::INFINITY, f64::min),
            broker_per_million: each_optional(|run| run.cost.broker_per_million()),
            cassandra_per_million: each_optional(|run| run.cost.cassandra_per_million()),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::cost::{Cost, PeakRss};
    use super::*;

    fn run(per_second: f64, cpu_ms: u64, cassandra_ms: Option<u64>) -> ThroughputLine {
        // Each round's peak a little higher than the last, as heap left behind accumulates.
        let peak_mib = 64 + cpu_ms / 10;
        ThroughputLine {
            name: "kafka -> user-profile -> cassandra",
            per_second,
            cost: Cost {
                records: 1000,
                cpu: Duration::from_millis(cpu_ms),
                peak_rss: peak_mib << 20,
                peak_kind: PeakRss::Reset,
                broker_cpu: None,
                cassandra_cpu: cassandra_ms.map(Duration::from_millis),
                plugin_cpu: None,
            },
        }
    }

    #[test]
    fn medians_pick_the_middle_or_average_the_middle_two() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median([7.0]), 7.0);
        assert_eq!(median([]), 0.0);
    }

    #[test]
    fn ratios_pair_each_run_with_its_own_rounds_rates() {
        // The machine halves its speed in round 2: the pipeline and its driver both slow down,
        // and each round's ratio stays what it was.
        let runs = [run(600.0, 10, Some(50)), run(300.0, 20, Some(70))];
        let drivers = [1000.0, 500.0];
        let ceilings = [2000.0, 600.0];
        let refs: Vec<&ThroughputLine> = runs.iter().collect();
        let summary = Summary::of(&refs, Some(&ceilings), Some(&drivers));
        assert_eq!(summary.ratios, [0.6, 0.6]);
        assert_eq!(summary.of_baseline, Some(0.6));
        // Against the ceilings the two rounds differ (0.3 and 0.5): their median.
        assert_eq!(summary.of_ceiling, Some(0.4));
        assert_eq!(summary.per_second, 450.0);
        assert!((summary.cpu_per_million - 15.0).abs() < 1e-9);
        assert!((summary.cassandra_per_million.unwrap() - 60.0).abs() < 1e-9);
        assert_eq!(summary.broker_per_million, None);
        assert_eq!(summary.plugin_per_million, None);
        // The least of the rounds' peaks (65 and 66 MiB).
        assert_eq!(summary.peak_mib, 65.0);
    }

    #[test]
    fn a_column_metered_in_only_some_rounds_is_left_out() {
        // The node stopped answering its pid file in one round: a median of the others would
        // hide that, so the column is empty.
        let runs = [run(600.0, 10, Some(50)), run(300.0, 20, None)];
        let refs: Vec<&ThroughputLine> = runs.iter().collect();
        let summary = Summary::of(&refs, None, None);
        assert_eq!(summary.cassandra_per_million, None);
        assert_eq!(summary.of_ceiling, None);
        assert_eq!(summary.of_baseline, None);
        assert!(summary.ratios.is_empty());
    }
}
