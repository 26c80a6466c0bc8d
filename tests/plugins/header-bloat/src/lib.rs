//! Hostile: on a `test.hostile` event `transform` returns a small body with 32 headers of
//! 9 KiB each (288 KiB). The host must count headers toward the 256 KiB output limit and
//! refuse the output.

use hookgate_plugin::{Event, Outgoing, Plugin, export_plugin};

struct HeaderBloat;

impl Plugin for HeaderBloat {
    fn transform(event: &Event, _config: &str) -> Result<Outgoing, String> {
        let mut outgoing = Outgoing::passthrough(event);
        if event.event_type == "test.hostile" {
            let value = "x".repeat(9 * 1024);
            for index in 0..32 {
                outgoing = outgoing.with_header(format!("x-bloat-{index}"), value.clone());
            }
        }
        Ok(outgoing)
    }
}

export_plugin!(HeaderBloat);
