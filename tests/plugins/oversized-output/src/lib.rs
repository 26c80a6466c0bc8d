//! Hostile: on a `test.hostile` event `transform` returns a 384 KiB body, over the host's
//! default 256 KiB output limit.

use hookgate_plugin::{Event, Outgoing, Plugin, export_plugin};

struct OversizedOutput;

impl Plugin for OversizedOutput {
    fn transform(event: &Event, _config: &str) -> Result<Outgoing, String> {
        if event.event_type != "test.hostile" {
            return Ok(Outgoing::passthrough(event));
        }
        Ok(Outgoing {
            // Zeroed memory comes straight from `memory.grow`: no time spent filling it.
            body: vec![0; 384 << 10],
            content_type: "text/plain".to_owned(),
            headers: Vec::new(),
        })
    }
}

export_plugin!(OversizedOutput);
