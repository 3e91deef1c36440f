//! The benchmarks users run from README (`weir bench swap`, `weir bench pipeline`), run small:
//! they finish, measure what they say, and report every row with its ratios against the
//! in-process baselines and its cost. Never timed: no assertion on how fast anything ran.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::services::topic_exists;
use crate::support::{
    cassandra_nodes, cassandra_session, kafka_brokers, plugin_registry, repo_root, run_weir,
    wait_for,
};

/// Runs `weir ARGS` in `dir`, asserts it succeeded, and returns what it printed on stdout.
fn bench_report(dir: &Path, args: &[&str]) -> String {
    let output = run_weir(dir, args);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}

/// The rest of the (indented) line of `report` that starts with `prefix`, if there is one.
fn line_after<'a>(report: &'a str, prefix: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(prefix))
}

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
fn bench_pipeline_refuses_a_latency_run_that_is_not_a_positive_number() {
    let dir = tempfile::tempdir().unwrap();
    for flag in [
        "--latency-rate=0",
        "--latency-rate=-5",
        "--latency-rate=inf",
        "--latency-seconds=NaN",
    ] {
        // Refused before anything connects to a service.
        let output = run_weir(dir.path(), &["bench", "pipeline", flag]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} was accepted");
        assert!(
            stderr.contains("--latency-rate and --latency-seconds must be positive numbers"),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn bench_refuses_a_producer_linger_over_a_second() {
    let dir = tempfile::tempdir().unwrap();
    for (args, message) in [
        (
            &["bench", "pipeline", "--latency-producer-linger-ms=1001"][..],
            "--latency-producer-linger-ms must be at most 1000",
        ),
        (
            &[
                "bench",
                "produce",
                "--topic=t",
                "--count=1",
                "--rate=1",
                "--linger-ms=5000",
            ][..],
            "--linger-ms must be at most 1000",
        ),
    ] {
        // Refused before anything connects to a service.
        let output = run_weir(dir.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn bench_swap_measures_each_swap() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench_report(
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

/// A service's pid file as `scripts/services` keeps it (`kafka/pid`, `cassandra/pid`), when
/// the services run from `WEIR_SERVICES_DIR` or from this checkout.
fn pid_file(service: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("WEIR_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".services"));
    Some(dir.join(service).join("pid")).filter(|path| path.exists())
}

/// One row of `weir bench pipeline`'s table: its name and its eight columns (records/s,
/// ceiling, baseline, CPU-s/M, plugin CPU-s/M, peak MiB, broker CPU-s/M, Cassandra CPU-s/M),
/// `-` where a column does not apply.
struct Row {
    name: String,
    columns: Vec<String>,
}

impl Row {
    fn number(&self, column: usize) -> f64 {
        self.columns[column]
            .parse()
            .unwrap_or_else(|_| panic!("column {column} of `{}` is not a number", self.name))
    }
}

fn table(report: &str) -> Vec<Row> {
    report
        .lines()
        .skip_while(|line| !line.starts_with("pipeline "))
        .skip(1)
        .take_while(|line| !line.contains("latency at"))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() > 8, "a short row `{line}` in:\n{report}");
            let (name, columns) = fields.split_at(fields.len() - 8);
            Row {
                name: name.join(" "),
                columns: columns.iter().map(|c| c.to_string()).collect(),
            }
        })
        .collect()
}

#[test]
fn bench_pipeline_reports_every_row_with_its_ratios_and_cost() {
    let dir = tempfile::tempdir().unwrap();
    let (brokers, nodes) = (kafka_brokers(), cassandra_nodes());
    let broker = pid_file("kafka");
    let cassandra = pid_file("cassandra");
    let mut args = vec![
        "bench".to_owned(),
        "pipeline".into(),
        "--brokers".into(),
        brokers,
        "--cassandra".into(),
        nodes,
        "--records".into(),
        "3000".into(),
        "--rounds".into(),
        "2".into(),
        "--latency-rate".into(),
        "500".into(),
        "--latency-seconds".into(),
        "2".into(),
        "--kafka-sink-compression".into(),
        "zstd".into(),
        "--plugins".into(),
        plugin_registry().to_str().unwrap().into(),
    ];
    if let Some(pid_file) = &broker {
        args.extend(["--broker-pid-file".into(), pid_file.display().to_string()]);
    }
    if let Some(pid_file) = &cassandra {
        args.extend([
            "--cassandra-pid-file".into(),
            pid_file.display().to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = bench_report(dir.path(), &args);
    assert!(
        report.lines().any(|line| line.starts_with("peak MiB: ")),
        "the report says what peak MiB means: {report}"
    );
    assert!(
        report
            .lines()
            .any(|line| line == "the Kafka sink writes with compression zstd"),
        "the report names the Kafka sink's codec: {report}"
    );
    let rows = table(&report);
    let names: Vec<&str> = rows.iter().map(|row| row.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kafka -> blackhole (read-only ceiling)",
            "kafka -> user-profile -> blackhole",
            "kafka -> user-profile -> kafka",
            "kafka -> user-profile -> cassandra",
            "scylla driver alone -> cassandra (baseline)",
            "scylla driver alone at the pipeline's rate",
        ],
        "{report}"
    );
    let (pipelines, drivers) = rows.split_at(4);
    let (driver, paced) = (&drivers[0], &drivers[1]);
    // The paced driver starts each request when its rows are due at the Cassandra pipeline's
    // rate, so it cannot write faster than that (beyond the last request's rows and rounding).
    assert!(
        paced.number(0) <= pipelines[3].number(0) * 1.01 + 1.0,
        "paced at the pipeline's rate: {report}"
    );
    assert_eq!(paced.columns[1], "-", "{report}");
    assert!(paced.number(2) > 0.0, "its ratio to the driver: {report}");
    assert_eq!(
        pipelines[0].number(1),
        1.0,
        "the ceiling is its own baseline"
    );
    for row in pipelines {
        assert!(
            row.number(1) > 0.0,
            "every pipeline moved records: {report}"
        );
    }
    // Only the Cassandra pipeline has the driver as its baseline, and the driver is not a
    // pipeline over Kafka.
    let baselines: Vec<&str> = rows.iter().map(|row| row.columns[2].as_str()).collect();
    assert_eq!(&baselines[..3], ["-", "-", "-"], "{report}");
    assert!(pipelines[3].number(2) > 0.0, "{report}");
    assert_eq!(driver.columns[1], "-", "{report}");
    assert_eq!(driver.number(2), 1.0, "{report}");
    for row in &rows {
        assert!(row.number(0) > 0.0, "{report}");
        assert!(row.number(3) > 0.0, "every run costs CPU: {report}");
        assert!(row.number(5) > 0.0, "every run has a peak RSS: {report}");
    }
    // The plugin's share of the CPU, in the rows that run one.
    assert_eq!(
        pipelines[0].columns[4], "-",
        "the ceiling runs no plugin: {report}"
    );
    assert_eq!(driver.columns[4], "-", "{report}");
    assert_eq!(paced.columns[4], "-", "{report}");
    for row in &pipelines[1..] {
        assert!(
            row.number(4) > 0.0,
            "user-profile's calls cost CPU: {report}"
        );
    }
    // The broker's CPU where it is metered and serves the run.
    for row in pipelines {
        match &broker {
            Some(_) => assert!(row.number(6) >= 0.0, "{report}"),
            None => assert_eq!(row.columns[6], "-", "{report}"),
        }
    }
    assert_eq!(driver.columns[6], "-", "{report}");
    assert_eq!(paced.columns[6], "-", "{report}");
    // The node's CPU in the two runs that write to it, and only there: it did the writing, so
    // it used some.
    for row in [&pipelines[3], driver, paced] {
        match &cassandra {
            Some(_) => assert!(row.number(7) > 0.0, "the node wrote the rows: {report}"),
            None => assert_eq!(row.columns[7], "-", "{report}"),
        }
    }
    for row in &pipelines[..3] {
        assert_eq!(row.columns[7], "-", "{report}");
    }

    let latency = report
        .lines()
        .find(|line| line.contains("latency at"))
        .unwrap_or_else(|| panic!("no latency line in {report}"));
    assert!(
        latency.contains("p50") && latency.contains("p99"),
        "{latency}"
    );
    assert!(!latency.contains("(0 samples)"), "{latency}");
    let cpu: f64 = latency
        .split(", ")
        .find_map(|part| {
            part.strip_suffix(" CPU-s/M")
                .filter(|p| !p.starts_with("broker") && !p.starts_with("Cassandra"))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no CPU-s/M in `{latency}`"));
    assert!(cpu > 0.0, "{latency}");
    assert!(latency.contains("peak "), "{latency}");

    // Weir's own share, from the pipeline's histograms: every batch was read, acknowledged and
    // written, so each figure is above zero.
    let stages = report
        .lines()
        .find(|line| line.trim_start().starts_with("of which in weir"))
        .unwrap_or_else(|| panic!("no line of weir's own latency in {report}"));
    let figures: Vec<f64> = stages
        .split(' ')
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(figures.len(), 3, "{stages}");
    assert!(figures.iter().all(|ms| *ms > 0.0), "{stages}");
    // And the rest of a batch's way, stage by stage: every batch passed each of them, so each
    // histogram has entries and its bucketed p99 is above zero.
    let per_stage = report
        .lines()
        .find(|line| line.trim_start().starts_with("p99 per stage"))
        .unwrap_or_else(|| panic!("no line of per-stage latency in {report}"));
    for stage in ["transform_queue", "transform", "sink_queue", "in_order"] {
        let ms: f64 = per_stage
            .split(", ")
            .find_map(|part| part.trim_start().split_once(&format!("{stage} ")))
            .and_then(|(_, figure)| figure.strip_suffix(" ms")?.parse().ok())
            .unwrap_or_else(|| panic!("no {stage} in `{per_stage}`"));
        assert!(ms > 0.0, "{per_stage}");
    }
    // The node's flushes during the latency run are counted: a whole number, none negative.
    let flushes = line_after(&report, "the Cassandra node completed ")
        .unwrap_or_else(|| panic!("no line of the node's flushes in {report}"));
    assert!(
        flushes
            .split(' ')
            .next()
            .is_some_and(|n| n.parse::<u64>().is_ok()),
        "no count of flushes in `{flushes}`"
    );

    // Where a tail sits: the share of batches over 10 ms in each part of the way, each a
    // percentage. (Not compared with each other: the write's histogram leaves out batches with
    // no outputs, so the shares have different denominators.)
    let slow = report
        .lines()
        .find(|line| line.trim_start().starts_with("batches over 10 ms"))
        .unwrap_or_else(|| panic!("no line of slow batches in {report}"));
    let share_of = |part: &str| -> f64 {
        slow.split(", ")
            .find_map(|piece| piece.trim_start().rsplit_once(&format!("{part} ")))
            .and_then(|(_, figure)| figure.strip_suffix('%')?.parse().ok())
            .unwrap_or_else(|| panic!("no {part} in `{slow}`"))
    };
    for part in [
        "read to acknowledged",
        "sink write",
        "transform_queue",
        "transform",
        "sink_queue",
        "in_order",
    ] {
        let share = share_of(part);
        assert!((0.0..=100.0).contains(&share), "{part} in `{slow}`");
    }

    // The tail's shape: the records over 15 ms end to end, counted out of all the run's
    // samples, and the stalls they came in, whose records add up to that count.
    let samples: usize = latency
        .split_once(" samples)")
        .and_then(|(head, _)| head.rsplit_once('(')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no sample count in `{latency}`"));
    let p99: f64 = latency
        .split_once("p99 ")
        .and_then(|(_, rest)| rest.split_once(" ms")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no p99 in `{latency}`"));
    let tail = line_after(&report, "records over 15 ms end to end: ")
        .unwrap_or_else(|| panic!("no line of the latency tail in {report}"));
    let words: Vec<&str> = tail.split(' ').collect();
    let (slow, of, stalls): (usize, usize, usize) = match words[..] {
        [slow, "of", of, _, "in", stalls, ..] => (
            slow.parse().unwrap(),
            of.parse().unwrap(),
            stalls.parse().unwrap(),
        ),
        _ => panic!("`{tail}`"),
    };
    assert_eq!(of, samples, "`{tail}` against `{latency}`");
    assert!(slow <= of, "{tail}");
    // The p99 is the sample at rank round((n - 1) * 0.99): over 15 ms exactly when at least the
    // samples from that rank up are.
    let from_p99 = of - ((of - 1) as f64 * 0.99).round() as usize;
    assert_eq!(p99 > 15.0, slow >= from_p99, "`{tail}` against `{latency}`");
    assert_eq!(slow == 0, stalls == 0, "{tail}");
    let listed = line_after(
        &report,
        "stalls by the time their first slow record was created: ",
    );
    match listed {
        None => assert_eq!(stalls, 0, "stalls counted but not listed in {report}"),
        Some(listed) => {
            let records: Vec<usize> = listed
                .split(", ")
                .filter_map(|stall| {
                    // `at 0.1 s (07:40:12.345 UTC) 158 records up to 34 ms`
                    let words: Vec<&str> = stall.split(' ').collect();
                    let count = words.iter().position(|w| w.starts_with("record"))?;
                    words.get(count.checked_sub(1)?)?.parse().ok()
                })
                .collect();
            assert_eq!(records.len(), stalls.min(8), "`{listed}`");
            if stalls <= 8 {
                assert_eq!(records.iter().sum::<usize>(), slow, "`{listed}`");
            }
        }
    }

    // Two rounds: each pipeline with a ratio lists both rounds' ratios, and the table shows
    // their median, which for two is their mean (both rounded to two decimals).
    let by_round: Vec<(&str, Vec<f64>)> = report
        .lines()
        .skip_while(|line| !line.starts_with("ratios by round"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .map(|line| {
            let (name, ratios) = line
                .trim_start()
                .rsplit_once(": ")
                .unwrap_or_else(|| panic!("`{line}` in {report}"));
            let ratios = ratios.split(", ").map(|r| r.parse().unwrap()).collect();
            (name, ratios)
        })
        .collect();
    let listed: Vec<&str> = by_round.iter().map(|(name, _)| *name).collect();
    assert_eq!(listed, names[1..4], "{report}");
    for ((_, ratios), row) in by_round.iter().zip(&pipelines[1..]) {
        assert_eq!(ratios.len(), 2, "{report}");
        // The Cassandra pipeline's ratio is to the driver, the others' to the ceiling.
        let column = if row.name.ends_with("cassandra") {
            2
        } else {
            1
        };
        let mean = (ratios[0] + ratios[1]) / 2.0;
        assert!(
            (row.number(column) - mean).abs() <= 0.011,
            "{}: {} against the rounds' {ratios:?}: {report}",
            row.name,
            row.number(column)
        );
    }

    // Every run started on a node done flushing and compacting: 12 waits, for two rounds of
    // four pipelines and the driver, then the paced driver and the latency run; each reads the
    // node's pools idle several times in a row, so none is instant.
    let waits = report
        .lines()
        .find_map(|line| line.strip_prefix("before each of its "))
        .unwrap_or_else(|| panic!("no line of the waits for the node in {report}"));
    assert!(waits.starts_with("12 runs "), "{waits}");
    let total: f64 = waits
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total in `{waits}`"));
    assert!(total > 0.0, "{waits}");

    // Nothing the run created is left on the services or the disk.
    let created = Created::listed_in(&report, "removed what the bench created: ");
    assert_eq!(created.topics.len(), 2, "{report}");
    // Two rounds of four pipelines, and the latency run.
    assert_eq!(created.groups.len(), 9, "{report}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let brokers = kafka_brokers();
        for topic in &created.topics {
            wait_for(
                &format!("topic {topic} deleted"),
                Duration::from_secs(60),
                || !topic_exists(&brokers, topic),
            )
            .await;
        }
        for group in &created.groups {
            assert!(!group_exists(&brokers, group), "group {group} is left");
        }
        assert!(
            !keyspace_exists(&created.keyspace).await,
            "keyspace {} is left",
            created.keyspace
        );
    });
    assert!(!created.folder.exists(), "{}", created.folder.display());
}

#[test]
fn bench_pipeline_with_keep_leaves_what_it_created_for_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let (brokers, nodes) = (kafka_brokers(), cassandra_nodes());
    let report = bench_report(
        dir.path(),
        &[
            "bench",
            "pipeline",
            "--keep",
            "--brokers",
            &brokers,
            "--cassandra",
            &nodes,
            "--records",
            "300",
            "--rounds",
            "1",
            "--latency-rate",
            "200",
            "--latency-seconds",
            "1",
            "--plugins",
            plugin_registry().to_str().unwrap(),
        ],
    );
    let kept = Created::listed_in(&report, "kept for inspection (--keep): ");
    assert_eq!(kept.topics.len(), 2, "{report}");
    // One round of four pipelines, and the latency run.
    assert_eq!(kept.groups.len(), 5, "{report}");
    for topic in &kept.topics {
        assert!(topic_exists(&brokers, topic), "topic {topic} was kept");
    }
    for group in &kept.groups {
        assert!(group_exists(&brokers, group), "group {group} was kept");
    }
    assert!(kept.folder.join("dead-letters.jsonl").exists());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        assert!(keyspace_exists(&kept.keyspace).await, "{}", kept.keyspace);
        // The tables the throughput runs wrote were emptied before the latency run: the
        // driver's hold nothing, the pipeline's only the latency run's 200 rows (its 300 users
        // from the runs before are gone).
        let rows_in = |table: &'static str| row_count(&kept.keyspace, table);
        assert_eq!(rows_in("driver_users").await, 0);
        assert_eq!(rows_in("driver_users_paced").await, 0);
        assert_eq!(rows_in("created_users").await, 200);
        // Then this test removes them itself.
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let groups: Vec<&str> = kept.groups.iter().map(String::as_str).collect();
        admin
            .delete_groups(&groups, &AdminOptions::new())
            .await
            .unwrap();
        let topics: Vec<&str> = kept.topics.iter().map(String::as_str).collect();
        admin
            .delete_topics(&topics, &AdminOptions::new())
            .await
            .unwrap();
        cassandra_session()
            .await
            .query_unpaged(format!("DROP KEYSPACE {}", kept.keyspace), &[])
            .await
            .unwrap();
    });
    std::fs::remove_dir_all(&kept.folder).unwrap();
}

#[test]
fn bench_failover_measures_both_memberships_and_removes_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = kafka_brokers();
    let report = bench_report(
        dir.path(),
        &[
            "bench",
            "failover",
            "--brokers",
            &brokers,
            "--members",
            "2",
            "--partitions",
            "2",
            "--rate",
            "200",
            "--session-timeout-ms",
            "6000",
        ],
    );
    let rows: Vec<Vec<&str>> = report
        .lines()
        .skip_while(|line| !line.starts_with("membership"))
        .skip(1)
        .take(2)
        .map(|line| line.split_whitespace().collect())
        .collect();
    let memberships: Vec<&str> = rows.iter().map(|row| row[0]).collect();
    assert_eq!(memberships, ["dynamic", "static"], "{report}");
    for row in &rows {
        // The killed member's partitions were written again after it died.
        let waited: f64 = row[row.len() - 3].parse().unwrap();
        assert!(waited > 0.0, "{report}");
    }
    let removed: Vec<&str> = report
        .lines()
        .filter_map(|line| line.strip_prefix("removed what the bench created: topics "))
        .collect();
    assert_eq!(removed.len(), 2, "one topic for each run: {report}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for line in removed {
        let (topic, folder) = line
            .split_once("; folder ")
            .unwrap_or_else(|| panic!("`{line}`"));
        runtime.block_on(wait_for(
            &format!("topic {topic} deleted"),
            Duration::from_secs(60),
            || !topic_exists(&brokers, topic),
        ));
        assert!(!Path::new(folder).exists(), "{folder} is left");
    }
}

/// What `weir bench pipeline` says it created, from its last line: `PREFIX topics a, b;
/// consumer groups c, d; keyspace e; folder f`.
struct Created {
    topics: Vec<String>,
    groups: Vec<String>,
    keyspace: String,
    folder: PathBuf,
}

impl Created {
    fn listed_in(report: &str, prefix: &str) -> Created {
        let line = report
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no line starting `{prefix}` in {report}"));
        let part = |label: &str| {
            line.split("; ")
                .find_map(|part| part.strip_prefix(label))
                .unwrap_or_else(|| panic!("no `{label}` in `{line}`"))
        };
        let names = |label: &str| part(label).split(", ").map(str::to_owned).collect();
        Created {
            topics: names("topics "),
            groups: names("consumer groups "),
            keyspace: part("keyspace ").to_owned(),
            folder: PathBuf::from(part("folder ")),
        }
    }
}

/// Whether the group coordinator still knows `group` (a deleted group is unknown, or `Dead`).
fn group_exists(brokers: &str, group: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let groups = consumer
        .fetch_group_list(Some(group), Duration::from_secs(30))
        .unwrap();
    groups
        .groups()
        .iter()
        .any(|g| g.name() == group && g.state() != "Dead")
}

async fn row_count(keyspace: &str, table: &str) -> i64 {
    cassandra_session()
        .await
        .query_unpaged(format!("SELECT COUNT(*) FROM {keyspace}.{table}"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(i64,)>()
        .unwrap()
        .0
}

async fn keyspace_exists(keyspace: &str) -> bool {
    cassandra_session()
        .await
        .query_unpaged(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num()
        > 0
}
