//! Retry rules, as plain functions of an attempt's outcome.
//!
//! 2xx delivers; 410 Gone disables the endpoint; every other status, connect error or timeout
//! is a failed attempt, retried after the schedule's next delay (scaled by a random factor in
//! `1 ± jitter` so a recovering receiver is not hit by every retry at once) or after the
//! receiver's `Retry-After`, clamped. When the schedule runs out the delivery is dead-lettered.

use std::time::{Duration, SystemTime};

use crate::queue::Decision;
use crate::time::UnixMillis;

/// How one endpoint retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before attempt 1, 2, …; its length is the number of attempts.
    pub schedule: Vec<Duration>,
    pub jitter: f64,
    pub max_retry_after: Duration,
}

/// What came back from one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    Response {
        status: u16,
        retry_after: Option<Duration>,
    },
    Failed {
        error: String,
    },
}

impl AttemptResult {
    /// A short description for `last_error` and dead-letter reasons.
    pub fn describe(&self) -> String {
        match self {
            AttemptResult::Response { status, .. } => {
                let reason = hyper::StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|code| code.canonical_reason())
                    .unwrap_or("");
                format!("receiver answered HTTP {status} {reason}")
                    .trim_end()
                    .to_owned()
            }
            AttemptResult::Failed { error } => error.clone(),
        }
    }
}

impl RetryPolicy {
    /// Decides what follows attempt number `attempt_in_cycle` (1-based) of the current cycle.
    ///
    /// `random` is a uniform sample in `[0, 1)` that drives the jitter.
    pub fn decide(
        &self,
        result: &AttemptResult,
        attempt_in_cycle: u32,
        now: UnixMillis,
        random: f64,
    ) -> Decision {
        let retry_after = match result {
            AttemptResult::Response { status, .. } if (200..300).contains(status) => {
                return Decision::Delivered;
            }
            AttemptResult::Response { status: 410, .. } => {
                return Decision::DisableEndpoint {
                    reason: "receiver answered 410 Gone: endpoint disabled; enable it to \
                             deliver again"
                        .to_owned(),
                };
            }
            AttemptResult::Response { retry_after, .. } => *retry_after,
            AttemptResult::Failed { .. } => None,
        };
        let Some(scheduled) = self.schedule.get(attempt_in_cycle as usize) else {
            return Decision::DeadLetter {
                reason: format!(
                    "gave up after {attempt_in_cycle} attempts; last: {}",
                    result.describe()
                ),
            };
        };
        let delay = match retry_after {
            Some(asked) => asked.min(self.max_retry_after),
            None => self.jittered(*scheduled, random),
        };
        // Saturating: a receiver's absurd Retry-After must not overflow the clock.
        let delay = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        Decision::Retry {
            at: now.saturating_add(delay),
        }
    }

    /// `base` scaled by a factor in `[1 - jitter, 1 + jitter)`.
    fn jittered(&self, base: Duration, random: f64) -> Duration {
        let factor = 1.0 + self.jitter * (2.0 * random - 1.0);
        base.mul_f64(factor.max(0.0))
    }
}

/// Parses a `Retry-After` value: delta seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            schedule: crate::config::default_retry_schedule(),
            jitter,
            max_retry_after: Duration::from_secs(3600),
        }
    }

    fn status(code: u16) -> AttemptResult {
        AttemptResult::Response {
            status: code,
            retry_after: None,
        }
    }

    #[test]
    fn a_huge_retry_after_saturates_instead_of_overflowing() {
        let policy = RetryPolicy {
            max_retry_after: Duration::MAX,
            ..policy(0.0)
        };
        let result = AttemptResult::Response {
            status: 503,
            retry_after: parse_retry_after("18446744073709551615", SystemTime::now()),
        };
        assert_eq!(
            policy.decide(&result, 1, 1_795_000_000_000, 0.5),
            Decision::Retry { at: u64::MAX }
        );
        assert!(crate::time::rfc3339(u64::MAX).starts_with("9999-12-31T23:59:59"));
    }

    #[test]
    fn any_2xx_is_delivered() {
        for code in [200, 201, 204, 299] {
            assert_eq!(
                policy(0.2).decide(&status(code), 1, 0, 0.5),
                Decision::Delivered
            );
        }
    }

    #[test]
    fn gone_disables_the_endpoint() {
        let decision = policy(0.2).decide(&status(410), 1, 0, 0.5);
        assert!(matches!(decision, Decision::DisableEndpoint { reason } if reason.contains("410")));
    }

    #[test]
    fn failures_follow_the_schedule_without_jitter() {
        let policy = policy(0.0);
        assert_eq!(
            policy.decide(&status(500), 1, 1_000, 0.9),
            Decision::Retry { at: 6_000 }
        );
        assert_eq!(
            policy.decide(&status(302), 2, 1_000, 0.1),
            Decision::Retry { at: 301_000 }
        );
        let timeout = AttemptResult::Failed {
            error: "timed out".into(),
        };
        assert_eq!(
            policy.decide(&timeout, 7, 0, 0.5),
            Decision::Retry { at: 36_000_000 }
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let policy = policy(0.2);
        let low = policy.decide(&status(503), 1, 0, 0.0);
        let high = policy.decide(&status(503), 1, 0, 0.999_999);
        assert_eq!(low, Decision::Retry { at: 4_000 });
        assert!(matches!(high, Decision::Retry { at } if (5_999..=6_000).contains(&at)));
    }

    #[test]
    fn retry_after_replaces_the_delay_and_is_clamped() {
        let policy = policy(0.2);
        let asked = AttemptResult::Response {
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            policy.decide(&asked, 1, 0, 0.5),
            Decision::Retry { at: 2_000 }
        );
        let greedy = AttemptResult::Response {
            status: 503,
            retry_after: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(
            policy.decide(&greedy, 1, 0, 0.5),
            Decision::Retry { at: 3_600_000 }
        );
    }

    #[test]
    fn the_last_failed_attempt_dead_letters_with_the_reason() {
        let decision = policy(0.2).decide(&status(500), 8, 0, 0.5);
        match decision {
            Decision::DeadLetter { reason } => {
                assert!(reason.contains("after 8 attempts"), "{reason}");
                assert!(
                    reason.contains("HTTP 500 Internal Server Error"),
                    "{reason}"
                );
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
