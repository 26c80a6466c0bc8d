//! `GET /v1/events` (filtered by type and time, newest first, cursor pages) and
//! `GET /v1/events/{id}` (the event as published, with each delivery's current status) and
//! `POST /v1/events/{id}/resend`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::gateway::Replay;
use crate::ids::EventId;
use crate::store::{DeliveryRecord, EventRecord};
use crate::time::{UnixMillis, parse_rfc3339, rfc3339};

/// Most records one list request examines; a sparse filter gets a short page and a cursor.
const MAX_SCAN: usize = 20_000;

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// RFC 3339: events created at or after.
    from: Option<String>,
    /// RFC 3339: events created before.
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

fn time(field: &str, text: Option<&str>) -> Result<Option<UnixMillis>, ApiError> {
    text.map(|text| {
        parse_rfc3339(text).map_err(|_| {
            ApiError::invalid_body(format!(
                "{field}: `{text}` is not RFC 3339 (like 2026-11-23T10:00:00Z)"
            ))
        })
    })
    .transpose()
}

pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(super::query_error)?;
    let from = time("from", query.from.as_deref())?;
    let to = time("to", query.to.as_deref())?;
    let (cursor, limit) = super::page_params::<EventId>(query.cursor.as_deref(), query.limit)?;
    // Ids are time-ordered: `to` is where the newest-first walk starts.
    let before = match (cursor, to) {
        (Some(cursor), _) => Some(cursor),
        (None, Some(to)) => Some(EventId::from_u128(u128::from(to) << 80)),
        (None, None) => None,
    };
    let store = state.gateway.store().clone();
    let event_type = query.event_type;
    let (page, next) = tokio::task::spawn_blocking(move || {
        store.events(before, limit, MAX_SCAN, |event| {
            event_type
                .as_ref()
                .is_none_or(|wanted| &event.event_type == wanted)
                && from.is_none_or(|from| event.created_at >= from)
        })
    })
    .await
    .map_err(|err| ApiError::internal(err.to_string()))??;
    // Past `from`, older pages cannot match.
    let next =
        next.filter(|next| from.is_none_or(|from| (next.as_u128() >> 80) >= u128::from(from)));
    #[derive(Serialize)]
    struct Page<'a> {
        events: Vec<EventView<'a>>,
        next_cursor: Option<String>,
    }
    // axum's Json writes with serde_json directly: `data` stays raw.
    Ok(axum::Json(Page {
        events: page.iter().map(|event| view(event, None)).collect(),
        next_cursor: next.map(|id| id.to_string()),
    })
    .into_response())
}

pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (event, deliveries) = load(&state, &id).await?;
    Ok(axum::Json(view(&event, Some(&deliveries))).into_response())
}

/// The event named by `id` (text from the path) with its deliveries; 404 for a malformed or
/// unknown id.
async fn load(state: &ApiState, id: &str) -> Result<(EventRecord, Vec<DeliveryRecord>), ApiError> {
    let id: EventId = id
        .parse()
        .map_err(|err: crate::ids::InvalidId| ApiError::not_found(err.to_string()))?;
    let store = state.gateway.store().clone();
    tokio::task::spawn_blocking(move || store.event_with_deliveries(id))
        .await
        .map_err(|err| ApiError::internal(err.to_string()))??
        .ok_or_else(|| ApiError::not_found(format!("no event with id {id}")))
}

/// `POST /v1/events/{id}/resend`: sends the event again to each endpoint it went to (the
/// original service's "send webhook"): every delivered or dead-lettered delivery is replayed
/// with the same bytes and `webhook-id`; pending ones are on their way already.
pub async fn resend(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (event, deliveries) = load(&state, &id).await?;
    let id = event.id;
    let mut results = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let outcome = state
            .gateway
            .replay(delivery.id)
            .await
            .map_err(|err| match err {
                crate::gateway::ReplayError::Queue(err) => ApiError::from(err),
                crate::gateway::ReplayError::Store(err) => ApiError::from(err),
            })?;
        let reason = outcome.refusal();
        let result = match outcome {
            Replay::Scheduled => "scheduled",
            Replay::StillPending => "already_pending",
            Replay::NotFound => "gone",
            _ => "not_scheduled",
        };
        results.push(serde_json::json!({
            "id": delivery.id,
            "endpoint_id": delivery.endpoint_id,
            "result": result,
            "reason": reason,
        }));
    }
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"id": id, "deliveries": results})),
    )
        .into_response())
}

/// An event as the API shows it. Serialized directly (never through `serde_json::Value`), so
/// `data` goes out byte for byte as it was published.
#[derive(Serialize)]
struct EventView<'a> {
    id: EventId,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: &'a serde_json::value::RawValue,
    idempotency_key: Option<&'a str>,
    deliveries: Vec<DeliveryLine<'a>>,
}

#[derive(Serialize)]
struct DeliveryLine<'a> {
    id: crate::ids::DeliveryId,
    endpoint_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<crate::store::DeliveryStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
}

/// With `deliveries`, each one's current status; without, only who it went to.
fn view<'a>(event: &'a EventRecord, deliveries: Option<&'a [DeliveryRecord]>) -> EventView<'a> {
    EventView {
        id: event.id,
        event_type: &event.event_type,
        timestamp: rfc3339(event.created_at),
        data: &event.data,
        idempotency_key: event.idempotency_key.as_deref(),
        deliveries: match deliveries {
            Some(records) => records
                .iter()
                .map(|record| DeliveryLine {
                    id: record.id,
                    endpoint_id: &record.endpoint_id,
                    status: Some(record.status),
                    attempt_count: Some(record.attempt_count),
                    last_error: record.last_error.as_deref(),
                })
                .collect(),
            None => event
                .deliveries
                .iter()
                .map(|delivery| DeliveryLine {
                    id: delivery.id,
                    endpoint_id: &delivery.endpoint_id,
                    status: None,
                    attempt_count: None,
                    last_error: None,
                })
                .collect(),
        },
    }
}
