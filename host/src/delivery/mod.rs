//! The delivery engine: from a committed delivery to an HTTP request and back to the queue.
//!
//! * [`endpoint`] — an endpoint as the engine uses it: url, keys, policy, limits.
//! * [`policy`] — pure retry rules: what an attempt's outcome means and when to try again.
//! * [`sender`] — one signed HTTP attempt.
//! * [`connection`] — a worker's own keep-alive HTTP/1.1 connection (plain or TLS).
//! * [`subscriptions`] — which endpoints exist, what they subscribe to, whether enabled.
//! * [`lanes`] — one lane per endpoint with its own workers, so a slow endpoint only slows
//!   itself; implements [`crate::queue::Sink`].
//! * [`scheduler`] — the retry timer and start-up recovery, fed from redb's due-time index.
//!
//! Workers never touch redb: they report each attempt to the queue writer, which commits it
//! and tells the scheduler about the next due time.

pub mod connection;
pub mod endpoint;
pub mod lanes;
pub mod policy;
pub mod scheduler;
pub mod sender;
pub mod subscriptions;

pub use endpoint::Endpoint;
pub use lanes::Dispatcher;
pub use policy::{AttemptResult, RetryPolicy};
pub use sender::HttpSender;
pub use subscriptions::{Subscriber, Subscriptions};
