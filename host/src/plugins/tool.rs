//! `hookgate plugin check` and `hookgate plugin run`: test a plugin without a gateway.
//!
//! Both use the same engine, limits and checks as the gateway, so a plugin that passes here
//! loads there.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::events::default_body_with_id;
use crate::plugins::runtime::Event;
use crate::plugins::{Limits, LoadedPlugin, PluginError, PluginRuntime};
use crate::time::{now_millis, parse_rfc3339};

/// A plugin file that could not be checked or run.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Event(String),
    #[error("{reference}: {error}")]
    Plugin {
        reference: String,
        error: PluginError,
    },
}

/// What `plugin check` found.
pub struct CheckReport {
    pub reference: String,
    pub size: usize,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ok: {} ({} bytes)", self.reference, self.size)?;
        writeln!(f, "world: hookgate:plugin@0.1.0 webhook-plugin")?;
        writeln!(f, "imports: {}", list(&self.imports))?;
        writeln!(f, "exports: {}", list(&self.exports))?;
        write!(
            f,
            "smoke test: passed (filter and transform ran within the limits)"
        )
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

/// What `plugin run` produced.
pub struct RunReport {
    pub reference: String,
    pub keep: bool,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plugin: {}", self.reference)?;
        writeln!(f, "filter: {}", if self.keep { "keep" } else { "drop" })?;
        let Some(body) = &self.body else {
            return Ok(());
        };
        writeln!(
            f,
            "content-type: {}",
            self.content_type.as_deref().unwrap_or_default()
        )?;
        for (name, value) in &self.headers {
            writeln!(f, "header: {name}: {value}")?;
        }
        let pretty = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|value| serde_json::to_string_pretty(&value).ok());
        match pretty {
            Some(text) => write!(f, "body:\n{text}"),
            None => write!(f, "body:\n{}", String::from_utf8_lossy(body)),
        }
    }
}

fn load(path: &Path) -> Result<(Arc<PluginRuntime>, LoadedPlugin), ToolError> {
    let bytes = std::fs::read(path).map_err(|source| ToolError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("plugin")
        .to_owned();
    let fail = |error| ToolError::Plugin {
        reference: name.clone(),
        error,
    };
    let runtime = PluginRuntime::new(Limits::default(), None).map_err(fail)?;
    let plugin = LoadedPlugin::load(&runtime, &name, &bytes).map_err(fail)?;
    Ok((runtime, plugin))
}

/// Compiles, type-checks and smoke-tests a plugin file.
pub fn check(path: &Path) -> Result<CheckReport, ToolError> {
    let (_runtime, plugin) = load(path)?;
    plugin.smoke_test().map_err(|error| ToolError::Plugin {
        reference: plugin.reference.to_string(),
        error,
    })?;
    Ok(CheckReport {
        reference: plugin.reference.to_string(),
        size: plugin.size,
        imports: plugin.imports.clone(),
        exports: plugin.exports.clone(),
    })
}

/// Runs a plugin's filter and transform on an event given as JSON: either the Standard
/// Webhooks body a receiver gets (`{"type","timestamp","id","data"}`) or just `{"type","data"}`.
pub fn run(path: &Path, event_json: &str, config: &str) -> Result<RunReport, ToolError> {
    let event = parse_event(event_json)?;
    serde_json::from_str::<serde::de::IgnoredAny>(config)
        .map_err(|err| ToolError::Event(format!("--config is not valid JSON: {err}")))?;
    let (_runtime, plugin) = load(path)?;
    let fail = |error| ToolError::Plugin {
        reference: plugin.reference.to_string(),
        error,
    };
    let keep = plugin.filter("cli", &event, config).map_err(fail)?;
    let mut report = RunReport {
        reference: plugin.reference.to_string(),
        keep,
        content_type: None,
        headers: Vec::new(),
        body: None,
    };
    if keep {
        let outgoing = plugin.transform("cli", &event, config).map_err(fail)?;
        report.content_type = Some(outgoing.content_type);
        report.headers = outgoing.headers;
        report.body = Some(outgoing.body);
    }
    Ok(report)
}

pub(crate) fn parse_event(text: &str) -> Result<Event, ToolError> {
    let invalid = |message: String| ToolError::Event(format!("the event file {message}"));
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| invalid(format!("is not valid JSON: {err}")))?;
    let event_type = value["type"]
        .as_str()
        .ok_or_else(|| invalid("needs a string `type`".to_owned()))?
        .to_owned();
    let data = value
        .get("data")
        .filter(|data| data.is_object())
        .cloned()
        .ok_or_else(|| invalid("needs an object `data`".to_owned()))?;
    let id = value["id"].as_str().unwrap_or("evt_cli_test").to_owned();
    let now = now_millis();
    let created = match value["timestamp"].as_str() {
        Some(text) => parse_rfc3339(text)
            .map_err(|err| invalid(format!("has a `timestamp` that is not RFC 3339: {err}")))?,
        None => now,
    };
    let data = data.to_string();
    let body = default_body_with_id(&id, &event_type, created, &data);
    Ok(Event {
        id,
        event_type,
        timestamp: created / 1000,
        now: now / 1000,
        data,
        body: body.to_vec(),
        content_type: "application/json".to_owned(),
    })
}
