//! The Hookgate plugin SDK: write a webhook plugin in a few lines of Rust.
//!
//! A plugin is a WebAssembly component for the `hookgate:plugin@0.1.0` world (see `wit/`).
//! It exports two functions the gateway calls for every event bound for an endpoint that
//! lists the plugin: `filter` (keep or drop the event) and `transform` (the request body to
//! send). This crate wraps the generated bindings so a plugin is a type and two methods:
//!
//! ```no_run
//! use hookgate_plugin::{export_plugin, Event, Outgoing, Plugin};
//!
//! struct OnlyConfirmed;
//!
//! impl Plugin for OnlyConfirmed {
//!     fn filter(event: &Event, _config: &str) -> Result<bool, String> {
//!         Ok(event.event_type == "payment.confirmed")
//!     }
//! }
//!
//! export_plugin!(OnlyConfirmed);
//! ```
//!
//! Both methods have defaults (keep everything; pass the body through), so a filter-only or
//! transform-only plugin implements just one. Returning `Err` fails that delivery with your
//! message: the gateway parks it and an operator can replay it after a fix.
//! Build with `cargo run -p hookgate-plugin-build` from the repository root.

// The generated code names this crate by its public path, from inside it as well.
extern crate self as hookgate_plugin;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated ABI glue, one argument per flattened field
pub mod bindings {
    wit_bindgen::generate!({
        world: "webhook-plugin",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_webhook_plugin",
        default_bindings_module: "hookgate_plugin::bindings",
        runtime_path: "hookgate_plugin::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::hookgate::plugin::types::{Event, Outgoing};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A webhook plugin. Implement one or both methods, then [`export_plugin!`] the type.
pub trait Plugin {
    /// Whether the endpoint should receive `event`; `config` is the endpoint's JSON config
    /// for this plugin (`{}` when none). The default keeps every event.
    fn filter(event: &Event, config: &str) -> Result<bool, String> {
        let _ = (event, config);
        Ok(true)
    }

    /// The request to send. The default passes the body through unchanged.
    fn transform(event: &Event, config: &str) -> Result<Outgoing, String> {
        let _ = config;
        Ok(Outgoing::passthrough(event))
    }
}

/// Wires a [`Plugin`] type to the component's exports. Use once per plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __HookgatePluginExports;

        impl $crate::bindings::Guest for __HookgatePluginExports {
            fn filter(event: $crate::Event, config: String) -> Result<bool, String> {
                <$plugin as $crate::Plugin>::filter(&event, &config)
            }

            fn transform(event: $crate::Event, config: String) -> Result<$crate::Outgoing, String> {
                <$plugin as $crate::Plugin>::transform(&event, &config)
            }
        }

        $crate::bindings::__export_webhook_plugin!(__HookgatePluginExports with_types_in $crate::bindings);
    };
}

impl Event {
    /// The event's `data` object, deserialized into your type.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.data)
            .map_err(|err| format!("event data does not have the expected shape: {err}"))
    }

    /// The event's `data` object as a JSON value.
    pub fn data_json(&self) -> Result<serde_json::Value, String> {
        self.data()
    }

    /// The current body (the default webhook body, or the previous plugin's output) as JSON.
    pub fn body_json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|err| format!("the body is not JSON: {err}"))
    }
}

impl Outgoing {
    /// The event's current body, unchanged.
    pub fn passthrough(event: &Event) -> Self {
        Self {
            body: event.body.clone(),
            content_type: event.content_type.clone(),
            headers: Vec::new(),
        }
    }

    /// A JSON body (`application/json`).
    pub fn json<T: Serialize>(value: &T) -> Result<Self, String> {
        Ok(Self {
            body: serde_json::to_vec(value).map_err(|err| format!("cannot encode JSON: {err}"))?,
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
        })
    }

    /// Adds an extra header. The gateway refuses the output (and parks the delivery) past 32
    /// headers, a value over 8 KiB, body + content type + headers over its output limit, or a
    /// header it sets itself or that is hop-by-hop: `webhook-*`, `x-webhook-*`,
    /// `content-type`, `content-length`, `content-encoding`, `transfer-encoding`, `host`,
    /// `user-agent`, `connection`, `keep-alive`, `te`, `trailer`, `upgrade`, `expect`,
    /// `proxy-*` (see `wit/plugin.wit`).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Reads this plugin's config (JSON text) into your type, with a message that says what is wrong.
pub fn config<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|err| format!("invalid plugin config: {err}"))
}

/// Log lines in the gateway's log, tagged with this plugin's name and version.
pub mod log {
    use crate::bindings::hookgate::plugin::log::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Builds an [`Event`] for unit tests of plugin logic on the host target.
pub fn test_event(event_type: &str, data: serde_json::Value) -> Event {
    let body = serde_json::json!({
        "type": event_type,
        "timestamp": "2026-11-22T10:00:00Z",
        "id": "evt_test",
        "data": data,
    });
    Event {
        id: "evt_test".to_owned(),
        event_type: event_type.to_owned(),
        timestamp: 1_795_341_600,
        now: 1_795_341_600,
        data: data.to_string(),
        body: body.to_string().into_bytes(),
        content_type: "application/json".to_owned(),
    }
}
