//! Who receives what: the endpoints, their event types and whether each is enabled.
//!
//! Shared by the queue writer (which fans domain events out inside its transaction) and the
//! lanes (which send); kept apart from the lanes so fan-out needs no delivery machinery.
//! Endpoints change at run time (the admin API): a [`Subscriber`] is the one stable object per
//! endpoint id, and an update swaps the endpoint inside it, so a lane and its workers follow
//! without being rebuilt.

use std::sync::{Arc, PoisonError, RwLock};

use crate::delivery::Endpoint;
use crate::store::StoredEndpoint;

/// One endpoint and its run-time state.
#[derive(Debug)]
pub struct Subscriber {
    id: String,
    current: RwLock<Current>,
    disabled: RwLock<Option<String>>,
}

/// The endpoint in force and the record it was built from.
#[derive(Debug, Clone)]
struct Current {
    endpoint: Arc<Endpoint>,
    record: Arc<StoredEndpoint>,
}

impl Subscriber {
    pub fn new(
        endpoint: Arc<Endpoint>,
        record: Arc<StoredEndpoint>,
        disabled: Option<String>,
    ) -> Self {
        Self {
            id: endpoint.id.clone(),
            current: RwLock::new(Current { endpoint, record }),
            disabled: RwLock::new(disabled),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The endpoint in force: an update replaces it; work already holding the old one
    /// finishes with it.
    pub fn endpoint(&self) -> Arc<Endpoint> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .endpoint
            .clone()
    }

    /// The stored configuration behind [`Self::endpoint`].
    pub fn record(&self) -> Arc<StoredEndpoint> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .record
            .clone()
    }

    pub(crate) fn replace(&self, endpoint: Arc<Endpoint>, record: Arc<StoredEndpoint>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
            Current { endpoint, record };
    }

    /// Why the endpoint is disabled, or `None` while it is enabled.
    pub fn disabled_reason(&self) -> Option<String> {
        self.disabled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_disabled(&self, reason: Option<String>) {
        *self
            .disabled
            .write()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }
}

/// Every endpoint: the config file's in its order, then the API's in creation order.
#[derive(Debug, Default)]
pub struct Subscriptions {
    list: RwLock<Vec<Arc<Subscriber>>>,
}

impl Subscriptions {
    pub fn new(subscribers: Vec<Arc<Subscriber>>) -> Self {
        Self {
            list: RwLock::new(subscribers),
        }
    }

    fn list(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Subscriber>>> {
        self.list.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot of every endpoint.
    pub fn all(&self) -> Vec<Arc<Subscriber>> {
        self.list().clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Subscriber>> {
        self.list()
            .iter()
            .find(|subscriber| subscriber.id == id)
            .cloned()
    }

    /// Adds `subscriber`, or puts it in the place of the one with its id.
    pub(crate) fn insert(&self, subscriber: Arc<Subscriber>) {
        let mut list = self.list.write().unwrap_or_else(PoisonError::into_inner);
        match list
            .iter_mut()
            .find(|existing| existing.id == subscriber.id)
        {
            Some(existing) => *existing = subscriber,
            None => list.push(subscriber),
        }
    }

    /// Removes the endpoint `id`; events published from now on no longer go to it.
    pub(crate) fn remove(&self, id: &str) -> Option<Arc<Subscriber>> {
        let mut list = self.list.write().unwrap_or_else(PoisonError::into_inner);
        let index = list.iter().position(|subscriber| subscriber.id == id)?;
        Some(list.remove(index))
    }

    /// Enabled endpoints that receive `event_type`.
    pub fn subscribers(&self, event_type: &str) -> Vec<Arc<Endpoint>> {
        self.list()
            .iter()
            .filter(|subscriber| subscriber.disabled_reason().is_none())
            .map(|subscriber| subscriber.endpoint())
            .filter(|endpoint| endpoint.subscribes_to(event_type))
            .collect()
    }
}
