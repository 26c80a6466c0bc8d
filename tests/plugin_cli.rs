//! `hookgate plugin check` and `hookgate plugin run`: a merchant tests a real component
//! (from `target/plugins/`, built by `cargo run -p hookgate-plugin-build`) without a gateway.

#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Output};

use support::component;

fn hookgate(args: &[&str]) -> (Output, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("running hookgate");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

#[test]
fn check_reports_the_world_and_exports_of_a_valid_plugin() {
    let path = component("slack");
    let (output, stdout, stderr) = hookgate(&["plugin", "check", path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("ok: slack@"), "{stdout}");
    assert!(
        stdout.contains("world: hookgate:plugin@0.1.0 webhook-plugin"),
        "{stdout}"
    );
    assert!(stdout.contains("exports: filter, transform"), "{stdout}");
    assert!(stdout.contains("smoke test: passed"), "{stdout}");
}

#[test]
fn check_refuses_wrong_worlds_missing_exports_and_garbage_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x0d\0\x01\0 definitely not a component").unwrap();
    let cases = [
        (component("wrong-world"), "no export `filter`"),
        (component("missing-export"), "no export `transform`"),
        (corrupt, "not a usable WebAssembly component"),
    ];
    for (path, reason) in cases {
        let (output, stdout, stderr) = hookgate(&["plugin", "check", path.to_str().unwrap()]);
        assert!(
            !output.status.success(),
            "{} passed the check: {stdout}",
            path.display()
        );
        assert!(
            stderr.contains("error: ") && stderr.contains(reason),
            "{}: expected `{reason}` in:\n{stderr}",
            path.display()
        );
        assert!(
            !stderr.contains("stack backtrace"),
            "a refusal is not a crash:\n{stderr}"
        );
    }
}

#[test]
fn run_prints_the_filter_decision_and_the_transformed_body() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"type":"payment.confirmed","timestamp":"2026-11-22T10:00:00Z","id":"evt_1",
            "data":{"payment_id":"p1","status":"confirmed","address":"0xabc","amount":"12.5",
                    "chain":"ethereum","token_id":"usdc"}}"#,
    )
    .unwrap();
    let event = event.to_str().unwrap();

    let flat = component("legacy-flat");
    let (output, stdout, stderr) =
        hookgate(&["plugin", "run", flat.to_str().unwrap(), "--event", event]);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("filter: keep"), "{stdout}");
    assert!(
        stdout.contains("content-type: application/json"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""event": "payment.confirmed""#),
        "{stdout}"
    );
    assert!(stdout.contains(r#""payment_id": "p1""#), "{stdout}");

    let min = component("min-amount");
    let args = [
        "plugin",
        "run",
        min.to_str().unwrap(),
        "--event",
        event,
        "--config",
    ];
    let (output, stdout, _) = hookgate(&[&args[..], &[r#"{"default":"100"}"#]].concat());
    assert!(output.status.success());
    assert!(stdout.contains("filter: drop"), "{stdout}");
    assert!(
        !stdout.contains("body:"),
        "a dropped event has no body: {stdout}"
    );

    let (output, _, stderr) = hookgate(&[&args[..], &["{not json"]].concat());
    assert!(!output.status.success());
    assert!(stderr.contains("--config is not valid JSON"), "{stderr}");
}
