//! No client can stall or bloat the admin listener: the real binary with tight limits, driven
//! over raw TCP on loopback the way a slow or hostile client would.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{ADMIN_TOKEN, Gateway};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SERVER: &str = "header_read_timeout = \"1s\"\nbody_timeout = \"1s\"\nmax_connections = 32";

/// Reads what the server sends until it closes the connection or `within` passes.
async fn read_until_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(read)) => seen.extend_from_slice(&buffer[..read]),
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_headers_are_cut_off_and_cannot_starve_other_clients() {
    let gateway = Gateway::start_with_server(SERVER, "").await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(gateway.address()).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: hookgate\r\nX-Slow: ")
            .await
            .unwrap();
        idle.push(stream);
    }
    let started = Instant::now();
    let health = gateway.get_json("/healthz").await;
    let waited = started.elapsed();
    assert_eq!(health.status, 200, "{health:#?}");
    println!(
        "healthz answered in {waited:.1?} with 200 half-sent request heads held open (cap 32, header timeout 1 s)"
    );
    assert!(waited < Duration::from_secs(20), "{waited:?}");
    let (_, closed) = read_until_close(&mut idle[0], Duration::from_secs(10)).await;
    assert!(
        closed,
        "a connection that never finished its head is closed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_trickles_is_answered_408() {
    let gateway = Gateway::start_with_server(SERVER, "").await;
    let mut stream = TcpStream::connect(gateway.address()).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: hookgate\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (answer, _) = read_until_close(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    println!("trickled body answered 408 after {:.1?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_only_after_the_token_is_checked() {
    let gateway = Gateway::start_with_server(SERVER, "").await;
    let request = |token: &str| {
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: hookgate\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 40\r\nExpect: 100-continue\r\n\r\n"
        )
    };
    let mut stranger = TcpStream::connect(gateway.address()).await.unwrap();
    stranger
        .write_all(request("wrong-token").as_bytes())
        .await
        .unwrap();
    let mut buffer = [0u8; 2048];
    let read = tokio::time::timeout(Duration::from_secs(5), stranger.read(&mut buffer))
        .await
        .expect("an answer without sending the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");

    let mut client = TcpStream::connect(gateway.address()).await.unwrap();
    client
        .write_all(request(ADMIN_TOKEN).as_bytes())
        .await
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
        .await
        .expect("100 Continue")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..read]);
    assert!(answer.starts_with("HTTP/1.1 100 Continue"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_compiled_plugin_is_refused_and_recompiled_from_its_wasm() {
    use sha2::{Digest as _, Sha256};
    use std::os::unix::fs::PermissionsExt as _;

    let plugins = tempfile::tempdir().unwrap();
    let mut digests = std::collections::HashMap::new();
    for name in ["legacy-flat", "min-amount"] {
        let bytes = std::fs::read(support::component(name)).unwrap();
        digests.insert(name, hex::encode(Sha256::digest(&bytes)));
        std::fs::write(plugins.path().join(format!("{name}.wasm")), bytes).unwrap();
    }
    let receiver = support::Receiver::ok().await;
    let mut gateway = Gateway::start(&format!(
        "[plugins]\ndir = '{}'\n\n{}[[endpoints.plugins]]\nname = \"legacy-flat\"\n",
        plugins.path().display(),
        support::endpoint("legacy", &receiver.url("/legacy"), ""),
    ))
    .await;
    let cache = gateway.dir().join("plugin-cache");
    let artifact = |name: &str| {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| {
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&digests[name])
            })
    };
    support::poll_until(
        Duration::from_secs(20),
        "both plugins compiled into the cache",
        || async {
            (
                artifact("legacy-flat").is_some(),
                artifact("min-amount").is_some(),
            )
        },
        |found| *found == (true, true),
    )
    .await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&artifact("legacy-flat").unwrap()), 0o600);
    assert_eq!(mode(&gateway.dir().join("hookgate.redb")), 0o600);

    gateway.kill9().await;
    // The attack: another plugin's native code under legacy-flat's name.
    std::fs::copy(
        artifact("min-amount").unwrap(),
        artifact("legacy-flat").unwrap(),
    )
    .unwrap();
    gateway.restart().await;
    let plugins_now = support::poll_until(
        Duration::from_secs(20),
        "both plugins loaded again",
        || gateway.get_json("/v1/plugins"),
        |list| {
            list.json["plugins"]
                .as_array()
                .is_some_and(|p| p.len() == 2)
        },
    )
    .await;
    let shown = |name: &str| {
        plugins_now.json["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|plugin| plugin["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        shown("legacy-flat")["from_cache"],
        false,
        "recompiled from the .wasm"
    );
    assert_eq!(shown("min-amount")["from_cache"], true);
    assert!(
        gateway.log_tail().contains("failed verification"),
        "{}",
        gateway.log_tail()
    );
    let event = gateway
        .publish(
            "payment.confirmed",
            serde_json::json!({"payment_id": "p1", "amount": "1"}),
        )
        .await;
    let id = event["id"].as_str().unwrap().to_owned();
    let delivered = receiver
        .wait_for_event("/legacy", &id, Duration::from_secs(20))
        .await;
    assert_eq!(
        delivered[0].json()["event"],
        "payment.confirmed",
        "legacy-flat's own code shaped the body"
    );
}

/// Plugin limits for tests where the limit under test is not time: a debug build on a loaded
/// machine can take more than the default 10 ms CPU / 50 ms wall to lift a large output.
const ROOMY_TIME: &str = "time_limit = \"200ms\"\nwall_time_limit = \"5s\"\n";

/// A gateway with `plugin` (from `target/plugins`) on endpoint `hostile` and a healthy
/// endpoint `healthy` without plugins, both on `receiver`; `limits` are extra `[plugins]` lines.
async fn with_hostile_plugin(
    plugin: &str,
    limits: &str,
    receiver: &support::Receiver,
) -> (Gateway, tempfile::TempDir) {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::component(plugin),
        plugins.path().join(format!("{plugin}.wasm")),
    )
    .unwrap();
    let gateway = Gateway::start(&format!(
        "[plugins]\ndir = '{}'\n{limits}\n{}[[endpoints.plugins]]\nname = \"{plugin}\"\n\n{}",
        plugins.path().display(),
        support::endpoint("hostile", &receiver.url("/hostile"), ""),
        support::endpoint("healthy", &receiver.url("/healthy"), ""),
    ))
    .await;
    support::poll_until(
        Duration::from_secs(20),
        &format!("{plugin} to load"),
        || gateway.get_json("/v1/plugins"),
        |list| list.json["plugins"][0]["version"].is_string(),
    )
    .await;
    (gateway, plugins)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_sleeping_in_a_host_call_is_stopped_at_its_wall_clock_bound() {
    let receiver = support::Receiver::ok().await;
    let (gateway, _plugins) = with_hostile_plugin("sleepy", "", &receiver).await;
    let started = Instant::now();
    let event = gateway
        .publish("test.hostile", serde_json::json!({"n": 1}))
        .await;
    let publish = started.elapsed();
    println!("publish with a 10 s sleeping plugin on another endpoint answered in {publish:.1?}");
    assert!(publish < Duration::from_secs(5), "{publish:?}");
    let hostile = support::delivery_to(&event, "hostile");
    let parked = gateway
        .wait_for_delivery_status(&hostile, "dead_lettered", Duration::from_secs(10))
        .await;
    assert!(
        parked["last_error"]
            .as_str()
            .unwrap()
            .contains("wall-clock limit (50ms)"),
        "{parked:#}"
    );
    let id = event["id"].as_str().unwrap();
    receiver
        .wait_for_event("/healthy", id, Duration::from_secs(10))
        .await;
    // The timed-out instance is discarded; the plugin serves the next event normally.
    let next = gateway
        .publish("payment.confirmed", serde_json::json!({"n": 2}))
        .await;
    receiver
        .wait_for_event(
            "/hostile",
            next["id"].as_str().unwrap(),
            Duration::from_secs(10),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_hangs_on_load_is_refused_and_the_gateway_starts() {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::component("hang-on-load"),
        plugins.path().join("hang-on-load.wasm"),
    )
    .unwrap();
    let started = Instant::now();
    let gateway = Gateway::start(&format!(
        "[plugins]\ndir = '{}'\n",
        plugins.path().display()
    ))
    .await;
    println!(
        "started with a hanging plugin in the directory in {:.1?}",
        started.elapsed()
    );
    let listed = gateway.get_json("/v1/plugins").await;
    let refusal = listed.json["plugins"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(refusal.contains("wall-clock limit"), "{:#}", listed.json);
    // The watcher keeps serving later changes.
    std::fs::copy(support::component("noop"), plugins.path().join("noop.wasm")).unwrap();
    support::poll_until(
        Duration::from_secs(20),
        "noop to load after the hanging plugin",
        || gateway.get_json("/v1/plugins"),
        |list| {
            list.json["plugins"].as_array().is_some_and(|plugins| {
                plugins
                    .iter()
                    .any(|p| p["name"] == "noop" && p["version"].is_string())
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_count_toward_the_output_limit() {
    let receiver = support::Receiver::ok().await;
    let (gateway, _plugins) = with_hostile_plugin("header-bloat", ROOMY_TIME, &receiver).await;
    let event = gateway
        .publish("test.hostile", serde_json::json!({"n": 1}))
        .await;
    let hostile = support::delivery_to(&event, "hostile");
    let shown = gateway
        .wait_for_delivery_status(&hostile, "dead_lettered", Duration::from_secs(10))
        .await;
    let reason = shown["last_error"].as_str().unwrap();
    assert!(reason.contains("output limit"), "{reason}");
    receiver
        .wait_for_event(
            "/healthy",
            event["id"].as_str().unwrap(),
            Duration::from_secs(10),
        )
        .await;
    let size = std::fs::metadata(gateway.dir().join("hookgate.redb"))
        .unwrap()
        .len();
    println!(
        "redb file after a 288 KiB header attempt: {} KiB",
        size >> 10
    );
    assert!(
        size < 4 << 20,
        "nothing of the bloat was stored: {size} bytes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_log_lines_are_escaped_and_capped_per_call() {
    let receiver = support::Receiver::ok().await;
    let (gateway, _plugins) = with_hostile_plugin("log-flood", ROOMY_TIME, &receiver).await;
    let event = gateway
        .publish("test.hostile", serde_json::json!({"n": 1}))
        .await;
    receiver
        .wait_for_event(
            "/hostile",
            event["id"].as_str().unwrap(),
            Duration::from_secs(10),
        )
        .await;
    let log = std::fs::read_to_string(gateway.dir().join("hookgate.log")).unwrap();
    let flood_lines = log.lines().filter(|line| line.contains("flood ")).count();
    println!(
        "1,000 attempted log lines of 1 KiB: {flood_lines} logged, {} KiB of log in all",
        log.len() >> 10
    );
    assert!(
        flood_lines > 0 && flood_lines <= 64,
        "{flood_lines} flood lines"
    );
    assert!(
        !log.lines()
            .any(|line| line.starts_with("2026-11-23T00:00:00Z ERROR")),
        "a plugin forged a log line"
    );
    assert!(
        !log.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
    assert!(
        log.contains("logged past its per-call budget"),
        "the drop is noted once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_event_data_is_refused_with_the_field_named() {
    let gateway = Gateway::start("").await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let body = format!(r#"{{"type":"order.paid","data":{{"x":{deep}}}}}"#);
    let answer = gateway
        .post_raw(
            "/v1/events",
            body.into_bytes(),
            &[("content-type", "application/json")],
        )
        .await;
    let message = answer.assert_error(400, "invalid_body");
    assert!(
        message.contains("`data` is nested deeper than 128 levels"),
        "{message}"
    );
    let fine = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let body = format!(r#"{{"type":"order.paid","data":{{"x":{fine}}}}}"#);
    let answer = gateway
        .post_raw(
            "/v1/events",
            body.into_bytes(),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(answer.status, 201, "{answer:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_file_over_the_size_cap_is_refused_before_it_is_read() {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(plugins.path().join("huge.wasm"), vec![0u8; 3 << 20]).unwrap();
    let gateway = Gateway::start(&format!(
        "[plugins]\ndir = '{}'\nmax_wasm_mib = 2\n",
        plugins.path().display()
    ))
    .await;
    let listed = support::poll_until(
        Duration::from_secs(20),
        "the refusal of huge.wasm",
        || gateway.get_json("/v1/plugins"),
        |list| list.json["plugins"][0]["error"].is_string(),
    )
    .await;
    let error = listed.json["plugins"][0]["error"].as_str().unwrap();
    assert!(error.contains("over the 2 MiB limit"), "{error}");
}
