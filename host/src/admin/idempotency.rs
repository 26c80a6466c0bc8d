//! The `Idempotency-Key` header on creates (`POST /v1/payments`, `POST /v1/endpoints`): the
//! first answer is kept with the work, in one commit, and a retry with the same key and body
//! gets it again (same status and body, with `idempotent-replayed: true`).

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::queue::idempotent::Answer;

pub(super) const HEADER: &str = "idempotency-key";
pub(super) const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
pub(super) const MAX_KEY_LEN: usize = 255;

/// The request's key, checked: visible ASCII, 1 to [`MAX_KEY_LEN`] characters.
pub(super) fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid_body("Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::invalid_body(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// The kept answer of an earlier request with the key.
pub(super) fn replayed(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    (
        status,
        [(REPLAYED, HeaderValue::from_static("true"))],
        Json(answer.body),
    )
        .into_response()
}

/// The key came before with another request body.
pub(super) fn reused(key: &str) -> ApiError {
    ApiError::conflict(
        "idempotency_conflict",
        format!(
            "idempotency key `{key}` was already used with a different request body; use a new \
             key for a new request"
        ),
    )
}
