//! Hostile: `filter` always sleeps for 10 s inside WASI, so even the load-time smoke call
//! hangs. The host must refuse it at its wall-clock bound and go on starting and watching.

use hookgate_plugin::{Event, Plugin, export_plugin};

struct HangOnLoad;

impl Plugin for HangOnLoad {
    fn filter(_event: &Event, _config: &str) -> Result<bool, String> {
        std::thread::sleep(std::time::Duration::from_secs(10));
        Ok(true)
    }
}

export_plugin!(HangOnLoad);
