//! The same pipeline file run twice, as by a supervisor and a person at once: the second process
//! is refused the files the first writes (its sink's file, its checkpoint) before it touches
//! them, names the file and says what to do, and the first goes on undisturbed.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::{exit_within, line_count, wait_for, weir};

/// A followed file, checkpointed, into a file sink.
fn pipeline(dir: &Path, out: &str, checkpoint: &str) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "lines"
        source = {{ type = "file", path = "{input}", follow = true, checkpoint = "{checkpoint}" }}
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        batch = {{ size = 10, linger_ms = 5 }}
        "#,
        input = dir.join("in.jsonl").display(),
        checkpoint = dir.join(checkpoint).display(),
        out = dir.join(out).display(),
        dlq = dir.join(format!("{out}.dlq")).display(),
    )
}

/// A `weir run` process, killed when dropped, so a failing assertion leaves none running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, file: &str) -> Running {
    Running(
        weir()
            .current_dir(dir)
            .args(["run", file, "--no-admin", "--no-watch"])
            .env("WEIR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the weir binary runs"),
    )
}

/// Runs `file` in a second process, which must stop of itself; returns its log.
fn refused_run(dir: &Path, file: &str) -> String {
    let log_path = dir.join(format!("{file}.log"));
    let mut second = Running(
        weir()
            .current_dir(dir)
            .args(["run", file, "--no-admin", "--no-watch"])
            .env("WEIR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("the weir binary runs"),
    );
    let ended = exit_within(&mut second.0, Duration::from_secs(60));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let status =
        ended.unwrap_or_else(|| panic!("the second process of {file} went on running:\n{log}"));
    assert!(!status.success(), "{log}");
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_is_refused_the_files_the_first_writes_and_the_first_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    let lines =
        |from: u32, to: u32| -> String { (from..to).map(|n| format!("{{\"n\":{n}}}\n")).collect() };
    std::fs::write(&input, lines(0, 100)).unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        pipeline(dir.path(), "out.jsonl", "in.offset"),
    )
    .unwrap();
    let first = start(dir.path(), "p.toml");
    wait_for(
        "the first process's output",
        Duration::from_secs(60),
        || line_count(&out) == 100,
    )
    .await;

    // The same file run again: its sink would write the first's file.
    let log = refused_run(dir.path(), "p.toml");
    assert!(
        log.contains("out.jsonl is being written by another weir process"),
        "{log}"
    );
    assert!(log.contains("give this sink a file of its own"), "{log}");
    // Another sink, the same checkpoint: the source would read what the first reads.
    std::fs::write(
        dir.path().join("q.toml"),
        pipeline(dir.path(), "other.jsonl", "in.offset"),
    )
    .unwrap();
    let log = refused_run(dir.path(), "q.toml");
    assert!(
        log.contains("in.offset is being written by another weir process"),
        "{log}"
    );
    assert!(
        log.contains("give this one a checkpoint of its own"),
        "{log}"
    );
    assert_eq!(
        line_count(&dir.path().join("other.jsonl")),
        0,
        "the refused source read nothing"
    );

    // The first goes on: each line once, in order.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .and_then(|mut file| std::io::Write::write_all(&mut file, lines(100, 200).as_bytes()))
        .unwrap();
    wait_for(
        "the first process's next lines",
        Duration::from_secs(60),
        || line_count(&out) >= 200,
    )
    .await;
    let ns: Vec<u64> = crate::support::read_json_lines(&out)
        .iter()
        .map(|record| record["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..200).collect::<Vec<u64>>());

    // Once it is gone, the file is free.
    drop(first);
    let second = std::cell::RefCell::new(start(dir.path(), "q.toml"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .and_then(|mut file| std::io::Write::write_all(&mut file, lines(200, 210).as_bytes()))
        .unwrap();
    let other = dir.path().join("other.jsonl");
    wait_for(
        "the second process's output",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&other).is_ok_and(|text| text.contains("{\"n\":209}"))
                || second.borrow_mut().0.try_wait().unwrap().is_some()
        },
    )
    .await;
    let mut second = second.into_inner();
    assert!(
        second.0.try_wait().unwrap().is_none(),
        "the second process stopped with the first gone"
    );
}
