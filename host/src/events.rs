//! Publishing: turns a publish request into a [`NewEvent`] with its fan-out decided.
//!
//! The default body is the Standard Webhooks shape `{"type","timestamp","id","data"}`. It is
//! rendered once here, before the commit, and stored with each delivery so every retry sends
//! the same bytes.

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::delivery::Dispatcher;
use crate::ids::{DeliveryId, EventId};
use crate::queue::{NewDelivery, NewEvent};
use crate::time::{UnixMillis, rfc3339};

/// Most events in one batch publish.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// A validated request to publish one event.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub event_type: String,
    pub data: serde_json::Value,
    pub idempotency_key: Option<String>,
}

#[derive(Serialize)]
struct DefaultBody<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    id: EventId,
    data: &'a serde_json::Value,
}

/// The default webhook body for an event.
pub fn default_body(
    id: EventId,
    event_type: &str,
    created_at: UnixMillis,
    data: &serde_json::Value,
) -> Bytes {
    let body = DefaultBody {
        event_type,
        timestamp: rfc3339(created_at),
        id,
        data,
    };
    Bytes::from(serde_json::to_vec(&body).expect("a JSON value always serializes"))
}

/// Identifies a request's content, so a retried publish can be told from a conflicting one.
pub fn fingerprint(event_type: &str, data: &serde_json::Value) -> String {
    let mut hash = Sha256::new();
    hash.update(event_type.as_bytes());
    hash.update([0]);
    hash.update(data.to_string().as_bytes());
    hex::encode(hash.finalize())
}

/// Builds the event and one delivery per enabled endpoint subscribed to its type.
pub fn prepare(request: PublishRequest, dispatcher: &Dispatcher, now: UnixMillis) -> NewEvent {
    let id = EventId::new();
    let body = default_body(id, &request.event_type, now, &request.data);
    let deliveries = dispatcher
        .subscribers(&request.event_type)
        .into_iter()
        .map(|endpoint| NewDelivery {
            id: DeliveryId::new(),
            endpoint_id: endpoint.id.clone(),
            body: body.clone(),
        })
        .collect();
    NewEvent {
        id,
        fingerprint: fingerprint(&request.event_type, &request.data),
        event_type: request.event_type,
        created_at: now,
        data: request.data,
        idempotency_key: request.idempotency_key,
        deliveries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_body_has_the_standard_webhooks_shape_in_order() {
        let id = EventId::new();
        let data = serde_json::json!({"payment_id": "p1", "amount": "12.5"});
        let body = default_body(id, "payment.confirmed", 1_795_000_000_000, &data);
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.starts_with(r#"{"type":"payment.confirmed","timestamp":"2026-11-18T"#),
            "{text}"
        );
        assert!(
            text.contains(&format!(r#""id":"{id}","data":{{"#)),
            "{text}"
        );
    }

    #[test]
    fn fingerprints_differ_when_the_content_differs() {
        let data = serde_json::json!({"a": 1});
        assert_eq!(fingerprint("x", &data), fingerprint("x", &data.clone()));
        assert_ne!(fingerprint("x", &data), fingerprint("y", &data));
        assert_ne!(
            fingerprint("x", &data),
            fingerprint("x", &serde_json::json!({"a": 2}))
        );
    }
}
