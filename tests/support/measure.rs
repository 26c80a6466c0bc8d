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

/// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`, …).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

fn kb_text(value: Option<u64>) -> String {
    value.map_or_else(|| "unknown".to_owned(), |kb| format!("{kb} kB"))
}

/// Peak resident set size of `pid`.
pub fn peak_rss(pid: u32) -> String {
    kb_text(status_kb(pid, "VmHWM"))
}

/// Resident set size of `pid` now.
pub fn current_rss(pid: u32) -> String {
    kb_text(status_kb(pid, "VmRSS"))
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
