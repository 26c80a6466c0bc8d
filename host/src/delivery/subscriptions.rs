//! Who receives what: the configured endpoints, their event types and whether each is enabled.
//!
//! Shared by the queue writer (which fans domain events out inside its transaction) and the
//! lanes (which send); kept apart from the lanes so fan-out needs no delivery machinery.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::delivery::Endpoint;

/// One endpoint and its run-time state.
#[derive(Debug)]
pub struct Subscriber {
    pub endpoint: Arc<Endpoint>,
    disabled: RwLock<Option<String>>,
}

impl Subscriber {
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

/// Every endpoint, in configuration order.
#[derive(Debug)]
pub struct Subscriptions {
    list: Vec<Arc<Subscriber>>,
    by_id: HashMap<String, usize>,
}

impl Subscriptions {
    /// `disabled` holds the reasons recorded in the store.
    pub fn new(endpoints: Vec<Endpoint>, disabled: &HashMap<String, Option<String>>) -> Self {
        let mut list = Vec::with_capacity(endpoints.len());
        let mut by_id = HashMap::new();
        for endpoint in endpoints {
            by_id.insert(endpoint.id.clone(), list.len());
            list.push(Arc::new(Subscriber {
                disabled: RwLock::new(disabled.get(&endpoint.id).cloned().flatten()),
                endpoint: Arc::new(endpoint),
            }));
        }
        Self { list, by_id }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Subscriber>> {
        self.list.iter()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Subscriber>> {
        self.by_id.get(id).map(|&index| &self.list[index])
    }

    /// Enabled endpoints that receive `event_type`.
    pub fn subscribers(&self, event_type: &str) -> Vec<Arc<Endpoint>> {
        self.list
            .iter()
            .filter(|subscriber| subscriber.endpoint.subscribes_to(event_type))
            .filter(|subscriber| subscriber.disabled_reason().is_none())
            .map(|subscriber| subscriber.endpoint.clone())
            .collect()
    }
}
