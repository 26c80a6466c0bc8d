//! Per-endpoint lanes: a queue of due deliveries and a fixed set of workers for each endpoint.
//!
//! An endpoint's `concurrency` bounds its requests in flight, and because every endpoint has
//! its own workers, a receiver that hangs ties up only its own lane; the others keep
//! delivering. Workers share their lane's receiver behind an async mutex (only the worker
//! waiting for the next job holds it), take a job, send it, and report the attempt to the queue
//! writer; they never touch redb.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::delivery::connection::Connection;
use crate::delivery::{HttpSender, Subscriber, Subscriptions};
use crate::ids::DeliveryId;
use crate::plugins::{ChainOutcome, PluginRegistry};
use crate::queue::{AttemptReport, Decision, QueueHandle, ReadyDelivery, RenderJob, Sink};
use crate::time::{UnixMillis, now_millis};

/// One endpoint's queue of due deliveries.
struct Lane {
    subscriber: Arc<Subscriber>,
    tx: mpsc::UnboundedSender<ReadyDelivery>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ReadyDelivery>>>,
}

/// Routes committed deliveries to their endpoint's lane; the queue writer's [`Sink`].
pub struct Dispatcher {
    subscriptions: Arc<Subscriptions>,
    lanes: HashMap<String, Lane>,
    retries: mpsc::UnboundedSender<(DeliveryId, UnixMillis)>,
    plugins: Arc<PluginRegistry>,
    /// Plugin chains rendering committed domain events at once: a catch-up that raises
    /// thousands of events queues here instead of filling the blocking thread pool.
    render_slots: Arc<tokio::sync::Semaphore>,
    queue: OnceLock<QueueHandle>,
    runtime: tokio::runtime::Handle,
}

impl Dispatcher {
    /// Builds a lane per endpoint. Retry due times go to `retries` (the scheduler); deliveries
    /// of domain events are rendered with `plugins`. Must run inside the tokio runtime.
    pub fn new(
        subscriptions: Arc<Subscriptions>,
        plugins: Arc<PluginRegistry>,
        retries: mpsc::UnboundedSender<(DeliveryId, UnixMillis)>,
    ) -> Self {
        let lanes = subscriptions
            .iter()
            .map(|subscriber| {
                let (tx, rx) = mpsc::unbounded_channel();
                let lane = Lane {
                    subscriber: subscriber.clone(),
                    tx,
                    rx: Mutex::new(Some(rx)),
                };
                (subscriber.endpoint.id.clone(), lane)
            })
            .collect();
        Self {
            subscriptions,
            lanes,
            retries,
            plugins,
            render_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |cores| cores.get() * 2),
            )),
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
            for _ in 0..lane.subscriber.endpoint.concurrency {
                tokio::spawn(work(
                    lane.subscriber.clone(),
                    rx.clone(),
                    queue.clone(),
                    sender.clone(),
                ));
            }
        }
    }

    pub fn subscriptions(&self) -> &Arc<Subscriptions> {
        &self.subscriptions
    }

    /// Settles a delivery whose endpoint is gone from the configuration.
    fn dead_letter_orphan(&self, id: DeliveryId, endpoint_id: String) {
        let Some(queue) = self.queue.get().cloned() else {
            return;
        };
        let reason =
            format!("endpoint `{endpoint_id}` is no longer configured; add it back and replay");
        tracing::warn!(delivery_id = %id, %reason, "dead-lettering delivery");
        self.runtime.spawn(async move {
            let report = AttemptReport {
                delivery_id: id,
                endpoint_id,
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
            None => self.dead_letter_orphan(delivery.id, delivery.endpoint_id),
        }
    }

    fn retry_at(&self, id: DeliveryId, at: UnixMillis) {
        let _ = self.retries.send((id, at));
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

    fn render(&self, job: RenderJob) {
        let Some(subscriber) = self.subscriptions.get(&job.endpoint_id).cloned() else {
            self.dead_letter_orphan(job.delivery_id, job.endpoint_id);
            return;
        };
        let Some(queue) = self.queue.get().cloned() else {
            return;
        };
        let plugins = self.plugins.clone();
        let slots = self.render_slots.clone();
        self.runtime.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            // Plugin calls are CPU work with their own limits: never on an async worker.
            let outcome = tokio::task::spawn_blocking(move || {
                crate::events::rerender(&job.event, &subscriber.endpoint, &plugins, now_millis())
            })
            .await
            .unwrap_or_else(|err| ChainOutcome::Failed {
                by: "host".to_owned(),
                reason: format!("the plugin chain panicked: {err}"),
            });
            let _ = queue.record_render(job.delivery_id, outcome).await;
        });
    }
}

/// One worker of a lane: take a due delivery, attempt it, report the outcome.
async fn work(
    lane: Arc<Subscriber>,
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
    lane: &Subscriber,
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
