//! Hostile: on a `test.hostile` event `filter` never returns. The host must stop it at its CPU
//! time limit, fail that call with a clear reason, and keep serving. Other events pass, so
//! the plugin loads (its smoke test is a normal payment event).

use hookgate_plugin::{Event, Plugin, export_plugin};

struct LoopForever;

impl Plugin for LoopForever {
    fn filter(event: &Event, _config: &str) -> Result<bool, String> {
        if event.event_type != "test.hostile" {
            return Ok(true);
        }
        let mut spins: u64 = 0;
        loop {
            spins = spins.wrapping_add(event.timestamp | 1);
            std::hint::black_box(spins);
        }
    }
}

export_plugin!(LoopForever);
