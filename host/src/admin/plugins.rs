//! `/v1/plugins`: list what is loaded; upload (`PUT`), delete and dry-run a plugin.
//!
//! An upload goes through exactly what a file dropped in the watched directory goes through
//! (size cap, compile, type check, smoke call, atomic swap). On redb it is then written to
//! that directory under a temporary name and renamed, so a restart loads the same version
//! and the watcher sees nothing new; on PostgreSQL it is stored in the database, and every
//! node loads it from there. A dry run calls the version in force with the production
//! limits.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::events::parse;
use super::{ApiError, ApiState};
use crate::config::is_plugin_name;
use crate::gateway::InstallError;
use crate::plugins::registry::PluginStatus;
use crate::time::rfc3339;

/// Lists every plugin name seen: loaded, or refused with the reason.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    operation_id = "list_plugins",
    tag = "plugins",
    responses((status = 200, body = PluginList, description = "The plugins, by name")),
)]
pub async fn list(State(state): State<ApiState>) -> Response {
    let statuses = state.gateway.plugins().statuses();
    Json(PluginList {
        plugins: statuses.iter().map(view).collect(),
    })
    .into_response()
}

/// Installs a plugin from its `.wasm` bytes.
///
/// 201 for a new name, 200 for a new version, 422 with the reason when the component is
/// refused (the version in force stays).
#[utoipa::path(
    put,
    path = "/v1/plugins/{name}",
    operation_id = "upload_plugin",
    tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name: letters, digits, `-` and \
        `_`")),
    request_body(content_type = "application/wasm", description = "A WebAssembly component of \
        the `hookgate:plugin/webhook-plugin` world (`wit/plugin.wit`), at most \
        `plugins.max_wasm_mib`"),
    responses(
        (status = 201, body = PluginView, description = "Installed under a new name"),
        (status = 200, body = PluginView, description = "Installed as a new version of the name"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: the name is not valid"),
        (status = 409, body = ErrorBody, description = "`no_plugins_dir`: set `[plugins] dir` so \
            uploads survive a restart"),
        (status = 413, body = ErrorBody, description = "`too_large`: over `plugins.max_wasm_mib`"),
        (status = 422, body = ErrorBody, description = "`plugin_invalid`: the component was \
            refused (the message says why); the version in force, if any, stays"),
    ),
)]
pub async fn upload(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let registry = state.gateway.plugins().clone();
    let cap = registry.runtime().limits().wasm_bytes;
    if body.len() > cap {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the plugin is {} bytes; plugins.max_wasm_mib allows {cap}",
                body.len()
            ),
        ));
    }
    let existed = registry.get(&name).is_some();
    state
        .gateway
        .install_plugin(&name, body)
        .await
        .map_err(|err| match err {
            InstallError::NoDir => no_dir(),
            InstallError::Refused(err) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin_invalid",
                format!("plugin `{name}` was refused (the version in force, if any, stays): {err}"),
            ),
            InstallError::Save(message) => ApiError::internal(message),
            InstallError::Store(err) => ApiError::from(err),
        })?;
    let status = state
        .gateway
        .plugins()
        .statuses()
        .into_iter()
        .find(|status| status.name == name)
        .ok_or_else(|| ApiError::internal("the installed plugin has no status"))?;
    let code = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(view(&status))).into_response())
}

/// Unloads a plugin and removes its file.
///
/// Refused while an endpoint's chain names it: its deliveries would park until it came back.
#[utoipa::path(
    delete,
    path = "/v1/plugins/{name}",
    operation_id = "delete_plugin",
    tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    responses(
        (status = 204, description = "Unloaded and removed"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: the name is not valid"),
        (status = 404, body = ErrorBody, description = "`not_found`: no plugin has this name"),
        (status = 409, body = ErrorBody, description = "`plugin_in_use`: an endpoint's chain names \
            it (the message lists them)"),
    ),
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_name(&name)?;
    let known = state
        .gateway
        .plugins()
        .statuses()
        .iter()
        .any(|status| status.name == name);
    if !known {
        return Err(unknown(&name));
    }
    let users: Vec<String> = state
        .gateway
        .subscriptions()
        .all()
        .iter()
        .filter(|subscriber| {
            subscriber
                .endpoint()
                .plugins
                .iter()
                .any(|step| step.name == name)
        })
        .map(|subscriber| subscriber.id().to_owned())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(
            "plugin_in_use",
            format!(
                "plugin `{name}` is in the chain of endpoint(s) {}; remove it from their \
                 plugins first",
                users.join(", ")
            ),
        ));
    }
    state
        .gateway
        .delete_plugin(&name)
        .await
        .map_err(|err| match err {
            InstallError::Store(err) => ApiError::from(err),
            other => ApiError::internal(other.to_string()),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// An event and a configuration to run a plugin on.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PluginDryRun)]
struct DryRun {
    /// `{"type","data"}`, or a whole Standard Webhooks body (`id`, `timestamp` too).
    event: serde_json::Value,
    /// The plugin's configuration, as an endpoint's chain would give it.
    #[serde(default = "empty_object")]
    config: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// Runs a plugin on an event, as a delivery would.
///
/// The version in force runs under the production limits; the answer is what a delivery
/// would get: `keep` with the body, content type and headers, `drop`, or `failed` with the
/// reason (a delivery would be parked).
#[utoipa::path(
    post,
    path = "/v1/plugins/{name}/test",
    operation_id = "dry_run_plugin",
    tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    request_body = DryRun,
    responses(
        (status = 200, body = serde_json::Value, description = "`{\"plugin\", \"duration_us\", \
            \"decision\"}` with, for `keep`, `content_type`, `headers` and `body` (JSON or text) \
            or `body_base64`; for `failed`, `error`"),
        (status = 400, body = ErrorBody, description = "`invalid_body`: the body, event or config \
            is not valid"),
        (status = 404, body = ErrorBody, description = "`not_found`: no plugin has this name"),
    ),
)]
pub async fn dry_run(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: DryRun = parse(&body)?;
    let plugin = state
        .gateway
        .plugins()
        .get(&name)
        .ok_or_else(|| unknown(&name))?;
    let event = crate::plugins::tool::parse_event(&request.event.to_string()).map_err(|err| {
        ApiError::invalid_body(err.to_string().replace("the event file", "event"))
    })?;
    if !request.config.is_object() {
        return Err(ApiError::invalid_body("config: must be a JSON object"));
    }
    let config = request.config.to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let keep = plugin.filter("dry-run", &event, &config);
        let outgoing = match keep {
            Ok(true) => Some(plugin.transform("dry-run", &event, &config)),
            _ => None,
        };
        let took = started.elapsed();
        let mut answer = serde_json::json!({
            "plugin": &*plugin.reference,
            "duration_us": took.as_micros() as u64,
        });
        match (keep, outgoing) {
            (Err(err), _) | (Ok(true), Some(Err(err))) => {
                answer["decision"] = "failed".into();
                answer["error"] = err.to_string().into();
            }
            (Ok(false), _) => answer["decision"] = "drop".into(),
            (Ok(true), Some(Ok(outgoing))) => {
                answer["decision"] = "keep".into();
                answer["content_type"] = outgoing.content_type.clone().into();
                answer["headers"] = serde_json::json!(outgoing.headers);
                match std::str::from_utf8(&outgoing.body) {
                    Ok(text) => {
                        answer["body"] = serde_json::from_str::<serde_json::Value>(text)
                            .unwrap_or_else(|_| text.into());
                    }
                    Err(_) => {
                        use base64::Engine as _;
                        answer["body_base64"] = base64::engine::general_purpose::STANDARD
                            .encode(&outgoing.body)
                            .into();
                    }
                }
            }
            (Ok(true), None) => unreachable!("a kept event is transformed"),
        }
        answer
    })
    .await
    .map_err(|err| ApiError::internal(format!("the dry run panicked: {err}")))?;
    Ok(Json(answer))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if is_plugin_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid_body(format!(
            "name: `{name}` must be letters, digits, `-` and `_` (the file is NAME.wasm)"
        )))
    }
}

fn no_dir() -> ApiError {
    ApiError::conflict(
        "no_plugins_dir",
        "no plugins directory is configured; set [plugins] dir so uploaded plugins survive a \
         restart",
    )
}

fn unknown(name: &str) -> ApiError {
    ApiError::not_found(format!("no plugin named `{name}` is loaded"))
}

/// Every plugin name seen.
#[derive(Serialize, ToSchema)]
struct PluginList<'a> {
    plugins: Vec<PluginView<'a>>,
}

/// A plugin name as the API shows it: the version in force, and the latest refusal.
#[derive(Serialize, ToSchema)]
#[schema(as = Plugin)]
struct PluginView<'a> {
    name: &'a str,
    /// The version in force; null when none loaded.
    version: Option<&'a str>,
    /// `name@version`, as deliveries and logs name it.
    reference: Option<String>,
    /// The component's size in bytes.
    size: Option<usize>,
    /// RFC 3339.
    loaded_at: Option<String>,
    /// Whether the compiled code came from the cache.
    from_cache: Option<bool>,
    /// Why the latest file was refused; cleared by the next successful load.
    error: Option<&'a str>,
}

fn view(status: &PluginStatus) -> PluginView<'_> {
    PluginView {
        name: &status.name,
        version: status.version.as_deref(),
        reference: status
            .version
            .as_ref()
            .map(|version| format!("{}@{version}", status.name)),
        size: status.size,
        loaded_at: status.loaded_at.map(rfc3339),
        from_cache: status.from_cache,
        error: status.error.as_deref(),
    }
}
