//! The single writer: group commit of every state change.
//!
//! A dedicated OS thread owns all write transactions (redb allows one at a time, and its API is
//! blocking, so a thread is the honest shape). It blocks for the first command, drains whatever
//! else is already queued (at most [`MAX_BATCH`]), applies all of them in one transaction and
//! commits. Answers and dispatch happen strictly after the commit returns; if the commit fails,
//! every caller in the batch gets the error and nothing is dispatched.
//!
//! The loop does not know the store: a `Backend` applies a batch. The redb file is the one
//! implemented here (one write transaction, one fsync); the PostgreSQL backend is to apply a
//! batch as one SQL transaction through the same trait (issue 6, not wired yet).

use std::sync::Arc;

use redb::ReadableTable as _;
use tokio::sync::mpsc;

use super::redb_txn::{RedbTxn, dead_letter, set_payload, stored_body};
use super::{
    AttemptReport, Command, Decision, QueueError, QueueHandle, ReadyDelivery, RenderJob,
    RenderResult, ReplayOutcome, RetryNowOutcome, Sink,
};
use crate::delivery::Subscriptions;
use crate::ids::DeliveryId;
use crate::plugins::{ChainOutcome, Rendered};
use crate::store::{DeliveryStatus, EndpointState, Store, StoreError, Tables};
use crate::time::{UnixMillis, now_millis};

pub(crate) use super::redb_txn::ready;

/// Most commands applied in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Commands that may wait in the channel before callers feel back-pressure.
pub const CHANNEL_CAPACITY: usize = 65_536;

/// Work that becomes visible only once the transaction is durable.
#[derive(Default)]
pub(crate) struct AfterCommit {
    pub deliver_now: Vec<ReadyDelivery>,
    pub render: Vec<RenderJob>,
    /// (endpoint, delivery, next due time): an attempt or a render whose outcome is committed.
    pub settled: Vec<(String, DeliveryId, Option<UnixMillis>)>,
    /// (endpoint, due at): a delivery in the store became due earlier than its lane knows.
    pub wakes: Vec<(String, UnixMillis)>,
    pub endpoint_changes: Vec<(String, Option<String>)>,
}

/// What one command produced inside the transaction, to act on after the commit.
pub(crate) enum Applied {
    /// A unit of work holds its own output until it is answered.
    Worked,
    Recorded,
    Replayed(ReplayOutcome),
    EndpointSet,
    Swept(super::retention::SweepStep),
    RetriedNow(RetryNowOutcome),
}

/// Where a writer's batches are committed: the redb file, or a PostgreSQL database.
pub(crate) trait Backend: Send + 'static {
    /// Applies every command of `batch` in one transaction and commits it; on an error nothing
    /// of the batch is applied.
    fn apply_all(
        &mut self,
        batch: &mut [Command],
        after: &mut AfterCommit,
    ) -> Result<Vec<Applied>, StoreError>;

    /// Committed deliveries the lanes did not take (full, or behind): the backend makes them
    /// available to whoever reads or claims due work next.
    fn not_taken(&mut self, _ids: Vec<DeliveryId>) {}
}

/// Starts the redb writer thread and returns the handle that feeds it. Domain events fan out
/// to `subscriptions`; committed work goes to `sink`.
pub fn spawn(
    store: Store,
    subscriptions: Arc<Subscriptions>,
    sink: Arc<dyn Sink>,
) -> std::io::Result<QueueHandle> {
    spawn_backend(
        RedbBackend {
            store,
            subscriptions,
        },
        sink,
    )
}

/// Starts a writer thread committing through `backend`.
pub(crate) fn spawn_backend<B: Backend>(
    backend: B,
    sink: Arc<dyn Sink>,
) -> std::io::Result<QueueHandle> {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    std::thread::Builder::new()
        .name("hookgate-writer".to_owned())
        .spawn(move || Writer { backend, sink }.run(rx))?;
    Ok(QueueHandle { tx })
}

struct Writer<B> {
    backend: B,
    sink: Arc<dyn Sink>,
}

impl<B: Backend> Writer<B> {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
        tracing::info!("queue writer stopped: every sender is gone");
    }

    fn commit_batch(&mut self, batch: &mut Vec<Command>) {
        let mut after = AfterCommit::default();
        let started = std::time::Instant::now();
        let applied = self.backend.apply_all(batch, &mut after);
        crate::metrics::METRICS
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        crate::metrics::METRICS
            .commit_batch
            .observe(batch.len() as f64);
        if let Err(err) = &applied {
            tracing::error!(error = %err, commands = batch.len(), "commit failed; the batch is not applied");
        }
        if applied.is_ok() {
            // Dispatch before answering: a caller that hears "committed" (e.g. an operator
            // re-enabling an endpoint) then sees the change already in effect.
            for (endpoint_id, reason) in after.endpoint_changes {
                self.sink.endpoint_changed(&endpoint_id, reason);
            }
            // Settle first: a delivery replayed in the same batch as its last attempt must be
            // free in its lane before it is offered again.
            for (endpoint_id, id, next_at) in after.settled {
                self.sink.settled(&endpoint_id, id, next_at);
            }
            let mut not_taken = Vec::new();
            for delivery in after.deliver_now {
                let id = delivery.id;
                if !self.sink.deliver_now(delivery) {
                    not_taken.push(id);
                }
            }
            for (endpoint_id, at) in after.wakes {
                self.sink.wake(&endpoint_id, at);
            }
            if !after.render.is_empty() {
                not_taken.extend(self.sink.render(after.render));
            }
            if !not_taken.is_empty() {
                self.backend.not_taken(not_taken);
            }
        } else {
            // Nothing was recorded: the lanes read these deliveries again shortly.
            let again = Some(now_millis() + 1_000);
            for command in batch.iter() {
                match command {
                    Command::RecordAttempt(report) => {
                        self.sink
                            .settled(&report.endpoint_id, report.delivery_id, again)
                    }
                    Command::Rendered(results) => {
                        for result in results {
                            self.sink
                                .settled(&result.endpoint_id, result.delivery_id, again);
                        }
                    }
                    _ => {}
                }
            }
        }
        let applied = applied.map_err(|err| QueueError::Store(Arc::new(err)));
        for (index, command) in batch.drain(..).enumerate() {
            let result = applied
                .as_ref()
                .map(|list| &list[index])
                .map_err(Clone::clone);
            answer(command, result);
        }
    }
}

/// The redb file as a writer's backend: one write transaction per batch, one fsync.
struct RedbBackend {
    store: Store,
    subscriptions: Arc<Subscriptions>,
}

impl Backend for RedbBackend {
    fn apply_all(
        &mut self,
        batch: &mut [Command],
        after: &mut AfterCommit,
    ) -> Result<Vec<Applied>, StoreError> {
        let txn = self.store.database().begin_write()?;
        let mut applied = Vec::with_capacity(batch.len());
        {
            let mut tables = Tables::open(&txn)?;
            let now = now_millis();
            for command in batch.iter_mut() {
                applied.push(match command {
                    Command::Work(job) => {
                        let mut txn = RedbTxn {
                            tables: &mut tables,
                            after: &mut *after,
                            subscriptions: &self.subscriptions,
                            now,
                        };
                        job.apply(&mut txn)?;
                        Applied::Worked
                    }
                    Command::RecordAttempt(report) => {
                        record_attempt(&mut tables, report, now, after)?;
                        Applied::Recorded
                    }
                    Command::Rendered(results) => {
                        for result in results.iter() {
                            rendered(&mut tables, result, now, after)?;
                        }
                        Applied::Recorded
                    }
                    Command::Replay { id, payload, .. } => {
                        Applied::Replayed(replay(&mut tables, *id, payload.as_ref(), now, after)?)
                    }
                    Command::RetryNow { id, .. } => {
                        Applied::RetriedNow(retry_now(&mut tables, *id, now, after)?)
                    }
                    Command::Sweep {
                        retention, cursor, ..
                    } => Applied::Swept(super::retention::sweep(
                        &mut tables,
                        retention,
                        *cursor,
                        now,
                    )?),
                    Command::SetEndpointEnabled {
                        endpoint_id,
                        enabled,
                        reason,
                        ..
                    } => {
                        let state = if *enabled {
                            EndpointState::default()
                        } else {
                            EndpointState {
                                disabled_reason: reason.clone(),
                                disabled_at: Some(now),
                            }
                        };
                        tables.put_endpoint_state(endpoint_id, &state)?;
                        after
                            .endpoint_changes
                            .push((endpoint_id.clone(), state.disabled_reason));
                        Applied::EndpointSet
                    }
                });
            }
        }
        txn.commit()?;
        Ok(applied)
    }
}

/// Sends each caller its part of the batch's result.
fn answer(command: Command, result: Result<&Applied, QueueError>) {
    // A caller that went away (client disconnected) no longer needs the answer; the commit
    // stands and the work is dispatched regardless.
    match command {
        Command::Work(job) => job.answer(result.map(|_| ())),
        Command::Replay { reply, .. } => {
            let _ = reply.send(result.map(|applied| match applied {
                Applied::Replayed(outcome) => outcome.clone(),
                _ => unreachable!("a replay command yields a replay result"),
            }));
        }
        Command::SetEndpointEnabled { reply, .. } => {
            let _ = reply.send(result.map(|_| ()));
        }
        Command::RetryNow { reply, .. } => {
            let _ = reply.send(result.map(|applied| match applied {
                Applied::RetriedNow(outcome) => outcome.clone(),
                _ => unreachable!("a retry-now command yields a retry-now result"),
            }));
        }
        Command::Sweep { reply, .. } => {
            let _ = reply.send(result.map(|applied| match applied {
                Applied::Swept(step) => step.clone(),
                _ => unreachable!("a sweep command yields a sweep result"),
            }));
        }
        Command::RecordAttempt(report) => {
            if let Err(err) = result {
                tracing::error!(delivery_id = %report.delivery_id, error = %err,
                    "attempt result not recorded; the delivery is sent again shortly");
            }
        }
        Command::Rendered(results) => {
            if let Err(err) = result {
                tracing::error!(deliveries = results.len(), error = %err,
                    "rendered bodies not recorded; the chains run again shortly");
            }
        }
    }
}

/// Records what an endpoint's plugin chain made of a committed event.
fn rendered(
    tables: &mut Tables<'_>,
    result: &RenderResult,
    now: UnixMillis,
    after: &mut AfterCommit,
) -> Result<(), StoreError> {
    let RenderResult {
        delivery_id: id,
        endpoint_id,
        outcome,
    } = result;
    let id = *id;
    let settled = (endpoint_id.clone(), id, None);
    let Some(mut record) = tables.delivery(id)? else {
        after.settled.push(settled);
        return Ok(());
    };
    if record.status != DeliveryStatus::Pending || !record.needs_render {
        // Rendered twice (a replay raced the render): the first result stands.
        after.settled.push(settled);
        return Ok(());
    }
    match outcome {
        ChainOutcome::Deliver(payload) => {
            set_payload(tables, &mut record, payload)?;
            after.deliver_now.push(ready(&record, payload.body.clone()));
        }
        ChainOutcome::Dropped { by } => {
            tables.unschedule(&mut record)?;
            record.status = DeliveryStatus::Dropped;
            record.last_error = Some(format!("dropped by the plugin filter {by}"));
        }
        ChainOutcome::Failed { reason, .. } => {
            tables.unschedule(&mut record)?;
            tracing::warn!(delivery_id = %id, endpoint_id = %record.endpoint_id, %reason,
                "plugin chain failed; delivery parked");
            dead_letter(tables, &mut record, reason, now)?;
        }
    }
    if !matches!(outcome, ChainOutcome::Deliver(_)) {
        after.settled.push(settled);
    }
    tables.put_delivery(&record)
}

fn record_attempt(
    tables: &mut Tables<'_>,
    report: &AttemptReport,
    now: UnixMillis,
    after: &mut AfterCommit,
) -> Result<(), StoreError> {
    // The lane may take the delivery again once it is due (never while this attempt is
    // uncommitted, or it could read a stale due entry and send twice).
    let next_at = match &report.decision {
        Decision::Retry { at } => Some(*at),
        _ => None,
    };
    after
        .settled
        .push((report.endpoint_id.clone(), report.delivery_id, next_at));
    let Some(mut record) = tables.delivery(report.delivery_id)? else {
        tracing::warn!(delivery_id = %report.delivery_id, "attempt for an unknown delivery ignored");
        return Ok(());
    };
    if record.status != DeliveryStatus::Pending {
        // A duplicate send after a restart or replay race: the delivery already finished.
        return Ok(());
    }
    if let Some(attempt) = &report.attempt {
        let raw = serde_json::to_vec(attempt)?;
        tables.attempts.insert(
            (report.delivery_id.as_u128(), attempt.number),
            raw.as_slice(),
        )?;
        record.attempt_count = record.attempt_count.max(attempt.number);
    }
    tables.unschedule(&mut record)?;
    match &report.decision {
        Decision::Delivered => {
            record.status = DeliveryStatus::Delivered;
            record.last_error = None;
        }
        Decision::Retry { at } => {
            tables.schedule(&mut record, *at)?;
            record.last_error = report
                .attempt
                .as_ref()
                .and_then(|attempt| attempt.error.clone());
        }
        Decision::DeadLetter { reason } => {
            dead_letter(tables, &mut record, reason, now)?;
        }
        Decision::DisableEndpoint { reason } => {
            dead_letter(tables, &mut record, reason, now)?;
            let state = EndpointState {
                disabled_reason: Some(reason.clone()),
                disabled_at: Some(now),
            };
            tables.put_endpoint_state(&report.endpoint_id, &state)?;
            after
                .endpoint_changes
                .push((report.endpoint_id.clone(), state.disabled_reason));
        }
    }
    tables.put_delivery(&record)
}

/// Moves a pending delivery's next attempt to now and wakes its lane.
fn retry_now(
    tables: &mut Tables<'_>,
    id: DeliveryId,
    now: UnixMillis,
    after: &mut AfterCommit,
) -> Result<RetryNowOutcome, StoreError> {
    let Some(mut record) = tables.delivery(id)? else {
        return Ok(RetryNowOutcome::NotFound);
    };
    if record.status != DeliveryStatus::Pending {
        return Ok(RetryNowOutcome::NotPending);
    }
    if record.next_attempt_at.is_none_or(|at| at <= now) {
        return Ok(RetryNowOutcome::AlreadyDue);
    }
    tables.schedule(&mut record, now)?;
    tables.put_delivery(&record)?;
    after.wakes.push((record.endpoint_id.clone(), now));
    Ok(RetryNowOutcome::Scheduled)
}

fn replay(
    tables: &mut Tables<'_>,
    id: DeliveryId,
    payload: Option<&Rendered>,
    now: UnixMillis,
    after: &mut AfterCommit,
) -> Result<ReplayOutcome, StoreError> {
    let Some(mut record) = tables.delivery(id)? else {
        return Ok(ReplayOutcome::NotFound);
    };
    if record.status == DeliveryStatus::Pending {
        return Ok(ReplayOutcome::StillPending);
    }
    let disabled = match tables.endpoints.get(record.endpoint_id.as_str())? {
        Some(raw) => serde_json::from_slice::<EndpointState>(raw.value())?
            .disabled_reason
            .is_some(),
        None => false,
    };
    if disabled {
        return Ok(ReplayOutcome::EndpointDisabled);
    }
    match payload {
        Some(payload) => {
            // The new payload replaces whatever body was stored before.
            tables.bodies.remove(id.as_u128())?;
            set_payload(tables, &mut record, payload)?
        }
        None if record.needs_render => return Ok(ReplayOutcome::NeedsRender),
        None => {}
    }
    if let Some(at) = record.dead_lettered_at.take() {
        tables.dead_letters.remove((at, id.as_u128()))?;
    }
    record.status = DeliveryStatus::Pending;
    record.cycle_start = record.attempt_count;
    tables.schedule(&mut record, now)?;
    let body = stored_body(tables, &record)?;
    after.deliver_now.push(ready(&record, body));
    tables.put_delivery(&record)?;
    Ok(ReplayOutcome::Scheduled)
}
