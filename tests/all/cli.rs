//! The command line as users meet it: help text, validation errors, plugin listing.

use crate::support::{plugin_registry, repo_root, run_weir};

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["validate", "--help"],
        vec!["plugin", "--help"],
        vec!["plugin", "build", "--help"],
        vec!["plugin", "list", "--help"],
        vec!["plugin", "rollback", "--help"],
        vec!["plugin", "prune", "--help"],
        vec!["tap", "--help"],
        vec!["bench", "--help"],
        vec!["bench", "plugin", "--help"],
        vec!["bench", "swap", "--help"],
        vec!["bench", "pipeline", "--help"],
    ] {
        let output = run_weir(dir.path(), &args);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}");
        assert!(help.contains("Usage:"), "{args:?}: {help}");
    }
    let run = String::from_utf8_lossy(&run_weir(dir.path(), &["run", "--help"]).stdout).to_string();
    for documented in [
        "--plugins <DIR>",
        "plugin registry folder",
        "--admin <ADDR>",
        "--no-watch",
        "--rollback-threshold",
    ] {
        assert!(
            run.contains(documented),
            "run --help lacks {documented}: {run}"
        );
    }
    let top = String::from_utf8_lossy(&run_weir(dir.path(), &["--help"]).stdout).to_string();
    for command in ["run", "validate", "tap", "plugin", "bench"] {
        assert!(top.contains(command), "{top}");
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_structured_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"n\":1}\n{\"cmd\":\"fail\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[[pipeline]]\nname = \"logged\"\nsource = { type = \"generate\", count = 10, seed = 1 }\nsink = { type = \"blackhole\" }\ndead_letter = { type = \"stdout\" }\n\n[[pipeline]]\nname = \"plugin-logs\"\nsource = { type = \"file\", path = \"in.jsonl\" }\ntransforms = [{ plugin = \"fault-panic\" }]\nsink = { type = \"blackhole\" }\ndead_letter = { type = \"file\", path = \"dlq.jsonl\" }\n",
    )
    .unwrap();
    let registry = plugin_registry().to_str().unwrap().to_owned();
    let output = run_weir(
        dir.path(),
        &[
            "--log-format",
            "json",
            "run",
            "p.toml",
            "--no-admin",
            "--no-watch",
            "--plugins",
            &registry,
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let finished = lines
        .iter()
        .find(|line| line["message"] == "Pipeline finished." && line["pipeline"] == "logged")
        .unwrap_or_else(|| panic!("no `Pipeline finished.` line in {stderr}"));
    assert_eq!(finished["level"], "INFO");
    assert_eq!(finished["records_in"], 10);
    assert!(finished["timestamp"].is_string());
    // A plugin's log line, written through the host interface, names the plugin and version.
    let from_plugin = lines
        .iter()
        .find(|line| line["message"] == "fault-panic fails a record on request")
        .unwrap_or_else(|| panic!("no log line from the plugin in {stderr}"));
    assert_eq!(from_plugin["level"], "WARN");
    assert_eq!(from_plugin["plugin"], "fault-panic");
    assert!(from_plugin["version"].is_string());
}

/// `weir validate` of the quickstart file against the test plugins, with `extra` arguments.
fn validate_the_quickstart(extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/quickstart.toml");
    let plugins = plugin_registry().to_str().unwrap().to_owned();
    let mut args = vec!["validate", config.to_str().unwrap(), "--plugins", &plugins];
    args.extend_from_slice(extra);
    run_weir(dir.path(), &args)
}

#[test]
fn validate_accepts_the_quickstart() {
    let output = validate_the_quickstart(&[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ok") && stdout.contains("pii-mask@"),
        "{stdout}"
    );
}

/// `weir run`'s component limits, so that what run is told to accept validate does not refuse.
#[test]
fn validate_takes_the_component_limits_run_takes() {
    let output = validate_the_quickstart(&[
        "--max-core-instances",
        "64",
        "--max-memories",
        "8",
        "--max-tables",
        "16",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn validate_names_the_file_and_key_of_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "[[pipeline]]\nname = \"x\"\nsource = { type = \"generate\", rate = 0.0 }\nsink = { type = \"stdout\" }\ndead_letter = { type = \"stdout\" }\n",
    )
    .unwrap();
    let output = run_weir(dir.path(), &["validate", "broken.toml"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.toml") && stderr.contains("pipeline[0].source.rate"),
        "{stderr}"
    );
}

/// A command whose reader is gone before it prints (`weir validate p.toml | true`) ends quietly
/// with status 0, as `weir tap` does, rather than with `println!`'s panic and status 101.
#[test]
fn a_command_whose_stdout_reader_is_gone_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[[pipeline]]\nname = \"x\"\nsource = { type = \"generate\" }\nsink = { type = \"stdout\" }\ndead_letter = { type = \"stdout\" }\n",
    )
    .unwrap();
    let mut child = crate::support::weir()
        .current_dir(dir.path())
        .args(["validate", "p.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The only reader of the pipe closes it before weir writes a byte.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn validate_reports_a_plugin_rejecting_its_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[[pipeline]]\nname = \"x\"\nsource = { type = \"generate\" }\ntransforms = [{ plugin = \"pii-mask\", config = { mode = \"hash\" } }]\nsink = { type = \"stdout\" }\ndead_letter = { type = \"stdout\" }\n",
    )
    .unwrap();
    let output = run_weir(
        dir.path(),
        &[
            "validate",
            "p.toml",
            "--plugins",
            plugin_registry().to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pii-mask") && stderr.contains("fields"),
        "{stderr}"
    );
}

#[test]
fn plugin_list_shows_the_built_plugins() {
    let dir = tempfile::tempdir().unwrap();
    // An admin address where no weir runs, so the list comes from the folder whatever else
    // runs on this machine.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let output = run_weir(
        dir.path(),
        &[
            "plugin",
            "list",
            "--admin",
            &nobody,
            "--plugins",
            plugin_registry().to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for name in ["user-profile", "pii-mask", "filter", "fault-panic"] {
        assert!(stdout.contains(name), "{stdout}");
    }
}

#[test]
fn bench_plugin_compares_wasm_with_native_for_each_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let registry = plugin_registry().to_str().unwrap().to_owned();
    let output = run_weir(
        dir.path(),
        &[
            "bench",
            "plugin",
            "--records",
            "64",
            "--seconds",
            "0.05",
            "--plugins",
            &registry,
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for batch in ["1", "64", "1024"] {
        let row: Vec<f64> = stdout
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|columns| columns.len() == 5 && columns[0] == batch)
            .unwrap_or_else(|| panic!("no row for batch {batch} in:\n{stdout}"))
            .iter()
            .flat_map(|column| column.split('-'))
            .map(|column| column.parse().unwrap())
            .collect();
        let (native, wasm, ratio, lowest, highest) = (row[1], row[2], row[3], row[4], row[5]);
        assert!(native > 0.0 && wasm > 0.0, "{stdout}");
        // The ratio is the median round's, so it lies within the rounds' range (two decimals).
        assert!(
            0.0 < lowest && lowest <= ratio && ratio <= highest,
            "{stdout}"
        );
    }
    // And what the epoch deadlines cost, measured against the same component without them.
    assert!(
        stdout.contains("epoch deadlines at batch 1024: ") && stdout.contains(" without: cost "),
        "{stdout}"
    );
}

#[test]
fn a_busy_admin_address_stops_weir_run_before_any_record_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    std::fs::write(
        dir.path().join("p.toml"),
        "[[pipeline]]\nname = \"p\"\nsource = { type = \"generate\", count = 100 }\nsink = { type = \"file\", path = \"out.jsonl\" }\ndead_letter = { type = \"file\", path = \"dlq.jsonl\" }\n",
    )
    .unwrap();
    let output = run_weir(
        dir.path(),
        &[
            "run",
            "p.toml",
            "--admin",
            &addr,
            "--no-watch",
            "--plugins",
            plugin_registry().to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&addr),
        "the error names the address: {stderr}"
    );
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default();
    assert!(
        written.is_empty(),
        "records flowed before the failure: {written}"
    );
}

#[test]
fn publish_refuses_a_manifest_that_is_not_a_regular_file_without_waiting_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("filter.wasm");
    std::fs::copy(plugin_registry().join("filter.wasm"), &component).unwrap();
    // A FIFO no one writes to: reading it would wait forever.
    let fifo = dir.path().join("manifest.toml");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path has no memory-safety preconditions.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let mut child = crate::support::weir()
        .current_dir(dir.path())
        .args(["plugin", "publish"])
        .arg(&component)
        .arg("--manifest")
        .arg(&fifo)
        // Refused before any broker is asked: none needs to listen there.
        .args(["--registry", "kafka://127.0.0.1:9/weir-registry"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the weir binary runs");
    // A generous guard against a hang; the refusal comes at once.
    let Some(status) = crate::support::exit_within(&mut child, std::time::Duration::from_secs(120))
    else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("weir plugin publish blocked reading the FIFO given as --manifest");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("manifest.toml") && stderr.contains("not a regular file"),
        "{stderr}"
    );
}
