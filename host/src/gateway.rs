//! Wires the pieces into one running gateway: store → plugins → queue writer → lanes →
//! scheduler → chain scanners → API.

mod shared;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::chain::Scanner;
use crate::chain::scanner::ChainHealth;
use crate::config::{Config, StoreBackend};
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
use crate::store::postgres::claims::{self, Claims};
use crate::store::postgres::due::PgDue;
use crate::store::postgres::leader::ChainLease;
use crate::store::postgres::queue::{Listener, Notice};
use crate::store::postgres::reads::PgReads;
use crate::store::postgres::writer::PgBackend;
use crate::store::postgres::{PgStore, migrate};
use crate::store::{DueSource, Reads, Store, StoreError, StoredEndpoint};
use crate::time::now_millis;

/// How often each lane looks for due work on PostgreSQL besides the notifications.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// How often a node that does not scan a chain tries to take over its scanner, and how often
/// the scanning node checks that it still holds the lease.
pub const SCANNER_LEASE_CHECK: Duration = Duration::from_secs(1);

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
    store: Arc<dyn Reads>,
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
    /// Where uploaded plugins are written, so a restart keeps them (redb), or the drop box
    /// for the shared store (PostgreSQL).
    plugins_dir: Option<std::path::PathBuf>,
    /// The database every node shares plugins through (PostgreSQL).
    shared: Option<PgStore>,
}

impl Gateway {
    /// Opens the store, recovers pending deliveries and starts the delivery engine.
    /// Must run inside a multi-threaded tokio runtime.
    pub async fn start(config: &Config) -> Result<Arc<Self>, StartError> {
        // Outbound TLS uses rustls with the ring provider; a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let payments = Payments::new(config)?;
        let backing = Backing::open(config).await?;
        let reads = backing.reads();
        // Loading runs plugin code (smoke tests); WASI's blocking shims must not run on an
        // async worker thread, so plugins are loaded on a blocking thread.
        let plugins_config = config.clone();
        let cache_key = CacheKey::new(backing.plugin_cache_key().await?);
        let shared_store = backing.shared();
        let runtime = tokio::runtime::Handle::current();
        let plugins = tokio::task::spawn_blocking(move || {
            start_plugins(&plugins_config, cache_key, shared_store, runtime)
        })
        .await
        .map_err(|err| PluginError::Engine(format!("plugin loading panicked: {err}")))??;
        let disabled: HashMap<String, Option<String>> = reads
            .endpoint_states()?
            .into_iter()
            .map(|(id, state)| (id, state.disabled_reason))
            .collect();
        let mut subscribers = Vec::new();
        for record in backing.seed_endpoints(config).await? {
            let endpoint = Endpoint::from_config(&record.config, &config.delivery)?;
            let disabled = disabled.get(&record.config.id).cloned().flatten();
            subscribers.push(Arc::new(Subscriber::new(
                Arc::new(endpoint),
                Arc::new(record),
                disabled,
            )));
        }
        let subscriptions = Arc::new(Subscriptions::new(subscribers));
        let pending = reads.pending_count()?;
        let dispatcher = Arc::new(Dispatcher::new(
            backing.due_source(),
            reads.due_endpoints()?,
            subscriptions.clone(),
            plugins.clone(),
        )?);
        let queue = backing.spawn_writer(subscriptions.clone(), dispatcher.clone())?;
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
            let scanner = Scanner::new(chain, &config.payments, reads.clone(), queue.clone());
            chains.push(scanner.health());
            match &backing {
                Backing::Redb(_) => {
                    tokio::spawn(scanner.run());
                }
                Backing::Postgres(pg) => {
                    let again = {
                        let (chain, payments) = (chain.clone(), config.payments.clone());
                        let (reads, queue) = (reads.clone(), queue.clone());
                        move || Scanner::new(&chain, &payments, reads.clone(), queue.clone())
                    };
                    tokio::spawn(scan_while_leader(pg.store.clone(), scanner, again));
                }
            }
        }
        let config_changed = Arc::new(tokio::sync::Notify::new());
        if let Backing::Postgres(pg) = &backing {
            tokio::spawn(claims::renew(
                pg.store.clone(),
                pg.claims.clone(),
                config.store.claim_lease,
            ));
            tokio::spawn(listen(
                pg.store.clone(),
                dispatcher.clone(),
                config_changed.clone(),
            ));
        }
        let gateway = Arc::new(Self {
            checks: Arc::new(Checks {
                delivery: config.delivery.clone(),
                egress: config.egress.guard()?,
            }),
            endpoint_edits: tokio::sync::Mutex::new(()),
            plugins_dir: config.plugins.dir.clone(),
            shared: backing.shared(),
            chains,
            payments,
            store: reads,
            queue,
            dispatcher,
            plugins,
        });
        if let Some(store) = backing.shared() {
            tokio::spawn(shared::follow(
                Arc::downgrade(&gateway),
                store,
                config_changed,
            ));
        }
        Ok(gateway)
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
            Some(Ok(Edited::Deleted(record))) => self.remove_endpoint(&record.config.id),
            Some(Err(_)) | None => {}
        }
        Ok(output)
    }

    /// Takes a deleted endpoint out of force.
    fn remove_endpoint(&self, id: &str) {
        if let Some(subscriber) = self.subscriptions().remove(id) {
            // Its lane keeps the subscriber, disabled: what it still holds or finds in the
            // store is dead-lettered with this reason.
            subscriber.set_disabled(Some(format!("endpoint `{id}` was deleted")));
            self.dispatcher.endpoint_updated(&subscriber);
        }
    }

    /// Installs `bytes` as plugin `name` where a restart finds it: the plugins directory
    /// (redb), or the database every node loads from (PostgreSQL). The version in force
    /// stays when the component is refused.
    pub async fn install_plugin(
        &self,
        name: &str,
        bytes: axum::body::Bytes,
    ) -> Result<(), InstallError> {
        let registry = self.plugins.clone();
        let name = name.to_owned();
        let installed = match (&self.shared, &self.plugins_dir) {
            (Some(store), _) => {
                let (store, runtime) = (store.clone(), tokio::runtime::Handle::current());
                tokio::task::spawn_blocking(move || {
                    shared::publish(&registry, &store, &runtime, &name, &bytes).map_err(|err| {
                        match err {
                            shared::PublishError::Refused(err) => InstallError::Refused(err),
                            shared::PublishError::Store(err) => InstallError::Save(format!(
                                "plugin `{name}` passed its checks but could not be stored for \
                                 the other nodes, so it is not in force: {err}"
                            )),
                        }
                    })
                })
                .await
            }
            (None, Some(dir)) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    registry.install(&name, &bytes)?;
                    crate::plugins::watcher::save(&dir, &name, &bytes).map_err(|err| {
                        InstallError::Save(format!(
                            "plugin `{name}` is loaded but could not be written to the plugins \
                             directory, so a restart would lose it: {err}"
                        ))
                    })
                })
                .await
            }
            (None, None) => return Err(InstallError::NoDir),
        };
        installed
            .map_err(|err| InstallError::Save(format!("loading the plugin panicked: {err}")))?
    }

    /// Unloads plugin `name` and removes it where a restart would find it (its file, and on
    /// PostgreSQL its row, so every node unloads it).
    pub async fn delete_plugin(&self, name: &str) -> Result<(), InstallError> {
        let _one_at_a_time = self.plugins.changes().lock().await;
        if let Some(store) = &self.shared {
            crate::store::postgres::shared::delete_plugin(store, name).await?;
        }
        if let Some(dir) = &self.plugins_dir {
            match std::fs::remove_file(dir.join(format!("{name}.wasm"))) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(InstallError::Save(format!(
                        "cannot remove the file of plugin `{name}`: {err}"
                    )));
                }
            }
        }
        self.plugins.remove(name);
        Ok(())
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

    /// Reads of committed state, whichever backend holds it. They block: call them from a
    /// blocking thread (or briefly, from a worker of the multi-threaded runtime).
    pub fn store(&self) -> &Arc<dyn Reads> {
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

/// A plugin upload or removal that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// redb keeps uploads in the plugins directory; none is configured.
    #[error("set [plugins] dir so uploaded plugins survive a restart")]
    NoDir,
    #[error(transparent)]
    Refused(#[from] PluginError),
    #[error("{0}")]
    Save(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A replay that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the gateway runs on: the redb file (one node), or a PostgreSQL database several
/// nodes share.
enum Backing {
    Redb(Store),
    Postgres(Box<Postgres>),
}

struct Postgres {
    store: PgStore,
    reads: Arc<PgReads>,
    /// The deliveries this node holds and their claim tokens.
    claims: Arc<Claims>,
    /// How long this node's claims last unrenewed (`store.claim_lease`).
    lease: Duration,
}

impl Backing {
    /// Opens the configured store; on PostgreSQL also applies what migrations are new.
    async fn open(config: &Config) -> Result<Self, StartError> {
        if config.store.backend == StoreBackend::Redb {
            let store = Store::open(&config.store.path, config.store.cache_mib << 20)?;
            return Ok(Self::Redb(store));
        }
        let url = config
            .store
            .url
            .as_ref()
            .ok_or_else(|| StoreError::Config {
                message: "store.backend = \"postgres\" needs store.url".to_owned(),
            })?;
        let store = PgStore::connect(url.expose(), config.store.pool_size)?;
        let report = migrate::migrate(&store).await?;
        if !report.applied.is_empty() {
            tracing::info!(applied = ?report.applied, version = report.version,
                "applied PostgreSQL schema migrations");
        }
        Ok(Self::Postgres(Box::new(Postgres {
            reads: Arc::new(PgReads::new(
                store.clone(),
                tokio::runtime::Handle::current(),
            )),
            claims: Arc::new(Claims::default()),
            lease: config.store.claim_lease,
            store,
        })))
    }

    /// The database the nodes share endpoints and plugins through, if there is one.
    fn shared(&self) -> Option<PgStore> {
        match self {
            Self::Redb(_) => None,
            Self::Postgres(pg) => Some(pg.store.clone()),
        }
    }

    fn reads(&self) -> Arc<dyn Reads> {
        match self {
            Self::Redb(store) => Arc::new(store.clone()),
            Self::Postgres(pg) => pg.reads.clone(),
        }
    }

    async fn plugin_cache_key(&self) -> Result<[u8; 32], StoreError> {
        match self {
            Self::Redb(store) => store.plugin_cache_key(),
            Self::Postgres(pg) => pg.reads.plugin_cache_key().await,
        }
    }

    /// Stores the config file's endpoints and returns every endpoint in force.
    async fn seed_endpoints(&self, config: &Config) -> Result<Vec<StoredEndpoint>, StoreError> {
        match self {
            Self::Redb(store) => store.seed_endpoints(&config.endpoints, now_millis()),
            Self::Postgres(pg) => {
                pg.reads
                    .seed_endpoints(&config.endpoints, now_millis())
                    .await
            }
        }
    }

    fn due_source(&self) -> Arc<dyn DueSource> {
        match self {
            Self::Redb(store) => Arc::new(store.clone()),
            Self::Postgres(pg) => Arc::new(PgDue::new(
                pg.store.clone(),
                pg.claims.clone(),
                pg.lease,
                POLL_EVERY,
                tokio::runtime::Handle::current(),
            )),
        }
    }

    fn spawn_writer(
        &self,
        subscriptions: Arc<Subscriptions>,
        sink: Arc<Dispatcher>,
    ) -> Result<QueueHandle, StartError> {
        Ok(match self {
            Self::Redb(store) => queue::writer::spawn(store.clone(), subscriptions, sink)?,
            Self::Postgres(pg) => queue::writer::spawn_backend(
                PgBackend::new(pg.store.clone(), subscriptions, pg.claims.clone(), pg.lease)?,
                sink,
            )?,
        })
    }
}

/// Runs a chain's scanner only while this node holds the chain's lease; tries to take it
/// over every [`SCANNER_LEASE_CHECK`] while another node does. `again` builds the scanner
/// anew after the lease was lost and won back.
async fn scan_while_leader(store: PgStore, first: Scanner, again: impl Fn() -> Scanner) {
    let health = first.health();
    let mut next = Some(first);
    health.set_standby(true);
    loop {
        match ChainLease::try_acquire(&store, &health.name).await {
            Ok(Some(lease)) => {
                tracing::info!(chain = %health.name, "this node scans the chain now");
                health.set_standby(false);
                let scanner = next
                    .take()
                    .unwrap_or_else(&again)
                    .with_health(health.clone());
                tokio::select! {
                    () = scanner.run() => return,
                    () = lease.lost(SCANNER_LEASE_CHECK) => {
                        tracing::warn!(chain = %health.name,
                            "lost the chain's scanner lease (the database session ended); stopped scanning");
                        health.set_standby(true);
                    }
                }
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(chain = %health.name, error = %err, "cannot ask for the chain's scanner lease");
            }
        }
        tokio::time::sleep(SCANNER_LEASE_CHECK).await;
    }
}

/// Wakes this node's lanes when another node leaves due work for everyone, and its
/// follower of the shared configuration when that changed; listens again after the
/// connection was lost (each lane's poll and the version poll cover the gap).
async fn listen(
    store: PgStore,
    dispatcher: Arc<Dispatcher>,
    config_changed: Arc<tokio::sync::Notify>,
) {
    loop {
        match Listener::start(&store).await {
            Ok(mut listener) => {
                while let Some(notice) = listener.next().await {
                    match notice {
                        Notice::Due(payload) => dispatcher.announced(&payload),
                        Notice::Config => config_changed.notify_one(),
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for other nodes' work; polling only");
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Builds the plugin runtime, loads the plugins (from the shared store on PostgreSQL, then
/// the plugins directory) and starts watching the directory.
fn start_plugins(
    config: &Config,
    cache_key: CacheKey,
    shared_store: Option<PgStore>,
    runtime: tokio::runtime::Handle,
) -> Result<Arc<PluginRegistry>, StartError> {
    let cache_dir = config.plugins.cache_dir.clone().unwrap_or_else(|| {
        let parent = config
            .store
            .path
            .parent()
            .unwrap_or(std::path::Path::new(""));
        parent.join("plugin-cache")
    });
    let plugin_runtime = PluginRuntime::new(
        Limits::from_config(&config.plugins),
        Some((cache_dir, cache_key)),
    )?;
    let registry = Arc::new(PluginRegistry::new(plugin_runtime));
    match shared_store {
        None => {
            if let Some(dir) = &config.plugins.dir {
                let mut watcher = Watcher::new(registry.clone(), dir.clone());
                watcher.poll();
                watcher.spawn()?;
            }
        }
        Some(store) => {
            runtime.block_on(async {
                let _one_at_a_time = registry.changes().lock().await;
                let stored = crate::store::postgres::shared::load(&store).await?;
                shared::sync_plugins(&registry, &store, &stored.plugins, &mut HashMap::new()).await;
                Ok::<_, StoreError>(())
            })?;
            if let Some(dir) = &config.plugins.dir {
                let target = shared::Publish {
                    registry: registry.clone(),
                    store,
                    runtime,
                };
                let mut watcher = Watcher::with_target(target, dir.clone());
                watcher.poll();
                watcher.spawn()?;
            }
        }
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
