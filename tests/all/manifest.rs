//! Plugin manifests end to end through `weir`: a `NAME.toml` beside `NAME.wasm` supplies config
//! defaults under the pipeline's own entries, and a capability it asks for is refused until the
//! pipeline allows it; then, and only then, the plugin sees the real clock.

use std::path::Path;

use crate::support::{plugin_registry, read_json_lines, run_weir};

/// A registry folder in `dir` holding copies of built plugins under the given names.
fn registry_with(dir: &Path, plugins: &[(&str, &str)]) -> String {
    let registry = dir.join("registry");
    std::fs::create_dir_all(&registry).unwrap();
    for (built, name) in plugins {
        std::fs::copy(
            plugin_registry().join(format!("{built}.wasm")),
            registry.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    registry.to_str().unwrap().to_owned()
}

#[test]
fn manifest_defaults_and_granted_capabilities_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with(
        dir.path(),
        &[
            ("pii-mask", "pii-mask"),
            ("fault-escape", "clocked"),
            ("fault-escape", "frozen"),
        ],
    );
    let registry_path = Path::new(&registry);
    // pii-mask requires `fields`: here only the manifest gives it.
    std::fs::write(
        registry_path.join("pii-mask.toml"),
        "version = \"2.0.0\"\ndescription = \"Masks fields.\"\n[config]\nfields = \"email\"\nmode = \"redact\"\nreplacement = \"hidden\"\n",
    )
    .unwrap();
    std::fs::write(
        registry_path.join("clocked.toml"),
        "capabilities = [\"clock\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("users.jsonl"),
        "{\"email\":\"ada@example.org\",\"name\":\"Ada\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("clock.jsonl"), "\"clock\"\n").unwrap();
    let pipeline = |name: &str, input: &str, transform: &str| {
        format!(
            "[[pipeline]]\nname = \"{name}\"\nsource = {{ type = \"file\", path = \"{input}\" }}\ntransforms = [{transform}]\nsink = {{ type = \"file\", path = \"{name}.jsonl\" }}\ndead_letter = {{ type = \"file\", path = \"{name}-dlq.jsonl\" }}\n\n"
        )
    };
    let config = [
        pipeline("masked", "users.jsonl", "{ plugin = \"pii-mask\" }"),
        pipeline(
            "clocked",
            "clock.jsonl",
            "{ plugin = \"clocked\", allow = [\"clock\"] }",
        ),
        pipeline("frozen", "clock.jsonl", "{ plugin = \"frozen\" }"),
    ]
    .concat();
    std::fs::write(dir.path().join("p.toml"), config).unwrap();
    let output = run_weir(
        dir.path(),
        &[
            "run",
            "p.toml",
            "--plugins",
            &registry,
            "--no-admin",
            "--no-watch",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let masked = read_json_lines(&dir.path().join("masked.jsonl"));
    assert_eq!(
        masked,
        vec![serde_json::json!({"email": "hidden", "name": "Ada"})]
    );
    let clocked = read_json_lines(&dir.path().join("clocked.jsonl"));
    let seconds = clocked[0]["clock"].as_u64().unwrap();
    assert!(
        seconds > 1_700_000_000,
        "a granted clock is the real one: {seconds}"
    );
    let frozen = read_json_lines(&dir.path().join("frozen.jsonl"));
    assert_eq!(
        frozen,
        vec![serde_json::json!({"clock": 0})],
        "without the capability the clock stands at the epoch"
    );
}

#[test]
fn a_capability_the_pipeline_does_not_allow_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with(dir.path(), &[("fault-escape", "clocked")]);
    std::fs::write(
        Path::new(&registry).join("clocked.toml"),
        "capabilities = [\"clock\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[[pipeline]]\nname = \"p\"\nsource = { type = \"generate\", count = 1 }\ntransforms = [{ plugin = \"clocked\" }]\nsink = { type = \"blackhole\" }\ndead_letter = { type = \"file\", path = \"dlq.jsonl\" }\n",
    )
    .unwrap();
    for command in ["validate", "run"] {
        let mut args = vec![command, "p.toml", "--plugins", &registry];
        if command == "run" {
            args.extend(["--no-admin", "--no-watch"]);
        }
        let output = run_weir(dir.path(), &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command} must refuse: {stderr}");
        assert!(
            stderr.contains("asks for the `clock` capability"),
            "{command} names the capability as the manifest does: {stderr}"
        );
        assert!(
            stderr.contains("allow = [\"clock\"]"),
            "{command} says how to grant it: {stderr}"
        );
    }
}
