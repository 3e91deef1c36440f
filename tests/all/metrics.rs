//! `/metrics` of a running weir, parsed with a Prometheus text-format parser, against the traffic
//! the test sent: records in, out and dead-lettered per pipeline and per plugin, latency
//! histograms, queue depths, sink retries and the active plugin version.

use std::path::Path;
use std::time::Duration;

use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;

use crate::support::{plugin_registry, write_input};

fn sample(scrape: &prometheus_parse::Scrape, metric: &str, label: (&str, &str)) -> Option<f64> {
    sample_with(scrape, metric, &[label])
}

/// The value of the series of `metric` whose labels include all of `labels`.
pub fn sample_with(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    series(scrape, metric, labels).and_then(|s| match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => Some(v),
        _ => None,
    })
}

fn series<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Sample> {
    scrape.samples.iter().find(|s| {
        s.metric == metric
            && labels
                .iter()
                .all(|(name, value)| s.labels.get(name) == Some(*value))
    })
}

/// The `(upper bound, cumulative count)` buckets of histogram `metric`.
fn buckets(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Vec<(f64, f64)> {
    match series(scrape, metric, labels).map(|s| &s.value) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            buckets.iter().map(|b| (b.less_than, b.count)).collect()
        }
        other => panic!("{metric} {labels:?} is not a histogram: {other:?}"),
    }
}

/// Runs `file`'s pipelines from the test registry, unwatched, with the admin API on a free
/// loopback port; the app and its `/metrics` URL.
async fn start_with_admin(file: PipelineFile) -> (RunningApp, String) {
    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    options.admin = Some("127.0.0.1:0".parse().unwrap());
    let app = RunningApp::start(file, options).await.unwrap();
    let url = format!("http://{}/metrics", app.admin_addr().unwrap());
    (app, url)
}

/// Scrapes `url` until `done` holds of a scrape, for at most a minute; that scrape.
async fn scrape_until(
    url: &str,
    what: &str,
    done: impl Fn(&prometheus_parse::Scrape) -> bool,
) -> prometheus_parse::Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        let scrape = parse(&text);
        if done(&scrape) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited a minute for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses a scrape.
pub fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_the_traffic_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = weir::generator::UserGenerator::new(11);
    let mut lines: Vec<String> = (0..48).map(|_| generator.next_user().to_string()).collect();
    lines.push("not json".into());
    lines.push("{\"also\": \"not a user\"}".into());
    let input = write_input(dir.path(), &lines);
    let faulty_dir = dir.path().join("faulty");
    std::fs::create_dir(&faulty_dir).unwrap();
    let faulty_lines: Vec<String> = (0..10)
        .map(|n| match n {
            3 | 7 => format!("{{\"n\":{n},\"cmd\":\"fail\"}}"),
            _ => format!("{{\"n\":{n}}}"),
        })
        .collect();
    let faulty_input = write_input(&faulty_dir, &faulty_lines);
    let file = PipelineFile::parse(
        Path::new("metrics.toml"),
        &format!(
            r#"
            [[pipeline]]
            name = "metered"
            source = {{ type = "file", path = "{input}", follow = true }}
            transforms = [{{ plugin = "user-profile" }}]
            sink = {{ type = "blackhole" }}
            dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}

            [[pipeline]]
            name = "faulty"
            source = {{ type = "file", path = "{faulty_input}", follow = true }}
            transforms = [{{ plugin = "fault-panic" }}]
            sink = {{ type = "blackhole" }}
            dead_letter = {{ type = "file", path = "{dir}/faulty-dlq.jsonl" }}
            "#,
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let (app, url) = start_with_admin(file).await;
    let version = app
        .slots()
        .get("user-profile")
        .unwrap()
        .current()
        .1
        .plugin
        .version()
        .to_owned();

    let scrape = scrape_until(&url, "records_in to reach 50 and 10", |scrape| {
        sample(scrape, "weir_records_in_total", ("pipeline", "metered")) == Some(50.0)
            && sample(scrape, "weir_records_in_total", ("pipeline", "faulty")) == Some(10.0)
    })
    .await;
    assert_eq!(
        sample(&scrape, "weir_records_out_total", ("pipeline", "metered")),
        Some(48.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "weir_records_dead_lettered_total",
            ("pipeline", "metered")
        ),
        Some(2.0)
    );
    let info = scrape
        .samples
        .iter()
        .find(|s| s.metric == "weir_plugin_info" && s.labels.get("plugin") == Some("user-profile"))
        .unwrap();
    assert_eq!(info.labels.get("version"), Some(version.as_str()));

    // Per plugin: the file source passes every line on, so user-profile saw all 50 and failed
    // the two that are not users.
    let step = [("pipeline", "metered"), ("plugin", "user-profile")];
    assert_eq!(
        sample_with(&scrape, "weir_plugin_records_in_total", &step),
        Some(50.0)
    );
    assert_eq!(
        sample_with(&scrape, "weir_plugin_records_out_total", &step),
        Some(48.0)
    );
    assert_eq!(
        sample_with(&scrape, "weir_plugin_records_dead_lettered_total", &step),
        Some(2.0)
    );

    // Latency histograms: one batch latency per acknowledged batch, one call per batch that
    // reached the plugin, and buckets that only grow.
    let batches = sample(&scrape, "weir_batches_total", ("pipeline", "metered")).unwrap();
    assert!(batches >= 1.0);
    let batch_buckets = buckets(
        &scrape,
        "weir_batch_duration_seconds",
        &[("pipeline", "metered")],
    );
    assert_eq!(batch_buckets.last(), Some(&(f64::INFINITY, batches)));
    // Each acknowledged batch also waited, if only an instant, in every other stage of its way.
    for stage in ["transform_queue", "transform", "sink_queue", "in_order"] {
        let stage_buckets = buckets(
            &scrape,
            "weir_batch_stage_seconds",
            &[("pipeline", "metered"), ("stage", stage)],
        );
        assert_eq!(
            stage_buckets.last(),
            Some(&(f64::INFINITY, batches)),
            "{stage}"
        );
    }
    let call_buckets = buckets(&scrape, "weir_plugin_call_duration_seconds", &step);
    let calls = call_buckets.last().unwrap().1;
    assert!(
        calls >= 1.0 && calls <= batches,
        "{calls} calls for {batches} batches"
    );
    // The plugin's CPU time: some was spent, and no more than the calls' own time, which holds it.
    let cpu = sample_with(&scrape, "weir_plugin_cpu_seconds_total", &step).unwrap();
    let call_seconds =
        sample_with(&scrape, "weir_plugin_call_duration_seconds_sum", &step).unwrap();
    assert!(
        cpu > 0.0 && cpu <= call_seconds + 1e-9,
        "{cpu} CPU-s in calls that took {call_seconds} s"
    );
    for histogram in [&batch_buckets, &call_buckets] {
        assert!(
            histogram.windows(2).all(|w| w[0].1 <= w[1].1),
            "{histogram:?}"
        );
    }

    // A plugin's own counter, added through the host interface on each failure it reports.
    assert_eq!(
        sample_with(
            &scrape,
            "weir_plugin_counter_total",
            &[("plugin", "fault-panic"), ("name", "failed_on_request")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample_with(
            &scrape,
            "weir_plugin_records_dead_lettered_total",
            &[("pipeline", "faulty"), ("plugin", "fault-panic")]
        ),
        Some(2.0)
    );

    // Idle now: nothing queued, nothing retried.
    for queue in ["transform", "sink"] {
        assert_eq!(
            sample_with(
                &scrape,
                "weir_queue_depth_batches",
                &[("pipeline", "metered"), ("queue", queue)]
            ),
            Some(0.0),
            "{queue} queue"
        );
    }
    assert!(
        sample(
            &scrape,
            "weir_queue_capacity_batches",
            ("pipeline", "metered")
        )
        .unwrap()
            > 0.0
    );
    for destination in ["sink", "dead_letter"] {
        assert_eq!(
            sample_with(
                &scrape,
                "weir_sink_retries_total",
                &[("pipeline", "metered"), ("destination", destination)]
            ),
            Some(0.0)
        );
    }

    app.shutdown_handle().send(true).unwrap();
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}

/// Every series of `metric` in `text`, by its labels.
fn counters_of(text: &str, metric: &str) -> std::collections::BTreeMap<String, f64> {
    parse(text)
        .samples
        .into_iter()
        .filter(|s| s.metric == metric)
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => {
                let mut labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                labels.sort();
                Some((labels.join(","), v))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_counters_never_go_back_across_a_swap_and_a_rollback() {
    use std::io::Write;

    use crate::hot_swap::{component, variant};
    use crate::support::wait_for;
    use crate::swappable::{SwappablePipeline, drop_in};

    const PLUGIN: &str = "fault-panic";
    let bytes = component(PLUGIN);
    let harness = SwappablePipeline::start(PLUGIN, &variant(&bytes, "1")).await;
    let scrape = || weir::metrics::render(&Default::default(), &harness.slots);
    let dead_letters = harness.input.with_file_name("dlq.jsonl");
    // Each `fail` record adds one to the plugin's counter, then goes to the dead letters.
    let fail = |records: usize, total: usize| {
        let mut input = std::fs::OpenOptions::new()
            .append(true)
            .open(&harness.input)
            .unwrap();
        for _ in 0..records {
            writeln!(input, "{{\"x\":\"fail\"}}").unwrap();
        }
        let dead_letters = dead_letters.clone();
        async move {
            wait_for(
                &format!("{total} dead letters"),
                Duration::from_secs(120),
                move || {
                    std::fs::read_to_string(&dead_letters)
                        .is_ok_and(|text| text.lines().count() >= total)
                },
            )
            .await
        }
    };
    let counted = |text: &str, version: &str| {
        sample_with(
            &parse(text),
            "weir_plugin_counter_total",
            &[
                ("plugin", PLUGIN),
                ("version", version),
                ("name", "failed_on_request"),
            ],
        )
    };
    let mut scrapes = Vec::new();

    let v1 = harness.current_version();
    fail(3, 3).await;
    scrapes.push(scrape());

    drop_in(
        &harness.registry,
        &format!("{PLUGIN}.wasm"),
        &variant(&bytes, "2"),
    );
    wait_for("the swap to v2", Duration::from_secs(120), || {
        harness.current_version() != v1
    })
    .await;
    let v2 = harness.current_version();
    fail(1, 4).await;
    scrapes.push(scrape());

    harness.slots.rollback(PLUGIN).unwrap();
    assert_eq!(harness.current_version(), v1);
    scrapes.push(scrape());
    fail(1, 5).await;
    scrapes.push(scrape());

    // No series of the plugin's own counters or of its dropped calls ever went back.
    for metric in [
        "weir_plugin_counter_total",
        "weir_plugin_host_calls_dropped_total",
    ] {
        let mut highest = std::collections::BTreeMap::new();
        for text in &scrapes {
            for (labels, value) in counters_of(text, metric) {
                let before = highest.insert(labels.clone(), value).unwrap_or(0.0);
                assert!(
                    value >= before,
                    "{metric}{{{labels}}} went back from {before} to {value}:\n{scrapes:#?}"
                );
            }
        }
    }
    // Each version counts what it did, and v1 counts on after the rollback.
    assert_eq!(counted(&scrapes[0], &v1), Some(3.0));
    assert_eq!(counted(&scrapes[1], &v2), Some(1.0));
    assert_eq!(counted(&scrapes[2], &v1), Some(3.0));
    assert_eq!(counted(&scrapes[3], &v1), Some(4.0));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_used_twice_in_a_chain_is_counted_once_per_step() {
    let dir = tempfile::tempdir().unwrap();
    // Six records with an email, three of them with a phone: the first filter keeps six, the
    // second three.
    let lines: Vec<String> = (0..9)
        .map(|n| match n % 3 {
            0 => format!("{{\"n\":{n},\"email\":\"e\",\"phone\":\"p\"}}"),
            1 => format!("{{\"n\":{n},\"email\":\"e\"}}"),
            _ => format!("{{\"n\":{n}}}"),
        })
        .collect();
    let input = write_input(dir.path(), &lines);
    let file = PipelineFile::parse(
        Path::new("twice.toml"),
        &format!(
            r#"
            [[pipeline]]
            name = "twice"
            source = {{ type = "file", path = "{input}", follow = true }}
            transforms = [
                {{ plugin = "filter", config = {{ field = "email", exists = true }} }},
                {{ plugin = "filter", config = {{ field = "phone", exists = true }} }},
            ]
            sink = {{ type = "blackhole" }}
            dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
            "#,
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let (app, url) = start_with_admin(file).await;
    let step = |scrape: &prometheus_parse::Scrape, metric: &str, plugin: &str| {
        sample_with(scrape, metric, &[("pipeline", "twice"), ("plugin", plugin)])
    };
    let scrape = scrape_until(&url, "records_out to reach 3", |scrape| {
        sample(scrape, "weir_records_out_total", ("pipeline", "twice")) == Some(3.0)
    })
    .await;
    assert_eq!(
        step(&scrape, "weir_plugin_records_in_total", "filter"),
        Some(9.0)
    );
    assert_eq!(
        step(&scrape, "weir_plugin_records_out_total", "filter"),
        Some(6.0)
    );
    assert_eq!(
        step(&scrape, "weir_plugin_records_in_total", "filter#2"),
        Some(6.0)
    );
    assert_eq!(
        step(&scrape, "weir_plugin_records_out_total", "filter#2"),
        Some(3.0)
    );
    app.shutdown_handle().send_replace(true);
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}
