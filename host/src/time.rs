//! Wall-clock helpers: the store keeps unix milliseconds, the API speaks RFC 3339.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch, as stored in redb.
pub type UnixMillis = u64;

/// The current wall-clock time in unix milliseconds.
pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z), in unix milliseconds.
const LAST_RFC3339_MILLIS: UnixMillis = 253_402_300_799_999;

/// Formats unix milliseconds as RFC 3339 with second precision (`2026-11-22T10:00:00Z`);
/// times past year 9999 (a saturated "never") print as its last second.
pub fn rfc3339(millis: UnixMillis) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(millis.min(LAST_RFC3339_MILLIS));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Parses an RFC 3339 timestamp into unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Result<UnixMillis, humantime::TimestampError> {
    let at = humantime::parse_rfc3339_weak(text)?;
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_at_second_precision() {
        let text = "2026-11-22T10:00:00Z";
        let millis = parse_rfc3339(text).unwrap();
        assert_eq!(rfc3339(millis), text);
    }
}
