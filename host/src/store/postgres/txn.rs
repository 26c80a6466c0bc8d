//! Units of work on PostgreSQL: the same [`Txn`] the redb writer offers, over one SQL
//! transaction, so payments, the chain scanner and endpoint edits run unchanged on either
//! backend.
//!
//! [`Txn`] is synchronous (a unit of work is plain domain logic that must not await), so the
//! PostgreSQL side runs where blocking is allowed: [`PgUnits`] owns a connection driven by a
//! current-thread runtime of its own, on the thread that calls it (the writer's thread; a
//! blocking task in tests), and each [`Txn`] call runs its statement to completion there. One
//! [`PgUnits::run`] is one transaction: every write of the unit, its events, their deliveries
//! and queue rows commit together or not at all.
//!
//! New deliveries are held by this node under a lease (its own lanes take them at once, the
//! way the redb writer hands them over after the commit); a node that dies before sending
//! them lets the lease run out, and any other node claims them.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;

use super::queue::{ClaimToken, insert_events, summary_of_new};
use super::{PgStore, uuid};
use crate::delivery::Subscriptions;
use crate::ids::{DeliveryId, EventId, PaymentId};
use crate::payments::{Payment, PaymentStatus};
use crate::plugins::Rendered;
use crate::queue::writer::{AfterCommit, ready};
use crate::queue::{
    DeliveryContent, Emit, NewDelivery, NewEvent, PublishOutcome, ReadyDelivery, RenderJob, Txn,
    UnitOfWork,
};
use crate::store::{ChainCursor, StoreError, StoredAnswer, StoredEndpoint, corrupt};
use crate::time::{UnixMillis, now_millis};

/// The counter holding the next watch-only derivation index (as in the redb file).
const ADDRESS_INDEX: &str = "address_index";

/// What a committed unit of work hands on: deliveries for this node's lanes, held under
/// [`Committed::token`] until their lease runs out.
#[derive(Debug, Default)]
pub struct Committed {
    pub deliver_now: Vec<ReadyDelivery>,
    pub render: Vec<RenderJob>,
    /// (endpoint, disabled reason): endpoints a unit disabled or enabled.
    pub endpoint_changes: Vec<(String, Option<String>)>,
    pub token: Option<ClaimToken>,
}

/// Runs units of work against PostgreSQL from a thread that may block.
pub struct PgUnits {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    /// How long new deliveries stay held by this node.
    lease: Duration,
}

impl PgUnits {
    /// Connects; must be called outside an async context (it blocks on the connection).
    pub fn connect(store: &PgStore, lease: Duration) -> Result<Self, StoreError> {
        let runtime = super::blocking_runtime()?;
        let client = runtime.block_on(store.dedicated("the unit-of-work writer"))?;
        Ok(Self {
            runtime,
            client,
            lease,
        })
    }

    /// Applies `work` in one transaction and commits it. A store error rolls everything back.
    pub fn run<W: UnitOfWork>(
        &mut self,
        subscriptions: &Subscriptions,
        work: &mut W,
    ) -> Result<(W::Output, Committed), StoreError> {
        let runtime = &self.runtime;
        let txn = runtime.block_on(self.client.transaction())?;
        let token = ClaimToken::new();
        let mut after = AfterCommit::default();
        let mut held = Held::default();
        let output = {
            let mut pg = PgTxn {
                runtime,
                txn: &txn,
                subscriptions,
                now: now_millis(),
                hold: (token, self.lease),
                after: &mut after,
                held: &mut held,
            };
            work.apply(&mut pg)?
        };
        held.flush(runtime, &txn, (token, self.lease))?;
        runtime.block_on(txn.commit())?;
        let committed = Committed {
            deliver_now: after.deliver_now,
            render: after.render,
            endpoint_changes: after.endpoint_changes,
            token: Some(token),
        };
        Ok((output, committed))
    }
}

/// One SQL transaction as units of work see it.
pub(crate) struct PgTxn<'a, 't> {
    pub runtime: &'a tokio::runtime::Runtime,
    pub txn: &'a tokio_postgres::Transaction<'t>,
    pub subscriptions: &'a Subscriptions,
    pub now: UnixMillis,
    /// New deliveries are held under this token for this long.
    pub hold: (ClaimToken, Duration),
    pub after: &'a mut AfterCommit,
    /// The new deliveries held, to register once the transaction commits.
    pub held: &'a mut Held,
}

/// What a batch's units published: the deliveries held, and the events without an
/// idempotency key, written together at the end of the batch.
#[derive(Default)]
pub(crate) struct Held {
    pub ids: Vec<DeliveryId>,
    /// An event without a key cannot conflict with anything (its id is new), so its outcome
    /// is known before it is written, and a batch of single-event publishes costs one set of
    /// multi-row statements instead of one per event.
    deferred: Vec<NewEvent>,
}

impl Held {
    /// Writes the deferred events inside `txn`; call before it commits.
    pub fn flush(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        txn: &tokio_postgres::Transaction<'_>,
        hold: (ClaimToken, Duration),
    ) -> Result<(), StoreError> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.deferred);
        let inserted = runtime.block_on(insert_events(txn, &events, Some(hold)))?;
        let created = inserted
            .outcomes
            .iter()
            .filter(|outcome| matches!(outcome, PublishOutcome::Created(_)))
            .count();
        if created != events.len() {
            return Err(corrupt(format!(
                "{} of {} new events without an idempotency key were not created",
                events.len() - created,
                events.len()
            )));
        }
        Ok(())
    }
}

impl PgTxn<'_, '_> {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The JSON record in column 0 of the row `sql` finds, if any.
    fn record<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<T>, StoreError> {
        match self.block_on(self.txn.query_opt(sql, params))? {
            Some(row) => Ok(Some(serde_json::from_str(row.get::<_, &str>(0))?)),
            None => Ok(None),
        }
    }

    fn records<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<T>, StoreError> {
        self.block_on(self.txn.query(sql, params))?
            .iter()
            .map(|row| Ok(serde_json::from_str(row.get::<_, &str>(0))?))
            .collect()
    }

    /// Commits `events` with their deliveries held by this node, in one set of multi-row
    /// statements, and hands the new ones on after the commit.
    fn insert(&mut self, events: &[NewEvent]) -> Result<Vec<PublishOutcome>, StoreError> {
        let inserted = self.block_on(insert_events(self.txn, events, Some(self.hold)))?;
        if inserted.outcomes.len() != events.len() {
            return Err(corrupt(format!(
                "an insert of {} events answered for {}",
                events.len(),
                inserted.outcomes.len()
            )));
        }
        for (event, outcome) in events.iter().zip(&inserted.outcomes) {
            if matches!(outcome, PublishOutcome::Created(_)) {
                self.hand_on(event);
            }
        }
        Ok(inserted.outcomes)
    }

    fn hand_on(&mut self, event: &NewEvent) {
        let record = Arc::new(event.record());
        for delivery in &event.deliveries {
            self.held.ids.push(delivery.id);
            match &delivery.content {
                DeliveryContent::Ready(payload) => {
                    let pending = event.pending_record(delivery);
                    self.after
                        .deliver_now
                        .push(ready(&pending, payload.body.clone()));
                }
                DeliveryContent::Render => self.after.render.push(RenderJob {
                    delivery_id: delivery.id,
                    endpoint_id: delivery.endpoint_id.clone(),
                    event: record.clone(),
                }),
            }
        }
    }
}

impl Txn for PgTxn<'_, '_> {
    fn now(&self) -> UnixMillis {
        self.now
    }

    fn publish(&mut self, event: &NewEvent) -> Result<PublishOutcome, StoreError> {
        let mut outcomes = self.insert(std::slice::from_ref(event))?;
        outcomes
            .pop()
            .ok_or_else(|| corrupt("an insert answered for no event".to_owned()))
    }

    fn publish_all(&mut self, events: &[NewEvent]) -> Result<Vec<PublishOutcome>, StoreError> {
        if events.iter().all(|event| event.idempotency_key.is_none()) {
            for event in events {
                self.hand_on(event);
            }
            self.held.deferred.extend_from_slice(events);
            return Ok(events
                .iter()
                .map(|event| PublishOutcome::Created(summary_of_new(event)))
                .collect());
        }
        self.insert(events)
    }

    fn emit(&mut self, event: Emit) -> Result<Option<EventId>, StoreError> {
        let id = EventId::new();
        let data = event.data.get();
        let deliveries = self
            .subscriptions
            .subscribers(&event.event_type)
            .iter()
            .map(|endpoint| NewDelivery {
                id: DeliveryId::new(),
                endpoint_id: endpoint.id.clone(),
                content: if endpoint.plugins.is_empty() {
                    DeliveryContent::Ready(Rendered::default_json(crate::events::default_body(
                        id,
                        &event.event_type,
                        self.now,
                        data,
                    )))
                } else {
                    DeliveryContent::Render
                },
            })
            .collect();
        let new = NewEvent {
            id,
            fingerprint: crate::events::fingerprint(&event.event_type, data),
            event_type: event.event_type,
            created_at: self.now,
            idempotency_key: Some(event.idempotency_key),
            deliveries,
            data: event.data,
        };
        // A key seen before is the same cause applied again: nothing is raised.
        Ok(match self.publish(&new)? {
            PublishOutcome::Created(_) => Some(id),
            PublishOutcome::Replayed(_) | PublishOutcome::Conflict { .. } => None,
        })
    }

    fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        self.record(
            "SELECT record FROM payments WHERE id = $1",
            &[&uuid(id.as_u128())],
        )
    }

    fn put_payment(&mut self, payment: &Payment) -> Result<(), StoreError> {
        let id = uuid(payment.id.as_u128());
        let open = payment.status.is_open();
        let record = serde_json::to_string(payment)?;
        let expires_at = i64::try_from(payment.expires_at).unwrap_or(i64::MAX);
        let address = format!("{:#x}", payment.address);
        let ended_at =
            (!open).then(|| i64::try_from(payment.updated_at.max(1)).unwrap_or(i64::MAX));
        self.block_on(async {
            self.txn
                .execute(
                    "INSERT INTO payments (id, chain, open, detected, expires_at_ms, record)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (id) DO UPDATE
                     SET open = excluded.open, detected = excluded.detected,
                         expires_at_ms = excluded.expires_at_ms, record = excluded.record",
                    &[
                        &id,
                        &payment.chain,
                        &open,
                        &(payment.status == PaymentStatus::Detected),
                        &expires_at,
                        &record,
                    ],
                )
                .await?;
            if open {
                self.txn
                    .execute(
                        "INSERT INTO addresses (chain, address, payment_id, ended_at_ms)
                         VALUES ($1, $2, $3, NULL)
                         ON CONFLICT (chain, address) DO UPDATE
                         SET payment_id = excluded.payment_id, ended_at_ms = NULL",
                        &[&payment.chain, &address, &id],
                    )
                    .await?;
            } else {
                // The address stays watched for late transfers until the late window passes.
                self.txn
                    .execute(
                        "UPDATE addresses SET ended_at_ms = $4
                          WHERE chain = $1 AND address = $2 AND payment_id = $3",
                        &[&payment.chain, &address, &id, &ended_at],
                    )
                    .await?;
            }
            Ok::<(), StoreError>(())
        })
    }

    fn payment_at(&self, chain: &str, address: Address) -> Result<Option<Payment>, StoreError> {
        self.record(
            "SELECT p.record FROM addresses a JOIN payments p ON p.id = a.payment_id
              WHERE a.chain = $1 AND a.address = $2",
            &[&chain, &format!("{address:#x}")],
        )
    }

    fn open_payments(&self, chain: &str) -> Result<Vec<Payment>, StoreError> {
        self.records(
            "SELECT record FROM payments WHERE chain = $1 AND open ORDER BY id",
            &[&chain],
        )
    }

    fn payments_to_advance(
        &self,
        chain: &str,
        now: UnixMillis,
    ) -> Result<Vec<Payment>, StoreError> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.records(
            "SELECT record FROM payments
              WHERE chain = $1 AND open AND (detected OR expires_at_ms <= $2)
              ORDER BY id",
            &[&chain, &now],
        )
    }

    fn take_address_index(&mut self) -> Result<u32, StoreError> {
        let next: i64 = self
            .block_on(self.txn.query_one(
                "INSERT INTO counters (name, value) VALUES ($1, 1)
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + 1
                 RETURNING value - 1",
                &[&ADDRESS_INDEX],
            ))?
            .get(0);
        u32::try_from(next)
            .ok()
            .filter(|index| *index < 0x8000_0000)
            .ok_or_else(|| corrupt("every non-hardened derivation index is used".to_owned()))
    }

    fn chain_cursor(&self, chain: &str) -> Result<Option<ChainCursor>, StoreError> {
        self.record(
            "SELECT record FROM chain_cursors WHERE chain = $1",
            &[&chain],
        )
    }

    fn put_chain_cursor(&mut self, chain: &str, cursor: &ChainCursor) -> Result<(), StoreError> {
        let record = serde_json::to_string(cursor)?;
        self.block_on(self.txn.execute(
            "INSERT INTO chain_cursors (chain, record) VALUES ($1, $2)
             ON CONFLICT (chain) DO UPDATE SET record = excluded.record",
            &[&chain, &record],
        ))?;
        Ok(())
    }

    fn stored_endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>, StoreError> {
        self.record("SELECT record FROM endpoint_configs WHERE id = $1", &[&id])
    }

    fn endpoint_disabled(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .block_on(self.txn.query_opt(
                "SELECT disabled_reason FROM endpoint_states WHERE endpoint_id = $1",
                &[&id],
            ))?
            .and_then(|row| row.get(0)))
    }

    fn set_endpoint_disabled(
        &mut self,
        id: &str,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        self.block_on(self.txn.execute(
            "INSERT INTO endpoint_states (endpoint_id, disabled_reason, disabled_at)
             VALUES ($1, $2::text, CASE WHEN $2::text IS NULL THEN NULL ELSE now() END)
             ON CONFLICT (endpoint_id) DO UPDATE
             SET disabled_reason = excluded.disabled_reason, disabled_at = excluded.disabled_at",
            &[&id, &reason],
        ))?;
        self.after.endpoint_changes.push((id.to_owned(), reason));
        Ok(())
    }

    fn api_answer(&self, key: &str) -> Result<Option<StoredAnswer>, StoreError> {
        self.record("SELECT record FROM api_answers WHERE key = $1", &[&key])
    }

    fn put_api_answer(&mut self, key: &str, answer: &StoredAnswer) -> Result<(), StoreError> {
        let record = serde_json::to_string(answer)?;
        self.block_on(self.txn.execute(
            "INSERT INTO api_answers (key, record) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET record = excluded.record, stored_at = now()",
            &[&key, &record],
        ))?;
        Ok(())
    }

    fn put_stored_endpoint(&mut self, record: &StoredEndpoint) -> Result<(), StoreError> {
        let json = serde_json::to_string(record)?;
        self.block_on(self.txn.execute(
            "INSERT INTO endpoint_configs (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            &[&record.config.id, &json],
        ))?;
        Ok(())
    }

    fn delete_stored_endpoint(&mut self, id: &str) -> Result<bool, StoreError> {
        self.block_on(async {
            let deleted = self
                .txn
                .execute("DELETE FROM endpoint_configs WHERE id = $1", &[&id])
                .await?;
            self.txn
                .execute("DELETE FROM endpoint_states WHERE endpoint_id = $1", &[&id])
                .await?;
            Ok::<bool, StoreError>(deleted > 0)
        })
    }
}
