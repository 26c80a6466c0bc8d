//! The durable delivery queue: every state change goes through one writer.
//!
//! Callers (the admin API publishing events, delivery workers reporting attempts, operators
//! replaying) send a [`Command`] over a bounded channel to the writer thread
//! ([`writer`]), which drains whatever has queued up — up to a few thousand commands — into
//! one redb write transaction, commits it with one fsync, and only then answers each caller and
//! hands the committed work on through [`Sink`]. That is the transactional outbox: a caller that
//! hears "committed" can rely on the event being delivered, and nothing is dispatched that a
//! crash could still roll back. Under load the batch grows by itself (commands queue while the
//! previous commit syncs), so a lone event never waits for company.
//!
//! The open end of the writer is [`UnitOfWork`]: a piece of domain logic (publishing through
//! the API, creating a payment, recording a scanned block range) that reads and writes through
//! a [`Txn`] and emits events through the same outbox, inside the batch's one transaction, and
//! is answered after the commit. `Txn` is the store seam: the redb writer implements it today,
//! and nothing behind it (payments, chain, events) names a redb type. A business refusal is part
//! of a unit's output, never an error; an `Err` means the store itself failed, and aborts the
//! batch for every caller in it.

pub mod idempotent;
pub mod redb_txn;
pub mod retention;
pub mod txn;
pub mod writer;

pub use txn::{Emit, Txn};

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::ids::{DeliveryId, EventId};
use crate::plugins::{ChainOutcome, Rendered};
use crate::store::{
    AttemptRecord, DeliveryRecord, DeliveryRef, DroppedRef, EventRecord, StoreError,
};
use crate::time::UnixMillis;

/// The queue could not take the command; the message says why.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    #[error("the queue writer has stopped; the gateway is shutting down")]
    Closed,
    #[error("the store failed to commit: {0}")]
    Store(Arc<StoreError>),
}

/// An event ready to be committed, with its fan-out already decided.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: String,
    pub created_at: UnixMillis,
    /// The data object as the publisher sent it.
    pub data: Box<serde_json::value::RawValue>,
    pub idempotency_key: Option<String>,
    pub fingerprint: String,
    pub deliveries: Vec<NewDelivery>,
}

impl NewEvent {
    /// The event's deliveries as its record lists them.
    pub fn delivery_refs(&self) -> Vec<DeliveryRef> {
        self.deliveries
            .iter()
            .map(|delivery| DeliveryRef {
                id: delivery.id,
                endpoint_id: delivery.endpoint_id.clone(),
                parked: None,
            })
            .collect()
    }

    /// The pending record of `delivery`, one of this event's: with how to send its payload
    /// when that is decided, or waiting for its endpoint's plugin chain.
    pub fn pending_record(&self, delivery: &NewDelivery) -> DeliveryRecord {
        let mut record = DeliveryRecord::pending(
            delivery.id,
            self.id,
            delivery.endpoint_id.clone(),
            self.created_at,
        );
        match &delivery.content {
            DeliveryContent::Ready(payload) => {
                record.content_type = Some(payload.content_type.clone());
                record.headers = payload.headers.clone();
                record.plugins = payload.plugins.clone();
            }
            DeliveryContent::Render => record.needs_render = true,
        }
        record
    }

    /// The record the store keeps of the event.
    pub fn record(&self) -> EventRecord {
        EventRecord {
            id: self.id,
            event_type: self.event_type.clone(),
            created_at: self.created_at,
            data: self.data.clone(),
            idempotency_key: self.idempotency_key.clone(),
            fingerprint: self.fingerprint.clone(),
            deliveries: self.delivery_refs(),
            dropped: Vec::new(),
        }
    }
}

/// One delivery of a new event: the endpoint and what it will receive.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub endpoint_id: String,
    pub content: DeliveryContent,
}

/// What a new delivery will send.
#[derive(Debug, Clone)]
pub enum DeliveryContent {
    /// The exact body and headers every attempt sends.
    Ready(Rendered),
    /// The endpoint's plugin chain renders it after the commit.
    Render,
}

/// What the queue knows about a committed event, as the API reports it.
#[derive(Debug, Clone)]
pub struct EventSummary {
    pub id: EventId,
    pub event_type: String,
    pub created_at: UnixMillis,
    pub deliveries: Vec<DeliveryRef>,
    pub dropped: Vec<DroppedRef>,
}

/// The result of publishing one event.
#[derive(Debug, Clone)]
pub enum PublishOutcome {
    /// Committed now.
    Created(EventSummary),
    /// The idempotency key was seen before with the same content: the original event.
    Replayed(EventSummary),
    /// The idempotency key was seen before with different content; nothing was written.
    Conflict { key: String },
}

/// A committed delivery that is due now, handed to the delivery workers.
#[derive(Debug, Clone)]
pub struct ReadyDelivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub endpoint_id: String,
    /// The number of the attempt about to be made, over the delivery's life (1-based).
    pub attempt_number: u32,
    /// The position of that attempt in the current retry cycle (1-based).
    pub attempt_in_cycle: u32,
    pub body: Bytes,
    pub content_type: String,
    /// Extra headers from plugins.
    pub headers: Vec<(String, String)>,
}

/// What an attempt decided for its delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Delivered,
    Retry {
        at: UnixMillis,
    },
    DeadLetter {
        reason: String,
    },
    /// The receiver answered 410 Gone: disable the endpoint and dead-letter the delivery.
    DisableEndpoint {
        reason: String,
    },
}

/// The result of one attempt, for the writer to record.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub delivery_id: DeliveryId,
    pub endpoint_id: String,
    /// The HTTP attempt; `None` when the delivery was settled without sending (e.g. the
    /// endpoint is disabled).
    pub attempt: Option<AttemptRecord>,
    pub decision: Decision,
}

/// The result of a retry-now request.
#[derive(Debug, Clone)]
pub enum RetryNowOutcome {
    /// Its next attempt is due now.
    Scheduled,
    /// It was due already (or in flight).
    AlreadyDue,
    /// It is not pending: replay it instead.
    NotPending,
    NotFound,
}

/// The result of a replay request.
#[derive(Debug, Clone)]
pub enum ReplayOutcome {
    Scheduled,
    /// Parked without a body and no payload was given: the plugin chain must run first.
    NeedsRender,
    NotFound,
    StillPending,
    EndpointDisabled,
}

/// Domain logic that runs inside one write transaction of the writer.
///
/// `apply` may read and write anything [`Txn`] offers and emit events; everything it wrote
/// commits together with the rest of the batch, or not at all. It runs on the writer thread
/// while other callers wait for the commit, so it must be quick: no I/O, no plugin calls.
pub trait UnitOfWork: Send + 'static {
    /// What the caller hears after the commit, refusals included.
    type Output: Send + 'static;

    fn apply(&mut self, txn: &mut dyn Txn) -> Result<Self::Output, StoreError>;
}

/// A unit of work with its reply channel, as the writer holds it.
pub(crate) trait Job: Send {
    fn apply(&mut self, txn: &mut dyn Txn) -> Result<(), StoreError>;
    /// Answers the caller once the batch committed (or failed).
    fn answer(self: Box<Self>, committed: Result<(), QueueError>);
}

struct Pending<W: UnitOfWork> {
    work: W,
    output: Option<W::Output>,
    reply: oneshot::Sender<Result<W::Output, QueueError>>,
}

impl<W: UnitOfWork> Job for Pending<W> {
    fn apply(&mut self, txn: &mut dyn Txn) -> Result<(), StoreError> {
        self.output = Some(self.work.apply(txn)?);
        Ok(())
    }

    fn answer(self: Box<Self>, committed: Result<(), QueueError>) {
        let Self { output, reply, .. } = *self;
        let result = committed.map(|()| output.expect("a committed unit of work has its output"));
        // A caller that went away no longer needs the answer; the commit stands.
        let _ = reply.send(result);
    }
}

/// Publishing through the API: events whose fan-out and bodies are already decided.
struct PublishWork(Vec<NewEvent>);

impl UnitOfWork for PublishWork {
    type Output = Vec<PublishOutcome>;

    fn apply(&mut self, txn: &mut dyn Txn) -> Result<Self::Output, StoreError> {
        txn.publish_all(&self.0)
    }
}

/// A delivery of a committed event whose endpoint's plugin chain has not run yet.
#[derive(Debug, Clone)]
pub struct RenderJob {
    pub delivery_id: DeliveryId,
    pub endpoint_id: String,
    pub event: Arc<EventRecord>,
}

/// What an endpoint's plugin chain made of a delivery's event.
#[derive(Debug)]
pub struct RenderResult {
    pub delivery_id: DeliveryId,
    pub endpoint_id: String,
    pub outcome: ChainOutcome,
}

/// One request to the writer.
pub(crate) enum Command {
    Work(Box<dyn Job>),
    RecordAttempt(AttemptReport),
    /// Plugin chains ran for deliveries of committed events.
    Rendered(Vec<RenderResult>),
    Replay {
        id: DeliveryId,
        /// A freshly rendered payload for a delivery parked by a plugin failure.
        payload: Option<Rendered>,
        reply: oneshot::Sender<Result<ReplayOutcome, QueueError>>,
    },
    SetEndpointEnabled {
        endpoint_id: String,
        enabled: bool,
        reason: Option<String>,
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
    /// Makes a pending delivery waiting for a later retry due now.
    RetryNow {
        id: DeliveryId,
        reply: oneshot::Sender<Result<RetryNowOutcome, QueueError>>,
    },
    /// One step of the retention sweep, reading events from `cursor` on.
    Sweep {
        retention: retention::Retention,
        cursor: u128,
        reply: oneshot::Sender<Result<retention::SweepStep, QueueError>>,
    },
}

/// Where committed work goes next; implemented by the delivery engine.
pub trait Sink: Send + Sync + 'static {
    /// A delivery that is due now (freshly published or replayed); `false` when its lane
    /// did not take it (full or behind), so it stays in the store for whoever reads next.
    fn deliver_now(&self, delivery: ReadyDelivery) -> bool;
    /// An attempt or render of a delivery was committed (or failed to commit): its lane no
    /// longer holds it, and it is due again at `next_at` if it is still pending.
    fn settled(&self, endpoint_id: &str, id: DeliveryId, next_at: Option<UnixMillis>);
    /// A delivery of `endpoint_id` in the store fell due at `at`.
    fn wake(&self, endpoint_id: &str, at: UnixMillis);
    /// An endpoint was disabled (410) or enabled again.
    fn endpoint_changed(&self, endpoint_id: &str, disabled_reason: Option<String>);
    /// Committed deliveries whose plugin chain must run before they can be sent; returns the
    /// ones no lane took.
    fn render(&self, jobs: Vec<RenderJob>) -> Vec<DeliveryId>;
}

/// The sending side of the writer's channel; cheap to clone.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::Sender<Command>,
}

impl QueueHandle {
    /// Commits the events and their deliveries; returns once they are durable.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<PublishOutcome>, QueueError> {
        self.run(PublishWork(events)).await
    }

    /// Applies `work` in the writer's next transaction; returns its output once committed.
    pub async fn run<W: UnitOfWork>(&self, work: W) -> Result<W::Output, QueueError> {
        let (reply, answer) = oneshot::channel();
        let job = Pending {
            work,
            output: None,
            reply,
        };
        self.send(Command::Work(Box::new(job))).await?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Queues plugin chains' results for deliveries of committed events.
    pub async fn record_renders(&self, results: Vec<RenderResult>) -> Result<(), QueueError> {
        self.send(Command::Rendered(results)).await
    }

    /// Queues an attempt's result for the next commit.
    pub async fn record_attempt(&self, report: AttemptReport) -> Result<(), QueueError> {
        self.send(Command::RecordAttempt(report)).await
    }

    /// Makes a finished delivery pending again, due now; `payload` replaces the body of a
    /// delivery that was parked before it had one.
    pub async fn replay(
        &self,
        id: DeliveryId,
        payload: Option<Rendered>,
    ) -> Result<ReplayOutcome, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Replay { id, payload, reply }).await?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Enables or disables an endpoint durably.
    pub async fn set_endpoint_enabled(
        &self,
        endpoint_id: String,
        enabled: bool,
        reason: Option<String>,
    ) -> Result<(), QueueError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::SetEndpointEnabled {
            endpoint_id,
            enabled,
            reason,
            reply,
        })
        .await?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Makes a pending delivery's next attempt due now.
    pub async fn retry_now(&self, id: DeliveryId) -> Result<RetryNowOutcome, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::RetryNow { id, reply }).await?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Runs one step of the retention sweep in the next commit.
    pub async fn sweep(
        &self,
        retention: retention::Retention,
        cursor: u128,
    ) -> Result<retention::SweepStep, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Sweep {
            retention,
            cursor,
            reply,
        })
        .await?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Whether the writer thread is still taking commands.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    async fn send(&self, command: Command) -> Result<(), QueueError> {
        self.tx.send(command).await.map_err(|_| QueueError::Closed)
    }
}
