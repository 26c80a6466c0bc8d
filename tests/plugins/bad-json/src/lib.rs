//! Hostile: on a `test.hostile` event `transform` promises JSON but returns bytes that are not
//! even UTF-8.

use hookgate_plugin::{Event, Outgoing, Plugin, export_plugin};

struct BadJson;

impl Plugin for BadJson {
    fn transform(event: &Event, _config: &str) -> Result<Outgoing, String> {
        if event.event_type != "test.hostile" {
            return Ok(Outgoing::passthrough(event));
        }
        Ok(Outgoing {
            body: vec![0xff, 0xfe, b'{', 0x80],
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
        })
    }
}

export_plugin!(BadJson);
