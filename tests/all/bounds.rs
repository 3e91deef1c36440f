//! Hostile input against the memory bounds: a response body and a line far larger than the
//! limits. Memory is measured in the `weir run` child (its peak resident set, VmHWM), since a
//! bound that holds only inside the test process proves nothing about the binary.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::{postgres_client, postgres_url, read_json_lines, unique, wait_for, weir};

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

/// Checks that `dir`'s dead letters are one, for the second record of the source, of `bytes` in
/// all, the value's sha256 `digest`, and a reason saying `limit`.
fn assert_one_oversized_dead_letter(dir: &Path, bytes: usize, digest: Sha256, limit: &str) {
    let letters = dead_letters(dir);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let headers = &letters[0]["headers"];
    assert_eq!(headers["weir.record.bytes"], bytes.to_string(), "{headers}");
    assert_eq!(
        headers["weir.record.sha256"],
        hex::encode(digest.finalize()),
        "{headers}"
    );
    assert_eq!(headers["weir.source.offset"], "2", "{headers}");
    assert!(
        headers["weir.error"].as_str().unwrap().contains(limit),
        "{headers}"
    );
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

    assert_one_oversized_dead_letter(
        dir.path(),
        HOSTILE_LINE_BYTES,
        digest,
        "more than max_line_bytes (1048576)",
    );
    assert_eq!(read_json_lines(&out)[1]["n"], 3);
    eprintln!(
        "peak resident set with a 100 MiB line: {peak_before_newline} KiB before its newline, {peak} KiB after"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_row_is_never_fetched_whole_and_is_dead_lettered_with_its_digest() {
    let url = postgres_url();
    let table = unique("huge_rows");
    let client = postgres_client(&url).await;
    // The large value is made by the server, so neither the test nor weir sends or holds it.
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key TEXT, value TEXT);
             INSERT INTO \"{table}\" (key, value) VALUES ('a', '{{\"n\":1}}');
             INSERT INTO \"{table}\" (key, value) VALUES ('b', repeat('z', {HOSTILE_LINE_BYTES}));
             INSERT INTO \"{table}\" (key, value) VALUES ('c', '{{\"n\":3}}');"
        ))
        .await
        .unwrap();
    let mut digest = Sha256::new();
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..HOSTILE_LINE_BYTES / chunk.len() {
        digest.update(&chunk);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        format!(
            "[[pipeline]]\nname = \"rows\"\nsource = {{ type = \"postgres\", url = \"{url}\", table = \"{table}\", consumer = \"{table}\" }}\nsink = {{ type = \"file\", path = \"out.jsonl\" }}\ndead_letter = {{ type = \"file\", path = \"dlq.jsonl\" }}\n"
        ),
    )
    .unwrap();
    let weir = WeirChild::start(dir.path());
    let out = dir.path().join("out.jsonl");
    wait_for(
        "the dead letter and the rows around it",
        Duration::from_secs(120),
        || !dead_letters(dir.path()).is_empty() && out.exists() && read_json_lines(&out).len() == 2,
    )
    .await;
    let peak = weir.peak_kib();
    let log = weir.log();
    drop(weir);
    // Memory first: a source fetching the row whole holds 100 MiB of text, twice over.
    assert!(
        peak < LINE_PEAK_LIMIT_KIB,
        "weir's peak resident set was {peak} KiB for a {HOSTILE_LINE_BYTES}-byte row:\n{log}"
    );

    // The row's size counts its key as well as its value, as `limits.max_record_bytes` does.
    assert_one_oversized_dead_letter(
        dir.path(),
        HOSTILE_LINE_BYTES + 1,
        digest,
        "exceeds max_row_bytes (1048576)",
    );
    let rows = read_json_lines(&out);
    assert_eq!(
        (rows[0]["n"].as_i64(), rows[1]["n"].as_i64()),
        (Some(1), Some(3))
    );
    eprintln!("peak resident set with a 100 MiB row: {peak} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notify_flood_while_the_pipeline_is_blocked_holds_no_memory() {
    // The source tails `source` and listens on a channel of the longest name PostgreSQL allows;
    // its sink writes into `landing`, which the test keeps locked, so the pipeline blocks and the
    // source stops polling. Then a million notifications arrive on the channel.
    const NOTIFICATIONS: u64 = 1_000_000;
    let url = postgres_url();
    let (source, landing) = (unique("flood_source"), unique("flood_landing"));
    let channel = format!("{:_<63}", unique("flood"));
    let client = postgres_client(&url).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{source}\" (id BIGSERIAL PRIMARY KEY, key TEXT, value JSONB NOT NULL);
             INSERT INTO \"{source}\" (key, value) SELECT g::text, jsonb_build_object('n', g) FROM generate_series(1, 50) g;
             CREATE TABLE \"{landing}\" (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE, value JSONB NOT NULL, ingested_at TIMESTAMPTZ NOT NULL DEFAULT now());"
        ))
        .await
        .unwrap();
    let mut locker = postgres_client(&url).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(&format!(
        "LOCK TABLE \"{landing}\" IN ACCESS EXCLUSIVE MODE"
    ))
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        format!(
            "[[pipeline]]\nname = \"flood\"\nsource = {{ type = \"postgres\", url = \"{url}\", table = \"{source}\", consumer = \"{source}\", channel = \"{channel}\" }}\nsink = {{ type = \"postgres\", url = \"{url}\", table = \"{landing}\", create_table = false }}\ndead_letter = {{ type = \"file\", path = \"dlq.jsonl\" }}\nbatch = {{ size = 1, max_in_flight = 1 }}\n"
        ),
    )
    .unwrap();
    let weir = WeirChild::start(dir.path());
    // Blocked: the sink's INSERT waits for the lock.
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO \"{landing}\"%'"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row = client.query_one(&waiting, &[]).await.unwrap();
        if row.get::<_, i64>(0) > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink never blocked:\n{}",
            weir.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The source's connection, by the port of its end.
    let port: i32 = client
        .query_one(
            &format!(
                "SELECT client_port FROM pg_stat_activity WHERE query LIKE '%FROM \"{source}\"%' AND query NOT LIKE '%pg_stat_activity%'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let peak_before = weir.peak_kib();
    // Distinct payloads, so that PostgreSQL folds none of them together.
    client
        .execute(
            "SELECT count(pg_notify($1, g::text)) FROM generate_series(1, $2::bigint) g",
            &[&channel, &(NOTIFICATIONS as i64)],
        )
        .await
        .unwrap();
    // Delivered: the queue is empty (every listener, the source's server process included, took
    // its notifications and wrote them out), and nothing is left on the way to weir or unread.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let usage: f64 = client
            .query_one("SELECT pg_notification_queue_usage()", &[])
            .await
            .unwrap()
            .get(0);
        if usage == 0.0 && loopback_queues(port as u16) == (0, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notifications were never delivered (queue usage {usage}):\n{}",
            weir.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = weir.peak_kib().saturating_sub(peak_before);

    // Unblocked, the pipeline lands every row: the flood cost it nothing.
    lock.rollback().await.unwrap();
    let landed = format!("SELECT count(*) FROM \"{landing}\"");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while client
        .query_one(&landed, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 50
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rows never landed:\n{}",
            weir.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(weir);
    client
        .batch_execute(&format!(
            "DROP TABLE \"{source}\"; DROP TABLE \"{landing}\"; DELETE FROM weir_offsets WHERE consumer = '{source}'"
        ))
        .await
        .unwrap();
    eprintln!("peak resident set grew by {grown} KiB over {NOTIFICATIONS} notifications");
    // Queued one by one, the notifications would take about 100 MiB.
    assert!(
        grown < 24 << 10,
        "weir's peak resident set grew by {grown} KiB over {NOTIFICATIONS} notifications"
    );
}

/// For the loopback connection from local port `port` to PostgreSQL (5432): the bytes the server
/// has yet to send, and the bytes the client has yet to read, from /proc/net/tcp.
fn loopback_queues(port: u16) -> (u64, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let (mut unsent, mut unread) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port_of = |address: &str| {
            address
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        };
        let (Some(local), Some(remote)) = (port_of(fields[1]), port_of(fields[2])) else {
            continue;
        };
        let Some((tx, rx)) = fields[4].split_once(':') else {
            continue;
        };
        let (tx, rx) = (
            u64::from_str_radix(tx, 16).unwrap_or(0),
            u64::from_str_radix(rx, 16).unwrap_or(0),
        );
        if local == 5432 && remote == port {
            unsent += tx;
        }
        if local == port && remote == 5432 {
            unread += rx;
        }
    }
    (unsent, unread)
}
