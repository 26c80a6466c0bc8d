//! `hookgate plugin new`: the crate it makes is all a merchant needs. It passes its own
//! `cargo test`, builds with plain `cargo build --release --target wasm32-wasip2`, and the
//! `.wasm` that comes out is uploaded to a real gateway as it is, dry-run there, and shapes a
//! real delivery.
//!
//! Needs crates.io (the new crate resolves its dependencies) and the `wasm32-wasip2` target.
//! The crate builds into `$CARGO_TARGET_DIR/scaffold-plugin` (`target/scaffold-plugin` of this
//! workspace when unset), so a rerun compiles only the plugin and its SDK.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Gateway, Receiver, endpoint, poll_until};
use tokio::process::Command;

const NAME: &str = "acme-filter";

/// Cargo names the component after the library: `-` becomes `_`.
const WASM: &str = "wasm32-wasip2/release/acme_filter.wasm";

/// A cold build compiles serde and wit-bindgen's macros twice (tests, then release).
const BUILD_DEADLINE: Duration = Duration::from_secs(20 * 60);

const WAIT: Duration = Duration::from_secs(20);

/// What the template's transform sends for a `payment.confirmed` event with `{"amount":"10"}`.
fn transformed() -> Value {
    json!({"kind": "payment.confirmed", "data": {"amount": "10"}})
}

/// Runs `command` to the end within `within` (killed past it) and returns its output, or
/// panics with that output when it fails.
async fn run(what: &str, command: &mut Command, within: Duration) -> Output {
    command.stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(within, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {within:?}"))
        .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// Where the new crate builds: stable across runs, apart from the workspace's own artifacts.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("scaffold-plugin"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-plugin"),
    }
}

/// `cargo` in the new crate, the way a merchant runs it.
fn cargo(krate: &Path, target_dir: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", target_dir);
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_plugin_builds_with_plain_cargo_and_the_gateway_runs_its_wasm_as_it_is() {
    let parent = tempfile::tempdir().unwrap();
    let created = run(
        "hookgate plugin new",
        Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["plugin", "new", NAME, "--dir"])
            .arg(parent.path())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1"),
        WAIT,
    )
    .await;
    let printed = String::from_utf8_lossy(&created.stdout);
    assert!(
        printed.contains(&format!("target/{WASM}")),
        "plugin new should name the file the build makes:\n{printed}"
    );
    let krate = parent.path().join(NAME);

    let target = target_dir();
    let tested = run(
        "cargo test in the new crate",
        cargo(&krate, &target).arg("test"),
        BUILD_DEADLINE,
    )
    .await;
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(
        report.contains("test tests::"),
        "the template's own tests should run:\n{report}"
    );
    run(
        "cargo build --release --target wasm32-wasip2 in the new crate",
        cargo(&krate, &target).args(["build", "--release", "--target", "wasm32-wasip2"]),
        BUILD_DEADLINE,
    )
    .await;
    let wasm = std::fs::read(target.join(WASM))
        .unwrap_or_else(|err| panic!("reading {}: {err}", target.join(WASM).display()));

    let receiver = Receiver::ok().await;
    let plugins = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&format!(
        "[plugins]\ndir = '{}'\n\n{}[[endpoints.plugins]]\nname = \"{NAME}\"\n\
         config = {{ type_prefix = \"payment.\" }}\n",
        plugins.path().display(),
        endpoint("shop", &receiver.url("/hook"), ""),
    ))
    .await;

    let uploaded = gateway
        .send(
            gateway
                .raw_client()
                .put(gateway.url(&format!("/v1/plugins/{NAME}")))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/wasm")
                .body(wasm.clone()),
        )
        .await;
    assert_eq!(
        uploaded.status, 201,
        "uploading a new plugin: {uploaded:#?}"
    );
    assert_eq!(uploaded.json["name"], NAME, "{uploaded:#?}");
    assert_eq!(uploaded.json["size"], wasm.len(), "{uploaded:#?}");
    let version = uploaded.json["version"]
        .as_str()
        .filter(|version| !version.is_empty() && version.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("the upload should answer a hex version: {uploaded:#?}"))
        .to_owned();
    poll_until(
        WAIT,
        &format!("{NAME}@{version} to be listed in force"),
        || async { support::listed_plugin(&gateway.get_json("/v1/plugins").await.json, NAME) },
        |plugin| plugin["version"] == version.as_str(),
    )
    .await;

    let kept = gateway
        .post_json(
            &format!("/v1/plugins/{NAME}/test"),
            &json!({
                "event": {"type": "payment.confirmed", "data": {"amount": "10"}},
                "config": {"type_prefix": "payment."},
            }),
        )
        .await;
    assert_eq!(kept.status, 200, "{kept:#?}");
    assert_eq!(kept.json["decision"], "keep", "{kept:#?}");
    assert_eq!(kept.json["content_type"], "application/json", "{kept:#?}");
    assert_eq!(
        kept.json["headers"],
        json!([["x-event-kind", "payment.confirmed"]]),
        "{kept:#?}"
    );
    assert_eq!(kept.json["body"], transformed(), "{kept:#?}");
    assert!(kept.json.get("body_base64").is_none(), "{kept:#?}");
    assert!(kept.json["duration_us"].is_number(), "{kept:#?}");

    let dropped = gateway
        .post_json(
            &format!("/v1/plugins/{NAME}/test"),
            &json!({
                "event": {"type": "invoice.paid", "data": {"amount": "10"}},
                "config": {"type_prefix": "payment."},
            }),
        )
        .await;
    assert_eq!(dropped.status, 200, "{dropped:#?}");
    assert_eq!(dropped.json["decision"], "drop", "{dropped:#?}");
    assert!(
        dropped.json["body"].is_null(),
        "a dropped event has no body: {dropped:#?}"
    );

    let published = gateway
        .publish("payment.confirmed", json!({"amount": "10"}))
        .await;
    let event_id = published["id"].as_str().expect("the event's id");
    let received = receiver.wait_for_event("/hook", event_id, WAIT).await;
    assert_eq!(received[0].json(), transformed());
    assert_eq!(
        received[0].header("x-event-kind"),
        Some("payment.confirmed")
    );
}
