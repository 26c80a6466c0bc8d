//! The admin HTTP API (axum on hyper): routing, bearer-token auth and JSON errors.
//!
//! One file per resource. Every error is `{"error":{"code","message"}}` with a message that
//! says what to fix; `/healthz` is the only route without a token. The token is compared in
//! constant time.

mod deliveries;
mod endpoints;
mod error;
mod events;
mod payments;
mod plugins;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq as _;

use crate::gateway::Gateway;
use crate::signing::Secret;

pub use error::ApiError;

/// Largest request body accepted (a full batch of events fits comfortably).
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub gateway: Arc<Gateway>,
    token: Arc<Secret>,
}

/// The API's routes, ready to serve.
pub fn router(gateway: Arc<Gateway>, token: Secret) -> Router {
    let state = ApiState {
        gateway,
        token: Arc::new(token),
    };
    Router::new()
        .route("/v1/events", post(events::publish))
        .route("/v1/events/batch", post(events::publish_batch))
        .route("/v1/deliveries/{id}", get(deliveries::show))
        .route("/v1/deliveries/{id}/replay", post(deliveries::replay))
        .route("/v1/endpoints", get(endpoints::list))
        .route("/v1/endpoints/{id}", get(endpoints::show))
        .route("/v1/endpoints/{id}/enable", post(endpoints::enable))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/payments", post(payments::create).get(payments::list))
        .route("/v1/payments/{id}", get(payments::show))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route("/healthz", get(health))
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
    let expected = state.token.expose().as_bytes();
    if bool::from(presented.as_bytes().ct_eq(expected)) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}
