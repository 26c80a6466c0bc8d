//! Keeps the registry in step with the plugins directory: `NAME.wasm` is plugin `NAME`.
//!
//! A poll every [`POLL_INTERVAL`] compares each file's size and modification time with what it
//! saw last, and reads only the files that changed. Polling is deliberate: it behaves the same on
//! every filesystem (container volumes and network mounts included, where inotify events go
//! missing), costs one `stat` per file, and a change takes effect within one interval plus the
//! compile. A file caught half-written fails its load, keeps the old version in force, and is
//! picked up again once its size or time changes. Copy to a temporary name and rename for
//! a single clean swap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::is_plugin_name;
use crate::plugins::PluginRegistry;
use crate::plugins::plugin::{PluginError, too_large};

/// How often the directory is checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A file's identity between two polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

/// The directory's view as of the last poll.
pub struct Watcher {
    registry: Arc<PluginRegistry>,
    dir: PathBuf,
    seen: HashMap<String, Stamp>,
}

impl Watcher {
    pub fn new(registry: Arc<PluginRegistry>, dir: PathBuf) -> Self {
        Self {
            registry,
            dir,
            seen: HashMap::new(),
        }
    }

    /// Loads whatever changed since the last poll and unloads what disappeared.
    pub fn poll(&mut self) {
        let files = match list_plugins(&self.dir) {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), error = %err, "cannot read the plugins directory");
                return;
            }
        };
        for (name, path, stamp) in &files {
            if self.seen.get(name) == Some(stamp) {
                continue;
            }
            self.seen.insert(name.clone(), *stamp);
            let cap = self.registry.runtime().limits().wasm_bytes;
            if stamp.len > cap as u64 {
                // Refused before reading: a huge file costs no memory and no compile.
                let err = PluginError::Invalid(too_large(stamp.len, cap));
                self.registry.refuse(name, &err);
                continue;
            }
            match std::fs::read(path) {
                Ok(bytes) if self.registry.is_current(name, &bytes) => {}
                Ok(bytes) => {
                    // Refusals are recorded in the plugin's status and logged by the registry.
                    let _ = self.registry.install(name, &bytes);
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot read plugin file");
                }
            }
        }
        let present: Vec<&String> = files.iter().map(|(name, _, _)| name).collect();
        let gone: Vec<String> = self
            .seen
            .keys()
            .filter(|name| !present.contains(name))
            .cloned()
            .collect();
        for name in gone {
            self.seen.remove(&name);
            self.registry.remove(&name);
        }
    }

    /// Polls forever on a dedicated thread (loads compile: CPU work off the async runtime).
    pub fn spawn(mut self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("hookgate-plugin-watch".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(POLL_INTERVAL);
                    // Whatever one file does to a load, the watcher keeps serving later changes.
                    let polled =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.poll()));
                    if polled.is_err() {
                        tracing::error!(dir = %self.dir.display(),
                            "loading a plugin panicked; the watcher goes on");
                    }
                }
            })
            .map(drop)
    }
}

/// `(name, path, stamp)` for every `NAME.wasm` with a valid plugin name.
fn list_plugins(dir: &Path) -> std::io::Result<Vec<(String, PathBuf, Stamp)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("wasm") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        if !is_plugin_name(name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        files.push((
            name.to_owned(),
            path.clone(),
            Stamp {
                len: meta.len(),
                modified: meta.modified().ok(),
            },
        ));
    }
    Ok(files)
}
