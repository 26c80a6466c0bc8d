//! The webhook `data` of payment events.
//!
//! The first six fields are the original service's contract and keep their names and
//! meaning: `payment_id, status, address, amount, chain, token_id`. Amounts are decimal text
//! in the token's units (`amount`, `amount_paid`, `excess`) and raw integers as decimal text
//! (`amount_raw`), so no consumer meets a float or a 64-bit overflow.

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::amount;
use super::model::{Payment, Transfer};
use super::rules::Change;
use crate::queue::Emit;
use crate::time::rfc3339;

/// The event for a freshly created payment.
pub fn created(payment: &Payment) -> Emit {
    emit(
        "payment.created",
        data(payment, None, 0, Value::Null),
        format!("{}/created", payment.id),
    )
}

/// The event a rule's change raises, with an idempotency key naming its cause.
pub fn for_change(payment: &Payment, change: &Change) -> Emit {
    let id = payment.id;
    let (transfer, confirmations, extra, key) = match change {
        Change::Underpaid { transfer, paid } => (
            Some(transfer),
            0,
            json!({"amount_paid": amount::format(*paid, payment.decimals)}),
            format!("{id}/underpaid"),
        ),
        Change::Detected {
            transfer,
            paid,
            excess,
        } => (
            Some(transfer),
            0,
            json!({
                "amount_paid": amount::format(*paid, payment.decimals),
                "overpaid": !excess.is_zero(),
                "excess": amount::format(*excess, payment.decimals),
                "excess_raw": excess.to_string(),
            }),
            format!("{id}/detected/{}", transfer.cause()),
        ),
        Change::Confirmed {
            transfer,
            confirmations,
        } => (
            Some(transfer),
            *confirmations,
            json!({"amount_paid": amount::format(payment.paid(), payment.decimals)}),
            format!("{id}/confirmed/{}", transfer.cause()),
        ),
        Change::Expired => (
            None,
            0,
            json!({"amount_paid": amount::format(payment.paid(), payment.decimals)}),
            format!("{id}/expired"),
        ),
        Change::Late { transfer } => (
            Some(transfer),
            0,
            json!({
                "late": true,
                "late_amount": amount::format(transfer.value, payment.decimals),
                "late_amount_raw": transfer.value.to_string(),
            }),
            format!("{id}/late/{}", transfer.cause()),
        ),
        Change::Reorged { orphaned, previous } => {
            let causes: Vec<String> = orphaned.iter().map(Transfer::cause).collect();
            let hashes: Vec<String> = orphaned.iter().map(|t| t.tx_hash.to_string()).collect();
            (
                None,
                0,
                json!({
                    "orphaned_tx_hashes": hashes,
                    "previous_status": previous.as_str(),
                    "amount_paid": amount::format(payment.paid(), payment.decimals),
                }),
                format!(
                    "{id}/reorged/{}",
                    crate::events::fingerprint("", &causes.join(","))
                ),
            )
        }
    };
    emit(
        change.event_type(),
        data(payment, transfer, confirmations, extra),
        key,
    )
}

/// The payment as the API shows it (also the base of every event's data).
pub fn view(payment: &Payment) -> Value {
    data(payment, None, 0, Value::Null)
}

fn data(payment: &Payment, transfer: Option<&Transfer>, confirmations: u64, extra: Value) -> Value {
    let mut data = json!({
        "payment_id": payment.id.to_string(),
        "status": payment.status.as_str(),
        "address": payment.address.to_string(),
        "amount": amount::format(payment.amount_raw, payment.decimals),
        "chain": payment.chain,
        "token_id": payment.token.as_ref().map(|token| token.id.clone()),
        "amount_raw": payment.amount_raw.to_string(),
        "chain_id": payment.chain_id,
        "tx_hash": transfer.map(|t| t.tx_hash.to_string()),
        "block_number": transfer.map(|t| t.block_number),
        "confirmations": confirmations,
        "expires_at": rfc3339(payment.expires_at),
    });
    let object = data.as_object_mut().expect("a JSON object");
    if let Some(token) = &payment.token {
        object.insert(
            "token_contract".to_owned(),
            json!(token.contract.to_string()),
        );
    }
    if let Some(metadata) = &payment.metadata {
        let metadata: Value =
            serde_json::from_str(metadata.get()).expect("metadata was validated as JSON");
        object.insert("metadata".to_owned(), metadata);
    }
    if let Value::Object(extra) = extra {
        object.extend(extra);
    }
    data
}

fn emit(event_type: &str, data: Value, idempotency_key: String) -> Emit {
    Emit {
        event_type: event_type.to_owned(),
        data: RawValue::from_string(data.to_string()).expect("serde_json writes valid JSON"),
        idempotency_key,
    }
}
