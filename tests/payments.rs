//! Payments end to end on a real chain: anvil from npm, the project's own ERC-20 deployed to
//! it, the real `hookgate` binary scanning it, and a real receiver collecting the signed
//! payment events. Every assertion is about events on the wire or what the API reports.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use serde_json::{Value, json};
use support::chain::{ANVIL_XPUB, Anvil, CHAIN_ID, ProxyMode, RpcProxy, ether};
use support::{Gateway, Received, Receiver, SECRET, poll_until, signatures};

/// How long anything that should happen promptly may take.
const WAIT: Duration = Duration::from_secs(30);

/// Blocks a transfer needs before its payment is confirmed, in these tests.
const CONFIRMATIONS: u64 = 3;

/// A gateway scanning `rpc_url` from block `start`, with `token` (6 decimals) configured as
/// USDC, delivering every event to `receiver`.
async fn gateway(
    rpc_url: &str,
    start: u64,
    token: Option<Address>,
    receiver: &Receiver,
) -> Gateway {
    gateway_with(rpc_url, start, token, receiver, "").await
}

async fn gateway_with(
    rpc_url: &str,
    start: u64,
    token: Option<Address>,
    receiver: &Receiver,
    chain_extra: &str,
) -> Gateway {
    let token = token
        .map(|token| {
            format!("[[chains.tokens]]\nsymbol = \"USDC\"\ncontract = \"{token}\"\ndecimals = 6\n")
        })
        .unwrap_or_default();
    Gateway::start(&format!(
        "[delivery]\nretry_schedule = [\"0s\", \"200ms\", \"500ms\", \"1s\"]\n\n\
         [payments]\nxpub = \"{ANVIL_XPUB}\"\n\n\
         [[chains]]\nname = \"anvil\"\nchain_id = {CHAIN_ID}\nrpc_url = \"{rpc_url}\"\n\
         confirmations = {CONFIRMATIONS}\npoll_interval = \"100ms\"\nstart_block = {start}\n\
         {chain_extra}\n{token}\n\
         [[endpoints]]\nid = \"merchant\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        receiver.url("/hooks")
    ))
    .await
}

/// Creates a payment; returns its API view.
async fn create(gateway: &Gateway, body: Value) -> Value {
    let created = gateway.post_json("/v1/payments", &body).await;
    assert_eq!(created.status, 201, "{created:#?}");
    created.json
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("`{name}` is not a string in {value:#}"))
}

/// The payment events received so far for `payment_id`, one per event id, in the order the
/// gateway raised them (event ids are time-ordered; deliveries may arrive in another order):
/// `(type, data)`.
fn events_of(requests: &[Received], payment_id: &str) -> Vec<(String, Value)> {
    let mut events = BTreeMap::new();
    for request in requests {
        let body = request.json();
        if body["data"]["payment_id"] == payment_id {
            events.insert(
                field(&body, "id").to_owned(),
                (field(&body, "type").to_owned(), body["data"].clone()),
            );
        }
    }
    events.into_values().collect()
}

/// Waits for the `event_type` event of `payment_id` and returns its data.
async fn wait_event(receiver: &Receiver, payment_id: &str, event_type: &str) -> Value {
    receiver
        .wait_for(
            WAIT,
            &format!("{event_type} for {payment_id}"),
            |requests| {
                events_of(requests, payment_id)
                    .into_iter()
                    .find(|(kind, _)| kind == event_type)
                    .map(|(_, data)| data)
            },
        )
        .await
}

fn types(receiver: &Receiver, payment_id: &str) -> Vec<String> {
    events_of(&receiver.requests(), payment_id)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect()
}

/// The payment's status as the API shows it.
async fn payment_status(gateway: &Gateway, payment_id: &str) -> String {
    let shown = gateway
        .get_json(&format!("/v1/payments/{payment_id}"))
        .await;
    assert_eq!(shown.status, 200, "{shown:#?}");
    field(&shown.json, "status").to_owned()
}

#[tokio::test]
async fn a_native_payment_is_detected_then_confirmed_after_the_configured_depth() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    let payment = create(
        &gateway,
        json!({"chain": "anvil", "amount": "1.5", "metadata": {"order": "A-17"}}),
    )
    .await;
    let id = field(&payment, "payment_id");
    let address = field(&payment, "address");
    // Derived watch-only from the xpub: the first payment gets child 0, anvil's account 0.
    assert_eq!(address, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    let created = wait_event(&receiver, id, "payment.created").await;
    assert_eq!(created["status"], "pending");
    assert_eq!(created["metadata"], json!({"order": "A-17"}));

    let sent = anvil.pay(address, ether(3) / U256::from(2)).await;
    let detected = wait_event(&receiver, id, "payment.detected").await;
    // The original service's six fields, then the rest of the documented body.
    assert_eq!(detected["payment_id"], id);
    assert_eq!(detected["status"], "detected");
    assert_eq!(detected["address"], address);
    assert_eq!(detected["amount"], "1.5");
    assert_eq!(detected["chain"], "anvil");
    assert_eq!(detected["token_id"], Value::Null);
    assert_eq!(detected["amount_raw"], "1500000000000000000");
    assert_eq!(detected["chain_id"], CHAIN_ID);
    assert_eq!(detected["tx_hash"], sent.hash);
    assert_eq!(detected["block_number"], sent.block);
    assert_eq!(detected["overpaid"], false);
    assert_eq!(payment_status(&gateway, id).await, "detected");

    anvil.mine(CONFIRMATIONS - 1).await;
    let confirmed = wait_event(&receiver, id, "payment.confirmed").await;
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["confirmations"], CONFIRMATIONS);
    assert_eq!(confirmed["tx_hash"], sent.hash);
    assert_eq!(payment_status(&gateway, id).await, "confirmed");
    assert_eq!(
        types(&receiver, id),
        ["payment.created", "payment.detected", "payment.confirmed"]
    );
    for request in receiver.requests() {
        signatures::assert_signed_by(SECRET, &request);
    }
}

#[tokio::test]
async fn an_erc20_payment_is_confirmed_in_token_units() {
    let anvil = Anvil::start().await;
    let usdc = anvil.deploy_token("USDC", 6).await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, Some(usdc), &receiver).await;
    let payment = create(
        &gateway,
        json!({"chain": "anvil", "token": "usdc", "amount": "12.5"}),
    )
    .await;
    let id = field(&payment, "payment_id");
    assert_eq!(payment["amount_raw"], "12500000");
    let sent = anvil
        .pay_token(usdc, field(&payment, "address"), U256::from(12_500_000u64))
        .await;
    let detected = wait_event(&receiver, id, "payment.detected").await;
    assert_eq!(detected["token_id"], "usdc");
    assert_eq!(detected["amount"], "12.5");
    assert_eq!(detected["tx_hash"], sent.hash);
    anvil.mine(CONFIRMATIONS).await;
    let confirmed = wait_event(&receiver, id, "payment.confirmed").await;
    assert_eq!(confirmed["amount_paid"], "12.5");
    // Native coins sent to a token payment's address are not counted toward it.
    assert_eq!(payment_status(&gateway, id).await, "confirmed");
}

#[tokio::test]
async fn an_underpayment_waits_and_a_top_up_completes_it() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    let payment = create(&gateway, json!({"chain": "anvil", "amount": "1"})).await;
    let (id, address) = (field(&payment, "payment_id"), field(&payment, "address"));
    anvil.pay(address, ether(4) / U256::from(10)).await;
    let underpaid = wait_event(&receiver, id, "payment.underpaid").await;
    assert_eq!(underpaid["status"], "underpaid");
    assert_eq!(underpaid["amount_paid"], "0.4");
    anvil.pay(address, ether(3) / U256::from(10)).await;
    anvil.mine(CONFIRMATIONS + 2).await;
    let path = format!("/v1/payments/{id}");
    poll_until(
        WAIT,
        "the second part to be recorded",
        || gateway.get_json(&path),
        |shown| shown.json["amount_paid"] == "0.7",
    )
    .await;
    assert_eq!(payment_status(&gateway, id).await, "underpaid");
    let top_up = anvil.pay(address, ether(3) / U256::from(10)).await;
    let detected = wait_event(&receiver, id, "payment.detected").await;
    assert_eq!(detected["tx_hash"], top_up.hash);
    assert_eq!(detected["amount_paid"], "1");
    anvil.mine(CONFIRMATIONS).await;
    wait_event(&receiver, id, "payment.confirmed").await;
    assert_eq!(
        types(&receiver, id),
        [
            "payment.created",
            "payment.underpaid",
            "payment.detected",
            "payment.confirmed"
        ],
        "underpaid is raised once"
    );
}

#[tokio::test]
async fn one_transaction_paying_two_payments_detects_both_and_an_overpayment_is_flagged() {
    let anvil = Anvil::start().await;
    let usdc = anvil.deploy_token("USDC", 6).await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, Some(usdc), &receiver).await;
    let first = create(
        &gateway,
        json!({"chain": "anvil", "token": "USDC", "amount": "5"}),
    )
    .await;
    let second = create(
        &gateway,
        json!({"chain": "anvil", "token": "USDC", "amount": "2"}),
    )
    .await;
    assert_ne!(first["address"], second["address"]);
    let sent = anvil
        .pay_token_many(
            usdc,
            &[
                (field(&first, "address"), U256::from(5_000_000u64)),
                (field(&second, "address"), U256::from(2_250_000u64)),
            ],
        )
        .await;
    let one = wait_event(&receiver, field(&first, "payment_id"), "payment.detected").await;
    let two = wait_event(&receiver, field(&second, "payment_id"), "payment.detected").await;
    assert_eq!(one["tx_hash"], sent.hash);
    assert_eq!(two["tx_hash"], sent.hash);
    assert_eq!(one["overpaid"], false);
    assert_eq!(two["overpaid"], true);
    assert_eq!(two["excess"], "0.25");
    assert_eq!(two["excess_raw"], "250000");
    let shown = gateway
        .get_json(&format!("/v1/payments/{}", field(&second, "payment_id")))
        .await;
    assert_eq!(
        shown.json["transfers"][0]["log_index"], 1,
        "{:#}",
        shown.json
    );
}

#[tokio::test]
async fn a_reorg_of_depth_one_orphans_the_payment_and_re_inclusion_confirms_it() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    let payment = create(&gateway, json!({"chain": "anvil", "amount": "2"})).await;
    let (id, address) = (field(&payment, "payment_id"), field(&payment, "address"));
    let sent = anvil.pay(address, ether(2)).await;
    wait_event(&receiver, id, "payment.detected").await;
    let raw = anvil.raw_transaction(&sent.hash).await;

    anvil.reorg(1, &[]).await;
    let reorged = wait_event(&receiver, id, "payment.reorged").await;
    assert_eq!(reorged["status"], "pending");
    assert_eq!(reorged["previous_status"], "detected");
    assert_eq!(reorged["orphaned_tx_hashes"], json!([sent.hash]));
    // The orphan is gone: however deep the chain grows, it confirms nothing.
    anvil.mine(CONFIRMATIONS + 3).await;
    let head = anvil.head().await;
    wait_scanned(&gateway, &anvil, head).await;
    assert_eq!(payment_status(&gateway, id).await, "pending");
    assert!(!types(&receiver, id).contains(&"payment.confirmed".to_owned()));

    // The same signed transaction mined again: detected and confirmed in its new block.
    anvil.rpc("eth_sendRawTransaction", json!([raw])).await;
    let again = wait_event_nth(&receiver, id, "payment.detected", 2).await;
    assert_eq!(again["tx_hash"], sent.hash);
    assert!(again["block_number"].as_u64().unwrap() > sent.block);
    anvil.mine(CONFIRMATIONS).await;
    let confirmed = wait_event(&receiver, id, "payment.confirmed").await;
    assert_eq!(confirmed["block_number"], again["block_number"]);
    assert_eq!(
        types(&receiver, id),
        [
            "payment.created",
            "payment.detected",
            "payment.reorged",
            "payment.detected",
            "payment.confirmed"
        ]
    );
}

#[tokio::test]
async fn a_reorg_of_depth_three_that_moves_the_transfer_confirms_it_only_in_its_new_block() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    anvil.mine(2).await;
    let payment = create(&gateway, json!({"chain": "anvil", "amount": "1"})).await;
    let (id, address) = (field(&payment, "payment_id"), field(&payment, "address"));
    let sent = anvil.pay(address, ether(1)).await;
    anvil.mine(1).await; // depth 2: not yet confirmed at 3
    wait_event(&receiver, id, "payment.detected").await;
    let raw = anvil.raw_transaction(&sent.hash).await;
    // Replace the last 3 blocks; the payment goes into the newest of the new ones.
    anvil.reorg(3, &[(raw, 2)]).await;
    let reorged = wait_event(&receiver, id, "payment.reorged").await;
    assert_eq!(reorged["orphaned_tx_hashes"], json!([sent.hash]));
    let again = wait_event_nth(&receiver, id, "payment.detected", 2).await;
    assert_eq!(again["block_number"], sent.block + 1);
    anvil.mine(CONFIRMATIONS).await;
    let confirmed = wait_event(&receiver, id, "payment.confirmed").await;
    assert_eq!(confirmed["block_number"], sent.block + 1);
    let confirmations: Vec<Value> = events_of(&receiver.requests(), id)
        .into_iter()
        .filter(|(kind, _)| kind == "payment.confirmed")
        .map(|(_, data)| data)
        .collect();
    assert_eq!(
        confirmations.len(),
        1,
        "confirmed exactly once: {confirmations:#?}"
    );
}

#[tokio::test]
async fn an_unpaid_payment_expires_and_a_payment_after_expiry_or_confirmation_is_late() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    let expires_at = humantime_rfc3339(std::time::SystemTime::now() + Duration::from_secs(2));
    let expiring = create(
        &gateway,
        json!({"chain": "anvil", "amount": "1", "expires_at": expires_at}),
    )
    .await;
    let id = field(&expiring, "payment_id");
    // Expiry needs the clock past `expires_at` and a scanned block stamped after it (a block
    // the gateway has not read could still have paid in time): mine until one is.
    poll_until(
        WAIT,
        "payment.expired once a block past expires_at is scanned",
        || async {
            anvil.mine(1).await;
            types(&receiver, id)
        },
        |seen| seen.iter().any(|kind| kind == "payment.expired"),
    )
    .await;
    let expired = wait_event(&receiver, id, "payment.expired").await;
    assert_eq!(expired["status"], "expired");
    let late = anvil.pay(field(&expiring, "address"), ether(1)).await;
    let signalled = wait_event(&receiver, id, "payment.late").await;
    assert_eq!(signalled["tx_hash"], late.hash);
    assert_eq!(signalled["late_amount"], "1");
    assert_eq!(signalled["status"], "expired");

    let paid = create(&gateway, json!({"chain": "anvil", "amount": "1"})).await;
    let paid_id = field(&paid, "payment_id");
    anvil.pay(field(&paid, "address"), ether(1)).await;
    anvil.mine(CONFIRMATIONS).await;
    wait_event(&receiver, paid_id, "payment.confirmed").await;
    let extra = anvil
        .pay(field(&paid, "address"), ether(1) / U256::from(4))
        .await;
    let late = wait_event(&receiver, paid_id, "payment.late").await;
    assert_eq!(late["tx_hash"], extra.hash);
    assert_eq!(late["status"], "confirmed");
    let shown = gateway.get_json(&format!("/v1/payments/{paid_id}")).await;
    assert_eq!(
        shown.json["amount_paid"], "1",
        "a late transfer is not counted"
    );
    assert_eq!(shown.json["transfers"][1]["late"], true);
}

#[tokio::test]
async fn a_canceled_payment_raises_canceled_a_later_transfer_is_late_and_creates_are_idempotent() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    let payment = create(&gateway, json!({"chain": "anvil", "amount": "1"})).await;
    let id = field(&payment, "payment_id");

    let canceled = gateway
        .post_json(&format!("/v1/payments/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(canceled.status, 200, "{canceled:#?}");
    assert_eq!(canceled.json["status"], "canceled");
    let event = wait_event(&receiver, id, "payment.canceled").await;
    assert_eq!(event["status"], "canceled");
    assert_eq!(event["amount_paid"], "0");
    let again = gateway
        .post_json(&format!("/v1/payments/{id}/cancel"), &json!({}))
        .await;
    assert!(
        again
            .assert_error(409, "payment_not_cancelable")
            .contains("canceled")
    );
    gateway
        .post_json(
            "/v1/payments/pay_0190000000007000800000000000abcd/cancel",
            &json!({}),
        )
        .await
        .assert_error(404, "not_found");

    let late = anvil.pay(field(&payment, "address"), ether(1)).await;
    let signalled = wait_event(&receiver, id, "payment.late").await;
    assert_eq!(signalled["tx_hash"], late.hash);
    assert_eq!(signalled["status"], "canceled");

    // A create retried with its Idempotency-Key gets the first payment, not a second one.
    let key = [("idempotency-key", "checkout-42")];
    let body = json!({"chain": "anvil", "amount": "2", "metadata": {"order": 42}});
    let first = gateway.post_json_with("/v1/payments", &body, &key).await;
    assert_eq!(first.status, 201, "{first:#?}");
    let again = gateway.post_json_with("/v1/payments", &body, &key).await;
    assert_eq!(again.status, 201, "{again:#?}");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json["payment_id"], first.json["payment_id"]);
    assert_eq!(again.json["address"], first.json["address"]);
    let other = json!({"chain": "anvil", "amount": "3"});
    gateway
        .post_json_with("/v1/payments", &other, &key)
        .await
        .assert_error(409, "idempotency_conflict");
    let listed = gateway.get_json("/v1/payments?status=canceled").await;
    assert_eq!(listed.json["payments"][0]["payment_id"], id, "{listed:#?}");
}

#[tokio::test]
async fn a_kill_9_mid_scan_misses_nothing_and_raises_nothing_twice() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let start = anvil.head().await;
    let mut gateway = gateway_with(&anvil.url, start, None, &receiver, "batch_blocks = 10").await;
    let mut payments = Vec::new();
    for _ in 0..3 {
        payments.push(create(&gateway, json!({"chain": "anvil", "amount": "1"})).await);
    }
    // Stop the gateway, lay the payments out over 300 blocks, and start scanning them.
    gateway.kill9().await;
    for payment in &payments {
        anvil.pay(field(payment, "address"), ether(1)).await;
        anvil.mine(150).await;
    }
    gateway.restart().await;
    let first = field(&payments[0], "payment_id");
    wait_event(&receiver, first, "payment.detected").await;
    // Killed while the rest of the range is still being scanned.
    gateway.kill9().await;
    gateway.restart().await;
    for payment in &payments {
        // Detected and confirmed may be raised in the same step and arrive in either order.
        for kind in ["payment.detected", "payment.confirmed"] {
            wait_event(&receiver, field(payment, "payment_id"), kind).await;
        }
    }
    for payment in &payments {
        let id = field(payment, "payment_id");
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for kind in types(&receiver, id) {
            *counts.entry(kind).or_default() += 1;
        }
        assert_eq!(
            counts,
            BTreeMap::from([
                ("payment.confirmed".to_owned(), 1),
                ("payment.created".to_owned(), 1),
                ("payment.detected".to_owned(), 1),
            ]),
            "payment {id}"
        );
    }
}

#[tokio::test]
async fn the_scan_resumes_by_itself_after_the_node_is_stopped_and_restarted() {
    let mut anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    let payment = create(&gateway, json!({"chain": "anvil", "amount": "1"})).await;
    let (id, address) = (field(&payment, "payment_id"), field(&payment, "address"));
    anvil.stop().await;
    poll_until(
        WAIT,
        "the gateway to notice the node is gone",
        || async { gateway.log_tail() },
        |log| log.contains("scan step failed"),
    )
    .await;
    anvil.restart().await;
    anvil.pay(address, ether(1)).await;
    anvil.mine(CONFIRMATIONS).await;
    wait_event(&receiver, id, "payment.confirmed").await;
    let log = gateway.log_tail();
    assert_eq!(
        log.matches("scan step failed; the cursor stays").count(),
        1,
        "one warning per failure streak:\n{log}"
    );
    assert!(log.contains("chain RPC recovered"), "{log}");
}

#[tokio::test]
async fn a_node_answering_garbage_is_a_clear_error_and_the_cursor_does_not_move() {
    // The proxy is the only stand-in here (see `RpcProxy`): anvil stays real behind it.
    let anvil = Anvil::start().await;
    let proxy = RpcProxy::start(&anvil.url).await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&proxy.url, anvil.head().await, None, &receiver).await;
    let payment = create(&gateway, json!({"chain": "anvil", "amount": "1"})).await;
    let (id, address) = (field(&payment, "payment_id"), field(&payment, "address"));
    proxy.set_mode(ProxyMode::Garbage);
    let sent = anvil.pay(address, ether(1)).await;
    anvil.mine(CONFIRMATIONS).await;
    let seen = proxy.requests();
    poll_until(
        WAIT,
        "the scanner to try the garbage-answering node a few times",
        || async { proxy.requests() },
        |requests| *requests >= seen + 3,
    )
    .await;
    let log = gateway.log_tail();
    assert!(
        log.contains("with something that is not valid JSON-RPC"),
        "the error says what is wrong:\n{log}"
    );
    assert_eq!(types(&receiver, id), ["payment.created"]);
    assert_eq!(payment_status(&gateway, id).await, "pending");
    // The node heals: the block skipped by nothing is scanned now.
    proxy.set_mode(ProxyMode::Forward);
    let detected = wait_event(&receiver, id, "payment.detected").await;
    assert_eq!(detected["block_number"], sent.block);
    wait_event(&receiver, id, "payment.confirmed").await;
}

#[tokio::test]
async fn bad_create_requests_are_refused_with_the_field_named() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    let cases = [
        (json!({"chain": "mars", "amount": "1"}), "chain:"),
        (json!({"chain": "anvil", "amount": "1.x"}), "amount:"),
        (
            json!({"chain": "anvil", "amount": "0.0000000000000000001"}),
            "amount:",
        ),
        (
            json!({"chain": "anvil", "amount": "1", "token": "dai"}),
            "token:",
        ),
        (
            json!({"chain": "anvil", "amount": "1", "address": "0x12"}),
            "address:",
        ),
        (
            json!({"chain": "anvil", "amount": "1", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at:",
        ),
        (
            json!({"chain": "anvil", "amount": "1", "metadata": {"x": "y".repeat(5000)}}),
            "metadata:",
        ),
    ];
    for (body, field_name) in cases {
        let answer = gateway.post_json("/v1/payments", &body).await;
        let message = answer.assert_error(400, "invalid_body");
        assert!(message.starts_with(field_name), "{body}: {message}");
    }
    let first = create(&gateway, json!({"chain": "anvil", "amount": "1", "address": "0x00000000000000000000000000000000000000aa"})).await;
    let again = gateway
        .post_json(
            "/v1/payments",
            &json!({"chain": "anvil", "amount": "2", "address": "0x00000000000000000000000000000000000000AA"}),
        )
        .await;
    let message = again.assert_error(409, "address_in_use");
    assert!(message.contains(field(&first, "payment_id")), "{message}");
    let missing = gateway
        .get_json("/v1/payments/pay_0190000000007000800000000000abcd")
        .await;
    missing.assert_error(404, "not_found");
    let huge = create(
        &gateway,
        json!({"chain": "anvil", "amount": "1000000000000000000000000000000"}),
    )
    .await;
    assert_eq!(
        huge["amount_raw"],
        format!("1000000000000000000000000000000{}", "0".repeat(18))
    );
}

/// Waits for the `n`th (1-based) `event_type` event of `payment_id`.
async fn wait_event_nth(
    receiver: &Receiver,
    payment_id: &str,
    event_type: &str,
    n: usize,
) -> Value {
    receiver
        .wait_for(
            WAIT,
            &format!("{event_type} #{n} for {payment_id}"),
            |requests| {
                events_of(requests, payment_id)
                    .into_iter()
                    .filter(|(kind, _)| kind == event_type)
                    .nth(n - 1)
                    .map(|(_, data)| data)
            },
        )
        .await
}

/// Waits until the gateway has scanned past `head`: a probe payment paid in a later block is
/// detected only once every block before it was scanned. The probe pays from anvil's account
/// 18, so the payer's nonces stay as the test left them.
async fn wait_scanned(gateway: &Gateway, anvil: &Anvil, head: u64) {
    let probe = create(gateway, json!({"chain": "anvil", "amount": "1"})).await;
    let other = anvil.account(18).await;
    let mined = anvil
        .pay_from(&other, field(&probe, "address"), ether(1))
        .await;
    assert!(mined.block > head);
    let id = field(&probe, "payment_id").to_owned();
    poll_until(
        WAIT,
        "the probe payment to be detected",
        || payment_status(gateway, &id),
        |status| status == "detected",
    )
    .await;
}

fn humantime_rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_events_run_through_each_endpoints_plugins_after_the_commit() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let plugins = tempfile::tempdir().unwrap();
    for name in ["legacy-flat", "min-amount"] {
        std::fs::copy(
            support::component(name),
            plugins.path().join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    let gateway = Gateway::start(&format!(
        "[plugins]\ndir = '{}'\n\n\
         [payments]\nxpub = \"{ANVIL_XPUB}\"\n\n\
         [[chains]]\nname = \"anvil\"\nchain_id = {CHAIN_ID}\nrpc_url = \"{}\"\n\
         confirmations = {CONFIRMATIONS}\npoll_interval = \"100ms\"\nstart_block = {}\n\n\
         [[endpoints]]\nid = \"merchant\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         event_types = [\"payment.confirmed\"]\n\n\
         [[endpoints]]\nid = \"legacy\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         event_types = [\"payment.confirmed\"]\n\
         [[endpoints.plugins]]\nname = \"legacy-flat\"\n\n\
         [[endpoints]]\nid = \"big\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         event_types = [\"payment.confirmed\"]\n\
         [[endpoints.plugins]]\nname = \"min-amount\"\nconfig = {{ default = \"10\" }}\n",
        plugins.path().display(),
        anvil.url,
        anvil.head().await,
        receiver.url("/merchant"),
        receiver.url("/legacy"),
        receiver.url("/big"),
    ))
    .await;
    let small = create(&gateway, json!({"chain": "anvil", "amount": "1.5"})).await;
    let large = create(&gateway, json!({"chain": "anvil", "amount": "12"})).await;
    anvil
        .pay(field(&small, "address"), ether(3) / U256::from(2))
        .await;
    anvil.pay(field(&large, "address"), ether(12)).await;
    anvil.mine(CONFIRMATIONS).await;
    let on = |path: &'static str, id: String| {
        move |requests: &[Received]| {
            requests
                .iter()
                .find(|request| request.path == path && request.json()["payment_id"] == id.as_str())
                .cloned()
        }
    };
    let small_id = field(&small, "payment_id").to_owned();
    let large_id = field(&large, "payment_id").to_owned();
    let flat = receiver
        .wait_for(
            WAIT,
            "the flat body on /legacy",
            on("/legacy", small_id.clone()),
        )
        .await;
    assert_eq!(
        flat.json(),
        json!({"event": "payment.confirmed", "payment_id": small_id, "status": "confirmed",
               "address": small["address"], "amount": "1.5", "chain": "anvil", "token_id": null})
    );
    signatures::assert_signed_by(SECRET, &flat);
    let big = receiver
        .wait_for(WAIT, "the large payment on /big", |requests| {
            requests
                .iter()
                .find(|request| {
                    request.path == "/big" && request.json()["data"]["payment_id"] == large_id
                })
                .cloned()
        })
        .await;
    assert_eq!(big.json()["type"], "payment.confirmed");
    wait_event(&receiver, &small_id, "payment.confirmed").await;
    let dropped = receiver
        .requests()
        .into_iter()
        .filter(|request| {
            request.path == "/big" && request.json()["data"]["payment_id"] == small_id
        })
        .count();
    assert_eq!(dropped, 0, "min-amount drops the 1.5 payment for /big");
}

#[tokio::test]
async fn with_use_finalized_a_payment_confirms_at_the_finalized_block_not_at_a_depth() {
    // anvil reports `finalized` 64 blocks below its head.
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway_with(
        &anvil.url,
        anvil.head().await,
        None,
        &receiver,
        "use_finalized = true",
    )
    .await;
    let payment = create(&gateway, json!({"chain": "anvil", "amount": "1"})).await;
    let id = field(&payment, "payment_id");
    let sent = anvil.pay(field(&payment, "address"), ether(1)).await;
    wait_event(&receiver, id, "payment.detected").await;
    anvil.mine(62).await;
    // Far deeper than `confirmations`, still above the finalized block (the probe's own
    // transaction is block sent + 63, so finalized is sent - 1).
    wait_scanned(&gateway, &anvil, sent.block + 62).await;
    assert_eq!(payment_status(&gateway, id).await, "detected");
    anvil.mine(1).await;
    let confirmed = wait_event(&receiver, id, "payment.confirmed").await;
    assert!(
        confirmed["confirmations"].as_u64().unwrap() > 64,
        "{confirmed:#}"
    );
}

#[tokio::test]
async fn a_reorg_deeper_than_the_stored_hash_window_stops_the_scanner_loudly() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    let payment = create(&gateway, json!({"chain": "anvil", "amount": "1"})).await;
    let id = field(&payment, "payment_id");
    anvil.mine(200).await;
    wait_scanned(&gateway, &anvil, 200).await;
    let ready = gateway
        .send(gateway.raw_client().get(gateway.url("/readyz")))
        .await;
    assert_eq!(ready.status, 200, "{ready:#?}");
    assert_eq!(ready.json["chains"][0]["ok"], true, "{ready:#?}");
    let page = gateway
        .send(gateway.raw_client().get(gateway.url("/metrics")))
        .await
        .text;
    assert!(
        page.contains("hookgate_chain_lag_blocks{chain=\"anvil\"}"),
        "{page}"
    );
    anvil.reorg(150, &[]).await;
    let log = poll_until(
        WAIT,
        "the scanner to stop",
        || async { gateway.log_tail() },
        |log| log.contains("scanner stopped"),
    )
    .await;
    assert!(
        log.contains("reorg deeper than the 128 stored block hashes"),
        "{log}"
    );
    // The gateway itself stays up and answers, and says it is not ready, and why.
    assert_eq!(payment_status(&gateway, id).await, "pending");
    let ready = gateway
        .send(gateway.raw_client().get(gateway.url("/readyz")))
        .await;
    assert_eq!(ready.status, 503, "{ready:#?}");
    assert_eq!(ready.json["status"], "not_ready");
    assert_eq!(ready.json["writer"]["ok"], true);
    let error = ready.json["chains"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.starts_with("scanner stopped: "), "{ready:#?}");
}

#[tokio::test]
async fn the_payment_cli_creates_shows_and_lists_through_a_running_gateway() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let gateway = gateway(&anvil.url, anvil.head().await, None, &receiver).await;
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .arg("payment")
            .args(args)
            .env("HOOKGATE_API", &gateway.base_url)
            .env("HOOKGATE_ADMIN_TOKEN", support::ADMIN_TOKEN)
            .output()
            .expect("running hookgate payment");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&[
        "create",
        "--chain",
        "anvil",
        "--amount",
        "2.25",
        "--metadata",
        r#"{"order":"B-2"}"#,
    ]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).expect("JSON on stdout");
    let id = field(&created, "payment_id");
    assert_eq!(created["amount"], "2.25");
    assert_eq!(created["metadata"], json!({"order": "B-2"}));
    let (ok, out, err) = cli(&["get", id]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["status"],
        "pending"
    );
    let (ok, out, err) = cli(&["list", "--status", "pending"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["payments"][0]["payment_id"], id);
    let (ok, _, err) = cli(&["create", "--chain", "anvil", "--amount=-1"]);
    assert!(!ok);
    assert!(err.contains("400") && err.contains("amount:"), "{err}");
    let (ok, _, err) = cli(&["get", "pay_0190000000007000800000000000abcd"]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
}
