//! An endpoint as the delivery engine uses it: parsed url, prepared keys, effective policy.

use std::time::Duration;

use crate::config::{DeliveryConfig, EndpointConfig};
use crate::delivery::RetryPolicy;
use crate::plugins::PluginStep;
use crate::signing::{SecretError, SigningKey};
use crate::time::UnixMillis;

/// A configured receiver of webhooks, ready to sign and send.
#[derive(Debug)]
pub struct Endpoint {
    pub id: String,
    pub url: reqwest::Url,
    pub event_types: Vec<String>,
    pub key: SigningKey,
    /// The rotated-out key and when it stops signing.
    pub previous_key: Option<(SigningKey, UnixMillis)>,
    pub policy: RetryPolicy,
    pub concurrency: usize,
    pub request_timeout: Duration,
    /// The plugin chain every event for this endpoint runs through, in order.
    pub plugins: Vec<PluginStep>,
}

/// An endpoint whose configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint `{id}`: url `{url}` is not valid: {reason}")]
    Url {
        id: String,
        url: String,
        reason: String,
    },
    #[error("endpoint `{id}`: secret {source}")]
    Secret { id: String, source: SecretError },
}

impl Endpoint {
    /// Builds the runtime form of a validated endpoint config.
    pub fn from_config(
        config: &EndpointConfig,
        defaults: &DeliveryConfig,
    ) -> Result<Self, EndpointError> {
        let secret_error = |source| EndpointError::Secret {
            id: config.id.clone(),
            source,
        };
        let url = reqwest::Url::parse(&config.url).map_err(|err| EndpointError::Url {
            id: config.id.clone(),
            url: config.url.clone(),
            reason: err.to_string(),
        })?;
        let previous_key = match (&config.previous_secret, config.previous_secret_expiry()) {
            (Some(secret), Some(expiry)) => {
                Some((SigningKey::new(secret).map_err(secret_error)?, expiry))
            }
            _ => None,
        };
        Ok(Self {
            id: config.id.clone(),
            url,
            event_types: config.event_types.clone(),
            key: SigningKey::new(&config.secret).map_err(secret_error)?,
            previous_key,
            policy: RetryPolicy {
                schedule: config
                    .retry_schedule
                    .clone()
                    .unwrap_or_else(|| defaults.retry_schedule.clone()),
                jitter: config.retry_jitter.unwrap_or(defaults.retry_jitter),
                max_retry_after: defaults.max_retry_after,
            },
            concurrency: config.concurrency.unwrap_or(defaults.concurrency),
            request_timeout: config.request_timeout.unwrap_or(defaults.request_timeout),
            plugins: config
                .plugins
                .iter()
                .map(|step| PluginStep {
                    name: step.name.clone(),
                    config: serde_json::to_string(&step.config).unwrap_or_else(|_| "{}".to_owned()),
                })
                .collect(),
        })
    }

    /// Whether this endpoint receives events of `event_type`.
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        self.event_types
            .iter()
            .any(|wanted| wanted == "*" || wanted == event_type)
    }

    /// The previous key while it is still valid at `now`.
    pub fn previous_key_at(&self, now: UnixMillis) -> Option<&SigningKey> {
        self.previous_key
            .as_ref()
            .filter(|(_, expiry)| now < *expiry)
            .map(|(key, _)| key)
    }
}
