//! `POST /v1/payments`, `GET /v1/payments/{id}`, `GET /v1/payments`.
//!
//! A created payment answers 201 only once it and its `payment.created` event are committed.
//! Lists are newest first with cursor pagination: pass the `next_cursor` of one page as
//! `cursor` to get the next.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ErrorBody;
use super::{ApiError, ApiState, idempotency};
use crate::ids::PaymentId;
use crate::payments::{Canceled, CreateRequest, Created, Payment, PaymentStatus, events};
use crate::queue::idempotent::{Answer, Idempotent, Keyed};

/// Creates a payment to watch for.
///
/// The answer comes once the payment and its `payment.created` event are committed. With an
/// `Idempotency-Key`, a retry gets the first answer again.
#[utoipa::path(
    post,
    path = "/v1/payments",
    operation_id = "create_payment",
    tag = "payments",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, description = "1 to 255 \
        visible ASCII characters; a retry with the same key and body gets the first answer again")),
    request_body = CreateRequest,
    responses(
        (status = 201, body = serde_json::Value, description = "Created (or replayed by its \
            idempotency key, with `idempotent-replayed: true`): the payment, as `GET \
            /v1/payments/{id}` shows it"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: a field is not valid (the \
            message names it)"),
        (status = 409, body = ErrorBody, description = "`address_in_use`: a live payment watches \
            the address; or `idempotency_conflict`: the key was used with a different body"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
pub async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    let request: CreateRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError::invalid_body(format!("the request body is not valid: {err}")))?;
    let work = state
        .gateway
        .payment_creation(request)
        .map_err(|err| ApiError::invalid_body(err.to_string()))?;
    let created = match key {
        None => state.gateway.queue().run(work).await?,
        Some(key) => {
            let answering = Box::new(|created: &Created| match created {
                Created::Payment(payment) => Some(Answer {
                    status: StatusCode::CREATED.as_u16(),
                    body: view(payment),
                }),
                // Refusals are not kept: a retry may find the address free.
                Created::AddressInUse { .. } | Created::NoAddress => None,
            });
            let keyed = Idempotent::new("POST /v1/payments", &key, &body, work, answering);
            match state.gateway.queue().run(keyed).await? {
                Keyed::Fresh { output, .. } => output,
                Keyed::Replayed(answer) => return Ok(idempotency::replayed(answer)),
                Keyed::Mismatch => return Err(idempotency::reused(&key)),
            }
        }
    };
    match created {
        Created::Payment(payment) => {
            Ok((StatusCode::CREATED, Json(view(&payment))).into_response())
        }
        Created::AddressInUse {
            address,
            payment_id,
        } => Err(ApiError::conflict(
            "address_in_use",
            format!("address: {address} belongs to live payment {payment_id}"),
        )),
        Created::NoAddress => Err(ApiError::invalid_body(
            "address: required, because no payments.xpub is configured to derive one",
        )),
    }
}

/// Cancels a pending or underpaid payment.
///
/// Answers with the canceled payment once it and `payment.canceled` are committed. A transfer
/// that arrives afterwards raises `payment.late`, so the merchant can refund it.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/cancel",
    operation_id = "cancel_payment",
    tag = "payments",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)")),
    responses(
        (status = 200, body = serde_json::Value, description = "The canceled payment"),
        (status = 404, body = ErrorBody, description = "`not_found`: no payment has this id"),
        (status = 409, body = ErrorBody, description = "`payment_not_cancelable`: the payment is \
            past pending or underpaid"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the writer could not \
            commit"),
    ),
)]
pub async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = payment_id(&id)?;
    match state.gateway.cancel_payment(id).await? {
        Canceled::Canceled(payment) => Ok(Json(view(&payment))),
        Canceled::NotFound => Err(ApiError::not_found(format!("no payment with id {id}"))),
        Canceled::Refused(status) => Err(ApiError::conflict(
            "payment_not_cancelable",
            format!(
                "payment {id} is {}; only a pending or underpaid payment can be canceled",
                status.as_str()
            ),
        )),
    }
}

/// Shows a payment with its transfers.
#[utoipa::path(
    get,
    path = "/v1/payments/{id}",
    operation_id = "get_payment",
    tag = "payments",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)")),
    responses(
        (status = 200, body = serde_json::Value, description = "The payment: the fields of its \
            events' `data` (`payment_id`, `status`, `address`, `amount`, `chain`, `token_id`, \
            `amount_raw`, `chain_id`, `tx_hash`, `block_number`, `confirmations`, `expires_at`, \
            `token_contract`, `metadata`) plus `amount_paid`, `created_at` and `transfers` \
            (`[{\"tx_hash\", \"log_index\", \"block_number\", \"block_hash\", \"from\", \
            \"amount_raw\", \"late\"}]`)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no payment has this id"),
    ),
)]
pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = payment_id(&id)?;
    let store = state.gateway.store().clone();
    let payment = tokio::task::spawn_blocking(move || store.payment(id))
        .await
        .map_err(|err| ApiError::internal(err.to_string()))??
        .ok_or_else(|| ApiError::not_found(format!("no payment with id {id}")))?;
    Ok(Json(view(&payment)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only payments in this state: `pending`, `underpaid`, `detected`, `confirmed`,
    /// `expired` or `canceled`.
    status: Option<String>,
    /// Only payments on this configured chain.
    chain: Option<String>,
    /// Only payments watching this address (`0x` and 40 hex digits).
    address: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Payments per page: 1 to 500, default 100.
    limit: Option<usize>,
}

/// Lists payments, newest first.
#[utoipa::path(
    get,
    path = "/v1/payments",
    operation_id = "list_payments",
    tag = "payments",
    params(ListQuery),
    responses(
        (status = 200, body = serde_json::Value, description = "`{\"payments\": [payment], \
            \"next_cursor\"}`, each payment as `GET /v1/payments/{id}` shows it; `next_cursor` is \
            null on the last page"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: a query parameter is not \
            valid (the message names it)"),
    ),
)]
pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(super::query_error)?;
    let status = super::status_param::<PaymentStatus>(
        query.status.as_deref(),
        "pending, underpaid, detected, confirmed, expired, canceled",
    )?;
    let address =
        match query.address.as_deref() {
            None => None,
            Some(text) => Some(text.parse::<alloy::primitives::Address>().map_err(|_| {
                ApiError::invalid_body(format!("address: `{text}` is not an address"))
            })?),
        };
    let (cursor, limit) = super::page_params::<PaymentId>(query.cursor.as_deref(), query.limit)?;
    let store = state.gateway.store().clone();
    let chain = query.chain;
    let page = tokio::task::spawn_blocking(move || {
        store.payments(cursor, limit, &|payment| {
            status.is_none_or(|status| payment.status == status)
                && chain.as_ref().is_none_or(|chain| &payment.chain == chain)
                && address.is_none_or(|address| payment.address == address)
        })
    })
    .await
    .map_err(|err| ApiError::internal(err.to_string()))??;
    let next_cursor = (page.len() == limit)
        .then(|| page.last().map(|payment| payment.id.to_string()))
        .flatten();
    let payments: Vec<serde_json::Value> = page.iter().map(view).collect();
    Ok(Json(
        serde_json::json!({"payments": payments, "next_cursor": next_cursor}),
    ))
}

/// A payment as the API shows it: the event data's fields plus its transfers.
fn view(payment: &Payment) -> serde_json::Value {
    let mut view = events::view(payment);
    let transfers: Vec<serde_json::Value> = payment
        .transfers
        .iter()
        .map(|transfer| {
            serde_json::json!({
                "tx_hash": transfer.tx_hash.to_string(),
                "log_index": match transfer.index {
                    crate::payments::TransferIndex::Native => None,
                    crate::payments::TransferIndex::Log(index) => Some(index),
                },
                "block_number": transfer.block_number,
                "block_hash": transfer.block_hash.to_string(),
                "from": transfer.from.to_string(),
                "amount_raw": transfer.value.to_string(),
                "late": transfer.late,
            })
        })
        .collect();
    let object = view.as_object_mut().expect("a JSON object");
    object.insert(
        "amount_paid".to_owned(),
        serde_json::json!(crate::payments::amount::format(
            payment.paid(),
            payment.decimals
        )),
    );
    object.insert(
        "created_at".to_owned(),
        serde_json::json!(crate::time::rfc3339(payment.created_at)),
    );
    object.insert("transfers".to_owned(), serde_json::json!(transfers));
    view
}

/// A payment id from the path; one that cannot be an id is unknown (404).
fn payment_id(text: &str) -> Result<PaymentId, ApiError> {
    text.parse()
        .map_err(|err: crate::ids::InvalidId| ApiError::not_found(err.to_string()))
}
