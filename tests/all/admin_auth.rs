//! The admin API answers only its operator: the token guards rollback and the tap, a foreign
//! Host (DNS rebinding) or Origin (a web page in the operator's browser) is refused on every
//! route, mutations are POST only and preflights get no CORS answer, a bind beyond loopback
//! needs a token, and `weir run` without one generates a token the CLI finds by itself.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::admin::auth::AdminToken;
use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;

use crate::hot_swap::{component, variant};
use crate::resilience::start;
use crate::support::{run_weir, wait_for, weir};
use crate::swappable::drop_in;

const TOKEN: &str = "test-token-5a1f0c9e7d2b4386";

/// A response read off the wire, so that nothing (a client library's CORS or redirect logic)
/// stands between the test and what the server sent.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends one HTTP/1.1 request with exactly `headers` (no Host unless given) and reads the
/// whole answer.
async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, String)]) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut bytes))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete answer"))
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: not HTTP: {text}"));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn host(addr: SocketAddr) -> (&'static str, String) {
    ("Host", addr.to_string())
}

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

fn pipeline_toml(registry_plugin: bool) -> String {
    let transforms = if registry_plugin {
        "transforms = [{ plugin = \"swap\", config = { fields = \"email\" } }]\n"
    } else {
        ""
    };
    format!(
        "[[pipeline]]\nname = \"guarded\"\nsource = {{ type = \"generate\", rate = 200, seed = 5 }}\n{transforms}sink = {{ type = \"blackhole\" }}\ndead_letter = {{ type = \"stdout\" }}\nbatch = {{ size = 8, linger_ms = 5 }}\n"
    )
}

/// A running weir with plugin `swap` at its second version (so a rollback has somewhere to go)
/// and the admin API on a free loopback port guarded by `TOKEN`.
async fn start_guarded(registry: &Path) -> RunningApp {
    drop_in(
        registry,
        "swap.wasm",
        &variant(&component("pii-mask"), "one"),
    );
    let file = PipelineFile::parse(Path::new("guarded.toml"), &pipeline_toml(true)).unwrap();
    let mut options = RunOptions::for_registry(registry);
    options.admin = Some("127.0.0.1:0".parse().unwrap());
    options.admin_token = Some(AdminToken::new(TOKEN, "test").unwrap());
    options.debounce = Duration::from_millis(20);
    options.cache = Some(crate::support::repo_root().join("target/test-plugins/cache"));
    let app = RunningApp::start(file, options).await.unwrap();
    drop_in(
        registry,
        "swap.wasm",
        &variant(&component("pii-mask"), "two"),
    );
    let slot = app.slots().get("swap").unwrap();
    wait_for("the second version", Duration::from_secs(60), move || {
        slot.generation() == 1
    })
    .await;
    app
}

/// Every refusal a guarded route owes: `(method, path)` is the route used the right way.
async fn assert_refused(addr: SocketAddr, method: &str, path: &str) {
    let what = format!("{method} {path}");
    let no_token = raw(addr, method, path, &[host(addr)]).await;
    assert_eq!(no_token.status, 401, "{what} without a token: {no_token:?}");
    assert!(
        no_token.head.contains("www-authenticate: bearer"),
        "{no_token:?}"
    );
    assert!(no_token.body.contains("admin token"), "{no_token:?}");

    let wrong = raw(
        addr,
        method,
        path,
        &[host(addr), bearer("not-the-token-0000000")],
    )
    .await;
    assert_eq!(wrong.status, 401, "{what} with a wrong token: {wrong:?}");

    // DNS rebinding: the browser sends the attacker's name; the token cannot make up for it.
    for foreign in [
        format!("evil.example:{}", addr.port()),
        "evil.example".to_owned(),
    ] {
        let rebound = raw(addr, method, path, &[("Host", foreign), bearer(TOKEN)]).await;
        assert_eq!(
            rebound.status, 403,
            "{what} with a foreign Host: {rebound:?}"
        );
    }
    let no_host = raw(addr, method, path, &[bearer(TOKEN)]).await;
    assert!(
        [400, 403].contains(&no_host.status),
        "{what} without Host: {no_host:?}"
    );

    let cross = raw(
        addr,
        method,
        path,
        &[
            host(addr),
            bearer(TOKEN),
            ("Origin", "http://evil.example".to_owned()),
        ],
    )
    .await;
    assert_eq!(cross.status, 403, "{what} cross-origin: {cross:?}");

    for preflight_headers in [
        vec![
            host(addr),
            ("Origin", "http://evil.example".to_owned()),
            ("Access-Control-Request-Method", method.to_owned()),
            ("Access-Control-Request-Headers", "authorization".to_owned()),
        ],
        vec![host(addr), bearer(TOKEN)],
    ] {
        let preflight = raw(addr, "OPTIONS", path, &preflight_headers).await;
        assert!(
            [403, 405].contains(&preflight.status),
            "{what}: OPTIONS must be refused: {preflight:?}"
        );
        assert!(
            !preflight.head.contains("access-control-"),
            "{what}: OPTIONS must get no CORS headers: {preflight:?}"
        );
    }

    let other = if method == "POST" { "GET" } else { "POST" };
    let wrong_method = raw(addr, other, path, &[host(addr), bearer(TOKEN)]).await;
    assert_eq!(wrong_method.status, 405, "{other} {path}: {wrong_method:?}");

    let huge = raw(
        addr,
        method,
        path,
        &[
            host(addr),
            bearer(TOKEN),
            ("Content-Length", (100 * 1024 * 1024).to_string()),
        ],
    )
    .await;
    assert_eq!(huge.status, 413, "{what} with a 100 MiB body: {huge:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_and_tap_answer_only_the_token_from_this_server_s_own_origin() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_guarded(dir.path()).await;
    let addr = app.admin_addr().unwrap();
    let rollback = "/api/plugins/swap/rollback";
    let tap = "/api/pipelines/guarded/tap?stage=source&max_per_second=5";

    assert_refused(addr, "POST", rollback).await;
    assert_refused(addr, "GET", tap).await;
    assert_eq!(
        app.slots().get("swap").unwrap().generation(),
        1,
        "no refused request rolled anything back"
    );

    // With the token, from the server's own origin (as the status page would), it works.
    let rolled = raw(
        addr,
        "POST",
        rollback,
        &[
            ("Host", format!("localhost:{}", addr.port())),
            bearer(TOKEN),
            ("Origin", format!("http://localhost:{}", addr.port())),
        ],
    )
    .await;
    assert_eq!(rolled.status, 200, "{rolled:?}");
    assert!(rolled.body.contains("\"plugin\":\"swap\""), "{rolled:?}");
    assert_eq!(app.slots().get("swap").unwrap().generation(), 2);

    let mut tapped = reqwest::Client::new()
        .get(format!("http://{addr}{tap}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(tapped.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(60), tapped.chunk())
        .await
        .expect("a tapped record")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.contains("\"stage\":\"source\""), "{first}");
    drop(tapped);

    // The CLI sends the token it is given.
    let addr_arg = addr.to_string();
    let cli_dir = tempfile::tempdir().unwrap();
    let tap_cli = |token: Option<&str>| {
        let mut command = weir();
        command
            .args(["tap", "guarded", "--stage", "source", "--count", "2"])
            .args(["--admin", &addr_arg])
            // No generated token file to fall back on.
            .env("XDG_RUNTIME_DIR", cli_dir.path())
            .env_remove("WEIR_ADMIN_TOKEN")
            .env_remove("WEIR_ADMIN_TOKEN_FILE");
        if let Some(token) = token {
            command.env("WEIR_ADMIN_TOKEN", token);
        }
        command.output().unwrap()
    };
    let refused = tap_cli(None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--admin-token"), "{said}");
    let served = tap_cli(Some(TOKEN));
    assert!(
        served.status.success(),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&served.stdout).lines().count(), 2);

    let token_file = cli_dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let rolled = run_weir(
        cli_dir.path(),
        &[
            "plugin",
            "rollback",
            "swap",
            "--admin",
            &addr_arg,
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    // Two versions back, the history is empty: the refusal is the handler's, not the guard's.
    let said = String::from_utf8_lossy(&rolled.stderr);
    assert!(
        !said.contains("admin token") && !said.contains("401"),
        "the token file was sent: {said}"
    );

    // The open routes need no token on loopback, but still check Host and Origin.
    for path in [
        "/",
        "/health",
        "/ready",
        "/metrics",
        "/api/status",
        "/api/plugins",
        "/api/pipelines",
    ] {
        let open = raw(addr, "GET", path, &[host(addr)]).await;
        assert_eq!(open.status, 200, "GET {path} without a token: {open:?}");
        let rebound = raw(
            addr,
            "GET",
            path,
            &[("Host", format!("evil.example:{}", addr.port()))],
        )
        .await;
        assert_eq!(rebound.status, 403, "GET {path} with a foreign Host");
        let cross = raw(
            addr,
            "GET",
            path,
            &[host(addr), ("Origin", "http://evil.example".to_owned())],
        )
        .await;
        assert_eq!(cross.status, 403, "GET {path} cross-origin");
        assert!(!cross.head.contains("access-control-"), "{cross:?}");
    }

    app.shutdown_handle().send(true).unwrap();
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}

/// `POST /api/plugins/{name}/stage` reads `NAME.candidate.wasm` from the registry folder: a name
/// that is no plugin's (a path, once percent-decoded) or a plugin not loaded is refused before
/// any file is opened. Each would-be candidate here is a folder, which a read reports.
#[tokio::test(flavor = "multi_thread")]
async fn staging_refuses_a_name_that_is_no_loaded_plugin_before_reading_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    std::fs::create_dir(dir.path().join("outside.candidate.wasm")).unwrap();
    std::fs::create_dir(registry.join("ghost.candidate.wasm")).unwrap();
    let app = start_guarded(&registry).await;
    let addr = app.admin_addr().unwrap();
    let client = reqwest::Client::new();
    for (name, shown) in [("..%2Foutside", "../outside"), ("ghost", "ghost")] {
        let answer = client
            .post(format!("http://{addr}/api/plugins/{name}/stage"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "shadow": { "every_nth_batch": 1 } }))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap();
        assert_eq!(status, 404, "{name}: {body}");
        assert!(
            body.contains(&format!("no plugin `{shown}` is loaded")),
            "{name}: {body}"
        );
        assert!(!body.contains("candidate.wasm"), "{name}: {body}");
    }
    assert!(app.slots().get("swap").unwrap().staged().is_none());

    app.shutdown_handle().send(true).unwrap();
    for (_, result) in app.wait().await {
        result.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bind_beyond_loopback_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), pipeline_toml(false)).unwrap();
    let output = weir()
        .current_dir(dir.path())
        .args(["run", "p.toml", "--no-watch", "--admin", "0.0.0.0:0"])
        .env_remove("WEIR_ADMIN_TOKEN")
        .env_remove("WEIR_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("0.0.0.0")
            && said.contains("beyond loopback")
            && said.contains("--admin-token"),
        "{said}"
    );

    // With a token it starts.
    let running = start(
        dir.path(),
        "p.toml",
        &[("WEIR_ADMIN", "0.0.0.0:0"), ("WEIR_ADMIN_TOKEN", TOKEN)],
    );
    running.wait_for_log("Admin API listening").await;
    let (clean, log) = running.terminate();
    assert!(clean, "{log}");
    assert!(!log.contains(TOKEN), "the token never prints:\n{log}");
}

/// The value of `field=` on the first log line containing `needle`.
fn logged_field(log: &str, needle: &str, field: &str) -> String {
    log.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split(&format!("{field}=")).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `{needle}` line with {field}= in:\n{log}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_weir_run_generates_one_that_only_its_user_and_the_cli_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = tempfile::tempdir().unwrap();
    let runtime_dir_text = runtime_dir.path().to_str().unwrap().to_owned();
    std::fs::write(dir.path().join("p.toml"), pipeline_toml(false)).unwrap();
    let running = start(
        dir.path(),
        "p.toml",
        &[
            ("WEIR_ADMIN", "127.0.0.1:0"),
            ("XDG_RUNTIME_DIR", &runtime_dir_text),
        ],
    );
    running.wait_for_log("Admin API listening").await;
    let log = running.stderr.lock().unwrap().clone();
    let addr = logged_field(&log, "Admin API listening", "addr");
    let port = addr.rsplit(':').next().unwrap();
    let path = runtime_dir
        .path()
        .join("weir")
        .join(format!("admin-{port}.token"));
    assert!(
        log.contains(path.to_str().unwrap()),
        "the path is logged:\n{log}"
    );
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(token.len() >= 32, "a long random token");
    assert!(!log.contains(&token), "the token never prints:\n{log}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "the token file is private");
        assert_eq!(mode(path.parent().unwrap()), 0o700, "its folder too");
    }

    // The CLI finds it by the port, with no flag.
    let cli = |runtime: &str| {
        weir()
            .args(["tap", "guarded", "--stage", "source", "--count", "1"])
            .args(["--admin", &addr])
            .env("XDG_RUNTIME_DIR", runtime)
            .env_remove("WEIR_ADMIN_TOKEN")
            .env_remove("WEIR_ADMIN_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let tapped = cli(&runtime_dir_text);
    assert!(
        tapped.status.success(),
        "{}",
        String::from_utf8_lossy(&tapped.stderr)
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = cli(elsewhere.path().to_str().unwrap());
    assert!(!refused.status.success());

    let (clean, log) = running.terminate();
    assert!(clean, "{log}");
    assert!(!path.exists(), "the generated token is removed at exit");
}

/// The container listens beyond its loopback, so compose passes WEIR_ADMIN_TOKEN through and
/// the entrypoint, when it is unset, generates a private token file that weir (and the CLI in
/// the container) read through WEIR_ADMIN_TOKEN_FILE.
#[test]
fn the_container_gets_an_admin_token_from_the_environment_or_a_generated_file() {
    let root = crate::support::repo_root();
    let compose: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("docker-compose-infra.yml")).unwrap(),
    )
    .unwrap();
    let environment = compose["services"]["weir"]["environment"]
        .as_mapping()
        .unwrap();
    assert!(
        environment.contains_key("WEIR_ADMIN_TOKEN"),
        "compose passes WEIR_ADMIN_TOKEN through: {environment:?}"
    );
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("ENV WEIR_ADMIN_TOKEN_FILE="),
        "{dockerfile}"
    );

    // The entrypoint, with a stand-in `weir` that reports what it was given.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("weir");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"token=${WEIR_ADMIN_TOKEN:-unset} file=$WEIR_ADMIN_TOKEN_FILE\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let token_file = dir.path().join("state/admin.token");
    let entrypoint = |token: Option<&str>| {
        let mut command = std::process::Command::new("sh");
        command
            .arg(root.join("scripts/docker-entrypoint"))
            .arg("run")
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("WEIR_PLUGINS", dir.path().join("registry"))
            .env("WEIR_ADMIN_TOKEN_FILE", &token_file)
            .env_remove("WEIR_ADMIN_TOKEN");
        if let Some(token) = token {
            command.env("WEIR_ADMIN_TOKEN", token);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let said = entrypoint(None);
    assert!(
        said.contains(&format!("token=unset file={}", token_file.display())),
        "{said}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        AdminToken::new(&token, "generated").is_ok(),
        "a usable token"
    );
    assert!(
        !said.contains(token.trim()),
        "the token never prints: {said}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Kept across restarts, so a client that read it keeps working.
    entrypoint(None);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    // A token from the environment wins; no file is made for it.
    std::fs::remove_file(&token_file).unwrap();
    let said = entrypoint(Some(TOKEN));
    assert!(said.contains("token=test-token"), "{said}");
    assert!(!token_file.exists());
}
