//! Hostile input against the memory bounds: a response body and a line far larger than the
//! limits. Memory is measured in the `weir run` child (its peak resident set, VmHWM), since a
//! bound that holds only inside the test process proves nothing about the binary.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::{read_json_lines, wait_for, weir};

/// The hostile inputs: far above every limit, so holding one whole shows in the peak.
const HOSTILE_BYTES: usize = 200 << 20;
const HOSTILE_LINE_BYTES: usize = 100 << 20;
/// What each child may reach at its peak: the binary with its Wasm engine and a body of the
/// default `max_body_bytes` (64 MiB) in flight, well short of a hostile input held whole.
const PEAK_LIMIT_KIB: u64 = 160 << 10;
/// The same for the file source, which holds at most `max_line_bytes` (1 MiB) of a line.
const LINE_PEAK_LIMIT_KIB: u64 = 80 << 10;

/// A `weir run` child, killed when dropped.
struct WeirChild {
    child: Child,
    log: std::path::PathBuf,
}

impl WeirChild {
    fn start(dir: &Path) -> Self {
        let log = dir.join("weir.log");
        let child = weir()
            .current_dir(dir)
            .args(["run", "p.toml", "--no-watch"])
            .env("WEIR_LOG", "info")
            .env("WEIR_ADMIN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        WeirChild { child, log }
    }

    /// The child's peak resident set so far, in KiB, from /proc.
    fn peak_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_else(|e| panic!("weir exited early ({e}):\n{}", self.log()));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Bytes the child has read through system calls, from /proc.
    fn bytes_read(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/io", self.child.id()))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|line| line.strip_prefix("rchar:"))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WeirChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let path = dir.join("dlq.jsonl");
    if path.exists() {
        read_json_lines(&path)
    } else {
        Vec::new()
    }
}

/// The bytes the test server streams: `{"results":[` and then `x` forever, in shared chunks.
fn hostile_chunk(index: usize) -> bytes::Bytes {
    static CHUNK: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    let chunk = CHUNK.get_or_init(|| bytes::Bytes::from(vec![b'x'; 64 * 1024]));
    if index == 0 {
        let mut first = b"{\"results\":[".to_vec();
        first.extend_from_slice(&chunk[first.len()..]);
        bytes::Bytes::from(first)
    } else {
        chunk.clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_mib_response_is_read_to_the_limit_and_dead_lettered_with_its_digest() {
    // A 200 MiB body, streamed without a Content-Length and never held by the test either.
    let chunks = HOSTILE_BYTES / (64 * 1024);
    let router = axum::Router::new().route(
        "/api",
        axum::routing::get(move || async move {
            let stream = futures::stream::iter(
                (0..chunks).map(|i| Ok::<_, std::convert::Infallible>(hostile_chunk(i))),
            );
            axum::body::Body::from_stream(stream)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    // One poll an hour: the test sees the first and only one.
    std::fs::write(
        dir.path().join("p.toml"),
        format!(
            "[[pipeline]]\nname = \"api\"\nsource = {{ type = \"http\", url = \"http://{address}/api\", split_at = \"/results\", interval_ms = 3600000, timeout_ms = 600000 }}\nsink = {{ type = \"file\", path = \"out.jsonl\" }}\ndead_letter = {{ type = \"file\", path = \"dlq.jsonl\" }}\n"
        ),
    )
    .unwrap();
    let weir = WeirChild::start(dir.path());
    wait_for("the dead letter", Duration::from_secs(120), || {
        !dead_letters(dir.path()).is_empty()
    })
    .await;
    let peak = weir.peak_kib();
    let log = weir.log();
    drop(weir);
    // Memory first: an implementation holding the input whole fails here.
    assert!(
        peak < PEAK_LIMIT_KIB,
        "weir's peak resident set was {peak} KiB for a {HOSTILE_BYTES}-byte body:\n{log}"
    );

    let limit = 64usize << 20;
    let mut digest = Sha256::new();
    let mut left = limit;
    for index in 0.. {
        let chunk = hostile_chunk(index);
        let take = chunk.len().min(left);
        digest.update(&chunk[..take]);
        left -= take;
        if left == 0 {
            break;
        }
    }
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    let headers = &letters[0]["headers"];
    assert_eq!(headers["weir.record.bytes"], limit.to_string(), "{headers}");
    assert_eq!(
        headers["weir.record.sha256"],
        hex::encode(digest.finalize()),
        "{headers}"
    );
    assert!(
        headers["weir.error"]
            .as_str()
            .unwrap()
            .contains("exceeds max_body_bytes"),
        "{headers}"
    );
    assert_eq!(
        letters[0]["value"].as_str().map(str::len),
        Some(64 * 1024),
        "the dead letter keeps an excerpt"
    );
    eprintln!("peak resident set with a 200 MiB body: {peak} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_line_is_never_held_and_is_dead_lettered_with_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut file = std::fs::File::create(&input).unwrap();
    file.write_all(b"{\"n\":1}\n").unwrap();
    let mut digest = Sha256::new();
    let chunk = vec![b'y'; 1 << 20];
    for _ in 0..HOSTILE_LINE_BYTES / chunk.len() {
        file.write_all(&chunk).unwrap();
        digest.update(&chunk);
    }
    file.flush().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[[pipeline]]\nname = \"lines\"\nsource = { type = \"file\", path = \"in.jsonl\", follow = true }\nsink = { type = \"file\", path = \"out.jsonl\" }\ndead_letter = { type = \"file\", path = \"dlq.jsonl\" }\n",
    )
    .unwrap();
    let weir = WeirChild::start(dir.path());
    let out = dir.path().join("out.jsonl");
    wait_for("the first line", Duration::from_secs(60), || {
        out.exists() && !read_json_lines(&out).is_empty()
    })
    .await;
    // The line has no newline yet: a following source waits for it, holding only its start.
    // Its newline is written only once weir has read all of it (its `rchar` says so).
    wait_for(
        "weir to read the whole line",
        Duration::from_secs(60),
        || weir.bytes_read() >= HOSTILE_LINE_BYTES as u64,
    )
    .await;
    let peak_before_newline = weir.peak_kib();
    file.write_all(b"\n{\"n\":3}\n").unwrap();
    file.flush().unwrap();
    wait_for(
        "the dead letter and the line after it",
        Duration::from_secs(60),
        || !dead_letters(dir.path()).is_empty() && read_json_lines(&out).len() == 2,
    )
    .await;
    let peak = weir.peak_kib();
    let log = weir.log();
    drop(weir);
    // Memory first: an implementation holding the input whole fails here.
    assert!(
        peak < LINE_PEAK_LIMIT_KIB,
        "weir's peak resident set was {peak} KiB for a {HOSTILE_LINE_BYTES}-byte line:\n{log}"
    );

    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    let headers = &letters[0]["headers"];
    assert_eq!(
        headers["weir.record.bytes"],
        HOSTILE_LINE_BYTES.to_string(),
        "{headers}"
    );
    assert_eq!(
        headers["weir.record.sha256"],
        hex::encode(digest.finalize()),
        "{headers}"
    );
    assert_eq!(headers["weir.source.offset"], "2", "{headers}");
    assert!(
        headers["weir.error"]
            .as_str()
            .unwrap()
            .contains("more than max_line_bytes (1048576)"),
        "{headers}"
    );
    assert_eq!(read_json_lines(&out)[1]["n"], 3);
    eprintln!(
        "peak resident set with a 100 MiB line: {peak_before_newline} KiB before its newline, {peak} KiB after"
    );
}
