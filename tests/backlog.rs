//! A large backlog behind a receiver that never answers, on the real binary: the backlog waits
//! in the redb file rather than in memory, another endpoint keeps delivering meanwhile, and
//! after a `kill -9` the whole backlog drains, each event once.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::counting::{Arrivals, start_receiver};
use support::{Gateway, endpoint};

const EVENTS: usize = 100_000;
const BATCH: usize = 1_000;
/// Pending deliveries at the first memory reading.
const EARLY: usize = 10_000;
const LIVE_EVENTS: usize = 20;
/// What the gateway's peak memory may grow by while the backlog grows tenfold. The old
/// in-memory lanes grew by about 1.7 KB per pending delivery (≈ 150 MB here); redb's page cache
/// is capped at 16 MiB in this test, and a lane holds at most 4096 deliveries.
const GROWTH_ALLOWANCE_KB: u64 = 48 * 1024;
/// Generous deadlines: the test binary is a debug build on a shared 2-core machine.
const LIVE_DEADLINE: Duration = Duration::from_secs(30);
const DRAIN_DEADLINE: Duration = Duration::from_secs(600);

/// Peak resident set size of `pid` in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    support::measure::status_kb(pid, "VmHWM").expect("VmHWM in /proc/PID/status")
}

async fn publish_bulk(gateway: &Gateway, batches: std::ops::Range<usize>) {
    for batch in batches {
        let list: Vec<Value> = (batch * BATCH..(batch + 1) * BATCH)
            .map(|seq| json!({"type": "bulk.created", "data": {"seq": seq}}))
            .collect();
        let answer = gateway
            .post_json("/v1/events/batch", &json!({"events": list}))
            .await;
        assert_eq!(answer.status, 201, "{:#?}", answer.json);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_to_a_dead_receiver_waits_on_disk_and_drains_after_kill_9() {
    let arrivals = Arc::new(Arrivals::new(EVENTS + LIVE_EVENTS));
    let hang = Arc::new(AtomicBool::new(true));
    let receiver = start_receiver(arrivals.clone(), hang.clone()).await;
    let config = format!(
        "[delivery]\nrequest_timeout = \"300s\"\n\n{}{}",
        endpoint(
            "dead",
            &format!("http://{receiver}/hang"),
            "concurrency = 8\nevent_types = [\"bulk.created\"]"
        ),
        endpoint(
            "live",
            &format!("http://{receiver}/live"),
            "event_types = [\"live.tick\"]"
        ),
    );
    // A small page cache makes the lanes' own memory the thing measured.
    let mut gateway = Gateway::start_with_store("cache_mib = 16", &config).await;

    publish_bulk(&gateway, 0..EARLY / BATCH).await;
    let early = peak_rss_kb(gateway.pid());
    let started = Instant::now();
    publish_bulk(&gateway, EARLY / BATCH..EVENTS / BATCH).await;
    let late = peak_rss_kb(gateway.pid());
    println!(
        "published {EVENTS} events to a receiver that never answers ({:.1?} for the last {}); \
         peak RSS {early} kB at {EARLY} pending, {late} kB at {EVENTS}",
        started.elapsed(),
        EVENTS - EARLY
    );
    assert!(
        late.saturating_sub(early) <= GROWTH_ALLOWANCE_KB,
        "peak RSS grew from {early} kB to {late} kB while the backlog grew from {EARLY} to \
         {EVENTS}: memory follows the backlog"
    );

    // The metrics page reads the backlog from the store.
    let page = gateway
        .send(gateway.raw_client().get(gateway.url("/metrics")))
        .await;
    assert!(
        page.text.contains(&format!(
            "hookgate_queue_depth{{endpoint=\"dead\"}} {EVENTS}"
        )),
        "{}",
        page.text
    );
    assert!(
        page.text
            .contains("hookgate_queue_oldest_due_seconds{endpoint=\"dead\"}"),
        "{}",
        page.text
    );

    // The other endpoint is not stuck behind the backlog.
    let started = Instant::now();
    for seq in 0..LIVE_EVENTS {
        let answer = gateway
            .post_json(
                "/v1/events",
                &json!({"type": "live.tick", "data": {"seq": seq}}),
            )
            .await;
        assert_eq!(answer.status, 201, "{:#?}", answer.json);
    }
    assert!(
        arrivals.wait_for(LIVE_EVENTS, LIVE_DEADLINE).await,
        "only {} of {LIVE_EVENTS} live events arrived with the backlog pending; log:\n{}",
        arrivals.distinct(),
        gateway.log_tail()
    );
    println!(
        "{LIVE_EVENTS} live events delivered in {:.1?} with the backlog pending",
        started.elapsed()
    );

    // Crash, let the receiver answer, and start again on the same file.
    gateway.kill9().await;
    hang.store(false, Ordering::Release);
    let started = Instant::now();
    gateway.restart().await;
    let complete = arrivals
        .wait_for(EVENTS + LIVE_EVENTS, DRAIN_DEADLINE)
        .await;
    let took = started.elapsed();
    assert!(
        complete,
        "{} of {EVENTS} backlog events arrived after the restart; log:\n{}",
        arrivals.distinct() - LIVE_EVENTS,
        gateway.log_tail()
    );
    let requests = arrivals.requests.load(Ordering::Relaxed);
    println!(
        "drained {EVENTS} after kill -9 in {took:.1?} ({:.0}/s, debug build); peak RSS {} kB; \
         {requests} requests in all",
        EVENTS as f64 / took.as_secs_f64(),
        peak_rss_kb(gateway.pid())
    );
    // A live event whose answer arrived but whose outcome was not committed before the kill
    // is sent again (at-least-once); nothing else may repeat.
    assert!(
        requests - (EVENTS + LIVE_EVENTS) <= LIVE_EVENTS,
        "{requests} requests for {} events",
        EVENTS + LIVE_EVENTS
    );
}
