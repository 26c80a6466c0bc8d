//! The delivery queue on PostgreSQL, shared by every node on the database.
//!
//! Three operations, each on a batch, each one transaction:
//!
//! * [`PgQueue::publish`] commits events with their deliveries, bodies and queue rows as
//!   multi-row `INSERT … SELECT FROM unnest(…)` statements. The publishing node may *hold* the
//!   new deliveries under a lease (it hands them to its own lanes at once; nobody else takes
//!   them before the lease runs out), or leave them due for any node and wake the others with
//!   a `NOTIFY` naming the endpoints. At most one leaves a node per [`NOTIFY_GAP`]: endpoints
//!   announced inside the gap are merged into one notification sent when it ends. Each node
//!   also polls, so a notification lost with a connection delays work, never loses it.
//! * [`PgQueue::claim`] takes up to a limit of an endpoint's due deliveries for a lease. The
//!   rows are picked in a `MATERIALIZED` CTE with `FOR UPDATE SKIP LOCKED` and then updated by
//!   joining it: the `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)` form lets the
//!   planner turn the subquery into the inner side of a nested loop that locks again for every
//!   row (seen on this project's machines: one claim ran over ten minutes after the table had
//!   been vacuumed empty). A claim writes a fresh token and the lease's end into the row, so a
//!   lease that runs out makes the row due again, and whoever claims it next gets a new token.
//! * [`PgQueue::settle`] records attempt results. A result counts only when it carries the
//!   row's current token (the `DELETE` or `UPDATE` of the queue row matches on it, so the
//!   fence costs no extra lock): a node that lost its lease (it stalled, or was presumed dead
//!   and its work reclaimed) has its late result refused, so each attempt is recorded once.
//!
//! Due times and leases are the database's clock (`now()`), so nodes need not agree on theirs.
//! The queue table is narrow and loses a row when its delivery settles; the history (events,
//! bodies, attempts) is written once and only read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{PgStore, unsigned, uuid};
use crate::ids::{DeliveryId, EventId};
use crate::queue::{
    AttemptReport, Decision, DeliveryContent, EventSummary, NewEvent, PublishOutcome,
};
use crate::store::{
    DeliveryRecord, DeliveryRef, DeliveryStatus, EventRecord, PendingDelivery, StoreError,
};
use crate::time::{UnixMillis, now_millis};

/// The channel new due work is announced on; the payload names the endpoints (`*`: any).
pub const CHANNEL: &str = "hookgate_due";

/// Least time between two notifications from one node.
pub const NOTIFY_GAP: Duration = Duration::from_millis(10);

/// The longest payload a notification carries before it says `*` instead (PostgreSQL's limit
/// is 8,000 bytes).
const NOTIFY_PAYLOAD_LIMIT: usize = 4_000;

/// Proof of a claim: a settlement must carry the token its rows were claimed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(Uuid);

impl ClaimToken {
    pub(crate) fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub(crate) fn as_uuid(self) -> Uuid {
        self.0
    }
}

/// What [`PgQueue::publish`] committed.
#[derive(Debug)]
pub struct Published {
    /// One per event, in order.
    pub outcomes: Vec<PublishOutcome>,
    /// The token the new deliveries are held under, when they were held.
    pub held: Option<ClaimToken>,
}

/// Deliveries claimed for a lease.
#[derive(Debug)]
pub struct Claimed {
    pub token: ClaimToken,
    /// Oldest first; each ready to send, or waiting for its endpoint's plugin chain.
    pub deliveries: Vec<PendingDelivery>,
}

/// One attempt's result with the token of the claim it was made under.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub report: AttemptReport,
    pub token: ClaimToken,
}

/// What [`PgQueue::settle`] recorded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Results refused because their claim is no longer current (the lease ran out and the
    /// delivery was claimed again, or it settled already).
    pub refused: Vec<DeliveryId>,
}

/// The queue operations on one database.
pub struct PgQueue {
    store: PgStore,
    notifier: Arc<Notifier>,
}

/// Sends this node's notifications: at most one per [`NOTIFY_GAP`], none lost.
struct Notifier {
    store: PgStore,
    state: Mutex<NotifyState>,
}

#[derive(Default)]
struct NotifyState {
    last: Option<Instant>,
    /// Endpoints announced inside the gap, sent when it ends.
    pending: std::collections::BTreeSet<String>,
    flush_scheduled: bool,
}

/// One statement parameter.
type Param = dyn tokio_postgres::types::ToSql + Sync;

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

impl PgQueue {
    pub fn new(store: PgStore) -> Self {
        Self {
            notifier: Arc::new(Notifier {
                store: store.clone(),
                state: Mutex::new(NotifyState::default()),
            }),
            store,
        }
    }

    /// Commits `events` with their deliveries in one transaction. With `hold`, the new
    /// deliveries are claimed by the caller for that long (the token is in the answer);
    /// without, they are due now for any node and the others are notified.
    pub async fn publish(
        &self,
        events: &[NewEvent],
        hold: Option<Duration>,
    ) -> Result<Published, StoreError> {
        let mut client = self.store.client().await?;
        let txn = client.transaction().await?;
        let held = hold.map(|lease| (ClaimToken::new(), lease));
        let inserted = insert_events(&txn, events, held).await?;
        txn.commit().await?;
        if held.is_none() && !inserted.queued.is_empty() {
            Notifier::announce(&self.notifier, inserted.queued).await;
        }
        Ok(Published {
            outcomes: inserted.outcomes,
            held: held.map(|(token, _)| token),
        })
    }

    /// Claims up to `limit` of `endpoint_id`'s due deliveries, oldest due first, for `lease`.
    /// Rows another node is claiming at this moment are skipped, never waited for.
    pub async fn claim(
        &self,
        endpoint_id: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        let token = ClaimToken::new();
        let client = self.store.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(CLAIM, &[&endpoint_id, &limit, &token.0, &millis(lease)])
            .await?;
        let deliveries = rows
            .iter()
            .map(claimed_delivery)
            .collect::<Result<_, _>>()?;
        Ok(Claimed { token, deliveries })
    }

    /// Records attempt results in one transaction. A result whose token is no longer the
    /// row's is refused and changes nothing.
    pub async fn settle(&self, settlements: &[Settlement]) -> Result<Settled, StoreError> {
        let mut client = self.store.client().await?;
        let txn = client.transaction().await?;
        let settled = settle_in(&txn, settlements, now_millis()).await?;
        txn.commit().await?;
        Ok(settled)
    }
}

/// Records attempt results inside `txn`, as multi-row statements. A result whose token is no
/// longer its row's is refused and changes nothing.
pub(crate) async fn settle_in(
    txn: &tokio_postgres::Transaction<'_>,
    settlements: &[Settlement],
    now: UnixMillis,
) -> Result<Settled, StoreError> {
    // The fence is in the statements that leave or reschedule the queue rows: each matches
    // its row only while it still carries the settlement's token. A claimer that took the
    // row over has changed the token (this statement then waits for it and matches
    // nothing), and one that comes later skips the row this transaction holds.
    let mut fenced = QueueChanges::default();
    for settlement in settlements {
        fenced.push(settlement, now);
    }
    let finished: [&Param; 2] = [&fenced.finished_ids, &fenced.finished_tokens];
    let retries: [&Param; 3] = [
        &fenced.retry_ids,
        &fenced.retry_tokens,
        &fenced.retry_delays,
    ];
    let (left, rescheduled) = tokio::try_join!(
        txn.query(
            "DELETE FROM queue q
             USING unnest($1::uuid[], $2::uuid[]) AS s(id, claim)
             WHERE q.delivery_id = s.id AND q.claim = s.claim
             RETURNING q.delivery_id",
            &finished,
        ),
        txn.query(
            "UPDATE queue q
             SET due_at = now() + r.delay * interval '1 millisecond', claim = NULL
             FROM unnest($1::uuid[], $2::uuid[], $3::float8[]) AS r(id, claim, delay)
             WHERE q.delivery_id = r.id AND q.claim = r.claim
             RETURNING q.delivery_id",
            &retries,
        ),
    )?;
    let accepted: HashSet<Uuid> = left
        .iter()
        .chain(&rescheduled)
        .map(|row| row.get(0))
        .collect();

    let mut changes = SettleColumns::default();
    let mut refused = Vec::new();
    for settlement in settlements {
        let report = &settlement.report;
        if accepted.contains(&uuid(report.delivery_id.as_u128())) {
            changes.push(report);
        } else {
            refused.push(report.delivery_id);
        }
    }
    let (disabled_ids, disabled_reasons) = (changes.disabled.ids(), changes.disabled.reasons());
    let deliveries: [&Param; 4] = [
        &changes.ids,
        &changes.statuses,
        &changes.attempt_counts,
        &changes.errors,
    ];
    let attempts = &changes.attempts;
    let attempt_rows: [&Param; 7] = [
        &attempts.ids,
        &attempts.numbers,
        &attempts.at,
        &attempts.status_codes,
        &attempts.latencies,
        &attempts.errors,
        &attempts.snippets,
    ];
    let disabled: [&Param; 2] = [&disabled_ids, &disabled_reasons];
    tokio::try_join!(
        txn.execute(
            "UPDATE deliveries d
             SET status = r.status,
                 attempt_count = GREATEST(d.attempt_count, r.attempts),
                 last_error = r.error,
                 dead_lettered_at = CASE WHEN r.status = 'dead_lettered' THEN now() END
             FROM unnest($1::uuid[], $2::text[], $3::int4[], $4::text[])
                  AS r(id, status, attempts, error)
             WHERE d.id = r.id",
            &deliveries,
        ),
        txn.execute(
            "INSERT INTO attempts (delivery_id, number, at_ms, status_code, latency_ms,
                                   error, response_snippet)
             SELECT * FROM unnest($1::uuid[], $2::int4[], $3::int8[], $4::int4[],
                                  $5::int8[], $6::text[], $7::text[])
             ON CONFLICT DO NOTHING",
            &attempt_rows,
        ),
        txn.execute(
            "INSERT INTO endpoint_states (endpoint_id, disabled_reason, disabled_at)
             SELECT e.id, e.reason, now() FROM unnest($1::text[], $2::text[]) AS e(id, reason)
             ON CONFLICT (endpoint_id) DO UPDATE
             SET disabled_reason = excluded.disabled_reason,
                 disabled_at = excluded.disabled_at",
            &disabled,
        ),
    )?;
    Ok(Settled { refused })
}

impl Notifier {
    /// Tells the other nodes that `endpoints` have new due work: now, or when the gap since
    /// the last notification ends (merged with whatever else is announced until then).
    async fn announce(this: &Arc<Self>, endpoints: Vec<String>) {
        let wait = {
            let mut state = this.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.pending.extend(endpoints);
            let now = Instant::now();
            match state.last.map(|at| now.duration_since(at)) {
                Some(since) if since < NOTIFY_GAP => {
                    if state.flush_scheduled {
                        return;
                    }
                    state.flush_scheduled = true;
                    Some(NOTIFY_GAP - since)
                }
                _ => None,
            }
        };
        match wait {
            None => this.flush().await,
            Some(wait) => {
                let notifier = this.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    notifier.flush().await;
                });
            }
        }
    }

    /// Sends one notification naming every pending endpoint. The work is committed already:
    /// a failure here only delays other nodes until their next poll.
    async fn flush(&self) {
        let endpoints: Vec<String> = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.flush_scheduled = false;
            state.last = Some(Instant::now());
            std::mem::take(&mut state.pending).into_iter().collect()
        };
        if endpoints.is_empty() {
            return;
        }
        let payload = notify_payload(&endpoints);
        let sent = match self.store.client().await {
            Ok(client) => client
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
                .map_err(StoreError::from),
            Err(err) => Err(err),
        };
        if let Err(err) = sent {
            tracing::warn!(error = %err, "new work not announced to the other nodes; they find it when they next poll");
        }
    }
}

/// What [`insert_events`] wrote.
pub(crate) struct Inserted {
    /// One per event, in order.
    pub outcomes: Vec<PublishOutcome>,
    /// The endpoint of each new queue row.
    pub queued: Vec<String>,
}

/// Writes `events` (those whose idempotency key is new) with their deliveries, bodies and
/// queue rows inside `txn`, as multi-row statements. With `held`, the queue rows are claimed
/// under that token for that long; without, they are due now.
pub(crate) async fn insert_events(
    txn: &tokio_postgres::Transaction<'_>,
    events: &[NewEvent],
    held: Option<(ClaimToken, Duration)>,
) -> Result<Inserted, StoreError> {
    let mut columns = EventColumns::default();
    for event in events {
        columns.push(event);
    }
    let inserted: HashSet<Uuid> = txn
        .query(
            "INSERT INTO events (id, type, created_at_ms, data, idempotency_key, fingerprint)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[],
                                  $5::text[], $6::text[])
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id",
            &[
                &columns.ids,
                &columns.types,
                &columns.created,
                &columns.data,
                &columns.keys,
                &columns.fingerprints,
            ],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();

    let mut rows = DeliveryColumns::default();
    for event in events
        .iter()
        .filter(|e| inserted.contains(&uuid(e.id.as_u128())))
    {
        for delivery in &event.deliveries {
            rows.push(event, delivery);
        }
    }
    let lease = held.map_or(0.0, |(_, lease)| millis(lease));
    let claim = held.map(|(token, _)| token.0);
    let delivery_params: [&Param; 8] = [
        &rows.ids,
        &rows.event_ids,
        &rows.endpoints,
        &rows.created,
        &rows.content_types,
        &rows.headers,
        &rows.plugins,
        &rows.needs_render,
    ];
    let body_params: [&Param; 2] = [&rows.body_ids, &rows.bodies];
    let queue_params: [&Param; 4] = [&rows.ids, &rows.endpoints, &lease, &claim];
    tokio::try_join!(
        txn.execute(
            "INSERT INTO deliveries (id, event_id, endpoint_id, status, created_at_ms,
                                     content_type, headers, plugins, needs_render)
             SELECT d.id, d.event_id, d.endpoint_id, 'pending', d.created_at_ms,
                    d.content_type, d.headers, d.plugins, d.needs_render
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::text[],
                         $6::jsonb[], $7::jsonb[], $8::bool[])
                  AS d(id, event_id, endpoint_id, created_at_ms, content_type, headers,
                       plugins, needs_render)",
            &delivery_params,
        ),
        txn.execute(
            "INSERT INTO bodies (delivery_id, body)
             SELECT * FROM unnest($1::uuid[], $2::bytea[])",
            &body_params,
        ),
        txn.execute(
            "INSERT INTO queue (delivery_id, endpoint_id, due_at, claim)
             SELECT q.id, q.endpoint_id, now() + $3::float8 * interval '1 millisecond', $4
             FROM unnest($1::uuid[], $2::text[]) AS q(id, endpoint_id)",
            &queue_params,
        ),
    )?;

    let replayed = replayed_summaries(txn, events, &inserted).await?;
    let outcomes = events
        .iter()
        .map(|event| {
            if inserted.contains(&uuid(event.id.as_u128())) {
                return PublishOutcome::Created(summary_of_new(event));
            }
            let key = event.idempotency_key.clone().unwrap_or_default();
            match replayed.get(&key) {
                Some((fingerprint, summary)) if *fingerprint == event.fingerprint => {
                    PublishOutcome::Replayed(summary.clone())
                }
                _ => PublishOutcome::Conflict { key },
            }
        })
        .collect();
    Ok(Inserted {
        outcomes,
        queued: rows.endpoints,
    })
}

/// What another node (or this one) announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// New due work for the endpoints named, one per line (or `*` for all).
    Due(String),
    /// The shared endpoints or plugins changed ([`super::shared::CHANNEL`]).
    Config,
}

/// Notifications of new due work and of shared configuration changes, on a connection of
/// its own.
pub struct Listener {
    notices: tokio::sync::mpsc::Receiver<Notice>,
    /// Keeps the connection's session (and so its `LISTEN`) open.
    _client: tokio_postgres::Client,
}

impl Listener {
    /// Starts listening on [`CHANNEL`] and [`super::shared::CHANNEL`].
    pub async fn start(store: &PgStore) -> Result<Self, StoreError> {
        let (client, mut connection) = store.config().connect(tokio_postgres::NoTls).await?;
        let (tx, notices) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(note)) => {
                        let notice = if note.channel() == super::shared::CHANNEL {
                            Notice::Config
                        } else {
                            Notice::Due(note.payload().to_owned())
                        };
                        // A full channel already holds a wake-up; dropping this one loses
                        // nothing the next claim (or configuration poll) would not find.
                        let _ = tx.try_send(notice);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "the PostgreSQL notification connection failed");
                        break;
                    }
                }
            }
        });
        client
            .batch_execute(&format!(
                "LISTEN {CHANNEL}; LISTEN {}",
                super::shared::CHANNEL
            ))
            .await?;
        Ok(Self {
            notices,
            _client: client,
        })
    }

    /// The next notification; `None` once the connection is gone (listen again; polling
    /// covers the gap).
    pub async fn next(&mut self) -> Option<Notice> {
        self.notices.recv().await
    }
}

/// The columns [`claimed_delivery`] maps, over `d` (deliveries), `e` (events), `b` (bodies).
macro_rules! send_columns {
    () => {
        "d.id, d.event_id, d.endpoint_id, d.created_at_ms, d.attempt_count, d.cycle_start,
       d.last_error, d.content_type, d.headers, d.plugins, d.needs_render,
       b.body, e.type, e.created_at_ms, e.data, e.idempotency_key, e.fingerprint"
    };
}

/// Picks due rows in a materialized CTE (locked once, skipping rows others hold), then takes
/// them for the lease by joining it, and returns what sending them needs.
pub const CLAIM: &str = concat!(
    "
WITH due AS MATERIALIZED (
    SELECT delivery_id FROM queue
     WHERE endpoint_id = $1 AND due_at <= now()
     ORDER BY due_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE queue AS q
       SET claim = $3, due_at = now() + $4::float8 * interval '1 millisecond'
      FROM due
     WHERE q.delivery_id = due.delivery_id
 RETURNING q.delivery_id
)
SELECT ",
    send_columns!(),
    "
  FROM claimed c
  JOIN deliveries d ON d.id = c.delivery_id
  JOIN events e ON e.id = d.event_id
  LEFT JOIN bodies b ON b.delivery_id = d.id
 ORDER BY d.id"
);

/// What sending delivery `$1` needs, read inside the transaction that holds it.
pub(crate) const TO_SEND: &str = concat!(
    "SELECT ",
    send_columns!(),
    "
  FROM deliveries d
  JOIN events e ON e.id = d.event_id
  LEFT JOIN bodies b ON b.delivery_id = d.id
 WHERE d.id = $1"
);

/// A claimed row as the lanes take it.
pub(crate) fn claimed_delivery(row: &tokio_postgres::Row) -> Result<PendingDelivery, StoreError> {
    let id: Uuid = row.get(0);
    let event_id: Uuid = row.get(1);
    let headers: serde_json::Value = row.get(8);
    let plugins: serde_json::Value = row.get(9);
    let record = DeliveryRecord {
        id: DeliveryId::from_u128(id.as_u128()),
        event_id: EventId::from_u128(event_id.as_u128()),
        endpoint_id: row.get(2),
        status: DeliveryStatus::Pending,
        created_at: unsigned(row.get::<_, i64>(3)),
        attempt_count: unsigned(row.get::<_, i32>(4)),
        cycle_start: unsigned(row.get::<_, i32>(5)),
        next_attempt_at: None,
        dead_lettered_at: None,
        last_error: row.get(6),
        content_type: row.get(7),
        headers: serde_json::from_value(headers)?,
        plugins: serde_json::from_value(plugins)?,
        needs_render: row.get(10),
    };
    let body: Option<Vec<u8>> = row.get(11);
    let event_type: String = row.get(12);
    let created_at: UnixMillis = unsigned(row.get::<_, i64>(13));
    let data: String = row.get(14);
    if record.needs_render {
        let event = EventRecord {
            id: record.event_id,
            event_type,
            created_at,
            data: RawValue::from_string(data)?,
            idempotency_key: row.get(15),
            fingerprint: row.get(16),
            deliveries: Vec::new(),
            dropped: Vec::new(),
        };
        return Ok(PendingDelivery::Unrendered {
            record,
            event: Arc::new(event),
        });
    }
    let body = match body {
        Some(body) => Bytes::from(body),
        None => crate::events::default_body(record.event_id, &event_type, created_at, &data),
    };
    Ok(PendingDelivery::Ready { record, body })
}

/// The summaries of events whose idempotency key was taken before this batch (or earlier in
/// it), with their fingerprints, by key.
async fn replayed_summaries(
    txn: &tokio_postgres::Transaction<'_>,
    events: &[NewEvent],
    inserted: &HashSet<Uuid>,
) -> Result<HashMap<String, (String, EventSummary)>, StoreError> {
    let keys: Vec<&str> = events
        .iter()
        .filter(|e| !inserted.contains(&uuid(e.id.as_u128())))
        .filter_map(|e| e.idempotency_key.as_deref())
        .collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = txn
        .query(
            "SELECT e.idempotency_key, e.fingerprint, e.id, e.type, e.created_at_ms,
                    d.id, d.endpoint_id
               FROM events e
               LEFT JOIN deliveries d ON d.event_id = e.id
              WHERE e.idempotency_key = ANY($1)
              ORDER BY e.id, d.id",
            &[&keys],
        )
        .await?;
    let mut found: HashMap<String, (String, EventSummary)> = HashMap::new();
    for row in &rows {
        let key: String = row.get(0);
        let entry = found.entry(key).or_insert_with(|| {
            let id: Uuid = row.get(2);
            let summary = EventSummary {
                id: EventId::from_u128(id.as_u128()),
                event_type: row.get(3),
                created_at: unsigned(row.get::<_, i64>(4)),
                deliveries: Vec::new(),
                dropped: Vec::new(),
            };
            (row.get(1), summary)
        });
        if let Some(delivery) = row.get::<_, Option<Uuid>>(5) {
            entry.1.deliveries.push(DeliveryRef {
                id: DeliveryId::from_u128(delivery.as_u128()),
                endpoint_id: row.get(6),
                parked: None,
            });
        }
    }
    Ok(found)
}

/// What the publisher hears of an event this call created.
pub(crate) fn summary_of_new(event: &NewEvent) -> EventSummary {
    EventSummary {
        id: event.id,
        event_type: event.event_type.clone(),
        created_at: event.created_at,
        deliveries: event.delivery_refs(),
        dropped: Vec::new(),
    }
}

/// The endpoints a notification names, each once (sorted), or `*` when they do not fit in a
/// payload.
fn notify_payload(endpoints: &[String]) -> String {
    let mut unique: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    unique.sort_unstable();
    unique.dedup();
    let payload = unique.join("\n");
    if payload.len() > NOTIFY_PAYLOAD_LIMIT {
        "*".to_owned()
    } else {
        payload
    }
}

/// The `events` rows of a batch, column by column for `unnest`.
#[derive(Default)]
struct EventColumns {
    ids: Vec<Uuid>,
    types: Vec<String>,
    created: Vec<i64>,
    data: Vec<String>,
    keys: Vec<Option<String>>,
    fingerprints: Vec<String>,
}

impl EventColumns {
    fn push(&mut self, event: &NewEvent) {
        self.ids.push(uuid(event.id.as_u128()));
        self.types.push(event.event_type.clone());
        self.created.push(event.created_at as i64);
        self.data.push(event.data.get().to_owned());
        self.keys.push(event.idempotency_key.clone());
        self.fingerprints.push(event.fingerprint.clone());
    }
}

/// The `deliveries`, `bodies` and `queue` rows of a batch.
#[derive(Default)]
struct DeliveryColumns {
    ids: Vec<Uuid>,
    event_ids: Vec<Uuid>,
    endpoints: Vec<String>,
    created: Vec<i64>,
    content_types: Vec<Option<String>>,
    headers: Vec<serde_json::Value>,
    plugins: Vec<serde_json::Value>,
    needs_render: Vec<bool>,
    body_ids: Vec<Uuid>,
    bodies: Vec<Vec<u8>>,
}

impl DeliveryColumns {
    fn push(&mut self, event: &NewEvent, delivery: &crate::queue::NewDelivery) {
        let id = uuid(delivery.id.as_u128());
        self.ids.push(id);
        self.event_ids.push(uuid(event.id.as_u128()));
        self.endpoints.push(delivery.endpoint_id.clone());
        self.created.push(event.created_at as i64);
        match &delivery.content {
            DeliveryContent::Ready(payload) => {
                self.content_types.push(Some(payload.content_type.clone()));
                self.headers.push(serde_json::json!(payload.headers));
                self.plugins.push(serde_json::json!(payload.plugins));
                self.needs_render.push(false);
                // The default body is rendered again from the event; only shaped ones are kept.
                if !payload.plugins.is_empty() {
                    self.body_ids.push(id);
                    self.bodies.push(payload.body.to_vec());
                }
            }
            DeliveryContent::Render => {
                self.content_types.push(None);
                self.headers.push(serde_json::json!([]));
                self.plugins.push(serde_json::json!([]));
                self.needs_render.push(true);
            }
        }
    }
}

/// The queue rows a batch of settlements leaves or reschedules, each with the token it
/// must still carry.
#[derive(Default)]
struct QueueChanges {
    /// Delivered or dead-lettered: the row leaves the queue.
    finished_ids: Vec<Uuid>,
    finished_tokens: Vec<Uuid>,
    retry_ids: Vec<Uuid>,
    retry_tokens: Vec<Uuid>,
    retry_delays: Vec<f64>,
}

impl QueueChanges {
    fn push(&mut self, settlement: &Settlement, now: UnixMillis) {
        let id = uuid(settlement.report.delivery_id.as_u128());
        let token = settlement.token.0;
        if let Decision::Retry { at } = settlement.report.decision {
            self.retry_ids.push(id);
            self.retry_tokens.push(token);
            self.retry_delays.push(at.saturating_sub(now) as f64);
        } else {
            self.finished_ids.push(id);
            self.finished_tokens.push(token);
        }
    }
}

/// What a batch of accepted settlements records, column by column.
#[derive(Default)]
struct SettleColumns {
    ids: Vec<Uuid>,
    statuses: Vec<&'static str>,
    attempt_counts: Vec<i32>,
    errors: Vec<Option<String>>,
    attempts: AttemptColumns,
    disabled: Disabled,
}

impl SettleColumns {
    fn push(&mut self, report: &AttemptReport) {
        let id = uuid(report.delivery_id.as_u128());
        let attempt_error = report.attempt.as_ref().and_then(|a| a.error.clone());
        let (status, error) = match &report.decision {
            Decision::Delivered => ("delivered", None),
            Decision::Retry { .. } => ("pending", attempt_error),
            Decision::DeadLetter { reason } => ("dead_lettered", Some(reason.clone())),
            Decision::DisableEndpoint { reason } => {
                self.disabled.set(&report.endpoint_id, reason);
                ("dead_lettered", Some(reason.clone()))
            }
        };
        self.ids.push(id);
        self.statuses.push(status);
        self.errors.push(error);
        let number = report.attempt.as_ref().map_or(0, |a| a.number);
        self.attempt_counts
            .push(i32::try_from(number).unwrap_or(i32::MAX));
        if let Some(attempt) = &report.attempt {
            self.attempts.push(id, attempt);
        }
    }
}

#[derive(Default)]
struct AttemptColumns {
    ids: Vec<Uuid>,
    numbers: Vec<i32>,
    at: Vec<i64>,
    status_codes: Vec<Option<i32>>,
    latencies: Vec<i64>,
    errors: Vec<Option<String>>,
    snippets: Vec<Option<String>>,
}

impl AttemptColumns {
    fn push(&mut self, id: Uuid, attempt: &crate::store::AttemptRecord) {
        self.ids.push(id);
        self.numbers
            .push(i32::try_from(attempt.number).unwrap_or(i32::MAX));
        self.at.push(attempt.at as i64);
        self.status_codes.push(attempt.status_code.map(i32::from));
        self.latencies
            .push(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX));
        self.errors.push(attempt.error.clone());
        self.snippets.push(attempt.response_snippet.clone());
    }
}

/// Endpoints a batch disables (410), each once: an upsert may not touch a row twice.
#[derive(Default)]
struct Disabled(HashMap<String, String>);

impl Disabled {
    fn set(&mut self, endpoint_id: &str, reason: &str) {
        self.0.insert(endpoint_id.to_owned(), reason.to_owned());
    }

    fn ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    fn reasons(&self) -> Vec<String> {
        self.0.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_names_each_endpoint_once_or_says_any() {
        let endpoints = ["b", "a", "b"].map(str::to_owned);
        assert_eq!(notify_payload(&endpoints), "a\nb");
        let many: Vec<String> = (0..2_000).map(|n| format!("endpoint-{n}")).collect();
        assert_eq!(notify_payload(&many), "*");
    }

    #[test]
    fn a_410_disables_its_endpoint_once_per_batch_with_the_last_reason() {
        let mut disabled = Disabled::default();
        disabled.set("orders", "410 first");
        disabled.set("orders", "410 second");
        assert_eq!(disabled.ids(), ["orders"]);
        assert_eq!(disabled.reasons(), ["410 second"]);
    }
}
