//! The admin HTTP server (loopback by default): the status page, the JSON API behind it,
//! Prometheus metrics, health, plugin rollback, staged rollouts and record taps. `weir plugin
//! list`, `weir plugin rollback`, `stage`, `promote`, `abort`, `diff` and `weir tap` are its
//! clients. What changes state (POST only), streams records (the tap) or shows a candidate's
//! sampled records (the rollout diff) needs the bearer token (see `auth`). The open routes are
//! read-only but not free of record content: `/api/status`, and so the status page, shows each
//! pipeline's latest dead letters with their reasons and an excerpt of each value, which can
//! quote record content (README, Security).
//!
//! Each connection gets a bounded time to send its request headers, a bounded time to take each
//! part of a response, and a place among a bounded number served at once (`serve`), so slow,
//! idle or stalled clients cannot hold the process's file descriptors.

pub mod auth;
pub mod history;
mod rollout;
mod tap;
#[cfg(test)]
mod tests;
mod write_deadline;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use history::{Histories, PipelineHistory};

use crate::pipeline::{PipelineStats, PipelineStatus};
use crate::registry::{Deployer, PluginSlots, RollbackError, SlotInfo};
use write_deadline::WriteDeadline;

/// The status page: one HTML file with its styles and script inline, so it needs no build step
/// and no asset route.
const STATUS_PAGE: &str = include_str!("status.html");

/// How long a client has to send a request line and its headers, counted from when the server
/// starts waiting for them: on a new connection, and again on a kept-alive one after each
/// response. A client that is slower (a slowloris trickling bytes) or sends nothing (an idle
/// kept-alive connection) is disconnected, so this is also the keep-alive idle bound: hyper's
/// HTTP/1 server has no separate idle timeout. hyper applies it only with a timer, which
/// `axum::serve` does not set, hence `serve`.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a response may wait for the client to take any of it (and a tap's stream, its next
/// bytes): a client that stops reading is disconnected, freeing its place. Counted afresh each
/// time bytes go through, so a slow reader is served as long as it keeps reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once. When all are taken the server accepts no more until one ends:
/// further clients wait in the kernel's listen backlog, which holds none of this process's file
/// descriptors, and are served in turn, rather than being accepted only to be closed.
pub const MAX_CONNECTIONS: usize = 256;

/// The pause after an accept fails for a reason other than that one connection (such as running
/// out of file descriptors, EMFILE), so that the loop does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How the admin server bounds its clients.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// See `HEADER_READ_TIMEOUT`.
    header_read_timeout: Duration,
    /// See `WRITE_TIMEOUT`.
    write_timeout: Duration,
    /// See `MAX_CONNECTIONS`.
    max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    slots: PluginSlots,
    pipelines: Arc<BTreeMap<String, Arc<PipelineStats>>>,
    started: std::time::Instant,
    shutdown: tokio::sync::watch::Receiver<bool>,
    histories: Histories,
    guard: auth::Guard,
    /// Where staged candidates are loaded from; without it nothing can be staged.
    deployer: Option<Deployer>,
    /// The Kafka registry this process follows (`weir run --registry`), shown as its address:
    /// then a rollout is staged and promoted through the topic, for the whole fleet, and the
    /// admin API refuses to do either for this process alone.
    fleet_registry: Option<String>,
}

impl AdminState {
    /// State over the live slots and each pipeline's counters; `shutdown` turns true when the
    /// process starts draining, which makes it no longer ready; `guard` decides who may use
    /// the guarded routes.
    pub fn new(
        slots: PluginSlots,
        pipelines: BTreeMap<String, Arc<PipelineStats>>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        guard: auth::Guard,
    ) -> Self {
        AdminState {
            slots,
            pipelines: Arc::new(pipelines),
            started: std::time::Instant::now(),
            shutdown,
            histories: Histories::default(),
            guard,
            deployer: None,
            fleet_registry: None,
        }
    }

    /// Stages candidates from `deployer`'s registry (`weir plugin stage`).
    pub fn with_deployer(mut self, deployer: Deployer) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// Marks this process as following the Kafka registry at `address`: staging and promoting
    /// go through the topic (`weir plugin publish --registry`, `weir plugin promote --registry`).
    pub fn with_fleet_registry(mut self, address: String) -> Self {
        self.fleet_registry = Some(address);
        self
    }

    /// Serves the last minutes of each pipeline from `histories` (read-only, so open like
    /// the status page).
    pub fn with_history(mut self, histories: Histories) -> Self {
        self.histories = histories;
        self
    }
}

/// The routes. Read-only routes go in `open`: they show counts, plugin versions and, in
/// `/api/status`, the latest dead letters with their reasons and value excerpts, which can quote
/// record content. A route that changes state (POST only), streams records (the tap) or shows
/// sampled records (the diff) goes in `guarded`, behind the token. Every route gets the Host and
/// Origin checks and the body bound.
pub fn router(state: AdminState) -> Router {
    let guard = state.guard.clone();
    let open = Router::new()
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/plugins", get(list_plugins))
        .route("/api/pipelines", get(list_pipelines))
        .route("/api/status", get(status))
        .route("/api/pipelines/{name}/history", get(history));
    let guarded = Router::new()
        .route("/api/plugins/{name}/rollback", post(rollback))
        .route("/api/plugins/{name}/stage", post(rollout::stage))
        .route("/api/plugins/{name}/promote", post(rollout::promote))
        .route("/api/plugins/{name}/abort", post(rollout::abort))
        .route("/api/plugins/{name}/diff", get(rollout::diff))
        .route("/api/pipelines/{name}/tap", get(tap::tap))
        .route_layer(from_fn_with_state(guard.clone(), auth::require_token));
    open.merge(guarded)
        .layer(DefaultBodyLimit::max(auth::MAX_BODY_BYTES))
        .layer(from_fn_with_state(guard, auth::check_origin))
        .with_state(state)
}

/// Serves until the task is aborted, over HTTP/1 only, each connection in a task of its own,
/// bounded by `HEADER_READ_TIMEOUT`, `WRITE_TIMEOUT` and `MAX_CONNECTIONS`. A connection's failure is logged at
/// debug level and ends that connection only.
pub async fn serve(listener: TcpListener, state: AdminState) {
    serve_with(listener, state, Limits::default()).await
}

/// `serve` with the bounds given.
async fn serve_with(listener: TcpListener, state: AdminState, limits: Limits) {
    let service = TowerToHyperService::new(router(state));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let places = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // Waits for a free place before accepting, so a full server holds no more sockets.
        let Ok(place) = places.clone().acquire_owned().await else {
            // The semaphore is never closed.
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "Admin connection failed before it was accepted.");
                continue;
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    retry_in_ms = ACCEPT_BACKOFF.as_millis() as u64,
                    "Admin server could not accept a connection."
                );
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let stream = WriteDeadline::new(stream, limits.write_timeout);
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "Admin connection ended with an error.");
            }
            drop(place);
        });
    }
}

/// An accept error that concerns only the connection being accepted.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(&state.pipelines, &state.slots)
            + &crate::metrics::render_ready(!*state.shutdown.borrow()),
    )
}

/// The last minutes of pipeline `name` at one-second resolution: the status page's charts.
async fn history(State(state): State<AdminState>, Path(name): Path<String>) -> impl IntoResponse {
    match state.histories.get(&name) {
        Some(history) => Json(history.view()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no pipeline named `{name}`") })),
        )
            .into_response(),
    }
}

/// Ready while the pipelines run; 503 once a shutdown (a signal, or a failed pipeline) began.
async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if *state.shutdown.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn list_plugins(State(state): State<AdminState>) -> impl IntoResponse {
    Json(rollout::without_samples(state.slots.describe()))
}

async fn rollback(State(state): State<AdminState>, Path(name): Path<String>) -> impl IntoResponse {
    let slots = state.slots.clone();
    let target = name.clone();
    let outcome = tokio::task::spawn_blocking(move || slots.rollback(&target)).await;
    match outcome {
        Ok(Ok(version)) => (
            StatusCode::OK,
            Json(json!({ "plugin": name, "version": version.plugin.version() })),
        ),
        Ok(Err(error @ RollbackError::UnknownPlugin(_))) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": error.to_string() })),
        ),
        Ok(Err(error @ RollbackError::NoHistory(_))) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": error.to_string() })),
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": error.to_string() })),
        ),
    }
}

async fn list_pipelines(State(state): State<AdminState>) -> impl IntoResponse {
    let reports: Vec<_> = state
        .pipelines
        .iter()
        .map(|(name, stats)| stats.snapshot(name))
        .collect();
    Json(reports)
}

/// Everything the status page shows, in one response.
#[derive(Debug, Serialize)]
pub struct StatusResponse {
    /// Weir's version.
    pub version: &'static str,
    /// Seconds since the admin server started.
    pub uptime_seconds: f64,
    /// Each pipeline in detail.
    pub pipelines: Vec<PipelineStatus>,
    /// The plugins with their versions and history.
    pub plugins: Vec<SlotInfo>,
}

async fn status(State(state): State<AdminState>) -> impl IntoResponse {
    Json(StatusResponse {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        pipelines: state
            .pipelines
            .iter()
            .map(|(name, stats)| stats.status(name))
            .collect(),
        plugins: rollout::without_samples(state.slots.describe()),
    })
}
