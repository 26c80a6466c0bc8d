//! Delivery throughput and latency of the release `hookgate` binary, over loopback HTTP.
//!
//! One endpoint (concurrency 256, no jitter) points at an in-process hyper receiver that keeps
//! connections alive and answers 204. Two phases:
//!
//! 1. **Bulk**: `BENCH_EVENTS` events (default 100 000) published through `/v1/events/batch` in
//!    batches of 500 by a few concurrent publishers (the bodies are encoded before the clock
//!    starts; the receiver only records arrivals). Prints the enqueue rate, the delivery rate
//!    (events / time from the first publish to the last delivery), the latency from each
//!    publish request's send time to the receiver's arrival time, and the gateway's peak RSS.
//! 2. **Steady**: `BENCH_RATE` events per second (default 1 000) for `BENCH_SECS` seconds
//!    (default 10), each a single `POST /v1/events` launched open-loop at its scheduled instant,
//!    so a slow gateway cannot slow the offered load down. Latency is measured from that
//!    instant to the publish answer and to the arrival at the receiver.
//!
//! Phase 1 also prints the CPU time per delivery of the gateway process and, with
//! `HOOKGATE_TEST_BACKEND=postgres` (the gateway on a fresh database of a throwaway cluster),
//! of the database server.
//! Figures are printed as plain lines; nothing is asserted. Every wait has a deadline
//! (`BENCH_TIMEOUT_SECS`, default 600), so the run is bounded even when the gateway is not.
//! `BENCH_STALLED=1` adds a second endpoint whose plugin (`sleepy`) blocks every call in WASI
//! until the wall-clock bound stops it (its deliveries are parked): the steady phase's
//! latencies then show what one pathological plugin costs the publisher and the healthy
//! endpoint.
//! `BENCH_NODES=N` (PostgreSQL only) starts N gateway nodes on one database; the publishers
//! take turns among them, and the CPU figure is the nodes' sum. On 2 cores the point is that
//! sharing one database costs no throughput, not a speed-up.
//! `BENCH_PLUGIN=NAME` puts `target/plugins/NAME.wasm` in the endpoint's plugin chain, to compare
//! throughput with and without a plugin.
//! Run with `cargo bench -p hookgate --bench delivery_throughput`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use support::Gateway;
use support::counting::{Arrivals, start_receiver};
use support::measure::{cpu_seconds, env_number, peak_rss, percentiles, server_cpu_seconds};

const BATCH: usize = 500;
const PUBLISHERS: usize = 4;

fn payload(seq: usize) -> Value {
    json!({
        "payment_id": format!("00000000-0000-4000-8000-{seq:012}"),
        "status": "confirmed",
        "address": "0x8ba1f109551bd432803012645ac136ddd64dba72",
        "amount": "12.5",
        "amount_raw": "12500000",
        "chain": "ethereum",
        "chain_id": 1,
        "token_id": "usdc",
        "tx_hash": "0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060",
        "block_number": 19_000_000 + seq,
        "confirmations": 12
    })
}

/// One published event: its id (the receiver's `webhook-id`), its one delivery, and the instant
/// its publish request was sent.
struct Sent {
    event: String,
    delivery: String,
    at: Instant,
}

/// Latencies from each send instant to its event's first arrival, and the events that never
/// arrived.
fn latencies<'a>(arrivals: &Arrivals, sent: &'a [Sent]) -> (Vec<Duration>, Vec<&'a Sent>) {
    let mut missing = Vec::new();
    let mut found = Vec::with_capacity(sent.len());
    for one in sent {
        match arrivals.arrival(&one.event) {
            Some(arrived) => found.push(arrived.saturating_duration_since(one.at)),
            None => missing.push(one),
        }
    }
    (found, missing)
}

/// Prints what the gateway says about a few deliveries that never arrived, so an incomplete run
/// explains itself (status, attempts, last error) instead of only counting.
async fn explain_missing(gateway: &Gateway, missing: &[&Sent]) {
    const SHOWN: usize = 5;
    println!(
        "INCOMPLETE: {} not delivered; the first few:",
        missing.len()
    );
    for one in missing.iter().take(SHOWN) {
        let answer = gateway
            .get_json(&format!("/v1/deliveries/{}", one.delivery))
            .await;
        println!(
            "  delivery {} ({}): {}",
            one.delivery, answer.status, answer.json
        );
    }
}

/// The part of a `/v1/events/batch` answer the bench reads.
#[derive(serde::Deserialize)]
struct BatchAnswer {
    events: Vec<PublishedEvent>,
}

#[derive(serde::Deserialize)]
struct PublishedEvent {
    id: String,
    deliveries: Vec<PublishedDelivery>,
}

#[derive(serde::Deserialize)]
struct PublishedDelivery {
    id: String,
}

impl PublishedEvent {
    /// The event as the bench tracks it; `None` when no delivery was made for it.
    fn sent(self, at: Instant) -> Option<Sent> {
        let delivery = self.deliveries.into_iter().next()?.id;
        Some(Sent {
            event: self.id,
            delivery,
            at,
        })
    }
}

/// CPU seconds used so far by the gateway nodes and, on PostgreSQL, the database server.
fn cpu_of(nodes: &[u32], database: Option<u32>) -> (f64, Option<f64>) {
    (
        nodes
            .iter()
            .map(|pid| cpu_seconds(*pid, false).unwrap_or(0.0))
            .sum(),
        database.and_then(server_cpu_seconds),
    )
}

async fn bulk_phase(
    nodes: &[Arc<Gateway>],
    arrivals: Arc<Arrivals>,
    events: usize,
    within: Duration,
) {
    println!("phase 1: {events} events in batches of {BATCH}, {PUBLISHERS} publishers");
    // The request bodies are built before the clock starts: the publishers stand in for the
    // merchant's systems, whose JSON encoding is not the gateway's work.
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..events.div_ceil(BATCH))
            .map(|batch| {
                let range = batch * BATCH..((batch + 1) * BATCH).min(events);
                let body = json!({
                    "events": range
                        .map(|seq| json!({"type": "payment.confirmed", "data": payload(seq)}))
                        .collect::<Vec<_>>()
                });
                Bytes::from(serde_json::to_vec(&body).expect("serialising a batch"))
            })
            .collect(),
    );
    let next_batch = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let gateway = nodes[publisher % nodes.len()].clone();
            let bodies = bodies.clone();
            let next_batch = next_batch.clone();
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut failures = 0usize;
                loop {
                    let batch = next_batch.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(batch) else { break };
                    let at = Instant::now();
                    match gateway.post_bytes("/v1/events/batch", body.clone()).await {
                        (201, answer) => match serde_json::from_slice::<BatchAnswer>(&answer) {
                            Ok(answer) => {
                                let published = answer.events.len();
                                let before = sent.len();
                                sent.extend(
                                    answer.events.into_iter().filter_map(|event| event.sent(at)),
                                );
                                let without = published - (sent.len() - before);
                                if without > 0 {
                                    failures += 1;
                                    eprintln!("batch {batch}: {without} events got no delivery");
                                }
                            }
                            Err(err) => {
                                failures += 1;
                                eprintln!("batch {batch}: unreadable answer: {err}");
                            }
                        },
                        (status, answer) => {
                            failures += 1;
                            eprintln!(
                                "batch {batch}: {status} {}",
                                String::from_utf8_lossy(&answer)
                            );
                        }
                    }
                }
                (sent, failures)
            })
        })
        .collect();
    let mut sent = Vec::with_capacity(events);
    let mut failures = 0;
    for publisher in publishers {
        let (mine, failed) = publisher.await.expect("publisher task");
        sent.extend(mine);
        failures += failed;
    }
    let enqueued = started.elapsed();
    println!(
        "enqueue: {:.0} events/s ({} events in {enqueued:.2?}, {failures} failed batches)",
        sent.len() as f64 / enqueued.as_secs_f64(),
        sent.len()
    );

    let complete = arrivals.wait_for(sent.len(), within).await;
    let (mut latency, missing) = latencies(&arrivals, &sent);
    let last = sent
        .iter()
        .filter_map(|one| arrivals.arrival(&one.event))
        .max()
        .unwrap_or(started);
    let span = last.saturating_duration_since(started);
    println!(
        "deliveries: {:.0}/s ({} delivered in {span:.2?}{})",
        latency.len() as f64 / span.as_secs_f64().max(f64::EPSILON),
        latency.len(),
        if complete {
            String::new()
        } else {
            format!(", stopped waiting after {within:?}")
        }
    );
    println!("enqueue→delivered latency: {}", percentiles(&mut latency));
    if !missing.is_empty() {
        explain_missing(&nodes[0], &missing).await;
    }
}

async fn steady_phase(
    nodes: &[Arc<Gateway>],
    arrivals: Arc<Arrivals>,
    rate: u64,
    seconds: u64,
    within: Duration,
) {
    let total = (rate * seconds) as usize;
    println!("phase 2: {rate} events/s for {seconds}s, single POST /v1/events, open loop");
    // Phase 1 waited for its events (or reported that it gave up); from here on, arrivals are
    // phase 2's.
    let before = arrivals.distinct();
    let sent = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let answered = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let failures = Arc::new(AtomicUsize::new(0));
    let slow_shown = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = tokio::time::Instant::now();
    let mut requests = Vec::with_capacity(total);
    for seq in 0..total {
        let scheduled = started + interval.mul_f64(seq as f64);
        tokio::time::sleep_until(scheduled).await;
        let gateway = nodes[seq % nodes.len()].clone();
        let sent = sent.clone();
        let answered = answered.clone();
        let failures = failures.clone();
        let slow_shown = slow_shown.clone();
        requests.push(tokio::spawn(async move {
            let body = json!({"type": "payment.confirmed", "data": payload(seq)});
            let answer = gateway.post_json("/v1/events", &body).await;
            let took = scheduled.elapsed();
            answered.lock().unwrap().push(took);
            if took > Duration::from_millis(100) && !slow_shown.swap(true, Ordering::Relaxed) {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                println!(
                    "first slow publish answer: {took:.1?}, answered at unix {:.3} s",
                    unix.as_secs_f64()
                );
            }
            let published = (answer.status == 201)
                .then(|| serde_json::from_value::<PublishedEvent>(answer.json.clone()).ok())
                .flatten()
                .and_then(|event| event.sent(scheduled.into_std()));
            match published {
                Some(one) => sent.lock().unwrap().push(one),
                None => {
                    if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                        println!("first failed publish: {answer:?}");
                    }
                }
            }
        }));
    }
    let offered = started.elapsed();
    for request in requests {
        request.await.expect("publish task");
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    println!(
        "offered: {total} events in {offered:.2?} ({:.0}/s), {} failed",
        total as f64 / offered.as_secs_f64(),
        failures.load(Ordering::Relaxed)
    );
    println!(
        "steady publish answer latency: {}",
        percentiles(&mut answered.lock().unwrap())
    );
    let complete = arrivals.wait_for(before + sent.len(), within).await;
    let (mut latency, missing) = latencies(&arrivals, &sent);
    if !complete {
        println!("stopped waiting after {within:?}");
    }
    println!(
        "steady enqueue→delivered latency: {}",
        percentiles(&mut latency)
    );
    if !missing.is_empty() {
        explain_missing(&nodes[0], &missing).await;
    }
}

fn main() {
    let events = env_number("BENCH_EVENTS", 100_000) as usize;
    let rate = env_number("BENCH_RATE", 1_000).max(1);
    let seconds = env_number("BENCH_SECS", 10);
    let within = Duration::from_secs(env_number("BENCH_TIMEOUT_SECS", 600));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    runtime.block_on(async {
        let arrivals = Arc::new(Arrivals::new(events + (rate * seconds) as usize));
        let receiver = start_receiver(arrivals.clone(), Arc::default()).await;
        let mut config = support::endpoint(
            "bench",
            &format!("http://{receiver}/hook"),
            "concurrency = 256\nretry_jitter = 0.0\nretry_schedule = [\"0s\", \"1s\", \"5s\"]",
        );
        // BENCH_PLUGIN=NAME runs every event through target/plugins/NAME.wasm.
        let plugin_dir = tempfile::tempdir().expect("creating the plugins directory");
        if let Ok(name) = std::env::var("BENCH_PLUGIN") {
            let component = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/plugins")
                .join(format!("{name}.wasm"));
            std::fs::copy(&component, plugin_dir.path().join(format!("{name}.wasm")))
                .unwrap_or_else(|err| {
                    panic!(
                        "{}: {err} (run `cargo run -p hookgate-plugin-build`)",
                        component.display()
                    )
                });
            config = format!(
                "[plugins]\ndir = '{}'\n\n{config}[[endpoints.plugins]]\nname = \"{name}\"\n",
                plugin_dir.path().display()
            );
            println!("plugin chain: {name}");
        }
        // BENCH_STALLED=1 adds a second endpoint whose plugin blocks every call until the
        // wall-clock bound stops it: what a pathological plugin costs the publisher and the
        // healthy endpoint.
        if env_number("BENCH_STALLED", 0) == 1 {
            let sleepy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/plugins/sleepy.wasm");
            std::fs::copy(&sleepy, plugin_dir.path().join("sleepy.wasm")).unwrap_or_else(|err| {
                panic!(
                    "{}: {err} (run `cargo run -p hookgate-plugin-build`)",
                    sleepy.display()
                )
            });
            if !config.contains("[plugins]") {
                config = format!(
                    "[plugins]\ndir = '{}'\n\n{config}",
                    plugin_dir.path().display()
                );
            }
            config.push_str(&format!(
                "\n{}[[endpoints.plugins]]\nname = \"sleepy\"\nconfig = {{ always = true }}\n",
                support::endpoint("stalled", &format!("http://{receiver}/stalled"), "")
            ));
            println!("a second endpoint's plugin stalls every call (sleepy, always)");
        }
        let postgres = support::test_backend() == support::Backend::Postgres;
        let count = env_number("BENCH_NODES", 1).max(1) as usize;
        assert!(
            count == 1 || postgres,
            "BENCH_NODES > 1 needs HOOKGATE_TEST_BACKEND=postgres: nodes share a database"
        );
        let nodes: Vec<Arc<Gateway>> = if count == 1 {
            vec![Arc::new(Gateway::start(&config).await)]
        } else {
            let url = support::postgres::cluster().fresh_database().await;
            let mut nodes = Vec::new();
            for _ in 0..count {
                nodes.push(Arc::new(Gateway::start_node(&url, &config).await));
            }
            println!("{count} gateway nodes on one PostgreSQL database");
            nodes
        };
        let pids: Vec<u32> = nodes.iter().map(|node| node.pid()).collect();
        let rss = |pids: &[u32]| {
            pids.iter()
                .map(|pid| peak_rss(*pid))
                .collect::<Vec<_>>()
                .join(", ")
        };

        let database = postgres.then(|| support::postgres::cluster().postmaster_pid());
        let cpu_before = cpu_of(&pids, database);
        bulk_phase(&nodes, arrivals.clone(), events, within).await;
        let cpu_after = cpu_of(&pids, database);
        println!("peak RSS after phase 1: {}", rss(&pids));
        let delivered = arrivals.distinct().max(1) as f64;
        println!(
            "CPU per delivery, phase 1: gateway {:.0} µs, database {}",
            (cpu_after.0 - cpu_before.0) / delivered * 1e6,
            match (cpu_before.1, cpu_after.1) {
                (Some(before), Some(after)) =>
                    format!("{:.0} µs", (after - before) / delivered * 1e6),
                _ => "none (redb is in the gateway's process)".to_owned(),
            }
        );
        if seconds > 0 {
            steady_phase(&nodes, arrivals.clone(), rate, seconds, within).await;
            println!("peak RSS after phase 2: {}", rss(&pids));
        }
        for (number, node) in nodes.iter().enumerate() {
            let problems = node.log_problems();
            if !problems.is_empty() {
                println!(
                    "node {number} logged {} warnings or errors; the first few:",
                    problems.len()
                );
                for line in problems.iter().take(5) {
                    println!("  {line}");
                }
            }
        }
        if postgres {
            let moments = support::postgres::cluster().slow_moments();
            println!(
                "database: {} slow statements, autovacuum runs or checkpoints logged",
                moments.len()
            );
            for line in moments.iter().rev().take(12).rev() {
                println!("  {line}");
            }
        }
        let requests = arrivals.requests.load(Ordering::Relaxed);
        let distinct = arrivals.distinct();
        println!(
            "receiver: {requests} requests for {distinct} events ({} repeats)",
            requests.saturating_sub(distinct)
        );
    });
}
