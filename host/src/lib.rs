//! Hookgate: a WebAssembly-pluggable webhook gateway for crypto payments.
//!
//! Data flows one way through the modules, each named for what it does:
//!
//! ```text
//! admin (publish) ─▶ queue::writer ─(one redb commit)─▶ delivery::lanes ─▶ delivery::sender ─▶ HTTP
//!                        ▲                                   │
//!                        └──────── attempt results ──────────┘   (each lane's feeder reads retries
//!                                                                  and recovery from the due index)
//! ```
//!
//! * [`config`] — the TOML file plus environment overrides.
//! * [`chain`] — the EVM scanners: blocks and logs to transfers, cursors, reorgs.
//! * [`payments`] — payments, the confirmation rules and their events.
//! * [`store`] — the redb schema and read-side queries.
//! * [`events`] — publish requests into events with their fan-out and default body.
//! * [`queue`] — the single writer that group-commits events, deliveries and attempt results.
//! * [`endpoints`] — endpoint changes at run time (create, update, rotate, delete).
//! * [`delivery`] — retry policy, per-endpoint lanes of HTTP workers fed from the due index,
//!   the egress guard.
//! * [`metrics`] — the Prometheus registry behind `/metrics`.
//! * [`signing`] — `X-Webhook-Signature` and Standard Webhooks signatures.
//! * [`admin`] — the HTTP API operators and merchants drive.
//! * [`gateway`] — wires the pieces together and runs them.

pub mod admin;
pub mod chain;
pub mod config;
pub mod delivery;
pub mod endpoints;
pub mod events;
pub mod gateway;
pub mod ids;
pub mod metrics;
pub mod payments;
pub mod plugins;
pub mod queue;
pub mod signing;
pub mod store;
pub mod time;
