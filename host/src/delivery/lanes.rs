//! Per-endpoint lanes: a queue of due deliveries and a fixed set of workers for each endpoint.
//!
//! An endpoint's `concurrency` bounds its requests in flight, and because every endpoint has
//! its own workers, a receiver that hangs ties up only its own lane; the others keep
//! delivering. Workers share their lane's receiver behind an async mutex (only the worker
//! waiting for the next job holds it), take a job, send it, and report the attempt to the queue
//! writer; they never touch redb.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::delivery::connection::Connection;
use crate::delivery::{Endpoint, HttpSender};
use crate::ids::DeliveryId;
use crate::queue::{AttemptReport, Decision, QueueHandle, ReadyDelivery, Sink};
use crate::time::{UnixMillis, now_millis};

/// One endpoint's queue and state.
pub struct Lane {
    pub endpoint: Arc<Endpoint>,
    tx: mpsc::UnboundedSender<ReadyDelivery>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ReadyDelivery>>>,
    disabled: RwLock<Option<String>>,
}

impl Lane {
    /// Why the endpoint is disabled, or `None` while it is enabled.
    pub fn disabled_reason(&self) -> Option<String> {
        self.disabled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Routes committed deliveries to their endpoint's lane; the queue writer's [`Sink`].
pub struct Dispatcher {
    lanes: HashMap<String, Arc<Lane>>,
    order: Vec<String>,
    retries: mpsc::UnboundedSender<(DeliveryId, UnixMillis)>,
    queue: OnceLock<QueueHandle>,
    runtime: tokio::runtime::Handle,
}

impl Dispatcher {
    /// Builds a lane per endpoint; `disabled` holds the reasons recorded in the store.
    /// Retry due times go to `retries` (the scheduler). Must run inside the tokio runtime.
    pub fn new(
        endpoints: Vec<Endpoint>,
        disabled: &HashMap<String, Option<String>>,
        retries: mpsc::UnboundedSender<(DeliveryId, UnixMillis)>,
    ) -> Self {
        let mut lanes = HashMap::new();
        let mut order = Vec::new();
        for endpoint in endpoints {
            let (tx, rx) = mpsc::unbounded_channel();
            let reason = disabled.get(&endpoint.id).cloned().flatten();
            order.push(endpoint.id.clone());
            lanes.insert(
                endpoint.id.clone(),
                Arc::new(Lane {
                    endpoint: Arc::new(endpoint),
                    tx,
                    rx: Mutex::new(Some(rx)),
                    disabled: RwLock::new(reason),
                }),
            );
        }
        Self {
            lanes,
            order,
            retries,
            queue: OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Starts every lane's workers; attempts are reported to `queue`.
    pub fn start(&self, queue: QueueHandle, sender: HttpSender) {
        let _ = self.queue.set(queue.clone());
        for lane in self.lanes.values() {
            let Some(rx) = lane
                .rx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            else {
                continue;
            };
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..lane.endpoint.concurrency {
                tokio::spawn(work(
                    lane.clone(),
                    rx.clone(),
                    queue.clone(),
                    sender.clone(),
                ));
            }
        }
    }

    /// Every lane, in configuration order.
    pub fn lanes(&self) -> impl Iterator<Item = &Arc<Lane>> {
        self.order.iter().filter_map(|id| self.lanes.get(id))
    }

    pub fn lane(&self, id: &str) -> Option<&Arc<Lane>> {
        self.lanes.get(id)
    }

    /// Enabled endpoints that receive `event_type`.
    pub fn subscribers(&self, event_type: &str) -> Vec<Arc<Endpoint>> {
        self.lanes()
            .filter(|lane| lane.endpoint.subscribes_to(event_type))
            .filter(|lane| lane.disabled_reason().is_none())
            .map(|lane| lane.endpoint.clone())
            .collect()
    }

    /// Settles a delivery whose endpoint is gone from the configuration.
    fn dead_letter_orphan(&self, delivery: ReadyDelivery) {
        let Some(queue) = self.queue.get().cloned() else {
            return;
        };
        let reason = format!(
            "endpoint `{}` is no longer configured; add it back and replay",
            delivery.endpoint_id
        );
        tracing::warn!(delivery_id = %delivery.id, %reason, "dead-lettering delivery");
        self.runtime.spawn(async move {
            let report = AttemptReport {
                delivery_id: delivery.id,
                endpoint_id: delivery.endpoint_id,
                attempt: None,
                decision: Decision::DeadLetter { reason },
            };
            let _ = queue.record_attempt(report).await;
        });
    }
}

impl Sink for Dispatcher {
    fn deliver_now(&self, delivery: ReadyDelivery) {
        match self.lanes.get(&delivery.endpoint_id) {
            Some(lane) => {
                if let Err(mpsc::error::SendError(delivery)) = lane.tx.send(delivery) {
                    tracing::error!(delivery_id = %delivery.id, "lane closed; delivery waits for a restart");
                }
            }
            None => self.dead_letter_orphan(delivery),
        }
    }

    fn retry_at(&self, id: DeliveryId, at: UnixMillis) {
        let _ = self.retries.send((id, at));
    }

    fn endpoint_changed(&self, endpoint_id: &str, disabled_reason: Option<String>) {
        if let Some(lane) = self.lanes.get(endpoint_id) {
            match &disabled_reason {
                Some(reason) => tracing::warn!(endpoint_id, %reason, "endpoint disabled"),
                None => tracing::info!(endpoint_id, "endpoint enabled"),
            }
            *lane
                .disabled
                .write()
                .unwrap_or_else(PoisonError::into_inner) = disabled_reason;
        }
    }
}

/// One worker of a lane: take a due delivery, attempt it, report the outcome.
async fn work(
    lane: Arc<Lane>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<ReadyDelivery>>>,
    queue: QueueHandle,
    sender: HttpSender,
) {
    let mut connection = sender.connection();
    loop {
        let next = rx.lock().await.recv().await;
        let Some(delivery) = next else { return };
        let span = tracing::debug_span!("attempt",
            delivery_id = %delivery.id,
            event_id = %delivery.event_id,
            endpoint_id = %lane.endpoint.id,
            attempt = delivery.attempt_number);
        let report = attempt(&lane, &sender, &mut connection, delivery)
            .instrument(span)
            .await;
        if queue.record_attempt(report).await.is_err() {
            return;
        }
    }
}

async fn attempt(
    lane: &Lane,
    sender: &HttpSender,
    connection: &mut Connection,
    delivery: ReadyDelivery,
) -> AttemptReport {
    if let Some(reason) = lane.disabled_reason() {
        return AttemptReport {
            delivery_id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            attempt: None,
            decision: Decision::DeadLetter {
                reason: format!("not sent: {reason}"),
            },
        };
    }
    let (record, result) = sender.attempt(&lane.endpoint, &delivery, connection).await;
    let decision = lane.endpoint.policy.decide(
        &result,
        delivery.attempt_in_cycle,
        now_millis(),
        rand::random::<f64>(),
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
