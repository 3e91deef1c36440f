//! The admin server's bounds on its clients (`serve_with`), over real TCP connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{AdminState, Limits, auth, serve_with};
use crate::registry::PluginSlots;

/// Bounds every wait on the server. Far longer than any step takes: it only turns a server that
/// never answers or never closes into a failed test rather than a hung one.
const GUARD: Duration = Duration::from_secs(60);

/// A header read timeout short enough for a test to wait for.
const SHORT: Duration = Duration::from_millis(200);

/// An admin server on a loopback port of its own, stopped when dropped.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(limits: Limits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = auth::AdminToken::new("0123456789abcdef0123", "test").unwrap();
        let guard = auth::Guard::new(token, addr, &[]);
        let (_draining, shutdown) = tokio::sync::watch::channel(false);
        let state = AdminState::new(PluginSlots::default(), BTreeMap::new(), shutdown, guard);
        let task = tokio::spawn(serve_with(listener, state, limits));
        Server { addr, task }
    }

    async fn connect(&self) -> TcpStream {
        tokio::time::timeout(GUARD, TcpStream::connect(self.addr))
            .await
            .expect("connecting took over a minute")
            .unwrap()
    }

    /// `GET /health`, closing the connection after the response unless `keep_alive`.
    fn health(&self, keep_alive: bool) -> String {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: {connection}\r\n\r\n",
            self.addr.port()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything the server sends until it closes the connection (an orderly close or a reset).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(GUARD, stream.read(&mut buf))
            .await
            .expect("the server kept the connection open for over a minute");
        match read {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until a whole `/health` response (whose body is `ok`) has arrived.
async fn read_health_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(GUARD, stream.read(&mut buf))
            .await
            .expect("no response within a minute")
            .unwrap();
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

fn assert_ok(response: &str) {
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let server = Server::start(Limits {
        header_read_timeout: SHORT,
        ..Limits::default()
    })
    .await;

    let mut slow = server.connect().await;
    slow.write_all(b"GET /heal").await.unwrap();
    let answer = read_until_closed(&mut slow).await;
    assert!(!answer.contains("200 OK"), "{answer}");

    // The server still serves a client that sends its request in time.
    let mut client = server.connect().await;
    client
        .write_all(server.health(false).as_bytes())
        .await
        .unwrap();
    assert_ok(&read_until_closed(&mut client).await);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let server = Server::start(Limits {
        header_read_timeout: SHORT,
        ..Limits::default()
    })
    .await;

    let mut client = server.connect().await;
    client
        .write_all(server.health(true).as_bytes())
        .await
        .unwrap();
    // The client asked to keep the connection and sends nothing more: only the header read
    // timeout, started again after the response, ends it.
    let received = read_until_closed(&mut client).await;
    assert!(
        !received.to_ascii_lowercase().contains("connection: close"),
        "{received}"
    );
    assert_ok(&received);
}

#[tokio::test]
async fn a_full_server_serves_the_next_client_when_a_place_frees() {
    let server = Server::start(Limits {
        header_read_timeout: Duration::from_secs(3600),
        write_timeout: Duration::from_secs(3600),
        max_connections: 1,
    })
    .await;

    // The first client takes the only place: answered, so accepted, and kept alive.
    let mut first = server.connect().await;
    first
        .write_all(server.health(true).as_bytes())
        .await
        .unwrap();
    assert_ok(&read_health_response(&mut first).await);

    // The second waits in the listen backlog. This wait can only make the test pass wrongly
    // (a broken bound answering later than this), never fail a working server.
    let mut second = server.connect().await;
    second
        .write_all(server.health(false).as_bytes())
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "served beyond the bound of one connection: {early:?}"
    );

    // The first goes away, which frees its place for the second.
    drop(first);
    assert_ok(&read_until_closed(&mut second).await);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let server = Server::start(Limits {
        header_read_timeout: Duration::from_secs(3600),
        write_timeout: SHORT,
        max_connections: 1,
    })
    .await;

    // The client asks for the status page (21 KiB) over and over on one connection and reads
    // none of it, with a small receive buffer: the server's writes soon wait on it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stalled = tokio::time::timeout(GUARD, socket.connect(server.addr))
        .await
        .expect("connecting took over a minute")
        .unwrap();
    let (unread, mut requests) = stalled.into_split();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        server.addr.port()
    );
    // 1,000 pages are far more than the kernel buffers between the two hold (a few MiB).
    let asking = tokio::spawn(async move {
        let all = request.repeat(1000);
        let _ = requests.write_all(all.as_bytes()).await;
        requests
    });

    // It holds the only place until the write bound ends its connection; then the next client
    // is served. Without the bound it would hold it as long as it stays connected.
    let mut next = server.connect().await;
    next.write_all(server.health(false).as_bytes())
        .await
        .unwrap();
    assert_ok(&read_until_closed(&mut next).await);
    drop(unread);
    asking.abort();
}

#[tokio::test]
async fn a_process_following_the_kafka_registry_refuses_to_stage_or_promote_alone() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = auth::AdminToken::new("0123456789abcdef0123", "test").unwrap();
    let guard = auth::Guard::new(token, addr, &[]);
    let (_draining, shutdown) = tokio::sync::watch::channel(false);
    let state = AdminState::new(PluginSlots::default(), BTreeMap::new(), shutdown, guard)
        .with_fleet_registry("kafka://127.0.0.1:9092/weir.plugins".into());
    let server = Server {
        addr,
        task: tokio::spawn(serve_with(listener, state, Limits::default())),
    };
    for (path, body) in [
        ("stage", r#"{"shadow":{"every_nth_batch":1}}"#),
        ("promote", ""),
    ] {
        let mut client = server.connect().await;
        let request = format!(
            "POST /api/plugins/user-profile/{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer 0123456789abcdef0123\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 409"), "{path}: {answer}");
        assert!(
            answer.contains("--registry kafka://127.0.0.1:9092/weir.plugins"),
            "{path}: {answer}"
        );
    }
}
