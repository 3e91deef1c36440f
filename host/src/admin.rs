//! The admin HTTP API (loopback by default): plugin versions and rollback, pipeline counters,
//! Prometheus metrics and health. `weir plugin list` and `weir plugin rollback` are its clients.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::pipeline::PipelineStats;
use crate::registry::{PluginSlots, RollbackError};

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    slots: PluginSlots,
    pipelines: Arc<BTreeMap<String, Arc<PipelineStats>>>,
}

impl AdminState {
    /// State over the live slots and each pipeline's counters.
    pub fn new(slots: PluginSlots, pipelines: BTreeMap<String, Arc<PipelineStats>>) -> Self {
        AdminState {
            slots,
            pipelines: Arc::new(pipelines),
        }
    }
}

/// The routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(|| async { "ready" }))
        .route("/metrics", get(metrics))
        .route("/api/plugins", get(list_plugins))
        .route("/api/plugins/{name}/rollback", post(rollback))
        .route("/api/pipelines", get(list_pipelines))
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
        crate::metrics::render(&state.pipelines, &state.slots),
    )
}

async fn list_plugins(State(state): State<AdminState>) -> impl IntoResponse {
    Json(state.slots.describe())
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
