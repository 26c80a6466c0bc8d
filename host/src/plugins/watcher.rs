//! Keeps the registry in step with the plugins directory: `NAME.wasm` is plugin `NAME`.
//!
//! A poll every [`POLL_INTERVAL`] compares each file's size and modification time with what it
//! saw last, and reads only the files that changed. Polling is deliberate: it behaves the same on
//! every filesystem (container volumes and network mounts included, where inotify events go
//! missing), costs one `stat` per file, and a change takes effect within one interval plus the
//! compile. A file caught half-written fails its load, keeps the old version in force, and is
//! picked up again once its size or time changes. Copy to a temporary name and rename for
//! a single clean swap.
//!
//! What a change does is the [`Target`]'s business: on redb the file is loaded into this
//! node's registry ([`Local`]); on PostgreSQL it is published to the database for every node
//! (see `gateway::shared`).

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

/// What the watcher does with a new, changed or removed file.
pub trait Target: Send + 'static {
    /// The registry refusals are recorded in.
    fn registry(&self) -> &Arc<PluginRegistry>;

    /// File `name` is new or changed; `modified` is its modification time. An error means
    /// "try this file again at the next poll" (it is logged).
    fn changed(
        &mut self,
        name: &str,
        bytes: &[u8],
        modified: Option<SystemTime>,
    ) -> Result<(), String>;

    /// File `name` is gone.
    fn removed(&mut self, name: &str);
}

/// One node's registry follows the directory: a file in force is loaded, a removed one is
/// unloaded.
pub struct Local(pub Arc<PluginRegistry>);

impl Target for Local {
    fn registry(&self) -> &Arc<PluginRegistry> {
        &self.0
    }

    fn changed(&mut self, name: &str, bytes: &[u8], _: Option<SystemTime>) -> Result<(), String> {
        if !self.0.is_current(name, bytes) {
            // Refusals are recorded in the plugin's status and logged by the registry.
            let _ = self.0.install(name, bytes);
        }
        Ok(())
    }

    fn removed(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// The directory's view as of the last poll.
pub struct Watcher<T: Target = Local> {
    target: T,
    dir: PathBuf,
    seen: HashMap<String, Stamp>,
}

impl Watcher<Local> {
    pub fn new(registry: Arc<PluginRegistry>, dir: PathBuf) -> Self {
        Self::with_target(Local(registry), dir)
    }
}

impl<T: Target> Watcher<T> {
    pub fn with_target(target: T, dir: PathBuf) -> Self {
        Self {
            target,
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
            let registry = self.target.registry();
            let cap = registry.runtime().limits().wasm_bytes;
            if stamp.len > cap as u64 {
                // Refused before reading: a huge file costs no memory and no compile.
                let err = PluginError::Invalid(too_large(stamp.len, cap));
                registry.refuse(name, &err);
                continue;
            }
            match std::fs::read(path) {
                Ok(bytes) => {
                    if let Err(err) = self.target.changed(name, &bytes, stamp.modified) {
                        tracing::warn!(path = %path.display(), error = %err,
                            "cannot take in the plugin file; trying again at the next poll");
                        self.seen.remove(name);
                    }
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
            self.target.removed(&name);
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

/// Writes `bytes` as `dir/NAME.wasm` in one rename, so no reader sees half a file.
pub fn save(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = dir.join(format!(
        ".{name}.wasm.{}.upload",
        uuid::Uuid::new_v4().simple()
    ));
    let mut file = std::fs::File::create(&temporary)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(err);
    }
    std::fs::rename(&temporary, dir.join(format!("{name}.wasm")))
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
