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

/// A user's JSON with the value at `pointer` written as `raw`: what `json!` cannot hold (NaN, a
/// lone surrogate's escape, bytes that are not UTF-8).
fn with_raw(pointer: &str, raw: &[u8]) -> Vec<u8> {
    let text = with(pointer, json!("\u{1}marker")).to_string();
    let (before, after) = text.split_once(r#""\u0001marker""#).unwrap();
    [before.as_bytes(), raw, after.as_bytes()].concat()
}

/// Objects holding arrays nested `depth` deep.
fn nested(depth: usize) -> String {
    format!(r#"{{"a": {}{}}}"#, "[".repeat(depth), "]".repeat(depth))
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
    // What serde_json refuses, so the Rust SDK does: numbers JSON has not, a number beyond a
    // double's range, lone surrogates (escaped, or as CESU-8 bytes), a byte-order mark, UTF-16.
    for raw in ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"] {
        broken.push(Record::from_value(with_raw(
            "/location/postcode",
            raw.as_bytes(),
        )));
    }
    for raw in [&br#""\ud800""#[..], br#""a\udc00b""#, b"\"\xed\xa0\x80\""] {
        broken.push(Record::from_value(with_raw("/phone", raw)));
    }
    broken.push(Record::from_value(with_raw("/name", br#"{"\udbff": 1}"#)));
    let text = user().to_string();
    broken.push(Record::from_value(
        [&b"\xef\xbb\xbf"[..], text.as_bytes()].concat(),
    ));
    let utf16: Vec<u8> = [0xfeff_u16]
        .into_iter()
        .chain(text.encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect();
    broken.push(Record::from_value(utf16));
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

/// The outputs of each record as text, or its error's kind: what a byte-for-byte comparison
/// of two plugins compares (their error messages word a parser's complaint each their own way).
fn texts(
    instance: &mut PluginInstance,
    inputs: &[Record],
) -> Vec<Result<Vec<String>, RecordErrorKind>> {
    instance
        .transform(inputs)
        .into_iter()
        .map(|result| match result {
            Ok(outputs) => Ok(outputs
                .iter()
                .map(|r| String::from_utf8_lossy(&r.value).into_owned())
                .collect()),
            Err(error) => Err(error.kind),
        })
        .collect()
}

/// Each output of [`texts`] read as a JSON document, so outputs written differently but meaning
/// the same compare equal.
fn documents(
    texts: Vec<Result<Vec<String>, RecordErrorKind>>,
) -> Vec<Result<Vec<serde_json::Value>, RecordErrorKind>> {
    texts
        .into_iter()
        .map(|result| {
            result.map(|outputs| {
                outputs
                    .iter()
                    .map(|text| serde_json::from_str(text).expect("outputs are JSON"))
                    .collect()
            })
        })
        .collect()
}

/// Documents for masking: fields in arrays, keys out of order, numbers each language prints its
/// own way, text to escape, nesting at serde_json's limit and beyond, and what it refuses.
fn masking_documents() -> Vec<Vec<u8>> {
    let mut documents: Vec<Vec<u8>> = [
        r#"{"contacts":[{"email":"a@b.c"},{"email":"d@e.f"}],"phones":["020 7946 0001","x"],"tags":{"01":"k","0":"z"},"zeta":1,"alpha":2}"#,
        r#"{"contacts":[null],"phones":{"0":"a","1":"b","01":"c"}}"#,
        r#"{"name":{"last":"Ødegård","first":"Zoë","title":"a\u0001\t\"\\/\u007f\u2028"},"n":1e20,"m":2.5e-8,"k":1.234e-5,"big":100000000000000000000,"neg":-0,"f":90210.0,"u":18446744073709551615,"i":-9223372036854775809,"deep":{"b":[1.5,{"y":null,"x":true}],"a":"😀"}}"#,
        r#"{"n":[1e-7,123456789012345678,0.1,1e16,1e15,-2.5E+300]}"#,
        r#"{"n":NaN}"#,
        r#"{"n":1e400}"#,
        r#"{"e":"\ud800"}"#,
        r#"{"\udc00":1}"#,
    ]
    .iter()
    .map(|d| d.as_bytes().to_vec())
    .collect();
    documents.push(b"{\"e\":\"\xed\xa0\x80\"}".to_vec());
    documents.push(b"\xef\xbb\xbf{}".to_vec());
    for depth in [126, 127, 100_000] {
        documents.push(nested(depth).into_bytes());
    }
    documents
}

#[test]
fn python_pii_mask_equals_the_rust_one() {
    let mut inputs = generated_users(500);
    inputs.extend(masking_documents().into_iter().map(Record::from_value));
    let arrays = r#"{"fields": "contacts.0.email, contacts.1, phones.1, phones.01, phones.+0, phones.9, tags.01, tags.0, name, n, m, k, big, neg, f, u, i, deep, email", "salt": "s"}"#;
    for config in [
        r#"{"fields": "email, phone, location.street.number", "salt": "s"}"#,
        r#"{"fields": ["login.username", "absent.field"], "mode": "redact", "replacement": "X"}"#,
        arrays,
        r#"{"fields": ["contacts.0.email", "phones.0", "a.0"], "mode": "redact"}"#,
    ] {
        // Compared as documents: the Rust plugin copies what it does not mask byte for byte,
        // the Python one writes the document again (keys sorted, numbers as serde_json prints
        // them); the hashes, computed alike from the masked values, must be equal.
        let expected = documents(texts(&mut instance("pii-mask", config), &inputs));
        let got = documents(texts(&mut instance("pii-mask-py", config), &inputs));
        for (index, (got, expected)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                got,
                expected,
                "{config}: record {index}: {}",
                String::from_utf8_lossy(&inputs[index].value[..inputs[index].value.len().min(300)])
            );
        }
    }
    // The Rust plugin masks inside arrays and refuses what serde_json refuses, so the equality
    // above means something.
    let masked = texts(&mut instance("pii-mask", arrays), &inputs[500..]);
    let first = masked[0].as_ref().unwrap()[0].clone();
    assert!(
        !first.contains("a@b.c") && !first.contains("d@e.f"),
        "{first}"
    );
    assert!(
        first.starts_with(r#"{"contacts":[{"email":""#)
            && first.ends_with(r#""zeta":1,"alpha":2}"#),
        "keys stay in their order: {first}"
    );
    for refused in &masked[4..masked.len() - 3] {
        assert_eq!(refused, &Err(RecordErrorKind::BadRecord));
    }
    assert!(masked[masked.len() - 3].is_ok(), "127 deep is read");
    assert_eq!(masked[masked.len() - 2], Err(RecordErrorKind::BadRecord));
    assert_eq!(masked[masked.len() - 1], Err(RecordErrorKind::BadRecord));
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
fn documents_nested_too_deeply_are_bad_records_in_every_language_without_a_trap() {
    let deep = [
        nested(127),
        nested(100_000),
        format!("[{}", nested(100_000)),
    ];
    let inputs: Vec<Record> = deep.iter().map(|d| Record::from_value(d.clone())).collect();
    for name in [
        "user-profile",
        "user-profile-py",
        "user-profile-js",
        "pii-mask",
        "pii-mask-py",
    ] {
        let config = if name.starts_with("pii-mask") {
            r#"{"fields": "a"}"#
        } else {
            "{}"
        };
        let mut plugin = instance(name, config);
        for (result, input) in plugin.transform(&inputs).iter().zip(&deep) {
            let error = result.as_ref().expect_err(name);
            assert_eq!(
                error.kind,
                RecordErrorKind::BadRecord,
                "{name}: {error:?} for {}",
                &input[..20]
            );
        }
        assert_eq!(plugin.instances_created(), 1, "{name}: no trap");
    }
}

#[test]
fn outputs_of_a_type_the_contract_cannot_hold_fail_their_record_alone_without_a_trap() {
    let mut fault = instance("fault-py", "{}");
    let inputs = [
        "a",
        "str-key",
        "float-timestamp",
        "text-header",
        "negative-counter",
        "b",
    ];
    let records: Vec<Record> = inputs.iter().map(|v| Record::from_value(*v)).collect();
    let results = fault.transform(&records);
    assert_eq!(results[0].as_ref().unwrap()[0].value, &b"a"[..]);
    for (result, (input, wanted)) in results[1..5].iter().zip([
        ("str-key", "Record.key must be bytes"),
        ("float-timestamp", "Record.timestamp must be an int"),
        ("text-header", "header `h`'s value must be bytes"),
        ("negative-counter", "counter `fault`: delta must be"),
    ]) {
        let error = result.as_ref().expect_err(input);
        assert_eq!(
            error.kind,
            RecordErrorKind::PluginFailure,
            "{input}: {error:?}"
        );
        assert!(error.message.contains(wanted), "{input}: {}", error.message);
    }
    assert_eq!(results[5].as_ref().unwrap()[0].value, &b"b"[..]);
    assert_eq!(
        fault.instances_created(),
        1,
        "a wrong output type is not a trap"
    );

    let mut fault = instance("fault-js", "{}");
    let mut split = Record::from_value("split");
    split.set_header("trace", "t");
    let results = fault.transform(&[
        Record::from_value("float-timestamp"),
        Record::from_value("number-header"),
        split,
        Record::from_value("b"),
    ]);
    for (result, wanted) in results[..2].iter().zip([
        "Record.timestamp must be a BigInt",
        "header `h`'s value must be a Uint8Array",
    ]) {
        let error = result.as_ref().unwrap_err();
        assert_eq!(error.kind, RecordErrorKind::PluginFailure, "{error:?}");
        assert!(error.message.contains(wanted), "{}", error.message);
    }
    // Outputs made by `withJson` from one input share no headers: the one added to the first
    // output is on it alone.
    let headers = |record: &Record| -> Vec<(String, String)> {
        record
            .headers
            .iter()
            .map(|h| {
                (
                    h.key.as_str().to_owned(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
            })
            .collect()
    };
    let outputs = results[2].as_ref().unwrap();
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        headers(&outputs[0]),
        [pair("trace", "t"), pair("part", "first")]
    );
    assert_eq!(headers(&outputs[1]), [pair("trace", "t")]);
    assert_eq!(results[3].as_ref().unwrap()[0].value, &b"b"[..]);
    assert_eq!(
        fault.instances_created(),
        1,
        "a wrong output type is not a trap"
    );
}

#[test]
fn javascript_refuses_integers_it_would_round_where_rust_and_python_read_them_exactly() {
    let exact = Record::from_value(with_raw("/location/postcode", b"9007199254740993"));
    let inputs = [exact];
    for name in ["user-profile", "user-profile-py"] {
        let got = outcomes(&mut instance(name, "{}"), &inputs);
        let (_, row) = &got[0].as_ref().unwrap()[0];
        assert_eq!(row["post_code"], "9007199254740993", "{name}");
    }
    let got = outcomes(&mut instance("user-profile-js", "{}"), &inputs);
    let (kind, message) = got[0].as_ref().unwrap_err();
    assert_eq!(*kind, RecordErrorKind::BadRecord);
    assert!(message.contains("beyond 2^53"), "{message}");
}

#[test]
fn javascript_reads_numbers_written_as_floats_as_floats_however_large() {
    // `json TEXT`: fault-js parses TEXT with the SDK's `json()` and writes it back.
    let inputs: Vec<Record> = [
        r#"{"n":1e20}"#,
        r#"{"n":-2.5E+300}"#,
        r#"{"n":12345678901234567890.5}"#,
        r#"{"n":9007199254740991,"s":"9007199254740993"}"#,
        r#"{"n":9007199254740993}"#,
        r#"{"a":[1,-12345678901234567890]}"#,
    ]
    .iter()
    .map(|text| Record::from_value(format!("json {text}")))
    .collect();
    let got = outcomes(&mut instance("fault-js", "{}"), &inputs);
    let read = |index: usize| -> Value {
        let outputs = got[index]
            .as_ref()
            .unwrap_or_else(|e| panic!("input {index} failed: {e:?}"));
        outputs[0].1.clone()
    };
    // As serde_json (the Rust SDK) and Python read them: doubles.
    assert_eq!(read(0)["n"].as_f64(), Some(1e20));
    assert_eq!(read(1)["n"].as_f64(), Some(-2.5e300));
    assert_eq!(read(2)["n"].as_f64(), Some(12_345_678_901_234_567_890.5));
    // A safe integer, and an unsafe one inside a string, pass.
    assert_eq!(read(3)["n"], 9_007_199_254_740_991_u64);
    assert_eq!(read(3)["s"], "9007199254740993");
    // Written as integers beyond 2^53, they are still refused: a double would round them.
    for (index, integer) in [(4, "9007199254740993"), (5, "-12345678901234567890")] {
        let (kind, message) = got[index].as_ref().unwrap_err();
        assert_eq!(*kind, RecordErrorKind::BadRecord);
        assert!(
            message.contains(&format!("the integer {integer}, beyond 2^53")),
            "{message}"
        );
    }
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
