//! The quickstart pipeline end to end through the real binary: every output row is checked field
//! by field against the design's mapping, computed here independently of the plugin.

use serde_json::Value;
use sha2::{Digest, Sha256};
use weir::generator::UserGenerator;

use crate::support::{plugin_registry, read_json_lines, repo_root, run_weir};

/// The salt examples/quickstart.toml gives pii-mask.
const SALT: &str = "weir-quickstart";

fn masked(value: &str) -> String {
    hex::encode(Sha256::digest(format!("{SALT}{value}")))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn quickstart_maps_every_user_field_by_field() {
    let registry = plugin_registry();
    let work = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/quickstart.toml");
    let output = run_weir(
        work.path(),
        &[
            "run",
            config.to_str().unwrap(),
            "--plugins",
            registry.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
            "--no-watch",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "weir run failed:\n{stderr}");
    // The summary, on stderr with the logs.
    assert!(stderr.contains("records in              10000"), "{stderr}");
    assert!(stderr.contains("dead-lettered               0"), "{stderr}");
    assert!(stderr.contains("records/s"), "{stderr}");

    let rows = read_json_lines(&work.path().join("out/quickstart/created_users.jsonl"));
    assert_eq!(rows.len(), 10_000);
    let mut generator = UserGenerator::new(42);
    for (index, row) in rows.iter().enumerate() {
        let user = generator.next_user();
        let location = &user["location"];
        let expected = serde_json::json!({
            "id": user["login"]["uuid"],
            "first_name": user["name"]["first"],
            "last_name": user["name"]["last"],
            "gender": user["gender"],
            "address": format!(
                "{} {}, {}, {}, {}",
                text(&location["street"]["number"]),
                text(&location["street"]["name"]),
                text(&location["city"]),
                text(&location["state"]),
                text(&location["country"])
            ),
            "post_code": text(&location["postcode"]),
            "email": masked(user["email"].as_str().unwrap()),
            "username": user["login"]["username"],
            "dob": user["dob"]["date"],
            "registered_date": user["registered"]["date"],
            "phone": masked(user["phone"].as_str().unwrap()),
            "picture": user["picture"]["medium"],
        });
        assert_eq!(row, &expected, "row {index} differs");
    }
    let dead_letters =
        std::fs::read_to_string(work.path().join("out/quickstart/dead_letter.jsonl")).unwrap();
    assert!(dead_letters.is_empty(), "{dead_letters}");
}

#[test]
fn a_stdout_sink_writes_only_records_to_stdout() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("p.toml"),
        r#"
        [[pipeline]]
        name = "to-stdout"
        source = { type = "generate", count = 25, seed = 8 }
        transforms = [{ plugin = "user-profile" }]
        sink = { type = "stdout" }
        dead_letter = { type = "file", path = "dlq.jsonl" }
        "#,
    )
    .unwrap();
    let output = run_weir(
        work.path(),
        &[
            "run",
            "p.toml",
            "--plugins",
            plugin_registry().to_str().unwrap(),
            "--no-admin",
            "--no-watch",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "weir run failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut generator = UserGenerator::new(8);
    let rows: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(rows.len(), 25, "{stdout}");
    for row in rows {
        assert_eq!(row["id"], generator.next_user()["login"]["uuid"]);
    }
    assert!(stderr.contains("records out                25"), "{stderr}");
}
