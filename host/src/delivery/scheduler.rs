//! The retry timer, fed by redb's due-time index.
//!
//! Memory holds only the deliveries due within a sliding horizon ([`HORIZON_MS`] ahead);
//! anything later stays in redb until a sweep reaches it. Two paths fill the timer:
//!
//! * the writer reports each committed retry (`retry_at`); it is kept if it falls before the
//!   loaded horizon, otherwise dropped here because a later sweep will read it from redb;
//! * a sweep reads the index for `[loaded_until, now + horizon)` and moves the horizon on.
//!
//! Both run on this one task, so a retry committed before a sweep's snapshot is either in that
//! snapshot or arrives after the horizon moved past it — never lost. Identical entries from
//! both paths collapse in the set. At start-up the first sweep reads everything due so far:
//! that is crash recovery, including deliveries that were in flight when the process died.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::delivery::Dispatcher;
use crate::ids::DeliveryId;
use crate::queue::writer::ready;
use crate::queue::{RenderJob, Sink};
use crate::store::{PendingDelivery, Store, StoreError};
use crate::time::{UnixMillis, now_millis};

/// How far ahead due deliveries are held in memory.
pub const HORIZON_MS: u64 = 60_000;

/// Most deliveries loaded from redb in one read transaction.
const LOAD_CHUNK: usize = 1024;

/// The timer task's state.
pub struct Scheduler {
    store: Store,
    dispatcher: Arc<Dispatcher>,
    retries: mpsc::UnboundedReceiver<(DeliveryId, UnixMillis)>,
    timers: BTreeSet<(UnixMillis, DeliveryId)>,
    loaded_until: UnixMillis,
}

impl Scheduler {
    pub fn new(
        store: Store,
        dispatcher: Arc<Dispatcher>,
        retries: mpsc::UnboundedReceiver<(DeliveryId, UnixMillis)>,
    ) -> Self {
        Self {
            store,
            dispatcher,
            retries,
            timers: BTreeSet::new(),
            loaded_until: 0,
        }
    }

    /// Loads what is due within the horizon — at start-up, every delivery left pending by the
    /// previous run — and hands what is due already to the lanes. Returns how many it loaded.
    pub fn recover(&mut self) -> Result<usize, StoreError> {
        let now = now_millis();
        let until = now + HORIZON_MS;
        self.timers.extend(self.store.due_between(0, until)?);
        self.loaded_until = until;
        let loaded = self.timers.len();
        self.fire(now);
        Ok(loaded)
    }

    /// Runs until the writer goes away.
    pub async fn run(mut self) {
        loop {
            let now = now_millis();
            let next_sweep = self.loaded_until.saturating_sub(HORIZON_MS / 2);
            let next_timer = self
                .timers
                .first()
                .map(|(at, _)| *at)
                .unwrap_or(UnixMillis::MAX);
            let wake = next_sweep.min(next_timer);
            let sleep = tokio::time::sleep(Duration::from_millis(wake.saturating_sub(now)));
            tokio::select! {
                retry = self.retries.recv() => match retry {
                    Some((id, at)) => {
                        if at < self.loaded_until {
                            self.timers.insert((at, id));
                        }
                    }
                    None => return,
                },
                () = sleep => {
                    let now = now_millis();
                    if now >= next_sweep {
                        self.sweep(now);
                    }
                    self.fire(now);
                }
            }
        }
    }

    /// Reads `[loaded_until, now + horizon)` from the due-time index into the timer.
    fn sweep(&mut self, now: UnixMillis) {
        let until = now + HORIZON_MS;
        match self.store.due_between(self.loaded_until, until) {
            Ok(entries) => {
                self.timers.extend(entries);
                self.loaded_until = until;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot read the due-time index; will try again");
            }
        }
    }

    /// Hands every delivery due by `now` to its lane.
    fn fire(&mut self, now: UnixMillis) {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            due.push(id);
        }
        for chunk in due.chunks(LOAD_CHUNK) {
            match self.store.pending_deliveries(chunk) {
                Ok(pending) => {
                    for delivery in pending {
                        match delivery {
                            PendingDelivery::Ready { record, body } => {
                                self.dispatcher.deliver_now(ready(&record, body));
                            }
                            PendingDelivery::Unrendered { record, event } => {
                                self.dispatcher.render(RenderJob {
                                    delivery_id: record.id,
                                    endpoint_id: record.endpoint_id,
                                    event,
                                });
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot load due deliveries; retrying shortly");
                    let retry_at = now + 1_000;
                    self.timers.extend(chunk.iter().map(|id| (retry_at, *id)));
                }
            }
        }
    }
}
