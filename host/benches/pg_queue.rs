//! The PostgreSQL delivery queue on its own: how fast events go in and deliveries come out,
//! and what each delivery costs in CPU, in this process and in the database.
//!
//! A throwaway cluster with PostgreSQL's durable defaults (fsync on) is started for the run.
//! `BENCH_EVENTS` events (default 100 000), one delivery each, are published in batches of
//! `BENCH_BATCH` (default 1 000) through `PgQueue::publish`; then `BENCH_WORKERS` workers
//! (default 4) claim up to `BENCH_CLAIM` (default 100) due deliveries at a time and settle
//! each claim as delivered in one batch, as lanes would after their HTTP attempts. No HTTP is
//! sent: this is the queue's share of a delivery. CPU is read from `/proc` for this process
//! and for every process of the cluster (the postmaster and its children).
//!
//! Nothing is asserted. Run with `cargo bench -p hookgate --bench pg_queue`.

#[path = "../../tests/support/postgres.rs"]
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookgate::events::{default_body, fingerprint};
use hookgate::ids::{DeliveryId, EventId};
use hookgate::plugins::Rendered;
use hookgate::queue::{AttemptReport, Decision, DeliveryContent, NewDelivery, NewEvent};
use hookgate::store::postgres::PgStore;
use hookgate::store::postgres::queue::{PgQueue, Settlement};
use hookgate::store::{AttemptRecord, PendingDelivery};
use hookgate::time::now_millis;
use serde_json::value::RawValue;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Clock ticks per second of `/proc/*/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// User + system CPU seconds of process `pid`, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds of the cluster so far: the postmaster and each of its children.
fn cluster_cpu(postmaster: u32) -> f64 {
    let children: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(postmaster))
        .filter_map(cpu_seconds)
        .sum();
    children + cpu_seconds(postmaster).unwrap_or(0.0)
}

fn own_cpu() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn event(n: usize) -> NewEvent {
    let id = EventId::new();
    let created_at = now_millis();
    let data = format!(r#"{{"payment_id":"pay-{n}","status":"confirmed","amount":"12.50"}}"#);
    NewEvent {
        id,
        event_type: "payment.confirmed".to_owned(),
        created_at,
        fingerprint: fingerprint("payment.confirmed", &data),
        deliveries: vec![NewDelivery {
            id: DeliveryId::new(),
            endpoint_id: "orders".to_owned(),
            content: DeliveryContent::Ready(Rendered::default_json(default_body(
                id,
                "payment.confirmed",
                created_at,
                &data,
            ))),
        }],
        data: RawValue::from_string(data).expect("JSON"),
        idempotency_key: None,
    }
}

fn delivered(
    delivery: &PendingDelivery,
    token: hookgate::store::postgres::queue::ClaimToken,
) -> Settlement {
    let PendingDelivery::Ready { record, .. } = delivery else {
        panic!("the bench publishes ready deliveries only");
    };
    Settlement {
        report: AttemptReport {
            delivery_id: record.id,
            endpoint_id: record.endpoint_id.clone(),
            attempt: Some(AttemptRecord {
                number: record.attempt_count + 1,
                at: now_millis(),
                status_code: Some(200),
                latency_ms: 1,
                error: None,
                response_snippet: None,
            }),
            decision: Decision::Delivered,
        },
        token,
    }
}

/// (wall seconds, this process's CPU seconds, the cluster's CPU seconds) of `work`.
async fn measured<F: std::future::Future<Output = ()>>(
    postmaster: u32,
    work: F,
) -> (f64, f64, f64) {
    let (own, db, started) = (own_cpu(), cluster_cpu(postmaster), Instant::now());
    work.await;
    (
        started.elapsed().as_secs_f64(),
        own_cpu() - own,
        cluster_cpu(postmaster) - db,
    )
}

fn main() {
    let events = env_number("BENCH_EVENTS", 100_000);
    let batch = env_number("BENCH_BATCH", 1_000).max(1);
    let workers = env_number("BENCH_WORKERS", 4).max(1);
    let claim = env_number("BENCH_CLAIM", 100).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    runtime.block_on(async {
        let cluster = postgres::cluster();
        let url = cluster.fresh_database().await;
        let store = PgStore::connect(&url, workers + 2).expect("a pool");
        hookgate::store::postgres::migrate::migrate(&store)
            .await
            .expect("migrations");
        let queue = Arc::new(PgQueue::new(store));
        let postmaster = cluster.postmaster_pid();
        println!(
            "pg_queue: {events} events in batches of {batch}; {workers} workers claiming {claim} \
             at a time (fsync on, no HTTP)"
        );

        let all: Vec<NewEvent> = (0..events).map(event).collect();
        let (wall, own, db) = measured(postmaster, async {
            for chunk in all.chunks(batch) {
                queue.publish(chunk, None).await.expect("publish");
            }
        })
        .await;
        let per = |seconds: f64| seconds * 1e6 / events as f64;
        println!(
            "publish: {:.0} events/s; CPU per event: gateway {:.1} µs, database {:.1} µs",
            events as f64 / wall,
            per(own),
            per(db)
        );
        let publish_cpu = own + db;

        let (wall, own, db) = measured(postmaster, async {
            let tasks: Vec<_> = (0..workers)
                .map(|_| {
                    let queue = queue.clone();
                    tokio::spawn(async move {
                        loop {
                            let claimed = queue
                                .claim("orders", claim, Duration::from_secs(60))
                                .await
                                .expect("claim");
                            if claimed.deliveries.is_empty() {
                                return;
                            }
                            let done: Vec<Settlement> = claimed
                                .deliveries
                                .iter()
                                .map(|d| delivered(d, claimed.token))
                                .collect();
                            let settled = queue.settle(&done).await.expect("settle");
                            assert!(settled.refused.is_empty(), "no lease runs out here");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("a worker");
            }
        })
        .await;
        println!(
            "claim + settle: {:.0} deliveries/s; CPU per delivery: gateway {:.1} µs, database {:.1} µs",
            events as f64 / wall,
            per(own),
            per(db)
        );
        println!(
            "queue path in all (publish + claim + settle): {:.1} µs CPU per delivery, gateway and database together",
            per(publish_cpu + own + db)
        );
    });
}
