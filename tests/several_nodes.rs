//! Several gateway nodes on one PostgreSQL database share the delivery work, and a `kill -9`
//! of one of them loses nothing: three real `hookgate serve` processes on one database of a
//! throwaway cluster, a real receiver counting `webhook-id`s, 50,000 events published across
//! the nodes, and one node killed mid-run. What it held under lease runs out and the other
//! nodes claim it; the only cost is a bounded number of duplicates, printed.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::counting::{Arrivals, start_receiver};
use support::{Gateway, endpoint};

const EVENTS: usize = 50_000;
const BATCH: usize = 500;
const BATCHES: usize = EVENTS / BATCH;
const NODES: usize = 3;
/// Requests each node may have in flight to the endpoint.
const CONCURRENCY: usize = 16;
/// The node killed once this many distinct events arrived.
const KILL_AFTER: usize = 10_000;
/// A delivery reaches the receiver twice only when the killed node sent it but its outcome was
/// not committed: in flight at the kill (at most `CONCURRENCY`), or answered within the last
/// writer batches before it. On this project's 2-core machines a node's outcomes are committed
/// within ~10 ms of their answers at ~1–2k deliveries/s, i.e. a few dozen; the bound allows
/// ten times that.
const DUPLICATE_BOUND: usize = CONCURRENCY + 400;

fn batch_body(batch: usize) -> Value {
    let events: Vec<Value> = (batch * BATCH..(batch + 1) * BATCH)
        .map(|seq| {
            json!({
                "type": "payment.confirmed",
                "data": {"seq": seq},
                "idempotency_key": format!("seq-{seq}"),
            })
        })
        .collect();
    json!({"events": events})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_event_once_a_node_is_killed_mid_run() {
    let url = support::postgres::cluster().fresh_database().await;
    let arrivals = Arc::new(Arrivals::new(EVENTS));
    let receiver = start_receiver(arrivals.clone(), Arc::new(AtomicBool::new(false))).await;
    let sections = endpoint(
        "orders",
        &format!("http://{receiver}/hook"),
        &format!("concurrency = {CONCURRENCY}"),
    );
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(Gateway::start_node(&url, &sections).await);
    }

    // Batches go to the nodes in turn; a batch the killed node did not answer is sent to
    // another node under the same idempotency keys, so it is committed once either way.
    let posters: Vec<_> = nodes.iter().map(Gateway::poster).collect();
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        let mut dead = [false; NODES];
        for batch in 0..BATCHES {
            let mut node = batch % NODES;
            loop {
                if !dead[node] {
                    match posters[node]
                        .post_json("/v1/events/batch", &batch_body(batch))
                        .await
                    {
                        Ok(answer) if matches!(answer.status, 200 | 201) => break,
                        Ok(answer) => panic!("publishing batch {batch}: {answer:#?}"),
                        Err(_) => dead[node] = true,
                    }
                }
                node = (node + 1) % NODES;
            }
        }
    });

    assert!(
        arrivals
            .wait_for(KILL_AFTER, Duration::from_secs(120))
            .await,
        "only {} of {KILL_AFTER} events arrived before the kill; log of node 0:\n{}",
        arrivals.distinct(),
        nodes[0].log_tail()
    );
    nodes[1].kill9().await;
    let delivered_at_kill = arrivals.distinct();
    publisher.await.expect("the publisher");

    let all_arrived = arrivals.wait_for(EVENTS, Duration::from_secs(240)).await;
    let elapsed = started.elapsed();
    let requests = arrivals.requests.load(std::sync::atomic::Ordering::Acquire);
    let distinct = arrivals.distinct();
    let duplicates = requests - distinct;
    println!("nodes: {NODES}, events: {EVENTS}, killed node 1 after {delivered_at_kill} arrived");
    println!(
        "delivered {distinct} distinct in {:.1} s ({:.0}/s), requests {requests}, duplicates {duplicates}",
        elapsed.as_secs_f64(),
        distinct as f64 / elapsed.as_secs_f64()
    );
    assert!(
        all_arrived && distinct == EVENTS,
        "{distinct} of {EVENTS} events arrived; log of node 0:\n{}",
        nodes[0].log_tail()
    );
    assert!(
        duplicates <= DUPLICATE_BOUND,
        "{duplicates} duplicates: more than the {DUPLICATE_BOUND} a killed node's in-flight \
         and uncommitted outcomes explain"
    );

    // Nothing is left pending anywhere once the last outcomes are committed.
    let node = &nodes[0];
    support::poll_until(
        Duration::from_secs(30),
        "no pending deliveries in the shared database",
        || async { node.get_json("/readyz").await.json["store"]["pending_deliveries"].clone() },
        |pending| *pending == json!(0),
    )
    .await;
}
