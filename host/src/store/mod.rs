//! The durable state: one redb file holding endpoints, events, deliveries, attempts and the
//! due-time index.
//!
//! Only [`crate::queue::writer`] opens write transactions (through [`Tables`]); everything else
//! reads through [`Store`], whose read transactions are MVCC snapshots that never block the
//! writer. Records are JSON so the file stays inspectable. A body that plugins shaped is kept
//! raw in its own table, so updating a delivery's status never rewrites its payload; the default
//! body is not stored at all (it would repeat the event's data) and is rendered again from the
//! event, byte for byte as at publish time, when a retry or recovery needs it ([`body_of`]).

mod api_answers;
mod endpoints;
pub mod postgres;
mod reads;
mod records;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle as _, WriteTransaction,
};

use crate::ids::{DeliveryId, EventId, PaymentId};
use crate::payments::Payment;
use crate::time::UnixMillis;

pub use api_answers::StoredAnswer;
pub(crate) use api_answers::{API_ANSWERS, API_ANSWERS_BY_TIME};
pub(crate) use endpoints::ENDPOINT_CONFIGS;
pub use endpoints::StoredEndpoint;
pub use reads::{DueSource, Reads};
pub use records::{
    AttemptRecord, ChainCursor, DeliveryRecord, DeliveryRef, DeliveryStatus, DroppedRef,
    EndpointState, EventRecord,
};

/// Event id → [`EventRecord`] (JSON).
pub(crate) const EVENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("events");
/// Idempotency key → event id.
pub(crate) const IDEMPOTENCY: TableDefinition<&str, u128> = TableDefinition::new("idempotency");
/// Delivery id → [`DeliveryRecord`] (JSON).
pub(crate) const DELIVERIES: TableDefinition<u128, &[u8]> = TableDefinition::new("deliveries");
/// Delivery id → the exact body bytes every attempt sends, when plugins shaped them.
pub(crate) const BODIES: TableDefinition<u128, &[u8]> = TableDefinition::new("bodies");
/// (delivery id, attempt number) → [`AttemptRecord`] (JSON).
pub(crate) const ATTEMPTS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("attempts");
/// (endpoint, due at, delivery id) for every pending delivery: each endpoint's lane reads its
/// own due deliveries from here, oldest first, as it has room (also after a crash).
pub(crate) const DUE: TableDefinition<(&str, u64, u128), ()> =
    TableDefinition::new("due_by_endpoint");
/// The due-time index before it was keyed by endpoint; migrated at open.
const OLD_DUE: TableDefinition<(u64, u128), ()> = TableDefinition::new("due");
/// (dead-lettered at, delivery id): the dead-letter list, oldest first.
pub(crate) const DEAD_LETTERS: TableDefinition<(u64, u128), ()> =
    TableDefinition::new("dead_letters");
/// Endpoint id → [`EndpointState`] (JSON): what the gateway learned about it (e.g. disabled).
pub(crate) const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");

/// Payment id → [`crate::payments::Payment`] (JSON, transfers embedded).
pub(crate) const PAYMENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("payments");
/// `"{chain}:{address}"` → (latest payment there, when it ended or 0 while open): who an
/// address belongs to, and which addresses the scanner watches.
pub(crate) const ADDRESSES: TableDefinition<&str, (u128, u64)> = TableDefinition::new("addresses");
/// (chain, payment id) of every open payment → (detected, expires at): lets a scan step load
/// only the payments the chain or the clock can move (detected ones, and expired ones).
pub(crate) const OPEN_PAYMENTS: TableDefinition<(&str, u128), (bool, u64)> =
    TableDefinition::new("open_payments");
/// Chain name → [`ChainCursor`] (JSON).
pub(crate) const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("chain_cursors");
/// Named counters (the next watch-only derivation index).
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Named secrets of this gateway (the key that authenticates the plugin compile cache).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The [`META`] entry of the plugin cache key.
const PLUGIN_CACHE_KEY: &str = "plugin_cache_key";

/// The key of an address in [`ADDRESSES`].
pub(crate) fn address_key(chain: &str, address: &alloy::primitives::Address) -> String {
    format!("{chain}:{address:#x}")
}

/// A failure of the store; the message names the operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the redb file {path}: {source}")]
    Open {
        path: String,
        source: Box<redb::DatabaseError>,
    },
    #[error("the redb file {path} is open in another process: stop the gateway first")]
    InUse { path: String },
    #[error("redb: {0}")]
    Redb(#[from] Box<redb::Error>),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("{message}")]
    Config { message: String },
    #[error("{message}")]
    Unavailable { message: String },
    #[error("database schema: {message}")]
    Schema { message: String },
    #[error("postgres: {}", postgres_detail(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

/// What PostgreSQL said: a server error's own message (tokio-postgres prints only "db error"),
/// else the client's.
fn postgres_detail(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                StoreError::Redb(Box::new(error.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);

/// A pending delivery as it is read back for sending.
#[derive(Debug, Clone)]
pub enum PendingDelivery {
    /// Ready: the exact bytes every attempt sends.
    Ready { record: DeliveryRecord, body: Bytes },
    /// A domain event's delivery whose plugin chain has not run yet.
    Unrendered {
        record: DeliveryRecord,
        event: Arc<EventRecord>,
    },
}

/// The body bytes a lane's read may load: at most `limit` in all, except that an unlimited
/// read (`usize::MAX`) takes its first body whatever its size, so one larger than a lane's
/// bound still goes out alone.
pub(crate) struct ByteBudget {
    limit: usize,
    used: usize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Self {
        Self { limit, used: 0 }
    }

    /// Whether `delivery` fits (`first`: nothing is taken yet), counting its body if so.
    pub fn admits(&mut self, delivery: &PendingDelivery, first: bool) -> bool {
        if let PendingDelivery::Ready { body, .. } = delivery {
            let alone = first && self.limit == usize::MAX;
            if self.used.saturating_add(body.len()) > self.limit && !alone {
                return false;
            }
            self.used += body.len();
        }
        true
    }
}

impl PendingDelivery {
    pub fn record(&self) -> &DeliveryRecord {
        match self {
            Self::Ready { record, .. } | Self::Unrendered { record, .. } => record,
        }
    }
}

/// A store error for a record that contradicts another.
pub(crate) fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt(serde::de::Error::custom(message))
}

/// The JSON record at `key` in `table`, if there is one.
pub(crate) fn read_record<'k, K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Option<T>, StoreError> {
    match table.get(key)? {
        Some(raw) => Ok(Some(serde_json::from_slice(raw.value())?)),
        None => Ok(None),
    }
}

/// The bytes every attempt of `record` sends: the stored body when plugins shaped it, else the
/// default body rendered again from the event (same id, type, timestamp and data text, so the
/// same bytes as at publish time).
pub(crate) fn body_of(
    record: &DeliveryRecord,
    bodies: &impl ReadableTable<u128, &'static [u8]>,
    events: &impl ReadableTable<u128, &'static [u8]>,
) -> Result<Bytes, StoreError> {
    if let Some(raw) = bodies.get(record.id.as_u128())? {
        return Ok(Bytes::copy_from_slice(raw.value()));
    }
    let Some(raw) = events.get(record.event_id.as_u128())? else {
        return Err(corrupt(format!(
            "delivery {} has no stored body and its event {} is missing",
            record.id, record.event_id
        )));
    };
    let event: EventRecord = serde_json::from_slice(raw.value())?;
    Ok(crate::events::default_body(
        event.id,
        &event.event_type,
        event.created_at,
        event.data.get(),
    ))
}

/// Read access to the redb file; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) the redb file and makes sure every table exists. redb caches up to
    /// `cache_bytes` of pages in memory.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Open {
                path: path.display().to_string(),
                source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(err))),
            })?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source: Box::new(source),
            })?;
        // The file holds the plugin cache key and every payload: owner-only.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|err| {
            StoreError::Open {
                path: path.display().to_string(),
                source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(err))),
            }
        })?;
        let txn = db.begin_write()?;
        Tables::open(&txn)?;
        {
            let mut meta = txn.open_table(META)?;
            if meta.get(PLUGIN_CACHE_KEY)?.is_none() {
                let key: [u8; 32] = rand::random();
                meta.insert(PLUGIN_CACHE_KEY, key.as_slice())?;
            }
        }
        migrate_due_index(&txn)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The secret that authenticates compiled plugins in the on-disk cache.
    pub fn plugin_cache_key(&self) -> Result<[u8; 32], StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let raw = meta
            .get(PLUGIN_CACHE_KEY)?
            .ok_or_else(|| corrupt("the plugin cache key is missing".to_owned()))?;
        raw.value()
            .try_into()
            .map_err(|_| corrupt("the plugin cache key is not 32 bytes".to_owned()))
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// A delivery and its attempts, oldest attempt first.
    pub fn delivery(
        &self,
        id: DeliveryId,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let deliveries = txn.open_table(DELIVERIES)?;
        let Some(raw) = deliveries.get(id.as_u128())? else {
            return Ok(None);
        };
        let record: DeliveryRecord = serde_json::from_slice(raw.value())?;
        let attempts = txn.open_table(ATTEMPTS)?;
        let mut list = Vec::new();
        for entry in attempts.range((id.as_u128(), 0)..=(id.as_u128(), u32::MAX))? {
            let (_, raw) = entry?;
            list.push(serde_json::from_slice(raw.value())?);
        }
        Ok(Some((record, list)))
    }

    /// Reads the deliveries `ids` that are still pending, with their bodies or events, in
    /// order, handing each to `take` until it returns false.
    fn pending_in(
        &self,
        txn: &redb::ReadTransaction,
        ids: &[DeliveryId],
        mut take: impl FnMut(PendingDelivery) -> bool,
    ) -> Result<(), StoreError> {
        let deliveries = txn.open_table(DELIVERIES)?;
        let bodies = txn.open_table(BODIES)?;
        let events = txn.open_table(EVENTS)?;
        for id in ids {
            let Some(raw) = deliveries.get(id.as_u128())? else {
                continue;
            };
            let record: DeliveryRecord = serde_json::from_slice(raw.value())?;
            if record.status != DeliveryStatus::Pending {
                continue;
            }
            let delivery = if record.needs_render {
                let Some(raw) = events.get(record.event_id.as_u128())? else {
                    return Err(corrupt(format!(
                        "delivery {} waits for its event {}, which is missing",
                        record.id, record.event_id
                    )));
                };
                let event = Arc::new(serde_json::from_slice(raw.value())?);
                PendingDelivery::Unrendered { record, event }
            } else {
                let body = body_of(&record, &bodies, &events)?;
                PendingDelivery::Ready { record, body }
            };
            if !take(delivery) {
                break;
            }
        }
        Ok(())
    }

    /// Up to `limit` deliveries of `endpoint` due by `now` that are not in `skip`, oldest due
    /// first, with bodies of at most `byte_budget` bytes in all (`usize::MAX`: the first body is
    /// loaded whatever its size, so one larger than a lane's bound still goes out alone).
    pub fn due_batch(
        &self,
        endpoint: &str,
        now: UnixMillis,
        skip: &HashSet<DeliveryId>,
        limit: usize,
        byte_budget: usize,
    ) -> Result<DueBatch, StoreError> {
        let txn = self.db.begin_read()?;
        let due = txn.open_table(DUE)?;
        let mut ids = Vec::new();
        let mut batch = DueBatch {
            deliveries: Vec::new(),
            complete: true,
            next_at: None,
        };
        for entry in due.range((endpoint, 0, 0)..=(endpoint, u64::MAX, u128::MAX))? {
            let (key, _) = entry?;
            let (_, at, id) = key.value();
            if at > now {
                batch.next_at = Some(at);
                break;
            }
            let id = DeliveryId::from_u128(id);
            if skip.contains(&id) {
                continue;
            }
            if ids.len() == limit {
                batch.complete = false;
                break;
            }
            ids.push(id);
        }
        drop(due);
        let mut budget = ByteBudget::new(byte_budget);
        self.pending_in(&txn, &ids, |delivery| {
            if !budget.admits(&delivery, batch.deliveries.is_empty()) {
                batch.complete = false;
                return false;
            }
            batch.deliveries.push(delivery);
            true
        })?;
        Ok(batch)
    }

    /// Per endpoint with pending deliveries: how many, and how long (seconds) the oldest due
    /// one has waited at `now`. Reads the whole due index: meant for a metrics scrape.
    pub fn due_summary(&self, now: UnixMillis) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let due = txn.open_table(DUE)?;
        let mut summary: Vec<(String, u64, u64)> = Vec::new();
        for entry in due.iter()? {
            let (key, _) = entry?;
            let (endpoint, at, _) = key.value();
            let waited = now.saturating_sub(at) / 1000;
            match summary.last_mut() {
                Some((last, count, oldest)) if last == endpoint => {
                    *count += 1;
                    *oldest = (*oldest).max(waited);
                }
                _ => summary.push((endpoint.to_owned(), 1, waited)),
            }
        }
        Ok(summary)
    }

    /// The endpoints that have deliveries in the due-time index.
    pub fn due_endpoints(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let due = txn.open_table(DUE)?;
        let mut endpoints: Vec<String> = Vec::new();
        loop {
            let next = match endpoints.last() {
                // The smallest key after every key of the previous endpoint.
                Some(last) => due
                    .range((format!("{last}\0").as_str(), 0, 0)..)?
                    .next()
                    .transpose()?,
                None => due.first()?,
            };
            let Some((key, _)) = next else {
                return Ok(endpoints);
            };
            endpoints.push(key.value().0.to_owned());
        }
    }

    /// One event.
    pub fn event(&self, id: EventId) -> Result<Option<EventRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        read_record(&events, id.as_u128())
    }

    /// What the gateway recorded about each endpoint (e.g. disabled by a 410).
    pub fn endpoint_states(&self) -> Result<HashMap<String, EndpointState>, StoreError> {
        let txn = self.db.begin_read()?;
        let endpoints = txn.open_table(ENDPOINTS)?;
        let mut states = HashMap::new();
        for entry in endpoints.iter()? {
            let (id, raw) = entry?;
            states.insert(id.value().to_owned(), serde_json::from_slice(raw.value())?);
        }
        Ok(states)
    }

    /// One payment.
    pub fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        let txn = self.db.begin_read()?;
        let payments = txn.open_table(PAYMENTS)?;
        read_record(&payments, id.as_u128())
    }

    /// Payments newest first, starting below `before` (a cursor: the last id of the previous
    /// page), keeping those `keep` accepts, at most `limit`.
    pub fn payments(
        &self,
        before: Option<PaymentId>,
        limit: usize,
        keep: impl Fn(&Payment) -> bool,
    ) -> Result<Vec<Payment>, StoreError> {
        let txn = self.db.begin_read()?;
        let payments = txn.open_table(PAYMENTS)?;
        let until = before.map_or(u128::MAX, PaymentId::as_u128);
        let mut list = Vec::new();
        for entry in payments.range(..until)?.rev() {
            let (_, raw) = entry?;
            let payment: Payment = serde_json::from_slice(raw.value())?;
            if keep(&payment) {
                list.push(payment);
                if list.len() == limit {
                    break;
                }
            }
        }
        Ok(list)
    }

    /// Deliveries newest first, below `before`, that `keep` accepts (see [`Store::page`]).
    pub fn deliveries(
        &self,
        before: Option<DeliveryId>,
        limit: usize,
        scan: usize,
        keep: impl Fn(&DeliveryRecord) -> bool,
    ) -> Result<(Vec<DeliveryRecord>, Option<DeliveryId>), StoreError> {
        let (list, next) = self.page(
            DELIVERIES,
            before.map(DeliveryId::as_u128),
            limit,
            scan,
            keep,
        )?;
        Ok((list, next.map(DeliveryId::from_u128)))
    }

    /// Events newest first, below `before`, that `keep` accepts (see [`Store::page`]).
    pub fn events(
        &self,
        before: Option<EventId>,
        limit: usize,
        scan: usize,
        keep: impl Fn(&EventRecord) -> bool,
    ) -> Result<(Vec<EventRecord>, Option<EventId>), StoreError> {
        let (list, next) = self.page(EVENTS, before.map(EventId::as_u128), limit, scan, keep)?;
        Ok((list, next.map(EventId::from_u128)))
    }

    /// An event and the current record of each of its deliveries.
    pub fn event_with_deliveries(
        &self,
        id: EventId,
    ) -> Result<Option<(EventRecord, Vec<DeliveryRecord>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let Some(event) = read_record::<u128, EventRecord>(&events, id.as_u128())? else {
            return Ok(None);
        };
        let deliveries = txn.open_table(DELIVERIES)?;
        let mut records = Vec::with_capacity(event.deliveries.len());
        for delivery in &event.deliveries {
            if let Some(record) = read_record(&deliveries, delivery.id.as_u128())? {
                records.push(record);
            }
        }
        Ok(Some((event, records)))
    }

    /// Records of a table keyed by time-ordered id, newest first, below `before`, that `keep`
    /// accepts, at most `limit`. At most `scan` records are examined, so a sparse filter
    /// cannot make one request read the whole table; the cursor returned continues after the
    /// last record examined (`None`: no more).
    fn page<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<u128, &[u8]>,
        before: Option<u128>,
        limit: usize,
        scan: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<(Vec<T>, Option<u128>), StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(table)?;
        let mut list = Vec::new();
        let mut examined = 0;
        for entry in table.range(..before.unwrap_or(u128::MAX))?.rev() {
            let (key, raw) = entry?;
            let record: T = serde_json::from_slice(raw.value())?;
            examined += 1;
            if keep(&record) {
                list.push(record);
            }
            if list.len() == limit || examined == scan {
                return Ok((list, Some(key.value())));
            }
        }
        Ok((list, None))
    }

    /// Dead-lettered deliveries of `endpoint` parked at or after `since`, oldest first, at most
    /// `limit`; and whether more follow.
    pub fn dead_letters_of(
        &self,
        endpoint: &str,
        since: UnixMillis,
        limit: usize,
    ) -> Result<(Vec<DeliveryId>, bool), StoreError> {
        let txn = self.db.begin_read()?;
        let dead_letters = txn.open_table(DEAD_LETTERS)?;
        let deliveries = txn.open_table(DELIVERIES)?;
        let mut list = Vec::new();
        for entry in dead_letters.range((since, 0)..)? {
            let (key, _) = entry?;
            let id = key.value().1;
            let Some(record) = read_record::<u128, DeliveryRecord>(&deliveries, id)? else {
                continue;
            };
            if record.endpoint_id == endpoint && record.status == DeliveryStatus::DeadLettered {
                if list.len() == limit {
                    return Ok((list, true));
                }
                list.push(record.id);
            }
        }
        Ok((list, false))
    }

    /// The addresses the scanner watches on `chain`: those of open payments and of payments
    /// that ended at or after `ended_since` (late transfers are still recorded).
    pub fn watched_addresses(
        &self,
        chain: &str,
        ended_since: UnixMillis,
    ) -> Result<Vec<alloy::primitives::Address>, StoreError> {
        let txn = self.db.begin_read()?;
        let addresses = txn.open_table(ADDRESSES)?;
        let prefix = format!("{chain}:");
        let mut list = Vec::new();
        for entry in addresses.range(prefix.as_str()..)? {
            let (key, value) = entry?;
            let Some(address) = key.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            let (_, ended_at) = value.value();
            if ended_at == 0 || ended_at >= ended_since {
                let address = address
                    .parse()
                    .map_err(|_| corrupt(format!("address index key `{}`", key.value())))?;
                list.push(address);
            }
        }
        Ok(list)
    }

    /// How far `chain` has been scanned.
    pub fn chain_cursor(&self, chain: &str) -> Result<Option<ChainCursor>, StoreError> {
        let txn = self.db.begin_read()?;
        let cursors = txn.open_table(CURSORS)?;
        read_record(&cursors, chain)
    }

    /// Number of deliveries still waiting to be sent.
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(DUE)?.len()?)
    }
}

/// Compacts the redb file at `path` (the gateway must be stopped); returns its size before
/// and after.
pub fn compact(path: &Path) -> Result<(u64, u64), StoreError> {
    let size = |path: &Path| std::fs::metadata(path).map(|meta| meta.len());
    let open_error = |source: redb::DatabaseError| StoreError::Open {
        path: path.display().to_string(),
        source: Box::new(source),
    };
    let before = size(path)
        .map_err(|err| open_error(redb::DatabaseError::Storage(redb::StorageError::Io(err))))?;
    let mut db = Database::open(path).map_err(|err| match err {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.display().to_string(),
        },
        other => open_error(other),
    })?;
    while db.compact()? {}
    drop(db);
    let after = size(path)
        .map_err(|err| open_error(redb::DatabaseError::Storage(redb::StorageError::Io(err))))?;
    Ok((before, after))
}

/// What a lane read from the due-time index.
#[derive(Debug, Default)]
pub struct DueBatch {
    pub deliveries: Vec<PendingDelivery>,
    /// Every delivery due by then (and not skipped) is in `deliveries`.
    pub complete: bool,
    /// The earliest due time after `now`, if any.
    pub next_at: Option<UnixMillis>,
}

#[cfg(test)]
impl DueBatch {
    /// A read that found nothing due.
    pub fn default_complete() -> Self {
        Self {
            complete: true,
            ..Self::default()
        }
    }
}

/// Moves entries of the old global due-time index into the per-endpoint one.
fn migrate_due_index(txn: &WriteTransaction) -> Result<(), StoreError> {
    let exists = txn
        .list_tables()?
        .any(|table| table.name() == OLD_DUE.name());
    if !exists {
        return Ok(());
    }
    let moved = {
        let old = txn.open_table(OLD_DUE)?;
        let deliveries = txn.open_table(DELIVERIES)?;
        let mut due = txn.open_table(DUE)?;
        let mut moved = 0usize;
        for entry in old.iter()? {
            let (key, _) = entry?;
            let (at, id) = key.value();
            if let Some(record) = read_record::<u128, DeliveryRecord>(&deliveries, id)? {
                due.insert((record.endpoint_id.as_str(), at, id), ())?;
                moved += 1;
            }
        }
        moved
    };
    txn.delete_table(OLD_DUE)?;
    tracing::info!(
        deliveries = moved,
        "moved the due-time index to its per-endpoint form"
    );
    Ok(())
}

/// Every table, opened inside one write transaction.
pub(crate) struct Tables<'txn> {
    pub events: redb::Table<'txn, u128, &'static [u8]>,
    pub idempotency: redb::Table<'txn, &'static str, u128>,
    pub deliveries: redb::Table<'txn, u128, &'static [u8]>,
    pub bodies: redb::Table<'txn, u128, &'static [u8]>,
    pub attempts: redb::Table<'txn, (u128, u32), &'static [u8]>,
    pub due: redb::Table<'txn, (&'static str, u64, u128), ()>,
    pub dead_letters: redb::Table<'txn, (u64, u128), ()>,
    pub endpoints: redb::Table<'txn, &'static str, &'static [u8]>,
    pub endpoint_configs: redb::Table<'txn, &'static str, &'static [u8]>,
    pub api_answers: redb::Table<'txn, &'static str, &'static [u8]>,
    pub api_answers_by_time: redb::Table<'txn, (u64, &'static str), ()>,
    pub payments: redb::Table<'txn, u128, &'static [u8]>,
    pub addresses: redb::Table<'txn, &'static str, (u128, u64)>,
    pub open_payments: redb::Table<'txn, (&'static str, u128), (bool, u64)>,
    pub cursors: redb::Table<'txn, &'static str, &'static [u8]>,
    pub counters: redb::Table<'txn, &'static str, u64>,
    pub meta: redb::Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            events: txn.open_table(EVENTS)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
            deliveries: txn.open_table(DELIVERIES)?,
            bodies: txn.open_table(BODIES)?,
            attempts: txn.open_table(ATTEMPTS)?,
            due: txn.open_table(DUE)?,
            dead_letters: txn.open_table(DEAD_LETTERS)?,
            endpoints: txn.open_table(ENDPOINTS)?,
            endpoint_configs: txn.open_table(ENDPOINT_CONFIGS)?,
            api_answers: txn.open_table(API_ANSWERS)?,
            api_answers_by_time: txn.open_table(API_ANSWERS_BY_TIME)?,
            payments: txn.open_table(PAYMENTS)?,
            addresses: txn.open_table(ADDRESSES)?,
            open_payments: txn.open_table(OPEN_PAYMENTS)?,
            cursors: txn.open_table(CURSORS)?,
            counters: txn.open_table(COUNTERS)?,
            meta: txn.open_table(META)?,
        })
    }

    pub fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        read_record(&self.deliveries, id.as_u128())
    }

    pub fn put_delivery(&mut self, record: &DeliveryRecord) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(record)?;
        self.deliveries
            .insert(record.id.as_u128(), raw.as_slice())?;
        Ok(())
    }

    pub fn event(&self, id: EventId) -> Result<Option<EventRecord>, StoreError> {
        read_record(&self.events, id.as_u128())
    }

    /// Makes `record` due at `at` (moving its due-index entry); the caller stores the record.
    pub fn schedule(
        &mut self,
        record: &mut DeliveryRecord,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        self.unschedule(record)?;
        record.next_attempt_at = Some(at);
        self.due
            .insert((record.endpoint_id.as_str(), at, record.id.as_u128()), ())?;
        Ok(())
    }

    /// Takes `record` out of the due-time index (it is settled, or parked).
    pub fn unschedule(&mut self, record: &mut DeliveryRecord) -> Result<(), StoreError> {
        if let Some(at) = record.next_attempt_at.take() {
            self.due
                .remove((record.endpoint_id.as_str(), at, record.id.as_u128()))?;
        }
        Ok(())
    }

    pub fn put_endpoint_state(
        &mut self,
        id: &str,
        state: &EndpointState,
    ) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(state)?;
        self.endpoints.insert(id, raw.as_slice())?;
        Ok(())
    }
}
