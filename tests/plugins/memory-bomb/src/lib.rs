//! Hostile: `transform` grows its memory without bound. The host's memory cap must stop it
//! with a clear reason while the rest of the gateway carries on.

use hookgate_plugin::{Event, Outgoing, Plugin, export_plugin};

struct MemoryBomb;

impl Plugin for MemoryBomb {
    fn transform(event: &Event, _config: &str) -> Result<Outgoing, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![event.body.len() as u8 | 1; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export_plugin!(MemoryBomb);
