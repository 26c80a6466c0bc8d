//! What a plugin call costs, measured on real components from `target/plugins/` (build them
//! with `cargo run -p hookgate-plugin-build`).
//!
//! * load time of a component: compiling it, and deserializing it from the on-disk cache
//!   (what a restart pays with and without the cache);
//! * per-call time of a trivial filter (`noop`) on a small payment event;
//! * per-call time of a 1 KiB JSON transform (`legacy-flat` parsing a ~1 KiB event and
//!   rendering the flat body).
//!
//! Calls go through the same path the gateway uses (warm instance per endpoint, epoch
//! deadline, output checks). Each figure is the median of `BENCH_RUNS` runs (default 7) of
//! `BENCH_CALLS` calls (default 20 000). Nothing is asserted.
//! Run with `cargo bench -p hookgate --bench plugin_calls`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use hookgate::plugins::runtime::Event;
use hookgate::plugins::{Limits, LoadedPlugin, PluginRuntime};
use support::component;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("{name}={text:?} is not a number"))
        })
        .unwrap_or(default)
}

fn event(data: serde_json::Value) -> Event {
    let body = serde_json::json!({
        "type": "payment.confirmed",
        "timestamp": "2026-11-22T10:00:00Z",
        "id": "evt_01a2038d11c1768ca0388e71392a5a21",
        "data": data,
    });
    Event {
        id: "evt_01a2038d11c1768ca0388e71392a5a21".to_owned(),
        event_type: "payment.confirmed".to_owned(),
        timestamp: 1_795_341_600,
        now: 1_795_341_600,
        data: data.to_string(),
        body: body.to_string().into_bytes(),
        content_type: "application/json".to_owned(),
    }
}

fn payment() -> serde_json::Value {
    serde_json::json!({
        "payment_id": "7f0c5a4e-2d0b-4c1e-9a57-3f1f0d2b8c11",
        "status": "confirmed",
        "address": "0x8ba1f109551bd432803012645ac136ddd64dba72",
        "amount": "12.5",
        "amount_raw": "12500000",
        "chain": "ethereum",
        "chain_id": 1,
        "token_id": "usdc",
        "tx_hash": "0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060",
        "block_number": 123,
        "confirmations": 12
    })
}

/// A payment event whose body is about 1 KiB (merchant metadata included).
fn one_kib_payment() -> serde_json::Value {
    let mut data = payment();
    data["metadata"] = serde_json::json!({
        "order_id": "ord_5f3a9b2c7d1e",
        "customer": "cus_8c1d2e3f4a5b",
        "items": (0..6).map(|n| serde_json::json!({"sku": format!("SKU-{n:04}"), "qty": n + 1, "price": "19.99"})).collect::<Vec<_>>(),
        "note": "x".repeat(220),
    });
    data
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Median over `runs` of the mean time per call of `calls` calls, in microseconds.
fn per_call(runs: usize, calls: usize, mut call: impl FnMut()) -> f64 {
    for _ in 0..calls / 10 {
        call();
    }
    let samples = (0..runs)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..calls {
                call();
            }
            started.elapsed().as_secs_f64() * 1e6 / calls as f64
        })
        .collect();
    median(samples)
}

fn load_times(runs: usize) {
    let bytes = std::fs::read(component("slack")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut compiled = Vec::new();
    let mut cached = Vec::new();
    let key = hookgate::plugins::cache::CacheKey::random();
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(cache.path());
        let runtime = PluginRuntime::new(
            Limits::default(),
            Some((cache.path().to_owned(), key.clone())),
        )
        .unwrap();
        let started = Instant::now();
        let plugin = LoadedPlugin::load(&runtime, "slack", &bytes).unwrap();
        compiled.push(started.elapsed());
        assert!(!plugin.from_cache);
        let runtime = PluginRuntime::new(
            Limits::default(),
            Some((cache.path().to_owned(), key.clone())),
        )
        .unwrap();
        let started = Instant::now();
        let plugin = LoadedPlugin::load(&runtime, "slack", &bytes).unwrap();
        cached.push(started.elapsed());
        assert!(plugin.from_cache);
    }
    let ms = |list: Vec<Duration>| median(list.iter().map(|d| d.as_secs_f64() * 1e3).collect());
    println!(
        "load slack.wasm ({} KiB): compile {:.1} ms, from cache {:.2} ms (median of {runs})",
        bytes.len() / 1024,
        ms(compiled),
        ms(cached)
    );
}

fn main() {
    let runs = env_number("BENCH_RUNS", 7);
    let calls = env_number("BENCH_CALLS", 20_000);
    load_times(runs);

    let runtime = PluginRuntime::new(Limits::default(), None).unwrap();
    let noop =
        LoadedPlugin::load(&runtime, "noop", &std::fs::read(component("noop")).unwrap()).unwrap();
    let small = event(payment());
    let filter = per_call(runs, calls, || {
        assert!(noop.filter("bench", &small, "{}").unwrap());
    });
    println!(
        "trivial filter (noop, {} B event body): {filter:.2} µs/call (median of {runs} runs × {calls} calls)",
        small.body.len()
    );

    let flat = LoadedPlugin::load(
        &runtime,
        "legacy-flat",
        &std::fs::read(component("legacy-flat")).unwrap(),
    )
    .unwrap();
    let large = event(one_kib_payment());
    let transform = per_call(runs, calls, || {
        let outgoing = flat.transform("bench", &large, "{}").unwrap();
        assert!(!outgoing.body.is_empty());
    });
    println!(
        "1 KiB JSON transform (legacy-flat, {} B event body): {transform:.2} µs/call (median of {runs} runs × {calls} calls)",
        large.body.len()
    );
    let both = per_call(runs, calls, || {
        let outcome = flat.run_step("bench", &large, "{}").unwrap();
        assert!(matches!(
            outcome,
            hookgate::plugins::plugin::StepOutcome::Keep(_)
        ));
    });
    println!(
        "filter + transform as the gateway runs a chain step (legacy-flat, 1 KiB): {both:.2} µs/call"
    );
}
