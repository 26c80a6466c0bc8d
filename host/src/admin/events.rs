//! `POST /v1/events` and `POST /v1/events/batch`: publish events.
//!
//! The answer comes only after the event and its deliveries are committed. An
//! `Idempotency-Key` makes a retried publish return the original event (200 with
//! `idempotent-replayed: true`) instead of publishing twice.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::idempotency::{self, MAX_KEY_LEN, REPLAYED};
use super::{ApiError, ApiState};
use crate::events::{MAX_BATCH_EVENTS, PublishRequest};
use crate::ids::{DeliveryId, EventId};
use crate::queue::{EventSummary, PublishOutcome};
use crate::time::rfc3339;

const MAX_TYPE_LEN: usize = 128;
/// Deepest nesting of objects and arrays accepted in `data` (what JSON parsers downstream,
/// plugins' included, accept).
const MAX_DATA_DEPTH: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventBody {
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: Box<serde_json::value::RawValue>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    events: Vec<EventBody>,
}

pub async fn publish(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut event: EventBody = parse(&body)?;
    if let Some(key) = idempotency::key(&headers)? {
        event.idempotency_key = Some(key);
    }
    let request = validate(event, None)?;
    let outcome = state
        .gateway
        .publish(vec![request])
        .await?
        .pop()
        .expect("one outcome per published event");
    match outcome {
        PublishOutcome::Created(summary) => {
            Ok((StatusCode::CREATED, Json(view(&summary))).into_response())
        }
        PublishOutcome::Replayed(summary) => Ok((
            StatusCode::OK,
            [(REPLAYED, HeaderValue::from_static("true"))],
            Json(view(&summary)),
        )
            .into_response()),
        PublishOutcome::Conflict { key } => Err(conflict(&key)),
    }
}

pub async fn publish_batch(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let batch: BatchBody = parse(&body)?;
    if batch.events.is_empty() || batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::invalid_body(format!(
            "`events` must hold 1 to {MAX_BATCH_EVENTS} events, got {}",
            batch.events.len()
        )));
    }
    let requests = batch
        .events
        .into_iter()
        .enumerate()
        .map(|(index, event)| validate(event, Some(index)))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes = state.gateway.publish(requests).await?;
    let events: Vec<BatchItem> = outcomes
        .iter()
        .map(|outcome| match outcome {
            PublishOutcome::Created(summary) => BatchItem::Event(view(summary)),
            PublishOutcome::Replayed(summary) => BatchItem::Event(EventView {
                idempotent_replayed: true,
                ..view(summary)
            }),
            PublishOutcome::Conflict { key } => BatchItem::Error(conflict(key).to_json()),
        })
        .collect();
    Ok((StatusCode::CREATED, Json(BatchView { events })).into_response())
}

pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid_body(format!("the request body is not valid: {err}")))
}

/// Checks one event; `index` names its place in a batch for the message.
pub(super) fn validate(event: EventBody, index: Option<usize>) -> Result<PublishRequest, ApiError> {
    let at = index
        .map(|index| format!("events[{index}]: "))
        .unwrap_or_default();
    let type_ok = !event.event_type.is_empty()
        && event.event_type.len() <= MAX_TYPE_LEN
        && event
            .event_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !type_ok {
        return Err(ApiError::invalid_body(format!(
            "{at}`type` must be 1 to {MAX_TYPE_LEN} characters of letters, digits, `.`, `_` \
             or `-` (like \"payment.confirmed\")"
        )));
    }
    if !event.data.get().starts_with('{') {
        return Err(ApiError::invalid_body(format!(
            "{at}`data` must be a JSON object"
        )));
    }
    if crate::events::nesting_depth(event.data.get()) > MAX_DATA_DEPTH {
        return Err(ApiError::invalid_body(format!(
            "{at}`data` is nested deeper than {MAX_DATA_DEPTH} levels"
        )));
    }
    if let Some(key) = &event.idempotency_key
        && (key.is_empty() || key.len() > MAX_KEY_LEN)
    {
        return Err(ApiError::invalid_body(format!(
            "{at}the idempotency key must be 1 to {MAX_KEY_LEN} characters"
        )));
    }
    Ok(PublishRequest {
        event_type: event.event_type,
        data: event.data,
        idempotency_key: event.idempotency_key,
    })
}

fn conflict(key: &str) -> ApiError {
    ApiError::conflict(
        "idempotency_conflict",
        format!(
            "idempotency key `{key}` was already used for a different event; use a new key \
             for new content"
        ),
    )
}

/// A published event as the API answers it.
#[derive(Serialize)]
struct EventView<'a> {
    id: EventId,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    deliveries: Vec<DeliveryView<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dropped: Vec<DroppedView<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    idempotent_replayed: bool,
}

#[derive(Serialize)]
struct DeliveryView<'a> {
    id: DeliveryId,
    endpoint_id: &'a str,
    /// Only for a delivery parked at publish time.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct DroppedView<'a> {
    endpoint_id: &'a str,
    by: &'a str,
}

/// One place in a batch answer: the event, or why it was refused.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchItem<'a> {
    Event(EventView<'a>),
    Error(serde_json::Value),
}

#[derive(Serialize)]
struct BatchView<'a> {
    events: Vec<BatchItem<'a>>,
}

fn view(summary: &EventSummary) -> EventView<'_> {
    EventView {
        id: summary.id,
        event_type: &summary.event_type,
        timestamp: rfc3339(summary.created_at),
        deliveries: summary
            .deliveries
            .iter()
            .map(|delivery| DeliveryView {
                id: delivery.id,
                endpoint_id: &delivery.endpoint_id,
                status: delivery.parked.as_ref().map(|_| "dead_lettered"),
                error: delivery.parked.as_deref(),
            })
            .collect(),
        dropped: summary
            .dropped
            .iter()
            .map(|dropped| DroppedView {
                endpoint_id: &dropped.endpoint_id,
                by: &dropped.by,
            })
            .collect(),
        idempotent_replayed: false,
    }
}
