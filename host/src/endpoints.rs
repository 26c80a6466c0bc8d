//! Endpoints at run time: create, update, rotate the secret, delete.
//!
//! Each change is a unit of work ([`EditEndpoint`]): it reads the stored endpoint, builds the
//! new record, validates it like the config file (url, egress guard, secret, retry policy) and
//! writes it inside one writer transaction. The gateway then applies the committed record to
//! the subscriptions and the lanes (see [`crate::gateway::Gateway`]). Endpoints seeded from the
//! config file are changed there, not here.

use std::time::Duration;

use crate::config::{DeliveryConfig, EndpointConfig};
use crate::delivery::egress::EgressGuard;
use crate::queue::{Txn, UnitOfWork};
use crate::signing::Secret;
use crate::store::{StoreError, StoredEndpoint};
use crate::time::rfc3339;

/// What a new endpoint must pass, from the configuration.
#[derive(Debug, Clone)]
pub struct Checks {
    pub delivery: DeliveryConfig,
    pub egress: EgressGuard,
}

/// A change to one endpoint.
#[derive(Debug)]
pub enum Change {
    /// A new endpoint; refused if the id is taken.
    Create(Box<EndpointConfig>),
    /// New values for some fields (a JSON merge patch over the stored config: `null` removes
    /// an optional field).
    Update(serde_json::Map<String, serde_json::Value>),
    /// A new secret; the current one keeps signing for `overlap`.
    Rotate {
        secret: Secret,
        overlap: Duration,
    },
    Delete,
}

/// Fields a patch may not touch, and what to do instead.
const FIXED_FIELDS: &[(&str, &str)] = &[
    (
        "id",
        "an endpoint's id cannot change; create a new endpoint",
    ),
    (
        "secret",
        "rotate the secret with POST /v1/endpoints/{id}/rotate-secret",
    ),
    (
        "previous_secret",
        "rotate the secret with POST /v1/endpoints/{id}/rotate-secret",
    ),
    (
        "previous_secret_expires_at",
        "rotate the secret with POST /v1/endpoints/{id}/rotate-secret",
    ),
];

/// A change that was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no endpoint with id `{0}`")]
    NotFound(String),
    #[error("endpoint `{0}` exists already")]
    Exists(String),
    #[error("endpoint `{0}` comes from the config file; change it there and restart the gateway")]
    FromConfig(String),
    #[error("{0}")]
    Invalid(String),
}

/// What a committed change left: the endpoint as stored (and why it is disabled, if it is),
/// or the one deleted.
#[derive(Debug)]
pub enum Edited {
    Stored {
        record: StoredEndpoint,
        disabled: Option<String>,
    },
    Deleted(StoredEndpoint),
}

/// An output that may carry an endpoint change to apply: the change itself, or one run under
/// an `Idempotency-Key` (nothing to apply when it was a replay).
pub trait EditOutput {
    fn edited(&self) -> Option<&Result<Edited, Refused>>;
}

impl EditOutput for Result<Edited, Refused> {
    fn edited(&self) -> Option<&Result<Edited, Refused>> {
        Some(self)
    }
}

impl EditOutput for crate::queue::idempotent::Keyed<Result<Edited, Refused>> {
    fn edited(&self) -> Option<&Result<Edited, Refused>> {
        match self {
            Self::Fresh { output, .. } => Some(output),
            Self::Replayed(_) | Self::Mismatch => None,
        }
    }
}

/// Why an endpoint disabled over the API is disabled.
pub const DISABLED_OVER_API: &str = "disabled over the admin API";

/// One change to endpoint `id`, as a unit of work.
pub struct EditEndpoint {
    pub id: String,
    pub change: Option<Change>,
    /// Enable or disable it in the same transaction (create and update).
    pub enabled: Option<bool>,
    pub checks: std::sync::Arc<Checks>,
}

impl UnitOfWork for EditEndpoint {
    type Output = Result<Edited, Refused>;

    fn apply(&mut self, txn: &mut dyn Txn) -> Result<Self::Output, StoreError> {
        let Some(change) = self.change.take() else {
            return Ok(Err(Refused::Invalid(
                "the change was applied already".to_owned(),
            )));
        };
        let now = txn.now();
        let current = txn.stored_endpoint(&self.id)?;
        if let Change::Create(config) = change {
            if current.is_some() {
                return Ok(Err(Refused::Exists(self.id.clone())));
            }
            let record = StoredEndpoint {
                config: *config,
                from_config: false,
                created_at: now,
                updated_at: now,
            };
            if let Err(refused) = self.check(&record) {
                return Ok(Err(refused));
            }
            // Clears what an earlier endpoint with this id left (its disabled state).
            txn.delete_stored_endpoint(&self.id)?;
            txn.put_stored_endpoint(&record)?;
            let disabled = self.set_enabled(txn)?;
            return Ok(Ok(Edited::Stored { record, disabled }));
        }
        let Some(current) = current else {
            return Ok(Err(Refused::NotFound(self.id.clone())));
        };
        if current.from_config {
            return Ok(Err(Refused::FromConfig(self.id.clone())));
        }
        let config = match change {
            Change::Create(_) => unreachable!("handled above"),
            Change::Delete => {
                txn.delete_stored_endpoint(&self.id)?;
                return Ok(Ok(Edited::Deleted(current)));
            }
            Change::Update(patch) => match patched(&current.config, patch) {
                Ok(config) => config,
                Err(refused) => return Ok(Err(refused)),
            },
            Change::Rotate { secret, overlap } => {
                let expires_at = now.saturating_add(overlap.as_millis() as u64);
                EndpointConfig {
                    previous_secret: Some(current.config.secret.clone()),
                    previous_secret_expires_at: Some(rfc3339(expires_at)),
                    secret,
                    ..current.config.clone()
                }
            }
        };
        let record = StoredEndpoint {
            config,
            updated_at: now,
            ..current
        };
        if let Err(refused) = self.check(&record) {
            return Ok(Err(refused));
        }
        txn.put_stored_endpoint(&record)?;
        let disabled = self.set_enabled(txn)?;
        Ok(Ok(Edited::Stored { record, disabled }))
    }
}

impl EditEndpoint {
    /// Applies `enabled` when given; returns why the endpoint is disabled after it.
    fn set_enabled(&self, txn: &mut dyn Txn) -> Result<Option<String>, StoreError> {
        match self.enabled {
            None => txn.endpoint_disabled(&self.id),
            Some(enabled) => {
                let reason = (!enabled).then(|| DISABLED_OVER_API.to_owned());
                txn.set_endpoint_disabled(&self.id, reason.clone())?;
                Ok(reason)
            }
        }
    }

    fn check(&self, record: &StoredEndpoint) -> Result<(), Refused> {
        record
            .config
            .validate(&self.checks.delivery, &self.checks.egress)
            .map_err(|err| Refused::Invalid(err.to_string()))
    }
}

/// `config` with `patch` merged over its fields.
fn patched(
    config: &EndpointConfig,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Result<EndpointConfig, Refused> {
    for (field, instead) in FIXED_FIELDS {
        if patch.contains_key(*field) {
            return Err(Refused::Invalid(format!("{field}: {instead}")));
        }
    }
    let serde_json::Value::Object(mut fields) = serde_json::to_value(config)
        .map_err(|err| Refused::Invalid(format!("the stored endpoint cannot be read: {err}")))?
    else {
        return Err(Refused::Invalid(
            "the stored endpoint is not an object".to_owned(),
        ));
    };
    for (field, value) in patch {
        if value.is_null() {
            fields.remove(&field);
        } else {
            fields.insert(field, value);
        }
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|err| Refused::Invalid(err.to_string()))
}
