//! `legacy-flat`: the original service's flat webhook body, for receivers built against it.
//!
//! Emits `{"event","payment_id","status","address","amount","chain","token_id"}` where `event`
//! is the event type and the rest are copied from the event's data (null when absent). No
//! config.

use hookgate_plugin::{Event, Outgoing, Plugin, export_plugin};
use serde::Serialize;

/// The original service's body, field for field.
#[derive(Debug, Serialize, PartialEq)]
pub struct LegacyBody {
    pub event: String,
    pub payment_id: serde_json::Value,
    pub status: serde_json::Value,
    pub address: serde_json::Value,
    pub amount: serde_json::Value,
    pub chain: serde_json::Value,
    pub token_id: serde_json::Value,
}

struct LegacyFlat;

impl Plugin for LegacyFlat {
    fn transform(event: &Event, _config: &str) -> Result<Outgoing, String> {
        Outgoing::json(&flatten(&event.event_type, &event.data_json()?))
    }
}

export_plugin!(LegacyFlat);

/// The flat body for an event of `event_type` with `data`.
pub fn flatten(event_type: &str, data: &serde_json::Value) -> LegacyBody {
    let field = |name: &str| data.get(name).cloned().unwrap_or(serde_json::Value::Null);
    LegacyBody {
        event: event_type.to_owned(),
        payment_id: field("payment_id"),
        status: field("status"),
        address: field("address"),
        amount: field("amount"),
        chain: field("chain"),
        token_id: field("token_id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_body_has_exactly_the_original_fields_in_order() {
        let data = json!({"payment_id":"p1","status":"confirmed","address":"0xabc","amount":"12.5",
                          "chain":"ethereum","token_id":"usdc","tx_hash":"0xdead","confirmations":12});
        let text = serde_json::to_string(&flatten("payment.confirmed", &data)).unwrap();
        assert_eq!(
            text,
            r#"{"event":"payment.confirmed","payment_id":"p1","status":"confirmed","address":"0xabc","amount":"12.5","chain":"ethereum","token_id":"usdc"}"#
        );
    }

    #[test]
    fn missing_fields_and_native_coins_are_null() {
        let body = flatten(
            "payment.expired",
            &json!({"payment_id":"p2","token_id":null}),
        );
        assert_eq!(body.token_id, serde_json::Value::Null);
        assert_eq!(body.amount, serde_json::Value::Null);
        assert_eq!(body.payment_id, json!("p2"));
    }
}
