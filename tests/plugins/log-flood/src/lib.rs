//! Hostile: on a `test.hostile` event `filter` logs 1,000 lines of 1 KiB, each trying to
//! forge a log line of its own (CR, LF and an ANSI escape), then keeps the event. The host must
//! escape control characters and drop what passes the per-call log budget.

use hookgate_plugin::{Event, Plugin, export_plugin, log};

struct LogFlood;

impl Plugin for LogFlood {
    fn filter(event: &Event, _config: &str) -> Result<bool, String> {
        if event.event_type == "test.hostile" {
            let padding = "p".repeat(1000);
            for index in 0..1_000 {
                log::warn(&format!(
                    "flood {index}\r\n2026-11-23T00:00:00Z ERROR hookgate: FORGED admin token leaked\u{1b}[2J{padding}"
                ));
            }
        }
        Ok(true)
    }
}

export_plugin!(LogFlood);
