//! Hostile: the plugin world with `transform` missing. The host must refuse to load it and
//! name the missing export.

// Generated ABI glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "webhook-plugin", path: "wit" });

struct FilterOnly;

impl Guest for FilterOnly {
    fn filter(_event: hookgate::plugin::types::Event, _config: String) -> Result<bool, String> {
        Ok(true)
    }
}

export!(FilterOnly);
