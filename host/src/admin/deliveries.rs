//! `GET /v1/deliveries` (filtered, newest first, cursor pages), `GET /v1/deliveries/{id}`
//! (status and attempts), `POST /v1/deliveries/{id}/retry` (a pending one, now) and
//! `POST /v1/deliveries/{id}/replay` (a finished one, again).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ErrorBody;
use super::{ApiError, ApiState};
use crate::gateway::{Replay, ReplayError};
use crate::ids::{DeliveryId, EventId};
use crate::queue::RetryNowOutcome;
use crate::store::{AttemptRecord, DeliveryRecord, DeliveryStatus};
use crate::time::rfc3339;

/// Most records one list request examines; a sparse filter gets a short page and a cursor.
const MAX_SCAN: usize = 20_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only deliveries in this state: `pending`, `delivered`, `dropped` or `dead_lettered`.
    status: Option<String>,
    /// Only deliveries to this endpoint.
    endpoint_id: Option<String>,
    /// Only deliveries of this event (`evt_…`).
    event_id: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Deliveries per page: 1 to 500, default 100.
    limit: Option<usize>,
}

/// Lists deliveries, newest first.
///
/// A page may be short when the filter is sparse; follow `next_cursor` until it is null.
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    operation_id = "list_deliveries",
    tag = "deliveries",
    params(ListQuery),
    responses(
        (status = 200, body = serde_json::Value, description = "`{\"deliveries\": [delivery], \
            \"next_cursor\"}`; a delivery is `id`, `event_id`, `endpoint_id`, `status`, \
            `attempt_count`, `next_attempt_at`, `last_error`, `created_at`, `content_type` and \
            `plugins` (the chain it ran)"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: a query parameter is not \
            valid (the message names it)"),
    ),
)]
pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(super::query_error)?;
    let status = super::status_param::<DeliveryStatus>(
        query.status.as_deref(),
        "pending, delivered, dropped, dead_lettered",
    )?;
    let event_id = match query.event_id.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<EventId>()
                .map_err(|err| ApiError::invalid_body(format!("event_id: {err}")))?,
        ),
    };
    let (cursor, limit) = super::page_params::<DeliveryId>(query.cursor.as_deref(), query.limit)?;
    let store = state.gateway.store().clone();
    let endpoint_id = query.endpoint_id;
    let (page, next) = tokio::task::spawn_blocking(move || {
        store.deliveries(cursor, limit, MAX_SCAN, &|record| {
            status.is_none_or(|status| record.status == status)
                && endpoint_id
                    .as_ref()
                    .is_none_or(|endpoint| &record.endpoint_id == endpoint)
                && event_id.is_none_or(|event| record.event_id == event)
        })
    })
    .await
    .map_err(|err| ApiError::internal(err.to_string()))??;
    let deliveries: Vec<serde_json::Value> = page.iter().map(summary).collect();
    Ok(Json(serde_json::json!({
        "deliveries": deliveries,
        "next_cursor": next.map(|id| id.to_string()),
    })))
}

/// Shows a delivery with its attempts.
#[utoipa::path(
    get,
    path = "/v1/deliveries/{id}",
    operation_id = "get_delivery",
    tag = "deliveries",
    params(("id" = String, Path, description = "The delivery's id (`dlv_…`)")),
    responses(
        (status = 200, body = serde_json::Value, description = "The delivery as lists show it, \
            plus `attempts`: `[{\"number\", \"at\", \"status_code\", \"latency_ms\", \"error\", \
            \"response_snippet\"}]`"),
        (status = 404, body = ErrorBody, description = "`not_found`: no delivery has this id"),
    ),
)]
pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    let store = state.gateway.store().clone();
    let found = tokio::task::spawn_blocking(move || store.delivery(id))
        .await
        .map_err(|err| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                err.to_string(),
            )
        })??;
    let (record, attempts) = found.ok_or_else(|| unknown(id))?;
    Ok(Json(view(&record, &attempts)))
}

/// Tries a pending delivery now instead of at its next retry.
///
/// Its retry count is unchanged: this attempt is the one the schedule had planned.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    operation_id = "retry_delivery",
    tag = "deliveries",
    params(("id" = String, Path, description = "The delivery's id (`dlv_…`)")),
    responses(
        (status = 202, body = serde_json::Value, description = "`{\"id\", \"status\": \"pending\", \
            \"already_due\"}`; `already_due` is true when it was due anyway"),
        (status = 404, body = ErrorBody, description = "`not_found`: no delivery has this id"),
        (status = 409, body = ErrorBody, description = "`conflict`: the delivery is not pending \
            (replay it instead)"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
pub async fn retry(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = parse_id(&id)?;
    match state.gateway.queue().retry_now(id).await? {
        RetryNowOutcome::Scheduled => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"id": id, "status": "pending", "already_due": false})),
        )),
        RetryNowOutcome::AlreadyDue => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"id": id, "status": "pending", "already_due": true})),
        )),
        RetryNowOutcome::NotPending => Err(ApiError::conflict(
            "conflict",
            format!("delivery {id} is not pending; replay it to send it again"),
        )),
        RetryNowOutcome::NotFound => Err(unknown(id)),
    }
}

/// Sends a delivered or dead-lettered delivery again.
///
/// The same bytes and `webhook-id` go out; a parked delivery runs its plugin chain first.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/replay",
    operation_id = "replay_delivery",
    tag = "deliveries",
    params(("id" = String, Path, description = "The delivery's id (`dlv_…`)")),
    responses(
        (status = 202, body = serde_json::Value, description = "`{\"id\", \"status\": \
            \"pending\"}`"),
        (status = 404, body = ErrorBody, description = "`not_found`: no delivery has this id"),
        (status = 409, body = ErrorBody, description = "`conflict` (still pending), \
            `endpoint_disabled`, `endpoint_missing` or `dropped` (the plugin filter now drops the \
            event)"),
        (status = 422, body = ErrorBody, description = "`plugin_failed`: the plugin chain fails; \
            the delivery stays parked"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
pub async fn replay(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = parse_id(&id)?;
    let replay = state.gateway.replay(id).await.map_err(|err| match err {
        ReplayError::Queue(err) => ApiError::from(err),
        ReplayError::Store(err) => ApiError::from(err),
    })?;
    match replay {
        Replay::Scheduled => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"id": id, "status": "pending"})),
        )),
        Replay::NotFound => Err(unknown(id)),
        Replay::StillPending => Err(ApiError::conflict(
            "conflict",
            format!(
                "delivery {id} is still pending; only delivered or dead-lettered deliveries \
                 can be replayed"
            ),
        )),
        Replay::EndpointDisabled => Err(ApiError::conflict(
            "endpoint_disabled",
            format!(
                "delivery {id} belongs to a disabled endpoint; enable it first \
                 (POST /v1/endpoints/{{id}}/enable)"
            ),
        )),
        Replay::EndpointMissing(endpoint) => Err(ApiError::conflict(
            "endpoint_missing",
            format!(
                "delivery {id} belongs to endpoint `{endpoint}`, which is no longer configured"
            ),
        )),
        Replay::PluginFailed(reason) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "plugin_failed",
            format!("delivery {id} stays parked: {reason}"),
        )),
        Replay::Dropped(by) => Err(ApiError::conflict(
            "dropped",
            format!("delivery {id} stays parked: the plugin filter {by} now drops this event"),
        )),
    }
}

fn parse_id(text: &str) -> Result<DeliveryId, ApiError> {
    text.parse()
        .map_err(|err: crate::ids::InvalidId| ApiError::not_found(err.to_string()))
}

fn unknown(id: DeliveryId) -> ApiError {
    ApiError::not_found(format!("no delivery with id {id}"))
}

/// A delivery as lists show it: everything but the attempts.
fn summary(record: &DeliveryRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.id,
        "event_id": record.event_id,
        "endpoint_id": record.endpoint_id,
        "status": record.status,
        "attempt_count": record.attempt_count,
        "next_attempt_at": record.next_attempt_at.map(rfc3339),
        "last_error": record.last_error,
        "created_at": rfc3339(record.created_at),
        "content_type": record.content_type.as_deref().unwrap_or("application/json"),
        "plugins": record.plugins,
    })
}

fn view(record: &DeliveryRecord, attempts: &[AttemptRecord]) -> serde_json::Value {
    let attempts: Vec<serde_json::Value> = attempts
        .iter()
        .map(|attempt| {
            serde_json::json!({
                "number": attempt.number,
                "at": rfc3339(attempt.at),
                "status_code": attempt.status_code,
                "latency_ms": attempt.latency_ms,
                "error": attempt.error,
                "response_snippet": attempt.response_snippet,
            })
        })
        .collect();
    let mut view = summary(record);
    view["attempts"] = serde_json::Value::Array(attempts);
    view
}
