//! Hostile: on a `test.hostile` event (on every event with config `{"always": true}`) `filter`
//! sleeps for 10 s inside WASI (a monotonic-clock subscription polled by the host). It uses no
//! CPU while it waits, so only a wall-clock bound stops it. The smoke call's config is `{}`,
//! so the plugin loads.

use hookgate_plugin::{Event, Plugin, export_plugin};

struct Sleepy;

impl Plugin for Sleepy {
    fn filter(event: &Event, config: &str) -> Result<bool, String> {
        let always = serde_json::from_str::<serde_json::Value>(config)
            .ok()
            .and_then(|config| config["always"].as_bool())
            .unwrap_or(false);
        if always || event.event_type == "test.hostile" {
            std::thread::sleep(std::time::Duration::from_secs(10));
        }
        Ok(true)
    }
}

export_plugin!(Sleepy);
