//! The queue writer's backend on PostgreSQL: each batch of commands is one SQL transaction.
//!
//! The writer thread drains commands and calls [`PgBackend::apply_all`] exactly as it does for
//! redb, so the group commit is the same: units of work run through [`PgTxn`] (their new
//! deliveries held by this node under the batch's claim token), runs of attempt results are
//! settled with multi-row statements fenced by each delivery's token, and replays, retry-now,
//! endpoint enabling and retention steps are statements in the same transaction. Nothing is
//! handed to the lanes before the commit returns.
//!
//! The writer owns one connection of its own (not the pool's), driven on a current-thread
//! runtime on the writer thread, and opens it again when it was lost: the batch that found it
//! lost fails (its callers hear so, and attempts are read again once their lease runs out),
//! the next one reconnects.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::PgStore;
use super::claims::{Claims, release};
use super::queue::{ClaimToken, Settlement, TO_SEND, claimed_delivery, settle_in};
use super::txn::{Held, PgTxn};
use crate::delivery::Subscriptions;
use crate::ids::DeliveryId;
use crate::plugins::{ChainOutcome, Rendered};
use crate::queue::writer::{AfterCommit, Applied, Backend, ready};
use crate::queue::{Command, Decision, RenderResult, ReplayOutcome, RetryNowOutcome, Txn as _};
use crate::store::{DeliveryRecord, PendingDelivery, StoreError, corrupt};
use crate::time::{UnixMillis, now_millis};

/// A batch's transaction, the runtime that drives it, and when the batch started.
struct Batch<'a, 't> {
    runtime: &'a tokio::runtime::Runtime,
    txn: &'a tokio_postgres::Transaction<'t>,
    claims: &'a Claims,
    /// New, replayed deliveries are held under this token for this long.
    hold: (ClaimToken, Duration),
    now: UnixMillis,
}

/// The writer's PostgreSQL backend.
pub struct PgBackend {
    store: PgStore,
    runtime: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
    subscriptions: Arc<Subscriptions>,
    claims: Arc<Claims>,
    /// How long this node holds what it commits for its own lanes.
    lease: Duration,
}

impl PgBackend {
    /// A backend that connects on its first batch (so it can be built anywhere).
    pub fn new(
        store: PgStore,
        subscriptions: Arc<Subscriptions>,
        claims: Arc<Claims>,
        lease: Duration,
    ) -> Result<Self, StoreError> {
        let runtime = super::blocking_runtime()?;
        Ok(Self {
            store,
            runtime,
            client: None,
            subscriptions,
            claims,
            lease,
        })
    }

    /// The writer's connection, opened again if it was lost.
    fn connected(&mut self) -> Result<(), StoreError> {
        if self
            .client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            self.client = None;
            let client = self
                .runtime
                .block_on(self.store.dedicated("the queue writer"))?;
            self.client = Some(client);
        }
        Ok(())
    }
}

impl Backend for PgBackend {
    fn apply_all(
        &mut self,
        commands: &mut [Command],
        after: &mut AfterCommit,
    ) -> Result<Vec<Applied>, StoreError> {
        self.connected()?;
        let Self {
            runtime,
            client,
            subscriptions,
            claims,
            lease,
            ..
        } = self;
        let client = client.as_mut().expect("connected above");
        let txn = runtime.block_on(client.transaction())?;
        let batch = Batch {
            runtime,
            txn: &txn,
            claims,
            hold: (ClaimToken::new(), *lease),
            now: now_millis(),
        };
        let mut held = Held::default();
        let mut attempts = Vec::new();
        let mut applied = Vec::with_capacity(commands.len());
        for command in commands.iter_mut() {
            // Consecutive attempt results settle together; anything else sees them settled.
            if !matches!(command, Command::RecordAttempt(_)) {
                batch.settle(&mut attempts, after)?;
            }
            applied.push(match command {
                Command::Work(job) => {
                    job.apply(&mut batch.unit(subscriptions, after, &mut held))?;
                    Applied::Worked
                }
                Command::RecordAttempt(report) => {
                    match claims.take(report.delivery_id) {
                        Some(token) => attempts.push(Settlement {
                            report: report.clone(),
                            token,
                        }),
                        None => {
                            tracing::info!(delivery_id = %report.delivery_id,
                                "attempt result not recorded: this node no longer holds the delivery");
                            after
                                .settled
                                .push((report.endpoint_id.clone(), report.delivery_id, None));
                        }
                    }
                    Applied::Recorded
                }
                Command::Rendered(results) => {
                    for result in results.iter() {
                        batch.rendered(result, after)?;
                    }
                    Applied::Recorded
                }
                Command::Replay { id, payload, .. } => {
                    let outcome = batch.replay(*id, payload.as_ref(), after)?;
                    if matches!(outcome, ReplayOutcome::Scheduled) {
                        held.ids.push(*id);
                    }
                    Applied::Replayed(outcome)
                }
                Command::RetryNow { id, .. } => Applied::RetriedNow(batch.retry_now(*id, after)?),
                Command::Sweep {
                    retention, cursor, ..
                } => Applied::Swept(batch.block_on(super::retention::sweep(
                    batch.txn, retention, *cursor, batch.now,
                ))?),
                Command::SetEndpointEnabled {
                    endpoint_id,
                    enabled,
                    reason,
                    ..
                } => {
                    let reason = if *enabled { None } else { reason.clone() };
                    batch
                        .unit(subscriptions, after, &mut held)
                        .set_endpoint_disabled(endpoint_id, reason)?;
                    Applied::EndpointSet
                }
            });
        }
        batch.settle(&mut attempts, after)?;
        held.flush(runtime, &txn, batch.hold)?;
        let token = batch.hold.0;
        runtime.block_on(txn.commit())?;
        claims.hold(held.ids, token);
        Ok(applied)
    }

    fn not_taken(&mut self, ids: Vec<DeliveryId>) {
        let released = self.connected().and_then(|()| {
            let client = self.client.as_ref().expect("connected above");
            self.runtime.block_on(release(client, &self.claims, &ids))
        });
        if let Err(err) = released {
            tracing::warn!(error = %err, deliveries = ids.len(),
                "cannot give up deliveries no lane took; they are claimed again when their lease runs out");
        }
    }
}

fn uuid(id: DeliveryId) -> Uuid {
    super::uuid(id.as_u128())
}

impl<'a, 't> Batch<'a, 't> {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The transaction as a unit of work sees it.
    fn unit<'u>(
        &'u self,
        subscriptions: &'u Subscriptions,
        after: &'u mut AfterCommit,
        held: &'u mut Held,
    ) -> PgTxn<'u, 't> {
        PgTxn {
            runtime: self.runtime,
            txn: self.txn,
            subscriptions,
            now: self.now,
            hold: self.hold,
            after,
            held,
        }
    }

    /// Settles the attempt results gathered so far. Each lane hears of its delivery either
    /// way; a refused result (the lease passed to another node) schedules nothing here.
    fn settle(
        &self,
        attempts: &mut Vec<Settlement>,
        after: &mut AfterCommit,
    ) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let settled = self.block_on(settle_in(self.txn, attempts, self.now))?;
        let refused: HashSet<DeliveryId> = settled.refused.into_iter().collect();
        for Settlement { report, .. } in attempts.drain(..) {
            let accepted = !refused.contains(&report.delivery_id);
            if !accepted {
                tracing::info!(delivery_id = %report.delivery_id,
                    "attempt result refused: the delivery's lease passed to another node");
            }
            let next_at = match report.decision {
                Decision::Retry { at } if accepted => Some(at),
                Decision::DisableEndpoint { ref reason } if accepted => {
                    after
                        .endpoint_changes
                        .push((report.endpoint_id.clone(), Some(reason.clone())));
                    None
                }
                _ => None,
            };
            after
                .settled
                .push((report.endpoint_id, report.delivery_id, next_at));
        }
        Ok(())
    }

    /// Records what an endpoint's plugin chain made of a held delivery's event.
    fn rendered(&self, result: &RenderResult, after: &mut AfterCommit) -> Result<(), StoreError> {
        let RenderResult {
            delivery_id: id,
            endpoint_id,
            outcome,
        } = result;
        let settled = (endpoint_id.clone(), *id, None);
        match outcome {
            ChainOutcome::Deliver(payload) => match self.set_payload(*id, payload, true)? {
                Some(record) => after.deliver_now.push(ready(&record, payload.body.clone())),
                None => {
                    // Rendered already (a replay raced the render): the first result stands,
                    // and this node gives the row up for whoever sends it.
                    if let Some(token) = self.claims.take(*id) {
                        self.block_on(self.txn.execute(
                            "UPDATE queue SET claim = NULL, due_at = now()
                              WHERE delivery_id = $1 AND claim = $2",
                            &[&uuid(*id), &token.as_uuid()],
                        ))?;
                    }
                    after.settled.push(settled);
                }
            },
            ChainOutcome::Dropped { by } => {
                let reason = format!("dropped by the plugin filter {by}");
                self.finish_unrendered(*id, "dropped", &reason)?;
                after.settled.push(settled);
            }
            ChainOutcome::Failed { reason, .. } => {
                tracing::warn!(delivery_id = %id, %endpoint_id, %reason,
                    "plugin chain failed; delivery parked");
                self.finish_unrendered(*id, "dead_lettered", reason)?;
                after.settled.push(settled);
            }
        }
        Ok(())
    }

    /// Stores a rendered payload for a pending delivery (only one still waiting for its
    /// chain, when `unrendered_only`); the delivery's record, or `None` when it did not
    /// qualify.
    fn set_payload(
        &self,
        id: DeliveryId,
        payload: &Rendered,
        unrendered_only: bool,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let headers = serde_json::json!(payload.headers);
        let plugins = serde_json::json!(payload.plugins);
        let Some(row) = self.block_on(self.txn.query_opt(
            "UPDATE deliveries
                SET content_type = $2, headers = $3, plugins = $4, needs_render = false
              WHERE id = $1 AND (needs_render OR NOT $5)
          RETURNING event_id, endpoint_id, created_at_ms, attempt_count, cycle_start",
            &[
                &uuid(id),
                &payload.content_type,
                &headers,
                &plugins,
                &unrendered_only,
            ],
        ))?
        else {
            return Ok(None);
        };
        // The body is kept only when plugins shaped it; the default one is rendered again.
        self.block_on(async {
            self.txn
                .execute("DELETE FROM bodies WHERE delivery_id = $1", &[&uuid(id)])
                .await?;
            if !payload.plugins.is_empty() {
                self.txn
                    .execute(
                        "INSERT INTO bodies (delivery_id, body) VALUES ($1, $2)",
                        &[&uuid(id), &payload.body.as_ref()],
                    )
                    .await?;
            }
            Ok::<(), StoreError>(())
        })?;
        let event_id: Uuid = row.get(0);
        let mut record = DeliveryRecord::pending(
            id,
            crate::ids::EventId::from_u128(event_id.as_u128()),
            row.get(1),
            u64::try_from(row.get::<_, i64>(2)).unwrap_or_default(),
        );
        record.attempt_count = u32::try_from(row.get::<_, i32>(3)).unwrap_or_default();
        record.cycle_start = u32::try_from(row.get::<_, i32>(4)).unwrap_or_default();
        record.content_type = Some(payload.content_type.clone());
        record.headers = payload.headers.clone();
        record.plugins = payload.plugins.clone();
        Ok(Some(record))
    }

    /// Settles a held delivery whose chain dropped it or failed: its queue row leaves (only
    /// while this node's claim is current) and its record says why.
    fn finish_unrendered(
        &self,
        id: DeliveryId,
        status: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let Some(token) = self.claims.take(id) else {
            return Ok(());
        };
        self.block_on(async {
            let left = self
                .txn
                .execute(
                    "DELETE FROM queue WHERE delivery_id = $1 AND claim = $2",
                    &[&uuid(id), &token.as_uuid()],
                )
                .await?;
            if left == 1 {
                self.txn
                    .execute(
                        "UPDATE deliveries
                            SET status = $2, last_error = $3,
                                dead_lettered_at = CASE WHEN $2::text = 'dead_lettered' THEN now() END
                          WHERE id = $1 AND status = 'pending' AND needs_render",
                        &[&uuid(id), &status, &reason],
                    )
                    .await?;
            }
            Ok::<(), StoreError>(())
        })
    }

    /// Makes a finished delivery pending again, held by this node and due now.
    fn replay(
        &self,
        id: DeliveryId,
        payload: Option<&Rendered>,
        after: &mut AfterCommit,
    ) -> Result<ReplayOutcome, StoreError> {
        let Some(row) = self.block_on(self.txn.query_opt(
            "SELECT d.status, d.needs_render, d.endpoint_id, s.disabled_reason
               FROM deliveries d
               LEFT JOIN endpoint_states s ON s.endpoint_id = d.endpoint_id
              WHERE d.id = $1
                FOR UPDATE OF d",
            &[&uuid(id)],
        ))?
        else {
            return Ok(ReplayOutcome::NotFound);
        };
        if row.get::<_, &str>(0) == "pending" {
            return Ok(ReplayOutcome::StillPending);
        }
        if row.get::<_, Option<String>>(3).is_some() {
            return Ok(ReplayOutcome::EndpointDisabled);
        }
        let endpoint_id: String = row.get(2);
        match payload {
            Some(payload) => {
                self.set_payload(id, payload, false)?;
            }
            None if row.get::<_, bool>(1) => return Ok(ReplayOutcome::NeedsRender),
            None => {}
        }
        let (token, lease) = self.hold;
        let to_send = self.block_on(async {
            self.txn
                .execute(
                    "UPDATE deliveries
                        SET status = 'pending', cycle_start = attempt_count,
                            dead_lettered_at = NULL
                      WHERE id = $1",
                    &[&uuid(id)],
                )
                .await?;
            self.txn
                .execute(
                    "INSERT INTO queue (delivery_id, endpoint_id, due_at, claim)
                     VALUES ($1, $2, now() + $3::float8 * interval '1 millisecond', $4)
                     ON CONFLICT (delivery_id) DO UPDATE
                     SET due_at = excluded.due_at, claim = excluded.claim",
                    &[
                        &uuid(id),
                        &endpoint_id,
                        &(lease.as_secs_f64() * 1_000.0),
                        &token.as_uuid(),
                    ],
                )
                .await?;
            Ok::<_, StoreError>(self.txn.query_one(TO_SEND, &[&uuid(id)]).await?)
        })?;
        match claimed_delivery(&to_send)? {
            PendingDelivery::Ready { record, body } => after.deliver_now.push(ready(&record, body)),
            PendingDelivery::Unrendered { .. } => {
                return Err(corrupt(format!(
                    "replayed delivery {id} has no body although it was rendered"
                )));
            }
        }
        Ok(ReplayOutcome::Scheduled)
    }

    /// Moves a pending delivery's next attempt to now, unless a node holds it (in flight).
    fn retry_now(
        &self,
        id: DeliveryId,
        after: &mut AfterCommit,
    ) -> Result<RetryNowOutcome, StoreError> {
        let status = self.block_on(
            self.txn
                .query_opt("SELECT status FROM deliveries WHERE id = $1", &[&uuid(id)]),
        )?;
        match status {
            None => return Ok(RetryNowOutcome::NotFound),
            Some(row) if row.get::<_, &str>(0) != "pending" => {
                return Ok(RetryNowOutcome::NotPending);
            }
            Some(_) => {}
        }
        let moved = self.block_on(self.txn.query_opt(
            "UPDATE queue SET due_at = now()
              WHERE delivery_id = $1 AND claim IS NULL AND due_at > now()
          RETURNING endpoint_id",
            &[&uuid(id)],
        ))?;
        Ok(match moved {
            Some(row) => {
                after.wakes.push((row.get(0), self.now));
                RetryNowOutcome::Scheduled
            }
            None => RetryNowOutcome::AlreadyDue,
        })
    }
}
