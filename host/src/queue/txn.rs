//! The store seam that units of work see: one write transaction, backend-neutral.
//!
//! Domain logic (payments, the chain scanner, publishing) reads and writes through [`Txn`] and
//! emits events through it; it never names a storage engine. The redb writer implements it
//! ([`super::redb_txn`]); a second backend implements the same trait over its own transaction.
//! Invariants between tables (a payment's address index, the set of open payments, an event's
//! deliveries) are kept inside the implementation, never by callers.

use alloy::primitives::Address;
use serde_json::value::RawValue;

use super::{NewEvent, PublishOutcome};
use crate::ids::{EventId, PaymentId};
use crate::payments::Payment;
use crate::store::{ChainCursor, StoreError, StoredAnswer, StoredEndpoint};
use crate::time::UnixMillis;

/// An event a unit of work raises: committed with the unit's other writes, fanned out to every
/// subscribed endpoint, and rendered by their plugin chains after the commit.
#[derive(Debug, Clone)]
pub struct Emit {
    pub event_type: String,
    pub data: Box<RawValue>,
    /// Names the event's cause; a second emit with the same key is a no-op, so re-applying
    /// the same cause (a re-scanned block) never raises the event twice.
    pub idempotency_key: String,
}

/// What one unit of work may read and write inside the writer's transaction.
pub trait Txn {
    /// The writer's clock for this batch (unix milliseconds).
    fn now(&self) -> UnixMillis;

    /// Commits an event whose fan-out and bodies are already decided (the publish API).
    fn publish(&mut self, event: &NewEvent) -> Result<PublishOutcome, StoreError>;

    /// [`Txn::publish`] for each of `events`, in order; a backend that pays per statement
    /// writes them together.
    fn publish_all(&mut self, events: &[NewEvent]) -> Result<Vec<PublishOutcome>, StoreError> {
        events.iter().map(|event| self.publish(event)).collect()
    }

    /// Commits a domain event and one delivery per subscribed endpoint. `None` when an event
    /// with the same idempotency key exists already (nothing is written).
    fn emit(&mut self, event: Emit) -> Result<Option<EventId>, StoreError>;

    fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError>;

    /// Writes a payment, keeping its address index and the open-payments index in step.
    fn put_payment(&mut self, payment: &Payment) -> Result<(), StoreError>;

    /// The latest payment created on `address` of `chain`, live or not.
    fn payment_at(&self, chain: &str, address: Address) -> Result<Option<Payment>, StoreError>;

    /// Payments of `chain` that can still change state (pending, underpaid, detected).
    fn open_payments(&self, chain: &str) -> Result<Vec<Payment>, StoreError>;

    /// The open payments of `chain` that the chain's progress or the clock at `now` can move:
    /// detected ones (confirmation) and those past `expires_at` (expiry). Read without loading
    /// the others, so a scan step costs what changes, not how many payments are open.
    fn payments_to_advance(&self, chain: &str, now: UnixMillis)
    -> Result<Vec<Payment>, StoreError>;

    /// Takes the next unused derivation index for watch-only addresses (persisted).
    fn take_address_index(&mut self) -> Result<u32, StoreError>;

    fn chain_cursor(&self, chain: &str) -> Result<Option<ChainCursor>, StoreError>;

    fn put_chain_cursor(&mut self, chain: &str, cursor: &ChainCursor) -> Result<(), StoreError>;

    fn stored_endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>, StoreError>;

    /// Why endpoint `id` is disabled; `None` while it is enabled.
    fn endpoint_disabled(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Disables endpoint `id` with `reason`, or enables it (`None`); in force after the commit.
    fn set_endpoint_disabled(&mut self, id: &str, reason: Option<String>)
    -> Result<(), StoreError>;

    /// The answer kept for an API `Idempotency-Key` (scoped to its route).
    fn api_answer(&self, key: &str) -> Result<Option<StoredAnswer>, StoreError>;

    fn put_api_answer(&mut self, key: &str, answer: &StoredAnswer) -> Result<(), StoreError>;

    fn put_stored_endpoint(&mut self, record: &StoredEndpoint) -> Result<(), StoreError>;

    /// Removes an endpoint with what the gateway recorded about it (its disabled state), so
    /// an endpoint created later with the same id starts clean. Whether it existed.
    fn delete_stored_endpoint(&mut self, id: &str) -> Result<bool, StoreError>;
}
