//! A lane's feeder on PostgreSQL: due deliveries are claimed, not read, so each goes to one
//! node at a time.
//!
//! [`PgDue::due_batch`] claims up to the lane's room with [`PgQueue::claim`] and registers the
//! token of every row in [`Claims`], so the writer can settle with it and the renewal keeps
//! the lease. Rows over the lane's byte bound are released at once. There is no due index to
//! learn the next due time from (other nodes change it), so every batch asks to be woken again
//! after the poll interval: the backstop behind the `NOTIFY` another node sends when it leaves
//! work for everyone.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::PgStore;
use super::claims::{Claims, release};
use super::queue::PgQueue;
use crate::ids::DeliveryId;
use crate::store::{ByteBudget, DueBatch, DueSource, StoreError};
use crate::time::UnixMillis;

/// Claims due deliveries for this node's lanes.
pub struct PgDue {
    store: PgStore,
    queue: PgQueue,
    claims: Arc<Claims>,
    /// How long a claim holds a row before another node may take it.
    lease: Duration,
    /// How often an idle lane looks for due work anyway.
    poll: Duration,
    runtime: tokio::runtime::Handle,
}

impl PgDue {
    pub fn new(
        store: PgStore,
        claims: Arc<Claims>,
        lease: Duration,
        poll: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            queue: PgQueue::new(store.clone()),
            store,
            claims,
            lease,
            poll,
            runtime,
        }
    }
}

impl DueSource for PgDue {
    fn due_batch(
        &self,
        endpoint: &str,
        now: UnixMillis,
        _skip: &HashSet<DeliveryId>,
        limit: usize,
        byte_budget: usize,
    ) -> Result<DueBatch, StoreError> {
        // What this node holds is not due (its row's due time is the lease's end): `skip`
        // is already honoured by the database.
        let claimed = self
            .runtime
            .block_on(self.queue.claim(endpoint, limit, self.lease))?;
        let ids = claimed
            .deliveries
            .iter()
            .map(|delivery| delivery.record().id);
        self.claims.hold(ids, claimed.token);
        let mut batch = DueBatch {
            complete: claimed.deliveries.len() < limit,
            next_at: Some(now + u64::try_from(self.poll.as_millis()).unwrap_or(u64::MAX)),
            deliveries: Vec::with_capacity(claimed.deliveries.len()),
        };
        let mut budget = ByteBudget::new(byte_budget);
        let mut over = Vec::new();
        for delivery in claimed.deliveries {
            if !over.is_empty() || !budget.admits(&delivery, batch.deliveries.is_empty()) {
                over.push(delivery.record().id);
                continue;
            }
            batch.deliveries.push(delivery);
        }
        if !over.is_empty() {
            batch.complete = false;
            self.release(over);
        }
        Ok(batch)
    }

    fn release(&self, ids: Vec<DeliveryId>) {
        let released = self.runtime.block_on(async {
            let client = self.store.client().await?;
            release(&client, &self.claims, &ids).await
        });
        if let Err(err) = released {
            tracing::warn!(error = %err, deliveries = ids.len(),
                "cannot give up claimed deliveries; they are claimed again when their lease runs out");
        }
    }
}
