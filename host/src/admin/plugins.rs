//! `GET /v1/plugins`: every plugin file the gateway knows, the version in force and, when the
//! latest file was refused, why.

use axum::Json;
use axum::extract::State;

use super::ApiState;
use crate::time::rfc3339;

pub async fn list(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let plugins: Vec<serde_json::Value> = state
        .gateway
        .plugins()
        .statuses()
        .into_iter()
        .map(|status| {
            serde_json::json!({
                "name": status.name,
                "version": status.version,
                "reference": status.version.as_ref().map(|version| format!("{}@{version}", status.name)),
                "size": status.size,
                "loaded_at": status.loaded_at.map(rfc3339),
                "from_cache": status.from_cache,
                "error": status.error,
            })
        })
        .collect();
    Json(serde_json::json!({ "plugins": plugins }))
}
