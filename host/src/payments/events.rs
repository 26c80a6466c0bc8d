//! The webhook `data` of payment events.
//!
//! The first six fields are the original service's contract and keep their names and
//! meaning: `payment_id, status, address, amount, chain, token_id`. Amounts are decimal text
//! in the token's units (`amount`, `amount_paid`, `excess`) and raw integers as decimal text
//! (`amount_raw`), so no consumer meets a float or a 64-bit overflow.

use serde::Serialize;
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
        Change::Canceled => (
            None,
            0,
            json!({"amount_paid": amount::format(payment.paid(), payment.decimals)}),
            format!("{id}/canceled"),
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
    serde_json::to_value(data(payment, None, 0, Value::Null)).expect("payment data serializes")
}

/// A payment event's `data`, fields in the documented order: the original six first.
#[derive(Serialize)]
struct Data<'a> {
    payment_id: String,
    status: &'static str,
    address: String,
    amount: String,
    chain: &'a str,
    token_id: Option<&'a str>,
    amount_raw: String,
    chain_id: u64,
    tx_hash: Option<String>,
    block_number: Option<u64>,
    confirmations: u64,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_contract: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a RawValue>,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

fn data<'a>(
    payment: &'a Payment,
    transfer: Option<&Transfer>,
    confirmations: u64,
    extra: Value,
) -> Data<'a> {
    Data {
        payment_id: payment.id.to_string(),
        status: payment.status.as_str(),
        address: payment.address.to_string(),
        amount: amount::format(payment.amount_raw, payment.decimals),
        chain: &payment.chain,
        token_id: payment.token.as_ref().map(|token| token.id.as_str()),
        amount_raw: payment.amount_raw.to_string(),
        chain_id: payment.chain_id,
        tx_hash: transfer.map(|t| t.tx_hash.to_string()),
        block_number: transfer.map(|t| t.block_number),
        confirmations,
        expires_at: rfc3339(payment.expires_at),
        token_contract: payment
            .token
            .as_ref()
            .map(|token| token.contract.to_string()),
        metadata: payment.metadata.as_deref(),
        extra: match extra {
            Value::Object(extra) => extra,
            _ => serde_json::Map::new(),
        },
    }
}

fn emit(event_type: &str, data: Data<'_>, idempotency_key: String) -> Emit {
    let text = serde_json::to_string(&data).expect("payment data serializes");
    Emit {
        event_type: event_type.to_owned(),
        data: RawValue::from_string(text).expect("serde_json writes valid JSON"),
        idempotency_key,
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{Address, U256};

    use super::*;
    use crate::ids::PaymentId;
    use crate::payments::model::PaymentStatus;

    #[test]
    fn event_data_starts_with_the_original_six_fields_in_order() {
        let payment = Payment {
            id: PaymentId::new(),
            chain: "ethereum".to_owned(),
            chain_id: 1,
            token: None,
            decimals: 6,
            address: Address::repeat_byte(0x11),
            derivation_index: Some(3),
            amount_raw: U256::from(12_500_000u64),
            created_at: 0,
            expires_at: 1_795_000_000_000,
            metadata: Some(RawValue::from_string(r#"{"order":"A-1"}"#.to_owned()).unwrap()),
            status: PaymentStatus::Pending,
            transfers: Vec::new(),
            underpaid_notified: false,
            updated_at: 0,
        };
        let emitted = created(&payment);
        let text = emitted.data.get();
        let prefix = format!(
            r#"{{"payment_id":"{}","status":"pending","address":"{}","amount":"12.5","chain":"ethereum","token_id":null,"amount_raw":"12500000","chain_id":1,"#,
            payment.id, payment.address
        );
        assert!(text.starts_with(&prefix), "{text}");
        assert!(text.contains(r#""metadata":{"order":"A-1"}"#), "{text}");
        assert_eq!(emitted.idempotency_key, format!("{}/created", payment.id));
    }
}
