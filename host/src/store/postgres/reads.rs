//! The read side of the store over PostgreSQL: what the admin API, the metrics page and the
//! chain scanner read, as the very records the redb file gives, so the API's JSON does not
//! depend on the backend.
//!
//! [`Reads`] is synchronous (redb reads are), so each method here waits on the pool through
//! [`PgReads::block_on`]. Lists are read newest first by id (ids are UUIDv7: id order is time
//! order) in chunks of [`CHUNK`] rows and filtered in Rust exactly as redb's page walk filters:
//! a page of 50 reads one chunk, and a sparse filter reads on only up to its scan bound.
//!
//! Times the database wrote (`due_at`, `dead_lettered_at`, `disabled_at`) come back as unix
//! milliseconds truncated, not rounded: a time read back and passed in again as a bound
//! (`since`) still includes the row it came from.

use std::collections::HashMap;

use alloy::primitives::Address;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use super::{PgStore, unsigned, uuid};
use crate::config::EndpointConfig;
use crate::ids::{DeliveryId, EventId, PaymentId};
use crate::payments::Payment;
use crate::store::{
    AttemptRecord, ChainCursor, DeliveryRecord, DeliveryRef, DeliveryStatus, EndpointState,
    EventRecord, Reads, StoreError, StoredEndpoint, corrupt,
};
use crate::time::UnixMillis;

/// Rows fetched per query while walking a list.
const CHUNK: usize = 256;

/// The `meta` entry of the plugin cache key (the same name as in the redb file).
const PLUGIN_CACHE_KEY: &str = "plugin_cache_key";

/// A delivery record's columns, in the order [`delivery_record`] reads them. `next_attempt_at`
/// is the queue row's due time while the delivery is pending (for a claimed row, when its
/// lease runs out).
const SELECT_DELIVERIES: &str = "
SELECT d.id, d.event_id, d.endpoint_id, d.status, d.created_at_ms, d.attempt_count,
       d.cycle_start,
       CASE WHEN d.status = 'pending'
            THEN floor(extract(epoch FROM q.due_at) * 1000)::int8 END,
       floor(extract(epoch FROM d.dead_lettered_at) * 1000)::int8,
       d.last_error, d.content_type, d.headers, d.plugins, d.needs_render
  FROM deliveries d
  LEFT JOIN queue q ON q.delivery_id = d.id";

/// An event record's columns, in the order [`event_record`] reads them.
const SELECT_EVENTS: &str =
    "SELECT id, type, created_at_ms, data, idempotency_key, fingerprint FROM events";

/// A delivery's attempts, oldest first, in the order [`attempt_record`] reads them.
const SELECT_ATTEMPTS: &str = "
SELECT number, at_ms, status_code, latency_ms, error, response_snippet
  FROM attempts WHERE delivery_id = $1 ORDER BY number";

/// One statement parameter.
type Param<'a> = dyn tokio_postgres::types::ToSql + Sync + 'a;

/// Reads of committed state over SQL, for the admin API, metrics and the scanner.
pub struct PgReads {
    store: PgStore,
    /// The runtime the pool's connections run on; the blocking reads wait on it.
    runtime: tokio::runtime::Handle,
}

impl PgReads {
    pub fn new(store: PgStore, runtime: tokio::runtime::Handle) -> Self {
        Self { store, runtime }
    }

    /// The pool the reads go through.
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    /// The secret that authenticates compiled plugins in the on-disk cache, shared by every
    /// node on the database. The first node to ask creates it; an insert that loses the race
    /// to another node's changes nothing, and both read the winner's key.
    pub async fn plugin_cache_key(&self) -> Result<[u8; 32], StoreError> {
        let client = self.store.client().await?;
        let fresh: [u8; 32] = rand::random();
        client
            .execute(
                "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&PLUGIN_CACHE_KEY, &fresh.as_slice()],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT value FROM meta WHERE name = $1",
                &[&PLUGIN_CACHE_KEY],
            )
            .await?;
        row.get::<_, &[u8]>(0)
            .try_into()
            .map_err(|_| corrupt("the plugin cache key in table meta is not 32 bytes".to_owned()))
    }

    /// Writes the config file's endpoints over their stored copies, removes stored copies of
    /// config endpoints that are gone from the file, and returns every endpoint: the file's in
    /// its order, then the API's by creation time (as the redb `Store::seed_endpoints` does).
    /// The table lock (which conflicts with itself) makes nodes starting together seed one
    /// after the other, so neither writes over what the other read.
    pub async fn seed_endpoints(
        &self,
        configured: &[EndpointConfig],
        now: UnixMillis,
    ) -> Result<Vec<StoredEndpoint>, StoreError> {
        let mut client = self.store.client().await?;
        let txn = client.transaction().await?;
        txn.batch_execute("LOCK TABLE endpoint_configs IN SHARE ROW EXCLUSIVE MODE")
            .await?;
        // Byte order of ids, as redb iterates them: API endpoints created at the same
        // millisecond come back in the same order from either backend.
        let stored = txn
            .query(
                r#"SELECT record FROM endpoint_configs ORDER BY id COLLATE "C""#,
                &[],
            )
            .await?
            .iter()
            .map(record)
            .collect::<Result<Vec<StoredEndpoint>, _>>()?;
        let seeded = crate::store::endpoints::seed(stored, configured, now);
        let from_file = &seeded.all[..seeded.from_file];
        let ids: Vec<&str> = from_file.iter().map(|r| r.config.id.as_str()).collect();
        let json = from_file
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        // The config file rejects an id defined twice, so no row is upserted twice here.
        txn.execute(
            "INSERT INTO endpoint_configs (id, record)
             SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            &[&ids, &json],
        )
        .await?;
        txn.execute(
            "DELETE FROM endpoint_configs WHERE id = ANY($1)",
            &[&seeded.removed],
        )
        .await?;
        txn.commit().await?;
        Ok(seeded.all)
    }

    /// Waits for `future` from a synchronous [`Reads`] method. Callers are on a
    /// `spawn_blocking` thread or on a worker of a multi-thread runtime; `block_in_place`
    /// lets the worker block too (its other tasks move to another thread meanwhile), where a
    /// bare `block_on` would panic. It panics on a current-thread runtime, which the gateway
    /// does not run reads on.
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        tokio::task::block_in_place(|| self.runtime.block_on(future))
    }
}

/// The queries behind [`Reads`], one connection from the pool each.
impl PgReads {
    async fn load_delivery(
        &self,
        id: DeliveryId,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
        let client = self.store.client().await?;
        let id = uuid(id.as_u128());
        let Some(record) = deliveries_where(&client, "WHERE d.id = $1", &[&id])
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let attempts = client
            .query(SELECT_ATTEMPTS, &[&id])
            .await?
            .iter()
            .map(attempt_record)
            .collect();
        Ok(Some((record, attempts)))
    }

    async fn load_event(&self, id: EventId) -> Result<Option<EventRecord>, StoreError> {
        let client = self.store.client().await?;
        Ok(
            events_where(&client, "WHERE id = $1", &[&uuid(id.as_u128())])
                .await?
                .pop(),
        )
    }

    async fn load_event_with_deliveries(
        &self,
        id: EventId,
    ) -> Result<Option<(EventRecord, Vec<DeliveryRecord>)>, StoreError> {
        let client = self.store.client().await?;
        let id = uuid(id.as_u128());
        let Some(event) = events_where(&client, "WHERE id = $1", &[&id]).await?.pop() else {
            return Ok(None);
        };
        let deliveries =
            deliveries_where(&client, "WHERE d.event_id = $1 ORDER BY d.id", &[&id]).await?;
        Ok(Some((event, deliveries)))
    }

    /// Up to `count` events with ids below `below`, newest first.
    async fn events_below(
        &self,
        below: u128,
        count: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let client = self.store.client().await?;
        let (below, count) = (uuid(below), row_count(count));
        let params: [&Param<'_>; 2] = [&below, &count];
        events_where(&client, "WHERE id < $1 ORDER BY id DESC LIMIT $2", &params).await
    }

    /// Up to `count` deliveries with ids below `below`, newest first.
    async fn deliveries_below(
        &self,
        below: u128,
        count: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let client = self.store.client().await?;
        let (below, count) = (uuid(below), row_count(count));
        let params: [&Param<'_>; 2] = [&below, &count];
        deliveries_where(
            &client,
            "WHERE d.id < $1 ORDER BY d.id DESC LIMIT $2",
            &params,
        )
        .await
    }

    /// Up to `count` payments with ids below `below`, newest first.
    async fn payments_below(&self, below: u128, count: usize) -> Result<Vec<Payment>, StoreError> {
        let client = self.store.client().await?;
        let (below, count) = (uuid(below), row_count(count));
        let params: [&Param<'_>; 2] = [&below, &count];
        records(
            &client,
            "SELECT record FROM payments WHERE id < $1 ORDER BY id DESC LIMIT $2",
            &params,
        )
        .await
    }

    async fn load_dead_letters(
        &self,
        endpoint: &str,
        since: UnixMillis,
        limit: usize,
    ) -> Result<(Vec<DeliveryId>, bool), StoreError> {
        let client = self.store.client().await?;
        // One row past the limit tells whether more follow.
        let (since, wanted) = (since as f64, row_count(limit.saturating_add(1)));
        let params: [&Param<'_>; 3] = [&endpoint, &since, &wanted];
        let rows = client
            .query(
                "SELECT id FROM deliveries
                  WHERE endpoint_id = $1 AND status = 'dead_lettered'
                    AND dead_lettered_at >= to_timestamp($2::float8 / 1000)
                  ORDER BY dead_lettered_at, id
                  LIMIT $3",
                &params,
            )
            .await?;
        let mut ids: Vec<DeliveryId> = rows.iter().map(|row| delivery_id(row.get(0))).collect();
        let more = ids.len() > limit;
        ids.truncate(limit);
        Ok((ids, more))
    }

    async fn load_endpoint_states(&self) -> Result<HashMap<String, EndpointState>, StoreError> {
        let client = self.store.client().await?;
        let rows = client
            .query(
                "SELECT endpoint_id, disabled_reason,
                        floor(extract(epoch FROM disabled_at) * 1000)::int8
                   FROM endpoint_states",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let state = EndpointState {
                    disabled_reason: row.get(1),
                    disabled_at: row.get::<_, Option<i64>>(2).map(unsigned),
                };
                (row.get(0), state)
            })
            .collect())
    }

    async fn load_payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        let client = self.store.client().await?;
        let sql = "SELECT record FROM payments WHERE id = $1";
        Ok(records(&client, sql, &[&uuid(id.as_u128())]).await?.pop())
    }

    async fn load_watched_addresses(
        &self,
        chain: &str,
        ended_since: UnixMillis,
    ) -> Result<Vec<Address>, StoreError> {
        let client = self.store.client().await?;
        let rows = client
            .query(
                "SELECT address FROM addresses
                  WHERE chain = $1 AND (ended_at_ms IS NULL OR ended_at_ms >= $2)
                  ORDER BY address",
                &[&chain, &signed(ended_since)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let text: &str = row.get(0);
                text.parse::<Address>().map_err(|_| {
                    corrupt(format!(
                        "the address `{text}` watched on chain {chain} is not an address"
                    ))
                })
            })
            .collect()
    }

    async fn load_chain_cursor(&self, chain: &str) -> Result<Option<ChainCursor>, StoreError> {
        let client = self.store.client().await?;
        let sql = "SELECT record FROM chain_cursors WHERE chain = $1";
        Ok(records(&client, sql, &[&chain]).await?.pop())
    }

    async fn load_pending_count(&self) -> Result<u64, StoreError> {
        let client = self.store.client().await?;
        let row = client.query_one("SELECT count(*) FROM queue", &[]).await?;
        Ok(unsigned(row.get::<_, i64>(0)))
    }

    async fn load_due_summary(
        &self,
        now: UnixMillis,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let client = self.store.client().await?;
        // Waited is measured on the gateway's clock `now`, as redb measures it.
        let rows = client
            .query(
                "SELECT endpoint_id, count(*),
                        GREATEST(0, ($1::int8
                            - floor(extract(epoch FROM min(due_at)) * 1000)::int8) / 1000)
                   FROM queue
                  GROUP BY endpoint_id
                  ORDER BY endpoint_id",
                &[&signed(now)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let count: u64 = unsigned(row.get::<_, i64>(1));
                let waited: u64 = unsigned(row.get::<_, i64>(2));
                (row.get(0), count, waited)
            })
            .collect())
    }

    async fn load_due_endpoints(&self) -> Result<Vec<String>, StoreError> {
        let client = self.store.client().await?;
        let rows = client
            .query("SELECT DISTINCT endpoint_id FROM queue ORDER BY 1", &[])
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

impl Reads for PgReads {
    fn delivery(
        &self,
        id: DeliveryId,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
        self.block_on(self.load_delivery(id))
    }

    fn event(&self, id: EventId) -> Result<Option<EventRecord>, StoreError> {
        self.block_on(self.load_event(id))
    }

    fn event_with_deliveries(
        &self,
        id: EventId,
    ) -> Result<Option<(EventRecord, Vec<DeliveryRecord>)>, StoreError> {
        self.block_on(self.load_event_with_deliveries(id))
    }

    fn events(
        &self,
        before: Option<EventId>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&EventRecord) -> bool,
    ) -> Result<(Vec<EventRecord>, Option<EventId>), StoreError> {
        let walk = Walk { limit, scan, keep };
        let (list, next) = walk.run(
            before.map(EventId::as_u128),
            |event| event.id.as_u128(),
            |below, count| self.block_on(self.events_below(below, count)),
        )?;
        Ok((list, next.map(EventId::from_u128)))
    }

    fn deliveries(
        &self,
        before: Option<DeliveryId>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&DeliveryRecord) -> bool,
    ) -> Result<(Vec<DeliveryRecord>, Option<DeliveryId>), StoreError> {
        let walk = Walk { limit, scan, keep };
        let (list, next) = walk.run(
            before.map(DeliveryId::as_u128),
            |delivery| delivery.id.as_u128(),
            |below, count| self.block_on(self.deliveries_below(below, count)),
        )?;
        Ok((list, next.map(DeliveryId::from_u128)))
    }

    fn dead_letters_of(
        &self,
        endpoint: &str,
        since: UnixMillis,
        limit: usize,
    ) -> Result<(Vec<DeliveryId>, bool), StoreError> {
        self.block_on(self.load_dead_letters(endpoint, since, limit))
    }

    fn endpoint_states(&self) -> Result<HashMap<String, EndpointState>, StoreError> {
        self.block_on(self.load_endpoint_states())
    }

    fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        self.block_on(self.load_payment(id))
    }

    fn payments(
        &self,
        before: Option<PaymentId>,
        limit: usize,
        keep: &dyn Fn(&Payment) -> bool,
    ) -> Result<Vec<Payment>, StoreError> {
        // Payments are listed without a scan bound, as redb lists them.
        let walk = Walk {
            limit,
            scan: usize::MAX,
            keep,
        };
        let (list, _) = walk.run(
            before.map(PaymentId::as_u128),
            |payment| payment.id.as_u128(),
            |below, count| self.block_on(self.payments_below(below, count)),
        )?;
        Ok(list)
    }

    fn watched_addresses(
        &self,
        chain: &str,
        ended_since: UnixMillis,
    ) -> Result<Vec<Address>, StoreError> {
        self.block_on(self.load_watched_addresses(chain, ended_since))
    }

    fn chain_cursor(&self, chain: &str) -> Result<Option<ChainCursor>, StoreError> {
        self.block_on(self.load_chain_cursor(chain))
    }

    fn pending_count(&self) -> Result<u64, StoreError> {
        self.block_on(self.load_pending_count())
    }

    fn due_summary(&self, now: UnixMillis) -> Result<Vec<(String, u64, u64)>, StoreError> {
        self.block_on(self.load_due_summary(now))
    }

    fn due_endpoints(&self) -> Result<Vec<String>, StoreError> {
        self.block_on(self.load_due_endpoints())
    }
}

/// A newest-first walk over a list keyed by time-ordered id, with redb's `Store::page` rules:
/// records `keep` accepts are kept until `limit` are, at most `scan` are examined, and the
/// cursor returned continues after the last record examined (`None`: the list ran out).
struct Walk<'k, T> {
    limit: usize,
    scan: usize,
    keep: &'k dyn Fn(&T) -> bool,
}

impl<T> Walk<'_, T> {
    /// Walks from below `before` (the top of the list when `None`), reading chunks through
    /// `fetch(below, count)`: up to `count` records with ids below `below`, newest first.
    fn run(
        &self,
        before: Option<u128>,
        id_of: fn(&T) -> u128,
        mut fetch: impl FnMut(u128, usize) -> Result<Vec<T>, StoreError>,
    ) -> Result<(Vec<T>, Option<u128>), StoreError> {
        let mut kept = Vec::new();
        let mut examined = 0;
        let mut below = before.unwrap_or(u128::MAX);
        loop {
            // Never more than the scan bound has left; nothing at all for a bound of zero.
            let count = CHUNK.min(self.scan - examined);
            if count == 0 {
                return Ok((kept, None));
            }
            let chunk = fetch(below, count)?;
            let ran_out = chunk.len() < count;
            for record in chunk {
                examined += 1;
                below = id_of(&record);
                if (self.keep)(&record) {
                    kept.push(record);
                }
                if kept.len() == self.limit || examined == self.scan {
                    return Ok((kept, Some(below)));
                }
            }
            if ran_out {
                return Ok((kept, None));
            }
        }
    }
}

/// The deliveries `clause` selects (with its order and limit).
async fn deliveries_where(
    client: &Client,
    clause: &str,
    params: &[&Param<'_>],
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let sql = format!("{SELECT_DELIVERIES} {clause}");
    client
        .query(sql.as_str(), params)
        .await?
        .iter()
        .map(delivery_record)
        .collect()
}

/// The events `clause` selects (with its order and limit), each listing its deliveries; the
/// deliveries of all of them are read in one query.
async fn events_where(
    client: &Client,
    clause: &str,
    params: &[&Param<'_>],
) -> Result<Vec<EventRecord>, StoreError> {
    let sql = format!("{SELECT_EVENTS} {clause}");
    let rows = client.query(sql.as_str(), params).await?;
    let ids: Vec<Uuid> = rows.iter().map(|row| row.get(0)).collect();
    let mut refs = delivery_refs(client, &ids).await?;
    rows.iter()
        .map(|row| {
            let deliveries = refs.remove(&row.get::<_, Uuid>(0)).unwrap_or_default();
            event_record(row, deliveries)
        })
        .collect()
}

/// The deliveries of `events`, by event, each event's in id order.
async fn delivery_refs(
    client: &Client,
    events: &[Uuid],
) -> Result<HashMap<Uuid, Vec<DeliveryRef>>, StoreError> {
    let mut refs: HashMap<Uuid, Vec<DeliveryRef>> = HashMap::new();
    if events.is_empty() {
        return Ok(refs);
    }
    let rows = client
        .query(
            "SELECT event_id, id, endpoint_id FROM deliveries
              WHERE event_id = ANY($1) ORDER BY id",
            &[&events],
        )
        .await?;
    for row in &rows {
        refs.entry(row.get(0)).or_default().push(DeliveryRef {
            id: delivery_id(row.get(1)),
            endpoint_id: row.get(2),
            parked: None,
        });
    }
    Ok(refs)
}

/// The JSON records in column 0 of the rows `sql` finds.
async fn records<T: DeserializeOwned>(
    client: &Client,
    sql: &str,
    params: &[&Param<'_>],
) -> Result<Vec<T>, StoreError> {
    client
        .query(sql, params)
        .await?
        .iter()
        .map(record)
        .collect()
}

/// The JSON record in column 0 of `row`.
fn record<T: DeserializeOwned>(row: &Row) -> Result<T, StoreError> {
    Ok(serde_json::from_str(row.get::<_, &str>(0))?)
}

/// A row of [`SELECT_DELIVERIES`].
fn delivery_record(row: &Row) -> Result<DeliveryRecord, StoreError> {
    let id = delivery_id(row.get(0));
    let event_id: Uuid = row.get(1);
    Ok(DeliveryRecord {
        id,
        event_id: EventId::from_u128(event_id.as_u128()),
        endpoint_id: row.get(2),
        status: delivery_status(id, row.get(3))?,
        created_at: unsigned(row.get::<_, i64>(4)),
        attempt_count: unsigned(row.get::<_, i32>(5)),
        cycle_start: unsigned(row.get::<_, i32>(6)),
        next_attempt_at: row.get::<_, Option<i64>>(7).map(unsigned),
        dead_lettered_at: row.get::<_, Option<i64>>(8).map(unsigned),
        last_error: row.get(9),
        content_type: row.get(10),
        headers: serde_json::from_value(row.get(11))?,
        plugins: serde_json::from_value(row.get(12))?,
        needs_render: row.get(13),
    })
}

/// The status column's text as the record's status.
fn delivery_status(id: DeliveryId, text: &str) -> Result<DeliveryStatus, StoreError> {
    match text {
        "pending" => Ok(DeliveryStatus::Pending),
        "delivered" => Ok(DeliveryStatus::Delivered),
        "dead_lettered" => Ok(DeliveryStatus::DeadLettered),
        "dropped" => Ok(DeliveryStatus::Dropped),
        other => Err(corrupt(format!(
            "delivery {id} has the status `{other}`, none of pending, delivered, \
             dead_lettered, dropped"
        ))),
    }
}

/// A row of [`SELECT_EVENTS`] with the event's deliveries.
fn event_record(row: &Row, deliveries: Vec<DeliveryRef>) -> Result<EventRecord, StoreError> {
    let id: Uuid = row.get(0);
    Ok(EventRecord {
        id: EventId::from_u128(id.as_u128()),
        event_type: row.get(1),
        created_at: unsigned(row.get::<_, i64>(2)),
        data: RawValue::from_string(row.get(3))?,
        idempotency_key: row.get(4),
        fingerprint: row.get(5),
        deliveries,
        dropped: Vec::new(),
    })
}

/// A row of [`SELECT_ATTEMPTS`].
fn attempt_record(row: &Row) -> AttemptRecord {
    AttemptRecord {
        number: unsigned(row.get::<_, i32>(0)),
        at: unsigned(row.get::<_, i64>(1)),
        status_code: row.get::<_, Option<i32>>(2).map(unsigned),
        latency_ms: unsigned(row.get::<_, i64>(3)),
        error: row.get(4),
        response_snippet: row.get(5),
    }
}

fn delivery_id(id: Uuid) -> DeliveryId {
    DeliveryId::from_u128(id.as_u128())
}

/// A time or count as a bigint parameter.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A row count as a `LIMIT` parameter.
fn row_count(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks ids `1..=rows` (the newest is the largest) as the SQL chunks would return them.
    fn walk_ids(
        rows: u128,
        before: Option<u128>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&u128) -> bool,
    ) -> (Vec<u128>, Option<u128>) {
        let pager = Walk { limit, scan, keep };
        pager
            .run(
                before,
                |id| *id,
                |below, count| {
                    Ok((1..=rows)
                        .rev()
                        .filter(|id| *id < below)
                        .take(count)
                        .collect())
                },
            )
            .expect("in-memory rows")
    }

    #[test]
    fn a_page_stops_at_its_limit_and_continues_after_the_last_row_examined() {
        assert_eq!(
            walk_ids(10, None, 3, 100, &|_| true),
            (vec![10, 9, 8], Some(8))
        );
        assert_eq!(
            walk_ids(10, Some(8), 3, 100, &|_| true),
            (vec![7, 6, 5], Some(5))
        );
    }

    #[test]
    fn a_sparse_filter_stops_at_the_scan_bound_across_chunks() {
        let (kept, next) = walk_ids(1_000, None, 10, 300, &|id| id % 500 == 0);
        assert_eq!((kept, next), (vec![1_000], Some(701)));
    }

    #[test]
    fn a_walk_that_runs_out_of_rows_has_no_cursor() {
        assert_eq!(
            walk_ids(5, None, 10, 100, &|_| true),
            (vec![5, 4, 3, 2, 1], None)
        );
        assert_eq!(
            walk_ids(CHUNK as u128, None, 1_000, 1_000, &|_| false),
            (vec![], None)
        );
    }

    #[test]
    fn examining_exactly_the_scan_bound_gives_a_cursor_as_redb_does() {
        assert_eq!(
            walk_ids(5, None, 10, 5, &|_| true),
            (vec![5, 4, 3, 2, 1], Some(1))
        );
    }
}
