//! What the benchmarks share: their `BENCH_*` knobs, a process's peak memory and latency
//! percentiles.

use std::time::Duration;

/// The whole number in environment variable `name`, or `default` when it is unset.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Peak resident set size of `pid`, from `/proc/PID/status`.
pub fn peak_rss(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .map(|value| value.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// p50 / p99 / max of `latencies`, which it sorts.
pub fn percentiles(latencies: &mut [Duration]) -> String {
    if latencies.is_empty() {
        return "no samples".to_owned();
    }
    latencies.sort_unstable();
    let at = |quantile: f64| {
        let index = ((latencies.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
        latencies[index.min(latencies.len() - 1)]
    };
    format!(
        "p50 {:.1?} p99 {:.1?} max {:.1?} ({} samples)",
        at(0.50),
        at(0.99),
        latencies[latencies.len() - 1],
        latencies.len()
    )
}
