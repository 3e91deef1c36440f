//! `/metrics` of a running weir, parsed with a Prometheus text-format parser, against the traffic
//! the test sent: records in, out and dead-lettered, and the active plugin version.

use std::path::Path;
use std::time::Duration;

use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;

use crate::pipelines::write_input;
use crate::support::plugin_registry;

fn sample(scrape: &prometheus_parse::Scrape, metric: &str, label: (&str, &str)) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_the_traffic_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = weir::generator::UserGenerator::new(11);
    let mut lines: Vec<String> = (0..48).map(|_| generator.next_user().to_string()).collect();
    lines.push("not json".into());
    lines.push("{\"also\": \"not a user\"}".into());
    let input = write_input(dir.path(), &lines);
    let file = PipelineFile::parse(
        Path::new("metrics.toml"),
        &format!(
            r#"
            [[pipeline]]
            name = "metered"
            source = {{ type = "file", path = "{input}", follow = true }}
            transforms = [{{ plugin = "user-profile" }}]
            sink = {{ type = "blackhole" }}
            dead_letter = {{ type = "file", path = "{}/dlq.jsonl" }}
            "#,
            dir.path().display()
        ),
    )
    .unwrap();
    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    options.admin = Some("127.0.0.1:0".parse().unwrap());
    let app = RunningApp::start(file, options).await.unwrap();
    let url = format!("http://{}/metrics", app.admin_addr().unwrap());
    let version = app
        .slots()
        .get("user-profile")
        .unwrap()
        .current()
        .1
        .plugin
        .version()
        .to_owned();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let scrape = loop {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        if sample(&scrape, "weir_records_in_total", ("pipeline", "metered")) == Some(50.0) {
            break scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "records_in never reached 50:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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

    app.shutdown_handle().send(true).unwrap();
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}
