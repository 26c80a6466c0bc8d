//! The read side of the store seam: what the admin API, the metrics page, readiness, the chain
//! scanner and the lanes' start-up read, whichever backend holds the data.
//!
//! Every method blocks (redb reads are synchronous; a PostgreSQL implementation would wait on
//! its pool), so callers run them on a blocking thread (`tokio::task::spawn_blocking`), never on an
//! async worker. Writes never come through here: they go through the writer's units of work.

use std::collections::HashMap;

use crate::ids::{DeliveryId, EventId, PaymentId};
use crate::payments::Payment;
use crate::time::UnixMillis;

use super::{
    AttemptRecord, ChainCursor, DeliveryRecord, DueBatch, EndpointState, EventRecord, StoreError,
};

/// Reads of committed state, implemented by the redb [`super::Store`] and by
/// [`super::postgres::reads::PgReads`] over SQL.
pub trait Reads: Send + Sync + 'static {
    /// A delivery and its attempts, oldest attempt first.
    fn delivery(
        &self,
        id: DeliveryId,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError>;

    /// One event.
    fn event(&self, id: EventId) -> Result<Option<EventRecord>, StoreError>;

    /// An event and the current record of each of its deliveries.
    fn event_with_deliveries(
        &self,
        id: EventId,
    ) -> Result<Option<(EventRecord, Vec<DeliveryRecord>)>, StoreError>;

    /// Events newest first, below `before`, that `keep` accepts, at most `limit`; at most
    /// `scan` are examined, and the cursor returned continues after the last one examined
    /// (`None`: no more).
    fn events(
        &self,
        before: Option<EventId>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&EventRecord) -> bool,
    ) -> Result<(Vec<EventRecord>, Option<EventId>), StoreError>;

    /// Deliveries newest first, paged like [`Reads::events`].
    fn deliveries(
        &self,
        before: Option<DeliveryId>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&DeliveryRecord) -> bool,
    ) -> Result<(Vec<DeliveryRecord>, Option<DeliveryId>), StoreError>;

    /// Dead-lettered deliveries of `endpoint` parked at or after `since`, oldest first, at most
    /// `limit`; and whether more follow.
    fn dead_letters_of(
        &self,
        endpoint: &str,
        since: UnixMillis,
        limit: usize,
    ) -> Result<(Vec<DeliveryId>, bool), StoreError>;

    /// What the gateway recorded about each endpoint (e.g. disabled by a 410).
    fn endpoint_states(&self) -> Result<HashMap<String, EndpointState>, StoreError>;

    /// One payment.
    fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError>;

    /// Payments newest first, below `before`, that `keep` accepts, at most `limit`.
    fn payments(
        &self,
        before: Option<PaymentId>,
        limit: usize,
        keep: &dyn Fn(&Payment) -> bool,
    ) -> Result<Vec<Payment>, StoreError>;

    /// The addresses the scanner watches on `chain`: those of open payments and of payments
    /// that ended at or after `ended_since`.
    fn watched_addresses(
        &self,
        chain: &str,
        ended_since: UnixMillis,
    ) -> Result<Vec<alloy::primitives::Address>, StoreError>;

    /// How far `chain` has been scanned.
    fn chain_cursor(&self, chain: &str) -> Result<Option<ChainCursor>, StoreError>;

    /// Number of deliveries still waiting to be sent.
    fn pending_count(&self) -> Result<u64, StoreError>;

    /// Per endpoint with pending deliveries: how many, and how long (seconds) the oldest due
    /// one has waited at `now`.
    fn due_summary(&self, now: UnixMillis) -> Result<Vec<(String, u64, u64)>, StoreError>;

    /// The endpoints that have pending deliveries.
    fn due_endpoints(&self) -> Result<Vec<String>, StoreError>;
}

impl Reads for super::Store {
    fn delivery(
        &self,
        id: DeliveryId,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
        super::Store::delivery(self, id)
    }

    fn event(&self, id: EventId) -> Result<Option<EventRecord>, StoreError> {
        super::Store::event(self, id)
    }

    fn event_with_deliveries(
        &self,
        id: EventId,
    ) -> Result<Option<(EventRecord, Vec<DeliveryRecord>)>, StoreError> {
        super::Store::event_with_deliveries(self, id)
    }

    fn events(
        &self,
        before: Option<EventId>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&EventRecord) -> bool,
    ) -> Result<(Vec<EventRecord>, Option<EventId>), StoreError> {
        super::Store::events(self, before, limit, scan, keep)
    }

    fn deliveries(
        &self,
        before: Option<DeliveryId>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&DeliveryRecord) -> bool,
    ) -> Result<(Vec<DeliveryRecord>, Option<DeliveryId>), StoreError> {
        super::Store::deliveries(self, before, limit, scan, keep)
    }

    fn dead_letters_of(
        &self,
        endpoint: &str,
        since: UnixMillis,
        limit: usize,
    ) -> Result<(Vec<DeliveryId>, bool), StoreError> {
        super::Store::dead_letters_of(self, endpoint, since, limit)
    }

    fn endpoint_states(&self) -> Result<HashMap<String, EndpointState>, StoreError> {
        super::Store::endpoint_states(self)
    }

    fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        super::Store::payment(self, id)
    }

    fn payments(
        &self,
        before: Option<PaymentId>,
        limit: usize,
        keep: &dyn Fn(&Payment) -> bool,
    ) -> Result<Vec<Payment>, StoreError> {
        super::Store::payments(self, before, limit, keep)
    }

    fn watched_addresses(
        &self,
        chain: &str,
        ended_since: UnixMillis,
    ) -> Result<Vec<alloy::primitives::Address>, StoreError> {
        super::Store::watched_addresses(self, chain, ended_since)
    }

    fn chain_cursor(&self, chain: &str) -> Result<Option<ChainCursor>, StoreError> {
        super::Store::chain_cursor(self, chain)
    }

    fn pending_count(&self) -> Result<u64, StoreError> {
        super::Store::pending_count(self)
    }

    fn due_summary(&self, now: UnixMillis) -> Result<Vec<(String, u64, u64)>, StoreError> {
        super::Store::due_summary(self, now)
    }

    fn due_endpoints(&self) -> Result<Vec<String>, StoreError> {
        super::Store::due_endpoints(self)
    }
}

/// Where a lane's feeder finds due deliveries: redb's due index, read by the one node; on
/// PostgreSQL, claims that hand each due row to one node at a time.
pub trait DueSource: Send + Sync + 'static {
    /// Up to `limit` deliveries of `endpoint` due by `now` that are not in `skip`, oldest due
    /// first, with bodies of at most `byte_budget` bytes in all (`usize::MAX`: the first body
    /// is loaded whatever its size). Blocks: call it from a blocking thread.
    fn due_batch(
        &self,
        endpoint: &str,
        now: UnixMillis,
        skip: &std::collections::HashSet<DeliveryId>,
        limit: usize,
        byte_budget: usize,
    ) -> Result<DueBatch, StoreError>;

    /// Deliveries a batch returned that the lane did not take, so others may have them now.
    /// Blocks.
    fn release(&self, _ids: Vec<DeliveryId>) {}
}

impl DueSource for super::Store {
    fn due_batch(
        &self,
        endpoint: &str,
        now: UnixMillis,
        skip: &std::collections::HashSet<DeliveryId>,
        limit: usize,
        byte_budget: usize,
    ) -> Result<DueBatch, StoreError> {
        super::Store::due_batch(self, endpoint, now, skip, limit, byte_budget)
    }
}
