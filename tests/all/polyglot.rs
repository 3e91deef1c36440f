//! Plugins in Python and JavaScript: built by `weir plugin build` with the pinned toolchains,
//! they give the Rust plugins' output field by field, fail bad records naming the field, and
//! run under the same sandbox (error isolation, deadline, memory cap, fresh instance after a
//! trap), and a running pipeline swaps between the three languages losing nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use weir::generator::UserGenerator;
use weir::record::Record;
use weir::registry::PluginRegistry;
use weir::runtime::{LoadedPlugin, PluginInstance, PluginLimits, RecordError, RecordErrorKind};

use crate::support::{plugin_registry, repo_root, run_weir, test_runtime, wait_for, weir};
use crate::swappable::{SwappablePipeline, drop_in};

/// The Python and JavaScript projects the tests use, built once per run beside the Rust ones.
const PROJECTS: &[(&str, &str)] = &[
    ("plugins/user-profile-py", "user-profile-py"),
    ("plugins/user-profile-js", "user-profile-js"),
    ("plugins/pii-mask-py", "pii-mask-py"),
    ("tests/plugins/fault-py", "fault-py"),
    ("tests/plugins/fault-js", "fault-js"),
];

/// The newest modification time of the files under `dirs`.
fn newest(dirs: &[PathBuf]) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut pending: Vec<PathBuf> = dirs.to_vec();
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            pending.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if let Ok(modified) = meta.modified() {
            newest = newest.max(modified);
        }
    }
    newest
}

/// Whether `component` is newer than its project, the SDKs and the WIT (what `weir plugin build`
/// puts in it): builds take a minute each, so a re-run skips unchanged ones.
fn up_to_date(component: &Path, project: &str) -> bool {
    let root = repo_root();
    let Ok(built) = std::fs::metadata(component).and_then(|m| m.modified()) else {
        return false;
    };
    let inputs = [
        root.join(project),
        root.join("plugins/sdk-python"),
        root.join("plugins/sdk-js"),
        root.join("wit"),
    ];
    built > newest(&inputs)
}

/// The registry folder with the Rust test plugins and the Python and JavaScript ones. The
/// projects build in parallel: componentize-py and componentize-js spend much of their time
/// waiting on their own subprocesses.
pub fn registry() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let registry = plugin_registry().to_owned();
        std::thread::scope(|scope| {
            let builds: Vec<_> = PROJECTS
                .iter()
                .filter(|(project, name)| {
                    !up_to_date(&registry.join(format!("{name}.wasm")), project)
                })
                .map(|(project, _)| {
                    let registry = &registry;
                    scope.spawn(move || {
                        let output = weir()
                            .current_dir(repo_root())
                            .args(["plugin", "build", project, "--plugins"])
                            .arg(registry)
                            .output()
                            .expect("the weir binary runs");
                        assert!(
                            output.status.success(),
                            "weir plugin build {project} failed (is the toolchain installed? scripts/ensure-toolchain --plugin-languages):\n{}\n{}",
                            String::from_utf8_lossy(&output.stdout),
                            String::from_utf8_lossy(&output.stderr)
                        );
                    })
                })
                .collect();
            for build in builds {
                build.join().expect("a build thread");
            }
        });
        registry
    })
}

fn load(name: &str) -> Arc<LoadedPlugin> {
    PluginRegistry::new(registry())
        .load(&test_runtime(), name)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn instance(name: &str, config: &str) -> PluginInstance {
    load(name)
        .instantiate(config, PluginLimits::default())
        .unwrap_or_else(|e| panic!("instantiating {name}: {e}"))
}

/// The outputs of one record as (key, parsed value) pairs, or its error.
type Outcome = Result<Vec<(Option<Vec<u8>>, Value)>, (RecordErrorKind, String)>;

fn outcomes(instance: &mut PluginInstance, inputs: &[Record]) -> Vec<Outcome> {
    let mut all = Vec::with_capacity(inputs.len());
    for batch in inputs.chunks(500) {
        for result in instance.transform(batch) {
            all.push(match result {
                Ok(outputs) => Ok(outputs
                    .iter()
                    .map(|r| {
                        (
                            r.key.as_deref().map(<[u8]>::to_vec),
                            serde_json::from_slice(&r.value).unwrap(),
                        )
                    })
                    .collect()),
                Err(RecordError { kind, message, .. }) => Err((kind, message)),
            });
        }
    }
    all
}

fn generated_users(count: usize) -> Vec<Record> {
    let mut generator = UserGenerator::new(14);
    (0..count)
        .map(|i| {
            // Every tenth record a whole API response, as the `results_per_record` option sends.
            let value = if i % 10 == 9 {
                generator.next_response(3)
            } else {
                generator.next_user()
            };
            Record::from_value(value.to_string())
        })
        .collect()
}

/// A user with every field, and ways to break it.
fn user() -> Value {
    UserGenerator::new(1).next_user()
}

fn without(pointer: &str) -> Value {
    let mut value = user();
    let (parent, leaf) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() {
        &mut value
    } else {
        value.pointer_mut(parent).unwrap()
    };
    parent.as_object_mut().unwrap().remove(leaf);
    value
}

fn with(pointer: &str, replacement: Value) -> Value {
    let mut value = user();
    *value.pointer_mut(pointer).unwrap() = replacement;
    value
}

/// Malformed and incomplete records, each with the error the Rust plugin gives.
fn broken_records() -> Vec<Record> {
    let mut broken = vec![
        without("/login/uuid"),
        without("/name/first"),
        without("/location/street/number"),
        without("/location/postcode"),
        without("/picture/medium"),
        without("/email"),
        with("/name/last", Value::Null),
        with("/location/city", json!(42)),
        with("/location/postcode", json!([1])),
        json!({"results": 3}),
        json!({"results": [user(), without("/registered/date")]}),
        json!([1, 2]),
        json!("text"),
    ]
    .into_iter()
    .map(|v| Record::from_value(v.to_string()))
    .collect::<Vec<_>>();
    broken.push(Record::from_value("not json"));
    broken.push(Record::from_value(vec![0xff, 0xfe]));
    broken
}

#[test]
fn python_and_javascript_user_profiles_equal_the_rust_one_on_10000_generated_users() {
    let users = generated_users(10_000);
    let expected = outcomes(&mut instance("user-profile", "{}"), &users);
    assert!(
        expected.iter().all(Result::is_ok),
        "the Rust plugin maps every generated user"
    );
    for name in ["user-profile-py", "user-profile-js"] {
        let got = outcomes(&mut instance(name, "{}"), &users);
        assert_eq!(got.len(), expected.len(), "{name}: one result per input");
        for (index, (got, expected)) in got.iter().zip(&expected).enumerate() {
            let (got, expected) = (got.as_ref().unwrap(), expected.as_ref().unwrap());
            assert_eq!(
                got.len(),
                expected.len(),
                "{name}: outputs of record {index}"
            );
            for ((got_key, got_row), (key, row)) in got.iter().zip(expected) {
                assert_eq!(got_key, key, "{name}: key of record {index}");
                let (got_row, row) = (got_row.as_object().unwrap(), row.as_object().unwrap());
                assert_eq!(
                    got_row.keys().collect::<Vec<_>>(),
                    row.keys().collect::<Vec<_>>(),
                    "{name}: fields of record {index}"
                );
                for (field, value) in row {
                    assert_eq!(
                        &got_row[field], value,
                        "{name}: `{field}` of record {index}"
                    );
                }
            }
        }
    }
}

#[test]
fn malformed_and_incomplete_records_fail_naming_the_field_in_every_language() {
    let broken = broken_records();
    let expected = outcomes(&mut instance("user-profile", "{}"), &broken);
    for name in ["user-profile-py", "user-profile-js"] {
        let got = outcomes(&mut instance(name, "{}"), &broken);
        for ((got, expected), input) in got.iter().zip(&expected).zip(&broken) {
            let input = String::from_utf8_lossy(&input.value);
            let (kind, message) = got.as_ref().expect_err(&format!("{name}: {input} fails"));
            let (rust_kind, rust_message) = expected.as_ref().unwrap_err();
            assert_eq!(kind, rust_kind, "{name}: kind for {input}");
            if rust_message.starts_with("value is not valid JSON") {
                // Each language's JSON parser words its own complaint.
                assert!(
                    message.starts_with("value is not valid JSON"),
                    "{name}: {message}"
                );
            } else {
                assert_eq!(message, rust_message, "{name}: message for {input}");
            }
        }
    }
    // Spot checks that the messages name the field, so the equality above means something.
    let messages: Vec<String> = expected
        .iter()
        .map(|e| e.as_ref().unwrap_err().1.clone())
        .collect();
    assert_eq!(messages[0], "missing required field `login.uuid`");
    assert_eq!(messages[7], "field `location.city` must be a string");
    assert_eq!(
        messages[10],
        "results[1]: missing required field `registered.date`"
    );
}

#[test]
fn python_pii_mask_equals_the_rust_one() {
    let users = generated_users(500);
    for config in [
        r#"{"fields": "email, phone, location.street.number", "salt": "s"}"#,
        r#"{"fields": ["login.username", "absent.field"], "mode": "redact", "replacement": "X"}"#,
    ] {
        let expected = outcomes(&mut instance("pii-mask", config), &users);
        let got = outcomes(&mut instance("pii-mask-py", config), &users);
        assert_eq!(got, expected, "{config}");
    }
    let error = load("pii-mask-py")
        .instantiate(
            r#"{"fields": "email", "colour": 1}"#,
            PluginLimits::default(),
        )
        .err()
        .expect("an unknown key is refused");
    assert!(error.to_string().contains("`colour`"), "{error}");
}

#[test]
fn a_python_exception_fails_its_record_alone_as_a_plugin_failure_with_its_message() {
    let mut fault = instance("fault-py", "{}");
    let results = fault.transform(&[
        Record::from_value("a"),
        Record::from_value("raise"),
        Record::from_value("b"),
    ]);
    assert_eq!(results[0].as_ref().unwrap()[0].value, &b"a"[..]);
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.kind, RecordErrorKind::PluginFailure, "{error:?}");
    assert_eq!(
        error.message,
        "ValueError: boom: the plugin did not expect this"
    );
    assert_eq!(results[2].as_ref().unwrap()[0].value, &b"b"[..]);
    assert_eq!(fault.instances_created(), 1, "an exception is not a trap");
}

#[test]
fn an_endless_python_loop_and_a_javascript_memory_bomb_are_contained() {
    let limits = |deadline_ms| PluginLimits {
        deadline: Duration::from_millis(deadline_ms),
        memory_bytes: 96 << 20,
        ..PluginLimits::default()
    };
    for (name, hostile, deadline_ms, kinds) in [
        ("fault-py", "loop", 500, &[RecordErrorKind::Timeout][..]),
        ("fault-js", "loop", 500, &[RecordErrorKind::Timeout][..]),
        // A deadline far beyond what the bomb needs to reach the cap, so the cap stops it.
        // SpiderMonkey may turn a failed memory.grow into an uncatchable out-of-memory (a trap)
        // or an exception; either way the record fails alone and the cap holds.
        (
            "fault-js",
            "bomb",
            60_000,
            &[RecordErrorKind::Trap, RecordErrorKind::PluginFailure][..],
        ),
    ] {
        let mut plugin = load(name).instantiate("{}", limits(deadline_ms)).unwrap();
        let results = plugin.transform(&[Record::from_value(hostile), Record::from_value("next")]);
        let error = results[0].as_ref().unwrap_err();
        assert!(kinds.contains(&error.kind), "{name} {hostile}: {error:?}");
        assert_eq!(
            results[1].as_ref().unwrap()[0].value,
            &b"next"[..],
            "{name}: the record after {hostile} is processed"
        );
        let again = plugin.transform(&[Record::from_value("later")]);
        assert_eq!(again[0].as_ref().unwrap()[0].value, &b"later"[..], "{name}");
    }
}

#[test]
fn plugin_list_shows_each_plugins_language() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = run_weir(
        dir.path(),
        &[
            "plugin",
            "list",
            "--admin",
            &nobody,
            "--plugins",
            registry().to_str().unwrap(),
        ],
    );
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for (name, language) in [
        ("user-profile ", "Rust"),
        ("user-profile-py", "Python"),
        ("user-profile-js", "JavaScript"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} listed:\n{stdout}"));
        assert!(line.contains(language), "{line}");
    }
}

#[test]
fn a_component_over_the_core_instance_limit_is_refused_naming_the_limit() {
    let runtime = weir::runtime::PluginRuntime::with_limits(
        None,
        weir::runtime::ComponentLimits {
            core_instances: 8,
            ..weir::runtime::ComponentLimits::default()
        },
    )
    .unwrap();
    if !runtime.uses_pooling() {
        return; // The limit belongs to the pooling allocator, off on this machine.
    }
    let bytes = std::fs::read(registry().join("user-profile-py.wasm")).unwrap();
    let error = LoadedPlugin::from_bytes(&runtime, "user-profile-py", &bytes).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("limits.core_instances") && message.contains("--max-core-instances"),
        "{message}"
    );
}

fn append_users(path: &Path, users: &[Value]) {
    use std::io::Write;
    let text: String = users.iter().map(|u| format!("{u}\n")).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_pipeline_swaps_rust_to_python_to_javascript_losing_nothing() {
    const CHUNK: usize = 3_000;
    let languages = ["user-profile", "user-profile-py", "user-profile-js"];
    let components: Vec<Vec<u8>> = languages
        .iter()
        .map(|name| std::fs::read(registry().join(format!("{name}.wasm"))).unwrap())
        .collect();
    let versions: Vec<String> = languages
        .iter()
        .map(|name| load(name).version().to_owned())
        .collect();
    let running = SwappablePipeline::start("profile", &components[0]).await;

    let mut generator = UserGenerator::new(7);
    let users: Vec<Value> = (0..CHUNK * 3).map(|_| generator.next_user()).collect();
    for (step, chunk) in users.chunks(CHUNK).enumerate() {
        let (first, second) = chunk.split_at(CHUNK / 2);
        append_users(&running.input, first);
        if step > 0 {
            // Swap while the first half flows; the second half is written once the new
            // language runs, so each swap shows in the output.
            drop_in(&running.registry, "profile.wasm", &components[step]);
            let slot = running.slots.get("profile").unwrap();
            wait_for(
                &format!("{} to activate", languages[step]),
                Duration::from_secs(300),
                move || slot.generation() == step as u64,
            )
            .await;
        }
        append_users(&running.input, second);
        running.wait_for_output(CHUNK * (step + 1)).await;
    }
    let batches = running.stop().await;

    let header = "weir.version.profile";
    let mut seen = std::collections::HashMap::new();
    let mut order = Vec::new();
    for batch in &batches {
        let batch_versions: std::collections::BTreeSet<&str> = batch
            .iter()
            .map(|r| r.header_str(header).expect("a version header"))
            .collect();
        assert_eq!(
            batch_versions.len(),
            1,
            "a batch mixes versions: {batch_versions:?}"
        );
        let version = *batch_versions.iter().next().unwrap();
        let language = versions
            .iter()
            .position(|v| v == version)
            .unwrap_or_else(|| panic!("{version} is none of {versions:?}"));
        if order.last() != Some(&language) {
            order.push(language);
        }
        for record in batch {
            let id = String::from_utf8(record.key.as_deref().unwrap().to_vec()).unwrap();
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    assert_eq!(order, [0, 1, 2], "Rust, then Python, then JavaScript");
    assert_eq!(seen.len(), users.len(), "every user arrived");
    assert!(seen.values().all(|&n| n == 1), "no user arrived twice");
    for user in &users {
        assert!(seen.contains_key(user["login"]["uuid"].as_str().unwrap()));
    }
}
