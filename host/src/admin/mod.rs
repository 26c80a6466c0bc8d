//! The admin HTTP API (axum on hyper): routing, bearer-token auth and JSON errors.
//!
//! One file per resource. Every error is `{"error":{"code","message"}}` with a message that
//! says what to fix; `/healthz` is the only route without a token. The token is compared in
//! constant time.

mod deliveries;
mod endpoints;
mod error;
mod event_reads;
mod events;
mod idempotency;
mod listener;
mod payments;
mod plugins;

use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::gateway::Gateway;
use crate::signing::Secret;

pub use error::ApiError;
pub use listener::{ListenerLimits, serve};

/// Largest request body accepted (a full batch of events fits comfortably).
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub gateway: Arc<Gateway>,
    token: Arc<Secret>,
}

/// The API's routes, ready to serve.
pub fn router(
    gateway: Arc<Gateway>,
    token: Secret,
    body_timeout: Duration,
    probes_need_token: bool,
) -> Router {
    let plugin_limit = gateway.plugins().runtime().limits().wasm_bytes;
    let limits = BodyLimits {
        timeout: body_timeout,
        plugin: plugin_limit,
    };
    let state = ApiState {
        gateway,
        token: Arc::new(token),
    };
    let probes = Router::new()
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics));
    let (protected_probes, open_probes) = if probes_need_token {
        (probes, Router::new())
    } else {
        (Router::new(), probes)
    };
    Router::new()
        .merge(protected_probes)
        .route("/v1/events", post(events::publish).get(event_reads::list))
        .route("/v1/events/{id}", get(event_reads::show))
        .route("/v1/events/{id}/resend", post(event_reads::resend))
        .route("/v1/events/batch", post(events::publish_batch))
        .route("/v1/deliveries", get(deliveries::list))
        .route("/v1/deliveries/{id}", get(deliveries::show))
        .route("/v1/deliveries/{id}/replay", post(deliveries::replay))
        .route("/v1/deliveries/{id}/retry", post(deliveries::retry))
        .route(
            "/v1/endpoints",
            get(endpoints::list).post(endpoints::create),
        )
        .route(
            "/v1/endpoints/{id}",
            get(endpoints::show)
                .patch(endpoints::update)
                .delete(endpoints::delete),
        )
        .route("/v1/endpoints/{id}/enable", post(endpoints::enable))
        .route(
            "/v1/endpoints/{id}/rotate-secret",
            post(endpoints::rotate_secret),
        )
        .route("/v1/endpoints/{id}/test", post(endpoints::send_test))
        .route("/v1/endpoints/{id}/recover", post(endpoints::recover))
        .route("/v1/plugins", get(plugins::list))
        .route(
            "/v1/plugins/{name}",
            put(plugins::upload)
                .delete(plugins::delete)
                .layer(DefaultBodyLimit::max(plugin_limit.max(BODY_LIMIT))),
        )
        .route("/v1/plugins/{name}/test", post(plugins::dry_run))
        .route("/v1/payments", post(payments::create).get(payments::list))
        .route("/v1/payments/{id}", get(payments::show))
        .route("/v1/payments/{id}/cancel", post(payments::cancel))
        // Inner to the token check: no body byte is read (and no `100 Continue` sent) for a
        // request that is not authenticated.
        .route_layer(middleware::from_fn_with_state(limits, read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route("/healthz", get(health))
        .merge(open_probes)
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Digests have one length whatever the token's, so the compare leaks neither the token's
    // length nor how much of it matched.
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(state.token.expose().as_bytes());
    if bool::from(presented.as_slice().ct_eq(expected.as_slice())) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// How much of a request body is read, and for how long.
#[derive(Clone, Copy)]
struct BodyLimits {
    timeout: Duration,
    /// A plugin upload's cap (`plugins.max_wasm_mib`).
    plugin: usize,
}

/// Reads the whole body within the timeout (a client that trickles it is cut off with 408)
/// and hands the handler a buffered body. Plugin uploads may be as large as a plugin may be.
async fn read_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body_timeout = limits.timeout;
    let limit = if parts.method == axum::http::Method::PUT
        && parts.uri.path().starts_with("/v1/plugins/")
    {
        limits.plugin
    } else {
        BODY_LIMIT
    };
    let bytes = match tokio::time::timeout(body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            return if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the request body is over {limit} bytes"),
                )
            } else {
                ApiError::invalid_body(format!("the request body could not be read: {err}"))
            }
            .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the request body did not arrive within {body_timeout:?}"),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Most items on one page of a list.
pub(crate) const MAX_PAGE: usize = 500;

/// A list's `status` filter parsed as `T` (a snake_case enum); the error lists `choices`.
pub(crate) fn status_param<T: serde::de::DeserializeOwned>(
    text: Option<&str>,
    choices: &str,
) -> Result<Option<T>, ApiError> {
    text.map(|text| {
        serde_json::from_value::<T>(serde_json::json!(text)).map_err(|_| {
            ApiError::invalid_body(format!("status: `{text}` is not one of {choices}"))
        })
    })
    .transpose()
}

/// A list's `cursor` (the previous page's `next_cursor`) and `limit` (default 100, at most
/// [`MAX_PAGE`]), checked; errors name the parameter.
pub(crate) fn page_params<Id: std::str::FromStr<Err = crate::ids::InvalidId>>(
    cursor: Option<&str>,
    limit: Option<usize>,
) -> Result<(Option<Id>, usize), ApiError> {
    let cursor = cursor
        .map(|text| {
            text.parse::<Id>()
                .map_err(|err| ApiError::invalid_body(format!("cursor: {err}")))
        })
        .transpose()?;
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_body(format!(
            "limit: must be 1 to {MAX_PAGE}, got {limit}"
        )));
    }
    Ok((cursor, limit))
}

/// A query string that does not fit the route's parameters, as a JSON 400 naming the problem
/// (axum's own rejection is plain text).
pub(crate) fn query_error(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::invalid_body(format!("query string: {}", rejection.body_text()))
}

/// The Prometheus text exposition.
async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let gateway = state.gateway.clone();
    let text = tokio::task::spawn_blocking(move || gateway.metrics_text())
        .await
        .map_err(|err| ApiError::internal(err.to_string()))??;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// 200 when the gateway can do its work, 503 with the failing check otherwise.
async fn ready(State(state): State<ApiState>) -> Response {
    let (ready, body) = state.gateway.readiness();
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}
