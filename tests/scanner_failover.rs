//! One scanner per chain across the nodes of one PostgreSQL database, and a scan that moves
//! to another node when its scanner dies.
//!
//! Everything here is real: anvil from npm as the chain, a throwaway PostgreSQL cluster as the
//! shared store, two `hookgate serve` processes of the real binary on one database with the
//! same config, a real receiver collecting the signed payment events, and a real `kill -9` of
//! the node that scans. Which node scans is read from each node's own log (`this node scans
//! the chain now`, logged when it takes the chain's advisory lock) and from its readiness
//! answer; what was raised, missed or doubled is read from the events on the wire, one per
//! `webhook-id` however often a delivery was repeated.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::chain::{ANVIL_XPUB, Anvil, CHAIN_ID, Mined, ether};
use support::{ApiResponse, Gateway, Received, Receiver, SECRET, poll_until};

/// How long an event may take to reach the receiver. Longer than the delivery claim lease
/// (30 s): a delivery the killed node had claimed but not settled goes out from the other
/// node once that lease runs out.
const WAIT: Duration = Duration::from_secs(60);

/// How long the surviving node may take to take the scan over: it asks for the lease every
/// second, and the database frees it as soon as the killed node's session is gone.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(10);

/// Blocks a transfer needs before its payment is confirmed, in this test.
const CONFIRMATIONS: u64 = 3;

/// What a node logs when it takes a chain's scanner lease.
const TAKES_THE_SCAN: &str = "this node scans the chain now";

/// What the readiness answer of a node says about a chain another node scans.
const STANDING_BY: &str = "another node scans this chain";

/// The events of a payment paid in full by one transfer, in the order they are raised.
const FULL_PAYMENT: [&str; 3] = ["payment.created", "payment.detected", "payment.confirmed"];

/// The config every node gets: chain `anvil` from block `start`, every event to `receiver`.
fn node_config(rpc_url: &str, start: u64, receiver: &Receiver) -> String {
    format!(
        "[delivery]\nretry_schedule = [\"0s\", \"200ms\", \"500ms\", \"1s\"]\n\n\
         [payments]\nxpub = \"{ANVIL_XPUB}\"\n\n\
         [[chains]]\nname = \"anvil\"\nchain_id = {CHAIN_ID}\nrpc_url = \"{rpc_url}\"\n\
         confirmations = {CONFIRMATIONS}\npoll_interval = \"100ms\"\nstart_block = {start}\n\n\
         [[endpoints]]\nid = \"merchant\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        receiver.url("/hooks")
    )
}

/// A node's whole log: its stderr since it first started, restarts appended.
fn log_of(node: &Gateway) -> String {
    std::fs::read_to_string(node.dir().join("hookgate.log")).unwrap_or_default()
}

/// How many times the node took the chain's scan.
fn scans_taken(node: &Gateway) -> usize {
    log_of(node).matches(TAKES_THE_SCAN).count()
}

/// Whether the node raised an event whose idempotency key starts with `cause`
/// (`pay_…/confirmed/`): the scanning node logs every payment event it raises.
fn raised(node: &Gateway, cause: &str) -> bool {
    log_of(node).contains(cause)
}

async fn readiness(node: &Gateway) -> ApiResponse {
    node.send(node.raw_client().get(node.url("/readyz"))).await
}

/// Creates a one-ether payment on `node`; returns its API view.
async fn create(node: &Gateway) -> Value {
    let created = node
        .post_json("/v1/payments", &json!({"chain": "anvil", "amount": "1"}))
        .await;
    assert_eq!(created.status, 201, "{created:#?}");
    created.json
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("`{name}` is not a string in {value:#}"))
}

/// One payment event as the receiver got it, however many times it was delivered.
#[derive(Debug)]
struct Seen {
    event_id: String,
    kind: String,
    data: Value,
}

/// Every distinct event received, one per `webhook-id`, in the order the gateways raised them
/// (event ids are time-ordered; deliveries may arrive in another order).
fn distinct_events(requests: &[Received]) -> Vec<Seen> {
    let mut events = BTreeMap::new();
    for request in requests {
        let event_id = request
            .webhook_id()
            .unwrap_or_else(|| panic!("a delivery without webhook-id: {request:#?}"))
            .to_owned();
        events.entry(event_id.clone()).or_insert_with(|| {
            let body = request.json();
            Seen {
                event_id,
                kind: field(&body, "type").to_owned(),
                data: body["data"].clone(),
            }
        });
    }
    events.into_values().collect()
}

fn events_of(requests: &[Received], payment_id: &str) -> Vec<Seen> {
    distinct_events(requests)
        .into_iter()
        .filter(|event| event.data["payment_id"] == payment_id)
        .collect()
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
                    .find(|event| event.kind == event_type)
                    .map(|event| event.data)
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_moves_to_another_node_when_its_scanner_is_killed_and_misses_or_doubles_nothing() {
    let anvil = Anvil::start().await;
    let receiver = Receiver::ok().await;
    let database = support::postgres::cluster().fresh_database().await;
    let config = node_config(&anvil.url, anvil.head().await, &receiver);
    let first = Gateway::start_node(&database, &config).await;
    let second = Gateway::start_node(&database, &config).await;

    // Exactly one node takes the chain; the other stands by and says so, and is still ready.
    let taken = poll_until(
        TAKEOVER_WITHIN,
        "a node to take the chain's scan",
        || async { (scans_taken(&first), scans_taken(&second)) },
        |taken| taken.0 + taken.1 > 0,
    )
    .await;
    assert!(
        matches!(taken, (1, 0) | (0, 1)),
        "exactly one node scans the chain, got {taken:?}; first node:\n{}\nsecond node:\n{}",
        first.log_tail(),
        second.log_tail()
    );
    let (mut leader, standby) = if taken.0 == 1 {
        (first, second)
    } else {
        (second, first)
    };
    let ready = poll_until(
        WAIT,
        "the standby to report that another node scans",
        || readiness(&standby),
        |ready| ready.json["chains"][0]["error"] == STANDING_BY,
    )
    .await;
    assert_eq!(ready.status, 200, "a standby is ready: {ready:#?}");
    assert_eq!(ready.json["chains"][0]["ok"], true, "{ready:#?}");

    // Payments are created through the standby: any node takes API calls.
    let mut payments = Vec::new();
    for _ in 0..4 {
        payments.push(create(&standby).await);
    }
    let mut ids: Vec<String> = payments
        .iter()
        .map(|payment| field(payment, "payment_id").to_owned())
        .collect();
    for id in &ids {
        wait_event(&receiver, id, "payment.created").await;
    }
    let mut sent: Vec<Mined> = Vec::new();
    // The first is paid and confirmed while the leader scans.
    sent.push(anvil.pay(field(&payments[0], "address"), ether(1)).await);
    anvil.mine(CONFIRMATIONS - 1).await;
    for kind in &FULL_PAYMENT[1..] {
        wait_event(&receiver, &ids[0], kind).await;
    }
    // The second is detected by the leader and still short of its confirmations when it dies.
    sent.push(anvil.pay(field(&payments[1], "address"), ether(1)).await);
    wait_event(&receiver, &ids[1], "payment.detected").await;
    assert!(
        raised(&leader, &format!("{}/confirmed/", ids[0])),
        "the scanning node raised the first confirmation:\n{}",
        leader.log_tail()
    );
    assert_eq!(
        (scans_taken(&leader), scans_taken(&standby)),
        (1, 0),
        "one scanner all along; standby log:\n{}",
        standby.log_tail()
    );
    let ready = readiness(&leader).await;
    assert_eq!(ready.json["chains"][0]["ok"], true, "{ready:#?}");
    assert_eq!(ready.json["chains"][0]["error"], Value::Null, "{ready:#?}");

    // kill -9 the scanner; the other two payments are paid while the lease is changing hands,
    // and the blocks that confirm all three open ones are mined.
    leader.kill9().await;
    let killed = Instant::now();
    let takeover = async {
        poll_until(
            TAKEOVER_WITHIN,
            "the standby to take the chain's scan over",
            || async { scans_taken(&standby) },
            |taken| *taken == 1,
        )
        .await;
        killed.elapsed()
    };
    let pay_the_rest = async {
        let mut mined = Vec::new();
        for payment in &payments[2..] {
            mined.push(anvil.pay(field(payment, "address"), ether(1)).await);
        }
        anvil.mine(CONFIRMATIONS - 1).await;
        mined
    };
    let (moved_in, mined) = tokio::join!(takeover, pay_the_rest);
    println!("scanner moved to the other node in {moved_in:?}");
    sent.extend(mined);
    for id in &ids {
        wait_event(&receiver, id, "payment.confirmed").await;
    }
    for id in &ids[1..] {
        assert!(
            raised(&standby, &format!("{id}/confirmed/")),
            "the node that took the scan over raised {id}'s confirmation:\n{}",
            standby.log_tail()
        );
    }
    let ready = readiness(&standby).await;
    assert_eq!(ready.status, 200, "{ready:#?}");
    assert_eq!(ready.json["chains"][0]["ok"], true, "{ready:#?}");
    assert_eq!(ready.json["chains"][0]["error"], Value::Null, "{ready:#?}");

    // The killed node comes back and stands by: a payment created through it is scanned, and
    // raised, by the node holding the lease.
    leader.restart().await;
    poll_until(
        WAIT,
        "the restarted node to report that another node scans",
        || readiness(&leader),
        |ready| ready.json["chains"][0]["error"] == STANDING_BY,
    )
    .await;
    let last = create(&leader).await;
    let last_id = field(&last, "payment_id").to_owned();
    sent.push(anvil.pay(field(&last, "address"), ether(1)).await);
    anvil.mine(CONFIRMATIONS - 1).await;
    wait_event(&receiver, &last_id, "payment.confirmed").await;
    assert!(
        raised(&standby, &format!("{last_id}/confirmed/")),
        "the lease holder raised the last confirmation:\n{}",
        standby.log_tail()
    );
    assert!(
        !raised(&leader, &format!("{last_id}/detected/"))
            && !raised(&leader, &format!("{last_id}/confirmed/")),
        "the restarted node raised nothing of the last payment:\n{}",
        leader.log_tail()
    );
    assert_eq!(
        scans_taken(&leader),
        1,
        "the restarted node did not take the scan while the other holds it:\n{}",
        leader.log_tail()
    );
    ids.push(last_id);

    // Every event of every payment came, each raised once.
    for id in &ids {
        for kind in FULL_PAYMENT {
            wait_event(&receiver, id, kind).await;
        }
    }
    let requests = receiver.requests();
    let events = distinct_events(&requests);
    println!(
        "{} deliveries carried {} distinct events",
        requests.len(),
        events.len()
    );
    let mut by_cause: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for event in &events {
        let cause = (
            event.kind.clone(),
            field(&event.data, "payment_id").to_owned(),
            event.data["tx_hash"].as_str().unwrap_or("-").to_owned(),
        );
        by_cause
            .entry(cause)
            .or_default()
            .insert(event.event_id.clone());
    }
    let doubled: Vec<_> = by_cause
        .iter()
        .filter(|(_, event_ids)| event_ids.len() > 1)
        .collect();
    assert!(
        doubled.is_empty(),
        "each cause is raised once (a repeated delivery keeps its webhook-id); raised twice: \
         {doubled:#?}"
    );
    for (id, transfer) in ids.iter().zip(&sent) {
        let events = events_of(&requests, id);
        let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
        assert_eq!(kinds, FULL_PAYMENT, "payment {id}: {events:#?}");
        for event in &events[1..] {
            assert_eq!(
                event.data["tx_hash"], transfer.hash,
                "payment {id}: {} names its transfer",
                event.kind
            );
        }
    }
}
