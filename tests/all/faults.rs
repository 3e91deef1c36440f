//! Hostile plugins: one that panics, one that loops forever, one that allocates without bound,
//! and one that reports its own failure. Each turns only its record into a dead letter, and the
//! records after it still flow.

use crate::support::{FileRun, read_json_lines};

/// Runs 40 records through `plugin`, with record 13 (1-based line 14) carrying `trigger`.
async fn run_with_trigger(
    plugin: &str,
    trigger: &str,
    limits: &str,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let lines: Vec<String> = (0..40)
        .map(|i| {
            if i == 13 {
                format!("{{\"n\":{i},\"cmd\":\"{trigger}\"}}")
            } else {
                format!("{{\"n\":{i}}}")
            }
        })
        .collect();
    let files = FileRun::new(&lines);
    let report = files
        .run(
            "hostile",
            &format!(
                r#"transforms = [{{ plugin = "{plugin}" }}]
                batch = {{ size = 8 }}
                limits = {{ {limits} }}"#
            ),
        )
        .await;
    assert_eq!(
        (report.records_in, report.records_out, report.dead_lettered),
        (40, 39, 1)
    );
    let outputs = read_json_lines(&files.out);
    let ns: Vec<i64> = outputs.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (0..40).filter(|n| *n != 13).collect();
    assert_eq!(ns, expected, "every other record flows, in order");
    let dead = read_json_lines(&files.dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["headers"]["weir.source.offset"], "14");
    assert_eq!(dead[0]["headers"]["weir.plugin"], plugin);
    (outputs, dead)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_plugin_dead_letters_its_record_with_the_panic_message() {
    let (_, dead) = run_with_trigger("fault-panic", "panic", "deadline_ms = 2000").await;
    let headers = &dead[0]["headers"];
    assert_eq!(headers["weir.error.kind"], "trap");
    let reason = headers["weir.error"].as_str().unwrap();
    assert!(reason.contains("fault-panic was told to panic"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_reporting_its_own_failure_is_dead_lettered_as_a_plugin_failure() {
    let (_, dead) = run_with_trigger("fault-panic", "fail", "deadline_ms = 2000").await;
    let headers = &dead[0]["headers"];
    assert_eq!(headers["weir.error.kind"], "plugin-failure");
    assert_eq!(headers["weir.error"], "fault-panic was told to fail");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_interrupted_at_the_deadline() {
    let (_, dead) = run_with_trigger("fault-spin", "spin", "deadline_ms = 100").await;
    let headers = &dead[0]["headers"];
    assert_eq!(headers["weir.error.kind"], "timeout");
    let reason = headers["weir.error"].as_str().unwrap();
    assert!(reason.contains("deadline of 100 ms"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_hits_the_memory_cap() {
    let (_, dead) = run_with_trigger("fault-hog", "hog", "memory_mib = 16").await;
    let headers = &dead[0]["headers"];
    assert_eq!(headers["weir.error.kind"], "trap");
    let reason = headers["weir.error"].as_str().unwrap();
    assert!(reason.contains("memory"), "{reason}");
}
