//! Retention on the real binary: settled events go after `store.retention`, idempotency keys
//! (of events and of creates) after `store.idempotency_window`; pending deliveries and recent dead letters stay; and
//! `hookgate store compact` refuses a running gateway's file and compacts a stopped one's.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use support::{Gateway, Receiver, Reply, delivery_to, endpoint, poll_until};

const WAIT: Duration = Duration::from_secs(30);

fn compact(gateway: &Gateway) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["store", "compact", "--config"])
        .arg(gateway.dir().join("hookgate.toml"))
        .env_remove("HOOKGATE_CONFIG")
        .output()
        .expect("running hookgate store compact")
}

#[tokio::test(flavor = "multi_thread")]
async fn settled_events_expire_while_pending_deliveries_and_dead_letters_stay() {
    let receiver = Receiver::start(|call| match call.path.as_str() {
        "/fail" => Reply::status(500),
        "/hang" => Reply::ok().after(Duration::from_secs(300)),
        _ => Reply::ok(),
    })
    .await;
    let endpoints = [
        endpoint("ok", &receiver.url("/ok"), "event_types = [\"t.ok\"]"),
        endpoint(
            "fail",
            &receiver.url("/fail"),
            "event_types = [\"t.fail\"]\nretry_schedule = [\"0s\"]",
        ),
        endpoint(
            "hang",
            &receiver.url("/hang"),
            "event_types = [\"t.hang\"]\nrequest_timeout = \"300s\"",
        ),
    ]
    .concat();
    let mut gateway = Gateway::start_with_store(
        "retention = \"1s\"\nidempotency_window = \"1s\"\ndead_letter_retention = \"1h\"\n\
         sweep_interval = \"100ms\"",
        &endpoints,
    )
    .await;

    let key = [("idempotency-key", "order-7-confirmed")];
    let body = json!({"type": "t.ok", "data": {"order": 7}});
    let first = gateway.post_json_with("/v1/events", &body, &key).await;
    let endpoint_key = [("idempotency-key", "create-audit-endpoint")];
    let audit = json!({"url": receiver.url("/audit"), "event_types": ["t.audit"]});
    let created = gateway
        .post_json_with("/v1/endpoints", &audit, &endpoint_key)
        .await;
    assert_eq!(created.status, 201, "{created:#?}");
    assert_eq!(first.status, 201, "{first:#?}");
    let delivered = delivery_to(&first.json, "ok");
    let dead = delivery_to(&gateway.publish("t.fail", json!({"n": 1})).await, "fail");
    let pending = delivery_to(&gateway.publish("t.hang", json!({"n": 2})).await, "hang");
    gateway
        .wait_for_delivery_status(&delivered, "delivered", WAIT)
        .await;
    gateway
        .wait_for_delivery_status(&dead, "dead_lettered", WAIT)
        .await;
    receiver.wait_for_count("/hang", 1, WAIT).await;

    // The delivered event goes once it is older than a second and the sweep comes by.
    let path = format!("/v1/deliveries/{delivered}");
    poll_until(
        WAIT,
        "the delivered event to be removed",
        || gateway.get_json(&path),
        |answer| answer.status == 404,
    )
    .await;
    let kept = gateway.get_json(&format!("/v1/deliveries/{dead}")).await;
    assert_eq!(kept.status, 200, "a recent dead letter stays: {kept:#?}");
    assert_eq!(kept.json["status"], "dead_lettered", "{kept:#?}");
    let kept = gateway.get_json(&format!("/v1/deliveries/{pending}")).await;
    assert_eq!(kept.status, 200, "a pending delivery stays: {kept:#?}");
    assert_eq!(kept.json["status"], "pending", "{kept:#?}");
    assert!(
        gateway.log_tail().contains("retention sweep removed"),
        "the sweep reports what it removed:\n{}",
        gateway.log_tail()
    );

    // The idempotency key went with its event: the same key publishes a new event.
    let again = gateway.post_json_with("/v1/events", &body, &key).await;
    assert_eq!(again.status, 201, "{again:#?}");
    assert_ne!(again.json["id"], first.json["id"], "{again:#?}");
    // So did the answer kept for a create's key: the same key creates a second endpoint.
    let second = gateway
        .post_json_with("/v1/endpoints", &audit, &endpoint_key)
        .await;
    assert_eq!(second.status, 201, "{second:#?}");
    assert_eq!(second.header("idempotent-replayed"), None);
    assert_ne!(second.json["id"], created.json["id"], "{second:#?}");

    // Compaction needs the gateway stopped; then it works on the same file.
    let refused = compact(&gateway);
    assert!(!refused.status.success(), "{refused:?}");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("stop the gateway first"), "{message}");
    gateway.kill9().await;
    let done = compact(&gateway);
    assert!(done.status.success(), "{done:?}");
    let printed = String::from_utf8_lossy(&done.stdout);
    assert!(printed.starts_with("compacted "), "{printed}");
    println!("{}", printed.trim());

    // Nothing pending was lost to the sweep or the compaction.
    gateway.restart().await;
    let kept = gateway.get_json(&format!("/v1/deliveries/{pending}")).await;
    assert_eq!(kept.json["status"], "pending", "{kept:#?}");
}
