//! The admin API of the real `hookgate` binary, over loopback HTTP: authentication, validation,
//! idempotency, batches, endpoint listing, the original service's environment variables and
//! the OpenAPI document (every route in it served, with the documented authentication).

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    ADMIN_TOKEN, ApiResponse, Gateway, OTHER_SECRET, Receiver, Reply, SECRET, endpoint, is_id,
    is_rfc3339, signatures,
};

const WAIT: Duration = Duration::from_secs(15);

fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {value:#}"))
}

/// A 400 in the error shape, whatever its code; returns the message.
fn assert_bad_request(answer: &ApiResponse) -> String {
    assert_eq!(answer.status, 400, "expected 400, got {answer:#?}");
    assert!(
        answer.json["error"]["code"].is_string(),
        "no error code: {answer:#?}"
    );
    let message = answer.json["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.trim().is_empty(), "no error message: {answer:#?}");
    message.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_are_open_and_every_v1_route_needs_the_bearer_token() {
    let gateway = Gateway::start("").await;
    let client = gateway.raw_client();

    let health = gateway.send(client.get(gateway.url("/healthz"))).await;
    assert_eq!(health.status, 200, "{health:#?}");
    assert_eq!(health.json, json!({"status": "ok"}));
    let ready = gateway.send(client.get(gateway.url("/readyz"))).await;
    assert_eq!(ready.status, 200, "{ready:#?}");
    assert_eq!(ready.json["status"], "ready", "{ready:#?}");
    assert_eq!(ready.json["store"]["ok"], true, "{ready:#?}");
    assert_eq!(ready.json["writer"]["ok"], true, "{ready:#?}");

    let unknown = "dlv_00000000000000000000000000000000";
    let event = json!({"type": "payment.confirmed", "data": {"a": 1}});
    let routes = [
        ("GET", "/v1/endpoints".to_owned()),
        ("GET", "/v1/endpoints/orders".to_owned()),
        ("POST", "/v1/endpoints/orders/enable".to_owned()),
        ("POST", "/v1/events".to_owned()),
        ("POST", "/v1/events/batch".to_owned()),
        ("GET", format!("/v1/deliveries/{unknown}")),
        ("POST", format!("/v1/deliveries/{unknown}/replay")),
        ("POST", format!("/v1/deliveries/{unknown}/retry")),
        ("GET", "/v1/deliveries".to_owned()),
        ("GET", "/v1/events".to_owned()),
        (
            "GET",
            "/v1/events/evt_00000000000000000000000000000000".to_owned(),
        ),
        ("POST", "/v1/endpoints/orders/recover".to_owned()),
        (
            "POST",
            "/v1/events/evt_00000000000000000000000000000000/resend".to_owned(),
        ),
    ];
    let prefix = format!("Bearer {}", &ADMIN_TOKEN[..8]);
    let longer = format!("Bearer {ADMIN_TOKEN}-and-more");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ADMIN_TOKEN)
    );
    let wrong = [
        None,
        Some("Bearer wrong-token"),
        Some(prefix.as_str()),
        Some(longer.as_str()),
        Some(ADMIN_TOKEN),
        Some(basic.as_str()),
    ];
    for (method, path) in &routes {
        for authorization in wrong {
            let mut request = match *method {
                "GET" => client.get(gateway.url(path)),
                _ => client
                    .post(gateway.url(path))
                    .header("content-type", "application/json")
                    .body(event.to_string()),
            };
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let answer = gateway.send(request).await;
            assert_eq!(
                answer.status, 401,
                "{method} {path} with Authorization {authorization:?}: {answer:#?}"
            );
            answer.assert_error(401, "unauthorized");
        }
    }

    let with_token = gateway
        .send(
            client
                .get(gateway.url("/v1/endpoints"))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}")),
        )
        .await;
    assert_eq!(with_token.status, 200, "{with_token:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_rejected_with_a_message_and_not_delivered() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start(&endpoint("all", &receiver.url("/hook"), "")).await;

    let bodies = [
        ("truncated JSON", r#"{"type":"payment.confirmed","data":{"#),
        ("not JSON", "payment.confirmed"),
        ("empty body", ""),
        ("missing type", r#"{"data":{"payment_id":"p1"}}"#),
        (
            "type not a string",
            r#"{"type":5,"data":{"payment_id":"p1"}}"#,
        ),
        (
            "data an array",
            r#"{"type":"payment.confirmed","data":[1,2]}"#,
        ),
        (
            "data a string",
            r#"{"type":"payment.confirmed","data":"p1"}"#,
        ),
        ("data null", r#"{"type":"payment.confirmed","data":null}"#),
        (
            "a JSON array",
            r#"[{"type":"payment.confirmed","data":{}}]"#,
        ),
    ];
    for (what, body) in bodies {
        let answer = gateway.post_raw("/v1/events", body, &[]).await;
        assert_eq!(answer.status, 400, "{what}: {answer:#?}");
        answer.assert_error(400, "invalid_body");
    }

    let empty = gateway
        .post_json("/v1/events/batch", &json!({"events": []}))
        .await;
    assert_bad_request(&empty);
    let no_events = gateway.post_json("/v1/events/batch", &json!({})).await;
    assert_bad_request(&no_events);

    let good = gateway
        .publish("payment.confirmed", json!({"payment_id": "p1"}))
        .await;
    receiver
        .wait_for_event("/hook", str_field(&good, "id"), WAIT)
        .await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "only the valid event may be delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_hold_1_to_1000_events() {
    let gateway = Gateway::start("").await;
    let event = json!({"type": "payment.created", "data": {"n": 1}});

    let full = gateway
        .post_json(
            "/v1/events/batch",
            &json!({"events": vec![event.clone(); 1000]}),
        )
        .await;
    assert_eq!(full.status, 201, "1000 events are allowed: {}", full.text);
    assert_eq!(full.json["events"].as_array().map(Vec::len), Some(1000));

    let too_many = gateway
        .post_json("/v1/events/batch", &json!({"events": vec![event; 1001]}))
        .await;
    assert_bad_request(&too_many);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_delivery_ids_are_not_found() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start(&endpoint("all", &receiver.url("/hook"), "")).await;
    let event = gateway
        .publish("payment.confirmed", json!({"payment_id": "p1"}))
        .await;
    let event_id = str_field(&event, "id");

    for id in [
        "dlv_00000000000000000000000000000000",
        "dlv_zz",
        "not-an-id",
        event_id,
    ] {
        gateway
            .get_json(&format!("/v1/deliveries/{id}"))
            .await
            .assert_error(404, "not_found");
        gateway
            .post_json(&format!("/v1/deliveries/{id}/replay"), &json!({}))
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_first_answer() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start(&endpoint("all", &receiver.url("/hook"), "")).await;
    let event = json!({"type": "payment.confirmed", "data": {"payment_id": "p-idem"}});
    let key = [("idempotency-key", "order-42-confirmed")];

    let first = gateway.post_json_with("/v1/events", &event, &key).await;
    assert_eq!(first.status, 201, "{first:#?}");
    assert_ne!(first.header("idempotent-replayed"), Some("true"));
    let again = gateway.post_json_with("/v1/events", &event, &key).await;
    assert_eq!(again.status, 200, "{again:#?}");
    assert_eq!(
        again.header("idempotent-replayed"),
        Some("true"),
        "{again:#?}"
    );
    assert_eq!(again.json, first.json, "a replay answers with the same ids");

    let event_id = str_field(&first.json, "id");
    let received = receiver.wait_for_event("/hook", event_id, WAIT).await;
    assert_eq!(received.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_reused_with_another_body_conflicts() {
    let gateway = Gateway::start("").await;
    let key = [("idempotency-key", "order-43-confirmed")];
    let original = json!({"type": "payment.confirmed", "data": {"payment_id": "p1"}});

    let first = gateway.post_json_with("/v1/events", &original, &key).await;
    assert_eq!(first.status, 201, "{first:#?}");
    for changed in [
        json!({"type": "payment.confirmed", "data": {"payment_id": "p2"}}),
        json!({"type": "payment.expired", "data": {"payment_id": "p1"}}),
    ] {
        gateway
            .post_json_with("/v1/events", &changed, &key)
            .await
            .assert_error(409, "idempotency_conflict");
    }
    let replay = gateway.post_json_with("/v1/events", &original, &key).await;
    assert_eq!(replay.status, 200, "{replay:#?}");
    assert_eq!(replay.json, first.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_a_key_creates_a_new_event_each_time() {
    let gateway = Gateway::start("").await;
    let first = gateway
        .publish("payment.confirmed", json!({"payment_id": "p1"}))
        .await;
    let second = gateway
        .publish("payment.confirmed", json!({"payment_id": "p1"}))
        .await;
    assert_ne!(first["id"], second["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_publish_answers_each_event_in_order() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start(&endpoint("all", &receiver.url("/hook"), "")).await;
    let types = [
        "payment.created",
        "payment.detected",
        "payment.confirmed",
        "payment.expired",
        "payment.confirmed",
    ];
    let events: Vec<(&str, Value)> = types
        .iter()
        .enumerate()
        .map(|(seq, event_type)| (*event_type, json!({"seq": seq})))
        .collect();

    let published = gateway.publish_batch(&events).await;
    assert_eq!(published.len(), types.len());
    let mut ids: Vec<&str> = Vec::new();
    for (seq, event) in published.iter().enumerate() {
        assert_eq!(event["type"], types[seq], "event {seq}: {event:#}");
        let id = str_field(event, "id");
        assert!(is_id(id, "evt_"), "event {seq}: {event:#}");
        assert!(
            is_rfc3339(str_field(event, "timestamp")),
            "event {seq}: {event:#}"
        );
        let deliveries = event["deliveries"].as_array().expect("deliveries array");
        assert_eq!(deliveries.len(), 1, "event {seq}: {event:#}");
        assert_eq!(deliveries[0]["endpoint_id"], "all");
        assert!(is_id(str_field(&deliveries[0], "id"), "dlv_"));
        ids.push(id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "event ids repeat: {ids:?}");

    for (seq, id) in ids.iter().enumerate() {
        let body = receiver.wait_for_event("/hook", id, WAIT).await[0].json();
        assert_eq!(
            body["data"],
            json!({"seq": seq}),
            "event {id} carries another's data"
        );
        assert_eq!(body["type"], types[seq]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_listed_without_their_secrets_or_query_values() {
    let rotation = format!(
        "event_types = [\"payment.confirmed\"]\nprevious_secret = \"{OTHER_SECRET}\"\n\
         previous_secret_expires_at = \"2099-01-01T00:00:00Z\""
    );
    let config = endpoint("orders", "http://127.0.0.1:9/orders", &rotation)
        + &endpoint("audit", "http://127.0.0.1:9/audit?token=tk-8271&v=2", "");
    let gateway = Gateway::start(&config).await;

    let list = gateway.get_json("/v1/endpoints").await;
    assert!(!list.text.contains("tk-8271"), "{}", list.text);
    let orders = gateway.get_json("/v1/endpoints/orders").await;
    for answer in [&list, &orders] {
        assert_eq!(answer.status, 200, "{answer:#?}");
        for secret in [SECRET, OTHER_SECRET] {
            let key = secret.trim_start_matches("whsec_");
            assert!(
                !answer.text.contains(key),
                "an endpoint answer contains a secret: {}",
                answer.text
            );
        }
    }

    let endpoints = list.json["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoints array: {list:#?}"));
    assert_eq!(endpoints.len(), 2, "{list:#?}");
    let listed = endpoints
        .iter()
        .find(|endpoint| endpoint["id"] == "orders")
        .unwrap_or_else(|| panic!("orders is not listed: {list:#?}"));
    for shown in [listed, &orders.json] {
        assert_eq!(shown["id"], "orders");
        assert_eq!(shown["url"], "http://127.0.0.1:9/orders");
        assert_eq!(shown["enabled"], true);
        assert_eq!(shown["disabled_reason"], Value::Null);
        assert_eq!(shown["event_types"], json!(["payment.confirmed"]));
    }
    let audit = endpoints
        .iter()
        .find(|endpoint| endpoint["id"] == "audit")
        .unwrap_or_else(|| panic!("audit is not listed: {list:#?}"));
    assert_eq!(audit["event_types"], json!(["*"]));
    assert_eq!(
        audit["url"], "http://127.0.0.1:9/audit?token=redacted&v=redacted",
        "query values often carry tokens: only their names are shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_url_and_secret_variables_define_the_default_endpoint() {
    const LEGACY_SECRET: &str = "legacy-shared-secret";
    let receiver = Receiver::ok().await;
    let url = receiver.url("/legacy");
    let gateway = Gateway::start_with_env(
        "",
        &[("WEBHOOK_URL", &url), ("WEBHOOK_SECRET", LEGACY_SECRET)],
    )
    .await;

    let list = gateway.get_json("/v1/endpoints").await;
    assert_eq!(list.status, 200, "{list:#?}");
    assert!(!list.text.contains(LEGACY_SECRET), "{}", list.text);
    let endpoints = list.json["endpoints"].as_array().expect("endpoints array");
    assert_eq!(endpoints.len(), 1, "{list:#?}");
    assert_eq!(endpoints[0]["id"], "default");
    assert_eq!(endpoints[0]["url"], url.as_str());
    assert_eq!(endpoints[0]["enabled"], true);
    assert_eq!(endpoints[0]["event_types"], json!(["*"]));

    for event_type in ["payment.confirmed", "payment.expired"] {
        let event = gateway
            .publish(event_type, json!({"payment_id": "p-legacy"}))
            .await;
        let deliveries = event["deliveries"].as_array().expect("deliveries array");
        assert_eq!(deliveries.len(), 1, "{event:#}");
        assert_eq!(deliveries[0]["endpoint_id"], "default");
        let request = &receiver
            .wait_for_event("/legacy", str_field(&event, "id"), WAIT)
            .await[0];
        signatures::assert_signed_by(LEGACY_SECRET, request);
        assert_eq!(request.json()["type"], event_type);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_listen_address_token_and_store_path() {
    const ENV_TOKEN: &str = "token-from-the-environment-0123";
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        listener.local_addr().expect("its address").port()
    };
    let elsewhere = tempfile::tempdir().expect("a temporary directory");
    let store = elsewhere.path().join("from-env.redb");
    let gateway = Gateway::start_with_env(
        "",
        &[
            ("HOOKGATE_LISTEN", &format!("127.0.0.1:{port}")),
            ("HOOKGATE_ADMIN_TOKEN", ENV_TOKEN),
            ("HOOKGATE_DB", store.to_str().expect("a UTF-8 path")),
        ],
    )
    .await;

    assert_eq!(gateway.address().port(), port, "HOOKGATE_LISTEN");
    assert!(
        store.exists(),
        "HOOKGATE_DB: no redb file at {}",
        store.display()
    );
    assert!(
        !gateway.dir().join("hookgate.redb").exists(),
        "the config file's store path was used despite HOOKGATE_DB"
    );
    let client = gateway.raw_client();
    let with_file_token = gateway
        .send(
            client
                .get(gateway.url("/v1/endpoints"))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
    with_file_token.assert_error(401, "unauthorized");
    let with_env_token = gateway
        .send(
            client
                .get(gateway.url("/v1/endpoints"))
                .bearer_auth(ENV_TOKEN),
        )
        .await;
    assert_eq!(with_env_token.status, 200, "{with_env_token:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_listed_newest_first_with_filters_and_cursor_pages() {
    let receiver = Receiver::start(|call| match call.path.as_str() {
        "/broken" => Reply::status(500),
        _ => Reply::ok(),
    })
    .await;
    let gateway = Gateway::start(
        &(endpoint("shop", &receiver.url("/shop"), "")
            + &endpoint(
                "broken",
                &receiver.url("/broken"),
                "retry_schedule = [\"0s\"]",
            )),
    )
    .await;
    let mut broken = Vec::new();
    for n in 0..3 {
        let event = gateway.publish("payment.confirmed", json!({"n": n})).await;
        broken.push(support::delivery_to(&event, "broken"));
    }
    for id in &broken {
        gateway
            .wait_for_delivery_status(id, "dead_lettered", WAIT)
            .await;
    }

    let all = gateway.get_json("/v1/deliveries").await;
    assert_eq!(all.status, 200, "{all:#?}");
    assert_eq!(
        all.json["deliveries"].as_array().unwrap().len(),
        6,
        "{all:#?}"
    );
    assert_eq!(all.json["next_cursor"], Value::Null);

    let dead = gateway
        .get_json("/v1/deliveries?status=dead_lettered&endpoint_id=broken")
        .await;
    let ids: Vec<&str> = dead.json["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|delivery| delivery["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = broken.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first, "{dead:#?}");
    assert!(dead.json["deliveries"][0].get("attempts").is_none());

    // Pages of two, following the cursor, give the same three.
    let first = gateway
        .get_json("/v1/deliveries?endpoint_id=broken&limit=2")
        .await;
    assert_eq!(first.json["deliveries"].as_array().unwrap().len(), 2);
    let cursor = first.json["next_cursor"].as_str().unwrap();
    let second = gateway
        .get_json(&format!(
            "/v1/deliveries?endpoint_id=broken&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(
        second.json["deliveries"][0]["id"],
        broken[0].as_str(),
        "{second:#?}"
    );

    // The same outcomes, counted in the Prometheus page (open by default).
    let client = gateway.raw_client();
    let page = support::poll_until(
        WAIT,
        "every attempt to be counted",
        || async {
            let answer = gateway.send(client.get(gateway.url("/metrics"))).await;
            answer.text
        },
        |text| {
            text.contains(
                "hookgate_delivery_attempts_total{endpoint=\"broken\",outcome=\"dead_lettered\"} 3",
            ) && text.contains(
                "hookgate_delivery_attempts_total{endpoint=\"shop\",outcome=\"delivered\"} 3",
            )
        },
    )
    .await;
    for family in [
        "hookgate_delivery_attempt_seconds_bucket{",
        "hookgate_store_commit_seconds_count ",
        "hookgate_store_commit_batch_commands_bucket{",
    ] {
        assert!(page.contains(family), "{family} missing:\n{page}");
    }

    gateway
        .get_json("/v1/deliveries?status=lost")
        .await
        .assert_error(400, "invalid_body");
    let message = gateway
        .get_json("/v1/deliveries?limit=many")
        .await
        .assert_error(400, "invalid_body");
    assert!(message.contains("limit"), "{message}");
    let message = gateway
        .get_json("/v1/deliveries?cursor=evt_00000000000000000000000000000000")
        .await
        .assert_error(400, "invalid_body");
    assert!(message.starts_with("cursor: "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_can_be_put_behind_the_token() {
    let gateway = Gateway::start_with_server("probes_need_token = true", "").await;
    let client = gateway.raw_client();
    for path in ["/readyz", "/metrics"] {
        gateway
            .send(client.get(gateway.url(path)))
            .await
            .assert_error(401, "unauthorized");
        let with_token = gateway
            .send(client.get(gateway.url(path)).bearer_auth(ADMIN_TOKEN))
            .await;
        assert_eq!(with_token.status, 200, "{path}: {with_token:#?}");
    }
    let health = gateway.send(client.get(gateway.url("/healthz"))).await;
    assert_eq!(health.status, 200, "liveness stays open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_dead_letters_are_recovered_in_bulk_once_it_is_fixed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let broken = Arc::new(AtomicBool::new(true));
    let flag = broken.clone();
    let receiver = Receiver::start(move |_| {
        if flag.load(Ordering::Acquire) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let gateway = Gateway::start(&endpoint(
        "shop",
        &receiver.url("/hook"),
        "retry_schedule = [\"0s\"]",
    ))
    .await;
    let mut ids = Vec::new();
    let mut since = String::new();
    for n in 0..5 {
        if n == 2 {
            // Dead letters from here on are "since" this instant.
            since = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let event = gateway.publish("payment.confirmed", json!({"n": n})).await;
        let id = support::delivery_to(&event, "shop");
        gateway
            .wait_for_delivery_status(&id, "dead_lettered", WAIT)
            .await;
        ids.push((id, event["id"].as_str().unwrap().to_owned()));
    }
    broken.store(false, Ordering::Release);

    let recent = gateway
        .post_json("/v1/endpoints/shop/recover", &json!({"since": since}))
        .await;
    assert_eq!(recent.status, 200, "{recent:#?}");
    assert_eq!(recent.json["scheduled"], 3, "{recent:#?}");
    assert_eq!(recent.json["more"], false);
    for (id, event) in &ids[2..] {
        gateway
            .wait_for_delivery_status(id, "delivered", WAIT)
            .await;
        receiver.wait_for_event("/hook", event, WAIT).await;
    }
    for (id, _) in &ids[..2] {
        assert_eq!(gateway.delivery(id).await["status"], "dead_lettered");
    }
    let rest = gateway
        .post_json("/v1/endpoints/shop/recover", &json!({}))
        .await;
    assert_eq!(rest.json["scheduled"], 2, "{rest:#?}");
    for (id, _) in &ids[..2] {
        gateway
            .wait_for_delivery_status(id, "delivered", WAIT)
            .await;
    }

    gateway
        .post_json("/v1/endpoints/nope/recover", &json!({}))
        .await
        .assert_error(404, "not_found");
    let message = gateway
        .post_json("/v1/endpoints/shop/recover", &json!({"since": "yesterday"}))
        .await
        .assert_error(400, "invalid_body");
    assert!(message.starts_with("since: "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_listed_by_type_and_shown_with_their_deliveries_data_byte_for_byte() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start(&endpoint("all", &receiver.url("/hook"), "")).await;
    let data = r#"{"amount":12.50,"raw":123456789012345678901234567890}"#;
    let body = format!(r#"{{"type":"payment.confirmed","data":{data}}}"#);
    let exact = gateway
        .send(
            gateway
                .raw_client()
                .post(gateway.url("/v1/events"))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    assert_eq!(exact.status, 201, "{exact:#?}");
    let exact_id = str_field(&exact.json, "id").to_owned();
    let mut confirmed = vec![exact_id.clone()];
    for n in 0..2 {
        let event = gateway.publish("payment.confirmed", json!({"n": n})).await;
        confirmed.push(str_field(&event, "id").to_owned());
    }
    gateway.publish("payment.expired", json!({"n": 9})).await;

    let listed = gateway.get_json("/v1/events?type=payment.confirmed").await;
    assert_eq!(listed.status, 200, "{listed:#?}");
    let ids: Vec<&str> = listed.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = confirmed.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first, "{listed:#?}");
    let all = gateway.get_json("/v1/events?limit=500").await;
    assert_eq!(all.json["events"].as_array().unwrap().len(), 4);
    let later = gateway
        .get_json("/v1/events?from=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(later.json["events"], json!([]), "{later:#?}");

    receiver.wait_for_event("/hook", &exact_id, WAIT).await;
    let shown = gateway.get_json(&format!("/v1/events/{exact_id}")).await;
    assert_eq!(shown.status, 200, "{shown:#?}");
    assert!(
        shown.text.contains(&format!(r#""data":{data}"#)),
        "{}",
        shown.text
    );
    let delivery = &shown.json["deliveries"][0];
    assert_eq!(delivery["endpoint_id"], "all");
    let path = format!("/v1/events/{exact_id}");
    support::poll_until(
        WAIT,
        "the delivery to show as delivered",
        || gateway.get_json(&path),
        |answer| answer.json["deliveries"][0]["status"] == "delivered",
    )
    .await;

    // Sent again: the receiver gets the same event (same webhook-id, same bytes) a second time.
    let first = receiver.wait_for_event("/hook", &exact_id, WAIT).await;
    let resent = gateway
        .post_json(&format!("/v1/events/{exact_id}/resend"), &json!({}))
        .await;
    assert_eq!(resent.status, 202, "{resent:#?}");
    assert_eq!(
        resent.json["deliveries"][0]["result"], "scheduled",
        "{resent:#?}"
    );
    let twice = support::poll_until(
        WAIT,
        "the event to arrive a second time",
        || async { receiver.requests_on("/hook") },
        |requests| {
            requests
                .iter()
                .filter(|request| request.webhook_id() == Some(exact_id.as_str()))
                .count()
                == 2
        },
    )
    .await;
    let copies: Vec<_> = twice
        .iter()
        .filter(|request| request.webhook_id() == Some(exact_id.as_str()))
        .collect();
    assert_eq!(copies[0].body, copies[1].body);
    assert_eq!(copies[0].body, first[0].body);

    gateway
        .get_json("/v1/events/evt_00000000000000000000000000000000")
        .await
        .assert_error(404, "not_found");
    gateway
        .post_json(
            "/v1/events/evt_00000000000000000000000000000000/resend",
            &json!({}),
        )
        .await
        .assert_error(404, "not_found");
    let message = gateway
        .get_json("/v1/events?from=tomorrow")
        .await
        .assert_error(400, "invalid_body");
    assert!(message.starts_with("from: "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delivery_waiting_for_a_late_retry_is_tried_now_on_request() {
    let receiver = Receiver::start(|call| {
        if call.attempt == 1 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let gateway = Gateway::start(&endpoint(
        "shop",
        &receiver.url("/hook"),
        "retry_schedule = [\"0s\", \"1h\"]",
    ))
    .await;
    let event = gateway.publish("payment.confirmed", json!({"n": 1})).await;
    let id = support::delivery_to(&event, "shop");
    let path = format!("/v1/deliveries/{id}");
    let waiting = support::poll_until(
        WAIT,
        "the first attempt to fail",
        || gateway.get_json(&path),
        |answer| answer.json["attempt_count"] == 1,
    )
    .await;
    assert_eq!(waiting.json["status"], "pending", "{waiting:#?}");

    let retried = gateway
        .post_json(&format!("/v1/deliveries/{id}/retry"), &json!({}))
        .await;
    assert_eq!(retried.status, 202, "{retried:#?}");
    assert_eq!(retried.json["already_due"], false);
    let delivered = gateway
        .wait_for_delivery_status(&id, "delivered", WAIT)
        .await;
    assert_eq!(delivered["attempt_count"], 2, "{delivered:#?}");

    gateway
        .post_json(&format!("/v1/deliveries/{id}/retry"), &json!({}))
        .await
        .assert_error(409, "conflict");
    gateway
        .post_json(
            "/v1/deliveries/dlv_00000000000000000000000000000000/retry",
            &json!({}),
        )
        .await
        .assert_error(404, "not_found");
}

/// `path` from the API document with its parameters filled in: ids of the right kind that
/// name nothing, so every call is harmless (404, 400 or 409).
fn concrete_path(path: &str) -> String {
    let id = if path.starts_with("/v1/events") {
        "evt_0190000000007000800000000000abcd"
    } else if path.starts_with("/v1/deliveries") {
        "dlv_0190000000007000800000000000abcd"
    } else if path.starts_with("/v1/payments") {
        "pay_0190000000007000800000000000abcd"
    } else {
        "no-such-endpoint"
    };
    path.replace("{id}", id).replace("{name}", "no-such-plugin")
}

/// The fallback's answer to a request no route matches.
fn is_unrouted(answer: &ApiResponse) -> bool {
    answer.status == 405
        || (answer.status == 404
            && answer.json["error"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("no route for")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_open_and_every_route_in_it_is_served_as_documented() {
    for server in ["", "probes_need_token = true"] {
        let gateway = Gateway::start_with_server(server, "").await;
        let client = gateway.raw_client();
        let unrouted = gateway.call("GET", "/v1/no-such-route", None).await;
        assert!(
            is_unrouted(&unrouted),
            "the fallback changed: {unrouted:#?}"
        );

        let document = gateway.send(client.get(gateway.url("/openapi.json"))).await;
        assert_eq!(document.status, 200, "no token needed: {document:#?}");
        assert_eq!(document.header("content-type"), Some("application/json"));
        assert_eq!(document.json["openapi"], "3.1.0");
        let paths = document.json["paths"]
            .as_object()
            .expect("`paths` in the document");
        let mut operations = 0;
        for (path, item) in paths {
            let concrete = concrete_path(path);
            for (method, operation) in item.as_object().expect("a path item") {
                let method = method.to_ascii_uppercase();
                let route = format!("{method} {path} ({server:?})");
                operations += 1;
                let body = matches!(method.as_str(), "POST" | "PUT" | "PATCH").then(|| json!({}));

                let answer = gateway.call(&method, &concrete, body.as_ref()).await;
                assert!(
                    !is_unrouted(&answer),
                    "{route} is documented but not served: {answer:#?}"
                );
                assert_ne!(answer.status, 401, "{route} refused the token: {answer:#?}");

                let mut anonymous = client.request(method.parse().unwrap(), gateway.url(&concrete));
                if let Some(body) = &body {
                    anonymous = anonymous
                        .header("content-type", "application/json")
                        .body(body.to_string());
                }
                let anonymous = gateway.send(anonymous).await;
                let documented_as_protected = operation["security"]
                    .as_array()
                    .is_some_and(|security| security.contains(&json!({"bearer": []})));
                assert_eq!(
                    anonymous.status == 401,
                    documented_as_protected,
                    "{route} without a token, documented security {}: {anonymous:#?}",
                    operation["security"]
                );
            }
        }
        assert_eq!(operations, 29, "{:#}", document.json["paths"]);
    }
}
