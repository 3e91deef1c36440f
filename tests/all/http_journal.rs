//! The `http` source's journal: an API that never repeats a response (randomuser.me hands out new
//! random users on every request) loses nothing when `weir` is killed with SIGKILL after users
//! were fetched and before they were acknowledged; a journal shared by two pipelines or damaged
//! stops the pipeline with a message naming the file and the fix.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::resilience::{Running, start};
use crate::support::{serve_http, wait_for};

/// Users per response.
const PER_RESPONSE: usize = 25;

/// A randomuser.me-like API: every request that arrives while `handing_out` is on gets
/// `PER_RESPONSE` users never handed out before; otherwise an empty page.
struct UsersApi {
    handing_out: AtomicBool,
    /// The uuid of every user handed out, in order.
    served: Mutex<Vec<String>>,
    generator: Mutex<weir::generator::UserGenerator>,
}

impl UsersApi {
    /// Turns handing out on or off; every user handed out so far. Under the lock the handler
    /// holds while it answers, so no response is half-way through either change.
    fn hand_out(&self, on: bool) -> Vec<String> {
        let served = self.served.lock().unwrap();
        self.handing_out.store(on, Ordering::SeqCst);
        served.clone()
    }

    fn served_count(&self) -> usize {
        self.served.lock().unwrap().len()
    }
}

async fn users_api() -> (String, Arc<UsersApi>) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let api = Arc::new(UsersApi {
        handing_out: AtomicBool::new(true),
        served: Mutex::new(Vec::new()),
        generator: Mutex::new(weir::generator::UserGenerator::new(seed)),
    });
    let state = Arc::clone(&api);
    let router = axum::Router::new().route(
        "/api",
        axum::routing::get(move || {
            let api = Arc::clone(&state);
            async move {
                // Decided, generated and recorded under one lock, so `served` lists exactly what
                // left.
                let mut served = api.served.lock().unwrap();
                let count = if api.handing_out.load(Ordering::SeqCst) {
                    PER_RESPONSE
                } else {
                    0
                };
                let response = api.generator.lock().unwrap().next_response(count);
                for user in response["results"].as_array().unwrap() {
                    served.push(uuid(user));
                }
                axum::Json(response)
            }
        }),
    );
    let url = serve_http(router).await;
    (format!("{url}/api"), api)
}

fn uuid(user: &serde_json::Value) -> String {
    user["login"]["uuid"].as_str().unwrap().to_owned()
}

/// The consumer at the other end of the sink's FIFO. It opens its end without blocking (so a
/// test never hangs on a weir that did not start) and reads only while `reading` is on: while it
/// is off the pipe fills and the sink's writes block, as with a downstream that stopped reading.
struct Consumer {
    reading: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Complete lines read so far (a line cut by a killed writer is left out).
    lines: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Consumer {
    fn open(fifo: &Path, reading: bool) -> Consumer {
        let mut pipe = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .unwrap();
        let reading = Arc::new(AtomicBool::new(reading));
        let stop = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (on, end, out) = (Arc::clone(&reading), Arc::clone(&stop), Arc::clone(&lines));
        let thread = std::thread::spawn(move || {
            let mut partial = Vec::new();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                if !on.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                match pipe.read(&mut buffer) {
                    // No writer: not yet opened, or gone (killed, or exited).
                    Ok(0) => {
                        if end.load(Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Ok(n) => {
                        partial.extend_from_slice(&buffer[..n]);
                        while let Some(newline) = partial.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = partial.drain(..=newline).collect();
                            out.lock()
                                .unwrap()
                                .push(String::from_utf8(line).unwrap().trim_end().to_owned());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("reading the FIFO failed: {e}"),
                }
            }
        });
        Consumer {
            reading,
            stop,
            lines,
            thread,
        }
    }

    /// Reads what is left once the writer is gone, and returns every complete line.
    fn drain(self) -> Vec<String> {
        self.reading.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        self.lines.lock().unwrap().clone()
    }

    fn uuids(&self) -> BTreeSet<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|line| uuid(&serde_json::from_str(line).unwrap()))
            .collect()
    }
}

fn uuids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| uuid(&serde_json::from_str(line).unwrap()))
        .collect()
}

/// `weir_source_records_polled_total` of pipeline `api` (records the source handed on, which it
/// does only once they are in the journal), from the admin API of the running weir.
async fn records_polled(running: &Running) -> u64 {
    let log = running.stderr.lock().unwrap().clone();
    let addr = log
        .lines()
        .find(|l| l.contains("Admin API listening"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no admin address in:\n{log}"))
        .to_owned();
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("weir_source_records_polled_total{") && l.contains("pipeline=\"api\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Waits until the source of the running weir has handed on `count` records.
async fn wait_for_records_polled(running: &Running, count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = records_polled(running).await;
        if seen >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the source handed on {seen} of {count} records within 60 s:\n{}",
            running.stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pipeline(url: &str, journal: &str, sink: &str, name: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\nsource = {{ type = \"http\", url = \"{url}\", split_at = \"/results\", interval_ms = 20, journal = \"{journal}\" }}\nsink = {{ type = \"file\", path = \"{sink}\" }}\ndead_letter = {{ type = \"file\", path = \"{name}-dlq.jsonl\" }}\n"
    )
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

const ENV: &[(&str, &str)] = &[("WEIR_ADMIN", "127.0.0.1:0")];

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_between_fetch_and_acknowledgement_loses_no_user_the_api_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (url, api) = users_api().await;
    let fifo = dir.path().join("out.fifo");
    mkfifo(&fifo);
    std::fs::write(
        dir.path().join("p.toml"),
        pipeline(&url, "state/api.journal", "out.fifo", "api"),
    )
    .unwrap();

    // First run: the consumer does not read, so once the pipe is full the sink's writes block
    // and the users fetched after that wait in the pipeline, unacknowledged.
    let stalled = Consumer::open(&fifo, false);
    let running = start(dir.path(), "p.toml", ENV);
    running.wait_for_log("Admin API listening").await;
    let first = Arc::clone(&api);
    wait_for(
        "eight responses handed out",
        Duration::from_secs(60),
        move || first.served_count() >= 8 * PER_RESPONSE,
    )
    .await;
    let served_first = api.hand_out(false);
    // Every user handed out was handed on by the source (so the journal holds it) before the
    // kill: the API cannot be asked for them again.
    wait_for_records_polled(&running, served_first.len() as u64).await;
    let mut child = running.child;
    child.kill().unwrap(); // SIGKILL: no drain, no final commit
    child.wait().unwrap();
    let delivered_first = uuids(&stalled.drain());
    assert!(
        delivered_first.len() < served_first.len(),
        "the sink was stalled: {} of {} users delivered before the kill",
        delivered_first.len(),
        served_first.len()
    );

    // Second run, same file: the consumer reads, and the API hands out more users.
    let consumer = Consumer::open(&fifo, true);
    api.hand_out(true);
    let running = start(dir.path(), "p.toml", ENV);
    running
        .wait_for_log("Replaying records fetched before the last stop")
        .await;
    let second = Arc::clone(&api);
    let target = served_first.len() + 4 * PER_RESPONSE;
    wait_for(
        "four more responses handed out",
        Duration::from_secs(60),
        move || second.served_count() >= target,
    )
    .await;
    let served = api.hand_out(false);
    let served_set: BTreeSet<String> = served.iter().cloned().collect();
    assert_eq!(
        served_set.len(),
        served.len(),
        "the API never repeats a user"
    );
    let already: BTreeSet<String> = delivered_first.iter().cloned().collect();
    let wanted = served_set.clone();
    let lines = Arc::clone(&consumer.lines);
    let stderr = Arc::clone(&running.stderr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut delivered = consumer.uuids();
        delivered.extend(already.iter().cloned());
        let missing = wanted.difference(&delivered).count();
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} users handed out never arrived ({} lines read in the second run):\n{}",
            wanted.len(),
            lines.lock().unwrap().len(),
            stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (clean, log) = running.terminate();
    assert!(clean, "{log}");
    let delivered_second = uuids(&consumer.drain());

    // The replayed users came before anything fetched by the second run.
    let fetched_first: BTreeSet<&String> = served_first.iter().collect();
    let last_replayed = delivered_second
        .iter()
        .rposition(|u| fetched_first.contains(u))
        .expect("users were replayed");
    let first_new = delivered_second
        .iter()
        .position(|u| !fetched_first.contains(u))
        .expect("users were fetched after the restart");
    assert!(
        last_replayed < first_new,
        "replayed users (up to line {last_replayed}) came before new ones (from line {first_new})"
    );
    let unacknowledged = served_first.len() - delivered_first.len();
    let duplicates = delivered_first.len() + delivered_second.len() - served.len();
    println!(
        "http journal: users handed out {}, unacknowledged at the kill {unacknowledged}, lost 0, delivered twice {duplicates}",
        served.len()
    );
    // Everything acknowledged by the drain: the journal keeps no record, only its header and
    // the last acknowledged offset.
    let journal = std::fs::metadata(dir.path().join("state/api.journal"))
        .unwrap()
        .len();
    assert!(journal < 64, "the journal holds {journal} bytes");
}

/// Starts weir on `config` in `dir`, waits for it to fail and for `needle` in its log; the log.
async fn failing_run(dir: &Path, config: &str, needle: &str) -> String {
    std::fs::write(dir.join("p.toml"), config).unwrap();
    let running = start(dir, "p.toml", ENV);
    let mut child = running.child;
    let Some(status) = crate::support::exit_within(&mut child, Duration::from_secs(60)) else {
        child.kill().unwrap();
        panic!(
            "weir did not stop within 60 s:\n{}",
            running.stderr.lock().unwrap()
        );
    };
    // The log is read by a thread that may still be catching up.
    let stderr = Arc::clone(&running.stderr);
    let wanted = needle.to_owned();
    let found = Arc::clone(&stderr);
    let seen = tokio::time::timeout(Duration::from_secs(10), async move {
        while !found.lock().unwrap().contains(&wanted) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let log = stderr.lock().unwrap().clone();
    assert!(seen.is_ok(), "`{needle}` is not in the log:\n{log}");
    assert!(!status.success(), "{log}");
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_or_damaged_journal_stops_the_pipeline_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _api) = users_api().await;
    let journal: PathBuf = dir.path().join("shared.journal");

    // Two pipelines of one file, one journal: refused at load.
    let config = pipeline(&url, "shared.journal", "a.jsonl", "a")
        + &pipeline(&url, "shared.journal", "b.jsonl", "b");
    let log = failing_run(
        dir.path(),
        &config,
        "is also pipeline `a`'s `source.journal`",
    )
    .await;
    assert!(log.contains("give each its own file"), "{log}");

    // Two processes, one journal: the second cannot lock it while the first runs.
    std::fs::write(
        dir.path().join("first.toml"),
        pipeline(&url, "shared.journal", "a.jsonl", "a"),
    )
    .unwrap();
    let first = start(dir.path(), "first.toml", ENV);
    wait_for(
        "the first process's journal",
        Duration::from_secs(60),
        || journal.exists(),
    )
    .await;
    let log = failing_run(
        dir.path(),
        &pipeline(&url, "shared.journal", "b.jsonl", "b"),
        "journal shared.journal is in use by another pipeline",
    )
    .await;
    assert!(
        log.contains("give each http source its own `journal` file"),
        "{log}"
    );
    let mut first = first.child;
    first.kill().unwrap();
    first.wait().unwrap();

    // A damaged entry with entries after it: not a torn tail, so nothing is guessed.
    let mut bytes = std::fs::read(&journal).unwrap();
    assert!(bytes.starts_with(b"WEIRJNL1"));
    bytes.truncate(8);
    for _ in 0..2 {
        bytes.extend_from_slice(&9u32.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        bytes.extend_from_slice(&[2, 1, 0, 0, 0, 0, 0, 0, 0]);
    }
    std::fs::write(&journal, &bytes).unwrap();
    let log = failing_run(
        dir.path(),
        &pipeline(&url, "shared.journal", "a.jsonl", "a"),
        "journal shared.journal is corrupt at byte 8",
    )
    .await;
    assert!(log.contains("Move the file aside"), "{log}");

    // A file that is not a journal is never overwritten.
    std::fs::write(dir.path().join("users.jsonl"), "{\"n\":1}\n").unwrap();
    failing_run(
        dir.path(),
        &pipeline(&url, "users.jsonl", "a.jsonl", "a"),
        "users.jsonl is not a weir journal",
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("users.jsonl")).unwrap(),
        "{\"n\":1}\n"
    );
}

/// The journal on a disk that fills: a response the journal cannot take is kept in memory and
/// its append retried, the API is not asked again meanwhile and nothing is handed on; once
/// there is room every user the API handed out arrives once.
#[tokio::test(flavor = "multi_thread")]
async fn a_journal_on_a_full_disk_holds_the_users_fetched_and_asks_no_more_until_there_is_room() {
    let (url, api) = users_api().await;
    let disk = crate::disk_full::SmallDisk::mount(256 * 1024);
    // Room for the journal's header, not for a response of 25 users (about 30 KiB).
    disk.fill_leaving(8 * 1024);
    let local = tempfile::tempdir().unwrap();
    let out = local.path().join("users.jsonl");
    let toml = format!(
        "[[pipeline]]\nname = \"api\"\nsource = {{ type = \"http\", url = \"{url}\", split_at = \"/results\", interval_ms = 20, journal = \"{journal}\" }}\nsink = {{ type = \"file\", path = \"{out}\" }}\ndead_letter = {{ type = \"file\", path = \"{dlq}\" }}\n",
        journal = disk.path().join("api.journal").display(),
        out = out.display(),
        dlq = local.path().join("dlq.jsonl").display(),
    );
    let crate::support::Spawned {
        shutdown,
        run,
        stats,
    } = crate::support::spawn_pipeline(&toml);
    wait_for(
        "journal appends refused for want of space, and retried",
        Duration::from_secs(120),
        || stats.source_retries().load(Ordering::Relaxed) >= 3 || run.is_finished(),
    )
    .await;
    assert!(!run.is_finished(), "the pipeline ended on a full disk");
    assert_eq!(
        api.served_count(),
        PER_RESPONSE,
        "the API was asked again while a response waited for the journal"
    );
    assert_eq!(
        crate::support::line_count(&out),
        0,
        "a user handed on before the journal held it"
    );
    disk.make_room();
    wait_for(
        "users to flow once there is room",
        Duration::from_secs(120),
        || crate::support::line_count(&out) > 3 * PER_RESPONSE || run.is_finished(),
    )
    .await;
    let served = api.hand_out(false);
    wait_for(
        "every user handed out to arrive",
        Duration::from_secs(120),
        || crate::support::line_count(&out) >= served.len() || run.is_finished(),
    )
    .await;
    shutdown.send(true).unwrap();
    run.await.unwrap().unwrap_or_else(|e| panic!("{e:#}"));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(
        uuids(&lines),
        served,
        "every user, once, in the order handed out"
    );
}
