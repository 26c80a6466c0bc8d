//! The plugins in force, by name, and what happened to each file.
//!
//! Installing a new version compiles, type-checks and smoke-calls it *before* the swap, which
//! replaces one `Arc` under a write lock: a call that already holds the old version finishes on
//! it, every later call gets the new one, and nothing ever runs a half-loaded plugin. A version
//! that fails any step is refused, the working version stays, and the error is kept in the
//! plugin's status (and logged) until a good file arrives.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;

use crate::plugins::{LoadedPlugin, PluginError, PluginRuntime};
use crate::time::{UnixMillis, now_millis};

/// What the operator sees about one plugin name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PluginStatus {
    pub name: String,
    /// The version in force, if any.
    pub version: Option<String>,
    pub size: Option<usize>,
    pub loaded_at: Option<UnixMillis>,
    pub from_cache: Option<bool>,
    /// Why the latest file was refused; cleared by the next successful load.
    pub error: Option<String>,
}

/// Plugins by name.
pub struct PluginRegistry {
    runtime: Arc<PluginRuntime>,
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    status: RwLock<BTreeMap<String, PluginStatus>>,
    /// Held across a change of several steps that must not interleave with another (on
    /// PostgreSQL: check, store and swap in an upload; reload what the database holds).
    changes: tokio::sync::Mutex<()>,
}

impl PluginRegistry {
    pub fn new(runtime: Arc<PluginRuntime>) -> Self {
        Self {
            runtime,
            plugins: RwLock::new(HashMap::new()),
            status: RwLock::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// The lock that keeps multi-step changes apart (see the field).
    pub fn changes(&self) -> &tokio::sync::Mutex<()> {
        &self.changes
    }

    /// The version of `name` in force.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Loads, checks and swaps in `bytes` as plugin `name`. Blocking: compiles.
    pub fn install(&self, name: &str, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, PluginError> {
        match self.check(name, bytes) {
            Ok(plugin) => {
                self.put_in_force(name, plugin.clone());
                Ok(plugin)
            }
            Err(err) => {
                self.refuse(name, &err);
                Err(err)
            }
        }
    }

    /// Loads and checks `bytes` as plugin `name` (compile, type check, smoke call) without
    /// putting it in force. Blocking: compiles.
    pub fn check(&self, name: &str, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, PluginError> {
        let plugin = LoadedPlugin::load(&self.runtime, name, bytes)?;
        plugin.smoke_test()?;
        Ok(Arc::new(plugin))
    }

    /// Swaps in a version that passed [`Self::check`].
    pub fn put_in_force(&self, name: &str, plugin: Arc<LoadedPlugin>) {
        let mut status = self.status.write().unwrap_or_else(PoisonError::into_inner);
        let entry = status
            .entry(name.to_owned())
            .or_insert_with(|| PluginStatus {
                name: name.to_owned(),
                ..PluginStatus::default()
            });
        entry.version = Some(plugin.version.clone());
        entry.size = Some(plugin.size);
        entry.loaded_at = Some(now_millis());
        entry.from_cache = Some(plugin.from_cache);
        entry.error = None;
        self.plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), plugin.clone());
        tracing::info!(
            plugin = &*plugin.reference,
            from_cache = plugin.from_cache,
            "plugin loaded"
        );
    }

    /// Records that a new version of `name` was refused; the version in force (if any) stays.
    pub fn refuse(&self, name: &str, err: &PluginError) {
        let mut status = self.status.write().unwrap_or_else(PoisonError::into_inner);
        status
            .entry(name.to_owned())
            .or_insert_with(|| PluginStatus {
                name: name.to_owned(),
                ..PluginStatus::default()
            })
            .error = Some(err.to_string());
        tracing::error!(plugin = name, error = %err,
            "plugin refused; the version in force (if any) stays");
    }

    /// Whether `bytes` is exactly the version of `name` already in force.
    pub fn is_current(&self, name: &str, bytes: &[u8]) -> bool {
        let version = crate::plugins::plugin::version_of(bytes);
        self.get(name)
            .is_some_and(|plugin| plugin.version == version)
    }

    /// The version of `name` in force, if any.
    pub fn version(&self, name: &str) -> Option<String> {
        self.get(name).map(|plugin| plugin.version.clone())
    }

    /// Unloads `name` (its file was removed). Endpoints that use it fail their deliveries
    /// with a clear reason until it comes back.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self
            .plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .is_some();
        self.status
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if removed {
            tracing::info!(plugin = name, "plugin unloaded");
        }
        removed
    }

    /// Every known plugin name with its state, sorted by name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}
