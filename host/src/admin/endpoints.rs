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
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::events::{EventBody, parse, parse_optional, validate};
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

/// Lists every endpoint, from the config file and from the API.
#[utoipa::path(
    get,
    path = "/v1/endpoints",
    operation_id = "list_endpoints",
    tag = "endpoints",
    responses(
        (status = 200, body = serde_json::Value, description = "`{\"endpoints\": [endpoint]}`; \
            each is the endpoint: `id`, `url`, `description`, `source` (`config` or `api`), \
            `enabled`, `disabled_reason`, `event_types`, `plugins`, `retry_schedule`, \
            `retry_jitter`, `concurrency`, `request_timeout` (the effective values), \
            `previous_secret_expires_at`, `created_at`, `updated_at`; never a secret"),
    ),
)]
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

/// Shows an endpoint.
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}",
    operation_id = "get_endpoint",
    tag = "endpoints",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, body = serde_json::Value, description = "The endpoint: `id`, `url`, \
            `description`, `source` (`config` or `api`), `enabled`, `disabled_reason`, \
            `event_types`, `plugins`, `retry_schedule`, `retry_jitter`, `concurrency`, \
            `request_timeout` (the effective values), `previous_secret_expires_at`, `created_at`, \
            `updated_at`; never a secret"),
        (status = 404, body = ErrorBody, description = "`not_found`: no endpoint has this id"),
    ),
)]
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

// For the API document only: the handlers hand the fields to `EndpointConfig` as they come,
// and a test below keeps the two alike.
/// The fields `POST /v1/endpoints` and `PATCH /v1/endpoints/{id}` take: those of an
/// `[[endpoints]]` table in the config file, plus `enabled`.
#[derive(ToSchema)]
#[expect(dead_code, reason = "a shape for the API document; never built")]
struct EndpointFields {
    /// Letters, digits, `-` and `_`; generated (`ep_…`) when absent. On create only.
    #[schema(example = "orders")]
    id: Option<String>,
    /// Where deliveries are POSTed: an http(s) URL the egress guard allows. Required on create.
    #[schema(example = "https://example.com/webhooks")]
    url: Option<String>,
    /// Free text for operators, at most 1,000 characters.
    description: Option<String>,
    /// The signing secret: `whsec_` and base64, or raw text; generated when absent. On create
    /// only: rotate it with `POST /v1/endpoints/{id}/rotate-secret`.
    secret: Option<String>,
    /// A second secret that also signs until `previous_secret_expires_at`, for an endpoint
    /// moved from another sender. On create only, and with `previous_secret_expires_at`.
    previous_secret: Option<String>,
    /// RFC 3339: when `previous_secret` stops signing. On create only.
    previous_secret_expires_at: Option<String>,
    /// Event types it receives; `["*"]` (the default) means all.
    event_types: Option<Vec<String>>,
    /// Delay before attempt 1, 2, … as durations; its length is the number of attempts.
    /// Default: `delivery.retry_schedule`.
    #[schema(example = json!(["0s", "1m", "10m"]))]
    retry_schedule: Option<Vec<String>>,
    /// Each delay is scaled by a random factor in `1 ± retry_jitter`. Default:
    /// `delivery.retry_jitter`.
    retry_jitter: Option<f64>,
    /// Requests in flight to it at once, at most 256. Default: `delivery.concurrency`.
    concurrency: Option<usize>,
    /// How long one attempt may take, as a duration. Default: `delivery.request_timeout`.
    #[schema(example = "5s")]
    request_timeout: Option<String>,
    /// Plugins run in order on each event for it: every filter may drop it, each transform
    /// reshapes the body the next one sees.
    plugins: Option<Vec<PluginStepFields>>,
    /// `false` disables it (its deliveries wait), `true` enables it. Default on create: true.
    enabled: Option<bool>,
}

/// One step of an endpoint's plugin chain.
#[derive(ToSchema)]
#[schema(as = PluginStep)]
#[expect(dead_code, reason = "a shape for the API document; never built")]
struct PluginStepFields {
    /// A loaded plugin's name.
    name: String,
    /// Handed to the plugin as JSON; default `{}`.
    #[schema(value_type = Option<Object>)]
    config: Option<serde_json::Value>,
}

/// Creates an endpoint.
///
/// `url` is required; `id` and `secret` are generated when absent. With an `Idempotency-Key`,
/// a retry gets the first answer again (its secret included).
#[utoipa::path(
    post,
    path = "/v1/endpoints",
    operation_id = "create_endpoint",
    tag = "endpoints",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, description = "1 to 255 \
        visible ASCII characters; a retry with the same key and body gets the first answer again")),
    request_body = EndpointFields,
    responses(
        (status = 201, body = serde_json::Value, description = "Created (or replayed by its \
            idempotency key, with `idempotent-replayed: true`): the endpoint as `GET \
            /v1/endpoints/{id}` shows it, plus its `secret`, shown this once"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: a field is not valid (the \
            message names it)"),
        (status = 409, body = ErrorBody, description = "`endpoint_exists`: the id is taken; or \
            `idempotency_conflict`: the key was used with a different body"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
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
    let work = gateway.endpoint_edit(&id, Change::Create(Box::new(config)), body.enabled);
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

/// Changes some of an endpoint's fields.
///
/// A JSON merge patch over the endpoint's fields (`null` removes an optional one); `enabled`
/// enables or disables it. `id` and the secrets cannot change (rotate the secret instead).
#[utoipa::path(
    patch,
    path = "/v1/endpoints/{id}",
    operation_id = "update_endpoint",
    tag = "endpoints",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = EndpointFields,
    responses(
        (status = 200, body = serde_json::Value, description = "The endpoint as changed, as `GET \
            /v1/endpoints/{id}` shows it"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: a field is not valid or \
            cannot change (the message names it)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no endpoint has this id"),
        (status = 409, body = ErrorBody, description = "`endpoint_from_config`: change it in the \
            config file instead"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
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

/// Deletes an endpoint created over the API.
#[utoipa::path(
    delete,
    path = "/v1/endpoints/{id}",
    operation_id = "delete_endpoint",
    tag = "endpoints",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "`not_found`: no endpoint has this id"),
        (status = 409, body = ErrorBody, description = "`endpoint_from_config`: remove it from the \
            config file instead"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let work = state.gateway.endpoint_edit(&id, Change::Delete, None);
    state.gateway.edit_endpoint(work).await?.map_err(refusal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A secret rotation; an empty body takes every default.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SecretRotation)]
struct RotateBody {
    /// The new secret; generated when absent.
    secret: Option<String>,
    /// How long the current secret keeps signing beside the new one (default 24h, at most
    /// 30 days).
    #[schema(example = "24h")]
    previous_secret_valid_for: Option<String>,
}

/// Rotates an endpoint's signing secret.
///
/// The new secret signs from now on; the current one keeps signing too (a second signature)
/// until the overlap ends, so receivers can switch.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/rotate-secret",
    operation_id = "rotate_endpoint_secret",
    tag = "endpoints",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body(content = Option<RotateBody>, description = "May be empty: a generated secret, \
        24h of overlap"),
    responses(
        (status = 200, body = serde_json::Value, description = "`{\"id\", \"secret\", \
            \"previous_secret_expires_at\"}`: the new secret, shown this once"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: the body is not valid (the \
            message names the field)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no endpoint has this id"),
        (status = 409, body = ErrorBody, description = "`endpoint_from_config`: change its secret \
            in the config file instead"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
pub async fn rotate_secret(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: RotateBody = parse_optional(&body)?;
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

/// A test event; an empty body sends the default one.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TestEvent)]
struct TestBody {
    /// Default `webhook.test`.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// A JSON object; default: a message naming the endpoint.
    #[schema(value_type = Option<Object>)]
    data: Option<Box<serde_json::value::RawValue>>,
}

/// Sends a test event to one endpoint.
///
/// Commits an event for this endpoint alone and answers with its delivery, which goes out
/// like any other.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/test",
    operation_id = "send_endpoint_test_event",
    tag = "endpoints",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body(content = Option<TestBody>, description = "May be empty: the default test event"),
    responses(
        (status = 202, body = serde_json::Value, description = "`{\"event_id\", \"delivery_id\"}`"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: the body, type or data is \
            not valid"),
        (status = 404, body = ErrorBody, description = "`not_found`: no endpoint has this id"),
        (status = 409, body = ErrorBody, description = "`endpoint_disabled`: enable it first"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
pub async fn send_test(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body: TestBody = parse_optional(&body)?;
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

/// Enables an endpoint, whatever disabled it.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/enable",
    operation_id = "enable_endpoint",
    tag = "endpoints",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, body = serde_json::Value, description = "The endpoint, as `GET \
            /v1/endpoints/{id}` shows it"),
        (status = 404, body = ErrorBody, description = "`not_found`: no endpoint has this id"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
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

/// Which dead letters to replay; an empty body replays them all.
#[derive(serde::Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Recovery)]
struct RecoverRequest {
    /// RFC 3339; default: every dead letter of the endpoint.
    since: Option<String>,
}

/// Replays an endpoint's dead letters.
///
/// For after its receiver is fixed: at most 10,000 per call (`more` says whether some are
/// left). Parked deliveries run their plugin chain again first.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/recover",
    operation_id = "recover_endpoint",
    tag = "endpoints",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body(content = Option<RecoverRequest>, description = "May be empty: every dead letter"),
    responses(
        (status = 200, body = serde_json::Value, description = "`{\"scheduled\", \
            \"not_scheduled\": [{\"id\", \"reason\"}], \"more\"}`: how many were scheduled, those \
            that were not and why, and whether more are left"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: `since` is not RFC 3339"),
        (status = 404, body = ErrorBody, description = "`not_found`: no endpoint has this id"),
        (status = 409, body = ErrorBody, description = "`endpoint_disabled`: enable it first"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
pub async fn recover(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: RecoverRequest = parse_optional(&body)?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    use super::*;
    use crate::config::PluginStepConfig;

    fn properties<T: PartialSchema>() -> BTreeSet<String> {
        match T::schema() {
            RefOr::T(Schema::Object(object)) => object.properties.into_keys().collect(),
            other => panic!(
                "not an object schema: {}",
                serde_json::to_string(&other).unwrap()
            ),
        }
    }

    fn keys(value: &serde_json::Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn the_documented_endpoint_fields_are_those_of_the_config_type() {
        // Every field set, so every field serializes (a new one will not compile until it is
        // set here, and then must be documented).
        let config = EndpointConfig {
            id: "orders".to_owned(),
            url: "https://example.com/hook".to_owned(),
            description: Some("orders".to_owned()),
            secret: Secret::generate(),
            previous_secret: Some(Secret::generate()),
            previous_secret_expires_at: Some("2026-12-01T00:00:00Z".to_owned()),
            event_types: vec!["*".to_owned()],
            retry_schedule: Some(vec![Duration::from_secs(5)]),
            retry_jitter: Some(0.1),
            concurrency: Some(4),
            request_timeout: Some(Duration::from_secs(5)),
            plugins: vec![PluginStepConfig {
                name: "min-amount".to_owned(),
                config: toml::Value::Table(toml::Table::new()),
            }],
        };
        let json = serde_json::to_value(&config).unwrap();
        let mut accepted = keys(&json);
        accepted.insert("enabled".to_owned());
        assert_eq!(properties::<EndpointFields>(), accepted);
        assert_eq!(
            properties::<PluginStepFields>(),
            keys(&json["plugins"][0]),
            "a plugin step"
        );
    }
}
