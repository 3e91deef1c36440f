//! The Wasm runtime on its own: type-checking on load, a fresh instance after a trap, config
//! errors from `init`, and the ABI contract of one result per input.

use std::sync::Arc;

use bytes::Bytes;
use weir::record::{Header, Record};
use weir::registry::PluginRegistry;
use weir::runtime::{
    CALL_BYTES, LoadedPlugin, PluginError, PluginLimits, PluginRuntime, RecordErrorKind,
};

use crate::support::{plugin_registry, test_runtime};

fn load(name: &str) -> (PluginRuntime, Arc<LoadedPlugin>) {
    let runtime = test_runtime();
    let plugin = PluginRegistry::new(plugin_registry())
        .load(&runtime, name)
        .unwrap();
    (runtime, plugin)
}

#[test]
fn a_trap_replaces_the_instance_and_later_calls_succeed() {
    let (_runtime, plugin) = load("fault-panic");
    let mut instance = plugin.instantiate("{}", PluginLimits::default()).unwrap();
    assert_eq!(instance.instances_created(), 1);
    let batch = vec![
        Record::from_value("a"),
        Record::from_value("panic"),
        Record::from_value("b"),
    ];
    let results = instance.transform(&batch);
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap()[0].value, &b"a"[..]);
    assert_eq!(results[1].as_ref().unwrap_err().kind, RecordErrorKind::Trap);
    assert_eq!(results[2].as_ref().unwrap()[0].value, &b"b"[..]);
    // One instance for the whole batch's trap, one more for the trap of the replay.
    assert_eq!(instance.instances_created(), 3);
    let again = instance.transform(&[Record::from_value("c")]);
    assert_eq!(again[0].as_ref().unwrap()[0].value, &b"c"[..]);
    assert_eq!(instance.instances_created(), 3, "no trap, no new instance");
}

/// A record with every field set, its headers repeating a name and one empty.
fn full_record(value: &str) -> Record {
    Record {
        key: Some(b"key".to_vec().into()),
        value: value.as_bytes().to_vec().into(),
        headers: [
            Header {
                key: "h".into(),
                value: Bytes::from_static(b"1"),
            },
            Header {
                key: "h".into(),
                value: Bytes::new(),
            },
        ]
        .into_iter()
        .collect(),
        timestamp: Some(-7),
    }
}

#[test]
fn a_batch_world_plugin_keeps_every_field_of_a_record() {
    // fault-panic is built with the SDK, so it implements `batch-transformer`.
    let (_runtime, plugin) = load("fault-panic");
    let mut instance = plugin.instantiate("{}", PluginLimits::default()).unwrap();
    let batch = vec![
        full_record("a"),
        Record::from_value(""),
        full_record("fail"),
        full_record("b"),
    ];
    let results = instance.transform(&batch);
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap().as_slice(), &[batch[0].clone()]);
    assert_eq!(results[1].as_ref().unwrap().as_slice(), &[batch[1].clone()]);
    let failed = results[2].as_ref().unwrap_err();
    assert_eq!(failed.kind, RecordErrorKind::PluginFailure);
    assert_eq!(failed.message, "fault-panic was told to fail");
    assert_eq!(results[3].as_ref().unwrap().as_slice(), &[batch[3].clone()]);
    assert_eq!(instance.instances_created(), 1, "no trap, no new instance");
}

/// A batch several times larger than one call carries goes to the plugin in several calls
/// (`call_length`'s unit tests show where it is cut): still one result per record, in order,
/// with a failure and a trap in later calls answered for their own records.
#[test]
fn a_batch_larger_than_one_call_is_split_and_answered_in_order() {
    let (_runtime, plugin) = load("fault-panic");
    let mut instance = plugin.instantiate("{}", PluginLimits::default()).unwrap();
    let filler = "x".repeat(CALL_BYTES / 8);
    let values: Vec<String> = (0..40)
        .map(|n| match n {
            21 => "fail".to_owned(),
            30 => "panic".to_owned(),
            _ => format!("{n:02}{filler}"),
        })
        .collect();
    assert!(values.iter().map(String::len).sum::<usize>() > 4 * CALL_BYTES);
    let batch: Vec<Record> = values
        .iter()
        .map(|v| Record::from_value(v.as_str()))
        .collect();
    let results = instance.transform(&batch);
    assert_eq!(results.len(), batch.len());
    for (n, result) in results.iter().enumerate() {
        match n {
            21 => assert_eq!(
                result.as_ref().unwrap_err().kind,
                RecordErrorKind::PluginFailure
            ),
            30 => assert_eq!(result.as_ref().unwrap_err().kind, RecordErrorKind::Trap),
            _ => assert_eq!(
                result.as_ref().unwrap()[0].value,
                values[n].as_bytes(),
                "{n}"
            ),
        }
    }
    // The call holding record 30 trapped and its replay trapped on it again: two new
    // instances, as for a batch that is one call.
    assert_eq!(instance.instances_created(), 3);
}

#[test]
fn a_plugin_built_against_contract_0_1_0_still_runs() {
    let (_runtime, plugin) = load("contract-0-1-0");
    let mut instance = plugin.instantiate("{}", PluginLimits::default()).unwrap();
    let batch = vec![full_record("a"), full_record("bad"), Record::from_value("")];
    let results = instance.transform(&batch);
    assert_eq!(results.len(), 3);
    let marked = |record: &Record| {
        let mut record = record.clone();
        record.headers.push(Header {
            key: "contract".into(),
            value: Bytes::from_static(b"0.1.0"),
        });
        vec![record]
    };
    assert_eq!(results[0].as_ref().unwrap().as_slice(), &marked(&batch[0]));
    let bad = results[1].as_ref().unwrap_err();
    assert_eq!(bad.kind, RecordErrorKind::BadRecord);
    assert_eq!(bad.message, "the value is `bad`");
    assert_eq!(results[2].as_ref().unwrap().as_slice(), &marked(&batch[2]));
}

#[test]
fn an_init_that_never_returns_is_stopped_at_its_deadline() {
    let (_runtime, plugin) = load("fault-spin");
    let limits = PluginLimits {
        deadline: std::time::Duration::from_millis(200),
        ..PluginLimits::default()
    };
    let error = plugin
        .instantiate(r#"{"spin_in_init": true}"#, limits)
        .err()
        .expect("a spinning init is stopped");
    assert!(matches!(error, PluginError::Start { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        "plugin `fault-spin` could not start: init exceeded its deadline of 200 ms (limits.deadline_ms)"
    );
    // The same plugin with a calm config starts and transforms.
    let mut instance = plugin.instantiate("{}", limits).unwrap();
    let results = instance.transform(&[Record::from_value("calm")]);
    assert_eq!(results[0].as_ref().unwrap()[0].value, &b"calm"[..]);
}

#[test]
fn an_arena_plugin_calling_c_code_that_frees_an_imports_result_keeps_working() {
    let (_runtime, plugin) = load("fault-spin");
    let mut instance = plugin.instantiate("{}", PluginLimits::default()).unwrap();
    // Batches of records that read entropy through wasi-libc, with ordinary records between
    // them, over many calls: a result placed in the arena and released with C's `free` corrupts
    // dlmalloc, which traps or hands out memory still in use.
    for round in 0..32 {
        let batch: Vec<Record> = (0..64)
            .map(|n| {
                Record::from_value(if n % 2 == 0 {
                    format!("entropy {round} {n}")
                } else {
                    format!("calm {round} {n}")
                })
            })
            .collect();
        let results = instance.transform(&batch);
        for (record, result) in batch.iter().zip(&results) {
            let outputs = result
                .as_ref()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            if record.value.starts_with(b"calm") {
                assert_eq!(outputs[0].value, record.value, "round {round}");
            } else {
                assert!(outputs[0].value.starts_with(b"["), "round {round}");
            }
        }
    }
    assert_eq!(instance.instances_created(), 1, "no call trapped");
}

/// Runs `work` on its own thread and waits for it, failing the test if it has not returned
/// after `guard`: the code under test blocks forever when its deadline is not enforced, and a
/// test that hangs reports nothing.
fn returns_within<T: Send + 'static>(
    guard: std::time::Duration,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(work()));
    result
        .recv_timeout(guard)
        .unwrap_or_else(|_| panic!("{what} still blocked after {guard:?}"))
}

#[test]
fn a_plugin_blocked_in_a_sleep_is_stopped_at_its_deadline() {
    let (_runtime, plugin) = load("fault-spin");
    let limits = PluginLimits {
        deadline: std::time::Duration::from_millis(200),
        ..PluginLimits::default()
    };
    let guard = std::time::Duration::from_secs(60);
    let sleeper = Arc::clone(&plugin);
    let error = returns_within(guard, "an init sleeping for a century", move || {
        sleeper
            .instantiate(r#"{"sleep_in_init": true}"#, limits)
            .err()
    })
    .expect("a sleeping init is stopped");
    assert_eq!(
        error.to_string(),
        "plugin `fault-spin` could not start: init exceeded its deadline of 200 ms (limits.deadline_ms)"
    );

    let mut instance = plugin.instantiate("{}", limits).unwrap();
    let (instance, results) = returns_within(guard, "a record sleeping for a century", move || {
        let batch = [
            Record::from_value("a"),
            Record::from_value("sleep"),
            Record::from_value("b"),
        ];
        let results = instance.transform(&batch);
        (instance, results)
    });
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap()[0].value, &b"a"[..]);
    let timed_out = results[1].as_ref().unwrap_err();
    assert_eq!(
        timed_out.kind,
        RecordErrorKind::Timeout,
        "{}",
        timed_out.message
    );
    assert!(
        timed_out.message.contains("200 ms"),
        "{}",
        timed_out.message
    );
    assert_eq!(results[2].as_ref().unwrap()[0].value, &b"b"[..]);
    // The batch's call and the replay of the sleeping record each cost the instance.
    assert_eq!(instance.instances_created(), 3);
}

#[test]
fn init_errors_name_the_plugin_and_the_key() {
    let (_runtime, plugin) = load("pii-mask");
    let error = plugin
        .instantiate(
            r#"{"fields": "email", "colour": "red"}"#,
            PluginLimits::default(),
        )
        .err()
        .expect("unknown key rejected");
    assert!(matches!(error, PluginError::Init { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("pii-mask") && message.contains("colour"),
        "{message}"
    );
}

#[test]
fn garbage_and_core_modules_are_rejected_at_load() {
    let runtime = PluginRuntime::new(None).unwrap();
    let garbage =
        LoadedPlugin::from_bytes(&runtime, "garbage", b"definitely not wasm").unwrap_err();
    assert!(matches!(garbage, PluginError::Compile { .. }), "{garbage}");
    // The smallest valid core module: a component host must refuse it with a clear reason.
    let core = LoadedPlugin::from_bytes(&runtime, "core", b"\0asm\x01\0\0\0").unwrap_err();
    assert!(matches!(core, PluginError::Compile { .. }), "{core}");
    assert!(core.to_string().contains("core"), "{core}");
    // A file the folder's writer could not read, under a plugin's name through a symlink: the
    // refusal, shown on the status page, never quotes its bytes.
    let secret = LoadedPlugin::from_bytes(&runtime, "planted", b"SECRET=hunter2\n").unwrap_err();
    let message = secret.to_string();
    assert!(matches!(secret, PluginError::Compile { .. }), "{message}");
    for quoted in ["SECR", "0x53", "53, 45"] {
        assert!(!message.contains(quoted), "quotes the file: {message}");
    }
}

#[test]
fn versions_are_content_hashes() {
    let (runtime, plugin) = load("user-profile");
    let bytes = std::fs::read(plugin_registry().join("user-profile.wasm")).unwrap();
    let again = LoadedPlugin::from_bytes(&runtime, "user-profile", &bytes).unwrap();
    assert_eq!(plugin.version(), again.version());
    assert_eq!(plugin.sha256().len(), 64);
    assert!(plugin.sha256().starts_with(plugin.version()));
}

#[test]
fn repeated_memory_bombs_leave_host_memory_bounded() {
    let (_runtime, plugin) = load("fault-hog");
    let limits = PluginLimits {
        memory_bytes: 32 << 20,
        ..PluginLimits::default()
    };
    let mut instance = plugin.instantiate("{}", limits).unwrap();
    let resident = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap()
            / 1024
    };
    // Warm up once so the first instance's own footprint is not counted as growth.
    assert_eq!(
        instance.transform(&[Record::from_value("hog")])[0]
            .as_ref()
            .unwrap_err()
            .kind,
        RecordErrorKind::Trap
    );
    let before = resident();
    for _ in 0..20 {
        let result = instance.transform(&[Record::from_value("hog")]);
        assert_eq!(result[0].as_ref().unwrap_err().kind, RecordErrorKind::Trap);
    }
    let growth = resident().saturating_sub(before);
    // 20 bombs of 32 MiB each: without the cap and instance reuse of memory this would be 640 MiB.
    assert!(
        growth < 160,
        "host memory grew {growth} MiB over 20 memory bombs"
    );
    assert_eq!(
        instance.transform(&[Record::from_value("calm")])[0]
            .as_ref()
            .unwrap()[0]
            .value,
        &b"calm"[..]
    );
}

/// Many tiny outputs cost the host many times what they cost the plugin (a record's bookkeeping
/// against a few bytes), so a call's outputs may take no more host memory than the plugin's memory
/// limit: the record asking for more fails alone, without a trap, and a record fanning out within
/// the bound in the same batch passes.
#[test]
fn a_record_with_more_outputs_than_the_host_keeps_fails_alone() {
    // Both worlds: the batch encoding (`fault-hog`) and the contract's record list (0.1.0).
    for name in ["fault-hog", "contract-0-1-0"] {
        more_outputs_than_the_host_keeps(name);
    }
}

fn more_outputs_than_the_host_keeps(name: &str) {
    let (_runtime, plugin) = load(name);
    let limits = PluginLimits {
        memory_bytes: 32 << 20,
        ..PluginLimits::default()
    };
    let mut instance = plugin.instantiate("{}", limits).unwrap();
    let too_many = (32 << 20) / std::mem::size_of::<Record>() + 1;
    let batch = vec![
        Record::from_value("a"),
        Record::from_value(format!("flood {too_many}")),
        Record::from_value("flood 1000"),
    ];
    let results = instance.transform(&batch);
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap()[0].value, &b"a"[..], "{name}");
    let refused = match &results[1] {
        Err(error) => error,
        Ok(outputs) => panic!("{name}: {} outputs kept, beyond the budget", outputs.len()),
    };
    assert_eq!(
        refused.kind,
        RecordErrorKind::PluginFailure,
        "{name}: {refused:?}"
    );
    assert!(
        refused.message.contains("limits.memory_mib"),
        "{}",
        refused.message
    );
    assert_eq!(results[2].as_ref().unwrap().len(), 1000, "{name}");
    assert_eq!(
        instance.instances_created(),
        1,
        "{name}: no trap, no new instance"
    );
}

/// What a call's results may bring into the host follows `limits.memory_mib` (twice it, for the
/// bytes and their bookkeeping), not wasmtime's fixed 128 MiB: a plugin given 512 MiB returns a
/// 160 MiB record.
#[test]
fn a_plugin_given_the_memory_returns_a_record_larger_than_wasmtimes_default_bound() {
    let (_runtime, plugin) = load("contract-0-1-0");
    let limits = PluginLimits {
        memory_bytes: 512 << 20,
        // Time is not what this test is about: filling 160 MiB on a busy machine may take a while.
        deadline: std::time::Duration::from_secs(120),
        ..PluginLimits::default()
    };
    let mut instance = plugin.instantiate("{}", limits).unwrap();
    let results = instance.transform(&[Record::from_value("bulk 160")]);
    match &results[0] {
        Ok(outputs) => assert_eq!(outputs[0].value.len(), 160 << 20),
        Err(error) => panic!("the record failed: {}", error.message),
    }
}

/// A plugin that traps on every call of several records makes the host call it once per
/// record, and each call may return as much as the plugin's memory holds: the batch's outputs
/// together are bounded (twice its bytes plus twice `limits.memory_mib`), and the records past
/// the bound fail instead of the host holding records times the plugin's memory.
#[test]
fn a_batchs_outputs_are_bounded_however_many_calls_it_takes() {
    let (_runtime, plugin) = load("contract-0-1-0");
    let limits = PluginLimits {
        memory_bytes: 16 << 20,
        deadline: std::time::Duration::from_secs(120),
        batch_deadline: std::time::Duration::from_secs(600),
        ..PluginLimits::default()
    };
    let mut instance = plugin.instantiate("{}", limits).unwrap();
    // Together the five outputs need 50 MiB: the plugin runs out of memory on the batch's call,
    // then returns 10 MiB from each record's own call.
    let batch: Vec<Record> = (0..5).map(|_| Record::from_value("bulk 10")).collect();
    let results = instance.transform(&batch);
    assert_eq!(results.len(), 5);
    for (n, result) in results.iter().enumerate() {
        match (n, result) {
            (0..=2, Ok(outputs)) => assert_eq!(outputs[0].value.len(), 10 << 20),
            (0..=2, Err(error)) => panic!("record {n} failed: {}", error.message),
            (_, Ok(_)) => panic!("record {n}'s 10 MiB kept past the batch's 32 MiB bound"),
            (_, Err(error)) => {
                assert_eq!(
                    error.kind,
                    RecordErrorKind::PluginFailure,
                    "{}",
                    error.message
                );
                assert!(
                    error.message.contains("limits.memory_mib"),
                    "{}",
                    error.message
                );
            }
        }
    }
}

#[test]
fn history_keeps_the_last_five_versions_and_rollback_walks_back_through_them() {
    use weir::registry::{HISTORY_LIMIT, PluginSlots, PluginVersion, RollbackError};
    let runtime = test_runtime();
    let slots = PluginSlots::default();
    // Seven different components deployed in turn under one name: seven versions of `swap`.
    let components = [
        "user-profile",
        "pii-mask",
        "filter",
        "fault-panic",
        "fault-spin",
        "fault-hog",
        "fault-escape",
    ];
    let versions: Vec<String> = components
        .iter()
        .map(|component| {
            let bytes = std::fs::read(plugin_registry().join(format!("{component}.wasm"))).unwrap();
            let plugin = LoadedPlugin::from_bytes(&runtime, "swap", &bytes).unwrap();
            let version = plugin.version().to_owned();
            slots.activate(PluginVersion::bare(plugin));
            version
        })
        .collect();
    assert!(
        versions.len() > HISTORY_LIMIT + 1,
        "enough versions to overflow the history"
    );
    let described = slots.describe();
    let current = versions.last().unwrap();
    assert_eq!(&described[0].current.version, current);
    let kept: Vec<&str> = versions[..versions.len() - 1]
        .iter()
        .rev()
        .take(HISTORY_LIMIT)
        .map(String::as_str)
        .collect();
    let history: Vec<&str> = described[0]
        .history
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(
        history, kept,
        "the newest {HISTORY_LIMIT} earlier versions, newest first"
    );
    for expected in kept {
        assert_eq!(slots.rollback("swap").unwrap().plugin.version(), expected);
    }
    assert!(matches!(
        slots.rollback("swap"),
        Err(RollbackError::NoHistory(_))
    ));
}

#[test]
fn a_plugin_writing_to_stderr_on_every_record_never_fills_it_up() {
    let (_runtime, plugin) = load("fault-panic");
    let mut instance = plugin.instantiate("{}", PluginLimits::default()).unwrap();
    // About 1 KiB of stderr per record, over 300 KiB in all on one instance: a bounded pipe that
    // refused writes once full made the plugin panic ("failed printing to stderr") part-way.
    for batch in 0..40 {
        let records: Vec<Record> = (0..8)
            .map(|i| Record::from_value(format!("chatter {}", batch * 8 + i)))
            .collect();
        let results = instance.transform(&records);
        for (record, result) in records.iter().zip(&results) {
            let outputs = result
                .as_ref()
                .unwrap_or_else(|e| panic!("batch {batch}: {e}"));
            assert_eq!(outputs[0].value, record.value);
        }
    }
    assert_eq!(instance.instances_created(), 1, "no trap along the way");
    // The tail kept is still the one that explains a trap.
    let panicked = instance.transform(&[Record::from_value("panic")]);
    let error = panicked[0].as_ref().unwrap_err();
    assert_eq!(error.kind, RecordErrorKind::Trap);
    assert!(
        error.message.contains("fault-panic was told to panic"),
        "{}",
        error.message
    );
}

/// VmHWM (peak resident) and VmRSS of process `pid`, in MiB.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// `/metrics` of the `weir run` whose JSON log is at `log_path`, from the address its
/// `Admin API listening.` line names.
fn scrape_metrics(log_path: &std::path::Path) -> String {
    use std::io::{Read, Write};
    // The admin server starts after the pipelines, so a short run may have written every record
    // before the line is logged: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let addr = loop {
        let log = std::fs::read_to_string(log_path).unwrap();
        let addr = log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["message"] == "Admin API listening.")
            .and_then(|line| line["addr"].as_str().map(str::to_owned));
        match addr {
            Some(addr) => break addr,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            None => panic!("no `Admin API listening.` line in:\n{log}"),
        }
    };
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[test]
fn a_plugin_logging_a_mebibyte_per_record_leaves_the_host_small_and_records_flowing() {
    use weir::runtime::MAX_LOG_MESSAGE_BYTES;
    const RECORDS: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    std::fs::copy(
        plugin_registry().join("fault-loud.wasm"),
        registry.join("fault-loud.wasm"),
    )
    .unwrap();
    crate::support::append_numbered(&dir.path().join("input.txt"), 0..RECORDS);
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
        [[pipeline]]
        name = "loud"
        source = { type = "file", path = "input.txt", follow = true }
        transforms = [{ plugin = "fault-loud" }]
        sink = { type = "file", path = "out.jsonl" }
        dead_letter = { type = "file", path = "dlq.jsonl" }
        "#,
    )
    .unwrap();
    let log_path = dir.path().join("weir.log");
    let mut child = crate::support::weir()
        .current_dir(dir.path())
        .args([
            "--log-format",
            "json",
            "run",
            "p.toml",
            "--admin",
            "127.0.0.1:0",
            "--no-watch",
        ])
        .arg("--plugins")
        .arg(&registry)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env("WEIR_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = dir.path().join("out.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut peak_rss = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "weir exited early ({status}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        peak_rss = peak_rss.max(memory_of(pid).1);
        let written = std::fs::read_to_string(&out)
            .map(|text| text.lines().count() as u64)
            .unwrap_or(0);
        if written >= RECORDS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {RECORDS} records in out.jsonl; {written} so far"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (high_water, resident) = memory_of(pid);
    let metrics = scrape_metrics(&log_path);
    let version = weir::runtime::LoadedPlugin::from_bytes(
        &test_runtime(),
        "fault-loud",
        &std::fs::read(registry.join("fault-loud.wasm")).unwrap(),
    )
    .unwrap()
    .version()
    .to_owned();
    // Every call carried a 1 MiB counter name: each one dropped and counted, whatever the speed.
    assert!(
        metrics.contains(&format!(
            "weir_plugin_host_calls_dropped_total{{plugin=\"fault-loud\",version=\"{version}\",call=\"counter-add\"}} {RECORDS}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "weir_plugin_counter_total{{plugin=\"fault-loud\",version=\"{version}\",name=\"records\"}} {RECORDS}\n"
        )),
        "counters with proper names still count: {metrics}"
    );
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(child.wait().unwrap().success(), "weir exits 0 on SIGTERM");

    let log = std::fs::read_to_string(&log_path).unwrap();
    // Unbounded, the log alone would hold RECORDS MiB.
    assert!(
        log.len() < 8 << 20,
        "the host's log grew to {} bytes for {RECORDS} records",
        log.len()
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let plugin_lines: Vec<&str> = lines
        .iter()
        .filter(|line| line["plugin"] == "fault-loud")
        .filter_map(|line| line["message"].as_str())
        .filter(|message| message.starts_with("xxxx"))
        .collect();
    assert!(
        !plugin_lines.is_empty(),
        "the plugin's lines still reach the log"
    );
    assert!(
        plugin_lines
            .iter()
            .all(|message| message.len() <= MAX_LOG_MESSAGE_BYTES + 64),
        "every plugin line is cut to {MAX_LOG_MESSAGE_BYTES} bytes"
    );
    let reported_drops: u64 = lines
        .iter()
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Plugin logs more than"))
        })
        .filter_map(|line| line["dropped"].as_u64())
        .sum();
    assert!(
        plugin_lines.len() as u64 + reported_drops <= RECORDS,
        "{} lines written and {reported_drops} reported dropped, for {RECORDS} calls",
        plugin_lines.len()
    );
    // The records flowed, unchanged and not dead-lettered.
    let rows = crate::support::read_json_lines(&out);
    assert_eq!(rows.len() as u64, RECORDS);
    assert!(rows.iter().enumerate().all(|(n, row)| row["n"] == n as u64));
    assert!(
        !dir.path().join("dlq.jsonl").exists()
            || crate::support::read_json_lines(&dir.path().join("dlq.jsonl")).is_empty()
    );
    eprintln!(
        "weir run with a 1 MiB-per-record logger: VmHWM {high_water} MiB, VmRSS {resident} MiB (sampled peak {peak_rss} MiB), {} plugin lines logged, {reported_drops} reported dropped, log {} bytes",
        plugin_lines.len(),
        log.len()
    );
    assert!(
        high_water < 384,
        "weir's peak resident memory was {high_water} MiB"
    );
}

#[test]
fn user_profile_refuses_deeply_nested_results_as_a_bad_record_without_trapping() {
    let (_runtime, plugin) = load("user-profile");
    let mut instance = plugin.instantiate("{}", PluginLimits::default()).unwrap();
    for depth in [10, 63, 64, 200, 5_000] {
        let value = format!("{}{}", r#"{"results":["#.repeat(depth), "]}".repeat(depth));
        let results = instance.transform(&[Record::from_value(value)]);
        let error = results[0].as_ref().expect_err("nested results are refused");
        assert_eq!(
            error.kind,
            RecordErrorKind::BadRecord,
            "depth {depth}: {error}"
        );
    }
    assert_eq!(instance.instances_created(), 1, "no call trapped");
}
