//! Delivery semantics, end to end: the real `hookgate` binary delivers to a real HTTP receiver
//! on loopback, and every assertion is about what went over the wire or what the admin API
//! reports afterwards.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use support::{
    Gateway, OTHER_SECRET, Received, Receiver, Reply, SECRET, delivery_to, endpoint, is_id,
    is_rfc3339, signatures, unix_now,
};

/// How long anything that should happen promptly may take.
const WAIT: Duration = Duration::from_secs(15);

/// Quick retries without jitter, so timings are known.
const FAST_RETRIES: &str = "retry_schedule = [\"0s\", \"100ms\", \"100ms\"]\nretry_jitter = 0.0";

fn payment(status: &str) -> Value {
    json!({
        "payment_id": "0b7e7a6e-5a43-4b0e-9a57-1f1de3a1c0de",
        "status": status,
        "address": "0x8ba1f109551bd432803012645ac136ddd64dba72",
        "amount": "12.5",
        "chain": "ethereum",
        "token_id": "usdc"
    })
}

fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {value:#}"))
}

/// The single delivery id of a publish answer, checking it goes to `endpoint_id`.
fn only_delivery(event: &Value, endpoint_id: &str) -> String {
    let deliveries = event["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("no deliveries array in {event:#}"));
    assert_eq!(deliveries.len(), 1, "expected one delivery in {event:#}");
    assert_eq!(deliveries[0]["endpoint_id"], endpoint_id, "in {event:#}");
    str_field(&deliveries[0], "id").to_owned()
}

fn endpoint_ids(event: &Value) -> Vec<String> {
    let mut ids: Vec<String> = event["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("no deliveries array in {event:#}"))
        .iter()
        .map(|delivery| str_field(delivery, "endpoint_id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn signature_checks_match_the_standard_webhooks_test_vector() {
    assert_eq!(
        signatures::standard(
            OTHER_SECRET,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            "1649367553",
            br#"{"email":"test@example.com","username":"test_user"}"#,
        ),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
}

#[test]
fn timestamp_check_accepts_rfc3339_only() {
    for good in [
        "2026-11-22T10:00:00Z",
        "2026-11-22T10:00:00.123Z",
        "2026-11-22T10:00:00+01:00",
    ] {
        assert!(is_rfc3339(good), "{good}");
    }
    for bad in [
        "2026-11-22 10:00:00Z",
        "2026-11-22T10:00:00",
        "1763805600",
        "Sun, 22 Nov 2026 10:00:00 GMT",
        "2026-11-22T10:00:00.Z",
    ] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_delivery_is_signed_both_ways_with_the_event_as_body() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start(&endpoint("orders", &receiver.url("/hook"), "")).await;

    let data = payment("confirmed");
    let event = gateway.publish("payment.confirmed", data.clone()).await;
    let event_id = str_field(&event, "id");
    assert!(is_id(event_id, "evt_"), "event id {event_id}");
    assert_eq!(event["type"], "payment.confirmed");
    assert!(is_rfc3339(str_field(&event, "timestamp")), "{event:#}");
    let delivery_id = only_delivery(&event, "orders");
    assert!(is_id(&delivery_id, "dlv_"), "delivery id {delivery_id}");

    let received = receiver.wait_for_event("/hook", event_id, WAIT).await;
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("user-agent"), Some("hookgate/0.1.0"));
    assert_eq!(request.webhook_id(), Some(event_id));
    let timestamp: u64 = request
        .header("webhook-timestamp")
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("webhook-timestamp is not unix seconds: {request:#?}"));
    assert!(
        timestamp.abs_diff(unix_now()) <= 60,
        "webhook-timestamp {timestamp} is not now ({})",
        unix_now()
    );
    signatures::assert_signed_by(SECRET, request);
    assert_eq!(
        request.json(),
        json!({
            "type": "payment.confirmed",
            "timestamp": event["timestamp"],
            "id": event_id,
            "data": data,
        })
    );

    let delivery = gateway
        .wait_for_delivery_status(&delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(delivery["id"], delivery_id.as_str());
    assert_eq!(delivery["event_id"], event_id);
    assert_eq!(delivery["endpoint_id"], "orders");
    assert_eq!(delivery["attempt_count"], 1);
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    assert_eq!(delivery["last_error"], Value::Null);
    assert!(
        is_rfc3339(str_field(&delivery, "created_at")),
        "{delivery:#}"
    );
    let attempt = &delivery["attempts"][0];
    assert_eq!(attempt["number"], 1, "{delivery:#}");
    assert_eq!(attempt["status_code"], 200, "{delivery:#}");
    assert_eq!(attempt["error"], Value::Null, "{delivery:#}");
    assert!(is_rfc3339(str_field(attempt, "at")), "{delivery:#}");
    assert!(attempt["latency_ms"].is_u64(), "{delivery:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempt_is_retried_with_identical_body_bytes() {
    let receiver = Receiver::start(|call| match call.attempt {
        1 => Reply::status(500).body("x".repeat(4096)),
        _ => Reply::ok(),
    })
    .await;
    let gateway = Gateway::start(&endpoint("orders", &receiver.url("/hook"), FAST_RETRIES)).await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let delivery_id = only_delivery(&event, "orders");

    let received = receiver.wait_for_count("/hook", 2, WAIT).await;
    let (first, second) = (&received[0], &received[1]);
    assert_eq!(first.body, second.body, "a retry must send the same bytes");
    assert_eq!(first.webhook_id(), Some(str_field(&event, "id")));
    assert_eq!(first.webhook_id(), second.webhook_id());
    signatures::assert_signed_by(SECRET, first);
    signatures::assert_signed_by(SECRET, second);
    let gap = second.arrived - first.arrived;
    assert!(
        gap >= Duration::from_millis(95),
        "attempt 2 came {gap:?} after attempt 1; the schedule says 100ms"
    );

    let delivery = gateway
        .wait_for_delivery_status(&delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(delivery["attempt_count"], 2, "{delivery:#}");
    let attempts = delivery["attempts"].as_array().expect("attempts array");
    assert_eq!(attempts.len(), 2, "{delivery:#}");
    assert_eq!(attempts[0]["number"], 1);
    assert_eq!(attempts[0]["status_code"], 500);
    let snippet = str_field(&attempts[0], "response_snippet");
    assert!(
        !snippet.is_empty() && snippet.len() <= 1024 && snippet.bytes().all(|b| b == b'x'),
        "response_snippet must be at most 1024 bytes of the body, got {} bytes: {snippet:?}",
        snippet.len()
    );
    assert_eq!(attempts[1]["number"], 2);
    assert_eq!(attempts[1]["status_code"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_receiver_times_out_and_the_retry_delivers() {
    let receiver = Receiver::start(|call| match call.attempt {
        1 => Reply::ok().after(Duration::from_secs(5)),
        _ => Reply::ok(),
    })
    .await;
    let extra = format!("request_timeout = \"300ms\"\n{FAST_RETRIES}");
    let gateway = Gateway::start(&endpoint("orders", &receiver.url("/hook"), &extra)).await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let delivery_id = only_delivery(&event, "orders");

    let received = receiver.wait_for_count("/hook", 2, WAIT).await;
    let (first, second) = (&received[0], &received[1]);
    assert!(
        first
            .answered
            .is_none_or(|answered| answered > second.arrived),
        "attempt 2 must not wait for the hanging attempt 1"
    );
    let gap = second.arrived - first.arrived;
    assert!(
        gap >= Duration::from_millis(390),
        "attempt 2 came {gap:?} after attempt 1: before timeout (300ms) + delay (100ms)"
    );
    assert_eq!(first.body, second.body);

    let delivery = gateway
        .wait_for_delivery_status(&delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(delivery["attempt_count"], 2, "{delivery:#}");
    let first_attempt = &delivery["attempts"][0];
    assert_eq!(first_attempt["status_code"], Value::Null, "{delivery:#}");
    let error = str_field(first_attempt, "error").to_lowercase();
    assert!(
        error.contains("timeout") || error.contains("timed out"),
        "attempt 1's error should say it timed out: {error:?}"
    );
    assert_eq!(delivery["attempts"][1]["status_code"], 200, "{delivery:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_disables_the_endpoint_until_it_is_enabled_again() {
    let receiver = Receiver::start(|call| match (call.path.as_str(), call.nth_on_path) {
        ("/orders", 1) => Reply::status(410),
        _ => Reply::ok(),
    })
    .await;
    let config = endpoint("orders", &receiver.url("/orders"), FAST_RETRIES)
        + &endpoint("audit", &receiver.url("/audit"), FAST_RETRIES);
    let gateway = Gateway::start(&config).await;

    let first = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    assert_eq!(endpoint_ids(&first), ["audit", "orders"]);
    let gone = gateway
        .wait_for_delivery_status(&delivery_to(&first, "orders"), "dead_lettered", WAIT)
        .await;
    assert_eq!(gone["attempt_count"], 1, "410 is final: {gone:#}");
    assert_eq!(gone["attempts"][0]["status_code"], 410, "{gone:#}");
    assert!(gone["last_error"].is_string(), "{gone:#}");
    assert_eq!(gone["next_attempt_at"], Value::Null, "{gone:#}");

    let orders = gateway.get_json("/v1/endpoints/orders").await;
    assert_eq!(orders.status, 200, "{orders:#?}");
    assert_eq!(orders.json["enabled"], false, "{orders:#?}");
    let reason = str_field(&orders.json, "disabled_reason");
    assert!(reason.contains("410"), "disabled_reason {reason:?}");

    let second = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    assert_eq!(
        endpoint_ids(&second),
        ["audit"],
        "a disabled endpoint gets no new deliveries"
    );
    receiver
        .wait_for_event("/audit", str_field(&second, "id"), WAIT)
        .await;
    assert_eq!(receiver.requests_on("/orders").len(), 1);

    let enabled = gateway
        .post_json("/v1/endpoints/orders/enable", &json!({}))
        .await;
    assert_eq!(enabled.status, 200, "{enabled:#?}");
    assert_eq!(enabled.json["id"], "orders");
    assert_eq!(enabled.json["enabled"], true, "{enabled:#?}");
    assert_eq!(enabled.json["disabled_reason"], Value::Null, "{enabled:#?}");

    let third = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    assert_eq!(endpoint_ids(&third), ["audit", "orders"]);
    receiver
        .wait_for_event("/orders", str_field(&third, "id"), WAIT)
        .await;
    gateway
        .wait_for_delivery_status(&delivery_to(&third, "orders"), "delivered", WAIT)
        .await;
}

/// Publishes one event to an endpoint whose second attempt is scheduled 60 s out, answers its
/// first attempt with 503 and `retry_after`, and returns the gap between the two attempts and
/// the two requests.
async fn gap_after_retry_after(
    delivery_section: &str,
    retry_after: String,
) -> (Duration, [Received; 2]) {
    let receiver = Receiver::start(move |call| match call.attempt {
        1 => Reply::status(503).header("retry-after", &retry_after),
        _ => Reply::ok(),
    })
    .await;
    let extra = "retry_schedule = [\"0s\", \"60s\"]\nretry_jitter = 0.0";
    let config = format!(
        "{delivery_section}\n{}",
        endpoint("orders", &receiver.url("/hook"), extra)
    );
    let gateway = Gateway::start(&config).await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let delivery_id = only_delivery(&event, "orders");
    let received = receiver
        .wait_for_count("/hook", 2, Duration::from_secs(30))
        .await;
    let delivery = gateway
        .wait_for_delivery_status(&delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(delivery["attempts"][0]["status_code"], 503, "{delivery:#}");
    assert_eq!(received[0].body, received[1].body);
    let gap = received[1].arrived - received[0].arrived;
    (gap, [received[0].clone(), received[1].clone()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_seconds_replaces_the_scheduled_delay() {
    let (gap, _) = gap_after_retry_after("", "1".to_owned()).await;
    assert!(
        (Duration::from_millis(950)..Duration::from_secs(30)).contains(&gap),
        "Retry-After: 1 should put attempt 2 about 1s after attempt 1 (schedule: 60s), got {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_http_date_replaces_the_scheduled_delay() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let (gap, [first, second]) = gap_after_retry_after("", at.clone()).await;
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(30)).contains(&gap),
        "Retry-After: {at} (2-3s ahead) should put attempt 2 about 2-3s after attempt 1 \
         (schedule: 60s), got {gap:?}"
    );
    // Seconds apart, each attempt carries its own timestamp and a signature over it.
    let timestamp = |request: &Received| -> u64 {
        request
            .header("webhook-timestamp")
            .and_then(|text| text.parse().ok())
            .expect("webhook-timestamp in unix seconds")
    };
    assert!(
        timestamp(&second) > timestamp(&first),
        "webhook-timestamp is the time of each attempt: {} then {}",
        timestamp(&first),
        timestamp(&second)
    );
    signatures::assert_signed_by(SECRET, &first);
    signatures::assert_signed_by(SECRET, &second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_clamped_to_max_retry_after() {
    let (gap, _) =
        gap_after_retry_after("[delivery]\nmax_retry_after = \"1s\"\n", "3600".to_owned()).await;
    assert!(
        (Duration::from_millis(950)..Duration::from_secs(30)).contains(&gap),
        "Retry-After: 3600 clamped to max_retry_after = 1s should put attempt 2 about 1s \
         after attempt 1, got {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_delivery_is_dead_lettered_and_replay_sends_the_same_bytes() {
    let receiver = Receiver::start(|call| match call.attempt {
        1..=3 => Reply::status(500).body("still broken"),
        _ => Reply::ok(),
    })
    .await;
    let gateway = Gateway::start(&endpoint("orders", &receiver.url("/hook"), FAST_RETRIES)).await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let delivery_id = only_delivery(&event, "orders");
    let dead = gateway
        .wait_for_delivery_status(&delivery_id, "dead_lettered", WAIT)
        .await;
    assert_eq!(dead["attempt_count"], 3, "{dead:#}");
    assert_eq!(dead["next_attempt_at"], Value::Null, "{dead:#}");
    let last_error = str_field(&dead, "last_error");
    assert!(!last_error.is_empty(), "{dead:#}");
    let attempts = dead["attempts"].as_array().expect("attempts array");
    assert_eq!(attempts.len(), 3, "{dead:#}");
    for (index, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["number"], index + 1, "{dead:#}");
        assert_eq!(attempt["status_code"], 500, "{dead:#}");
    }
    assert_eq!(receiver.requests_on("/hook").len(), 3);

    let replay_path = format!("/v1/deliveries/{delivery_id}/replay");
    let replay = gateway.post_json(&replay_path, &json!({})).await;
    assert_eq!(replay.status, 202, "{replay:#?}");
    assert_eq!(
        replay.json,
        json!({"id": delivery_id.as_str(), "status": "pending"})
    );
    let received = receiver.wait_for_count("/hook", 4, WAIT).await;
    assert_eq!(
        received[3].body, received[0].body,
        "replay sends the same bytes"
    );
    assert_eq!(received[3].webhook_id(), received[0].webhook_id());
    signatures::assert_signed_by(SECRET, &received[3]);
    let delivered = gateway
        .wait_for_delivery_status(&delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(delivered["attempt_count"], 4, "{delivered:#}");
    assert_eq!(
        delivered["attempts"][3]["status_code"], 200,
        "{delivered:#}"
    );

    let again = gateway.post_json(&replay_path, &json!({})).await;
    assert_eq!(
        again.status, 202,
        "a delivered delivery can be replayed: {again:#?}"
    );
    let received = receiver.wait_for_count("/hook", 5, WAIT).await;
    assert_eq!(received[4].body, received[0].body);
    assert_eq!(received[4].webhook_id(), received[0].webhook_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_pending_delivery_conflicts() {
    let receiver = Receiver::start(|_| Reply::status(500)).await;
    let extra = "retry_schedule = [\"0s\", \"60s\"]\nretry_jitter = 0.0";
    let gateway = Gateway::start(&endpoint("orders", &receiver.url("/hook"), extra)).await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let delivery_id = only_delivery(&event, "orders");
    let waiting = support::poll_until(
        WAIT,
        "attempt 1 to be recorded",
        || gateway.delivery(&delivery_id),
        |delivery| delivery["attempt_count"] == 1,
    )
    .await;
    assert_eq!(waiting["status"], "pending", "{waiting:#}");
    assert!(
        is_rfc3339(str_field(&waiting, "next_attempt_at")),
        "{waiting:#}"
    );

    let replay = gateway
        .post_json(&format!("/v1/deliveries/{delivery_id}/replay"), &json!({}))
        .await;
    replay.assert_error(409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_signs_with_both_secrets_until_the_old_one_expires() {
    let receiver = Receiver::ok().await;
    let rotating = format!(
        "previous_secret = \"{OTHER_SECRET}\"\nprevious_secret_expires_at = \"2099-01-01T00:00:00Z\""
    );
    let rotated = format!(
        "previous_secret = \"{OTHER_SECRET}\"\nprevious_secret_expires_at = \"2000-01-01T00:00:00Z\""
    );
    let config = endpoint("rotating", &receiver.url("/rotating"), &rotating)
        + &endpoint("rotated", &receiver.url("/rotated"), &rotated);
    let gateway = Gateway::start(&config).await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let event_id = str_field(&event, "id");

    let during = &receiver.wait_for_event("/rotating", event_id, WAIT).await[0];
    assert_eq!(
        signatures::standard_entries(during),
        [
            signatures::expected_standard(SECRET, during),
            signatures::expected_standard(OTHER_SECRET, during),
        ],
        "webhook-signature should be `v1,<current> v1,<previous>`"
    );
    assert_eq!(
        during.header("x-webhook-signature"),
        Some(signatures::legacy(SECRET, &during.body).as_str())
    );
    assert_eq!(
        during.header("x-webhook-signature-previous"),
        Some(signatures::legacy(OTHER_SECRET, &during.body).as_str())
    );

    let after = &receiver.wait_for_event("/rotated", event_id, WAIT).await[0];
    signatures::assert_signed_by(SECRET, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_only_the_endpoints_subscribed_to_their_type() {
    let receiver = Receiver::ok().await;
    let config = endpoint(
        "confirmed",
        &receiver.url("/confirmed"),
        "event_types = [\"payment.confirmed\"]",
    ) + &endpoint(
        "expired",
        &receiver.url("/expired"),
        "event_types = [\"payment.expired\"]",
    ) + &endpoint("everything", &receiver.url("/everything"), "");
    let gateway = Gateway::start(&config).await;

    let confirmed = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let expired = gateway.publish("payment.expired", payment("expired")).await;
    let created = gateway.publish("payment.created", payment("pending")).await;
    assert_eq!(endpoint_ids(&confirmed), ["confirmed", "everything"]);
    assert_eq!(endpoint_ids(&expired), ["everything", "expired"]);
    assert_eq!(endpoint_ids(&created), ["everything"]);

    for event in [&confirmed, &expired, &created] {
        receiver
            .wait_for_event("/everything", str_field(event, "id"), WAIT)
            .await;
    }
    receiver
        .wait_for_event("/confirmed", str_field(&confirmed, "id"), WAIT)
        .await;
    receiver
        .wait_for_event("/expired", str_field(&expired, "id"), WAIT)
        .await;
    for (path, event) in [("/confirmed", &confirmed), ("/expired", &expired)] {
        for request in receiver.requests_on(path) {
            assert_eq!(
                request.webhook_id(),
                Some(str_field(event, "id")),
                "{path} got an event of another type: {}",
                String::from_utf8_lossy(&request.body)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_endpoints_do_not_starve_the_others() {
    const EVENTS: usize = 20;
    const HANG: Duration = Duration::from_secs(30);
    let receiver = Receiver::start(|call| match call.path.as_str() {
        "/fast" => Reply::ok(),
        _ => Reply::ok().after(HANG),
    })
    .await;
    // `slow` sets its own limit; `slow-default` takes the [delivery] default.
    let config = format!(
        "[delivery]\nconcurrency = 3\nrequest_timeout = \"60s\"\n\n{}{}{}",
        endpoint("slow", &receiver.url("/slow"), "concurrency = 2"),
        endpoint("slow-default", &receiver.url("/slow-default"), ""),
        endpoint("fast", &receiver.url("/fast"), ""),
    );
    let gateway = Gateway::start(&config).await;

    let events: Vec<(&str, Value)> = (0..EVENTS)
        .map(|seq| ("payment.confirmed", json!({"seq": seq})))
        .collect();
    let published = gateway.publish_batch(&events).await;
    let mut expected: Vec<String> = published
        .iter()
        .map(|event| str_field(event, "id").to_owned())
        .collect();
    expected.sort();

    // Every event reaches the fast endpoint while the slow ones still hold their first requests.
    receiver
        .wait_for(
            Duration::from_secs(10),
            "every event on /fast",
            |requests| {
                let mut seen: Vec<String> = requests
                    .iter()
                    .filter(|request| request.path == "/fast")
                    .filter_map(|request| request.webhook_id().map(str::to_owned))
                    .collect();
                seen.sort();
                seen.dedup();
                (seen == expected).then_some(())
            },
        )
        .await;
    for (path, limit) in [("/slow", 2), ("/slow-default", 3)] {
        let slow = receiver.wait_for_count(path, limit, WAIT).await;
        assert!(
            slow.iter().all(|request| request.answered.is_none()),
            "the slow receiver answered early; the test proves nothing"
        );
        assert_eq!(
            receiver.max_in_flight(path),
            limit,
            "{path}: the endpoint's concurrency limit is {limit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_snippet_is_at_most_1024_bytes_of_the_body() {
    let body = "é".repeat(1000);
    let answer = body.clone();
    let receiver = Receiver::start(move |_| Reply::status(500).body(answer.clone())).await;
    let gateway = Gateway::start(&endpoint(
        "orders",
        &receiver.url("/hook"),
        "retry_schedule = [\"0s\"]",
    ))
    .await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let dead = gateway
        .wait_for_delivery_status(&only_delivery(&event, "orders"), "dead_lettered", WAIT)
        .await;
    let snippet = str_field(&dead["attempts"][0], "response_snippet");
    assert!(
        !snippet.is_empty() && snippet.len() <= 1024 && body.starts_with(snippet),
        "response_snippet must be a prefix of the body of at most 1024 bytes; got {} bytes",
        snippet.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_client_errors_are_retried() {
    let receiver = Receiver::start(|call| match (call.path.as_str(), call.attempt) {
        ("/hook", 1) => Reply::status(302).header("location", "/elsewhere"),
        ("/hook", 2) => Reply::status(400).body("bad request"),
        _ => Reply::ok(),
    })
    .await;
    let extra = "retry_schedule = [\"0s\", \"100ms\", \"100ms\", \"100ms\"]\nretry_jitter = 0.0";
    let gateway = Gateway::start(&endpoint("orders", &receiver.url("/hook"), extra)).await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let delivery_id = only_delivery(&event, "orders");
    let delivery = gateway
        .wait_for_delivery_status(&delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(delivery["attempt_count"], 3, "{delivery:#}");
    let codes: Vec<&Value> = delivery["attempts"]
        .as_array()
        .expect("attempts array")
        .iter()
        .map(|attempt| &attempt["status_code"])
        .collect();
    assert_eq!(
        codes,
        [&json!(302), &json!(400), &json!(200)],
        "{delivery:#}"
    );
    assert_eq!(receiver.requests_on("/hook").len(), 3);
    assert!(
        receiver.requests_on("/elsewhere").is_empty(),
        "a signed webhook must not follow a redirect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_records_connect_errors_and_is_dead_lettered() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        listener.local_addr().expect("its address").port()
    };
    let gateway = Gateway::start(&endpoint(
        "gone",
        &format!("http://127.0.0.1:{closed_port}/hook"),
        "retry_schedule = [\"0s\", \"100ms\"]\nretry_jitter = 0.0",
    ))
    .await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let delivery_id = only_delivery(&event, "gone");
    let dead = gateway
        .wait_for_delivery_status(&delivery_id, "dead_lettered", WAIT)
        .await;
    assert_eq!(dead["attempt_count"], 2, "{dead:#}");
    assert!(!str_field(&dead, "last_error").is_empty(), "{dead:#}");
    for attempt in dead["attempts"].as_array().expect("attempts array") {
        assert_eq!(attempt["status_code"], Value::Null, "{dead:#}");
        assert!(!str_field(attempt, "error").is_empty(), "{dead:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_defaults_apply_to_endpoints_without_overrides() {
    let receiver = Receiver::start(|_| Reply::status(503)).await;
    let config = format!(
        "[delivery]\nretry_schedule = [\"0s\", \"100ms\"]\nretry_jitter = 0.0\n\n{}",
        endpoint("orders", &receiver.url("/hook"), "")
    );
    let gateway = Gateway::start(&config).await;

    let event = gateway
        .publish("payment.confirmed", payment("confirmed"))
        .await;
    let dead = gateway
        .wait_for_delivery_status(&only_delivery(&event, "orders"), "dead_lettered", WAIT)
        .await;
    assert_eq!(
        dead["attempt_count"], 2,
        "the [delivery] schedule has 2 attempts: {dead:#}"
    );
    assert_eq!(receiver.requests_on("/hook").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_is_delivered_byte_for_byte() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start(&endpoint("orders", &receiver.url("/hook"), "")).await;

    // Token amounts in base units overflow every float; a decimal's trailing zero and an
    // escaped character are the publisher's to keep too.
    let data = r#"{"amount_raw":123456789012345678901234567890,"amount":12.50,"memo":"caf\u00e9"}"#;
    let body = format!(r#"{{"type":"payment.confirmed","data":{data}}}"#);
    let answer = gateway.post_raw("/v1/events", body, &[]).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let event_id = str_field(&answer.json, "id");

    let received = receiver.wait_for_event("/hook", event_id, WAIT).await;
    let delivered = String::from_utf8(received[0].body.to_vec()).expect("a UTF-8 body");
    assert!(
        delivered.ends_with(&format!(r#","data":{data}}}"#)),
        "the data should arrive exactly as published: {delivered}"
    );
    signatures::assert_signed_by(SECRET, &received[0]);
}
