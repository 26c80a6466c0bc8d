//! Wires the pieces into one running gateway: store → queue writer → lanes → scheduler → API.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::delivery::endpoint::EndpointError;
use crate::delivery::scheduler::Scheduler;
use crate::delivery::{Dispatcher, Endpoint, HttpSender};
use crate::events::{self, PublishRequest};
use crate::queue::{self, PublishOutcome, QueueError, QueueHandle};
use crate::store::{Store, StoreError};
use crate::time::now_millis;

/// The gateway could not start; the message says which part and why.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot start the queue writer thread: {0}")]
    Writer(#[from] std::io::Error),
}

/// A running gateway; the admin API holds it.
pub struct Gateway {
    store: Store,
    queue: QueueHandle,
    dispatcher: Arc<Dispatcher>,
}

impl Gateway {
    /// Opens the store, recovers pending deliveries and starts the delivery engine.
    /// Must run inside a tokio runtime.
    pub async fn start(config: &Config) -> Result<Arc<Self>, StartError> {
        // Outbound TLS uses rustls with the ring provider; a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = Store::open(&config.store.path)?;
        let disabled: HashMap<String, Option<String>> = store
            .endpoint_states()?
            .into_iter()
            .map(|(id, state)| (id, state.disabled_reason))
            .collect();
        let endpoints = config
            .endpoints
            .iter()
            .map(|endpoint| Endpoint::from_config(endpoint, &config.delivery))
            .collect::<Result<Vec<_>, _>>()?;
        let (retries_tx, retries_rx) = mpsc::unbounded_channel();
        let dispatcher = Arc::new(Dispatcher::new(endpoints, &disabled, retries_tx));
        let queue = queue::writer::spawn(store.clone(), dispatcher.clone())?;
        dispatcher.start(
            queue.clone(),
            HttpSender::new(config.delivery.connect_timeout)?,
        );
        let mut scheduler = Scheduler::new(store.clone(), dispatcher.clone(), retries_rx);
        let recovered = scheduler.recover()?;
        if recovered > 0 {
            tracing::info!(
                deliveries = recovered,
                "recovered pending deliveries from the store"
            );
        }
        tokio::spawn(scheduler.run());
        Ok(Arc::new(Self {
            store,
            queue,
            dispatcher,
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
            .map(|request| events::prepare(request, &self.dispatcher, now))
            .collect();
        self.queue.publish(events).await
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn queue(&self) -> &QueueHandle {
        &self.queue
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }
}
