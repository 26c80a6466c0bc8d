//! Keeps one node in step with the endpoints and plugins every node shares (PostgreSQL).
//!
//! The database holds the endpoints, their run-time states and the plugins' bytes
//! ([`crate::store::postgres::shared`]). A change committed by any node notifies every node;
//! [`follow`] then loads the shared configuration and puts in force what differs from this
//! node's: new or changed endpoints are applied as a local edit would be, deleted ones are
//! removed, plugin versions are fetched, checked and swapped in. A version poll every
//! [`SHARED_POLL`] catches what a lost notification missed.
//!
//! On PostgreSQL a plugins directory is a drop box: a new or changed `.wasm` file there is
//! checked and published to the database ([`Publish`]), unless the database already holds
//! a version uploaded after the file was last modified.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::Gateway;
use crate::plugins::PluginRegistry;
use crate::plugins::plugin::version_of;
use crate::plugins::watcher::Target;
use crate::store::postgres::PgStore;
use crate::store::postgres::shared::{self, SharedConfig};
use crate::store::{StoreError, StoredEndpoint};
use crate::time::UnixMillis;

/// How often a node compares the shared configuration's version with the one it applied.
pub const SHARED_POLL: Duration = Duration::from_secs(5);

/// Follows the shared configuration for as long as the gateway lives. `changed` is
/// notified when the database announces a change.
pub(super) async fn follow(gateway: Weak<Gateway>, store: PgStore, changed: Arc<Notify>) {
    let mut applied: Option<i64> = None;
    // Plugin versions this node tried and refused: not fetched and compiled again.
    let mut refused: HashMap<String, String> = HashMap::new();
    loop {
        if applied.is_some() {
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(SHARED_POLL) => {
                    match shared::version(&store).await {
                        Ok(version) if Some(version) == applied => continue,
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot read the shared configuration's version");
                            continue;
                        }
                    }
                }
            }
        }
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        match gateway.refresh(&store, &mut refused).await {
            Ok(version) => applied = Some(version),
            Err(err) => {
                tracing::warn!(error = %err, "cannot load the shared endpoints and plugins; trying again");
                tokio::time::sleep(SHARED_POLL).await;
            }
        }
    }
}

impl Gateway {
    /// Loads the shared configuration and puts in force what it has that this node does not;
    /// returns the version applied. The snapshot is read under the locks local edits and
    /// uploads take, so it is never older than a change this node already applied.
    async fn refresh(
        &self,
        store: &PgStore,
        refused: &mut HashMap<String, String>,
    ) -> Result<i64, StoreError> {
        let _plugin_changes = self.plugins.changes().lock().await;
        let endpoint_edits = self.endpoint_edits.lock().await;
        let config = shared::load(store).await?;
        let version = config.version;
        self.apply_shared(store, config, refused, endpoint_edits)
            .await;
        Ok(version)
    }

    /// Puts in force what `config` has that this node does not.
    async fn apply_shared(
        &self,
        store: &PgStore,
        config: SharedConfig,
        refused: &mut HashMap<String, String>,
        endpoint_edits: tokio::sync::MutexGuard<'_, ()>,
    ) {
        {
            let _one_at_a_time = endpoint_edits;
            let mut stored = std::collections::HashSet::new();
            for (record, disabled) in config.endpoints {
                stored.insert(record.config.id.clone());
                let current = self.subscriptions().get(&record.config.id);
                let same = current.is_some_and(|subscriber| {
                    same_record(&subscriber.record(), &record)
                        && subscriber.disabled_reason() == disabled
                });
                if !same {
                    tracing::info!(endpoint_id = %record.config.id, "endpoint changed in the shared store; applied");
                    self.apply_endpoint(record, disabled);
                }
            }
            for subscriber in self.subscriptions().all() {
                if !stored.contains(subscriber.id()) {
                    tracing::info!(endpoint_id = %subscriber.id(), "endpoint deleted in the shared store; removed");
                    self.remove_endpoint(subscriber.id());
                }
            }
        }
        sync_plugins(&self.plugins, store, &config.plugins, refused).await;
    }
}

/// Whether two records of one endpoint say the same thing.
fn same_record(a: &StoredEndpoint, b: &StoredEndpoint) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Loads the plugin versions the database holds that this node does not run, and unloads
/// the names the database no longer has. The caller holds the registry's change lock.
pub(super) async fn sync_plugins(
    registry: &Arc<PluginRegistry>,
    store: &PgStore,
    plugins: &[shared::SharedPlugin],
    refused: &mut HashMap<String, String>,
) {
    for plugin in plugins {
        let in_force = registry.version(&plugin.name);
        if in_force.as_deref() == Some(plugin.version.as_str())
            || refused.get(&plugin.name) == Some(&plugin.version)
        {
            continue;
        }
        let wasm = match shared::plugin_wasm(store, &plugin.name).await {
            Ok(Some((version, wasm))) if version == plugin.version => wasm,
            // Replaced or deleted since the listing: its notification brings the next load.
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(plugin = %plugin.name, error = %err, "cannot read the plugin from the shared store");
                continue;
            }
        };
        let (registry, name) = (registry.clone(), plugin.name.clone());
        // Compiling and the smoke call block: off the async workers.
        let installed =
            tokio::task::spawn_blocking(move || registry.install(&name, &wasm).is_ok()).await;
        if !matches!(installed, Ok(true)) {
            // The registry logged why and keeps it in the plugin's status.
            refused.insert(plugin.name.clone(), plugin.version.clone());
        }
    }
    // A name this node only saw refused from its own plugins directory stays listed with
    // the reason; one that came from the database and left it goes.
    for status in registry.statuses() {
        let shared = refused.contains_key(&status.name) || status.version.is_some();
        if shared && !plugins.iter().any(|plugin| plugin.name == status.name) {
            refused.remove(&status.name);
            registry.remove(&status.name);
        }
    }
}

/// Checks `bytes` as plugin `name` and, if it passes, stores it for every node and puts it
/// in force here. Blocking: compiles, and waits for the database on `runtime`.
pub(super) fn publish(
    registry: &PluginRegistry,
    store: &PgStore,
    runtime: &Handle,
    name: &str,
    bytes: &[u8],
) -> Result<(), PublishError> {
    let _one_at_a_time = registry.changes().blocking_lock();
    let plugin = registry.check(name, bytes).map_err(|err| {
        registry.refuse(name, &err);
        PublishError::Refused(err)
    })?;
    runtime.block_on(shared::put_plugin(store, name, &plugin.version, bytes))?;
    registry.put_in_force(name, plugin);
    Ok(())
}

/// Why a plugin was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Refused(#[from] crate::plugins::PluginError),
    #[error("cannot store the plugin for the other nodes: {0}")]
    Store(#[from] StoreError),
}

/// The plugins directory as a drop box for the shared store.
pub(super) struct Publish {
    pub registry: Arc<PluginRegistry>,
    pub store: PgStore,
    pub runtime: Handle,
}

impl Target for Publish {
    fn registry(&self) -> &Arc<PluginRegistry> {
        &self.registry
    }

    fn changed(
        &mut self,
        name: &str,
        bytes: &[u8],
        modified: Option<SystemTime>,
    ) -> Result<(), String> {
        if self.registry.is_current(name, bytes) {
            return Ok(());
        }
        let stored = self
            .runtime
            .block_on(shared::plugin(&self.store, name))
            .map_err(|err| err.to_string())?;
        if let Some(row) = stored {
            if row.version == version_of(bytes) {
                return Ok(());
            }
            if modified.is_some_and(|modified| millis(modified) < row.updated_at) {
                tracing::info!(plugin = name, version = %row.version,
                    "the shared store holds a version of this plugin newer than its file; the file is not published");
                return Ok(());
            }
        }
        match publish(&self.registry, &self.store, &self.runtime, name, bytes) {
            Ok(()) => Ok(()),
            // Recorded in the plugin's status and logged; a new file is the way forward.
            Err(PublishError::Refused(_)) => Ok(()),
            Err(err) => Err(err.to_string()),
        }
    }

    fn removed(&mut self, name: &str) {
        tracing::info!(
            plugin = name,
            "plugin file removed; on PostgreSQL the plugin stays in force on every node until DELETE /v1/plugins/{name}"
        );
    }
}

fn millis(time: SystemTime) -> UnixMillis {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as UnixMillis)
}
