//! Memory and recovery of the release `hookgate` binary with a large backlog behind a dead
//! receiver, over loopback HTTP.
//!
//! Two endpoints point at one in-process receiver: `dead` (concurrency 64, 60 s request
//! timeout) gets `bulk.created` events and its requests are never answered; `live` gets
//! `live.tick` events and is answered at once.
//!
//! 1. **Baseline**: `BENCH_RATE` live events per second (default 200) for `BENCH_SECS` seconds
//!    (default 10), open loop; the live p99 from publish to arrival.
//! 2. **Backlog**: `BENCH_EVENTS` bulk events (default 1 000 000) published through
//!    `/v1/events/batch` (batches of 1000, 4 publishers) while the live load goes on; then
//!    the live load again with the whole backlog pending. Prints the gateway's RSS (current
//!    and peak) and the live p99 of both stretches.
//! 3. **Drain after `kill -9`**: the gateway is killed, the receiver starts answering `dead`,
//!    and the gateway is started again on the same file. Prints how long until every bulk
//!    event arrived and the rate, and the peak RSS of the new process.
//!
//! Nothing is asserted; every wait has a deadline (`BENCH_TIMEOUT_SECS`, default 900).
//! Run with `cargo bench -p hookgate --bench backlog`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::counting::{Arrivals, latency_line, open_loop, start_receiver};
use support::measure::{current_rss, env_number, peak_rss};
use support::{Gateway, endpoint};

const BATCH: usize = 1000;
const PUBLISHERS: usize = 4;

fn live_tick(seq: u64) -> Value {
    json!({"type": "live.tick", "data": {"seq": seq}})
}

/// Publishes `events` bulk events; returns how many the gateway accepted.
async fn publish_backlog(gateway: Arc<Gateway>, events: usize) -> usize {
    let batches = events.div_ceil(BATCH);
    let mut publishers = Vec::new();
    for publisher in 0..PUBLISHERS {
        let poster = gateway.poster();
        publishers.push(tokio::spawn(async move {
            let mut accepted = 0;
            for batch in (publisher..batches).step_by(PUBLISHERS) {
                let list: Vec<Value> = (batch * BATCH..((batch + 1) * BATCH).min(events))
                    .map(|seq| json!({"type": "bulk.created", "data": {"seq": seq}}))
                    .collect();
                let answer = poster
                    .post_json("/v1/events/batch", &json!({"events": list}))
                    .await
                    .expect("publishing a batch");
                assert_eq!(answer.status, 201, "{:?}", answer.json);
                accepted += answer.json["events"].as_array().map_or(0, Vec::len);
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for publisher in publishers {
        accepted += publisher.await.expect("a publisher");
    }
    accepted
}

fn main() {
    let events = env_number("BENCH_EVENTS", 1_000_000) as usize;
    let rate = env_number("BENCH_RATE", 200).max(1);
    let seconds = env_number("BENCH_SECS", 10);
    let within = Duration::from_secs(env_number("BENCH_TIMEOUT_SECS", 900));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    runtime.block_on(async {
        let arrivals = Arc::new(Arrivals::new(events + 4 * (rate * seconds) as usize));
        let hang = Arc::new(AtomicBool::new(true));
        let receiver = start_receiver(arrivals.clone(), hang.clone()).await;
        let config = format!(
            "[delivery]\nrequest_timeout = \"60s\"\nretry_jitter = 0.0\n\n{}{}",
            endpoint(
                "dead",
                &format!("http://{receiver}/hang"),
                "concurrency = 64\nevent_types = [\"bulk.created\"]"
            ),
            endpoint(
                "live",
                &format!("http://{receiver}/live"),
                "concurrency = 16\nevent_types = [\"live.tick\"]"
            ),
        );
        let mut gateway = Gateway::start(&config).await;
        let never = Arc::new(AtomicBool::new(false));

        let shared = Arc::new(gateway);
        let sent = open_loop(shared.clone(), rate, seconds, never.clone(), live_tick).await;
        println!(
            "baseline live latency: {}",
            latency_line(&arrivals, &sent, within).await
        );

        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(open_loop(shared.clone(), rate, u64::MAX, stop.clone(), live_tick));
        let started = Instant::now();
        let accepted = publish_backlog(shared.clone(), events).await;
        let took = started.elapsed();
        stop.store(true, Ordering::Release);
        let during = load.await.expect("the live load");
        let pid = shared.pid();
        println!(
            "backlog: {accepted} events published in {took:.1?} ({:.0}/s); RSS now {}, peak {}",
            accepted as f64 / took.as_secs_f64(),
            current_rss(pid),
            peak_rss(pid)
        );
        println!(
            "live latency while the backlog was published: {}",
            latency_line(&arrivals, &during, within).await
        );
        let sent = open_loop(shared.clone(), rate, seconds, never.clone(), live_tick).await;
        println!(
            "live latency with the backlog pending: {}; RSS now {}, peak {}",
            latency_line(&arrivals, &sent, within).await,
            current_rss(pid),
            peak_rss(pid)
        );

        gateway = Arc::try_unwrap(shared).unwrap_or_else(|_| panic!("the gateway is shared"));
        gateway.kill9().await;
        hang.store(false, Ordering::Release);
        let live_seen = arrivals.distinct();
        let started = Instant::now();
        gateway.restart().await;
        let target = live_seen + accepted;
        let complete = arrivals.wait_for(target, within).await;
        let took = started.elapsed();
        let drained = arrivals.distinct() - live_seen;
        println!(
            "drain after kill -9: {drained} of {accepted} in {took:.1?} ({:.0}/s) from restart{}; peak RSS {}",
            drained as f64 / took.as_secs_f64(),
            if complete { "" } else { " INCOMPLETE" },
            peak_rss(gateway.pid())
        );
        let requests = arrivals.requests.load(Ordering::Relaxed);
        println!(
            "receiver: {requests} requests for {} events ({} repeats)",
            arrivals.distinct(),
            requests.saturating_sub(arrivals.distinct())
        );
    });
}
