//! Staged rollouts over the admin API: `POST /api/plugins/{name}/stage` (body: the rollout),
//! `.../promote`, `.../abort` and `GET .../diff`, the clients of `weir plugin stage`, `promote`,
//! `abort` and `diff`. The diff shows record contents, so it is guarded like a tap; the open
//! routes show a rollout's counts without its samples.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AdminState;
use crate::registry::{RegistryError, RolloutError, RolloutPlan, SlotInfo};

/// Stages plugin `name`'s candidate from the registry beside its live version.
pub async fn stage(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Json(rollout): Json<RolloutPlan>,
) -> Response {
    if let Some(refusal) = fleet_only(&state, &name, "stage") {
        return refusal;
    }
    let Some(deployer) = state.deployer.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this weir has no plugin registry to stage from".into(),
        );
    };
    let target = name.clone();
    let outcome = tokio::task::spawn_blocking(move || deployer.stage(&target, rollout)).await;
    match outcome {
        Ok(Ok(_)) => match state.slots.get(&name).and_then(|slot| slot.rollout()) {
            Some(info) => (
                StatusCode::OK,
                Json(json!({ "plugin": name, "staged": info })),
            )
                .into_response(),
            None => error(
                StatusCode::CONFLICT,
                format!("plugin `{name}`'s candidate was aborted as soon as it was staged"),
            ),
        },
        Ok(Err(failure)) => registry_error(failure),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()),
    }
}

/// Makes plugin `name`'s candidate its live version.
pub async fn promote(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    if let Some(refusal) = fleet_only(&state, &name, "promote") {
        return refusal;
    }
    let target = name.clone();
    let outcome = tokio::task::spawn_blocking(move || match &state.deployer {
        Some(deployer) => deployer.promote(&target),
        None => state.slots.promote(&target).map_err(RegistryError::from),
    })
    .await;
    match outcome {
        Ok(Ok(version)) => {
            Json(json!({ "plugin": name, "version": version.plugin.version() })).into_response()
        }
        Ok(Err(failure)) => registry_error(failure),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()),
    }
}

/// Drops plugin `name`'s candidate: every record goes to the live version again.
pub async fn abort(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match state.slots.abort(&name, "requested by an operator") {
        Ok(version) => {
            let live = state
                .slots
                .get(&name)
                .map(|slot| slot.current().1.plugin.version().to_owned());
            Json(json!({ "plugin": name, "aborted": version.plugin.version(), "version": live }))
                .into_response()
        }
        Err(failure) => rollout_error(failure),
    }
}

/// What plugin `name`'s candidate did so far, with the sample of differing records.
pub async fn diff(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    let Some(slot) = state.slots.get(&name) else {
        return rollout_error(RolloutError::UnknownPlugin(name));
    };
    match slot.rollout() {
        Some(info) => Json(json!({
            "plugin": name,
            "live": slot.current().1.plugin.version(),
            "staged": info,
        }))
        .into_response(),
        None => {
            let last_abort = state
                .slots
                .describe()
                .into_iter()
                .find(|s| s.name == name)
                .and_then(|s| s.last_abort);
            let mut message = RolloutError::NothingStaged(name).to_string();
            if let Some(abort) = last_abort {
                message.push_str(&format!(" (last rollout: {abort})"));
            }
            error(StatusCode::NOT_FOUND, message)
        }
    }
}

/// The slots as the open routes show them: a shadow's counts without its sampled records.
pub fn without_samples(mut slots: Vec<SlotInfo>) -> Vec<SlotInfo> {
    for slot in &mut slots {
        if let Some(shadow) = slot.staged.as_mut().and_then(|s| s.shadow.as_mut()) {
            shadow.samples.clear();
        }
    }
    slots
}

fn registry_error(failure: RegistryError) -> Response {
    match failure {
        RegistryError::Rollout(failure) => rollout_error(failure),
        RegistryError::NotFound { .. } => error(StatusCode::NOT_FOUND, failure.to_string()),
        other => error(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
    }
}

fn rollout_error(failure: RolloutError) -> Response {
    let status = match failure {
        RolloutError::UnknownPlugin(_) | RolloutError::NothingStaged(_) => StatusCode::NOT_FOUND,
        RolloutError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, failure.to_string())
}

/// The refusal of a change a process following the Kafka registry must make through the topic:
/// made here alone it would not reach the other processes, and the next head or restart would
/// undo it. Aborting stays allowed, as a way to stop a bad candidate on this process at once.
fn fleet_only(state: &AdminState, name: &str, action: &str) -> Option<Response> {
    let address = state.fleet_registry.as_ref()?;
    let how = match action {
        "stage" => format!(
            "publish the candidate with `weir plugin publish FILE --registry {address} --shadow N` (or `--canary`)"
        ),
        _ => format!("run `weir plugin {action} {name} --registry {address}`"),
    };
    Some(error(
        StatusCode::CONFLICT,
        format!(
            "this weir follows the plugin registry {address}, so plugin `{name}`'s rollouts go through it for every process: {how}"
        ),
    ))
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
