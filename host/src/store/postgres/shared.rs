//! What every node of a PostgreSQL deployment must agree on besides the queue: the
//! endpoints (their records and run-time states) and the uploaded plugins.
//!
//! Triggers (migration 0004) bump one version row and notify [`CHANNEL`] with every row
//! written to `endpoint_configs`, `endpoint_states` or `plugins`, in the writing
//! transaction, so the code that writes them (endpoint edits, seeding, a 410 disabling an
//! endpoint, a plugin upload) needs no extra step and cannot forget one. A node reloads
//! [`SharedConfig`] when notified, and when the version it polls is not the one it applied
//! (a notification is lost while the listening connection is down).
//!
//! Plugin bytes live in the `plugins` table, so every node compiles the same version of a
//! name; only the small name/version/time rows are read on each reload.

use super::PgStore;
use crate::store::{StoreError, StoredEndpoint};
use crate::time::UnixMillis;

/// The channel the triggers notify.
pub const CHANNEL: &str = "hookgate_config";

/// The shared configuration at one version.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    pub version: i64,
    /// Every endpoint with why it is disabled, if it is.
    pub endpoints: Vec<(StoredEndpoint, Option<String>)>,
    pub plugins: Vec<SharedPlugin>,
}

/// One plugin in the database, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPlugin {
    pub name: String,
    /// As [`crate::plugins::registry::PluginStatus::version`] reports it.
    pub version: String,
    pub updated_at: UnixMillis,
}

/// The version of the shared configuration now.
pub async fn version(store: &PgStore) -> Result<i64, StoreError> {
    let client = store.client().await?;
    Ok(client
        .query_one("SELECT version FROM config_version", &[])
        .await?
        .get(0))
}

/// Everything at one version: the reads run in one repeatable-read snapshot, so the version
/// returned is the one the endpoints and plugins belong to.
pub async fn load(store: &PgStore) -> Result<SharedConfig, StoreError> {
    let mut client = store.client().await?;
    let txn = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let version: i64 = txn
        .query_one("SELECT version FROM config_version", &[])
        .await?
        .get(0);
    let endpoints = txn
        .query(
            r#"SELECT c.record, s.disabled_reason
                 FROM endpoint_configs c
                 LEFT JOIN endpoint_states s ON s.endpoint_id = c.id
                ORDER BY c.id COLLATE "C""#,
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let record: StoredEndpoint = serde_json::from_str(row.get::<_, &str>(0))?;
            Ok((record, row.get::<_, Option<String>>(1)))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let plugins = txn
        .query(
            "SELECT name, version, floor(extract(epoch FROM updated_at) * 1000)::int8
               FROM plugins ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(shared_plugin)
        .collect();
    txn.commit().await?;
    Ok(SharedConfig {
        version,
        endpoints,
        plugins,
    })
}

/// Plugin `name`'s row without its bytes, if the database has it.
pub async fn plugin(store: &PgStore, name: &str) -> Result<Option<SharedPlugin>, StoreError> {
    let client = store.client().await?;
    let row = client
        .query_opt(
            "SELECT name, version, floor(extract(epoch FROM updated_at) * 1000)::int8
               FROM plugins WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(row.as_ref().map(shared_plugin))
}

/// A row of `name, version, updated_at in unix milliseconds`.
fn shared_plugin(row: &tokio_postgres::Row) -> SharedPlugin {
    SharedPlugin {
        name: row.get(0),
        version: row.get(1),
        updated_at: super::unsigned(row.get::<_, i64>(2)),
    }
}

/// The version and bytes of plugin `name`, if the database has it.
pub async fn plugin_wasm(
    store: &PgStore,
    name: &str,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    let client = store.client().await?;
    let row = client
        .query_opt(
            "SELECT version, wasm FROM plugins WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// Stores `wasm` as plugin `name` at `version` for every node (they load it on the
/// notification this commit sends).
pub async fn put_plugin(
    store: &PgStore,
    name: &str,
    version: &str,
    wasm: &[u8],
) -> Result<(), StoreError> {
    let client = store.client().await?;
    client
        .execute(
            "INSERT INTO plugins (name, version, wasm) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
             SET version = excluded.version, wasm = excluded.wasm, updated_at = now()
             WHERE plugins.version <> excluded.version",
            &[&name, &version, &wasm],
        )
        .await?;
    Ok(())
}

/// Removes plugin `name` for every node; false when the database did not have it.
pub async fn delete_plugin(store: &PgStore, name: &str) -> Result<bool, StoreError> {
    let client = store.client().await?;
    let deleted = client
        .execute("DELETE FROM plugins WHERE name = $1", &[&name])
        .await?;
    Ok(deleted > 0)
}
