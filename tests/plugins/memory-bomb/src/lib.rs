//! Hostile: on a `test.hostile` event `transform` grows its memory without bound. The host's
//! memory cap must stop it with a clear reason while the rest of the gateway carries on.

use hookgate_plugin::{Event, Outgoing, Plugin, export_plugin};

struct MemoryBomb;

impl Plugin for MemoryBomb {
    fn transform(event: &Event, _config: &str) -> Result<Outgoing, String> {
        if event.event_type != "test.hostile" {
            return Ok(Outgoing::passthrough(event));
        }
        // Reserving grows linear memory without spending CPU time filling it.
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = Vec::with_capacity(4 << 20);
            chunk.push(event.body.len() as u8);
            hoard.push(std::hint::black_box(chunk));
        }
    }
}

export_plugin!(MemoryBomb);
