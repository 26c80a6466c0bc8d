//! The egress guard on the real binary, with the allow-list empty: an endpoint whose URL names
//! a non-public address is refused when the gateway starts, and a name that resolves to one is
//! refused at connect time, as a failed attempt with a clear error and no request sent. Every
//! address used here is in the loopback range; the other ranges are unit-tested on parsed
//! addresses in `host/src/delivery/egress.rs`, without connecting.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use support::{ADMIN_TOKEN, Gateway, Receiver, delivery_to, endpoint};

const WAIT: Duration = Duration::from_secs(30);
const NO_ALLOW_LIST: &str = "[egress]\nallowed_networks = []\n\n";

#[test]
fn endpoints_naming_a_loopback_address_in_any_form_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "http://127.0.0.2:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://2130706433:9/hook",
        "http://0x7f.1:9/hook",
    ] {
        let config = dir.path().join("hookgate.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\n\
                 [store]\npath = '{}'\n\n{NO_ALLOW_LIST}{}",
                dir.path().join("hookgate.redb").display(),
                endpoint("inside", url, "")
            ),
        )
        .unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("HOOKGATE_CONFIG")
            .env_remove("HOOKGATE_ADMIN_TOKEN")
            .output()
            .expect("running hookgate serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url} was accepted: {stderr}");
        assert!(
            stderr.contains("endpoint `inside`: url host")
                && stderr.contains("which endpoints may not reach")
                && stderr.contains("allowed_networks"),
            "{url}: {stderr}"
        );
        println!("{url}: {}", stderr.trim());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_resolving_to_loopback_is_refused_when_connecting() {
    let receiver = Receiver::ok().await;
    let port = receiver
        .url("/")
        .split(':')
        .nth(2)
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let sections = format!(
        "{NO_ALLOW_LIST}{}",
        endpoint(
            "named",
            &format!("http://localhost:{port}/hook"),
            "retry_schedule = [\"0s\"]"
        )
    );
    let gateway = Gateway::start(&sections).await;
    let event = gateway.publish("payment.confirmed", json!({"n": 1})).await;
    let id = delivery_to(&event, "named");
    let parked = gateway
        .wait_for_delivery_status(&id, "dead_lettered", WAIT)
        .await;
    let error = parked["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("refused to connect: localhost is a loopback address"),
        "{parked:#}"
    );
    assert_eq!(
        parked["attempts"][0]["status_code"],
        serde_json::Value::Null
    );
    assert!(
        receiver.requests().is_empty(),
        "a request reached the receiver"
    );
    println!("attempt error: {error}");
}
