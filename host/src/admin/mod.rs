//! The admin HTTP server (loopback by default): the status page, the JSON API behind it,
//! Prometheus metrics, health, plugin rollback, staged rollouts and record taps. `weir plugin
//! list`, `weir plugin rollback`, `stage`, `promote`, `abort`, `diff` and `weir tap` are its
//! clients. What changes state or shows record
//! contents needs the bearer token (see `auth`).

pub mod auth;
pub mod history;
mod rollout;
mod tap;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

pub use history::{Histories, PipelineHistory};

use crate::pipeline::{PipelineStats, PipelineStatus};
use crate::registry::{Deployer, PluginSlots, RollbackError, SlotInfo};

/// The status page: one HTML file with its styles and script inline, so it needs no build step
/// and no asset route.
const STATUS_PAGE: &str = include_str!("status.html");

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
        }
    }

    /// Stages candidates from `deployer`'s registry (`weir plugin stage`).
    pub fn with_deployer(mut self, deployer: Deployer) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// Serves the last minutes of each pipeline from `histories` (read-only, so open like
    /// the status page).
    pub fn with_history(mut self, histories: Histories) -> Self {
        self.histories = histories;
        self
    }
}

/// The routes. Read-only routes that show no record contents go in `open`; a route that
/// changes state (POST only) or shows record contents goes in `guarded`, behind the token.
/// Every route gets the Host and Origin checks and the body bound.
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

/// Serves until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    if let Err(error) = axum::serve(listener, router(state)).await {
        tracing::error!(%error, "Admin server stopped.");
    }
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
