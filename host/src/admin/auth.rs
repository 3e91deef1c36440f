//! Who may drive the admin API. A bearer token guards everything that changes state or shows
//! record contents; a Host check (against DNS rebinding) and an Origin check (against pages in
//! the operator's browser) apply to every route, because a browser will happily send requests
//! to loopback on behalf of any web page.

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The fewest characters a configured token may have: shorter ones can be guessed over HTTP.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The most bytes read from a token file: a token is a line, anything bigger is the wrong file.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The largest request body the admin API accepts. Only `stage` reads one (a rollout: a few
/// numbers); the bound keeps bodies small for routes added later.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The admin API's bearer token. Its `Debug` prints a mask; the value is reached only through
/// [`AdminToken::expose`].
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    /// A token given by the operator; `origin` names where it came from, for the error.
    pub fn new(text: &str, origin: &str) -> Result<Self, AuthError> {
        let text = text.trim();
        if text.chars().count() < MIN_TOKEN_CHARS {
            return Err(AuthError::TooShort {
                origin: origin.to_owned(),
                chars: text.chars().count(),
            });
        }
        // It travels in an `Authorization` header: visible ASCII only.
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::NotPrintable {
                origin: origin.to_owned(),
            });
        }
        Ok(AdminToken(text.into()))
    }

    /// A fresh random token: 32 bytes from the operating system's generator, as hex.
    pub fn generate() -> Self {
        use rand::RngExt;
        let bytes: [u8; 32] = rand::rng().random();
        AdminToken(hex::encode(bytes).into())
    }

    /// Reads a token from the first line of `path`.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let file_error = |source| AuthError::TokenFile {
            path: path.to_owned(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(file_error)?
            .take(MAX_TOKEN_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(file_error)?;
        let line = text.lines().next().unwrap_or_default();
        AdminToken::new(line, &format!("in {}", path.display()))
    }

    /// The token itself, for an `Authorization` header or a token file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    /// Both sides are hashed first so that the comparison also hides the token's length.
    fn matches(&self, presented: &[u8]) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(presented);
        expected.ct_eq(&presented).into()
    }
}

/// A token could not be set up, or the admin API would be reachable without one.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A non-loopback bind without a token.
    #[error(
        "the admin API would listen on {addr}, beyond loopback, without a token; pass --admin-token TOKEN (or WEIR_ADMIN_TOKEN, or --admin-token-file FILE; e.g. `openssl rand -hex 32`), or bind it to 127.0.0.1"
    )]
    NoTokenBeyondLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The token is too short to resist guessing.
    #[error(
        "the admin token {origin} has {chars} character(s); use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Where the token came from.
        origin: String,
        /// How long it is.
        chars: usize,
    },
    /// The token cannot travel in an HTTP header.
    #[error(
        "the admin token {origin} has spaces or non-ASCII characters; use letters, digits and punctuation only"
    )]
    NotPrintable {
        /// Where the token came from.
        origin: String,
    },
    /// A token file could not be read or written.
    #[error("admin token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The folder for a generated token is unsafe or cannot be found.
    #[error("cannot keep a generated admin token in {}: {reason}; pass --admin-token or --admin-token-file instead", path.display())]
    TokenDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No folder is known for a generated token.
    #[error(
        "no folder for a generated admin token (neither XDG_RUNTIME_DIR, XDG_CACHE_HOME nor HOME is set); pass --admin-token or --admin-token-file"
    )]
    NoTokenDir,
}

/// Where `weir run` keeps a token it generated, and where the CLI looks for it:
/// `$XDG_RUNTIME_DIR/weir` (private to the user, emptied at logout), else `$XDG_CACHE_HOME/weir`,
/// else `~/.cache/weir`.
pub fn token_dir() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    from("XDG_RUNTIME_DIR")
        .or_else(|| from("XDG_CACHE_HOME"))
        .or_else(|| from("HOME").map(|home| home.join(".cache")))
        .map(|dir| dir.join("weir"))
}

/// The generated token's file for the admin server on `port`: one per port, so several weir
/// processes on one machine each keep theirs.
pub fn token_path(port: u16) -> Option<PathBuf> {
    token_dir().map(|dir| dir.join(format!("admin-{port}.token")))
}

/// Writes a generated `token` for the server on `port`, readable by this user only, and returns
/// the file's path.
pub fn write_generated(token: &AdminToken, port: u16) -> Result<PathBuf, AuthError> {
    let path = token_path(port).ok_or(AuthError::NoTokenDir)?;
    write_generated_at(token, port, &path)
}

/// [`write_generated`] to `path`, whose folder tests choose.
fn write_generated_at(token: &AdminToken, port: u16, path: &Path) -> Result<PathBuf, AuthError> {
    let path = path.to_owned();
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir_error = |reason: String| AuthError::TokenDir {
        path: dir.to_owned(),
        reason,
    };
    create_private_dir(dir).map_err(|e| dir_error(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let metadata = std::fs::metadata(dir).map_err(|e| dir_error(e.to_string()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if metadata.uid() != me {
            return Err(dir_error(format!(
                "it belongs to user {}, not to this process's user {me}; remove it or set WEIR_ADMIN_TOKEN",
                metadata.uid()
            )));
        }
        let mode = metadata.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(dir_error(format!(
                "it is writable by other users (mode {:o}); run `chmod 700 {}`",
                mode & 0o777,
                dir.display()
            )));
        }
    }
    // Written aside and renamed, so a client never reads half a token.
    let partial = dir.join(format!(".admin-{port}.token.{}", std::process::id()));
    let file_error = |source| AuthError::TokenFile {
        path: path.clone(),
        source,
    };
    {
        use std::io::Write;
        // Created new, so nothing planted under the name (a symlink) is followed.
        let _ = std::fs::remove_file(&partial);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&partial).map_err(file_error)?;
        writeln!(file, "{}", token.expose()).map_err(file_error)?;
        file.sync_all().map_err(file_error)?;
    }
    std::fs::rename(&partial, &path).map_err(file_error)?;
    Ok(path)
}

/// Removes a generated token's file at exit, unless another process has replaced it since.
pub fn remove_generated(path: &Path, token: &AdminToken) {
    if AdminToken::from_file(path).is_ok_and(|found| found.expose() == token.expose()) {
        let _ = std::fs::remove_file(path);
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// What every request is checked against.
#[derive(Clone, Debug)]
pub struct Guard {
    token: AdminToken,
    /// `Host` values that name this server, lower-case, with the port.
    hosts: Arc<HashSet<String>>,
}

impl Guard {
    /// A guard for the server bound at `bound`: loopback names and the bound address reach it,
    /// plus `extra_hosts` (names like `weir` or `weir:9620`, for a server behind a proxy or in
    /// a container network).
    pub fn new(token: AdminToken, bound: SocketAddr, extra_hosts: &[String]) -> Self {
        let port = bound.port();
        let bound_ip = match bound {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        let mut hosts = HashSet::new();
        let mut allow = |name: &str| {
            let name = name.to_ascii_lowercase();
            if has_port(&name) {
                hosts.insert(name);
            } else {
                hosts.insert(format!("{name}:{port}"));
                // Browsers leave out the default port.
                if port == 80 {
                    hosts.insert(name);
                }
            }
        };
        for name in ["localhost", "127.0.0.1", "[::1]", &bound_ip] {
            allow(name);
        }
        for name in extra_hosts {
            allow(name.trim());
        }
        Guard {
            token,
            hosts: Arc::new(hosts),
        }
    }

    /// Why a request's `Host` and `Origin` are not acceptable, if they are not.
    fn refuse_origin(&self, headers: &HeaderMap) -> Option<String> {
        let mut host_headers = headers.get_all(header::HOST).iter();
        let host = match (host_headers.next(), host_headers.next()) {
            (Some(host), None) => host.to_str().unwrap_or_default().to_ascii_lowercase(),
            (None, _) => return Some("the request has no Host header".to_owned()),
            (Some(_), Some(_)) => return Some("the request has several Host headers".to_owned()),
        };
        if !self.hosts.contains(&host) {
            let mut known: Vec<&String> = self.hosts.iter().collect();
            known.sort();
            return Some(format!(
                "Host `{}` does not name this server (it answers to {known:?}); add a name with --admin-host",
                excerpt(&host)
            ));
        }
        // Browsers send Origin on cross-origin requests and on same-origin POSTs; a page
        // elsewhere must not drive or read this server.
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
            if origin != format!("http://{host}") {
                return Some(format!(
                    "cross-origin request from `{}` refused",
                    excerpt(&origin)
                ));
            }
        }
        None
    }

    /// Why a request's bearer token is not acceptable, if it is not.
    fn refuse_token(&self, headers: &HeaderMap) -> Option<&'static str> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Some(
                "this endpoint needs the admin token: send `Authorization: Bearer TOKEN` (weir's CLI sends --admin-token, WEIR_ADMIN_TOKEN, --admin-token-file, or the file `weir run` wrote when it generated one)",
            );
        };
        let presented = value
            .as_bytes()
            .split_at_checked(7)
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|(_, token)| token.trim_ascii());
        match presented {
            Some(token) if self.token.matches(token) => None,
            Some(_) => Some("wrong admin token"),
            None => Some("the Authorization header must be `Bearer TOKEN`"),
        }
    }
}

fn has_port(name: &str) -> bool {
    name.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (!host.contains(':') || host.ends_with(']'))
    })
}

/// A header value as it may appear in a response: short, so a hostile client cannot make the
/// answer big.
fn excerpt(text: &str) -> String {
    text.chars().take(100).collect()
}

fn refusal(status: StatusCode, message: String) -> Response {
    let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"weir\""),
        );
    }
    response
}

/// Applied to every route: the Host and Origin checks and the body bound.
pub async fn check_origin(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if let Some(reason) = guard.refuse_origin(request.headers()) {
        tracing::debug!(
            path = request.uri().path(),
            reason,
            "Admin request refused."
        );
        return refusal(StatusCode::FORBIDDEN, reason);
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the admin API accepts bodies of at most {MAX_BODY_BYTES} bytes"),
        );
    }
    next.run(request).await
}

/// Applied to the guarded routes: the bearer token.
pub async fn require_token(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if let Some(reason) = guard.refuse_token(request.headers()) {
        tracing::debug!(
            path = request.uri().path(),
            reason,
            "Admin request refused."
        );
        return refusal(StatusCode::UNAUTHORIZED, reason.to_owned());
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_never_written_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("weir");
        create_private_dir(&folder).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let partial = folder.join(format!(".admin-9620.token.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &partial).unwrap();
        let token = AdminToken::new("0123456789abcdef0123", "test").unwrap();
        let path = write_generated_at(&token, 9620, &folder.join("admin-9620.token")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(
            AdminToken::from_file(&path).unwrap().expose(),
            token.expose()
        );
    }

    fn guard() -> Guard {
        let token = AdminToken::new("0123456789abcdef0123", "test").unwrap();
        Guard::new(
            token,
            "127.0.0.1:9620".parse().unwrap(),
            &["weir".into(), "proxy:443".into()],
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn loopback_names_and_configured_hosts_pass_the_host_check() {
        let guard = guard();
        for host in [
            "127.0.0.1:9620",
            "localhost:9620",
            "LOCALHOST:9620",
            "[::1]:9620",
            "weir:9620",
            "proxy:443",
        ] {
            assert_eq!(
                guard.refuse_origin(&headers(&[("host", host)])),
                None,
                "{host}"
            );
        }
        for host in ["evil.example:9620", "127.0.0.1:9621", "localhost", "weir:1"] {
            assert!(
                guard.refuse_origin(&headers(&[("host", host)])).is_some(),
                "{host}"
            );
        }
        assert!(guard.refuse_origin(&headers(&[])).is_some());
    }

    #[test]
    fn only_same_origin_pages_pass_the_origin_check() {
        let guard = guard();
        let same = headers(&[
            ("host", "localhost:9620"),
            ("origin", "http://localhost:9620"),
        ]);
        assert_eq!(guard.refuse_origin(&same), None);
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9620"] {
            let cross = headers(&[("host", "localhost:9620"), ("origin", origin)]);
            assert!(guard.refuse_origin(&cross).is_some(), "{origin}");
        }
    }

    #[test]
    fn the_token_is_compared_whole_and_never_printed() {
        let guard = guard();
        let bearer = |value: &str| headers(&[("authorization", value)]);
        assert_eq!(
            guard.refuse_token(&bearer("Bearer 0123456789abcdef0123")),
            None
        );
        assert_eq!(
            guard.refuse_token(&bearer("bearer 0123456789abcdef0123")),
            None
        );
        for wrong in [
            "Bearer 0123456789abcdef012",
            "Bearer 0123456789abcdef01234",
            "Basic 0123456789abcdef0123",
            "Bearer",
            "",
        ] {
            assert!(guard.refuse_token(&bearer(wrong)).is_some(), "{wrong}");
        }
        assert!(guard.refuse_token(&headers(&[])).is_some());
        assert!(!format!("{guard:?}").contains("0123456789"));
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused() {
        assert!(matches!(
            AdminToken::new("short", "in WEIR_ADMIN_TOKEN"),
            Err(AuthError::TooShort { chars: 5, .. })
        ));
        assert!(matches!(
            AdminToken::new("0123456789 abcdef0123", "x"),
            Err(AuthError::NotPrintable { .. })
        ));
        assert_eq!(AdminToken::generate().expose().len(), 64);
    }
}
