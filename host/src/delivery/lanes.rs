//! Per-endpoint lanes: a bounded queue of due deliveries, `concurrency` workers and a feeder
//! for each endpoint.
//!
//! An endpoint's `concurrency` bounds its requests in flight, and because every endpoint has
//! its own workers, a receiver that hangs ties up only its own lane; the others keep
//! delivering. Memory does not grow with the backlog: a lane *holds* (queued, in flight or
//! rendering) at most [`LANE_LIMIT`] deliveries and [`LANE_BYTES`] of queued bodies. The store's
//! per-endpoint due-time index is the queue of record:
//!
//! * after a commit the writer offers each new delivery to its lane, which takes it while it
//!   has room and is not behind; otherwise the delivery stays in the store and the lane is
//!   marked *behind*;
//! * the lane's feeder reads due deliveries back from the index, oldest first, whenever the
//!   lane is behind (or a retry falls due) and has room — at start-up that is crash recovery;
//! * a held delivery stays held until the writer has committed its attempt (or render), so
//!   the feeder never reads a stale due entry of a delivery in flight and sends it twice.
//!
//! Workers take jobs, send them and report to the queue writer; they never touch the store.
//!
//! Endpoints change at run time: a lane follows its [`Subscriber`], whose endpoint an update
//! swaps (workers pick the new one up at their next delivery, and open a new connection when
//! it changed); a larger `concurrency` starts workers, a smaller one retires the highest ones.
//! A deleted endpoint's lane stays with its subscriber disabled, so what it still holds or
//! reads is dead-lettered with the reason.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::Instrument as _;

use crate::delivery::connection::Connection;
use crate::delivery::{Endpoint, HttpSender, Subscriber, Subscriptions};
use crate::ids::DeliveryId;
use crate::metrics::METRICS;
use crate::plugins::{ChainOutcome, PluginRegistry};
use crate::queue::writer::ready;
use crate::queue::{
    AttemptReport, Decision, QueueHandle, ReadyDelivery, RenderJob, RenderResult, Sink,
};
use crate::store::{DueBatch, DueSource, PendingDelivery, StoreError};
use crate::time::{UnixMillis, now_millis};

/// Most deliveries a lane holds at once: queued, in flight or rendering.
pub const LANE_LIMIT: usize = 4096;

/// Most body bytes a lane keeps queued (one larger body is still taken when the lane is empty).
pub const LANE_BYTES: usize = 8 << 20;

/// Most held deliveries whose plugin chain is still to run: each holds its event in memory.
const RENDER_LIMIT: usize = 128;

/// The feeder reads from the store once this many places are free, so each read is a batch.
const REFILL_ROOM: usize = LANE_LIMIT / 4;

/// Most deliveries one blocking-thread hand-off renders. A plugin that stalls every call makes
/// a chunk take this many wall-clock bounds, on its own endpoint's render slot only.
const RENDER_CHUNK: usize = 32;

/// How long the feeder waits before reading again after the store failed.
const READ_RETRY: Duration = Duration::from_secs(1);

/// One endpoint's lane.
struct Lane {
    endpoint_id: String,
    /// `None` for an endpoint that is no longer configured but still has deliveries due: its
    /// feeder dead-letters them. Set when an endpoint with this id is created.
    subscriber: RwLock<Option<Arc<Subscriber>>>,
    /// Workers running: they have the indices `0..workers`.
    workers: Mutex<usize>,
    state: Mutex<LaneState>,
    /// Wakes a worker: the queue has a job.
    work: Notify,
    /// Wakes the feeder: the lane has room, fell behind, or learned an earlier due time.
    feed: Notify,
    /// Plugin chains of this endpoint running at once. Per lane, so a plugin that stalls every
    /// call (up to the wall-clock bound each) slows only its own endpoint's renders.
    render_slots: Arc<tokio::sync::Semaphore>,
}

struct LaneState {
    queue: VecDeque<ReadyDelivery>,
    queued_bytes: usize,
    /// Every delivery the lane holds, until the writer commits what became of it.
    held: HashSet<DeliveryId>,
    /// Held deliveries whose plugin chain is running; they come back through `offer`.
    rendering: HashSet<DeliveryId>,
    /// The store holds due deliveries the lane has not read.
    behind: bool,
    /// Counts the deliveries left in the store while behind, so a read that started earlier
    /// cannot clear `behind` over one it did not see.
    missed: u64,
    /// The earliest time a delivery in the store falls due (`MAX`: none known).
    wake_at: UnixMillis,
    /// The feeder is reading a snapshot of the store taken after it copied `held`.
    reading: bool,
    /// Deliveries settled while the feeder reads: its snapshot may show them still due, so
    /// they are not taken from that read (their next due time is known from `settled`).
    settled_while_reading: HashSet<DeliveryId>,
}

impl Lane {
    fn new(endpoint_id: String, subscriber: Option<Arc<Subscriber>>) -> Self {
        Self {
            endpoint_id,
            subscriber: RwLock::new(subscriber),
            workers: Mutex::new(0),
            state: Mutex::new(LaneState {
                queue: VecDeque::new(),
                queued_bytes: 0,
                held: HashSet::new(),
                rendering: HashSet::new(),
                // At start-up the store may hold anything: read it first.
                behind: true,
                missed: 0,
                wake_at: UnixMillis::MAX,
                reading: false,
                settled_while_reading: HashSet::new(),
            }),
            work: Notify::new(),
            feed: Notify::new(),
            render_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |cores| cores.get() * 2),
            )),
        }
    }

    fn state(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A delivery in the store falls due at `at`: the feeder reads by then.
    fn wake(&self, at: UnixMillis) {
        let mut state = self.state();
        state.wake_at = state.wake_at.min(at);
        drop(state);
        self.feed.notify_one();
    }

    fn subscriber(&self) -> Option<Arc<Subscriber>> {
        self.subscriber
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn is_configured(&self) -> bool {
        self.subscriber
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Whether worker `index` is beyond the endpoint's `concurrency` and the highest running:
    /// if so it is counted out and must stop. Workers retire from the top, one at a time, so
    /// the running ones keep the indices `0..workers`.
    fn retire(&self, index: usize) -> bool {
        let concurrency = self
            .subscriber()
            .map_or(0, |subscriber| subscriber.endpoint().concurrency);
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if index >= concurrency && index + 1 == *workers {
            *workers -= 1;
            drop(workers);
            // The next one down may be over the limit too.
            self.work.notify_waiters();
            return true;
        }
        false
    }

    /// A committed delivery that is due now: queued if the lane has room, else left in the
    /// store for the feeder. `false` when the lane did not take it.
    fn offer(&self, delivery: ReadyDelivery) -> bool {
        let configured = self.is_configured();
        let mut state = self.state();
        if !configured {
            // No workers here: the feeder reads it back and dead-letters it.
            state.fall_behind();
            drop(state);
            self.feed.notify_one();
            return false;
        }
        if state.rendering.remove(&delivery.id) {
            if state.queued_bytes > 0 && state.queued_bytes + delivery.body.len() > LANE_BYTES {
                // Over the byte bound: the rendered body is in the store; read it back later.
                state.held.remove(&delivery.id);
                state.fall_behind();
                return false;
            }
            state.push(delivery);
        } else if state.held.contains(&delivery.id) {
            // The feeder read it from the store already.
            return true;
        } else if state.has_room_for(delivery.body.len()) {
            state.held.insert(delivery.id);
            state.push(delivery);
        } else {
            state.fall_behind();
            return false;
        }
        drop(state);
        self.work.notify_one();
        true
    }

    /// Whether the lane takes a committed delivery to render now (else the feeder reads it
    /// back later).
    fn take_render(&self, id: DeliveryId) -> Render {
        if !self.is_configured() {
            return Render::NotTaken;
        }
        let mut state = self.state();
        if state.held.contains(&id) {
            return Render::HeldAlready;
        }
        if !state.has_room_for(0) || state.rendering.len() >= RENDER_LIMIT {
            state.fall_behind();
            return Render::NotTaken;
        }
        state.held.insert(id);
        state.rendering.insert(id);
        Render::Now
    }

    /// The writer committed what became of `id`; it is due again at `next_at` if pending.
    fn settled(&self, id: DeliveryId, next_at: Option<UnixMillis>) {
        let mut state = self.state();
        state.held.remove(&id);
        state.rendering.remove(&id);
        if state.reading {
            state.settled_while_reading.insert(id);
        }
        let earlier = next_at.is_some_and(|at| at < state.wake_at);
        if let Some(at) = next_at {
            state.wake_at = state.wake_at.min(at);
        }
        let room = LANE_LIMIT.saturating_sub(state.held.len());
        let wanted = earlier
            || (state.worth_reading(room) && (state.behind || state.wake_at <= now_millis()));
        drop(state);
        if wanted {
            self.feed.notify_one();
        }
    }

    /// The next job, waiting for one; `None` when worker `index` is to retire.
    async fn next(&self, index: usize) -> Option<ReadyDelivery> {
        loop {
            let notified = self.work.notified();
            tokio::pin!(notified);
            // Registered before the checks, so a `notify_waiters` after them is not missed.
            notified.as_mut().enable();
            if self.retire(index) {
                return None;
            }
            {
                let mut state = self.state();
                if let Some(delivery) = state.queue.pop_front() {
                    state.queued_bytes -= delivery.body.len();
                    let more = !state.queue.is_empty();
                    drop(state);
                    if more {
                        self.work.notify_one();
                    }
                    return Some(delivery);
                }
            }
            notified.await;
        }
    }
}

impl LaneState {
    fn has_room_for(&self, bytes: usize) -> bool {
        !self.behind
            && self.held.len() < LANE_LIMIT
            && (self.queued_bytes == 0 || self.queued_bytes + bytes <= LANE_BYTES)
    }

    /// Whether `room` free places make a read from the store worth it: a batch, or anything at
    /// all once the workers have run dry.
    fn worth_reading(&self, room: usize) -> bool {
        self.queued_bytes < LANE_BYTES
            && (room >= REFILL_ROOM || (room > 0 && self.queue.is_empty()))
    }

    fn fall_behind(&mut self) {
        self.behind = true;
        self.missed += 1;
    }

    fn push(&mut self, delivery: ReadyDelivery) {
        self.queued_bytes += delivery.body.len();
        self.queue.push_back(delivery);
    }
}

/// What the dispatcher's background tasks share.
struct Engine {
    due: Arc<dyn DueSource>,
    plugins: Arc<PluginRegistry>,
    /// Set once by [`Dispatcher::start`].
    running: OnceLock<Running>,
    runtime: tokio::runtime::Handle,
}

/// What workers need, known once the writer runs.
struct Running {
    queue: QueueHandle,
    sender: HttpSender,
}

/// Routes committed deliveries to their endpoint's lane; the queue writer's [`Sink`].
pub struct Dispatcher {
    subscriptions: Arc<Subscriptions>,
    lanes: RwLock<HashMap<String, Arc<Lane>>>,
    engine: Arc<Engine>,
}

impl Dispatcher {
    /// Builds a lane per endpoint, and one per endpoint in `due_endpoints` that is gone but
    /// still has deliveries due (they are dead-lettered with a reason); feeders read `due`.
    /// Must run inside the tokio runtime.
    pub fn new(
        due: Arc<dyn DueSource>,
        due_endpoints: Vec<String>,
        subscriptions: Arc<Subscriptions>,
        plugins: Arc<PluginRegistry>,
    ) -> Result<Self, StoreError> {
        let mut lanes: HashMap<String, Arc<Lane>> = subscriptions
            .all()
            .into_iter()
            .map(|subscriber| {
                let id = subscriber.id().to_owned();
                (id.clone(), Arc::new(Lane::new(id, Some(subscriber))))
            })
            .collect();
        for endpoint_id in due_endpoints {
            lanes
                .entry(endpoint_id.clone())
                .or_insert_with(|| Arc::new(Lane::new(endpoint_id, None)));
        }
        Ok(Self {
            subscriptions,
            lanes: RwLock::new(lanes),
            engine: Arc::new(Engine {
                due,
                plugins,
                running: OnceLock::new(),
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }

    /// Starts every lane's feeder and workers; attempts are reported to `queue`. The feeders'
    /// first reads recover whatever the previous run left pending.
    pub fn start(&self, queue: QueueHandle, sender: HttpSender) {
        if self.engine.running.set(Running { queue, sender }).is_err() {
            return;
        }
        let lanes: Vec<Arc<Lane>> = self.lanes().values().cloned().collect();
        for lane in lanes {
            tokio::spawn(feed(lane.clone(), self.engine.clone()));
            self.engine.staff(&lane);
        }
    }

    pub fn subscriptions(&self) -> &Arc<Subscriptions> {
        &self.subscriptions
    }

    fn lanes(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Lane>>> {
        self.lanes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn lane(&self, endpoint_id: &str) -> Option<Arc<Lane>> {
        self.lanes().get(endpoint_id).cloned()
    }

    /// Another node left due work for the endpoints `payload` names (one per line; `*`: any
    /// endpoint): their feeders look now.
    pub fn announced(&self, payload: &str) {
        let lanes: Vec<Arc<Lane>> = if payload == "*" {
            self.lanes().values().cloned().collect()
        } else {
            payload.lines().filter_map(|id| self.lane(id)).collect()
        };
        let now = now_millis();
        for lane in lanes {
            lane.wake(now);
        }
    }

    /// An endpoint was created, updated or deleted (its subscriber disabled): its lane
    /// follows. A new id gets a lane with a feeder; the workers match `concurrency`.
    pub fn endpoint_updated(&self, subscriber: &Arc<Subscriber>) {
        let id = subscriber.id();
        let lane = {
            let mut lanes = self.lanes.write().unwrap_or_else(PoisonError::into_inner);
            match lanes.get(id) {
                Some(lane) => {
                    *lane
                        .subscriber
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Some(subscriber.clone());
                    lane.clone()
                }
                None => {
                    let lane = Arc::new(Lane::new(id.to_owned(), Some(subscriber.clone())));
                    lanes.insert(id.to_owned(), lane.clone());
                    if self.engine.running.get().is_some() {
                        self.engine
                            .runtime
                            .spawn(feed(lane.clone(), self.engine.clone()));
                    }
                    lane
                }
            }
        };
        self.engine.staff(&lane);
        // Workers over a lowered `concurrency` retire; a waiting one checks now.
        lane.work.notify_waiters();
        lane.feed.notify_one();
    }
}

/// What a lane made of a committed delivery that needs its plugin chain run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    /// The lane renders it now.
    Now,
    /// The feeder read it from the store already; the lane holds it.
    HeldAlready,
    /// Full or behind: it stays in the store for whoever reads next.
    NotTaken,
}

impl Sink for Dispatcher {
    fn deliver_now(&self, delivery: ReadyDelivery) -> bool {
        // Every committed delivery has a lane: a lane exists for each endpoint, and one for
        // each removed endpoint with deliveries in the store at start-up.
        match self.lane(&delivery.endpoint_id) {
            Some(lane) => lane.offer(delivery),
            None => false,
        }
    }

    fn settled(&self, endpoint_id: &str, id: DeliveryId, next_at: Option<UnixMillis>) {
        if let Some(lane) = self.lane(endpoint_id) {
            lane.settled(id, next_at);
        }
    }

    fn wake(&self, endpoint_id: &str, at: UnixMillis) {
        if let Some(lane) = self.lane(endpoint_id) {
            lane.wake(at);
        }
    }

    fn endpoint_changed(&self, endpoint_id: &str, disabled_reason: Option<String>) {
        if let Some(subscriber) = self.subscriptions.get(endpoint_id) {
            match &disabled_reason {
                Some(reason) => tracing::warn!(endpoint_id, %reason, "endpoint disabled"),
                None => tracing::info!(endpoint_id, "endpoint enabled"),
            }
            subscriber.set_disabled(disabled_reason);
        }
    }

    fn render(&self, jobs: Vec<RenderJob>) -> Vec<DeliveryId> {
        let mut by_lane: HashMap<String, (Arc<Lane>, Vec<RenderJob>)> = HashMap::new();
        let mut not_taken = Vec::new();
        for job in jobs {
            let Some(lane) = self.lane(&job.endpoint_id) else {
                not_taken.push(job.delivery_id);
                continue;
            };
            match lane.take_render(job.delivery_id) {
                Render::Now => by_lane
                    .entry(job.endpoint_id.clone())
                    .or_insert_with(|| (lane, Vec::new()))
                    .1
                    .push(job),
                Render::HeldAlready => {}
                Render::NotTaken => not_taken.push(job.delivery_id),
            }
        }
        for (lane, jobs) in by_lane.into_values() {
            self.engine.render(&lane, jobs);
        }
        not_taken
    }
}

impl Engine {
    /// Starts workers until `lane` has as many as its endpoint's `concurrency`.
    fn staff(&self, lane: &Arc<Lane>) {
        let Some(running) = self.running.get() else {
            return;
        };
        let Some(subscriber) = lane.subscriber() else {
            return;
        };
        let concurrency = subscriber.endpoint().concurrency;
        let mut workers = lane.workers.lock().unwrap_or_else(PoisonError::into_inner);
        while *workers < concurrency {
            self.runtime.spawn(work(
                lane.clone(),
                *workers,
                running.queue.clone(),
                running.sender.clone(),
            ));
            *workers += 1;
        }
    }

    /// Runs the endpoint's plugin chain for held deliveries and records the outcomes, in
    /// chunks: one blocking-thread hand-off and one writer command per chunk.
    fn render(&self, lane: &Arc<Lane>, jobs: Vec<RenderJob>) {
        let Some(running) = self.running.get() else {
            return;
        };
        let queue = &running.queue;
        let Some(subscriber) = lane.subscriber() else {
            return;
        };
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk: Vec<RenderJob> = jobs.by_ref().take(RENDER_CHUNK).collect();
            let queue = queue.clone();
            let endpoint = subscriber.endpoint();
            let plugins = self.plugins.clone();
            let slots = lane.render_slots.clone();
            self.runtime.spawn(async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                let ids: Vec<DeliveryId> = chunk.iter().map(|job| job.delivery_id).collect();
                let endpoint_id = endpoint.id.clone();
                // Plugin calls are CPU work with their own limits: never on an async worker.
                let results = tokio::task::spawn_blocking(move || {
                    chunk
                        .into_iter()
                        .map(|job| RenderResult {
                            outcome: crate::events::rerender(
                                &job.event,
                                &endpoint,
                                &plugins,
                                now_millis(),
                            ),
                            delivery_id: job.delivery_id,
                            endpoint_id: job.endpoint_id,
                        })
                        .collect::<Vec<_>>()
                })
                .await;
                let results = match results {
                    Ok(results) => results,
                    Err(err) => ids
                        .into_iter()
                        .map(|delivery_id| RenderResult {
                            delivery_id,
                            endpoint_id: endpoint_id.clone(),
                            outcome: ChainOutcome::Failed {
                                by: "host".to_owned(),
                                reason: format!("the plugin chain panicked: {err}"),
                            },
                        })
                        .collect(),
                };
                let _ = queue.record_renders(results).await;
            });
        }
    }
}

/// A lane's feeder: reads due deliveries back from the store while the lane is behind or a
/// retry falls due, as far as the lane has room.
async fn feed(lane: Arc<Lane>, engine: Arc<Engine>) {
    let mut orphans_reported = false;
    loop {
        let notified = lane.feed.notified();
        let now = now_millis();
        let plan = match lane.plan_read(now) {
            Ok(plan) => plan,
            Err(wake_at) => {
                let sleep = Duration::from_millis(wake_at.saturating_sub(now).min(3_600_000));
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep(sleep) => {}
                }
                continue;
            }
        };
        let due = engine.due.clone();
        let endpoint_id = lane.endpoint_id.clone();
        let missed = plan.missed;
        let read = tokio::task::spawn_blocking(move || {
            due.due_batch(&endpoint_id, now, &plan.skip, plan.room, plan.bytes)
        })
        .await;
        let batch = match read {
            Ok(Ok(batch)) => batch,
            failed => {
                let error = match failed {
                    Ok(Err(err)) => err.to_string(),
                    Err(err) => format!("the read panicked: {err}"),
                    Ok(Ok(_)) => unreachable!("handled above"),
                };
                tracing::error!(endpoint_id = %lane.endpoint_id, %error,
                    "cannot read due deliveries; will try again");
                lane.read_failed(now);
                tokio::time::sleep(READ_RETRY).await;
                continue;
            }
        };
        let Accepted {
            renders,
            orphans: taken,
            untaken,
        } = lane.accept(batch, missed);
        lane.work.notify_one();
        if !untaken.is_empty() {
            let due = engine.due.clone();
            // Claimed on PostgreSQL but not taken: give them up now, not when the lease ends.
            let _ = tokio::task::spawn_blocking(move || due.release(untaken)).await;
        }
        if !renders.is_empty() {
            engine.render(&lane, renders);
        }
        if !taken.is_empty() {
            if !orphans_reported {
                orphans_reported = true;
                tracing::warn!(endpoint_id = %lane.endpoint_id,
                    "deliveries to an endpoint that is no longer configured are dead-lettered; add it back and replay them");
            }
            dead_letter_orphans(&lane.endpoint_id, taken, &engine).await;
        }
    }
}

/// What a lane took from a read.
#[derive(Debug, Default)]
struct Accepted {
    /// Held deliveries whose plugin chain is to run.
    renders: Vec<RenderJob>,
    /// Held deliveries of an endpoint that is no longer configured, to dead-letter.
    orphans: Vec<DeliveryId>,
    /// Read but not taken (held already elsewhere in the lane's view, settled during the
    /// read, or over the render limit): for the source to release.
    untaken: Vec<DeliveryId>,
}

/// What the feeder reads next.
struct ReadPlan {
    room: usize,
    bytes: usize,
    missed: u64,
    skip: HashSet<DeliveryId>,
}

impl Lane {
    /// Starts a read of the store if the lane is behind (or a retry is due) and has room;
    /// otherwise says until when to sleep (`MAX`: until woken).
    fn plan_read(&self, now: UnixMillis) -> Result<ReadPlan, UnixMillis> {
        let mut state = self.state();
        let room = LANE_LIMIT.saturating_sub(state.held.len());
        let due = state.behind || state.wake_at <= now;
        if !due {
            return Err(state.wake_at);
        }
        if !state.worth_reading(room) {
            // Full: a settled delivery wakes the feeder.
            return Err(UnixMillis::MAX);
        }
        // Everything due by `now` is read; later due times are learned again.
        state.wake_at = UnixMillis::MAX;
        state.reading = true;
        state.settled_while_reading.clear();
        Ok(ReadPlan {
            room,
            bytes: if state.queued_bytes == 0 {
                usize::MAX
            } else {
                LANE_BYTES.saturating_sub(state.queued_bytes)
            },
            missed: state.missed,
            skip: state.held.clone(),
        })
    }

    fn read_failed(&self, now: UnixMillis) {
        let mut state = self.state();
        state.reading = false;
        state.wake_at = now;
    }

    /// Takes what a read found: queues ready deliveries, returns the ones to render and (for
    /// an unconfigured endpoint) the ones to dead-letter. Skips what the lane came to hold
    /// during the read and what was settled during it (the snapshot predates its outcome).
    fn accept(&self, batch: DueBatch, missed: u64) -> Accepted {
        let mut accepted = Accepted::default();
        let configured = self.is_configured();
        let mut state = self.state();
        state.reading = false;
        let settled = std::mem::take(&mut state.settled_while_reading);
        let mut complete = batch.complete;
        if let Some(at) = batch.next_at {
            state.wake_at = state.wake_at.min(at);
        }
        for delivery in batch.deliveries {
            let (record, unrendered) = match &delivery {
                PendingDelivery::Ready { record, .. } => (record, false),
                PendingDelivery::Unrendered { record, .. } => (record, true),
            };
            if state.held.contains(&record.id) {
                // Held already: a newer claim of it is still this lane's.
                continue;
            }
            if settled.contains(&record.id) {
                accepted.untaken.push(record.id);
                continue;
            }
            if unrendered && configured && state.rendering.len() >= RENDER_LIMIT {
                complete = false;
                accepted.untaken.push(record.id);
                continue;
            }
            state.held.insert(record.id);
            match delivery {
                PendingDelivery::Ready { record, .. }
                | PendingDelivery::Unrendered { record, .. }
                    if !configured =>
                {
                    accepted.orphans.push(record.id);
                }
                PendingDelivery::Ready { record, body } => state.push(ready(&record, body)),
                PendingDelivery::Unrendered { record, event } => {
                    state.rendering.insert(record.id);
                    accepted.renders.push(RenderJob {
                        delivery_id: record.id,
                        endpoint_id: record.endpoint_id,
                        event,
                    });
                }
            }
        }
        if !complete {
            state.behind = true;
        } else if missed == state.missed {
            state.behind = false;
        }
        accepted
    }
}

/// Settles deliveries whose endpoint is gone from the configuration.
async fn dead_letter_orphans(endpoint_id: &str, ids: Vec<DeliveryId>, engine: &Engine) {
    let Some(Running { queue, .. }) = engine.running.get() else {
        return;
    };
    let reason =
        format!("endpoint `{endpoint_id}` is no longer configured; add it back and replay");
    for id in ids {
        let report = AttemptReport {
            delivery_id: id,
            endpoint_id: endpoint_id.to_owned(),
            attempt: None,
            decision: Decision::DeadLetter {
                reason: reason.clone(),
            },
        };
        if queue.record_attempt(report).await.is_err() {
            return;
        }
    }
}

/// Worker `index` of a lane: take a due delivery, attempt it with the endpoint in force,
/// report the outcome; stop when retired (the endpoint's `concurrency` went below `index`).
async fn work(lane: Arc<Lane>, index: usize, queue: QueueHandle, sender: HttpSender) {
    let mut connection = sender.connection();
    let mut connected_to: Option<Arc<Endpoint>> = None;
    while let Some(delivery) = lane.next(index).await {
        let Some(subscriber) = lane.subscriber() else {
            // Not reachable: a lane's subscriber is never taken away once set.
            return;
        };
        let endpoint = subscriber.endpoint();
        if connected_to
            .as_ref()
            .is_some_and(|previous| !Arc::ptr_eq(previous, &endpoint))
        {
            // The endpoint was updated (its url may have changed): start afresh.
            connection = sender.connection();
        }
        connected_to = Some(endpoint.clone());
        let span = tracing::debug_span!("attempt",
            delivery_id = %delivery.id,
            event_id = %delivery.event_id,
            endpoint_id = %endpoint.id,
            attempt = delivery.attempt_number);
        let report = attempt(&subscriber, &endpoint, &sender, &mut connection, delivery)
            .instrument(span)
            .await;
        if queue.record_attempt(report).await.is_err() {
            return;
        }
    }
}

async fn attempt(
    subscriber: &Subscriber,
    endpoint: &Endpoint,
    sender: &HttpSender,
    connection: &mut Connection,
    delivery: ReadyDelivery,
) -> AttemptReport {
    if let Some(reason) = subscriber.disabled_reason() {
        METRICS.attempt(&endpoint.id, "disabled", None);
        return AttemptReport {
            delivery_id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            attempt: None,
            decision: Decision::DeadLetter {
                reason: format!("not sent: {reason}"),
            },
        };
    }
    let (record, result) = sender.attempt(endpoint, &delivery, connection).await;
    let decision = endpoint.policy.decide(
        &result,
        delivery.attempt_in_cycle,
        now_millis(),
        rand::random::<f64>(),
    );
    let outcome = match &decision {
        Decision::Delivered => "delivered",
        Decision::Retry { .. } => "retry",
        Decision::DeadLetter { .. } => "dead_lettered",
        Decision::DisableEndpoint { .. } => "endpoint_gone",
    };
    METRICS.attempt(
        &endpoint.id,
        outcome,
        Some(Duration::from_millis(record.latency_ms)),
    );
    match &decision {
        Decision::Delivered => tracing::debug!(latency_ms = record.latency_ms, "delivered"),
        Decision::Retry { at } => tracing::info!(
            error = record.error.as_deref().unwrap_or_default(),
            retry_in_ms = at.saturating_sub(now_millis()),
            "attempt failed; will retry"
        ),
        Decision::DeadLetter { reason } | Decision::DisableEndpoint { reason } => {
            tracing::warn!(%reason, "delivery dead-lettered")
        }
    }
    AttemptReport {
        delivery_id: delivery.id,
        endpoint_id: delivery.endpoint_id,
        attempt: Some(record),
        decision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::delivery::Endpoint;
    use crate::ids::EventId;
    use crate::store::DeliveryRecord;

    fn lane() -> Lane {
        let config = Config::from_toml(
            "[egress]\nallowed_networks = [\"127.0.0.1\"]\n\
             [server]\nadmin_token = \"a-token-long-enough-for-tests\"\n\
             [[endpoints]]\nid = \"shop\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n",
            std::path::Path::new("test.toml"),
            |_| None,
        )
        .unwrap();
        let endpoint = Endpoint::from_config(&config.endpoints[0], &config.delivery).unwrap();
        let record = crate::store::StoredEndpoint {
            config: config.endpoints[0].clone(),
            from_config: true,
            created_at: 0,
            updated_at: 0,
        };
        let subscriber = Arc::new(Subscriber::new(Arc::new(endpoint), Arc::new(record), None));
        let lane = Lane::new("shop".to_owned(), Some(subscriber));
        // A fresh lane reads the store first; start from "caught up".
        lane.accept(DueBatch::default_complete(), 0);
        lane
    }

    fn record() -> DeliveryRecord {
        DeliveryRecord::pending(DeliveryId::new(), EventId::new(), "shop".to_owned(), 1)
    }

    fn job(record: &DeliveryRecord, bytes: usize) -> ReadyDelivery {
        ready(record, bytes::Bytes::from(vec![b'x'; bytes]))
    }

    fn found(records: &[&DeliveryRecord]) -> DueBatch {
        DueBatch {
            deliveries: records
                .iter()
                .map(|record| PendingDelivery::Ready {
                    record: (*record).clone(),
                    body: bytes::Bytes::from_static(b"{}"),
                })
                .collect(),
            complete: true,
            next_at: None,
        }
    }

    /// Lets a retry fall due, so the feeder has a reason to read.
    fn make_due(lane: &Lane) {
        lane.settled(DeliveryId::new(), Some(0));
    }

    #[test]
    fn a_delivery_settled_while_the_feeder_reads_is_not_taken_from_that_read() {
        let lane = lane();
        make_due(&lane);
        let plan = lane.plan_read(now_millis()).expect("due and with room");
        // During the read: the writer offers X, a worker sends it, its outcome is committed.
        let x = record();
        lane.offer(job(&x, 2));
        assert!(lane.state().queue.pop_front().is_some());
        lane.settled(x.id, None);
        // The snapshot still shows X due.
        let Accepted {
            renders,
            orphans: taken,
            untaken,
        } = lane.accept(found(&[&x]), plan.missed);
        assert!(renders.is_empty() && taken.is_empty());
        assert_eq!(untaken, [x.id], "a claim of X must be given back");
        let state = lane.state();
        assert!(state.queue.is_empty(), "X would be sent a second time");
        assert!(!state.held.contains(&x.id));
    }

    #[test]
    fn a_delivery_offered_while_the_feeder_reads_is_queued_once() {
        let lane = lane();
        make_due(&lane);
        let plan = lane.plan_read(now_millis()).unwrap();
        let x = record();
        lane.offer(job(&x, 2));
        lane.accept(found(&[&x]), plan.missed);
        assert_eq!(lane.state().queue.len(), 1);
    }

    #[test]
    fn a_full_lane_leaves_deliveries_in_the_store_until_it_has_room() {
        let lane = lane();
        let held: Vec<DeliveryRecord> = (0..LANE_LIMIT).map(|_| record()).collect();
        for record in &held {
            assert!(lane.offer(job(record, 2)));
        }
        let late = record();
        assert!(
            !lane.offer(job(&late, 2)),
            "a full lane says it left the delivery, so a shared store can release it"
        );
        assert_eq!(lane.take_render(late.id), Render::NotTaken);
        {
            let state = lane.state();
            assert_eq!(state.queue.len(), LANE_LIMIT);
            assert!(state.behind && !state.held.contains(&late.id));
        }
        assert_eq!(lane.plan_read(now_millis()).err(), Some(UnixMillis::MAX));
        // Workers take and settle a batch's worth; then the feeder reads.
        for record in &held[..REFILL_ROOM] {
            lane.state().queue.pop_front();
            lane.settled(record.id, None);
        }
        let plan = lane.plan_read(now_millis()).expect("room for a batch");
        assert_eq!(plan.room, REFILL_ROOM);
        lane.accept(found(&[&late]), plan.missed);
        assert!(lane.state().held.contains(&late.id));
        // While it was full, new deliveries waited in the store, so the lane is caught up
        // only if nothing was missed since the plan.
        assert!(!lane.state().behind);
    }

    #[test]
    fn queued_bodies_are_bounded_in_bytes() {
        let lane = lane();
        let big = LANE_BYTES / 4;
        for _ in 0..4 {
            lane.offer(job(&record(), big));
        }
        let over = record();
        assert!(!lane.offer(job(&over, big)));
        let state = lane.state();
        assert_eq!(state.queued_bytes, LANE_BYTES);
        assert!(state.behind && !state.held.contains(&over.id));
        drop(state);
        assert!(
            lane.plan_read(now_millis()).is_err(),
            "no read while the bytes are full"
        );
    }

    #[test]
    fn a_delivery_the_lane_holds_already_counts_as_taken() {
        let lane = lane();
        let x = record();
        assert!(lane.offer(job(&x, 2)));
        assert!(lane.offer(job(&x, 2)), "held once, and taken");
        assert_eq!(lane.state().queue.len(), 1);
        assert_eq!(lane.take_render(x.id), Render::HeldAlready);
        let y = record();
        assert_eq!(lane.take_render(y.id), Render::Now);
        assert!(lane.offer(job(&y, 2)), "the rendered body joins the queue");
        assert_eq!(lane.state().queue.len(), 2);
    }

    #[test]
    fn a_settled_delivery_is_taken_again_when_replayed() {
        let lane = lane();
        let x = record();
        lane.offer(job(&x, 2));
        lane.state().queue.pop_front();
        // The writer settles before it offers (see queue::writer).
        lane.settled(x.id, None);
        lane.offer(job(&x, 2));
        assert_eq!(lane.state().queue.len(), 1);
    }
}
