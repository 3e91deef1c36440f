//! Judging plugins fairly: the deadline is per record, so one record that spins in a batch of a
//! thousand is the only dead letter and a slow but fine plugin passes large batches; automatic
//! rollback blames a new version only for its own failures (plugin failures, traps, timeouts),
//! never for input it rightly judges malformed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir::config::PipelineFile;
use weir::pipeline::{self, PipelineStats};
use weir::record::Record;
use weir::registry::{Deployer, PluginRegistry, PluginSlots, RollbackPolicy};
use weir::runtime::{Grants, LoadedPlugin, PluginLimits, RecordErrorKind};

use crate::hot_swap::{component, variant};
use crate::support::{FileRun, plugin_registry, read_json_lines, test_runtime, wait_for};
use crate::swappable::drop_in;

fn spin_plugin() -> Arc<LoadedPlugin> {
    PluginRegistry::new(plugin_registry())
        .load(&test_runtime(), "fault-spin")
        .unwrap()
}

/// 1,000 records in one batch, record 500 spinning: it alone times out, on its own deadline,
/// and the other 999 arrive in order.
#[tokio::test(flavor = "multi_thread")]
async fn one_spinning_record_in_a_batch_of_a_thousand_is_the_only_dead_letter() {
    let lines: Vec<String> = (0..1_000)
        .map(|n| {
            if n == 500 {
                format!("{{\"n\":{n},\"cmd\":\"spin\"}}")
            } else {
                format!("{{\"n\":{n}}}")
            }
        })
        .collect();
    let files = FileRun::new(&lines);
    let report = files
        .run(
            "judging-spin",
            r#"transforms = [{ plugin = "fault-spin" }]
            batch = { size = 1000 }
            limits = { deadline_ms = 200, batch_deadline_ms = 2000 }"#,
        )
        .await;
    assert_eq!(
        (report.records_in, report.records_out, report.dead_lettered),
        (1_000, 999, 1)
    );
    let ns: Vec<i64> = read_json_lines(&files.out)
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (0..1_000).filter(|n| *n != 500).collect();
    assert_eq!(ns, expected, "the other 999 arrive, in order");
    let dead = read_json_lines(&files.dlq);
    assert_eq!(dead.len(), 1);
    let headers = &dead[0]["headers"];
    assert_eq!(headers["weir.source.offset"], "501");
    assert_eq!(headers["weir.error.kind"], "timeout");
    let reason = headers["weir.error"].as_str().unwrap();
    assert!(
        reason.contains("deadline of 200 ms on this record"),
        "judged on its own deadline: {reason}"
    );
}

/// Three spinners among a thousand records: exactly those three time out, and the replay after
/// the batch timed out needs a fresh instance only after each of them.
#[test]
fn several_spinning_records_each_fail_alone() {
    let plugin = spin_plugin();
    let limits = PluginLimits {
        deadline: Duration::from_millis(250),
        batch_deadline: Duration::from_millis(1_000),
        ..PluginLimits::default()
    };
    let mut instance = plugin.instantiate("{}", limits).unwrap();
    let spinners = [3usize, 404, 998];
    let batch: Vec<Record> = (0..1_000)
        .map(|n| {
            if spinners.contains(&n) {
                Record::from_value(format!("{{\"n\":{n},\"cmd\":\"spin\"}}"))
            } else {
                Record::from_value(format!("{{\"n\":{n}}}"))
            }
        })
        .collect();
    let results = instance.transform(&batch);
    assert_eq!(results.len(), 1_000);
    for (n, result) in results.iter().enumerate() {
        if spinners.contains(&n) {
            assert_eq!(result.as_ref().unwrap_err().kind, RecordErrorKind::Timeout);
        } else {
            assert_eq!(
                result.as_ref().unwrap()[0].value,
                batch[n].value,
                "record {n}"
            );
        }
    }
    // The first instance ended with the batch's timeout; the replay started a second and one
    // more after each spinner.
    assert_eq!(instance.instances_created(), 1 + 1 + 3);
    assert_eq!(
        instance.max_call_records(),
        None,
        "a batch that timed out because of a spinner is no sign of a slow plugin"
    );
}

/// Limits that give each record far more than the 20 ms it takes, with the real clock the
/// `slow_ms` records need.
fn slow_limits(deadline_ms: u64, batch_deadline_ms: u64) -> PluginLimits {
    PluginLimits {
        deadline: Duration::from_millis(deadline_ms),
        batch_deadline: Duration::from_millis(batch_deadline_ms),
        grants: Grants {
            clock: true,
            random: false,
        },
        ..PluginLimits::default()
    }
}

fn slow_batch(records: usize, slow_ms: u64) -> Vec<Record> {
    (0..records)
        .map(|n| Record::from_value(format!("{{\"n\":{n},\"slow_ms\":{slow_ms}}}")))
        .collect()
}

/// 50 records of 20 ms each take a second in all, five times one record's deadline: the batch
/// gets the deadline once per record, so it passes in one call with no timeout.
#[test]
fn a_slow_but_fine_plugin_passes_a_large_batch_in_one_call() {
    let plugin = spin_plugin();
    let mut instance = plugin.instantiate("{}", slow_limits(200, 10_000)).unwrap();
    let batch = slow_batch(50, 20);
    let results = instance.transform(&batch);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(instance.instances_created(), 1, "no timeout, no replay");
    assert_eq!(instance.max_call_records(), None);
}

/// A batch that needs more than the batch deadline although each record keeps its own: it is
/// replayed once without any dead letter, and later batches are split into calls that fit.
#[test]
fn a_batch_slower_than_the_batch_deadline_is_split_into_calls_that_fit() {
    let plugin = spin_plugin();
    let mut instance = plugin.instantiate("{}", slow_limits(1_000, 1_000)).unwrap();
    // 40 records of 50 ms: at least 2 s, twice the batch deadline.
    let batch = slow_batch(40, 50);
    let results = instance.transform(&batch);
    assert!(results.iter().all(Result::is_ok), "no record failed");
    assert_eq!(
        instance.instances_created(),
        2,
        "one timeout, then the replay"
    );
    let per_call = instance.max_call_records().expect("calls are split");
    assert!((1..=20).contains(&per_call), "{per_call}");

    let results = instance.transform(&batch);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        instance.instances_created(),
        2,
        "the split calls fit the batch deadline"
    );
}

/// A pipeline tailing `input` through plugin `user-profile` from a watched registry, with a
/// strict rollback policy: more than 20% of a new version's first 100 records failing rolls it
/// back.
struct Deployed {
    _dir: tempfile::TempDir,
    registry: std::path::PathBuf,
    input: std::path::PathBuf,
    out: std::path::PathBuf,
    dlq: std::path::PathBuf,
    slots: PluginSlots,
    shutdown: watch::Sender<bool>,
    run: tokio::task::JoinHandle<Result<pipeline::PipelineReport, pipeline::PipelineError>>,
    _watch: weir::registry::WatchHandle,
}

const STRICT: RollbackPolicy = RollbackPolicy {
    window: 100,
    max_failure_ratio: 0.2,
};

async fn deploy_and_run(first: &[u8]) -> Deployed {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    drop_in(&registry, "user-profile.wasm", first);
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, "").unwrap();
    let (out, dlq) = (dir.path().join("out.jsonl"), dir.path().join("dlq.jsonl"));
    let file = PipelineFile::parse(
        Path::new("judging.toml"),
        &format!(
            r#"
            [[pipeline]]
            name = "judging-rollback"
            source = {{ type = "file", path = "{}", follow = true }}
            transforms = [{{ plugin = "user-profile" }}]
            sink = {{ type = "file", path = "{}" }}
            dead_letter = {{ type = "file", path = "{}" }}
            batch = {{ size = 16, linger_ms = 5 }}
            "#,
            input.display(),
            out.display(),
            dlq.display()
        ),
    )
    .unwrap();
    let slots = PluginSlots::new(STRICT);
    let deployer = Deployer::new(
        PluginRegistry::new(&registry),
        test_runtime(),
        slots.clone(),
        &file,
    );
    deployer.deploy("user-profile").unwrap();
    let watch_handle = weir::registry::watch(deployer, Duration::from_millis(20)).unwrap();
    let config = file.pipelines.into_iter().next().unwrap();
    let chain = pipeline::build_chain(&config, &slots).unwrap();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let run = tokio::spawn(pipeline::run(
        config,
        chain,
        Arc::new(PipelineStats::default()),
        shutdown_rx,
    ));
    Deployed {
        _dir: dir,
        registry,
        input,
        out,
        dlq,
        slots,
        shutdown,
        run,
        _watch: watch_handle,
    }
}

impl Deployed {
    fn append(&self, lines: &[String]) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.input)
            .unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
    }

    async fn deploy(&self, bytes: &[u8], generation: u64) {
        drop_in(&self.registry, "user-profile.wasm", bytes);
        let slot = self.slots.get("user-profile").unwrap();
        wait_for(
            &format!("generation {generation} to activate"),
            Duration::from_secs(60),
            move || slot.generation() == generation,
        )
        .await;
    }

    /// Waits until `outputs` lines are in the sink and `dead` in the dead-letter file.
    async fn wait_for_lines(&self, outputs: usize, dead: usize) {
        let (out, dlq) = (self.out.clone(), self.dlq.clone());
        let lines = |path: &Path| {
            std::fs::read_to_string(path).map_or(0, |text| text.matches('\n').count())
        };
        wait_for(
            &format!("{outputs} outputs and {dead} dead letters"),
            Duration::from_secs(120),
            move || lines(&out) >= outputs && lines(&dlq) >= dead,
        )
        .await;
    }

    fn version(&self) -> String {
        let (_, version) = self.slots.get("user-profile").unwrap().current();
        version.plugin.version().to_owned()
    }
}

/// A new version meets 30% malformed users at once, more than the 20% the policy tolerates: it
/// judges them `bad-record`, the input's fault, and is kept. A version that then traps on its
/// input is still rolled back, to the version that was kept.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_right_after_a_deploy_does_not_roll_the_new_version_back() {
    let base = component("user-profile");
    let deployed = deploy_and_run(&variant(&base, "first")).await;
    let second = variant(&base, "second");
    deployed.deploy(&second, 1).await;
    let second_version = deployed.version();

    let mut generator = weir::generator::UserGenerator::new(12);
    let lines: Vec<String> = (0..300)
        .map(|n| {
            let mut user = generator.next_user();
            if n % 10 < 3 {
                user["login"].as_object_mut().unwrap().remove("uuid");
            }
            user.to_string()
        })
        .collect();
    deployed.append(&lines);
    deployed.wait_for_lines(210, 90).await;

    let slot = deployed.slots.get("user-profile").unwrap();
    assert_eq!(slot.generation(), 1, "no rollback");
    assert_eq!(deployed.version(), second_version);
    let info = deployed.slots.describe().remove(0);
    assert_eq!((info.rollbacks, info.last_rollback), (0, None));
    let dead = read_json_lines(&deployed.dlq);
    assert_eq!(dead.len(), 90);
    for entry in &dead {
        let headers = &entry["headers"];
        assert_eq!(headers["weir.error.kind"], "bad-record");
        assert_eq!(headers["weir.plugin.version"], second_version.as_str());
    }

    // A version that traps on every record is its own fault: rolled back to the second.
    deployed
        .deploy(&variant(&component("fault-panic"), "trapper"), 2)
        .await;
    let panics: Vec<String> = (0..60)
        .map(|n| format!("{{\"n\":{n},\"cmd\":\"panic\"}}"))
        .collect();
    deployed.append(&panics);
    let slot = deployed.slots.get("user-profile").unwrap();
    wait_for(
        "the trapping version to be rolled back",
        Duration::from_secs(120),
        move || slot.generation() == 3,
    )
    .await;
    assert_eq!(deployed.version(), second_version);
    let reason = deployed.slots.describe().remove(0).last_rollback.unwrap();
    assert!(
        reason.contains("records failed (plugin failures, traps or timeouts")
            && reason.contains("100-record window"),
        "{reason}"
    );

    deployed.shutdown.send(true).unwrap();
    deployed.run.await.unwrap().unwrap();
}
