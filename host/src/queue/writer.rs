//! The single writer: group commit of every state change.
//!
//! A dedicated OS thread owns all write transactions (redb allows one at a time, and its API is
//! blocking, so a thread is the honest shape). It blocks for the first command, drains whatever
//! else is already queued (at most [`MAX_BATCH`]), applies all of them in one transaction and
//! commits. Answers and dispatch happen strictly after the commit returns; if the commit fails,
//! every caller in the batch gets the error and nothing is dispatched.

use std::sync::Arc;

use bytes::Bytes;
use redb::ReadableTable as _;
use tokio::sync::mpsc;

use super::{
    AttemptReport, Command, Decision, DeliveryContent, EventSummary, NewEvent, PublishOutcome,
    QueueError, QueueHandle, ReadyDelivery, ReplayOutcome, Sink,
};
use crate::ids::{DeliveryId, EventId};
use crate::plugins::Rendered;
use crate::store::{
    DeliveryRecord, DeliveryRef, DeliveryStatus, EndpointState, EventRecord, Store, StoreError,
    Tables, body_of, corrupt,
};
use crate::time::{UnixMillis, now_millis};

/// Most commands applied in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Commands that may wait in the channel before callers feel back-pressure.
pub const CHANNEL_CAPACITY: usize = 65_536;

/// Starts the writer thread and returns the handle that feeds it.
pub fn spawn(store: Store, sink: Arc<dyn Sink>) -> std::io::Result<QueueHandle> {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    std::thread::Builder::new()
        .name("hookgate-writer".to_owned())
        .spawn(move || Writer { store, sink }.run(rx))?;
    Ok(QueueHandle { tx })
}

struct Writer {
    store: Store,
    sink: Arc<dyn Sink>,
}

/// What one command produced inside the transaction, to act on after the commit.
enum Applied {
    Published(Vec<PublishOutcome>),
    Recorded,
    Replayed(ReplayOutcome),
    EndpointSet,
}

/// Work that becomes visible only once the transaction is durable.
#[derive(Default)]
struct AfterCommit {
    deliver_now: Vec<ReadyDelivery>,
    retries: Vec<(DeliveryId, UnixMillis)>,
    endpoint_changes: Vec<(String, Option<String>)>,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Command>) {
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

    fn commit_batch(&self, batch: &mut Vec<Command>) {
        let mut after = AfterCommit::default();
        let applied = self.apply_all(batch, &mut after);
        if let Err(err) = &applied {
            tracing::error!(error = %err, commands = batch.len(), "commit failed; the batch is not applied");
        }
        if applied.is_ok() {
            // Dispatch before answering: a caller that hears "committed" (e.g. an operator
            // re-enabling an endpoint) then sees the change already in effect.
            for (endpoint_id, reason) in after.endpoint_changes {
                self.sink.endpoint_changed(&endpoint_id, reason);
            }
            for delivery in after.deliver_now {
                self.sink.deliver_now(delivery);
            }
            for (id, at) in after.retries {
                self.sink.retry_at(id, at);
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

    fn apply_all(
        &self,
        batch: &[Command],
        after: &mut AfterCommit,
    ) -> Result<Vec<Applied>, StoreError> {
        let txn = self.store.database().begin_write()?;
        let mut applied = Vec::with_capacity(batch.len());
        {
            let mut tables = Tables::open(&txn)?;
            let now = now_millis();
            for command in batch {
                applied.push(match command {
                    Command::Publish { events, .. } => {
                        let mut outcomes = Vec::with_capacity(events.len());
                        for event in events {
                            outcomes.push(publish(&mut tables, event, after)?);
                        }
                        Applied::Published(outcomes)
                    }
                    Command::RecordAttempt(report) => {
                        record_attempt(&mut tables, report, now, after)?;
                        Applied::Recorded
                    }
                    Command::Replay { id, payload, .. } => {
                        Applied::Replayed(replay(&mut tables, *id, payload.as_ref(), now, after)?)
                    }
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
        Command::Publish { reply, .. } => {
            let _ = reply.send(result.map(|applied| match applied {
                Applied::Published(outcomes) => outcomes.clone(),
                _ => unreachable!("a publish command yields a publish result"),
            }));
        }
        Command::Replay { reply, .. } => {
            let _ = reply.send(result.map(|applied| match applied {
                Applied::Replayed(outcome) => outcome.clone(),
                _ => unreachable!("a replay command yields a replay result"),
            }));
        }
        Command::SetEndpointEnabled { reply, .. } => {
            let _ = reply.send(result.map(|_| ()));
        }
        Command::RecordAttempt(report) => {
            if let Err(err) = result {
                tracing::error!(delivery_id = %report.delivery_id, error = %err,
                    "attempt result not recorded; the delivery is retried after a restart");
            }
        }
    }
}

fn publish(
    tables: &mut Tables<'_>,
    event: &NewEvent,
    after: &mut AfterCommit,
) -> Result<PublishOutcome, StoreError> {
    if let Some(key) = &event.idempotency_key {
        if let Some(existing) = tables.idempotency.get(key.as_str())? {
            let existing = EventId::from_u128(existing.value());
            let record = tables
                .event(existing)?
                .ok_or_else(|| corrupt(format!("idempotency key points at missing {existing}")))?;
            return Ok(if record.fingerprint == event.fingerprint {
                PublishOutcome::Replayed(summary(&record))
            } else {
                PublishOutcome::Conflict { key: key.clone() }
            });
        }
        tables
            .idempotency
            .insert(key.as_str(), event.id.as_u128())?;
    }
    let record = EventRecord {
        id: event.id,
        event_type: event.event_type.clone(),
        created_at: event.created_at,
        data: event.data.clone(),
        idempotency_key: event.idempotency_key.clone(),
        fingerprint: event.fingerprint.clone(),
        deliveries: event
            .deliveries
            .iter()
            .map(|delivery| DeliveryRef {
                id: delivery.id,
                endpoint_id: delivery.endpoint_id.clone(),
                parked: match &delivery.content {
                    DeliveryContent::Ready(_) => None,
                    DeliveryContent::Parked { reason } => Some(reason.clone()),
                },
            })
            .collect(),
        dropped: event.dropped.clone(),
    };
    let raw = serde_json::to_vec(&record)?;
    tables.events.insert(event.id.as_u128(), raw.as_slice())?;
    for delivery in &event.deliveries {
        let mut record = DeliveryRecord {
            id: delivery.id,
            event_id: event.id,
            endpoint_id: delivery.endpoint_id.clone(),
            status: DeliveryStatus::Pending,
            created_at: event.created_at,
            attempt_count: 0,
            cycle_start: 0,
            next_attempt_at: None,
            dead_lettered_at: None,
            last_error: None,
            content_type: None,
            headers: Vec::new(),
            plugins: Vec::new(),
            needs_render: false,
        };
        match &delivery.content {
            DeliveryContent::Ready(payload) => {
                set_payload(tables, &mut record, payload)?;
                record.next_attempt_at = Some(event.created_at);
                tables
                    .due
                    .insert((event.created_at, delivery.id.as_u128()), ())?;
                after.deliver_now.push(ready(&record, payload.body.clone()));
            }
            DeliveryContent::Parked { reason } => {
                record.needs_render = true;
                dead_letter(tables, &mut record, reason, event.created_at)?;
            }
        }
        tables.put_delivery(&record)?;
    }
    Ok(PublishOutcome::Created(summary(&record)))
}

/// Records how to send a payload, and stores its body when plugins shaped it (the default body
/// is rendered again from the event when needed; see [`crate::store::body_of`]).
fn set_payload(
    tables: &mut Tables<'_>,
    record: &mut DeliveryRecord,
    payload: &Rendered,
) -> Result<(), StoreError> {
    if !payload.plugins.is_empty() {
        tables
            .bodies
            .insert(record.id.as_u128(), payload.body.as_ref())?;
    }
    record.content_type = Some(payload.content_type.clone());
    record.headers = payload.headers.clone();
    record.plugins = payload.plugins.clone();
    record.needs_render = false;
    Ok(())
}

/// The in-memory job for a pending delivery's next attempt.
pub(crate) fn ready(record: &DeliveryRecord, body: Bytes) -> ReadyDelivery {
    ReadyDelivery {
        id: record.id,
        event_id: record.event_id,
        endpoint_id: record.endpoint_id.clone(),
        attempt_number: record.attempt_count + 1,
        attempt_in_cycle: record.attempt_count - record.cycle_start + 1,
        body,
        content_type: record
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".to_owned()),
        headers: record.headers.clone(),
    }
}

fn summary(record: &EventRecord) -> EventSummary {
    EventSummary {
        id: record.id,
        event_type: record.event_type.clone(),
        created_at: record.created_at,
        deliveries: record.deliveries.clone(),
        dropped: record.dropped.clone(),
    }
}

fn record_attempt(
    tables: &mut Tables<'_>,
    report: &AttemptReport,
    now: UnixMillis,
    after: &mut AfterCommit,
) -> Result<(), StoreError> {
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
    if let Some(due) = record.next_attempt_at.take() {
        tables.due.remove((due, record.id.as_u128()))?;
    }
    match &report.decision {
        Decision::Delivered => {
            record.status = DeliveryStatus::Delivered;
            record.last_error = None;
        }
        Decision::Retry { at } => {
            record.next_attempt_at = Some(*at);
            record.last_error = report
                .attempt
                .as_ref()
                .and_then(|attempt| attempt.error.clone());
            tables.due.insert((*at, record.id.as_u128()), ())?;
            after.retries.push((record.id, *at));
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

fn dead_letter(
    tables: &mut Tables<'_>,
    record: &mut DeliveryRecord,
    reason: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    record.status = DeliveryStatus::DeadLettered;
    record.last_error = Some(reason.to_owned());
    record.dead_lettered_at = Some(now);
    tables.dead_letters.insert((now, record.id.as_u128()), ())?;
    Ok(())
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
    record.next_attempt_at = Some(now);
    tables.due.insert((now, id.as_u128()), ())?;
    let body = body_of(&record, &tables.bodies, &tables.events)?;
    after.deliver_now.push(ready(&record, body));
    tables.put_delivery(&record)?;
    Ok(ReplayOutcome::Scheduled)
}
