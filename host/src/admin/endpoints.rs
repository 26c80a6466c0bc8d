//! `/v1/endpoints`: list, create, show, update (`PATCH`), delete, rotate the secret, send a
//! test event, enable, recover dead letters.
//!
//! A secret is shown once: in the answer that created it (create, rotate). Lists and shows
//! never carry one. Endpoints from the config file are read-only here (409): the file is
//! their source, and it is written over them at every start.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::events::{EventBody, parse, validate};
use super::{ApiError, ApiState, idempotency};
use crate::config::{DeliveryConfig, EndpointConfig};
use crate::delivery::{Endpoint, Subscriber};
use crate::endpoints::{Change, Edited, Refused};
use crate::queue::PublishOutcome;
use crate::queue::idempotent::{Answer, Idempotent, Keyed};
use crate::signing::Secret;
use crate::store::StoredEndpoint;
use crate::time::rfc3339;

/// How long a rotated-out secret keeps signing unless the request says otherwise.
const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// The longest overlap a rotation may ask for.
const MAX_OVERLAP: Duration = Duration::from_secs(30 * 24 * 3600);

pub async fn list(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let endpoints: Vec<serde_json::Value> = state
        .gateway
        .subscriptions()
        .all()
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
    Ok(Json(view(&subscriber)))
}

/// The body of `POST /v1/endpoints`: an endpoint's fields as in the config file, with `id`
/// and `secret` optional (generated when absent) and `enabled` (default true).
#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// `POST /v1/endpoints`. With an `Idempotency-Key`, a retry gets the first answer again
/// (its secret included).
pub async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    let body: CreateBody = parse(&raw)?;
    let id = body
        .id
        .unwrap_or_else(|| format!("ep_{}", uuid::Uuid::now_v7().simple()));
    let secret = match body.secret {
        Some(text) => Secret::new(text),
        None => Secret::generate(),
    };
    let mut fields = body.rest;
    fields.insert("id".to_owned(), id.clone().into());
    fields.insert("secret".to_owned(), secret.expose().into());
    let config: EndpointConfig = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|err| ApiError::invalid_body(format!("the endpoint is not valid: {err}")))?;
    let gateway = &state.gateway;
    let work = gateway.endpoint_edit(&id, Change::Create(config), body.enabled);
    let defaults = gateway.endpoint_checks().delivery.clone();
    let created = move |edited: &Result<Edited, Refused>| match edited {
        Ok(Edited::Stored { record, disabled }) => Some(Answer {
            status: StatusCode::CREATED.as_u16(),
            body: created_view(record, disabled.clone(), &defaults)?,
        }),
        _ => None,
    };
    let answer = match key {
        None => {
            let edited = gateway.edit_endpoint(work).await?;
            let answer = created(&edited);
            edited.map_err(refusal)?;
            answer
        }
        Some(key) => {
            let keyed = Idempotent::new("POST /v1/endpoints", &key, &raw, work, Box::new(created));
            let keyed = gateway.edit_endpoint(keyed).await?;
            match keyed {
                Keyed::Fresh { output, answer } => {
                    output.map_err(refusal)?;
                    answer
                }
                Keyed::Replayed(answer) => return Ok(idempotency::replayed(answer)),
                Keyed::Mismatch => return Err(idempotency::reused(&key)),
            }
        }
    };
    let answer = answer.ok_or_else(|| ApiError::internal("a create answered with a delete"))?;
    Ok((StatusCode::CREATED, Json(answer.body)).into_response())
}

/// A created endpoint as the create answers it: the view and, this once, its secret.
fn created_view(
    record: &StoredEndpoint,
    disabled: Option<String>,
    defaults: &DeliveryConfig,
) -> Option<serde_json::Value> {
    let endpoint = Endpoint::from_config(&record.config, defaults).ok()?;
    let mut view = view_of(&endpoint, record, disabled);
    view["secret"] = record.config.secret.expose().into();
    Some(view)
}

/// `PATCH /v1/endpoints/{id}`: a JSON merge patch over the endpoint's fields (`null` removes
/// an optional one); `enabled` enables or disables it.
pub async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut patch: serde_json::Map<String, serde_json::Value> = parse(&body)?;
    let enabled = match patch.remove("enabled") {
        None => None,
        Some(serde_json::Value::Bool(enabled)) => Some(enabled),
        Some(other) => {
            return Err(ApiError::invalid_body(format!(
                "enabled: must be true or false, got {other}"
            )));
        }
    };
    let work = state
        .gateway
        .endpoint_edit(&id, Change::Update(patch), enabled);
    state.gateway.edit_endpoint(work).await?.map_err(refusal)?;
    show(State(state), Path(id)).await
}

pub async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let work = state.gateway.endpoint_edit(&id, Change::Delete, None);
    state.gateway.edit_endpoint(work).await?.map_err(refusal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// The new secret; generated when absent.
    secret: Option<String>,
    /// How long the current secret keeps signing beside the new one (default 24h).
    previous_secret_valid_for: Option<String>,
}

/// `POST /v1/endpoints/{id}/rotate-secret`: a new secret signs from now on; the current one
/// keeps signing too (a second signature) until the overlap ends, so receivers can switch.
pub async fn rotate_secret(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        parse(&body)?
    };
    let overlap = match body.previous_secret_valid_for.as_deref() {
        None => DEFAULT_OVERLAP,
        Some(text) => humantime::parse_duration(text).map_err(|_| {
            ApiError::invalid_body(format!(
                "previous_secret_valid_for: `{text}` is not a duration like \"24h\""
            ))
        })?,
    };
    if overlap > MAX_OVERLAP {
        return Err(ApiError::invalid_body(format!(
            "previous_secret_valid_for: at most {}",
            humantime::format_duration(MAX_OVERLAP)
        )));
    }
    let secret = match body.secret {
        Some(text) => Secret::new(text),
        None => Secret::generate(),
    };
    let work = state.gateway.endpoint_edit(
        &id,
        Change::Rotate {
            secret: secret.clone(),
            overlap,
        },
        None,
    );
    let edited = state.gateway.edit_endpoint(work).await?.map_err(refusal)?;
    let Edited::Stored { record, .. } = edited else {
        return Err(ApiError::internal("a rotation answered with a delete"));
    };
    Ok(Json(serde_json::json!({
        "id": id,
        "secret": secret.expose(),
        "previous_secret_expires_at": record.config.previous_secret_expires_at,
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestBody {
    #[serde(rename = "type")]
    event_type: Option<String>,
    data: Option<Box<serde_json::value::RawValue>>,
}

/// `POST /v1/endpoints/{id}/test`: commits an event for this endpoint alone (default type
/// `webhook.test`) and answers with its delivery, which goes out like any other.
pub async fn send_test(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body: TestBody = if body.iter().all(u8::is_ascii_whitespace) {
        TestBody::default()
    } else {
        parse(&body)?
    };
    let subscriber = state
        .gateway
        .subscriptions()
        .get(&id)
        .ok_or_else(|| unknown(&id))?;
    if let Some(reason) = subscriber.disabled_reason() {
        return Err(disabled(&id, &reason));
    }
    let data = match body.data {
        Some(data) => data,
        None => serde_json::value::to_raw_value(&serde_json::json!({
            "message": "a test event from Hookgate",
            "endpoint_id": id,
        }))
        .map_err(|err| ApiError::internal(err.to_string()))?,
    };
    let request = validate(
        EventBody {
            event_type: body.event_type.unwrap_or_else(|| "webhook.test".to_owned()),
            data,
            idempotency_key: None,
        },
        None,
    )?;
    let outcome = state
        .gateway
        .send_test_event(&id, request)
        .await?
        .ok_or_else(|| unknown(&id))?;
    let PublishOutcome::Created(summary) = outcome else {
        return Err(ApiError::internal(
            "a test event without a key was a replay",
        ));
    };
    let delivery = summary
        .deliveries
        .first()
        .map(|delivery| delivery.id.to_string());
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "event_id": summary.id.to_string(),
            "delivery_id": delivery,
        })),
    ))
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
    show(State(state), Path(id)).await
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
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: RecoverRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RecoverRequest::default()
    } else {
        parse(&body)?
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
        return Err(disabled(&id, &reason));
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

fn disabled(id: &str, reason: &str) -> ApiError {
    ApiError::conflict(
        "endpoint_disabled",
        format!("endpoint `{id}` is disabled ({reason}); enable it first"),
    )
}

fn refusal(refused: Refused) -> ApiError {
    match refused {
        Refused::NotFound(id) => unknown(&id),
        Refused::Exists(_) => ApiError::conflict("endpoint_exists", refused.to_string()),
        Refused::FromConfig(_) => ApiError::conflict("endpoint_from_config", refused.to_string()),
        Refused::Invalid(message) => ApiError::invalid_body(message),
    }
}

fn view(subscriber: &Subscriber) -> serde_json::Value {
    view_of(
        &subscriber.endpoint(),
        &subscriber.record(),
        subscriber.disabled_reason(),
    )
}

/// An endpoint as the API shows it: everything but its secrets, with the effective retry
/// policy, concurrency and timeout.
fn view_of(
    endpoint: &Endpoint,
    record: &StoredEndpoint,
    disabled_reason: Option<String>,
) -> serde_json::Value {
    let plugins: Vec<serde_json::Value> = record
        .config
        .plugins
        .iter()
        .map(|step| serde_json::json!({"name": step.name, "config": step.config}))
        .collect();
    let schedule: Vec<String> = endpoint
        .policy
        .schedule
        .iter()
        .map(|delay| humantime::format_duration(*delay).to_string())
        .collect();
    serde_json::json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "description": record.config.description,
        "source": if record.from_config { "config" } else { "api" },
        "enabled": disabled_reason.is_none(),
        "disabled_reason": disabled_reason,
        "event_types": endpoint.event_types,
        "plugins": plugins,
        "retry_schedule": schedule,
        "retry_jitter": endpoint.policy.jitter,
        "concurrency": endpoint.concurrency,
        "request_timeout": humantime::format_duration(endpoint.request_timeout).to_string(),
        "previous_secret_expires_at": endpoint
            .previous_key
            .as_ref()
            .filter(|(_, at)| *at > crate::time::now_millis())
            .map(|(_, at)| rfc3339(*at)),
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
    })
}
