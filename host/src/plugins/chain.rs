//! An endpoint's plugin chain over one event.
//!
//! Steps run in order. Each step's filter may drop the event for this endpoint; if it keeps
//! it, the step's transform produces the body (and content type and extra headers) that the
//! next step sees as `event.body` and the endpoint finally receives. Any failure stops the
//! chain and names the plugin version that failed and why.

use bytes::Bytes;

use crate::plugins::PluginRegistry;
use crate::plugins::plugin::StepOutcome;
use crate::plugins::runtime::Event;

/// One configured step: the plugin's name and its config as JSON text.
#[derive(Debug, Clone)]
pub struct PluginStep {
    pub name: String,
    pub config: String,
}

/// What the chain hands to delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub body: Bytes,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    /// `name@version` of every plugin that ran, in order.
    pub plugins: Vec<String>,
}

impl Rendered {
    /// The default body, untouched by plugins.
    pub fn default_json(body: Bytes) -> Self {
        Self {
            body,
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
            plugins: Vec::new(),
        }
    }
}

/// The chain's verdict for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainOutcome {
    Deliver(Rendered),
    /// A filter dropped the event; `by` is `name@version`.
    Dropped {
        by: String,
    },
    /// A plugin failed (or is missing); the delivery is parked with this reason.
    Failed {
        by: String,
        reason: String,
    },
}

/// The event as the chain's first plugin sees it.
#[derive(Debug, Clone)]
pub struct ChainInput<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// Unix seconds of the event.
    pub timestamp: u64,
    /// The event's data object as JSON text.
    pub data: &'a str,
    /// The default body.
    pub body: Bytes,
}

/// Runs `steps` for endpoint `scope`; `now` is the host's clock in unix seconds.
pub fn run(
    registry: &PluginRegistry,
    scope: &str,
    steps: &[PluginStep],
    input: &ChainInput<'_>,
    now: u64,
) -> ChainOutcome {
    let mut rendered = Rendered::default_json(input.body.clone());
    for step in steps {
        let Some(plugin) = registry.get(&step.name) else {
            return ChainOutcome::Failed {
                by: step.name.clone(),
                reason: format!(
                    "plugin `{}` is not loaded: put {}.wasm in the plugins directory",
                    step.name, step.name
                ),
            };
        };
        let event = Event {
            id: input.event_id.to_owned(),
            event_type: input.event_type.to_owned(),
            timestamp: input.timestamp,
            now,
            data: input.data.to_owned(),
            body: rendered.body.to_vec(),
            content_type: rendered.content_type.clone(),
        };
        let started = std::time::Instant::now();
        let result = plugin.run_step(scope, &event, &step.config);
        crate::metrics::METRICS.plugin_call(&step.name, started.elapsed(), result.is_err());
        match result {
            Ok(StepOutcome::Drop) => {
                return ChainOutcome::Dropped {
                    by: plugin.reference.to_string(),
                };
            }
            Ok(StepOutcome::Keep(outgoing)) => {
                rendered.body = Bytes::from(outgoing.body);
                // Validated trimmed; stored and sent as the same trimmed value.
                rendered.content_type = outgoing.content_type.trim().to_owned();
                rendered.headers.extend(outgoing.headers);
                rendered.plugins.push(plugin.reference.to_string());
            }
            Err(err) => {
                return ChainOutcome::Failed {
                    by: plugin.reference.to_string(),
                    reason: format!("plugin {} {err}", plugin.reference),
                };
            }
        }
    }
    ChainOutcome::Deliver(rendered)
}
