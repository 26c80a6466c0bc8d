//! Endpoints managed over the admin API of the real `hookgate` binary: create → deliver →
//! rotate (both signatures verify), update and delete at run time with the lanes following,
//! test sends, config-file endpoints read-only, persistence across a restart and the egress
//! guard at create.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Gateway, Receiver, SECRET, endpoint, signatures};

const WAIT: Duration = Duration::from_secs(15);

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {value:#}"))
}

fn order(n: u32) -> Value {
    json!({"order_id": n, "amount": "10.00"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_created_over_the_api_is_signed_with_its_secret_and_both_after_rotation() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start("").await;

    let created = gateway
        .post_json(
            "/v1/endpoints",
            &json!({
                "url": receiver.url("/api"),
                "description": "the shop's order system",
                "event_types": ["payment.confirmed"],
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:#?}");
    let id = text(&created.json, "id").to_owned();
    assert!(id.starts_with("ep_"), "a generated id: {id}");
    let secret = text(&created.json, "secret").to_owned();
    assert!(secret.starts_with("whsec_"), "a generated secret: {secret}");
    assert_eq!(created.json["source"], "api");
    assert_eq!(created.json["enabled"], true);

    // The secret is shown once: never in a show or a list.
    let shown = gateway.get_json(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json["description"], "the shop's order system");
    assert!(!shown.text.contains(&secret) && shown.json.get("secret").is_none());
    let listed = gateway.get_json("/v1/endpoints").await;
    assert!(!listed.text.contains(&secret), "{listed:#?}");
    assert_eq!(listed.json["endpoints"][0]["id"], id.as_str());

    let first = gateway.publish("payment.confirmed", order(1)).await;
    let request = &receiver
        .wait_for_event("/api", text(&first, "id"), WAIT)
        .await[0];
    signatures::assert_signed_by(&secret, request);

    let rotated = gateway
        .post_json(
            &format!("/v1/endpoints/{id}/rotate-secret"),
            &json!({"previous_secret_valid_for": "2h"}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{rotated:#?}");
    let new_secret = text(&rotated.json, "secret").to_owned();
    assert_ne!(new_secret, secret);
    assert!(support::is_rfc3339(text(
        &rotated.json,
        "previous_secret_expires_at"
    )));

    let second = gateway.publish("payment.confirmed", order(2)).await;
    let request = &receiver
        .wait_for_event("/api", text(&second, "id"), WAIT)
        .await[0];
    assert_eq!(
        signatures::standard_entries(request),
        [
            signatures::expected_standard(&new_secret, request),
            signatures::expected_standard(&secret, request),
        ],
        "webhook-signature should be `v1,<new> v1,<old>` during the overlap"
    );
    assert_eq!(
        request.header("x-webhook-signature"),
        Some(signatures::legacy(&new_secret, &request.body).as_str())
    );
    assert_eq!(
        request.header("x-webhook-signature-previous"),
        Some(signatures::legacy(&secret, &request.body).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_deletes_take_effect_without_a_restart() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start("").await;
    let created = gateway
        .post_json(
            "/v1/endpoints",
            &json!({"id": "shop", "url": receiver.url("/before"), "secret": SECRET}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:#?}");
    assert_eq!(created.json["secret"], SECRET);

    let event = gateway.publish("payment.confirmed", order(1)).await;
    receiver
        .wait_for_event("/before", text(&event, "id"), WAIT)
        .await;

    // A new url, a narrower subscription and more workers: the lane follows at once.
    let updated = gateway
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({
                "url": receiver.url("/after"),
                "event_types": ["payment.expired"],
                "concurrency": 3,
                "retry_schedule": ["0s", "1s"],
                "request_timeout": "5s",
            })),
        )
        .await;
    assert_eq!(updated.status, 200, "{updated:#?}");
    assert_eq!(updated.json["concurrency"], 3);
    assert_eq!(updated.json["event_types"], json!(["payment.expired"]));
    assert_eq!(updated.json["request_timeout"], "5s");
    let skipped = gateway.publish("payment.confirmed", order(2)).await;
    assert_eq!(skipped["deliveries"], json!([]), "{skipped:#}");
    let moved = gateway.publish("payment.expired", order(3)).await;
    let request = &receiver
        .wait_for_event("/after", text(&moved, "id"), WAIT)
        .await[0];
    signatures::assert_signed_by(SECRET, request);

    // Bad changes are refused with the field named, and change nothing.
    let secret = gateway
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({"secret": "whsec_AAAA"})),
        )
        .await;
    assert!(
        secret
            .assert_error(400, "invalid_body")
            .contains("rotate-secret")
    );
    let unknown_field = gateway
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({"colour": "red"})),
        )
        .await;
    assert!(
        unknown_field
            .assert_error(400, "invalid_body")
            .contains("colour")
    );
    let zero = gateway
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({"concurrency": 0})),
        )
        .await;
    assert!(
        zero.assert_error(400, "invalid_body")
            .contains("concurrency")
    );
    let bad_url = gateway
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({"url": "ftp://x"})),
        )
        .await;
    assert!(bad_url.assert_error(400, "invalid_body").contains("url"));
    assert_eq!(
        gateway.get_json("/v1/endpoints/shop").await.json["concurrency"],
        3
    );

    // Disabled endpoints get no deliveries; enabling brings them back.
    let disabled = gateway
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(disabled.json["enabled"], false, "{disabled:#?}");
    let none = gateway.publish("payment.expired", order(4)).await;
    assert_eq!(none["deliveries"], json!([]));
    let test_disabled = gateway
        .post_json("/v1/endpoints/shop/test", &json!({}))
        .await;
    test_disabled.assert_error(409, "endpoint_disabled");
    let enabled = gateway
        .call(
            "PATCH",
            "/v1/endpoints/shop",
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(enabled.json["enabled"], true);

    // A test event goes to this endpoint whatever it subscribes to.
    let test = gateway
        .post_json("/v1/endpoints/shop/test", &json!({}))
        .await;
    assert_eq!(test.status, 202, "{test:#?}");
    let test_request = &receiver
        .wait_for_event("/after", text(&test.json, "event_id"), WAIT)
        .await[0];
    assert_eq!(test_request.json()["type"], "webhook.test");
    gateway
        .wait_for_delivery_status(text(&test.json, "delivery_id"), "delivered", WAIT)
        .await;

    let taken = gateway
        .post_json(
            "/v1/endpoints",
            &json!({"id": "shop", "url": receiver.url("/x")}),
        )
        .await;
    taken.assert_error(409, "endpoint_exists");

    let deleted = gateway.call("DELETE", "/v1/endpoints/shop", None).await;
    assert_eq!(deleted.status, 204, "{deleted:#?}");
    gateway
        .get_json("/v1/endpoints/shop")
        .await
        .assert_error(404, "not_found");
    let after_delete = gateway.publish("payment.expired", order(5)).await;
    assert_eq!(after_delete["deliveries"], json!([]));
    for (method, path) in [
        ("DELETE", "/v1/endpoints/shop"),
        ("PATCH", "/v1/endpoints/shop"),
        ("POST", "/v1/endpoints/shop/rotate-secret"),
        ("POST", "/v1/endpoints/shop/test"),
    ] {
        gateway
            .call(method, path, Some(&json!({})))
            .await
            .assert_error(404, "not_found");
    }

    // The same id can be created again, and delivers.
    let again = gateway
        .post_json(
            "/v1/endpoints",
            &json!({"id": "shop", "url": receiver.url("/again")}),
        )
        .await;
    assert_eq!(again.status, 201, "{again:#?}");
    let event = gateway.publish("payment.confirmed", order(6)).await;
    let request = &receiver
        .wait_for_event("/again", text(&event, "id"), WAIT)
        .await[0];
    signatures::assert_signed_by(text(&again.json, "secret"), request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_endpoints_are_read_only_and_api_endpoints_survive_a_restart() {
    let receiver = Receiver::ok().await;
    let config = endpoint("from-file", &receiver.url("/file"), "");
    let mut gateway = Gateway::start(&config).await;

    let listed = gateway.get_json("/v1/endpoints").await;
    assert_eq!(
        listed.json["endpoints"][0]["source"], "config",
        "{listed:#?}"
    );
    for (method, path, body) in [
        (
            "PATCH",
            "/v1/endpoints/from-file",
            json!({"concurrency": 2}),
        ),
        ("DELETE", "/v1/endpoints/from-file", json!({})),
        ("POST", "/v1/endpoints/from-file/rotate-secret", json!({})),
    ] {
        let answer = gateway.call(method, path, Some(&body)).await;
        let message = answer.assert_error(409, "endpoint_from_config");
        assert!(message.contains("config file"), "{message}");
    }

    let created = gateway
        .post_json(
            "/v1/endpoints",
            &json!({"id": "from-api", "url": receiver.url("/api"), "concurrency": 2}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:#?}");
    let secret = text(&created.json, "secret").to_owned();

    gateway.kill9().await;
    gateway.restart().await;

    let listed = gateway.get_json("/v1/endpoints").await;
    let ids: Vec<&str> = listed.json["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|endpoint| text(endpoint, "id"))
        .collect();
    assert_eq!(ids, ["from-file", "from-api"]);
    assert_eq!(listed.json["endpoints"][1]["concurrency"], 2);
    let event = gateway.publish("payment.confirmed", order(1)).await;
    let request = &receiver
        .wait_for_event("/api", text(&event, "id"), WAIT)
        .await[0];
    signatures::assert_signed_by(&secret, request);
    receiver
        .wait_for_event("/file", text(&event, "id"), WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_retried_with_its_idempotency_key_gets_the_first_answer_again() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start("").await;
    let key = [("idempotency-key", "add-crm-hook")];
    let body = json!({"url": receiver.url("/crm"), "event_types": ["payment.confirmed"]});
    let first = gateway.post_json_with("/v1/endpoints", &body, &key).await;
    assert_eq!(first.status, 201, "{first:#?}");
    assert_eq!(first.header("idempotent-replayed"), None);

    let again = gateway.post_json_with("/v1/endpoints", &body, &key).await;
    assert_eq!(again.status, 201, "{again:#?}");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json, first.json, "the first answer, secret included");
    let listed = gateway.get_json("/v1/endpoints").await;
    assert_eq!(listed.json["endpoints"].as_array().unwrap().len(), 1);

    let other = json!({"url": receiver.url("/other")});
    let reused = gateway.post_json_with("/v1/endpoints", &other, &key).await;
    assert!(
        reused
            .assert_error(409, "idempotency_conflict")
            .contains("add-crm-hook")
    );
    let too_long = "k".repeat(256);
    gateway
        .post_json_with(
            "/v1/endpoints",
            &other,
            &[("idempotency-key", too_long.as_str())],
        )
        .await
        .assert_error(400, "invalid_body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_egress_guard_refuses_loopback_urls_at_create_unless_admitted() {
    // No allow-list: only the loopback range is addressed, and nothing is sent.
    let gateway = Gateway::start("[egress]\nallowed_networks = []\n").await;
    for url in [
        "http://127.0.0.2:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://2130706433:9/hook",
    ] {
        let answer = gateway
            .post_json("/v1/endpoints", &json!({"url": url}))
            .await;
        let message = answer.assert_error(400, "invalid_body");
        assert!(message.contains("loopback"), "{url}: {message}");
    }
    let listed = gateway.get_json("/v1/endpoints").await;
    assert_eq!(listed.json["endpoints"], json!([]));
}
