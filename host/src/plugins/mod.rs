//! Merchant plugins: WebAssembly components that filter events and reshape payloads.
//!
//! * [`runtime`] — the wasmtime engine: pooling allocator, epoch-based CPU limit, memory limit,
//!   the contract's host imports (logging) and WASI p2 with no ambient capabilities.
//! * [`cache`] — compiled components on disk, keyed by content hash and engine.
//! * [`plugin`] — one loaded plugin version: type-checked `InstancePre`, warm instances
//!   per endpoint, and the checked calls.
//! * [`registry`] — the plugins in force, swapped atomically per name; [`watcher`] keeps it in
//!   step with a directory.
//! * [`chain`] — an endpoint's ordered plugin chain over one event.
//! * [`tool`] — `hookgate plugin check|run`: a plugin file tried without a gateway;
//!   [`scaffold`] — `hookgate plugin new`: a plugin crate to start from, outside this repository.
//!
//! The contract lives in `wit/` (`hookgate:plugin@0.1.0`, world `webhook-plugin`).

pub mod cache;
pub mod chain;
pub mod plugin;
pub mod registry;
pub mod runtime;
pub mod scaffold;
pub mod tool;
pub mod watcher;

pub use chain::{ChainOutcome, PluginStep, Rendered};
pub use plugin::{LoadedPlugin, PluginError};
pub use registry::PluginRegistry;
pub use runtime::{Limits, PluginRuntime};
