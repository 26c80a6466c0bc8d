//! Publishing: turns a publish request into a [`NewEvent`] with its fan-out decided, and runs
//! an endpoint's plugin chain on a committed event.
//!
//! The default body is the Standard Webhooks shape `{"type","timestamp","id","data"}`. It is
//! rendered once per event; each endpoint's plugins may drop the event or reshape the body.
//! Their result is stored with the delivery before its first attempt, so every retry sends the
//! same bytes and the delivery records which plugin versions produced them.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::delivery::{Endpoint, Subscriptions};
use crate::ids::{DeliveryId, EventId};
use crate::plugins::chain::{self, ChainInput};
use crate::plugins::{ChainOutcome, PluginRegistry, Rendered};
use crate::queue::{DeliveryContent, NewDelivery, NewEvent};
use crate::store::EventRecord;
use crate::time::{UnixMillis, rfc3339};

/// Most events in one batch publish.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// A validated request to publish one event.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub event_type: String,
    /// The data object exactly as sent: it is stored and delivered byte for byte, so amounts
    /// and big integers keep every digit.
    pub data: Box<RawValue>,
    pub idempotency_key: Option<String>,
}

/// The default webhook body for an event.
pub fn default_body(id: EventId, event_type: &str, created_at: UnixMillis, data: &str) -> Bytes {
    default_body_with_id(&id.to_string(), event_type, created_at, data)
}

/// The default body for an id given as text (`plugin run` accepts any id). `data` is JSON
/// text and goes in unchanged; written out by hand so the data is not encoded a second time.
pub fn default_body_with_id(
    id: &str,
    event_type: &str,
    created_at: UnixMillis,
    data: &str,
) -> Bytes {
    let mut body = Vec::with_capacity(data.len() + event_type.len() + id.len() + 64);
    let string = |body: &mut Vec<u8>, text: &str| {
        serde_json::to_writer(body, text).expect("a string always serializes");
    };
    body.extend_from_slice(b"{\"type\":");
    string(&mut body, event_type);
    body.extend_from_slice(b",\"timestamp\":\"");
    body.extend_from_slice(rfc3339(created_at).as_bytes());
    body.extend_from_slice(b"\",\"id\":");
    string(&mut body, id);
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(data.as_bytes());
    body.push(b'}');
    Bytes::from(body)
}

/// How deeply objects and arrays nest in `json` (valid JSON text); strings are skipped.
pub fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
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

/// Builds the event and its fan-out: one delivery per enabled endpoint subscribed to the type.
/// Endpoints without plugins get the default body, rendered here once; the others are rendered
/// by their plugin chain in their own lane after the commit (see [`rerender`]), so a publish
/// never waits for a plugin.
pub fn prepare(
    request: PublishRequest,
    subscriptions: &Subscriptions,
    now: UnixMillis,
) -> NewEvent {
    let endpoints = subscriptions.subscribers(&request.event_type);
    prepare_for(request, &endpoints, now)
}

/// Prepares an event for exactly `endpoints`, whatever they subscribe to (a test event for
/// one endpoint).
pub fn prepare_for(
    request: PublishRequest,
    endpoints: &[Arc<Endpoint>],
    now: UnixMillis,
) -> NewEvent {
    let id = EventId::new();
    let data = request.data.get();
    let fingerprint = fingerprint(&request.event_type, data);
    let body = default_body(id, &request.event_type, now, data);
    let deliveries = endpoints
        .iter()
        .map(|endpoint| NewDelivery {
            id: DeliveryId::new(),
            endpoint_id: endpoint.id.clone(),
            content: if endpoint.plugins.is_empty() {
                DeliveryContent::Ready(Rendered::default_json(body.clone()))
            } else {
                DeliveryContent::Render
            },
        })
        .collect();
    NewEvent {
        id,
        fingerprint,
        event_type: request.event_type,
        created_at: now,
        data: request.data,
        idempotency_key: request.idempotency_key,
        deliveries,
    }
}

/// Runs `endpoint`'s plugin chain on a committed event (after the commit, and again when a
/// delivery parked by a plugin is replayed). Blocking: plugins run here.
pub fn rerender(
    event: &EventRecord,
    endpoint: &Endpoint,
    plugins: &PluginRegistry,
    now: UnixMillis,
) -> ChainOutcome {
    let event_id = event.id.to_string();
    let data = event.data.get();
    let input = ChainInput {
        event_id: &event_id,
        event_type: &event.event_type,
        timestamp: event.created_at / 1000,
        data,
        body: default_body_with_id(&event_id, &event.event_type, event.created_at, data),
    };
    render(plugins, endpoint, &input, now)
}

fn render(
    plugins: &PluginRegistry,
    endpoint: &Endpoint,
    input: &ChainInput<'_>,
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
        let data = r#"{"payment_id":"p1","amount":12.50,"raw":123456789012345678901234567890}"#;
        let body = default_body(id, "payment.confirmed", 1_795_000_000_000, data);
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.starts_with(r#"{"type":"payment.confirmed","timestamp":"2026-11-18T"#),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(r#""id":"{id}","data":{data}}}"#)),
            "the data goes in byte for byte: {text}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["type"], "payment.confirmed");
    }

    #[test]
    fn nesting_depth_counts_objects_and_arrays_but_not_brackets_in_strings() {
        assert_eq!(nesting_depth(r#"{"a":1}"#), 1);
        assert_eq!(nesting_depth(r#"{"a":[{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(r#"{"a":"[[[{{{\"]]]"}"#), 1);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(nesting_depth(&format!(r#"{{"x":{deep}}}"#)), 201);
    }

    #[test]
    fn fingerprints_differ_when_the_content_differs() {
        let data = r#"{"a":1}"#;
        assert_eq!(fingerprint("x", data), fingerprint("x", r#"{"a":1}"#));
        assert_ne!(fingerprint("x", data), fingerprint("y", data));
        assert_ne!(fingerprint("x", data), fingerprint("x", r#"{"a":2}"#));
    }
}
