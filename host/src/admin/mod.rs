//! The admin HTTP API (axum on hyper): routing, bearer-token auth, JSON errors and the API's
//! OpenAPI document.
//!
//! One file per resource. Every error is `{"error":{"code","message"}}` with a message that
//! says what to fix. Every route needs the bearer token but `/healthz`, `/openapi.json` and,
//! unless `probes_need_token`, `/readyz` and `/metrics`. The token is compared in constant
//! time.
//!
//! Each route is registered together with its handler's `#[utoipa::path]` annotation
//! (`utoipa_axum::routes!`), so a route cannot be served undocumented; `/openapi.json` serves
//! the document built that way (see [`openapi`]), generated once when the router is built.

mod deliveries;
mod endpoints;
mod error;
mod event_reads;
mod events;
mod idempotency;
mod listener;
mod openapi;
mod payments;
mod plugins;

use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

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
    let token_state = state.clone();
    let (routes, document) = documented_routes(plugin_limit, probes_need_token, |protected| {
        // Inner to the token check: no body byte is read (and no `100 Continue` sent) for a
        // request that is not authenticated.
        protected
            .route_layer(middleware::from_fn_with_state(limits, read_body))
            .route_layer(middleware::from_fn_with_state(token_state, require_token))
    })
    .split_for_parts();
    let document = Bytes::from(document.to_json().expect("the OpenAPI document serializes"));
    routes
        .route(
            "/openapi.json",
            get(move || {
                std::future::ready(([(CONTENT_TYPE, "application/json")], document.clone()))
            }),
        )
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Every route but `/openapi.json`, each with its documentation. `protect` wraps the routes
/// that need the token (every `/v1/` one; the probes with `probes_need_token`); the document
/// says so on each of them. Built without state, so tests can read the document.
fn documented_routes(
    plugin_limit: usize,
    probes_need_token: bool,
    protect: impl FnOnce(OpenApiRouter<ApiState>) -> OpenApiRouter<ApiState>,
) -> OpenApiRouter<ApiState> {
    let probes = OpenApiRouter::default()
        .routes(routes!(ready))
        .routes(routes!(metrics));
    let (protected_probes, open_probes) = if probes_need_token {
        (probes, OpenApiRouter::default())
    } else {
        (OpenApiRouter::default(), probes)
    };
    let mut protected = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(protected_probes)
        .routes(routes!(events::publish, event_reads::list))
        .routes(routes!(event_reads::show))
        .routes(routes!(event_reads::resend))
        .routes(routes!(events::publish_batch))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::show))
        .routes(routes!(deliveries::replay))
        .routes(routes!(deliveries::retry))
        .routes(routes!(endpoints::list, endpoints::create))
        .routes(routes!(
            endpoints::show,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(endpoints::enable))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(endpoints::send_test))
        .routes(routes!(endpoints::recover))
        .routes(routes!(plugins::list))
        .routes(
            routes!(plugins::upload, plugins::delete)
                .layer(DefaultBodyLimit::max(plugin_limit.max(BODY_LIMIT))),
        )
        .routes(routes!(plugins::dry_run))
        .routes(routes!(payments::create, payments::list))
        .routes(routes!(payments::show))
        .routes(routes!(payments::cancel));
    openapi::document_protection(protected.get_openapi_mut());
    protect(protected)
        .routes(routes!(health))
        .merge(open_probes)
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

/// Answers while the process serves requests.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health",
    tag = "operations",
    responses((status = 200, body = serde_json::Value, description = "`{\"status\": \"ok\"}`")),
)]
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
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, body = String, content_type = "text/plain; version=0.0.4; charset=utf-8",
            description = "Counters, queue depths and chain lag"),
    ),
)]
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

/// Says whether the gateway can do its work.
///
/// 200 when it can, 503 with the failing check otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readiness",
    tag = "operations",
    responses(
        (status = 200, body = serde_json::Value, description = "`{\"status\": \"ready\", \
            \"store\": {\"ok\", \"pending_deliveries\"}, \"writer\": {\"ok\"}, \"chains\": [chain \
            report]}`"),
        (status = 503, body = serde_json::Value, description = "The same with `\"status\": \
            \"not_ready\"` and the failing check's `ok` false (the store's with its `error`)"),
    ),
)]
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
