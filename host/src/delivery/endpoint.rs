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
    /// The URL for display: as configured, with each query value replaced by `redacted`
    /// (query strings often carry a receiver's token).
    pub url: String,
    /// Where and how requests go.
    pub target: Target,
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

/// The parts of an endpoint's URL the sender uses, worked out once.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or IP address to connect to (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The name the TLS certificate must match; `None` for plain `http`.
    pub tls_name: Option<rustls::pki_types::ServerName<'static>>,
    /// The `Host` header: host, and the port when the URL gives one.
    pub host_header: hyper::header::HeaderValue,
    /// Path and query, the request target of every `POST`.
    pub path: hyper::Uri,
}

impl Target {
    /// Splits an `http` or `https` URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url::Url::parse(url).map_err(|err| err.to_string())?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("scheme `{other}` is not http or https")),
        };
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(address)) => address.to_string(),
            Some(url::Host::Ipv6(address)) => address.to_string(),
            None => return Err("it has no host".to_owned()),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| "it has no port".to_owned())?;
        let tls_name = if tls {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|err| format!("host `{host}` is not a TLS server name: {err}"))?;
            Some(name)
        } else {
            None
        };
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let host_header = hyper::header::HeaderValue::from_str(&authority)
            .map_err(|err| format!("host `{authority}` cannot be a Host header: {err}"))?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let path = path
            .parse()
            .map_err(|err| format!("path `{path}` is not a request target: {err}"))?;
        Ok(Self {
            host,
            port,
            tls_name,
            host_header,
            path,
        })
    }
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

/// `url` with every query value replaced by `redacted`, names kept.
pub fn redacted(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.query().is_none() {
        return url.to_owned();
    }
    let names: Vec<String> = parsed
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(names.iter().map(|name| (name, "redacted")));
    parsed.into()
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
        let target = Target::parse(&config.url).map_err(|reason| EndpointError::Url {
            id: config.id.clone(),
            url: config.url.clone(),
            reason,
        })?;
        let previous_key = match (&config.previous_secret, config.previous_secret_expiry()) {
            (Some(secret), Some(expiry)) => {
                Some((SigningKey::new(secret).map_err(secret_error)?, expiry))
            }
            _ => None,
        };
        Ok(Self {
            id: config.id.clone(),
            url: redacted(&config.url),
            target,
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

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn query_values_are_redacted_and_everything_else_kept() {
        assert_eq!(
            redacted("https://hooks.example/in?token=abc&team=7"),
            "https://hooks.example/in?token=redacted&team=redacted"
        );
        assert_eq!(
            redacted("http://127.0.0.1:9/orders"),
            "http://127.0.0.1:9/orders"
        );
        assert_eq!(
            redacted("https://h.example/p?flag"),
            "https://h.example/p?flag=redacted"
        );
    }
}
