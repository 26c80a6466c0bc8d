//! The delivery engine: from a committed delivery to an HTTP request and back to the queue.
//!
//! * [`endpoint`] — an endpoint as the engine uses it: url, keys, policy, limits.
//! * [`policy`] — pure retry rules: what an attempt's outcome means and when to try again.
//! * [`sender`] — one signed HTTP attempt.
//! * [`connection`] — a worker's own keep-alive HTTP/1.1 connection (plain or TLS).
//! * [`egress`] — which addresses deliveries may reach (the SSRF guard), checked on the URL
//!   and again on every address a name resolves to.
//! * [`subscriptions`] — which endpoints exist, what they subscribe to, whether enabled.
//! * [`lanes`] — one lane per endpoint with its own workers and a bounded queue fed from the
//!   store's per-endpoint due-time index (new deliveries, retries and crash recovery), so a
//!   slow endpoint only slows itself and memory does not grow with its backlog; implements
//!   [`crate::queue::Sink`].
//!
//! Workers never touch redb: they report each attempt to the queue writer, which commits it
//! and tells the lane when the delivery is next due.

pub mod connection;
pub mod egress;
pub mod endpoint;
pub mod lanes;
pub mod policy;
pub mod sender;
pub mod subscriptions;

pub use endpoint::Endpoint;
pub use lanes::Dispatcher;
pub use policy::{AttemptResult, RetryPolicy};
pub use sender::HttpSender;
pub use subscriptions::{Subscriber, Subscriptions};
