//! `GET /v1/events` (filtered by type and time, newest first, cursor pages) and
//! `GET /v1/events/{id}` (the event as published, with each delivery's current status) and
//! `POST /v1/events/{id}/resend`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{ApiError, ApiState};
use crate::gateway::Replay;
use crate::ids::EventId;
use crate::store::{DeliveryRecord, EventRecord};
use crate::time::{UnixMillis, parse_rfc3339, rfc3339};

/// Most records one list request examines; a sparse filter gets a short page and a cursor.
const MAX_SCAN: usize = 20_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only events of this type.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// RFC 3339: events created at or after.
    from: Option<String>,
    /// RFC 3339: events created before.
    to: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Events per page: 1 to 500, default 100.
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

/// Lists events, newest first.
///
/// A page may be short when the filter is sparse; follow `next_cursor` until it is null.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "list_events",
    tag = "events",
    params(ListQuery),
    responses(
        (status = 200, body = EventPage, description = "A page of events, each with the endpoints \
            it went to"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: a query parameter is not \
            valid (the message names it)"),
    ),
)]
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
        store.events(before, limit, MAX_SCAN, &|event| {
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
    // axum's Json writes with serde_json directly: `data` stays raw.
    Ok(axum::Json(EventPage {
        events: page.iter().map(|event| view(event, None)).collect(),
        next_cursor: next.map(|id| id.to_string()),
    })
    .into_response())
}

/// Shows an event as published, with each delivery's current status.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    operation_id = "get_event",
    tag = "events",
    params(("id" = String, Path, description = "The event's id (`evt_…`)")),
    responses(
        (status = 200, body = EventView, description = "The event"),
        (status = 404, body = ErrorBody, description = "`not_found`: no event has this id"),
    ),
)]
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

/// Sends an event again to each endpoint it went to.
///
/// The original service's "send webhook": every delivered or dead-lettered delivery is
/// replayed with the same bytes and `webhook-id`; pending ones are on their way already.
#[utoipa::path(
    post,
    path = "/v1/events/{id}/resend",
    operation_id = "resend_event",
    tag = "events",
    params(("id" = String, Path, description = "The event's id (`evt_…`)")),
    responses(
        (status = 202, body = serde_json::Value, description = "`{\"id\", \"deliveries\": \
            [{\"id\", \"endpoint_id\", \"result\", \"reason\"}]}`: per delivery, `result` is \
            `scheduled`, `already_pending`, `gone` or `not_scheduled` (then `reason` says why)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no event has this id"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
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

/// One page of `GET /v1/events`.
#[derive(Serialize, ToSchema)]
struct EventPage<'a> {
    events: Vec<EventView<'a>>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

// Serialized directly (never through `serde_json::Value`), so `data` goes out byte for byte as
// it was published.
/// An event as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
struct EventView<'a> {
    #[schema(value_type = String, example = "evt_0190000000007000800000000000abcd")]
    id: EventId,
    #[serde(rename = "type")]
    event_type: &'a str,
    /// RFC 3339.
    timestamp: String,
    /// As published, byte for byte.
    #[schema(value_type = Object)]
    data: &'a serde_json::value::RawValue,
    idempotency_key: Option<&'a str>,
    deliveries: Vec<DeliveryLine<'a>>,
}

/// A delivery of the event; in a list, only its id and endpoint.
#[derive(Serialize, ToSchema)]
#[schema(as = EventDelivery)]
struct DeliveryLine<'a> {
    #[schema(value_type = String, example = "dlv_0190000000007000800000000000abcd")]
    id: crate::ids::DeliveryId,
    endpoint_id: &'a str,
    /// `pending`, `delivered`, `dead_lettered` or `dropped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
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
