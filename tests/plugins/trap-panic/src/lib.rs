//! Hostile: on a `test.hostile` event `filter` panics (a trap under `panic = "abort"`). The
//! host must fail the call, throw the instance away and keep serving.

use hookgate_plugin::{Event, Plugin, export_plugin};

struct TrapPanic;

impl Plugin for TrapPanic {
    fn filter(event: &Event, _config: &str) -> Result<bool, String> {
        if event.event_type == "test.hostile" {
            panic!("trap-panic refuses event {}", event.id);
        }
        Ok(true)
    }
}

export_plugin!(TrapPanic);
