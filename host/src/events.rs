//! Publishing: turns a publish request into a [`NewEvent`] with its fan-out decided and each
//! endpoint's plugin chain run.
//!
//! The default body is the Standard Webhooks shape `{"type","timestamp","id","data"}`. It is
//! rendered once here, then each endpoint's plugins may drop the event or reshape the body;
//! the result is stored with each delivery before the commit, so every retry sends the same
//! bytes and the delivery records which plugin versions produced them.

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::delivery::{Dispatcher, Endpoint};
use crate::ids::{DeliveryId, EventId};
use crate::plugins::chain::{self, ChainInput};
use crate::plugins::{ChainOutcome, PluginRegistry, Rendered};
use crate::queue::{DeliveryContent, NewDelivery, NewEvent};
use crate::store::{DroppedRef, EventRecord};
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
    id: &'a str,
    data: &'a serde_json::Value,
}

/// The default webhook body for an event.
pub fn default_body(
    id: EventId,
    event_type: &str,
    created_at: UnixMillis,
    data: &serde_json::Value,
) -> Bytes {
    default_body_with_id(&id.to_string(), event_type, created_at, data)
}

/// The default body for an id given as text (`plugin run` accepts any id).
pub fn default_body_with_id(
    id: &str,
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

/// Identifies a request's content (its type and its data as JSON text), so a retried publish
/// can be told from a conflicting one.
pub fn fingerprint(event_type: &str, data_json: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(event_type.as_bytes());
    hash.update([0]);
    hash.update(data_json.as_bytes());
    hex::encode(hash.finalize())
}

/// Builds the event and its fan-out: one delivery per enabled endpoint subscribed to the type,
/// each with the body its plugin chain produced (or parked with the chain's failure), and the
/// endpoints whose filters dropped it. Blocking when endpoints have plugins: they run here.
pub fn prepare(
    request: PublishRequest,
    dispatcher: &Dispatcher,
    plugins: &PluginRegistry,
    now: UnixMillis,
) -> NewEvent {
    let id = EventId::new();
    let body = default_body(id, &request.event_type, now, &request.data);
    // Serialized once: the fingerprint hashes it and plugins receive it.
    let data_json = request.data.to_string();
    let fingerprint = fingerprint(&request.event_type, &data_json);
    let input = ChainInput {
        event_id: id.to_string(),
        event_type: request.event_type.clone(),
        timestamp: now / 1000,
        data: data_json,
        body,
    };
    let mut deliveries = Vec::new();
    let mut dropped = Vec::new();
    for endpoint in dispatcher.subscribers(&request.event_type) {
        let content = match render(plugins, &endpoint, &input, now) {
            ChainOutcome::Deliver(rendered) => DeliveryContent::Ready(rendered),
            ChainOutcome::Dropped { by } => {
                tracing::debug!(event_id = %id, endpoint_id = %endpoint.id, %by, "event dropped by a plugin filter");
                dropped.push(DroppedRef {
                    endpoint_id: endpoint.id.clone(),
                    by,
                });
                continue;
            }
            ChainOutcome::Failed { reason, .. } => {
                tracing::warn!(event_id = %id, endpoint_id = %endpoint.id, %reason, "plugin chain failed; delivery parked");
                DeliveryContent::Parked { reason }
            }
        };
        deliveries.push(NewDelivery {
            id: DeliveryId::new(),
            endpoint_id: endpoint.id.clone(),
            content,
        });
    }
    NewEvent {
        id,
        fingerprint,
        event_type: request.event_type,
        created_at: now,
        data: request.data,
        idempotency_key: request.idempotency_key,
        deliveries,
        dropped,
    }
}

/// Renders a stored event for one endpoint again (replay of a delivery parked by a plugin).
pub fn rerender(
    event: &EventRecord,
    endpoint: &Endpoint,
    plugins: &PluginRegistry,
    now: UnixMillis,
) -> ChainOutcome {
    let input = ChainInput {
        event_id: event.id.to_string(),
        event_type: event.event_type.clone(),
        timestamp: event.created_at / 1000,
        data: event.data.to_string(),
        body: default_body(event.id, &event.event_type, event.created_at, &event.data),
    };
    render(plugins, endpoint, &input, now)
}

fn render(
    plugins: &PluginRegistry,
    endpoint: &Endpoint,
    input: &ChainInput,
    now: UnixMillis,
) -> ChainOutcome {
    if endpoint.plugins.is_empty() {
        return ChainOutcome::Deliver(Rendered::default_json(input.body.clone()));
    }
    chain::run(plugins, &endpoint.id, &endpoint.plugins, input, now / 1000)
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
        let data = r#"{"a":1}"#;
        assert_eq!(fingerprint("x", data), fingerprint("x", r#"{"a":1}"#));
        assert_ne!(fingerprint("x", data), fingerprint("y", data));
        assert_ne!(fingerprint("x", data), fingerprint("x", r#"{"a":2}"#));
    }
}
