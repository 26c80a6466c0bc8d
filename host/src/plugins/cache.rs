//! Compiled plugins on disk, so a restart deserializes in a millisecond instead of compiling.
//!
//! A file is named `<sha256 of the .wasm>-<engine tag>.cwasm`: the content hash means a
//! changed plugin never meets a stale compilation, and the engine tag (a hash of wasmtime's
//! compatibility settings) means a different wasmtime or configuration never loads it. Files
//! are written to a temporary name and renamed, so a crash leaves no half-written entry. A file
//! that fails to load is deleted and the component compiled again.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The on-disk compile cache.
pub struct ComponentCache {
    dir: PathBuf,
    engine_tag: String,
}

impl ComponentCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        }
    }

    fn path(&self, wasm: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_tag))
    }

    /// The cached compilation of `wasm`, if there is a usable one.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Option<Component> {
        let path = self.path(wasm);
        if !path.exists() {
            return None;
        }
        // SAFETY: files in the cache directory are written only by `store` below from
        // `Component::serialize` of this same engine configuration (the engine tag is in the
        // name). The directory is the operator's, like the binary itself; wasmtime still checks
        // the header and refuses an artifact from an incompatible engine.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err,
                    "unusable compiled plugin in the cache; compiling again");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Saves a compilation; failures only cost a recompile later, so they are logged.
    pub fn store(&self, wasm: &[u8], component: &Component) {
        let path = self.path(wasm);
        let result = component
            .serialize()
            .map_err(|err| err.to_string())
            .and_then(|bytes| {
                std::fs::create_dir_all(&self.dir).map_err(|err| err.to_string())?;
                let temporary = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&temporary, bytes).map_err(|err| err.to_string())?;
                std::fs::rename(&temporary, &path).map_err(|err| err.to_string())
            });
        if let Err(err) = result {
            tracing::warn!(path = %path.display(), error = %err, "cannot cache a compiled plugin");
        }
    }
}
