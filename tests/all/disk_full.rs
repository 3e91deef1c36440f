//! A full disk under the file connectors, on a real filesystem that fills: a tmpfs of its own
//! that each test mounts (which needs root, as CI runs) and fills up with a file of its own.
//! While the sink's file, its dead-letter file or the source's checkpoint cannot grow, the
//! pipeline retries, commits nothing it has not written and tears no line; once there is room
//! again every record arrives exactly once.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::{Spawned, spawn_pipeline, wait_for};

/// The records each test reads: `{"n":N}` for N below this, every [`LEGACY_EVERY`]th one refused
/// by `fault-picky` (a dead letter).
const RECORDS: u64 = 20_000;
/// Which records `fault-picky` refuses: those whose `n` is a multiple of this.
const LEGACY_EVERY: u64 = 500;

/// A tmpfs mounted on a temporary folder and unmounted when dropped: a disk that fills up.
pub(crate) struct SmallDisk {
    folder: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes`. Fails the test, saying why, where mounting is not allowed.
    pub(crate) fn mount(bytes: u64) -> SmallDisk {
        let folder = tempfile::tempdir().unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("weir-test-disk")
            .arg(folder.path())
            .output()
            .expect("`mount` runs");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs on {} ({}): the disk-full tests make a small filesystem of their own, which needs root, as CI has",
            folder.path().display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        SmallDisk { folder }
    }

    pub(crate) fn path(&self) -> &Path {
        self.folder.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Takes all the space but `free` bytes with a file of its own, found by writing until the
    /// filesystem refuses and cutting that file back.
    pub(crate) fn fill_leaving(&self, free: u64) {
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let block = [0u8; 4096];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", self.filler().display()),
            }
        }
        assert!(
            written > free,
            "the disk holds {written} bytes, not more than the {free} to leave free"
        );
        file.set_len(written - free).unwrap();
    }

    /// Gives the space back.
    pub(crate) fn make_room(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a pipeline that failed the test may still hold a file open there.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.folder.path())
            .status();
    }
}

/// A pipeline from `input` through `fault-picky` into `out`, dead letters into `dlq`, its
/// checkpoint at `checkpoint`; it ends with the file unless it is to `follow` it.
fn pipeline(input: &Path, checkpoint: &Path, out: &Path, dlq: &Path, follow: bool) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "disk-full"
        source = {{ type = "file", path = "{}", checkpoint = "{}", follow = {follow} }}
        transforms = [{{ plugin = "fault-picky" }}]
        sink = {{ type = "file", path = "{}" }}
        dead_letter = {{ type = "file", path = "{}" }}
        batch = {{ size = 256, linger_ms = 5 }}
        "#,
        input.display(),
        checkpoint.display(),
        out.display(),
        dlq.display()
    )
}

/// The input: `{"n":N}` for every N below [`RECORDS`], `{"n":N,"format":"legacy"}` for the
/// multiples of [`LEGACY_EVERY`].
fn write_input(path: &Path) {
    let mut text = String::new();
    for n in 0..RECORDS {
        if n % LEGACY_EVERY == 0 {
            text.push_str(&format!("{{\"n\":{n},\"format\":\"legacy\"}}\n"));
        } else {
            text.push_str(&format!("{{\"n\":{n}}}\n"));
        }
    }
    std::fs::write(path, text).unwrap();
}

/// The whole lines of `path` as JSON; a last line without its newline yet (a write under way)
/// is left out.
fn whole_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read(path).unwrap_or_default();
    text.split_inclusive(|&b| b == b'\n')
        .filter(|line| line.ends_with(b"\n"))
        .map(|line| {
            serde_json::from_slice(line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)))
        })
        .collect()
}

/// The `n` of each whole line of a sink's file (`value` encoding), in file order.
fn values_written(path: &Path) -> Vec<u64> {
    whole_lines(path)
        .iter()
        .map(|value| value["n"].as_u64().unwrap())
        .collect()
}

/// The `n` of each whole dead letter (`envelope` encoding: the record's value is a string).
fn dead_letters_written(path: &Path) -> Vec<u64> {
    whole_lines(path)
        .iter()
        .map(|envelope| {
            let value: serde_json::Value =
                serde_json::from_str(envelope["value"].as_str().unwrap()).unwrap();
            value["n"].as_u64().unwrap()
        })
        .collect()
}

/// The line the checkpoint says was committed last, 0 while there is none.
fn committed_line(checkpoint: &Path) -> u64 {
    std::fs::read_to_string(checkpoint)
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Every record of the lines up to the committed one is in the sink's file or the dead-letter
/// file: nothing was committed that is not written.
fn assert_committed_is_written(checkpoint: &Path, out: &Path, dlq: &Path) {
    // Read before the files, which only grow while the pipeline runs.
    let committed = committed_line(checkpoint);
    let written: BTreeSet<u64> = values_written(out)
        .into_iter()
        .chain(dead_letters_written(dlq))
        .collect();
    // Line k holds record n = k - 1.
    let missing: Vec<u64> = (0..committed).filter(|n| !written.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "line {committed} is committed, but records {:?} (of {}) are in neither file",
        &missing[..missing.len().min(10)],
        missing.len()
    );
}

/// Once there is room, the run ends by itself with every record in its file once, in order,
/// no line torn, and the last line committed.
async fn assert_finishes_whole(run: Spawned, checkpoint: &Path, out: &Path, dlq: &Path) {
    let report = tokio::time::timeout(Duration::from_secs(120), run.run)
        .await
        .expect("the pipeline ends within two minutes once there is room")
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}"));
    let legacy: Vec<u64> = (0..RECORDS).filter(|n| n % LEGACY_EVERY == 0).collect();
    let good: Vec<u64> = (0..RECORDS).filter(|n| n % LEGACY_EVERY != 0).collect();
    for (path, what) in [(out, "sink's"), (dlq, "dead-letter")] {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "the {what} file ends in a torn line"
        );
    }
    assert_eq!(values_written(out), good, "the sink's file");
    assert_eq!(dead_letters_written(dlq), legacy, "the dead-letter file");
    assert_eq!(
        (report.records_out, report.dead_lettered),
        (good.len() as u64, legacy.len() as u64)
    );
    assert_eq!(committed_line(checkpoint), RECORDS);
}

/// Where a test's files are: the input on the local disk, each of the others on the small disk
/// or beside the input.
struct Scene {
    disk: SmallDisk,
    _local: tempfile::TempDir,
    input: PathBuf,
    checkpoint: PathBuf,
    out: PathBuf,
    dlq: PathBuf,
}

/// A small disk of `bytes`, filled but for `free`; the input written; the checkpoint, the
/// sink's file and the dead-letter file on the small disk where `on_disk` says so, in that
/// order.
fn scene(bytes: u64, free: u64, on_disk: [bool; 3]) -> Scene {
    let disk = SmallDisk::mount(bytes);
    let local = tempfile::tempdir().unwrap();
    let input = local.path().join("in.jsonl");
    write_input(&input);
    disk.fill_leaving(free);
    let [checkpoint, out, dlq] =
        [(0, "in.offset"), (1, "out.jsonl"), (2, "dlq.jsonl")].map(|(which, name)| {
            if on_disk[which] {
                disk.path().join(name)
            } else {
                local.path().join(name)
            }
        });
    Scene {
        disk,
        _local: local,
        input,
        checkpoint,
        out,
        dlq,
    }
}

impl Scene {
    fn start(&self, follow: bool) -> Spawned {
        spawn_pipeline(&pipeline(
            &self.input,
            &self.checkpoint,
            &self.out,
            &self.dlq,
            follow,
        ))
    }
}

/// Waits until `retries` of the running pipeline counts three refused and retried `what`, and
/// checks that the pipeline waits for room rather than ending.
async fn retried_three_times(
    run: &Spawned,
    what: &str,
    retries: impl Fn(&weir::pipeline::PipelineStats) -> u64,
) {
    wait_for(
        &format!("{what} refused for want of space, and retried"),
        Duration::from_secs(120),
        || retries(&run.stats) >= 3 || run.run.is_finished(),
    )
    .await;
    assert!(
        !run.run.is_finished(),
        "the pipeline ended on a full disk instead of waiting for room"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_whose_disk_fills_waits_for_room_and_then_writes_every_record_once() {
    // The output, about 240 KB of lines and 40 dead letters, has a third of that.
    let scene = scene(1024 * 1024, 80 * 1024, [true, true, true]);
    let Scene {
        checkpoint,
        out,
        dlq,
        ..
    } = &scene;
    let run = scene.start(false);
    retried_three_times(&run, "writes", |stats| {
        stats.sink_retries().load(Ordering::Relaxed)
            + stats.dead_letter_retries().load(Ordering::Relaxed)
    })
    .await;
    assert_committed_is_written(checkpoint, out, dlq);
    assert!(
        committed_line(checkpoint) < RECORDS,
        "everything committed on a full disk"
    );
    scene.disk.make_room();
    assert_finishes_whole(run, checkpoint, out, dlq).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_file_on_a_full_disk_holds_back_the_commits_until_it_takes_its_records() {
    let scene = scene(256 * 1024, 0, [false, false, true]);
    let Scene {
        checkpoint,
        out,
        dlq,
        ..
    } = &scene;
    let run = scene.start(false);
    retried_three_times(&run, "dead-letter writes", |stats| {
        stats.dead_letter_retries().load(Ordering::Relaxed)
    })
    .await;
    // The first record is a dead letter (n = 0): no line may be committed before it lands.
    assert_eq!(
        committed_line(checkpoint),
        0,
        "a position committed while its batch's dead letter was not written"
    );
    assert_committed_is_written(checkpoint, out, dlq);
    scene.disk.make_room();
    assert_finishes_whole(run, checkpoint, out, dlq).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_on_a_full_disk_holds_up_no_record_and_catches_up_once_there_is_room() {
    let scene = scene(256 * 1024, 0, [true, false, false]);
    let Scene {
        checkpoint,
        out,
        dlq,
        ..
    } = &scene;
    let run = scene.start(true);
    let every_good = (RECORDS - RECORDS / LEGACY_EVERY) as usize;
    wait_for(
        "every record written while no checkpoint can be",
        Duration::from_secs(120),
        || values_written(out).len() == every_good || run.run.is_finished(),
    )
    .await;
    assert!(!run.run.is_finished(), "the followed file's pipeline ended");
    assert!(
        run.stats.commit_failures().load(Ordering::Relaxed) >= 1,
        "no failed commit counted"
    );
    assert_eq!(
        committed_line(checkpoint),
        0,
        "a checkpoint was written to a full disk"
    );
    scene.disk.make_room();
    wait_for(
        "the checkpoint to catch up once there is room",
        Duration::from_secs(120),
        || committed_line(checkpoint) == RECORDS || run.run.is_finished(),
    )
    .await;
    run.shutdown.send(true).unwrap();
    assert_finishes_whole(run, checkpoint, out, dlq).await;
}
