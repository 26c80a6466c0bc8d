//! `GET /v1/endpoints`, `GET /v1/endpoints/{id}`, `POST /v1/endpoints/{id}/enable`,
//! `POST /v1/endpoints/{id}/recover`.
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

/// Most dead letters one recover call replays.
const MAX_RECOVER: usize = 10_000;

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RecoverRequest {
    /// RFC 3339; default: every dead letter of the endpoint.
    since: Option<String>,
}

/// `POST /v1/endpoints/{id}/recover`: replays the endpoint's dead letters (since a time), e.g.
/// after its receiver is fixed. Parked deliveries run their plugin chain again first.
pub async fn recover(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: RecoverRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RecoverRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::invalid_body(format!("the request body is not valid: {err}"))
        })?
    };
    let since = match request.since.as_deref() {
        None => 0,
        Some(text) => crate::time::parse_rfc3339(text).map_err(|_| {
            ApiError::invalid_body(format!(
                "since: `{text}` is not RFC 3339 (like 2026-11-23T10:00:00Z)"
            ))
        })?,
    };
    let Some(subscriber) = state.gateway.subscriptions().get(&id) else {
        return Err(unknown(&id));
    };
    if let Some(reason) = subscriber.disabled_reason() {
        return Err(ApiError::conflict(
            "endpoint_disabled",
            format!("endpoint `{id}` is disabled ({reason}); enable it first"),
        ));
    }
    let recovered = state
        .gateway
        .recover(&id, since, MAX_RECOVER)
        .await
        .map_err(|err| match err {
            crate::gateway::ReplayError::Queue(err) => ApiError::from(err),
            crate::gateway::ReplayError::Store(err) => ApiError::from(err),
        })?;
    let not_scheduled: Vec<serde_json::Value> = recovered
        .not_scheduled
        .iter()
        .map(|(id, reason)| serde_json::json!({"id": id, "reason": reason}))
        .collect();
    Ok(Json(serde_json::json!({
        "scheduled": recovered.scheduled,
        "not_scheduled": not_scheduled,
        "more": recovered.more,
    })))
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
