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

/// CPU seconds (user + system, every thread) process `pid` has used; with `reaped`, plus what
/// its children that have exited used. `None` when `/proc` does not have it.
pub fn cpu_seconds(pid: u32, reaped: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // 12th, then stime, cutime, cstime.
    let fields: Vec<u64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    let ticks: u64 = if reaped {
        fields.iter().sum()
    } else {
        fields.iter().take(2).sum()
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / per_second)
}

/// CPU seconds a PostgreSQL server has used: the postmaster `pid`, its backends now running,
/// and those that have exited.
pub fn server_cpu_seconds(pid: u32) -> Option<f64> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let live: f64 = children
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .filter_map(|child| cpu_seconds(child, true))
        .sum();
    Some(cpu_seconds(pid, true)? + live)
}
