//! Wires the pieces into one running gateway: store → plugins → queue writer → lanes →
//! scheduler → chain scanners → API.

use std::collections::HashMap;
use std::sync::Arc;

use crate::chain::Scanner;
use crate::chain::scanner::ChainHealth;
use crate::config::Config;
use crate::delivery::endpoint::EndpointError;
use crate::delivery::{Dispatcher, Endpoint, HttpSender, Subscriber, Subscriptions};
use crate::endpoints::{Change, Checks, EditEndpoint, Edited};
use crate::events::{self, PublishRequest};
use crate::ids::DeliveryId;
use crate::payments::{self, CreateError, CreateRequest, Created, Payments};
use crate::plugins::cache::CacheKey;
use crate::plugins::watcher::Watcher;
use crate::plugins::{ChainOutcome, Limits, PluginError, PluginRegistry, PluginRuntime};
use crate::queue::{self, PublishOutcome, QueueError, QueueHandle, ReplayOutcome};
use crate::store::{Store, StoreError, StoredEndpoint};
use crate::time::now_millis;

/// The gateway could not start; the message says which part and why.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("cannot set up TLS for deliveries: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot start a background thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("cannot start the plugin runtime: {0}")]
    Plugins(#[from] PluginError),
    #[error(transparent)]
    Payments(#[from] payments::SetupError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What a replay request came to.
#[derive(Debug)]
pub enum Replay {
    Scheduled,
    NotFound,
    StillPending,
    EndpointDisabled,
    /// The delivery's endpoint is no longer configured.
    EndpointMissing(String),
    /// The plugin chain still fails; nothing was changed.
    PluginFailed(String),
    /// The plugin chain now drops the event; nothing was changed.
    Dropped(String),
}

impl Replay {
    /// Why the delivery was left as it was, for a replay that could not be scheduled.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Replay::Scheduled | Replay::StillPending | Replay::NotFound => None,
            Replay::EndpointDisabled => Some("the endpoint is disabled".to_owned()),
            Replay::EndpointMissing(endpoint) => {
                Some(format!("endpoint `{endpoint}` is not configured"))
            }
            Replay::PluginFailed(reason) => Some(reason.clone()),
            Replay::Dropped(by) => Some(format!("the plugin filter {by} now drops this event")),
        }
    }
}

/// A running gateway; the admin API holds it.
pub struct Gateway {
    store: Store,
    queue: QueueHandle,
    dispatcher: Arc<Dispatcher>,
    plugins: Arc<PluginRegistry>,
    payments: Payments,
    /// Each chain scanner's health, for readiness.
    chains: Vec<Arc<ChainHealth>>,
    /// What an endpoint created or changed over the API must pass.
    checks: Arc<Checks>,
    /// Endpoint changes one at a time, so each is applied in the order it committed.
    endpoint_edits: tokio::sync::Mutex<()>,
    /// Where uploaded plugins are written, so a restart keeps them.
    plugins_dir: Option<std::path::PathBuf>,
}

impl Gateway {
    /// Opens the store, recovers pending deliveries and starts the delivery engine.
    /// Must run inside a tokio runtime.
    pub async fn start(config: &Config) -> Result<Arc<Self>, StartError> {
        // Outbound TLS uses rustls with the ring provider; a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let payments = Payments::new(config)?;
        let store = Store::open(&config.store.path, config.store.cache_mib << 20)?;
        // Loading runs plugin code (smoke tests); WASI's blocking shims must not run on an
        // async worker thread, so plugins are loaded on a blocking thread.
        let plugins_config = config.clone();
        let cache_key = CacheKey::new(store.plugin_cache_key()?);
        let plugins =
            tokio::task::spawn_blocking(move || start_plugins(&plugins_config, cache_key))
                .await
                .map_err(|err| PluginError::Engine(format!("plugin loading panicked: {err}")))??;
        let disabled: HashMap<String, Option<String>> = store
            .endpoint_states()?
            .into_iter()
            .map(|(id, state)| (id, state.disabled_reason))
            .collect();
        let mut subscribers = Vec::new();
        for record in store.seed_endpoints(&config.endpoints, now_millis())? {
            let endpoint = Endpoint::from_config(&record.config, &config.delivery)?;
            let disabled = disabled.get(&record.config.id).cloned().flatten();
            subscribers.push(Arc::new(Subscriber::new(
                Arc::new(endpoint),
                Arc::new(record),
                disabled,
            )));
        }
        let subscriptions = Arc::new(Subscriptions::new(subscribers));
        let pending = store.pending_count()?;
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            subscriptions.clone(),
            plugins.clone(),
        )?);
        let queue = queue::writer::spawn(store.clone(), subscriptions.clone(), dispatcher.clone())?;
        dispatcher.start(
            queue.clone(),
            HttpSender::new(config.delivery.connect_timeout, config.egress.guard()?)?,
        );
        if pending > 0 {
            tracing::info!(
                deliveries = pending,
                "pending deliveries in the store; the lanes read them back as they have room"
            );
        }
        tokio::spawn(queue::retention::run(
            queue.clone(),
            queue::retention::Retention::from_config(&config.store),
        ));
        let mut chains = Vec::new();
        for chain in &config.chains {
            let scanner = Scanner::new(chain, &config.payments, store.clone(), queue.clone());
            chains.push(scanner.health());
            tokio::spawn(scanner.run());
        }
        Ok(Arc::new(Self {
            checks: Arc::new(Checks {
                delivery: config.delivery.clone(),
                egress: config.egress.guard()?,
            }),
            endpoint_edits: tokio::sync::Mutex::new(()),
            plugins_dir: config.plugins.dir.clone(),
            chains,
            payments,
            store,
            queue,
            dispatcher,
            plugins,
        }))
    }

    /// Fans the events out, commits them durably and returns what was committed.
    pub async fn publish(
        &self,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<PublishOutcome>, QueueError> {
        let now = now_millis();
        let events = requests
            .into_iter()
            .map(|request| events::prepare(request, self.dispatcher.subscriptions(), now))
            .collect();
        self.queue.publish(events).await
    }

    /// Validates a payment request into the unit of work that creates it (run it with
    /// [`QueueHandle::run`], maybe wrapped for an `Idempotency-Key`).
    pub fn payment_creation(
        &self,
        request: CreateRequest,
    ) -> Result<payments::CreatePayment, CreateError> {
        self.payments.validate(request, now_millis())
    }

    /// Validates and creates a payment; answers once it and `payment.created` are committed.
    pub async fn create_payment(
        &self,
        request: CreateRequest,
    ) -> Result<Result<Created, CreateError>, QueueError> {
        match self.payment_creation(request) {
            Ok(work) => self.queue.run(work).await.map(Ok),
            Err(err) => Ok(Err(err)),
        }
    }

    /// Cancels a pending or underpaid payment; answers once it and `payment.canceled` are
    /// committed.
    pub async fn cancel_payment(
        &self,
        id: crate::ids::PaymentId,
    ) -> Result<payments::Canceled, QueueError> {
        self.queue.run(payments::CancelPayment { id }).await
    }

    /// Sends a finished delivery again. A delivery parked by a plugin failure runs its
    /// endpoint's plugin chain first, with the versions now in force.
    pub async fn replay(&self, id: DeliveryId) -> Result<Replay, ReplayError> {
        // Only a configured endpoint has workers to send it.
        if let Some((record, _)) = self.store.delivery(id)?
            && self.subscriptions().get(&record.endpoint_id).is_none()
        {
            return Ok(Replay::EndpointMissing(record.endpoint_id));
        }
        match self.queue.replay(id, None).await? {
            ReplayOutcome::Scheduled => return Ok(Replay::Scheduled),
            ReplayOutcome::NotFound => return Ok(Replay::NotFound),
            ReplayOutcome::StillPending => return Ok(Replay::StillPending),
            ReplayOutcome::EndpointDisabled => return Ok(Replay::EndpointDisabled),
            ReplayOutcome::NeedsRender => {}
        }
        let Some((record, _)) = self.store.delivery(id)? else {
            return Ok(Replay::NotFound);
        };
        let Some(event) = self.store.event(record.event_id)? else {
            return Ok(Replay::NotFound);
        };
        let Some(subscriber) = self.subscriptions().get(&record.endpoint_id) else {
            return Ok(Replay::EndpointMissing(record.endpoint_id));
        };
        let endpoint = subscriber.endpoint();
        let plugins = self.plugins.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            events::rerender(&event, &endpoint, &plugins, now_millis())
        })
        .await
        .map_err(|_| ReplayError::Queue(QueueError::Closed))?;
        match outcome {
            ChainOutcome::Deliver(rendered) => match self.queue.replay(id, Some(rendered)).await? {
                ReplayOutcome::Scheduled => Ok(Replay::Scheduled),
                ReplayOutcome::NotFound => Ok(Replay::NotFound),
                ReplayOutcome::StillPending => Ok(Replay::StillPending),
                ReplayOutcome::EndpointDisabled | ReplayOutcome::NeedsRender => {
                    Ok(Replay::EndpointDisabled)
                }
            },
            ChainOutcome::Failed { reason, .. } => Ok(Replay::PluginFailed(reason)),
            ChainOutcome::Dropped { by } => Ok(Replay::Dropped(by)),
        }
    }

    /// Replays every dead-lettered delivery of `endpoint_id` parked at or after `since`, at
    /// most `limit` per call (the answer says whether more remain).
    pub async fn recover(
        &self,
        endpoint_id: &str,
        since: crate::time::UnixMillis,
        limit: usize,
    ) -> Result<Recovered, ReplayError> {
        let store = self.store.clone();
        let endpoint = endpoint_id.to_owned();
        let (ids, more) =
            tokio::task::spawn_blocking(move || store.dead_letters_of(&endpoint, since, limit))
                .await
                .map_err(|_| ReplayError::Queue(QueueError::Closed))??;
        let mut recovered = Recovered {
            more,
            ..Recovered::default()
        };
        for id in ids {
            let replay = self.replay(id).await?;
            if let Replay::Scheduled = replay {
                recovered.scheduled += 1;
            } else if let Some(reason) = replay.refusal() {
                recovered.not_scheduled.push((id, reason));
            }
            // Otherwise it was replayed by someone else meanwhile.
        }
        Ok(recovered)
    }

    /// Whether the gateway can do its work now: the store answers, the writer runs, and every
    /// chain scanner completed a step within its lag bound. Returns the verdict and the checks.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let store = self.store.pending_count();
        let writer = self.queue.is_running();
        let now = now_millis();
        let chains: Vec<_> = self.chains.iter().map(|chain| chain.report(now)).collect();
        let ready = store.is_ok() && writer && chains.iter().all(|chain| chain.ok);
        let body = serde_json::json!({
            "status": if ready { "ready" } else { "not_ready" },
            "store": match &store {
                Ok(pending) => serde_json::json!({"ok": true, "pending_deliveries": pending}),
                Err(err) => serde_json::json!({"ok": false, "error": err.to_string()}),
            },
            "writer": {"ok": writer},
            "chains": chains,
        });
        (ready, body)
    }

    /// The Prometheus text page, with the store's queue depths and the scanners' lag read now.
    /// Blocking: it reads the whole due index.
    pub fn metrics_text(&self) -> Result<String, StoreError> {
        let queues = self.store.due_summary(now_millis())?;
        let chains: Vec<(String, u64)> = self
            .chains
            .iter()
            .map(|chain| (chain.name.clone(), chain.lag()))
            .collect();
        crate::metrics::METRICS.set_state(&queues, &chains);
        Ok(crate::metrics::METRICS.render())
    }

    /// A change to endpoint `id` as a unit of work (to run with [`Self::edit_endpoint`], maybe
    /// wrapped for an `Idempotency-Key`). `enabled`, when given, is set in the same commit.
    pub fn endpoint_edit(&self, id: &str, change: Change, enabled: Option<bool>) -> EditEndpoint {
        EditEndpoint {
            id: id.to_owned(),
            change: Some(change),
            enabled,
            checks: self.checks.clone(),
        }
    }

    /// Commits `work` (an [`EditEndpoint`], maybe wrapped) and applies what it changed: the
    /// subscriptions and the endpoint's lane follow before this returns.
    pub async fn edit_endpoint<W>(&self, work: W) -> Result<W::Output, QueueError>
    where
        W: crate::queue::UnitOfWork,
        W::Output: crate::endpoints::EditOutput,
    {
        use crate::endpoints::EditOutput as _;
        let _one_at_a_time = self.endpoint_edits.lock().await;
        let output = self.queue.run(work).await?;
        match output.edited() {
            Some(Ok(Edited::Stored { record, disabled })) => {
                self.apply_endpoint(record.clone(), disabled.clone());
            }
            Some(Ok(Edited::Deleted(record))) => {
                let id = &record.config.id;
                if let Some(subscriber) = self.subscriptions().remove(id) {
                    // Its lane keeps the subscriber, disabled: what it still holds or finds
                    // in the store is dead-lettered with this reason.
                    subscriber.set_disabled(Some(format!("endpoint `{id}` was deleted")));
                    self.dispatcher.endpoint_updated(&subscriber);
                }
            }
            Some(Err(_)) | None => {}
        }
        Ok(output)
    }

    /// Puts a committed endpoint record in force.
    fn apply_endpoint(&self, record: StoredEndpoint, disabled: Option<String>) {
        let endpoint = match Endpoint::from_config(&record.config, &self.checks.delivery) {
            Ok(endpoint) => Arc::new(endpoint),
            Err(err) => {
                // Not reachable: the record passed the same checks before it was stored.
                tracing::error!(error = %err, "a stored endpoint cannot be used");
                return;
            }
        };
        let record = Arc::new(record);
        let subscriber = match self.subscriptions().get(&endpoint.id) {
            Some(subscriber) => {
                subscriber.replace(endpoint, record);
                subscriber.set_disabled(disabled);
                subscriber
            }
            None => {
                let subscriber = Arc::new(Subscriber::new(endpoint, record, disabled));
                self.subscriptions().insert(subscriber.clone());
                subscriber
            }
        };
        self.dispatcher.endpoint_updated(&subscriber);
    }

    /// Commits a test event for endpoint `id` alone (whatever event types it subscribes to)
    /// and returns what was committed; it is delivered like any other event.
    pub async fn send_test_event(
        &self,
        id: &str,
        request: PublishRequest,
    ) -> Result<Option<PublishOutcome>, QueueError> {
        let Some(subscriber) = self.subscriptions().get(id) else {
            return Ok(None);
        };
        let event = events::prepare_for(request, &[subscriber.endpoint()], now_millis());
        let mut outcomes = self.queue.publish(vec![event]).await?;
        Ok(outcomes.pop())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn queue(&self) -> &QueueHandle {
        &self.queue
    }

    pub fn subscriptions(&self) -> &Subscriptions {
        self.dispatcher.subscriptions()
    }

    pub fn plugins(&self) -> &Arc<PluginRegistry> {
        &self.plugins
    }

    /// What endpoints created or changed over the API must pass.
    pub fn endpoint_checks(&self) -> &Checks {
        &self.checks
    }

    /// The watched plugins directory, if one is configured.
    pub fn plugins_dir(&self) -> Option<&std::path::Path> {
        self.plugins_dir.as_deref()
    }
}

/// What a bulk recover did.
#[derive(Debug, Default)]
pub struct Recovered {
    pub scheduled: usize,
    /// Deliveries left dead-lettered, and why.
    pub not_scheduled: Vec<(DeliveryId, String)>,
    /// More dead letters match than one call handles; call again.
    pub more: bool,
}

/// A replay that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Builds the plugin runtime, loads the plugins directory and starts watching it.
fn start_plugins(config: &Config, cache_key: CacheKey) -> Result<Arc<PluginRegistry>, StartError> {
    let cache_dir = config.plugins.cache_dir.clone().unwrap_or_else(|| {
        let parent = config
            .store
            .path
            .parent()
            .unwrap_or(std::path::Path::new(""));
        parent.join("plugin-cache")
    });
    let runtime = PluginRuntime::new(
        Limits::from_config(&config.plugins),
        Some((cache_dir, cache_key)),
    )?;
    let registry = Arc::new(PluginRegistry::new(runtime));
    if let Some(dir) = &config.plugins.dir {
        let mut watcher = Watcher::new(registry.clone(), dir.clone());
        watcher.poll();
        watcher.spawn()?;
    }
    for endpoint in &config.endpoints {
        for step in &endpoint.plugins {
            if registry.get(&step.name).is_none() {
                tracing::warn!(endpoint_id = %endpoint.id, plugin = %step.name,
                    "endpoint uses a plugin that is not loaded; its deliveries are parked until it is");
            }
        }
    }
    Ok(registry)
}
