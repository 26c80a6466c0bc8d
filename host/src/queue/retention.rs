//! Retention: what is settled and old enough is removed, so the store does not grow forever.
//!
//! A background task ([`run`]) asks the writer for one small sweep step at a time
//! ([`QueueHandle::sweep`]); each step is a handful of deletions inside the writer's next group
//! commit, so the sweep never holds a write transaction of its own and the hot path waits at
//! most one step's work. Event ids are time-ordered, so "older than" is a key range:
//!
//! * an event older than `retention` whose deliveries are all settled (delivered, dropped, or
//!   dead-lettered longer ago than `dead_letter_retention`) is removed with its deliveries,
//!   stored bodies, attempts, dead-letter entries and idempotency key;
//! * idempotency keys of events older than `idempotency_window` are removed (the events stay
//!   until their own retention), tracked by a cursor in the store so each event is read once;
//!   so are the first answers kept for creates sent with an `Idempotency-Key`.
//!
//! redb reuses the freed pages for new writes, so the file stops growing once the sweep keeps
//! up; `hookgate store compact` returns free space to the file system while the gateway is
//! stopped.

use std::time::Duration;

use redb::ReadableTable as _;

use super::QueueHandle;
use crate::config::StoreConfig;
use crate::store::{DeliveryRecord, DeliveryStatus, EventRecord, StoreError, Tables};
use crate::time::UnixMillis;

/// Most events one step reads.
pub(crate) const STEP_EVENTS: usize = 128;

/// The pause between steps while a sweep pass has more to do: the hot path gets the writer.
const STEP_PAUSE: Duration = Duration::from_millis(20);

/// The store's [`crate::store::META`] entry holding the idempotency sweep's cursor.
const IDEMPOTENCY_CURSOR: &str = "idempotency_swept_until";

/// How long things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub settled: Duration,
    pub dead_letters: Duration,
    pub idempotency: Duration,
    pub interval: Duration,
}

impl Retention {
    pub fn from_config(config: &StoreConfig) -> Self {
        Self {
            settled: config.retention,
            dead_letters: config.dead_letter_retention,
            idempotency: config.idempotency_window,
            interval: config.sweep_interval,
        }
    }
}

/// What one sweep step did.
#[derive(Debug, Clone, Default)]
pub struct SweepStep {
    pub events_removed: usize,
    pub deliveries_removed: usize,
    pub keys_removed: usize,
    /// Where the next step of this pass starts reading events.
    pub next: u128,
    /// The pass has more to do (a step read as many events as it may).
    pub more: bool,
}

/// The smallest event id created at `millis` (UUIDv7 puts the Unix milliseconds on top).
pub(crate) fn first_id_at(millis: UnixMillis) -> u128 {
    u128::from(millis) << 80
}

pub(crate) fn millis_ago(now: UnixMillis, age: Duration) -> UnixMillis {
    now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
}

/// One step of the sweep, inside the writer's transaction: events from `cursor` on.
pub(super) fn sweep(
    tables: &mut Tables<'_>,
    retention: &Retention,
    cursor: u128,
    now: UnixMillis,
) -> Result<SweepStep, StoreError> {
    let mut step = SweepStep::default();
    let settled_before = first_id_at(millis_ago(now, retention.settled));
    let dead_before = millis_ago(now, retention.dead_letters);
    let mut scanned = Vec::with_capacity(STEP_EVENTS);
    let mut read = 0;
    for entry in tables
        .events
        .range(cursor..settled_before)?
        .take(STEP_EVENTS)
    {
        let (key, raw) = entry?;
        step.next = key.value() + 1;
        read += 1;
        // A record the sweep cannot read is kept (and reported), never a reason to fail the
        // commit the step rides in.
        if let Some(event) = decoded::<EventRecord>(raw.value(), "event", key.value()) {
            scanned.push((key.value(), event));
        }
    }
    step.more = read == STEP_EVENTS;
    if read == 0 {
        step.next = cursor;
    }
    for (id, event) in scanned {
        remove_if_settled(tables, id, &event, dead_before, &mut step)?;
    }
    let keys_before = millis_ago(now, retention.idempotency);
    forget_idempotency_keys(tables, keys_before, &mut step)?;
    let answers = tables.forget_api_answers(keys_before, STEP_EVENTS)?;
    step.keys_removed += answers;
    step.more |= answers == STEP_EVENTS;
    Ok(step)
}

fn remove_if_settled(
    tables: &mut Tables<'_>,
    id: u128,
    event: &EventRecord,
    dead_before: UnixMillis,
    step: &mut SweepStep,
) -> Result<(), StoreError> {
    let mut deliveries = Vec::with_capacity(event.deliveries.len());
    for delivery in &event.deliveries {
        let key = delivery.id.as_u128();
        let Some(raw) = tables.deliveries.get(key)? else {
            continue;
        };
        let Some(record) = decoded::<DeliveryRecord>(raw.value(), "delivery", key) else {
            return Ok(());
        };
        let settled = match record.status {
            DeliveryStatus::Pending => false,
            DeliveryStatus::DeadLettered => record.dead_lettered_at.unwrap_or(0) < dead_before,
            DeliveryStatus::Delivered | DeliveryStatus::Dropped => true,
        };
        if !settled {
            return Ok(());
        }
        deliveries.push(record);
    }
    for record in deliveries {
        let key = record.id.as_u128();
        tables.deliveries.remove(key)?;
        tables.bodies.remove(key)?;
        if let Some(at) = record.dead_lettered_at {
            tables.dead_letters.remove((at, key))?;
        }
        let attempts: Vec<u32> = tables
            .attempts
            .range((key, 0)..=(key, u32::MAX))?
            .map(|entry| entry.map(|(attempt, _)| attempt.value().1))
            .collect::<Result<_, _>>()?;
        for number in attempts {
            tables.attempts.remove((key, number))?;
        }
        step.deliveries_removed += 1;
    }
    if let Some(key) = &event.idempotency_key {
        remove_key(tables, key, id, step)?;
    }
    tables.events.remove(id)?;
    step.events_removed += 1;
    Ok(())
}

/// Removes the idempotency keys of events created before `before`, from the stored cursor on.
fn forget_idempotency_keys(
    tables: &mut Tables<'_>,
    before: UnixMillis,
    step: &mut SweepStep,
) -> Result<(), StoreError> {
    let from = match tables.meta.get(IDEMPOTENCY_CURSOR)? {
        Some(raw) => raw.value().try_into().map_or(0, u128::from_be_bytes),
        None => 0,
    };
    let mut keys = Vec::new();
    let mut last = None;
    let mut read = 0;
    for entry in tables
        .events
        .range(from..first_id_at(before))?
        .take(STEP_EVENTS)
    {
        let (id, raw) = entry?;
        let event = decoded::<EventRecord>(raw.value(), "event", id.value());
        if let Some(key) = event.and_then(|event| event.idempotency_key) {
            keys.push((key, id.value()));
        }
        last = Some(id.value());
        read += 1;
    }
    step.more |= read == STEP_EVENTS;
    for (key, id) in keys {
        remove_key(tables, &key, id, step)?;
    }
    if let Some(last) = last {
        tables
            .meta
            .insert(IDEMPOTENCY_CURSOR, (last + 1).to_be_bytes().as_slice())?;
    }
    Ok(())
}

/// `raw` decoded, or `None` with a warning: the sweep keeps what it cannot read.
fn decoded<T: serde::de::DeserializeOwned>(raw: &[u8], what: &str, key: u128) -> Option<T> {
    serde_json::from_slice(raw)
        .inspect_err(|err| {
            tracing::warn!(%what, key = %format!("{key:032x}"), error = %err,
                "retention sweep keeps a record it cannot read");
        })
        .ok()
}

/// Removes `key` if it still names event `id` (a later event may have taken it over).
fn remove_key(
    tables: &mut Tables<'_>,
    key: &str,
    id: u128,
    step: &mut SweepStep,
) -> Result<(), StoreError> {
    let owner = tables.idempotency.get(key)?.map(|value| value.value());
    if owner == Some(id) {
        tables.idempotency.remove(key)?;
        step.keys_removed += 1;
    }
    Ok(())
}

/// Sweeps forever: a pass of small steps every `retention.interval`, until the writer stops.
pub async fn run(queue: QueueHandle, retention: Retention) {
    let mut cursor = 0;
    let mut pass = SweepStep::default();
    loop {
        match queue.sweep(retention, cursor).await {
            Ok(step) => {
                pass.events_removed += step.events_removed;
                pass.deliveries_removed += step.deliveries_removed;
                pass.keys_removed += step.keys_removed;
                if step.more {
                    cursor = step.next;
                    tokio::time::sleep(STEP_PAUSE).await;
                    continue;
                }
                if pass.events_removed + pass.keys_removed > 0 {
                    tracing::info!(
                        events = pass.events_removed,
                        deliveries = pass.deliveries_removed,
                        idempotency_keys = pass.keys_removed,
                        "retention sweep removed what had expired"
                    );
                }
                pass = SweepStep::default();
                cursor = 0;
            }
            Err(super::QueueError::Closed) => return,
            Err(err) => tracing::warn!(error = %err, "retention sweep step failed; will try again"),
        }
        tokio::time::sleep(retention.interval).await;
    }
}
