//! Several nodes on one PostgreSQL database keep one configuration: an endpoint created,
//! changed, disabled or deleted over one node's admin API, and a plugin uploaded, replaced or
//! deleted there (or dropped into its plugins directory), take effect on the other nodes
//! without a restart. Real `hookgate serve` processes on a throwaway cluster; what a node has
//! in force is observed through what only its memory decides: the fan-out of an event
//! published to it, a test send, and its plugin list.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{ApiResponse, Gateway, Receiver, listed_plugin, poll_until};

const SECRET: &str = "whsec_c2hhcmVkLWNvbmZpZy10ZXN0LXNlY3JldA==";
/// Notifications arrive within milliseconds; the version poll (every 5 s) is the backstop.
const WAIT: Duration = Duration::from_secs(15);

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_default()
}

/// How many deliveries publishing `event_type` to `node` fans out to.
async fn fan_out(node: &Gateway, event_type: &str) -> usize {
    let event = node.publish(event_type, json!({"probe": true})).await;
    event["deliveries"].as_array().map_or(0, Vec::len)
}

/// A test event for endpoint `shop`, sent through `node`.
async fn test_send(node: &Gateway) -> ApiResponse {
    node.post_json("/v1/endpoints/shop/test", &json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_on_one_node_take_effect_on_the_other() {
    let url = support::postgres::cluster().fresh_database().await;
    let receiver = Receiver::ok().await;
    let a = Gateway::start_node(&url, "").await;
    let b = Gateway::start_node(&url, "").await;
    assert_eq!(fan_out(&b, "payment.confirmed").await, 0);

    let created = a
        .post_json(
            "/v1/endpoints",
            &json!({"id": "shop", "url": receiver.url("/before"), "secret": SECRET}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:#?}");
    poll_until(
        WAIT,
        "node b to fan out to the endpoint node a created",
        || fan_out(&b, "payment.confirmed"),
        |count| *count == 1,
    )
    .await;
    let event = b.publish("payment.confirmed", json!({"order": 1})).await;
    let request = &receiver
        .wait_for_event("/before", text(&event, "id"), WAIT)
        .await[0];
    support::signatures::assert_signed_by(SECRET, request);

    // A new url and a narrower subscription.
    let updated = a
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({"url": receiver.url("/after"), "event_types": ["payment.expired"]})),
        )
        .await;
    assert_eq!(updated.status, 200, "{updated:#?}");
    poll_until(
        WAIT,
        "node b to apply node a's narrower subscription",
        || fan_out(&b, "payment.confirmed"),
        |count| *count == 0,
    )
    .await;
    let moved = b.publish("payment.expired", json!({"order": 2})).await;
    receiver
        .wait_for_event("/after", text(&moved, "id"), WAIT)
        .await;

    // Disabled on one node: the other sends nothing to it; enabled again: it does.
    let disabled = a
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(disabled.json["enabled"], false, "{disabled:#?}");
    poll_until(
        WAIT,
        "node b to see the endpoint disabled",
        || test_send(&b),
        |answer: &ApiResponse| answer.status == 409,
    )
    .await
    .assert_error(409, "endpoint_disabled");
    assert_eq!(fan_out(&b, "payment.expired").await, 0);
    let enabled = a
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(enabled.json["enabled"], true, "{enabled:#?}");
    let test = poll_until(
        WAIT,
        "node b to see the endpoint enabled again",
        || test_send(&b),
        |answer: &ApiResponse| answer.status == 202,
    )
    .await;
    receiver
        .wait_for_event("/after", text(&test.json, "event_id"), WAIT)
        .await;

    // Deleted on one node: gone from the other's fan-out and test sends.
    let deleted = a.call("DELETE", "/v1/endpoints/shop", None).await;
    assert_eq!(deleted.status, 204, "{deleted:#?}");
    poll_until(
        WAIT,
        "node b to drop the deleted endpoint",
        || test_send(&b),
        |answer: &ApiResponse| answer.status == 404,
    )
    .await;
    assert_eq!(fan_out(&b, "payment.expired").await, 0);
}

/// The version of `name` that `node` has in force (`null` when it has none).
async fn version_on(node: &Gateway, name: &str) -> Value {
    listed_plugin(&node.get_json("/v1/plugins").await.json, name)["version"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_uploaded_to_one_node_are_loaded_by_every_node() {
    let url = support::postgres::cluster().fresh_database().await;
    let drop_box = tempfile::tempdir().unwrap();
    let a = Gateway::start_node(&url, "").await;
    let b = Gateway::start_node(
        &url,
        &format!("[plugins]\ndir = '{}'\n", drop_box.path().display()),
    )
    .await;

    // No plugins directory is needed on PostgreSQL: the database keeps the upload.
    let first = a.upload_plugin("shaper", support::wasm("noop")).await;
    assert_eq!(first.status, 201, "{first:#?}");
    let first_version = first.json["version"].clone();
    poll_until(
        WAIT,
        "node b to load the plugin node a stored",
        || version_on(&b, "shaper"),
        |version| *version == first_version,
    )
    .await;

    // A new version replaces the old one everywhere; a refused one changes nothing.
    let second = a.upload_plugin("shaper", support::wasm("min-amount")).await;
    assert_eq!(second.status, 200, "{second:#?}");
    let second_version = second.json["version"].clone();
    assert_ne!(first_version, second_version);
    poll_until(
        WAIT,
        "node b to swap in the new version",
        || version_on(&b, "shaper"),
        |version| *version == second_version,
    )
    .await;
    a.upload_plugin("shaper", b"not a component".to_vec())
        .await
        .assert_error(422, "plugin_invalid");
    assert_eq!(version_on(&a, "shaper").await, second_version);
    assert_eq!(version_on(&b, "shaper").await, second_version);

    // A node started later loads what the database holds before it serves.
    let c = Gateway::start_node(&url, "").await;
    assert_eq!(version_on(&c, "shaper").await, second_version);

    // A file dropped into one node's plugins directory is published to every node.
    let staged = drop_box.path().join(".filter.wasm.part");
    std::fs::write(&staged, support::wasm("noop")).unwrap();
    std::fs::rename(&staged, drop_box.path().join("filter.wasm")).unwrap();
    let dropped = poll_until(
        WAIT,
        "node a to load the plugin dropped into node b's directory",
        || version_on(&a, "filter"),
        |version| version.is_string(),
    )
    .await;
    assert_eq!(
        dropped, first_version,
        "the same bytes are the same version"
    );
    poll_until(
        WAIT,
        "node c to load the dropped plugin too",
        || version_on(&c, "filter"),
        |version| *version == first_version,
    )
    .await;

    // Deleted on one node: unloaded on all.
    let deleted = a.call("DELETE", "/v1/plugins/shaper", None).await;
    assert_eq!(deleted.status, 204, "{deleted:#?}");
    for node in [&b, &c] {
        poll_until(
            WAIT,
            "every node to unload the deleted plugin",
            || version_on(node, "shaper"),
            Value::is_null,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_a_410_disabled_on_one_node_is_disabled_on_the_other() {
    let url = support::postgres::cluster().fresh_database().await;
    // Only the first request is answered 410, so node b, which sends nothing before it, can
    // learn of the disabling only from node a; its own test sends are answered 200.
    let receiver = Receiver::start(|call| {
        support::Reply::status(if call.nth_on_path == 1 { 410 } else { 200 })
    })
    .await;
    let sections = support::endpoint("shop", &receiver.url("/gone"), "");
    let a = Gateway::start_node(&url, &sections).await;
    let b = Gateway::start_node(&url, &sections).await;

    let event = a.publish("payment.confirmed", json!({"order": 1})).await;
    receiver
        .wait_for_event("/gone", text(&event, "id"), WAIT)
        .await;
    for node in [&a, &b] {
        poll_until(
            WAIT,
            "every node to see the endpoint disabled by the 410",
            || test_send(node),
            |answer: &ApiResponse| answer.status == 409,
        )
        .await
        .assert_error(409, "endpoint_disabled");
    }
}
