//! `GET /v1/endpoints`, `GET /v1/endpoints/{id}`, `POST /v1/endpoints/{id}/enable`.
//! Secrets are never part of an answer.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, ApiState};
use crate::delivery::Subscriber;

pub async fn list(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let endpoints: Vec<serde_json::Value> = state
        .gateway
        .subscriptions()
        .iter()
        .map(|subscriber| view(subscriber))
        .collect();
    Json(serde_json::json!({ "endpoints": endpoints }))
}

pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let subscriber = state
        .gateway
        .subscriptions()
        .get(&id)
        .ok_or_else(|| unknown(&id))?;
    Ok(Json(view(subscriber)))
}

pub async fn enable(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.gateway.subscriptions().get(&id).is_none() {
        return Err(unknown(&id));
    }
    state
        .gateway
        .queue()
        .set_endpoint_enabled(id.clone(), true, None)
        .await?;
    let subscriber = state
        .gateway
        .subscriptions()
        .get(&id)
        .ok_or_else(|| unknown(&id))?;
    Ok(Json(view(subscriber)))
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no endpoint with id `{id}`"))
}

fn view(subscriber: &Subscriber) -> serde_json::Value {
    let endpoint = &subscriber.endpoint;
    let disabled_reason = subscriber.disabled_reason();
    serde_json::json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "enabled": disabled_reason.is_none(),
        "disabled_reason": disabled_reason,
        "event_types": endpoint.event_types,
        "concurrency": endpoint.concurrency,
    })
}
