//! Compiled plugins on disk, so a restart deserializes in a millisecond instead of compiling.
//!
//! A file is named `<sha256 of the .wasm>-<engine tag>.cwasm`: the content hash means a
//! changed plugin never meets a stale compilation, and the engine tag (a hash of wasmtime's
//! compatibility settings) means a different wasmtime or configuration never loads it. Files
//! are written to a temporary name and renamed, so a crash leaves no half-written entry.
//!
//! A compiled artifact is native code the host will run, so the cache must not be a way to
//! inject code: every file ends with an HMAC-SHA256 of its bytes *and* the `.wasm` digest,
//! keyed with a secret kept in the gateway's redb file (mode 0600), and is only deserialized
//! after that tag verifies. A file swapped for another plugin's artifact, edited, or written by
//! anyone without the key is deleted and the component compiled again from its `.wasm`, with a
//! warning in the log. The directory is created 0700 and the files 0600.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Length of the tag at the end of each cached file.
const TAG_LEN: usize = 32;

/// The secret that authenticates cached artifacts.
#[derive(Clone)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key (a cache only this process will read back).
    pub fn random() -> Self {
        Self(rand::random())
    }

    fn tag(&self, wasm_digest: &[u8], artifact: &[u8]) -> [u8; TAG_LEN] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(wasm_digest);
        mac.update(artifact);
        mac.finalize().into_bytes().into()
    }
}

/// The on-disk compile cache.
pub struct ComponentCache {
    dir: PathBuf,
    engine_tag: String,
    key: CacheKey,
}

impl ComponentCache {
    pub fn new(dir: PathBuf, engine: &Engine, key: CacheKey) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
            key,
        }
    }

    fn path(&self, digest: &[u8]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(digest), self.engine_tag))
    }

    /// The cached compilation of `wasm`, if there is one whose tag verifies.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Option<Component> {
        let digest = Sha256::digest(wasm);
        let path = self.path(&digest);
        let file = match std::fs::read(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot read a cached plugin; compiling again");
                return None;
            }
        };
        let verified = file.len() > TAG_LEN && {
            let (artifact, tag) = file.split_at(file.len() - TAG_LEN);
            let expected = self.key.tag(&digest, artifact);
            bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag))
        };
        if !verified {
            tracing::warn!(path = %path.display(),
                "a cached compiled plugin failed verification (tampered with, or not written by \
                 this gateway); deleting it and compiling the .wasm again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let artifact = &file[..file.len() - TAG_LEN];
        // SAFETY: the bytes carry a valid HMAC under the gateway's own key over this `.wasm`'s
        // digest, so they are exactly what `store` below wrote from `Component::serialize` of
        // this engine configuration (the engine tag is in the name); wasmtime also checks the
        // header and refuses an artifact from an incompatible engine.
        match unsafe { Component::deserialize(engine, artifact) } {
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
        let digest = Sha256::digest(wasm);
        let path = self.path(&digest);
        let result = component
            .serialize()
            .map_err(|err| err.to_string())
            .and_then(|artifact| {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)
                    .map_err(|err| err.to_string())?;
                let tag = self.key.tag(&digest, &artifact);
                let temporary = path.with_extension(format!("tmp{}", std::process::id()));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temporary)
                    .map_err(|err| err.to_string())?;
                file.write_all(&artifact)
                    .and_then(|()| file.write_all(&tag))
                    .map_err(|err| err.to_string())?;
                std::fs::rename(&temporary, &path).map_err(|err| err.to_string())
            });
        if let Err(err) = result {
            tracing::warn!(path = %path.display(), error = %err, "cannot cache a compiled plugin");
        }
    }
}
