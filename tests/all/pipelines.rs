//! Pipelines run through the library on files: bad records become dead letters with their reason
//! and source coordinates, order is preserved, and a restarted file source resumes where it was
//! acknowledged.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use weir::config::PipelineFile;
use weir::pipeline::{self, PipelineReport, PipelineStats};
use weir::registry::{Deployer, PluginRegistry, PluginSlots};

use crate::support::{plugin_registry, read_json_lines, test_runtime};

/// Parses `toml`, loads its plugins from the test registry, and runs its single pipeline.
pub async fn run_pipeline(toml: &str) -> PipelineReport {
    let file = PipelineFile::parse(Path::new("test.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    let slots = PluginSlots::default();
    let deployer = Deployer::new(
        PluginRegistry::new(plugin_registry()),
        test_runtime(),
        slots.clone(),
        &file,
    );
    for name in deployer.used_plugins() {
        deployer.deploy(name).unwrap_or_else(|e| panic!("{e}"));
    }
    let config = file.pipelines.into_iter().next().unwrap();
    let chain = pipeline::build_chain(&config, &slots).unwrap();
    let (_shutdown_tx, shutdown_rx) = watch::channel(false);
    pipeline::run(
        config,
        chain,
        Arc::new(PipelineStats::default()),
        shutdown_rx,
    )
    .await
    .unwrap()
}

/// Writes `lines` as a JSON-lines file in `dir`.
pub fn write_input(dir: &Path, lines: &[String]) -> String {
    let path = dir.join("input.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_are_dead_lettered_with_reason_and_coordinates() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = weir::generator::UserGenerator::new(9);
    let mut lines: Vec<String> = (0..50).map(|_| generator.next_user().to_string()).collect();
    lines[10] = "{not json".into();
    let mut missing = generator.next_user();
    missing["name"].as_object_mut().unwrap().remove("first");
    lines[20] = missing.to_string();
    let input = write_input(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let dlq = dir.path().join("dlq.jsonl");
    let report = run_pipeline(&format!(
        r#"
        [[pipeline]]
        name = "bad-records"
        source = {{ type = "file", path = "{input}" }}
        transforms = [{{ plugin = "user-profile" }}]
        sink = {{ type = "file", path = "{}" }}
        dead_letter = {{ type = "file", path = "{}" }}
        batch = {{ size = 16 }}
        "#,
        out.display(),
        dlq.display()
    ))
    .await;
    assert_eq!(
        (report.records_in, report.records_out, report.dead_lettered),
        (50, 48, 2)
    );

    let rows = read_json_lines(&out);
    let expected_ids: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 10 && *i != 20)
        .map(|(_, l)| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["login"]["uuid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected_ids, "outputs keep input order");

    let dead = read_json_lines(&dlq);
    assert_eq!(dead.len(), 2);
    let headers = &dead[0]["headers"];
    assert_eq!(dead[0]["value"], "{not json");
    assert_eq!(headers["weir.error.kind"], "bad-record");
    assert!(
        headers["weir.error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(headers["weir.plugin"], "user-profile");
    assert_eq!(headers["weir.plugin.version"].as_str().unwrap().len(), 12);
    assert_eq!(headers["weir.pipeline"], "bad-records");
    assert_eq!(headers["weir.source.stream"], input.as_str());
    assert_eq!(
        headers["weir.source.offset"], "11",
        "line numbers are 1-based"
    );
    assert_eq!(
        dead[1]["headers"]["weir.error"],
        "missing required field `name.first`"
    );
    assert_eq!(dead[1]["headers"]["weir.source.offset"], "21");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_filters_and_fans_out_through_several_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = weir::generator::UserGenerator::new(5);
    // Each record is a whole API response with 3 users: user-profile fans it out.
    let lines: Vec<String> = (0..20)
        .map(|_| generator.next_response(3).to_string())
        .collect();
    let females = lines
        .iter()
        .flat_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["results"]
                .as_array()
                .unwrap()
                .clone()
        })
        .filter(|u| u["gender"] == "female")
        .count();
    let input = write_input(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let report = run_pipeline(&format!(
        r#"
        [[pipeline]]
        name = "chain"
        source = {{ type = "file", path = "{input}" }}
        transforms = [
            {{ plugin = "user-profile" }},
            {{ plugin = "filter", config = {{ field = "gender", equals = "female" }} }},
            {{ plugin = "pii-mask", config = {{ fields = "email", mode = "redact" }} }},
        ]
        sink = {{ type = "file", path = "{}" }}
        dead_letter = {{ type = "file", path = "{}/dlq.jsonl" }}
        "#,
        out.display(),
        dir.path().display()
    ))
    .await;
    assert_eq!(report.records_in, 20);
    assert_eq!(report.records_out, females as u64);
    let rows = read_json_lines(&out);
    assert_eq!(rows.len(), females);
    assert!(
        rows.iter()
            .all(|r| r["gender"] == "female" && r["email"] == "***")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_file_source_resumes_after_the_acknowledged_line() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..30).map(|i| format!("{{\"n\":{i}}}")).collect();
    let input = write_input(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let toml = format!(
        r#"
        [[pipeline]]
        name = "resume"
        source = {{ type = "file", path = "{input}", checkpoint = "{0}/input.offset" }}
        sink = {{ type = "file", path = "{1}" }}
        dead_letter = {{ type = "file", path = "{0}/dlq.jsonl" }}
        batch = {{ size = 7 }}
        "#,
        dir.path().display(),
        out.display()
    );
    let first = run_pipeline(&toml).await;
    assert_eq!(first.records_out, 30);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("input.offset")).unwrap(),
        "30"
    );
    let more: Vec<String> = (30..40).map(|i| format!("{{\"n\":{i}}}")).collect();
    let mut all = lines.clone();
    all.extend(more);
    write_input(dir.path(), &all);
    let second = run_pipeline(&toml).await;
    assert_eq!(second.records_in, 10, "only the new lines are read again");
    let ns: Vec<i64> = read_json_lines(&out)
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..40).collect::<Vec<_>>());
}
