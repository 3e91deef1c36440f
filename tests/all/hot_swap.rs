//! Hot deployment from the watched folder: swaps under load lose and duplicate nothing and
//! happen only between batches; bad files are rejected while the running version keeps running;
//! rollback works from the CLI and automatically; restarts reuse compiled code.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;
use weir::config::TransformConfig;
use weir::pipeline::{ChainStep, FailedAt, TransformChain};
use weir::record::{Record, SourcePosition};
use weir::registry::{Deployer, PluginRegistry, PluginSlots, PluginVersion, RollbackPolicy};
use weir::runtime::{CacheOutcome, CompiledCache, LoadedPlugin, PluginLimits, PluginRuntime};

use crate::support::{
    append_numbered, plugin_registry, read_json_lines, run_weir, test_runtime, wait_for,
};
use crate::swappable::{SwappablePipeline, drop_in};

const VERSION_HEADER: &str = "weir.version.swap";

/// The same component with a custom section appended: a distinct version (hash) of the same code.
pub(crate) fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"weir-test-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    assert!(payload.len() < 128, "one-byte LEB128 size");
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

pub(crate) fn component(name: &str) -> Vec<u8> {
    std::fs::read(plugin_registry().join(format!("{name}.wasm"))).unwrap()
}

fn version_of(record: &Record) -> String {
    let versions: Vec<&weir::record::Header> = record
        .headers
        .iter()
        .filter(|h| h.key == VERSION_HEADER)
        .collect();
    assert_eq!(versions.len(), 1, "exactly one version header per output");
    String::from_utf8(versions[0].value.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_swaps_under_load_lose_and_duplicate_nothing() {
    const CHUNK: u64 = 2_000;
    const SWAPS: u64 = 50;
    let base = component("fault-panic");
    let variants = [variant(&base, "a"), variant(&base, "b")];
    let versions: Vec<String> = variants
        .iter()
        .map(|bytes| {
            LoadedPlugin::from_bytes(&test_runtime(), "swap", bytes)
                .unwrap()
                .version()
                .to_owned()
        })
        .collect();
    let harness = SwappablePipeline::start("swap", &variants[0]).await;
    for swap in 0..SWAPS {
        let (start, middle, end) = (swap * CHUNK, swap * CHUNK + CHUNK / 2, (swap + 1) * CHUNK);
        // Swap while the first half of the chunk flows; the second half is written only once
        // the new version is active, so every swap shows in the output.
        append_numbered(&harness.input, start..middle);
        let next = &variants[((swap + 1) % 2) as usize];
        drop_in(&harness.registry, "swap.wasm", next);
        let slot = harness.slots.get("swap").unwrap();
        wait_for("the swap to activate", Duration::from_secs(60), move || {
            slot.generation() == swap + 1
        })
        .await;
        append_numbered(&harness.input, middle..end);
        harness.wait_for_output(end as usize).await;
    }
    let batches = harness.stop().await;

    let mut seen = vec![0u32; (SWAPS * CHUNK) as usize];
    let mut transitions = 0;
    let mut previous_version: Option<String> = None;
    for batch in &batches {
        let batch_versions: std::collections::BTreeSet<String> =
            batch.iter().map(version_of).collect();
        assert_eq!(
            batch_versions.len(),
            1,
            "a batch never mixes versions: {batch_versions:?}"
        );
        let version = batch_versions.into_iter().next().unwrap();
        assert!(
            versions.contains(&version),
            "{version} is one of the deployed versions"
        );
        if previous_version.as_ref().is_some_and(|v| *v != version) {
            transitions += 1;
        }
        previous_version = Some(version);
        for record in batch {
            let value: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
            seen[value["n"].as_u64().unwrap() as usize] += 1;
        }
    }
    let wrong: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 1)
        .map(|(n, _)| n)
        .collect();
    assert!(
        wrong.is_empty(),
        "records lost or duplicated: {:?}",
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(
        transitions, SWAPS,
        "each swap changes the version of the output exactly once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_are_rejected_and_the_running_version_keeps_running() {
    let good = variant(&component("fault-panic"), "good");
    let harness = SwappablePipeline::start("swap", &good).await;
    let running = harness.current_version();
    let mut truncated = component("user-profile");
    truncated.truncate(truncated.len() / 2);
    let cases: [(&str, Vec<u8>, &str); 7] = [
        (
            "garbage bytes",
            b"this is not wasm at all".to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "a core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "an empty component (missing exports)",
            b"\0asm\x0d\0\x01\0".to_vec(),
            "does not implement the world",
        ),
        (
            "a component that exports init but not transform",
            component("fault-missing-export"),
            "no export `transform` found",
        ),
        (
            "a component built for another version of the world",
            component("fault-wrong-version"),
            "built for weir:plugin@0.2.0; this host supports weir:plugin@0.1.1",
        ),
        (
            "a truncated component",
            truncated,
            "not a valid WebAssembly component",
        ),
        // pii-mask's init refuses a config without `fields`.
        (
            "a plugin whose init fails",
            component("pii-mask"),
            "rejected its config",
        ),
    ];
    let mut flowed = 0u64;
    for (index, (case, bytes, expected)) in cases.into_iter().enumerate() {
        drop_in(&harness.registry, "swap.wasm", &bytes);
        let slots = harness.slots.clone();
        let count = index as u64 + 1;
        wait_for(
            &format!("{case} to be rejected"),
            Duration::from_secs(60),
            move || {
                slots
                    .last_rejection("swap")
                    .is_some_and(|r| r.count == count)
            },
        )
        .await;
        let rejection = harness.slots.last_rejection("swap").unwrap();
        assert!(
            rejection.reason.contains(expected),
            "{case}: {}",
            rejection.reason
        );
        assert_eq!(
            harness.current_version(),
            running,
            "{case} must not replace the running version"
        );
        append_numbered(&harness.input, flowed..flowed + 10);
        flowed += 10;
        harness.wait_for_output(flowed as usize).await;
    }
    std::fs::remove_file(harness.registry.join("swap.wasm")).unwrap();
    append_numbered(&harness.input, flowed..flowed + 10);
    flowed += 10;
    harness.wait_for_output(flowed as usize).await;
    assert_eq!(
        harness.current_version(),
        running,
        "deleting the file keeps the last version"
    );
    let batches = harness.stop().await;
    assert!(batches.iter().flatten().all(|r| version_of(r) == running));
}

/// The cache outcome (`hit` or `miss`) that `weir run`'s `Plugin activated.` log line reports for
/// each plugin, from its JSON logs.
fn cache_outcomes_of_a_run(
    dir: &Path,
    registry: &Path,
) -> std::collections::BTreeMap<String, String> {
    let output = run_weir(
        dir,
        &[
            "--log-format",
            "json",
            "run",
            "p.toml",
            "--no-admin",
            "--no-watch",
            "--plugins",
            registry.to_str().unwrap(),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    stderr
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["message"] == "Plugin activated.")
        .map(|line| {
            (
                line["plugin"].as_str().unwrap().to_owned(),
                line["cache"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_second_start_of_weir_run_takes_every_plugin_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    // Fresh hashes, so no earlier run's cache entry can answer for them.
    let tag = format!("{:?}", dir.path());
    for plugin in ["user-profile", "pii-mask"] {
        let bytes = variant(&component(plugin), &tag);
        std::fs::write(registry.join(format!("{plugin}.wasm")), bytes).unwrap();
    }
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
        [[pipeline]]
        name = "cached"
        source = { type = "generate", count = 10, seed = 3 }
        transforms = [{ plugin = "user-profile" }, { plugin = "pii-mask", config = { fields = "email" } }]
        sink = { type = "blackhole" }
        dead_letter = { type = "file", path = "dlq.jsonl" }
        "#,
    )
    .unwrap();
    let miss = |plugin: &str| (plugin.to_owned(), "miss".to_owned());
    let hit = |plugin: &str| (plugin.to_owned(), "hit".to_owned());
    assert_eq!(
        cache_outcomes_of_a_run(dir.path(), &registry),
        [miss("pii-mask"), miss("user-profile")].into(),
        "the first start compiles"
    );
    assert_eq!(
        cache_outcomes_of_a_run(dir.path(), &registry),
        [hit("pii-mask"), hit("user-profile")].into(),
        "the second start loads compiled code from the cache"
    );
}

/// `weir run` of the pipeline file `file` (in `dir`) with the compiled cache in `cache`: each
/// plugin's cache outcome from the `Plugin activated.` lines, and every WARN line about the
/// compiled cache.
fn run_with_cache(
    dir: &Path,
    file: &str,
    registry: &Path,
    cache: &Path,
) -> (
    std::collections::BTreeMap<String, String>,
    Vec<serde_json::Value>,
) {
    let output = run_weir(
        dir,
        &[
            "--log-format",
            "json",
            "run",
            file,
            "--no-admin",
            "--no-watch",
            "--plugins",
            registry.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let outcomes = lines
        .iter()
        .filter(|line| line["message"] == "Plugin activated.")
        .map(|line| {
            (
                line["plugin"].as_str().unwrap().to_owned(),
                line["cache"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let warnings = lines
        .into_iter()
        .filter(|line| {
            line["level"] == "WARN"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("compiled-cache") || m.contains("compiled cache"))
        })
        .collect();
    (outcomes, warnings)
}

/// The `.cwasm` entries in a cache folder.
fn cache_entries(cache: &Path) -> std::collections::BTreeSet<PathBuf> {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect()
}

#[test]
fn forged_compiled_cache_entries_are_never_loaded_and_the_plugin_is_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let cache = dir.path().join("cache");
    let tag = format!("{:?}", dir.path());
    for plugin in ["user-profile", "pii-mask"] {
        let bytes = variant(&component(plugin), &tag);
        std::fs::write(registry.join(format!("{plugin}.wasm")), bytes).unwrap();
    }
    let pipeline = |name: &str, transform: &str, out: &str| {
        format!(
            r#"
            [[pipeline]]
            name = "{name}"
            source = {{ type = "generate", count = 5, seed = 3 }}
            transforms = [{transform}]
            sink = {{ type = "file", path = "{out}" }}
            dead_letter = {{ type = "file", path = "dlq.jsonl" }}
            "#
        )
    };
    std::fs::write(
        dir.path().join("profile.toml"),
        pipeline("profile", r#"{ plugin = "user-profile" }"#, "profile.jsonl"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mask.toml"),
        pipeline(
            "mask",
            r#"{ plugin = "pii-mask", config = { fields = "email" } }"#,
            "mask.jsonl",
        ),
    )
    .unwrap();

    // Genuine entries: pii-mask's first, then user-profile's.
    let (outcomes, _) = run_with_cache(dir.path(), "mask.toml", &registry, &cache);
    assert_eq!(outcomes["pii-mask"], "miss");
    let mask_entry = cache_entries(&cache).into_iter().next().unwrap();
    let (outcomes, _) = run_with_cache(dir.path(), "profile.toml", &registry, &cache);
    assert_eq!(outcomes["user-profile"], "miss");
    let profile_entry = cache_entries(&cache)
        .into_iter()
        .find(|entry| *entry != mask_entry)
        .unwrap();
    let mask_stored = std::fs::read(&mask_entry).unwrap();
    // wasmtime's own artifact of pii-mask (an ELF file), whatever weir wraps around it.
    let elf = mask_stored
        .windows(4)
        .position(|w| w == b"\x7fELF")
        .expect("a compiled artifact is an ELF image");
    let forgeries: [(&str, Vec<u8>); 3] = [
        (
            "wrong bytes",
            b"\x7fELF and then nothing a compiler wrote".to_vec(),
        ),
        ("another component's whole entry", mask_stored.clone()),
        (
            "another component's bare wasmtime artifact",
            mask_stored[elf..].to_vec(),
        ),
    ];
    for (forgery, bytes) in forgeries {
        std::fs::write(&profile_entry, &bytes).unwrap();
        let _ = std::fs::remove_file(dir.path().join("profile.jsonl"));
        let (outcomes, warnings) = run_with_cache(dir.path(), "profile.toml", &registry, &cache);
        assert_eq!(
            outcomes["user-profile"], "rejected",
            "{forgery}: compiled afresh, not loaded from the cache"
        );
        assert_eq!(warnings.len(), 1, "{forgery}: one WARN line: {warnings:?}");
        assert_eq!(
            warnings[0]["entry"].as_str(),
            profile_entry.to_str(),
            "{forgery}: {warnings:?}"
        );
        // The rows are user-profile's, not what pii-mask's code would have made of the input.
        let rows = read_json_lines(&dir.path().join("profile.jsonl"));
        assert_eq!(rows.len(), 5, "{forgery}");
        assert!(
            rows.iter()
                .all(|row| row["first_name"].is_string() && row["name"].is_null()),
            "{forgery}: {rows:?}"
        );
        assert_ne!(
            std::fs::read(&profile_entry).unwrap(),
            bytes,
            "{forgery}: the forged entry was replaced"
        );
    }
    let (outcomes, warnings) = run_with_cache(dir.path(), "profile.toml", &registry, &cache);
    assert_eq!(
        outcomes["user-profile"], "hit",
        "the replaced entry is genuine"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn an_unsafe_cache_folder_is_ignored_with_one_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let tag = format!("{:?}", dir.path());
    for plugin in ["user-profile", "pii-mask"] {
        let bytes = variant(&component(plugin), &tag);
        std::fs::write(registry.join(format!("{plugin}.wasm")), bytes).unwrap();
    }
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
        [[pipeline]]
        name = "shared"
        source = { type = "generate", count = 5, seed = 3 }
        transforms = [{ plugin = "user-profile" }, { plugin = "pii-mask", config = { fields = "email" } }]
        sink = { type = "blackhole" }
        dead_letter = { type = "file", path = "dlq.jsonl" }
        "#,
    )
    .unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (outcomes, warnings) = run_with_cache(dir.path(), "p.toml", &registry, &cache);
    let disabled = |plugin: &str| (plugin.to_owned(), "disabled".to_owned());
    assert_eq!(
        outcomes,
        [disabled("pii-mask"), disabled("user-profile")].into(),
        "both compiled, neither loaded"
    );
    assert_eq!(
        warnings.len(),
        1,
        "one WARN line for the folder: {warnings:?}"
    );
    assert!(
        std::fs::read_dir(&cache).unwrap().next().is_none(),
        "nothing written into a folder others can write"
    );
}

#[test]
fn a_restart_loads_compiled_code_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = variant(&component("user-profile"), &format!("{:?}", dir.path()));
    let first = PluginRuntime::new(Some(CompiledCache::new(dir.path()))).unwrap();
    let loaded = LoadedPlugin::from_bytes(&first, "user-profile", &bytes).unwrap();
    assert_eq!(loaded.cache_outcome(), CacheOutcome::Miss);
    // A new runtime is what a restarted process has.
    let second = PluginRuntime::new(Some(CompiledCache::new(dir.path()))).unwrap();
    let reloaded = LoadedPlugin::from_bytes(&second, "user-profile", &bytes).unwrap();
    assert_eq!(reloaded.cache_outcome(), CacheOutcome::Hit);
    let mut instance = reloaded.instantiate("{}", Default::default()).unwrap();
    let user = weir::generator::UserGenerator::new(1)
        .next_user()
        .to_string();
    assert!(
        instance.transform(&[Record::from_value(user)])[0].is_ok(),
        "cached code runs"
    );
    // A damaged entry is recompiled, never trusted.
    let entry = CompiledCache::new(dir.path()).entry(second.engine(), &bytes);
    std::fs::write(&entry, b"damaged").unwrap();
    let third = PluginRuntime::new(Some(CompiledCache::new(dir.path()))).unwrap();
    let recompiled = LoadedPlugin::from_bytes(&third, "user-profile", &bytes).unwrap();
    assert_eq!(recompiled.cache_outcome(), CacheOutcome::Rejected);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_from_the_cli_and_automatically_on_failures() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let first = variant(&component("fault-panic"), "first");
    let second = variant(&component("fault-panic"), "second");
    drop_in(&registry, "swap.wasm", &first);
    drop_in(
        &registry,
        "swap.toml",
        b"version = \"1.0.0\"\ndescription = \"pass-through\"\n",
    );
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "").unwrap();
    let out = dir.path().join("out.jsonl");
    let file = PipelineFile::parse(
        Path::new("rollback.toml"),
        &format!(
            r#"
            [[pipeline]]
            name = "rollback"
            source = {{ type = "file", path = "{}", follow = true }}
            transforms = [{{ plugin = "swap", config = {{ fields = "email" }} }}]
            sink = {{ type = "file", path = "{}" }}
            dead_letter = {{ type = "file", path = "{}/dlq.jsonl" }}
            batch = {{ size = 8, linger_ms = 5 }}
            "#,
            input.display(),
            out.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut options = RunOptions::for_registry(&registry);
    options.admin = Some("127.0.0.1:0".parse().unwrap());
    options.debounce = Duration::from_millis(20);
    options.cache = Some(crate::support::repo_root().join("target/test-plugins/cache"));
    let app = RunningApp::start(file, options).await.unwrap();
    let admin = app.admin_addr().unwrap().to_string();
    let token = app.admin_token().unwrap().expose().to_owned();
    let slots = app.slots().clone();
    let first_version = slots
        .get("swap")
        .unwrap()
        .current()
        .1
        .plugin
        .version()
        .to_owned();

    drop_in(&registry, "swap.wasm", &second);
    let slot = slots.get("swap").unwrap();
    wait_for("the second version", Duration::from_secs(60), move || {
        slot.generation() == 1
    })
    .await;

    let listed = run_weir(
        dir.path(),
        &["plugin", "list", "--admin", &admin, "--admin-token", &token],
    );
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listing}");
    assert!(
        listing.contains("swap") && listing.contains(&first_version) && listing.contains("1.0.0"),
        "{listing}"
    );

    let rolled = run_weir(
        dir.path(),
        &[
            "plugin",
            "rollback",
            "swap",
            "--admin",
            &admin,
            "--admin-token",
            &token,
        ],
    );
    let said = String::from_utf8_lossy(&rolled.stdout);
    assert!(
        rolled.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    assert!(said.contains(&first_version), "{said}");
    assert_eq!(
        slots.get("swap").unwrap().current().1.plugin.version(),
        first_version
    );

    // A version that traps on every line must be rolled back by itself, as soon as more than
    // half of its 200-record window (the default) has failed. (A version that only judges lines
    // `bad-record` is not: that is the input's fault; see the `judging` tests.)
    drop_in(
        &registry,
        "swap.wasm",
        &variant(&component("fault-panic"), "third"),
    );
    let slot = slots.get("swap").unwrap();
    wait_for(
        "the third version to activate",
        Duration::from_secs(60),
        move || slot.generation() == 3,
    )
    .await;
    {
        use std::io::Write;
        let mut lines = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .unwrap();
        for n in 0..120 {
            writeln!(lines, "panic on line {n}").unwrap();
        }
    }
    let slot = slots.get("swap").unwrap();
    wait_for(
        "the automatic rollback",
        Duration::from_secs(60),
        move || slot.generation() == 4,
    )
    .await;
    let info = slots
        .describe()
        .into_iter()
        .find(|s| s.name == "swap")
        .unwrap();
    assert_eq!(info.current.version, first_version);
    let reason = info.last_rollback.unwrap();
    assert!(reason.contains("failed"), "{reason}");
    assert!(reason.contains("200-record window"), "{reason}");

    app.shutdown_handle().send(true).unwrap();
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}

/// The JSON log lines a child process writes to stderr, collected as they come.
fn collect_json_logs(stderr: std::process::ChildStderr) -> Arc<Mutex<Vec<serde_json::Value>>> {
    use std::io::BufRead;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                collected.lock().unwrap().push(value);
            }
        }
    });
    lines
}

/// How many of `logs` have `message`, and the first of them.
fn logged(
    logs: &Mutex<Vec<serde_json::Value>>,
    message: &str,
) -> (usize, Option<serde_json::Value>) {
    let logs = logs.lock().unwrap();
    let matching: Vec<&serde_json::Value> =
        logs.iter().filter(|l| l["message"] == message).collect();
    (matching.len(), matching.first().map(|l| (*l).clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_weir_logs_one_line_per_rejected_or_deleted_file_and_keeps_running() {
    const REJECTED: &str = "Plugin rejected; the running version keeps running.";
    const DELETED: &str = "Plugin file deleted; pipelines keep running its last version.";
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    std::fs::write(registry.join("swap.wasm"), component("fault-panic")).unwrap();
    let input = dir.path().join("in.jsonl");
    append_numbered(&input, 0..10);
    std::fs::write(
        dir.path().join("p.toml"),
        "[[pipeline]]\nname = \"live\"\nsource = { type = \"file\", path = \"in.jsonl\", follow = true }\ntransforms = [{ plugin = \"swap\" }]\nsink = { type = \"file\", path = \"out.jsonl\", encoding = \"envelope\" }\ndead_letter = { type = \"file\", path = \"dlq.jsonl\" }\nbatch = { size = 10, linger_ms = 10 }\n",
    )
    .unwrap();
    let admin = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut child = crate::support::weir()
        .current_dir(dir.path())
        .args(["--log-format", "json", "run", "p.toml", "--plugins"])
        .arg(&registry)
        .args(["--admin", &admin, "--debounce-ms", "50"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let logs = collect_json_logs(child.stderr.take().unwrap());
    let out = dir.path().join("out.jsonl");
    let outputs = {
        let out = out.clone();
        move || {
            std::fs::read_to_string(&out)
                .map(|text| text.lines().count())
                .unwrap_or(0)
        }
    };
    let watching = Arc::clone(&logs);
    wait_for("the folder watch", Duration::from_secs(60), move || {
        logged(&watching, "Watching the plugin folder.").0 == 1
    })
    .await;
    let first = outputs.clone();
    wait_for("the first records", Duration::from_secs(60), move || {
        first() == 10
    })
    .await;

    drop_in(&registry, "swap.wasm", b"this is not wasm at all");
    let rejected = Arc::clone(&logs);
    wait_for("the rejection line", Duration::from_secs(60), move || {
        logged(&rejected, REJECTED).0 >= 1
    })
    .await;
    std::fs::remove_file(registry.join("swap.wasm")).unwrap();
    let deleted = Arc::clone(&logs);
    wait_for("the deletion warning", Duration::from_secs(60), move || {
        logged(&deleted, DELETED).0 >= 1
    })
    .await;
    // The stream goes on, on the version that was running.
    append_numbered(&input, 10..20);
    let more = outputs.clone();
    wait_for(
        "records after the rejection",
        Duration::from_secs(60),
        move || more() == 20,
    )
    .await;

    let (count, line) = logged(&logs, REJECTED);
    let line = line.unwrap();
    assert_eq!(count, 1, "one line for one rejected file");
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["file"].as_str().unwrap().ends_with("swap.wasm"),
        "{line}"
    );
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{line}"
    );
    let (count, line) = logged(&logs, DELETED);
    assert_eq!(count, 1, "one warning for one deleted file");
    assert_eq!(line.unwrap()["level"], "WARN");

    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{admin}/health"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    let text = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = crate::metrics::parse(&text);
    let plugin = [("plugin", "swap")];
    let value = |metric| crate::metrics::sample_with(&scrape, metric, &plugin);
    assert_eq!(
        value("weir_plugin_rejected_files_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value("weir_plugin_swaps_total"), Some(0.0), "{text}");

    let versions: std::collections::BTreeSet<String> = read_json_lines(&out)
        .iter()
        .map(|line| line["headers"][VERSION_HEADER].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(versions.len(), 1, "one version throughout: {versions:?}");

    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(child.wait().unwrap().success(), "weir exits 0 on SIGTERM");
}

#[test]
fn a_version_workers_cannot_instantiate_is_not_judged_by_the_running_versions_results() {
    let runtime = test_runtime();
    let load = |bytes: &[u8]| {
        PluginVersion::bare(LoadedPlugin::from_bytes(&runtime, "swap", bytes).unwrap())
    };
    let slots = PluginSlots::new(RollbackPolicy {
        window: 10,
        max_failure_ratio: 0.5,
    });
    let running = load(&variant(&component("fault-panic"), "running"));
    let running_version = running.plugin.version().to_owned();
    let slot = slots.activate(running);
    let transform = TransformConfig {
        plugin: "swap".into(),
        config: None,
        allow: Vec::new(),
    };
    let step = ChainStep::new(Arc::clone(&slot), transform, PluginLimits::default()).unwrap();
    let mut chain = TransformChain::new(vec![step]);

    // pii-mask's init refuses a config without `fields`, so the worker cannot switch to it.
    let unusable = load(&component("pii-mask"));
    let unusable_version = unusable.plugin.version().to_owned();
    slots.activate(unusable);
    let position = SourcePosition {
        stream: "input".into(),
        partition: 0,
        offset: 0,
    };
    let positions = vec![position; 20];
    let failing: Vec<Record> = (0..20).map(|_| Record::from_value("fail")).collect();
    let output = chain.apply(failing, &positions);
    let by_running = FailedAt::Plugin {
        name: "swap".into(),
        step: "swap".into(),
        version: running_version.clone(),
    };
    assert_eq!(output.failures.len(), 20);
    assert!(
        output
            .failures
            .iter()
            .all(|failure| failure.at == by_running),
        "the running version handled the batch"
    );
    assert_eq!(
        chain.steps()[0].instance().plugin().version(),
        running_version
    );
    // Those are the running version's failures: pii-mask's probation saw none of them.
    assert_eq!(slot.generation(), 1, "no automatic rollback");
    assert_eq!(slot.current().1.plugin.version(), unusable_version);

    // A version that does instantiate is switched to at the next batch.
    let next = load(&variant(&component("fault-panic"), "next"));
    let next_version = next.plugin.version().to_owned();
    slots.activate(next);
    let output = chain.apply(vec![Record::from_value("calm")], &positions[..1]);
    assert!(output.failures.is_empty());
    assert_eq!(version_of(&output.outputs[0]), next_version);
}

#[test]
fn automatic_rollback_judges_the_first_window_of_records_of_a_new_version() {
    let runtime = test_runtime();
    let base = component("fault-panic");
    let version = |tag: &str| {
        PluginVersion::bare(
            LoadedPlugin::from_bytes(&runtime, "swap", &variant(&base, tag)).unwrap(),
        )
    };
    let slots = PluginSlots::new(RollbackPolicy {
        window: 20,
        max_failure_ratio: 0.5,
    });
    let slot = slots.activate(version("first"));
    let outcomes = |failed: usize, ok: usize| {
        std::iter::repeat_n(Some(weir::record::RecordErrorKind::Trap), failed)
            .chain(std::iter::repeat_n(None, ok))
    };

    // Half of the window failing is not more than half: the version is kept, and once its window
    // is over, failures no longer count against it.
    slot.activate(version("good"));
    slot.report(1, outcomes(10, 10));
    slot.report(1, outcomes(100, 0));
    assert_eq!(slot.generation(), 1, "kept");

    // Results of another generation (a worker still on the previous version) are not its own.
    slot.activate(version("bad"));
    slot.report(1, outcomes(20, 0));
    assert_eq!(slot.generation(), 2);

    // The 11th failure of 20 settles it, with records of the window still to come.
    slot.report(2, outcomes(10, 0));
    assert_eq!(slot.generation(), 2, "10 of 20 is no verdict yet");
    slot.report(2, outcomes(1, 0));
    assert_eq!(slot.generation(), 3, "rolled back");
    let reason = slots.describe()[0].last_rollback.clone().unwrap();
    assert!(
        reason.contains("11 of its first 11 records failed"),
        "{reason}"
    );
}

/// Workers report on their own threads: each may condemn a version before any acts on it. The
/// verdict names the generation it judged, so it rolls back (or aborts) only that one.
#[test]
fn a_verdict_acted_on_late_undoes_only_the_version_it_judged() {
    let runtime = test_runtime();
    let base = component("fault-panic");
    let version = |tag: &str| {
        PluginVersion::bare(
            LoadedPlugin::from_bytes(&runtime, "swap", &variant(&base, tag)).unwrap(),
        )
    };
    let live = |slot: &weir::registry::PluginSlot| slot.current().1.plugin.version().to_owned();
    let slots = PluginSlots::new(RollbackPolicy {
        window: 4,
        max_failure_ratio: 0.5,
    });
    let failing = || std::iter::repeat_n(Some(weir::record::RecordErrorKind::Trap), 4);
    let slot = slots.activate(version("v0"));
    let v1 = version("v1");
    let v1_version = v1.plugin.version().to_owned();
    slot.activate(v1);
    slot.activate(version("v2"));
    let v2_generation = slot.generation();

    // Two workers both condemn v2 before either acts: one rollback, to v1, not on to v0.
    let first = slot.judge(v2_generation, failing()).expect("v2 fails");
    let second = slot.judge(v2_generation, failing()).expect("still failed");
    assert!(slot.roll_back_failed(&first));
    assert!(!slot.roll_back_failed(&second), "v2 is gone already");
    assert_eq!(live(&slot), v1_version, "one version back");
    assert_eq!(
        slots.describe()[0].history.len(),
        1,
        "v0 is still in the history"
    );

    // v3 is condemned, then v4 is activated before the verdict is acted on: v4 stays.
    slot.activate(version("v3"));
    let failed = slot.judge(slot.generation(), failing()).expect("v3 fails");
    let v4 = version("v4");
    let v4_version = v4.plugin.version().to_owned();
    slot.activate(v4);
    let generation = slot.generation();
    assert!(!slot.roll_back_failed(&failed));
    assert_eq!((slot.generation(), live(&slot)), (generation, v4_version));

    // A canary condemned, then replaced by another candidate before the abort: the new one
    // stays staged; a verdict on it does abort it.
    let canary = || weir::registry::Rollout::Canary {
        partitions: [0].into(),
    };
    slots.stage(version("c1"), canary()).unwrap();
    let failed = slot
        .judge_canary(slot.staged_generation(), failing())
        .expect("c1 fails");
    let c2 = version("c2");
    let c2_version = c2.plugin.version().to_owned();
    slots.stage(c2, canary()).unwrap();
    assert!(!slot.abort_failed(&failed));
    let staged = slot.staged().map(|(v, _)| v.plugin.version().to_owned());
    assert_eq!(staged.as_deref(), Some(c2_version.as_str()));
    let failed = slot
        .judge_canary(slot.staged_generation(), failing())
        .expect("c2 fails");
    assert!(slot.abort_failed(&failed));
    assert!(slot.staged().is_none());
}

/// A writer that does not rename into place: the file is written where it lies, in two halves
/// with a pause between them. The watcher's debounce (here longer than the pause) waits for the
/// file to go quiet, so the half-written component is never loaded, and the whole one is
/// deployed once.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_in_place_is_loaded_only_once_whole() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let base = component("fault-panic");
    let (first, second) = (variant(&base, "first"), variant(&base, "second"));
    drop_in(&registry, "swap.wasm", &first);
    let file = PipelineFile::parse(
        Path::new("swap.toml"),
        "[[pipeline]]\nname = \"swap\"\nsource = { type = \"generate\", count = 1 }\ntransforms = [{ plugin = \"swap\" }]\nsink = { type = \"blackhole\" }\ndead_letter = { type = \"stdout\" }\n",
    )
    .unwrap();
    let slots = PluginSlots::default();
    let deployer = Deployer::new(
        PluginRegistry::new(&registry),
        test_runtime(),
        slots.clone(),
        &file,
    );
    deployer.deploy("swap").unwrap();
    let _watch = weir::registry::watch(deployer, Duration::from_millis(1500)).unwrap();

    let mut writer = std::fs::File::create(registry.join("swap.wasm")).unwrap();
    let half = second.len() / 2;
    writer.write_all(&second[..half]).unwrap();
    writer.flush().unwrap();
    // The writer is slow: the first half sits on disk for a while.
    std::thread::sleep(Duration::from_millis(300));
    writer.write_all(&second[half..]).unwrap();
    drop(writer);

    let slot = slots.get("swap").unwrap();
    let activated = Arc::clone(&slot);
    wait_for(
        "the whole file to deploy",
        Duration::from_secs(60),
        move || activated.generation() == 1,
    )
    .await;
    let expected = LoadedPlugin::from_bytes(&test_runtime(), "swap", &second)
        .unwrap()
        .version()
        .to_owned();
    assert_eq!(slot.current().1.plugin.version(), expected);
    assert!(
        slots.last_rejection("swap").is_none(),
        "the half-written file was loaded: {:?}",
        slots.last_rejection("swap")
    );
}
