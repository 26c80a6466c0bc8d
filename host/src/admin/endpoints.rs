//! `GET /v1/endpoints`, `GET /v1/endpoints/{id}`, `POST /v1/endpoints/{id}/enable`.
//! Secrets are never part of an answer.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, ApiState};
use crate::delivery::lanes::Lane;

pub async fn list(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let endpoints: Vec<serde_json::Value> = state
        .gateway
        .dispatcher()
        .lanes()
        .map(|lane| view(lane))
        .collect();
    Json(serde_json::json!({ "endpoints": endpoints }))
}

pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let lane = state
        .gateway
        .dispatcher()
        .lane(&id)
        .ok_or_else(|| unknown(&id))?;
    Ok(Json(view(lane)))
}

pub async fn enable(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.gateway.dispatcher().lane(&id).is_none() {
        return Err(unknown(&id));
    }
    state
        .gateway
        .queue()
        .set_endpoint_enabled(id.clone(), true, None)
        .await?;
    let lane = state
        .gateway
        .dispatcher()
        .lane(&id)
        .ok_or_else(|| unknown(&id))?;
    Ok(Json(view(lane)))
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no endpoint with id `{id}`"))
}

fn view(lane: &Lane) -> serde_json::Value {
    let endpoint = &lane.endpoint;
    let disabled_reason = lane.disabled_reason();
    serde_json::json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "enabled": disabled_reason.is_none(),
        "disabled_reason": disabled_reason,
        "event_types": endpoint.event_types,
        "concurrency": endpoint.concurrency,
    })
}
