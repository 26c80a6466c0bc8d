//! Disk use and latency of the release `hookgate` binary under a steady load with a short
//! retention, over loopback HTTP.
//!
//! One endpoint points at an in-process receiver that answers at once. `BENCH_RATE` events per
//! second (default 1 000), each with an idempotency key, are published open loop for
//! `BENCH_SECS` seconds (default 300). The store keeps settled events and keys for
//! `BENCH_RETENTION` seconds (default 60; `0` keeps the default 30 days, so the sweep finds
//! nothing: the run without the sweep) and sweeps every 5 s. Every 30 s the bench prints the
//! redb file's size and the publish-to-arrival latency of that stretch; at the end, the
//! latency of the whole run and the peak RSS.
//!
//! Nothing is asserted; every wait has a deadline. Compare a run with the default retention
//! against one with `BENCH_RETENTION=0`.
//! Run with `cargo bench -p hookgate --bench retention`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::counting::{Arrivals, latency_line, open_loop, start_receiver};
use support::measure::{env_number, peak_rss};
use support::{Gateway, endpoint};

/// How often the file size and the latency are printed.
const STRETCH_SECS: u64 = 30;

fn event(seq: u64) -> Value {
    json!({
        "type": "payment.confirmed",
        "data": {"seq": seq, "payment_id": format!("pay-{seq}"), "amount": "12.50"},
        "idempotency_key": format!("order-{seq}"),
    })
}

fn megabytes(path: &std::path::Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |meta| meta.len() as f64 / 1e6)
}

fn main() {
    let rate = env_number("BENCH_RATE", 1_000).max(1);
    let seconds = env_number("BENCH_SECS", 300).max(STRETCH_SECS);
    let retention = env_number("BENCH_RETENTION", 60);
    let within = Duration::from_secs(60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    runtime.block_on(async {
        let arrivals = Arc::new(Arrivals::new((rate * seconds) as usize));
        let receiver = start_receiver(arrivals.clone(), Arc::default()).await;
        let store = if retention == 0 {
            println!("retention: the default (30 days): the sweep removes nothing");
            "sweep_interval = \"5s\"".to_owned()
        } else {
            println!("retention: {retention} s for settled events and idempotency keys");
            format!(
                "retention = \"{retention}s\"\nidempotency_window = \"{retention}s\"\n\
                 sweep_interval = \"5s\""
            )
        };
        let gateway = Arc::new(
            Gateway::start_with_store(
                &store,
                &endpoint(
                    "bench",
                    &format!("http://{receiver}/hook"),
                    "concurrency = 64",
                ),
            )
            .await,
        );
        let file = gateway.dir().join("hookgate.redb");
        let never = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut all = Vec::new();
        for stretch in 0..seconds / STRETCH_SECS {
            // Events are numbered across stretches so every idempotency key is new.
            let offset = stretch * STRETCH_SECS * rate;
            let sent = open_loop(gateway.clone(), rate, STRETCH_SECS, never.clone(), |seq| {
                event(offset + seq)
            })
            .await;
            println!(
                "t={:>4}s file {:>7.1} MB; latency {}",
                started.elapsed().as_secs(),
                megabytes(&file),
                latency_line(&arrivals, &sent, within).await
            );
            all.extend(sent);
        }
        println!(
            "whole run: latency {}; file {:.1} MB; peak RSS {}",
            latency_line(&arrivals, &all, within).await,
            megabytes(&file),
            peak_rss(gateway.pid())
        );
    });
}
