//! The Wasm runtime on its own: type-checking on load, a fresh instance after a trap, config
//! errors from `init`, and the ABI contract of one result per input.

use std::sync::Arc;

use weir::record::Record;
use weir::registry::PluginRegistry;
use weir::runtime::{LoadedPlugin, PluginError, PluginLimits, PluginRuntime, RecordErrorKind};

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
    assert_eq!(results[0].as_ref().unwrap()[0].value, b"a");
    assert_eq!(results[1].as_ref().unwrap_err().kind, RecordErrorKind::Trap);
    assert_eq!(results[2].as_ref().unwrap()[0].value, b"b");
    // One instance for the whole batch's trap, one more for the trap of the replay.
    assert_eq!(instance.instances_created(), 3);
    let again = instance.transform(&[Record::from_value("c")]);
    assert_eq!(again[0].as_ref().unwrap()[0].value, b"c");
    assert_eq!(instance.instances_created(), 3, "no trap, no new instance");
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
        b"calm"
    );
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
