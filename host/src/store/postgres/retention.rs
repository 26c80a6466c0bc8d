//! One step of the retention sweep on PostgreSQL: the counterpart of redb's
//! [`crate::queue::retention`] sweep. It runs inside the writer's batch transaction, with the
//! same bounds and the same [`SweepStep`], so the background task drives both backends alike.
//!
//! How it differs from redb:
//!
//! * Set-based. The step reads up to `STEP_EVENTS` (128) events from the cursor in one statement
//!   that also decides which of them may go, then deletes their attempts, bodies, deliveries
//!   and the events in one statement of data-modifying CTEs, not one round trip per event.
//! * Shared rows. Other nodes (and their sweeps) work on the same tables, so the step locks
//!   the events and deliveries it judges with `FOR UPDATE SKIP LOCKED` and keeps whatever it
//!   could not lock: an event whose delivery is being replayed or settled elsewhere waits for
//!   the next pass, and the sweep never makes the writer's batch wait on another transaction.
//! * Keys are a column. An idempotency key is `events.idempotency_key`, so it goes with its
//!   event row, and forgetting the key of an event that stays is setting it to `NULL`. No
//!   cursor is kept for that (redb keeps one in its meta table): the rows still carrying a key
//!   are the ones left to do.
//! * Times. `dead_lettered_at` and `stored_at` are the database's clock; they are compared
//!   with bounds from the gateway's `now`, which is close enough for retentions of hours.

use tokio_postgres::Row;
use uuid::Uuid;

use crate::queue::retention::{Retention, STEP_EVENTS, SweepStep, first_id_at, millis_ago};
use crate::store::StoreError;
use crate::time::UnixMillis;

/// One statement parameter.
type Param = dyn tokio_postgres::types::ToSql + Sync;

/// Reads the events of ids `[$1, $2)`, at most `$3`, oldest first, each with whether it may
/// go: it and all its deliveries are locked by this transaction, every delivery is settled
/// (delivered, dropped, or dead-lettered before `$4`, in unix milliseconds) and none has a
/// queue row. A dead-lettered delivery without a time counts as old, as on redb.
const SCAN: &str = "
WITH scanned AS MATERIALIZED (
    SELECT id FROM events
     WHERE id >= $1 AND id < $2
     ORDER BY id
     LIMIT $3
), held_events AS MATERIALIZED (
    SELECT id FROM events
     WHERE id IN (SELECT id FROM scanned)
       FOR UPDATE SKIP LOCKED
), held_deliveries AS MATERIALIZED (
    SELECT d.id,
           d.status IN ('delivered', 'dropped')
           OR (d.status = 'dead_lettered'
               AND (d.dead_lettered_at IS NULL
                    OR d.dead_lettered_at < to_timestamp($4::float8 / 1000))) AS settled
      FROM deliveries d
     WHERE d.event_id IN (SELECT id FROM held_events)
       FOR UPDATE OF d SKIP LOCKED
)
SELECT s.id,
       s.id IN (SELECT id FROM held_events)
       AND NOT EXISTS (
           SELECT 1 FROM deliveries d
            WHERE d.event_id = s.id
              AND NOT EXISTS (SELECT 1 FROM held_deliveries h WHERE h.id = d.id AND h.settled)
       )
       AND NOT EXISTS (
           SELECT 1 FROM deliveries d JOIN queue q ON q.delivery_id = d.id
            WHERE d.event_id = s.id
       ) AS removable
  FROM scanned s
 ORDER BY s.id";

/// Removes the events `$1` with their deliveries, bodies and attempts (the rows [`SCAN`]
/// locked); answers how many events, how many of them had an idempotency key, and how many
/// deliveries went.
const REMOVE: &str = "
WITH removed_deliveries AS (
    DELETE FROM deliveries WHERE event_id = ANY($1::uuid[]) RETURNING id
), removed_attempts AS (
    DELETE FROM attempts a USING removed_deliveries r WHERE a.delivery_id = r.id
), removed_bodies AS (
    DELETE FROM bodies b USING removed_deliveries r WHERE b.delivery_id = r.id
), removed_events AS (
    DELETE FROM events WHERE id = ANY($1::uuid[]) RETURNING idempotency_key
)
SELECT (SELECT count(*) FROM removed_events),
       (SELECT count(idempotency_key) FROM removed_events),
       (SELECT count(*) FROM removed_deliveries)";

/// Forgets the idempotency keys of up to `$2` events with ids below `$1` (the events stay).
/// The rows are picked in a materialized CTE and updated by joining it, as the claim does (see
/// [`super::queue`]: the `WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)` form can become a
/// nested loop that locks again per row). No index serves "has a key and is old" besides the
/// unique one on the key, so each step may scan past the keys already forgotten: acceptable
/// for a background step of a few rows.
const FORGET_KEYS: &str = "
WITH expired AS MATERIALIZED (
    SELECT id FROM events
     WHERE idempotency_key IS NOT NULL AND id < $1
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE events e SET idempotency_key = NULL
  FROM expired
 WHERE e.id = expired.id";

/// Removes up to `$2` kept API answers stored before `$1` (unix milliseconds). `stored_at` has
/// no index either: the same trade as [`FORGET_KEYS`].
const FORGET_ANSWERS: &str = "
WITH expired AS MATERIALIZED (
    SELECT key FROM api_answers
     WHERE stored_at < to_timestamp($1::float8 / 1000)
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
DELETE FROM api_answers a
 USING expired
 WHERE a.key = expired.key";

/// One step of the retention sweep inside `txn` (the writer's batch transaction).
pub(crate) async fn sweep(
    txn: &tokio_postgres::Transaction<'_>,
    retention: &Retention,
    cursor: u128,
    now: UnixMillis,
) -> Result<SweepStep, StoreError> {
    let limit = i64::try_from(STEP_EVENTS).unwrap_or(i64::MAX);
    let from = Uuid::from_u128(cursor);
    let settled_before = Uuid::from_u128(first_id_at(millis_ago(now, retention.settled)));
    let dead_before = millis_ago(now, retention.dead_letters) as f64;
    let keys_before = millis_ago(now, retention.idempotency);
    let keys_before_id = Uuid::from_u128(first_id_at(keys_before));
    let answers_before = keys_before as f64;

    let scan_params: [&Param; 4] = [&from, &settled_before, &limit, &dead_before];
    let scanned = txn.query(SCAN, &scan_params).await?;
    let mut step = SweepStep {
        next: scanned
            .last()
            .map_or(cursor, |row| row.get::<_, Uuid>(0).as_u128() + 1),
        more: scanned.len() == STEP_EVENTS,
        ..SweepStep::default()
    };
    let removable: Vec<Uuid> = scanned
        .iter()
        .filter(|row| row.get::<_, bool>(1))
        .map(|row| row.get(0))
        .collect();

    let remove_params: [&Param; 1] = [&removable];
    let key_params: [&Param; 2] = [&keys_before_id, &limit];
    let answer_params: [&Param; 2] = [&answers_before, &limit];
    let (removed, keys, answers) = tokio::try_join!(
        txn.query_one(REMOVE, &remove_params),
        txn.execute(FORGET_KEYS, &key_params),
        txn.execute(FORGET_ANSWERS, &answer_params),
    )?;
    step.events_removed = count(&removed, 0);
    step.deliveries_removed = count(&removed, 2);
    // As on redb, the key of a removed event counts among the keys removed.
    step.keys_removed = count(&removed, 1);
    for forgotten in [keys, answers] {
        let forgotten = usize::try_from(forgotten).unwrap_or(usize::MAX);
        step.keys_removed += forgotten;
        step.more |= forgotten == STEP_EVENTS;
    }
    Ok(step)
}

/// The `count(*)` in column `index` of `row`.
fn count(row: &Row, index: usize) -> usize {
    usize::try_from(row.get::<_, i64>(index)).unwrap_or(0)
}
