//! Chain scanning speed of the `hookgate` binary against a real anvil node on loopback.
//!
//! 1. **Catch-up.** 1,000 payments (half native, half the project's ERC-20) are created on a
//!    gateway with no chain configured; it is stopped; `BENCH_BLOCKS` blocks (default 10,000)
//!    are mined holding 2,000 transfers to the payments' addresses (each payment paid in two
//!    halves: 1,000 native transactions and 1,000 token transfers in `transferMany` batches);
//!    then the gateway starts again with the chain configured to begin at the first of those
//!    blocks. Prints the scan rate (blocks / time to the scanner's "caught up" log line), the
//!    time until all 1,000 `payment.confirmed` events reached the receiver, and peak RSS.
//! 2. **Tip detection.** anvil mines a block every second; the gateway polls every
//!    `BENCH_POLL_MS` (default 250). For `BENCH_SAMPLES` payments (default 15), the time from
//!    the transfer's block being mined (seen by polling its receipt every 2 ms) to the
//!    `payment.detected` webhook reaching the receiver.
//!
//! Figures are printed; nothing is asserted. Every wait has a deadline. Run with
//! `cargo bench -p hookgate --bench chain_scan`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use serde_json::{Value, json};
use support::chain::{ANVIL_XPUB, Anvil, CHAIN_ID, ether};
use support::measure::{env_number, peak_rss, percentiles};
use support::{Gateway, Received, Receiver, SECRET, poll_until};

const PAYMENTS: usize = 1000;
const DEADLINE: Duration = Duration::from_secs(600);

fn sections(receiver: &Receiver) -> String {
    format!(
        "[payments]\nxpub = \"{ANVIL_XPUB}\"\ndefault_expiry = \"24h\"\n\n\
         [[endpoints]]\nid = \"merchant\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         event_types = [\"payment.detected\", \"payment.confirmed\"]\n",
        receiver.url("/hooks")
    )
}

fn chain(rpc: &str, start: u64, poll_ms: u64, token: Option<Address>) -> String {
    let token = token
        .map(|token| {
            format!("[[chains.tokens]]\nsymbol = \"USDC\"\ncontract = \"{token}\"\ndecimals = 6\n")
        })
        .unwrap_or_default();
    format!(
        "\n[[chains]]\nname = \"anvil\"\nchain_id = {CHAIN_ID}\nrpc_url = \"{rpc}\"\n\
         confirmations = 12\npoll_interval = \"{poll_ms}ms\"\nstart_block = {start}\n\
         batch_blocks = 500\n{token}"
    )
}

fn count(requests: &[Received], event_type: &str) -> usize {
    let mut ids: Vec<String> = requests
        .iter()
        .map(Received::json)
        .filter(|body| body["type"] == event_type)
        .map(|body| body["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

async fn catch_up() {
    let blocks = env_number("BENCH_BLOCKS", 10_000);
    let anvil = Anvil::start().await;
    let usdc = anvil.deploy_token("USDC", 6).await;
    let receiver = Receiver::ok().await;
    // The chain starts far ahead at first, so the scanner idles while the payments are made.
    let start = anvil.head().await + 1;
    let idle = start + 1_000_000_000;
    let mut gateway = Gateway::start(&format!(
        "{}{}",
        sections(&receiver),
        chain(&anvil.url, idle, 200, Some(usdc))
    ))
    .await;
    let mut addresses = Vec::with_capacity(PAYMENTS);
    for index in 0..PAYMENTS {
        let token = if index % 2 == 0 {
            Value::Null
        } else {
            json!("usdc")
        };
        let body = json!({"chain": "anvil", "amount": "1", "token": token});
        let created = gateway.post_json("/v1/payments", &body).await;
        assert_eq!(created.status, 201, "{created:#?}");
        addresses.push(created.json["address"].as_str().unwrap().to_owned());
    }
    gateway.kill9().await;

    let generating = Instant::now();
    let native: Vec<&String> = addresses.iter().step_by(2).collect();
    let tokens: Vec<&String> = addresses.iter().skip(1).step_by(2).collect();
    let half_token = U256::from(500_000u64);
    let mut token_payments: Vec<(&str, U256)> = Vec::new();
    for address in &tokens {
        token_payments.push((address, half_token));
        token_payments.push((address, half_token));
    }
    let transactions = native.len() * 2 + token_payments.len().div_ceil(50);
    let gap = blocks.saturating_sub(transactions as u64 + 20) / transactions as u64;
    let mut batches = token_payments.chunks(50);
    for (index, address) in native.iter().cycle().take(native.len() * 2).enumerate() {
        anvil.pay(address, ether(1) / U256::from(2)).await;
        anvil.mine(gap).await;
        if index % 20 == 0
            && let Some(batch) = batches.next()
        {
            anvil.pay_token_many(usdc, batch).await;
            anvil.mine(gap).await;
        }
    }
    for batch in batches {
        anvil.pay_token_many(usdc, batch).await;
        anvil.mine(gap).await;
    }
    let head = anvil.head().await;
    let remaining = (start + blocks).saturating_sub(head + 1);
    anvil.mine(remaining.max(20)).await;
    let head = anvil.head().await;
    println!(
        "catch-up: generated blocks {start}..={head} ({} blocks, {} transactions) in {:.1?}",
        head - start + 1,
        transactions,
        generating.elapsed()
    );

    // Scan from `start` now.
    let config = std::fs::read_to_string(gateway.dir().join("hookgate.toml")).unwrap();
    let config = config.replace(
        &format!("start_block = {idle}"),
        &format!("start_block = {start}"),
    );
    std::fs::write(gateway.dir().join("hookgate.toml"), config).unwrap();
    let began = Instant::now();
    gateway.restart().await;
    let log = poll_until(
        DEADLINE,
        "the scanner to catch up",
        || async { gateway.log_tail() },
        |log| log.contains("caught up with the chain head"),
    )
    .await;
    let scanned = began.elapsed();
    let line = log
        .lines()
        .find(|line| line.contains("caught up with the chain head"))
        .unwrap_or_default()
        .to_owned();
    receiver
        .wait_for(DEADLINE, "every payment.confirmed", |requests| {
            (count(requests, "payment.confirmed") >= PAYMENTS).then_some(())
        })
        .await;
    let confirmed = began.elapsed();
    let requests = receiver.requests();
    println!(
        "catch-up: {} blocks scanned in {:.2?} from process start = {:.0} blocks/s; scanner: {}",
        head - start + 1,
        scanned,
        (head - start + 1) as f64 / scanned.as_secs_f64(),
        line.split("caught up with the chain head")
            .nth(1)
            .unwrap_or("")
            .trim()
    );
    println!(
        "catch-up: all {PAYMENTS} payments confirmed {:.2?} after start ({} detected, {} confirmed events); peak RSS {}",
        confirmed,
        count(&requests, "payment.detected"),
        count(&requests, "payment.confirmed"),
        peak_rss(gateway.pid())
    );
}

async fn tip() {
    let poll_ms = env_number("BENCH_POLL_MS", 250);
    let samples = env_number("BENCH_SAMPLES", 15) as usize;
    let anvil = Anvil::with_block_time(1.0).await;
    let receiver = Receiver::ok().await;
    let head = anvil.head().await;
    let gateway = Gateway::start(&format!(
        "{}{}",
        sections(&receiver),
        chain(&anvil.url, head, poll_ms, None)
    ))
    .await;
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let created = gateway
            .post_json("/v1/payments", &json!({"chain": "anvil", "amount": "1"}))
            .await;
        let id = created.json["payment_id"].as_str().unwrap().to_owned();
        let address = created.json["address"].as_str().unwrap().to_owned();
        let hash = anvil
            .rpc(
                "eth_sendTransaction",
                json!([{"from": support::chain::PAYER, "to": address, "value": "0xde0b6b3a7640000"}]),
            )
            .await;
        let mined_at = loop {
            let receipt = anvil.rpc("eth_getTransactionReceipt", json!([hash])).await;
            if !receipt.is_null() {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let arrived = receiver
            .wait_for(Duration::from_secs(30), "payment.detected", |requests| {
                requests.iter().find_map(|request| {
                    let body = request.json();
                    (body["type"] == "payment.detected" && body["data"]["payment_id"] == id)
                        .then_some(request.arrived)
                })
            })
            .await;
        latencies.push(arrived.saturating_duration_since(mined_at));
    }
    println!(
        "tip: block time 1 s, poll interval {poll_ms} ms: mined → payment.detected at the receiver {}",
        percentiles(&mut latencies)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        if env_number("BENCH_SKIP_CATCHUP", 0) == 0 {
            catch_up().await;
        }
        tip().await;
    });
}
