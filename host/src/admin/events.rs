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
use utoipa::ToSchema;

use super::error::ErrorBody;
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

/// An event to publish.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewEvent)]
pub(super) struct EventBody {
    /// 1 to 128 letters, digits, `.`, `_` or `-`.
    #[serde(rename = "type")]
    #[schema(example = "payment.confirmed")]
    pub event_type: String,
    /// The payload: a JSON object, sent to endpoints byte for byte.
    #[schema(value_type = Object)]
    pub data: Box<serde_json::value::RawValue>,
    /// Like the `Idempotency-Key` header (the header wins): a retry with the same key and
    /// content gets the first answer again.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Events to publish in one commit.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewEventBatch)]
struct BatchBody {
    /// 1 to 1,000 events.
    events: Vec<EventBody>,
}

/// Publishes one event.
///
/// The answer comes once the event and its deliveries are committed.
#[utoipa::path(
    post,
    path = "/v1/events",
    operation_id = "publish_event",
    tag = "events",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, description = "1 to 255 \
        visible ASCII characters; a retry with the same key and content gets the first answer \
        again")),
    request_body = EventBody,
    responses(
        (status = 201, body = EventView, description = "Published: the event and a delivery per \
            subscribed endpoint"),
        (status = 200, body = EventView, description = "A retry with a known idempotency key: the \
            original event",
            headers(("idempotent-replayed" = String, description = "`true`"))),
        (status = 400, body = ErrorBody, description = "`invalid_body`: the body, type, data or \
            key is not valid"),
        (status = 409, body = ErrorBody, description = "`idempotency_conflict`: the key was used \
            for a different event"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
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

/// Publishes up to 1,000 events in one commit.
///
/// Each place in the answer is the event or, for an idempotency conflict, its error.
#[utoipa::path(
    post,
    path = "/v1/events/batch",
    operation_id = "publish_event_batch",
    tag = "events",
    request_body = BatchBody,
    responses(
        (status = 201, body = BatchView, description = "Published, in the order sent"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: the body or one event is \
            not valid (the message names its index); nothing was published"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
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
            PublishOutcome::Conflict { key } => BatchItem::Error(conflict(key).body()),
        })
        .collect();
    Ok((StatusCode::CREATED, Json(BatchView { events })).into_response())
}

pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid_body(format!("the request body is not valid: {err}")))
}

/// A body that may be left out: empty (or only whitespace) is `T::default()`, else parsed.
pub(super) fn parse_optional<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse(body)
    }
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
#[derive(Serialize, ToSchema)]
#[schema(as = PublishedEvent)]
struct EventView<'a> {
    #[schema(value_type = String, example = "evt_0190000000007000800000000000abcd")]
    id: EventId,
    #[serde(rename = "type")]
    event_type: &'a str,
    /// RFC 3339.
    timestamp: String,
    deliveries: Vec<DeliveryView<'a>>,
    /// Endpoints whose plugin filter dropped the event; absent when none did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dropped: Vec<DroppedView<'a>>,
    /// Present (`true`) only in a batch answer, for an event replayed by its idempotency key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    idempotent_replayed: bool,
}

/// A delivery created by a publish.
#[derive(Serialize, ToSchema)]
#[schema(as = PublishedDelivery)]
struct DeliveryView<'a> {
    #[schema(value_type = String, example = "dlv_0190000000007000800000000000abcd")]
    id: DeliveryId,
    endpoint_id: &'a str,
    /// Only for a delivery parked at publish time: `dead_lettered`.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    /// Why it was parked (its plugin chain failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// An endpoint that will not get the event, and the plugin filter that said so.
#[derive(Serialize, ToSchema)]
#[schema(as = DroppedDelivery)]
struct DroppedView<'a> {
    endpoint_id: &'a str,
    /// The filter, as `name@version`.
    by: &'a str,
}

/// One place in a batch answer: the event, or why it was refused.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = PublishedBatchItem)]
enum BatchItem<'a> {
    Event(EventView<'a>),
    Error(ErrorBody),
}

/// A batch answer: one place per event sent, in order.
#[derive(Serialize, ToSchema)]
#[schema(as = PublishedBatch)]
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
