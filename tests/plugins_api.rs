//! Plugins managed over the admin API of the real `hookgate` binary: upload (validated like
//! the watched directory, swapped atomically, written there so a restart keeps it), dry runs
//! under the production limits, delete, and each error class.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{ApiResponse, Gateway, Receiver, endpoint, wasm};

async fn dry_run(gateway: &Gateway, name: &str, event: Value, config: Value) -> ApiResponse {
    gateway
        .post_json(
            &format!("/v1/plugins/{name}/test"),
            &json!({"event": event, "config": config}),
        )
        .await
}

fn sections(dir: &Path, extra: &str) -> String {
    format!(
        "[plugins]\ndir = '{}'\nmax_wasm_mib = 1\ntime_limit = \"50ms\"\nwall_time_limit = \"5s\"\n\n{extra}",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_checked_swapped_kept_and_dry_run_with_production_limits() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let chain = endpoint("shop", &receiver.url("/shop"), "")
        + "[[endpoints.plugins]]\nname = \"min-amount\"\nconfig = { default = \"10\" }\n\n";
    let mut gateway = Gateway::start(&sections(dir.path(), &chain)).await;

    // A new name: 201, loaded, and written to the directory byte for byte.
    let first = gateway.upload_plugin("min-amount", wasm("noop")).await;
    assert_eq!(first.status, 201, "{first:#?}");
    let first_version = first.json["version"].as_str().unwrap().to_owned();
    assert_eq!(
        std::fs::read(dir.path().join("min-amount.wasm")).unwrap(),
        wasm("noop")
    );
    // A new version of it: 200 and swapped.
    let second = gateway
        .upload_plugin("min-amount", wasm("min-amount"))
        .await;
    assert_eq!(second.status, 200, "{second:#?}");
    let version = second.json["version"].as_str().unwrap().to_owned();
    assert_ne!(version, first_version);
    assert_eq!(second.json["size"], wasm("min-amount").len());

    // Refusals keep the version in force and say why.
    let wrong = gateway
        .upload_plugin("min-amount", wasm("wrong-world"))
        .await;
    let message = wrong.assert_error(422, "plugin_invalid");
    assert!(message.contains("version in force"), "{message}");
    let garbage = gateway
        .upload_plugin("min-amount", b"not a component".to_vec())
        .await;
    garbage.assert_error(422, "plugin_invalid");
    let oversized = gateway
        .upload_plugin("huge", vec![0u8; (1 << 20) + 1])
        .await;
    oversized.assert_error(413, "too_large");
    gateway
        .upload_plugin("bad.name", wasm("noop"))
        .await
        .assert_error(400, "invalid_body");
    let list = gateway.get_json("/v1/plugins").await.json;
    assert_eq!(
        support::listed_plugin(&list, "min-amount")["version"],
        version.as_str()
    );
    assert!(
        support::listed_plugin(&list, "min-amount")["error"].is_string(),
        "{list:#}"
    );
    assert_eq!(support::listed_plugin(&list, "huge"), Value::Null);
    assert_eq!(
        std::fs::read(dir.path().join("min-amount.wasm")).unwrap(),
        wasm("min-amount"),
        "a refused upload leaves the file in force"
    );

    // Dry runs: the decision, the body and the time the call took.
    let small = dry_run(
        &gateway,
        "min-amount",
        json!({"type": "payment.confirmed", "data": {"amount": "5"}}),
        json!({"default": "10"}),
    )
    .await;
    assert_eq!(small.status, 200, "{small:#?}");
    assert_eq!(small.json["decision"], "drop");
    assert!(small.json["duration_us"].is_u64());
    let big = dry_run(
        &gateway,
        "min-amount",
        json!({"type": "payment.confirmed", "data": {"amount": "50"}}),
        json!({"default": "10"}),
    )
    .await;
    assert_eq!(big.json["decision"], "keep", "{big:#?}");
    assert_eq!(big.json["content_type"], "application/json");
    assert_eq!(big.json["body"]["data"], json!({"amount": "50"}));
    let bad_config = dry_run(
        &gateway,
        "min-amount",
        json!({"type": "payment.confirmed", "data": {"amount": "50"}}),
        json!({"colour": "red"}),
    )
    .await;
    assert_eq!(bad_config.json["decision"], "failed", "{bad_config:#?}");
    assert!(
        bad_config.json["error"]
            .as_str()
            .unwrap()
            .contains("colour")
    );

    for hostile in ["trap-panic", "loop-forever"] {
        assert_eq!(
            gateway.upload_plugin(hostile, wasm(hostile)).await.status,
            201
        );
        let failed = dry_run(
            &gateway,
            hostile,
            json!({"type": "test.hostile", "data": {}}),
            json!({}),
        )
        .await;
        assert_eq!(failed.status, 200, "{failed:#?}");
        assert_eq!(failed.json["decision"], "failed", "{failed:#?}");
        assert!(!failed.json["error"].as_str().unwrap().is_empty());
    }
    dry_run(
        &gateway,
        "nothing",
        json!({"type": "a", "data": {}}),
        json!({}),
    )
    .await
    .assert_error(404, "not_found");
    dry_run(&gateway, "min-amount", json!({"data": {}}), json!({}))
        .await
        .assert_error(400, "invalid_body");

    // Delete: refused while an endpoint's chain names it; otherwise unloaded and removed.
    let in_use = gateway.call("DELETE", "/v1/plugins/min-amount", None).await;
    assert!(in_use.assert_error(409, "plugin_in_use").contains("shop"));
    let deleted = gateway.call("DELETE", "/v1/plugins/trap-panic", None).await;
    assert_eq!(deleted.status, 204, "{deleted:#?}");
    assert!(!dir.path().join("trap-panic.wasm").exists());
    let list = gateway.get_json("/v1/plugins").await.json;
    assert_eq!(support::listed_plugin(&list, "trap-panic"), Value::Null);
    gateway
        .call("DELETE", "/v1/plugins/trap-panic", None)
        .await
        .assert_error(404, "not_found");

    // A restart loads the uploaded version from the directory.
    gateway.kill9().await;
    gateway.restart().await;
    let list = gateway.get_json("/v1/plugins").await.json;
    assert_eq!(
        support::listed_plugin(&list, "min-amount")["version"],
        version.as_str(),
        "{list:#}"
    );
    let event = gateway
        .publish("payment.confirmed", json!({"amount": "50"}))
        .await;
    receiver
        .wait_for_event(
            "/shop",
            event["id"].as_str().unwrap(),
            Duration::from_secs(20),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_need_a_plugins_directory() {
    let gateway = Gateway::start("").await;
    let answer = gateway.upload_plugin("noop", wasm("noop")).await;
    let message = answer.assert_error(409, "no_plugins_dir");
    assert!(message.contains("[plugins] dir"), "{message}");
}
