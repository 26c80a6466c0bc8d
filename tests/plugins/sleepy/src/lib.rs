//! Hostile: on a `test.hostile` event `filter` sleeps for 10 s inside WASI (a monotonic-clock
//! subscription polled by the host). It uses no CPU while it waits, so only a wall-clock bound
//! stops it. Other events pass, so the plugin loads.

use hookgate_plugin::{Event, Plugin, export_plugin};

struct Sleepy;

impl Plugin for Sleepy {
    fn filter(event: &Event, _config: &str) -> Result<bool, String> {
        if event.event_type == "test.hostile" {
            std::thread::sleep(std::time::Duration::from_secs(10));
        }
        Ok(true)
    }
}

export_plugin!(Sleepy);
