//! Configuration: one TOML file, then environment overrides, then validation.
//!
//! Every field has a default except the admin token and the endpoints' urls and secrets, so a
//! short file is a working file. `host/config.example.toml` documents each field. The original
//! service's `WEBHOOK_URL` / `WEBHOOK_SECRET` variables still work: they define (or override) an
//! endpoint called `default` that receives every event type.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::signing::Secret;
use crate::time::{UnixMillis, parse_rfc3339};

/// The endpoint id that `WEBHOOK_URL` / `WEBHOOK_SECRET` define.
/// The admin token `config.example.toml` ships with; refused, since anyone can read it.
const EXAMPLE_ADMIN_TOKEN: &str = "change-me-to-a-long-random-string";

/// The shortest admin token accepted.
const MIN_ADMIN_TOKEN_CHARS: usize = 24;

pub const DEFAULT_ENDPOINT_ID: &str = "default";

/// A configuration that could not be loaded; the message says which field and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The whole configuration of one gateway process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub egress: EgressConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub payments: PaymentsConfig,
    /// EVM chains to scan for payments.
    #[serde(default)]
    pub chains: Vec<ChainConfig>,
}

/// Which addresses deliveries may reach (see [`crate::delivery::egress`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Addresses or networks (`10.1.0.0/16`, `127.0.0.1`) endpoints may reach although they
    /// are not public. Empty by default: only globally routable addresses.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
}

impl EgressConfig {
    /// The guard these settings describe; the error names the bad entry.
    pub fn guard(&self) -> Result<crate::delivery::egress::EgressGuard, ConfigError> {
        let networks = self
            .allowed_networks
            .iter()
            .enumerate()
            .map(|(index, text)| {
                text.parse().map_err(|reason| {
                    ConfigError::Invalid(format!("egress.allowed_networks[{index}]: {reason}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::delivery::egress::EgressGuard::new(networks))
    }
}

/// Payments: how addresses are chosen and what a payment may carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    /// BIP-32 extended public key (`xpub…`) of the account whose children become payment
    /// addresses (e.g. the key of m/44'/60'/0'/0). Watch-only: the gateway never holds a
    /// private key. Without it, every payment must be given an address.
    pub xpub: Option<String>,
    /// Expiry of a payment created without one.
    #[serde(default = "default_payment_expiry", with = "duration_text")]
    pub default_expiry: Duration,
    /// Largest merchant metadata JSON accepted on a payment, in bytes.
    #[serde(default = "default_metadata_limit")]
    pub metadata_limit_bytes: usize,
    /// How long after a payment ends (confirmed, expired or canceled) its address is still watched, so
    /// late transfers are recorded and signalled.
    #[serde(default = "default_late_window", with = "duration_text")]
    pub late_window: Duration,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            xpub: None,
            default_expiry: default_payment_expiry(),
            metadata_limit_bytes: default_metadata_limit(),
            late_window: default_late_window(),
        }
    }
}

fn default_payment_expiry() -> Duration {
    Duration::from_secs(3600)
}

fn default_metadata_limit() -> usize {
    4096
}

fn default_late_window() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// One EVM chain the scanner follows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// The name payments and events use, e.g. `ethereum`.
    pub name: String,
    /// The EIP-155 chain id; the scanner checks the node reports the same.
    pub chain_id: u64,
    /// JSON-RPC over HTTP.
    pub rpc_url: String,
    /// Blocks a transfer needs, its own included, before its payment is confirmed.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Confirm at the node's `finalized` block instead of a depth.
    #[serde(default)]
    pub use_finalized: bool,
    /// How often to ask for new blocks once caught up.
    #[serde(default = "default_poll_interval", with = "duration_text")]
    pub poll_interval: Duration,
    /// First block to scan on a fresh store; default: the chain's head at first start.
    pub start_block: Option<u64>,
    /// Blocks per scan step while catching up (full blocks are fetched in JSON-RPC batches).
    #[serde(default = "default_batch_blocks")]
    pub batch_blocks: u64,
    /// The native coin's symbol and decimals.
    #[serde(default = "default_native_symbol")]
    pub native_symbol: String,
    #[serde(default = "default_native_decimals")]
    pub native_decimals: u8,
    /// ERC-20 tokens payments may ask for.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// An ERC-20 token on a chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// e.g. `USDC`; its lowercase form is the `token_id` in payments and events.
    pub symbol: String,
    /// The contract address, `0x` and 40 hex digits.
    pub contract: String,
    pub decimals: u8,
}

impl TokenConfig {
    /// The id payments and events use: the lowercase symbol.
    pub fn id(&self) -> String {
        self.symbol.to_ascii_lowercase()
    }
}

fn default_confirmations() -> u64 {
    12
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(2)
}

fn default_batch_blocks() -> u64 {
    200
}

fn default_native_symbol() -> String {
    "ETH".to_owned()
}

fn default_native_decimals() -> u8 {
    18
}

/// The admin HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the admin API binds; port 0 picks a free port (printed on stdout).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token for `/v1`. Required: there is no built-in default.
    pub admin_token: Option<Secret>,
    /// A connection must send a whole request head within this.
    #[serde(default = "default_header_read_timeout", with = "duration_text")]
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this.
    #[serde(default = "default_body_timeout", with = "duration_text")]
    pub body_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Whether `/readyz` and `/metrics` need the bearer token too (`/healthz` never does).
    #[serde(default)]
    pub probes_need_token: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_token: None,
            header_read_timeout: default_header_read_timeout(),
            body_timeout: default_body_timeout(),
            max_connections: default_max_connections(),
            probes_need_token: false,
        }
    }
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_connections() -> usize {
    1024
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8600))
}

/// Where the durable state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the state lives: `redb` (one file, the default) or `postgres` (a database
    /// several nodes share; see [`StoreBackend`]).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The PostgreSQL connection URL (`postgresql://user:password@host:port/dbname`), with
    /// `backend = "postgres"`. Kept as a secret: it may hold a password.
    #[serde(default)]
    pub url: Option<Secret>,
    /// Connections to PostgreSQL this node keeps at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// PostgreSQL: how long a node holds the deliveries it committed or claimed before
    /// another node may take them over. Renewed every third of it while the node lives, so it
    /// bounds how long a dead node's work waits (a shorter lease: sooner, for more renewal
    /// writes), not how long a delivery may take. 3 s to 1 h.
    #[serde(default = "default_claim_lease", with = "duration_text")]
    pub claim_lease: Duration,
    /// The redb file; created on first start.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Memory redb may use to cache the file's pages, in MiB. The working set of a busy
    /// gateway is the newest pages; more cache only helps reads of old records.
    #[serde(default = "default_cache_mib")]
    pub cache_mib: usize,
    /// Settled events (every delivery delivered, dropped or dead-lettered) older than this are
    /// removed with their deliveries, bodies and attempts. Pending deliveries are never removed.
    #[serde(default = "default_retention", with = "duration_text")]
    pub retention: Duration,
    /// Dead-lettered deliveries (and their events) are kept at least this long, so they can
    /// be replayed; a replay makes them pending again.
    #[serde(default = "default_dead_letter_retention", with = "duration_text")]
    pub dead_letter_retention: Duration,
    /// How long an idempotency key answers with its original event; after that the key is
    /// forgotten and the same key publishes a new event.
    #[serde(default = "default_idempotency_window", with = "duration_text")]
    pub idempotency_window: Duration,
    /// How often the retention sweep looks for what has expired.
    #[serde(default = "default_sweep_interval", with = "duration_text")]
    pub sweep_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::default(),
            url: None,
            pool_size: default_pool_size(),
            claim_lease: default_claim_lease(),
            path: default_store_path(),
            cache_mib: default_cache_mib(),
            retention: default_retention(),
            dead_letter_retention: default_dead_letter_retention(),
            idempotency_window: default_idempotency_window(),
            sweep_interval: default_sweep_interval(),
        }
    }
}

/// Which engine holds the durable state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One redb file: nothing to run, one process.
    #[default]
    Redb,
    /// A PostgreSQL database several gateway nodes share (`store.url`); its schema is applied
    /// at start or by `hookgate store migrate`.
    Postgres,
}

fn default_pool_size() -> usize {
    16
}

fn default_claim_lease() -> Duration {
    Duration::from_secs(30)
}

fn default_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
}

fn default_dead_letter_retention() -> Duration {
    Duration::from_secs(90 * 86_400)
}

fn default_idempotency_window() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_sweep_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_cache_mib() -> usize {
    64
}

fn default_store_path() -> PathBuf {
    PathBuf::from("hookgate.redb")
}

/// Delivery defaults; each endpoint may override the retry policy, concurrency and timeout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default = "default_connect_timeout", with = "duration_text")]
    pub connect_timeout: Duration,
    #[serde(default = "default_request_timeout", with = "duration_text")]
    pub request_timeout: Duration,
    /// Delay before attempt 1, 2, …; its length is the number of attempts.
    #[serde(default = "default_retry_schedule", with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    /// Each delay is scaled by a random factor in `1 ± retry_jitter`.
    #[serde(default = "default_retry_jitter")]
    pub retry_jitter: f64,
    /// Upper bound for a receiver's `Retry-After`.
    #[serde(default = "default_max_retry_after", with = "duration_text")]
    pub max_retry_after: Duration,
    /// Requests in flight per endpoint.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            retry_schedule: default_retry_schedule(),
            retry_jitter: default_retry_jitter(),
            max_retry_after: default_max_retry_after(),
            concurrency: default_concurrency(),
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(15)
}

/// Svix / Standard Webhooks style: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub fn default_retry_schedule() -> Vec<Duration> {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    [
        0,
        5,
        5 * MIN,
        30 * MIN,
        2 * HOUR,
        5 * HOUR,
        10 * HOUR,
        10 * HOUR,
    ]
    .into_iter()
    .map(Duration::from_secs)
    .collect()
}

fn default_retry_jitter() -> f64 {
    0.2
}

fn default_max_retry_after() -> Duration {
    Duration::from_secs(3600)
}

fn default_concurrency() -> usize {
    32
}

/// The WASM plugin runtime: where plugins come from and what one call may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Watched directory: each `NAME.wasm` is plugin `NAME`; add, replace or remove files
    /// while the gateway runs. No directory, no plugins.
    pub dir: Option<PathBuf>,
    /// Compiled plugins, keyed by content hash and engine, so a restart does not recompile.
    /// Default: `plugin-cache` next to the redb file.
    pub cache_dir: Option<PathBuf>,
    /// CPU time one call may take before it is interrupted.
    #[serde(default = "default_plugin_time_limit", with = "duration_text")]
    pub time_limit: Duration,
    /// Wall-clock time one call may take, whatever it does (waiting in a host call uses no CPU).
    #[serde(default = "default_plugin_wall_limit", with = "duration_text")]
    pub wall_time_limit: Duration,
    /// Linear memory one plugin instance may grow to, in MiB.
    #[serde(default = "default_plugin_memory_mib")]
    pub memory_limit_mib: usize,
    /// Largest `.wasm` file compiled, in MiB; bigger ones are refused before they are read.
    #[serde(default = "default_max_wasm_mib")]
    pub max_wasm_mib: usize,
    /// Largest output a transform may return (body, content type and headers), in KiB.
    #[serde(default = "default_plugin_output_kib")]
    pub output_limit_kib: usize,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            cache_dir: None,
            time_limit: default_plugin_time_limit(),
            wall_time_limit: default_plugin_wall_limit(),
            memory_limit_mib: default_plugin_memory_mib(),
            output_limit_kib: default_plugin_output_kib(),
            max_wasm_mib: default_max_wasm_mib(),
        }
    }
}

fn default_plugin_time_limit() -> Duration {
    Duration::from_millis(10)
}

fn default_plugin_wall_limit() -> Duration {
    Duration::from_millis(50)
}

fn default_plugin_memory_mib() -> usize {
    16
}

fn default_max_wasm_mib() -> usize {
    32
}

fn default_plugin_output_kib() -> usize {
    256
}

/// One step of an endpoint's plugin chain.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginStepConfig {
    /// The plugin's name: its file is `NAME.wasm` in the plugins directory.
    pub name: String,
    /// Handed to the plugin as JSON text; any TOML table or value.
    #[serde(default = "empty_table")]
    pub config: toml::Value,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(toml::Table::new())
}

/// One receiver of webhooks: from the config file, or created over the admin API (the same
/// fields in JSON). Serialized only into the store, which keeps the secrets.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub id: String,
    pub url: String,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub secret: Secret,
    /// The secret being rotated out; it keeps signing until `previous_secret_expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<Secret>,
    /// RFC 3339; required with `previous_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    /// Event types this endpoint receives; `"*"` means all.
    #[serde(default = "all_event_types")]
    pub event_types: Vec<String>,
    #[serde(
        default,
        with = "optional_duration_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_schedule: Option<Vec<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_jitter: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(
        default,
        with = "optional_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<Duration>,
    /// Plugins run in order on each event for this endpoint: every filter may drop it, each
    /// transform reshapes the body the next one sees.
    #[serde(default)]
    pub plugins: Vec<PluginStepConfig>,
}

impl EndpointConfig {
    /// Checks one endpoint against the delivery defaults and the egress guard; the message
    /// names the endpoint and the field. The config file and the admin API both use it.
    pub fn validate(
        &self,
        delivery: &DeliveryConfig,
        egress: &crate::delivery::egress::EgressGuard,
    ) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let at = format!("endpoint `{}`", self.id);
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid(format!(
                "{at}: ids use letters, digits, `-` and `_` only (and are not empty)"
            ));
        }
        match crate::delivery::endpoint::Target::parse(&self.url) {
            Err(reason) => {
                return invalid(format!(
                    "{at}: url `{}` is not an http(s) URL: {reason}",
                    self.url
                ));
            }
            Ok(target) => {
                if let Err(refused) = egress.check_host(&target.host) {
                    return invalid(format!("{at}: url host {refused}"));
                }
            }
        }
        if url::Url::parse(&self.url)
            .is_ok_and(|url| !url.username().is_empty() || url.password().is_some())
        {
            return invalid(format!(
                "{at}: url must not carry a user name or password (it would show in logs and \
                 the API); authenticate the receiver with the signature or a plugin header"
            ));
        }
        self.secret
            .validate()
            .map_err(|err| ConfigError::Invalid(format!("{at}: secret {err}")))?;
        match (&self.previous_secret, &self.previous_secret_expires_at) {
            (Some(previous), Some(expiry)) => {
                previous
                    .validate()
                    .map_err(|err| ConfigError::Invalid(format!("{at}: previous_secret {err}")))?;
                if parse_rfc3339(expiry).is_err() {
                    return invalid(format!(
                        "{at}: previous_secret_expires_at `{expiry}` is not RFC 3339 \
                         (like 2026-12-01T00:00:00Z)"
                    ));
                }
            }
            (Some(_), None) => {
                return invalid(format!(
                    "{at}: previous_secret needs previous_secret_expires_at, so the old \
                     secret stops signing at a known time"
                ));
            }
            (None, Some(_)) => {
                return invalid(format!(
                    "{at}: previous_secret_expires_at is set without previous_secret"
                ));
            }
            (None, None) => {}
        }
        if self.event_types.is_empty() {
            return invalid(format!(
                "{at}: event_types is empty; use [\"*\"] for every type"
            ));
        }
        for step in &self.plugins {
            if !is_plugin_name(&step.name) {
                return invalid(format!(
                    "{at}: plugin name `{}` must be letters, digits, `-` and `_` (the file \
                     is NAME.wasm)",
                    step.name
                ));
            }
        }
        validate_policy(
            &at,
            self.retry_schedule
                .as_deref()
                .unwrap_or(&delivery.retry_schedule),
            self.retry_jitter.unwrap_or(delivery.retry_jitter),
            self.concurrency.unwrap_or(delivery.concurrency),
        )?;
        if self
            .concurrency
            .is_some_and(|workers| workers > MAX_CONCURRENCY)
        {
            return invalid(format!(
                "{at}: concurrency must be at most {MAX_CONCURRENCY}"
            ));
        }
        if self
            .request_timeout
            .is_some_and(|timeout| timeout.is_zero())
        {
            return invalid(format!("{at}: request_timeout must be above zero"));
        }
        if let Some(description) = &self.description
            && description.chars().count() > MAX_DESCRIPTION_CHARS
        {
            return invalid(format!(
                "{at}: description is over {MAX_DESCRIPTION_CHARS} characters"
            ));
        }
        Ok(())
    }
}

/// Longest endpoint description kept.
const MAX_DESCRIPTION_CHARS: usize = 1_000;

/// Most workers (and connections) one endpoint may have.
pub const MAX_CONCURRENCY: usize = 256;

fn all_event_types() -> Vec<String> {
    vec!["*".to_owned()]
}

impl EndpointConfig {
    /// An endpoint built from the original service's two variables.
    fn from_legacy_env(url: String, secret: Secret) -> Self {
        Self {
            id: DEFAULT_ENDPOINT_ID.to_owned(),
            url,
            description: None,
            secret,
            previous_secret: None,
            previous_secret_expires_at: None,
            event_types: all_event_types(),
            retry_schedule: None,
            retry_jitter: None,
            concurrency: None,
            request_timeout: None,
            plugins: Vec::new(),
        }
    }

    /// The previous secret's expiry in unix milliseconds, when one is configured.
    pub fn previous_secret_expiry(&self) -> Option<UnixMillis> {
        self.previous_secret_expires_at
            .as_deref()
            .and_then(|text| parse_rfc3339(text).ok())
    }
}

impl Config {
    /// Reads `path`, applies the process environment and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, |name| std::env::var(name).ok())
    }

    /// Parses `text` (from `path`, for messages), applies `env` and validates.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(listen) = env("HOOKGATE_LISTEN") {
            self.server.listen = listen.parse().map_err(|err| ConfigError::Env {
                name: "HOOKGATE_LISTEN",
                message: format!("`{listen}` is not an address like 127.0.0.1:8600 ({err})"),
            })?;
        }
        if let Some(token) = env("HOOKGATE_ADMIN_TOKEN") {
            self.server.admin_token = Some(Secret::new(token));
        }
        if let Some(path) = env("HOOKGATE_DB") {
            self.store.path = PathBuf::from(path);
        }
        if let Some(url) = env("HOOKGATE_DATABASE_URL") {
            self.store.url = Some(Secret::new(url));
        }
        match (env("WEBHOOK_URL"), env("WEBHOOK_SECRET")) {
            (Some(url), Some(secret)) => {
                let secret = Secret::new(secret);
                match self
                    .endpoints
                    .iter_mut()
                    .find(|endpoint| endpoint.id == DEFAULT_ENDPOINT_ID)
                {
                    Some(endpoint) => {
                        endpoint.url = url;
                        endpoint.secret = secret;
                    }
                    None => self
                        .endpoints
                        .push(EndpointConfig::from_legacy_env(url, secret)),
                }
            }
            (Some(_), None) => {
                return Err(ConfigError::Env {
                    name: "WEBHOOK_SECRET",
                    message: "WEBHOOK_URL is set but WEBHOOK_SECRET is not; every delivery is \
                              signed, so set a secret for the default endpoint"
                        .to_owned(),
                });
            }
            (None, _) => {}
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        const GENERATE: &str = "generate one with `openssl rand -hex 32`";
        match &self.server.admin_token {
            None => {
                return invalid(format!(
                    "server.admin_token is not set: set it in the config file or in \
                     HOOKGATE_ADMIN_TOKEN (there is no default token); {GENERATE}"
                ));
            }
            Some(token) if token.expose() == EXAMPLE_ADMIN_TOKEN => {
                return invalid(format!(
                    "server.admin_token is still the example's placeholder, which anyone can \
                     read; {GENERATE}"
                ));
            }
            Some(token) if token.expose().chars().count() < MIN_ADMIN_TOKEN_CHARS => {
                return invalid(format!(
                    "server.admin_token must be at least {MIN_ADMIN_TOKEN_CHARS} characters; \
                     {GENERATE}"
                ));
            }
            Some(_) => {}
        }
        if self.server.header_read_timeout.is_zero()
            || self.server.body_timeout.is_zero()
            || self.server.max_connections == 0
        {
            return invalid(
                "server: header_read_timeout, body_timeout and max_connections must be above zero"
                    .to_owned(),
            );
        }
        let store = &self.store;
        if store.cache_mib == 0
            || store.retention.is_zero()
            || store.dead_letter_retention.is_zero()
            || store.idempotency_window.is_zero()
            || store.sweep_interval.is_zero()
        {
            return invalid(
                "store: cache_mib, retention, dead_letter_retention, idempotency_window and \
                 sweep_interval must be above zero"
                    .to_owned(),
            );
        }
        if store.backend == StoreBackend::Postgres && store.url.is_none() {
            return invalid(
                "store.url is required with backend = \"postgres\" (or set \
                 HOOKGATE_DATABASE_URL), e.g. postgresql://hookgate@127.0.0.1:5432/hookgate"
                    .to_owned(),
            );
        }
        if store.pool_size == 0 {
            return invalid("store.pool_size must be at least 1".to_owned());
        }
        if !(Duration::from_secs(3)..=Duration::from_secs(3_600)).contains(&store.claim_lease) {
            return invalid("store.claim_lease must be between 3s and 1h".to_owned());
        }
        let plugins = &self.plugins;
        if plugins.time_limit.is_zero()
            || plugins.wall_time_limit.is_zero()
            || plugins.memory_limit_mib == 0
            || plugins.max_wasm_mib == 0
            || plugins.output_limit_kib == 0
        {
            return invalid(
                "plugins: time_limit, wall_time_limit, memory_limit_mib, output_limit_kib and \
                 max_wasm_mib must be above zero"
                    .to_owned(),
            );
        }
        validate_policy(
            "delivery",
            &self.delivery.retry_schedule,
            self.delivery.retry_jitter,
            self.delivery.concurrency,
        )?;
        let egress = self.egress.guard()?;
        let mut seen = HashSet::new();
        for endpoint in &self.endpoints {
            if !seen.insert(endpoint.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "endpoint `{}` is defined twice",
                    endpoint.id
                )));
            }
            endpoint.validate(&self.delivery, &egress)?;
        }
        self.validate_chains()
    }

    fn validate_chains(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.payments.metadata_limit_bytes == 0 {
            return invalid("payments.metadata_limit_bytes must be above zero".to_owned());
        }
        if self.payments.default_expiry.is_zero() {
            return invalid("payments.default_expiry must be above zero".to_owned());
        }
        let mut names = HashSet::new();
        for (index, chain) in self.chains.iter().enumerate() {
            let at = format!("chains[{index}]");
            if chain.name.is_empty()
                || !chain
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return invalid(format!(
                    "{at}.name: `{}` must be letters, digits, `-` and `_` (and not empty)",
                    chain.name
                ));
            }
            if !names.insert(chain.name.as_str()) {
                return invalid(format!(
                    "{at}.name: chain `{}` is defined twice",
                    chain.name
                ));
            }
            let at = format!("chains[{index}] (`{}`)", chain.name);
            match url::Url::parse(&chain.rpc_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => {
                    return invalid(format!(
                        "{at}.rpc_url: `{}` is not an http(s) URL",
                        chain.rpc_url
                    ));
                }
            }
            if chain.confirmations == 0 {
                return invalid(format!(
                    "{at}.confirmations must be at least 1 (the block itself)"
                ));
            }
            if chain.poll_interval.is_zero() {
                return invalid(format!("{at}.poll_interval must be above zero"));
            }
            if !(1..=10_000).contains(&chain.batch_blocks) {
                return invalid(format!("{at}.batch_blocks must be in 1..=10000"));
            }
            if chain.native_decimals > 77 {
                return invalid(format!("{at}.native_decimals must be at most 77"));
            }
            let mut symbols = HashSet::new();
            for (position, token) in chain.tokens.iter().enumerate() {
                let at = format!("{at}.tokens[{position}]");
                if token.symbol.is_empty()
                    || !token.symbol.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    return invalid(format!(
                        "{at}.symbol: `{}` must be letters and digits",
                        token.symbol
                    ));
                }
                if !symbols.insert(token.id()) {
                    return invalid(format!(
                        "{at}.symbol: `{}` is listed twice on this chain",
                        token.symbol
                    ));
                }
                if token
                    .contract
                    .parse::<alloy::primitives::Address>()
                    .is_err()
                {
                    return invalid(format!(
                        "{at}.contract: `{}` is not an address (0x and 40 hex digits)",
                        token.contract
                    ));
                }
                if token.decimals > 77 {
                    return invalid(format!("{at}.decimals must be at most 77"));
                }
            }
        }
        Ok(())
    }
}

/// Whether `name` can name a plugin (and its file, `NAME.wasm`).
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn validate_policy(
    at: &str,
    schedule: &[Duration],
    jitter: f64,
    concurrency: usize,
) -> Result<(), ConfigError> {
    if schedule.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{at}: retry_schedule needs at least one entry (the delay before the first attempt)"
        )));
    }
    if !(0.0..1.0).contains(&jitter) {
        return Err(ConfigError::Invalid(format!(
            "{at}: retry_jitter must be in [0, 1), got {jitter}"
        )));
    }
    if concurrency == 0 {
        return Err(ConfigError::Invalid(format!(
            "{at}: concurrency must be at least 1"
        )));
    }
    Ok(())
}

/// Durations written as text: `"500ms"`, `"5s"`, `"30m"`, `"2h"`.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// The text `parse` reads back exactly: whole milliseconds when that is exact.
    pub fn text(duration: Duration) -> String {
        if duration.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", duration.as_millis())
        } else {
            format!("{}ns", duration.as_nanos())
        }
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text).map_err(|err| {
            format!("`{text}` is not a duration like \"500ms\", \"5s\" or \"2h\" ({err})")
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

mod optional_duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn serialize<S: serde::Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::Serialize as _;
        value.map(super::duration_text::text).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::duration_text::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn parse(texts: &[String]) -> Result<Vec<Duration>, String> {
        texts
            .iter()
            .map(|text| super::duration_text::parse(text))
            .collect()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        parse(&texts).map_err(serde::de::Error::custom)
    }
}

mod optional_duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn serialize<S: serde::Serializer>(
        value: &Option<Vec<Duration>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::Serialize as _;
        value
            .as_ref()
            .map(|list| {
                list.iter()
                    .copied()
                    .map(super::duration_text::text)
                    .collect::<Vec<_>>()
            })
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<Duration>>, D::Error> {
        Option::<Vec<String>>::deserialize(deserializer)?
            .map(|texts| super::duration_list::parse(&texts).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [egress]
        allowed_networks = ["127.0.0.1"]
        [server]
        admin_token = "a-token-long-enough-for-tests"
        [[endpoints]]
        id = "orders"
        url = "http://127.0.0.1:9000/hook"
        secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
    "#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), |name| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn the_documented_example_config_loads_once_its_token_is_replaced() {
        let example = include_str!("../config.example.toml");
        let err = load(example, &[]).unwrap_err();
        assert!(err.to_string().contains("placeholder"), "{err}");
        assert!(err.to_string().contains("openssl rand -hex 32"), "{err}");
        let token = [("HOOKGATE_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef")];
        let config = load(example, &token).unwrap();
        assert_eq!(config.endpoints[0].id, "orders");
        assert_eq!(config.plugins.memory_limit_mib, 16);
    }

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let config = load(MINIMAL, &[]).unwrap();
        assert_eq!(config.server.listen, default_listen());
        assert_eq!(config.delivery.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.delivery.request_timeout, Duration::from_secs(15));
        assert_eq!(config.delivery.retry_schedule.len(), 8);
        assert_eq!(config.delivery.retry_schedule[2], Duration::from_secs(300));
        assert_eq!(config.endpoints[0].event_types, vec!["*"]);
    }

    #[test]
    fn legacy_webhook_variables_define_the_default_endpoint() {
        let config = load(
            MINIMAL,
            &[
                ("WEBHOOK_URL", "http://127.0.0.1:1/x"),
                ("WEBHOOK_SECRET", "s3cret"),
            ],
        )
        .unwrap();
        let default = config
            .endpoints
            .iter()
            .find(|endpoint| endpoint.id == DEFAULT_ENDPOINT_ID)
            .unwrap();
        assert_eq!(default.url, "http://127.0.0.1:1/x");
        assert_eq!(default.secret.expose(), "s3cret");
    }

    #[test]
    fn webhook_url_without_a_secret_is_refused_with_a_reason() {
        let err = load(MINIMAL, &[("WEBHOOK_URL", "http://127.0.0.1:1/x")]).unwrap_err();
        assert!(err.to_string().contains("WEBHOOK_SECRET"), "{err}");
    }

    #[test]
    fn the_store_is_redb_unless_postgres_is_chosen_with_a_url() {
        let config = load(MINIMAL, &[]).unwrap();
        assert_eq!(config.store.backend, StoreBackend::Redb);
        assert_eq!(config.store.pool_size, 16);

        let without_url = format!("{MINIMAL}\n[store]\nbackend = \"postgres\"\n");
        let err = load(&without_url, &[]).unwrap_err().to_string();
        assert!(err.contains("store.url is required"), "{err}");

        let url = "postgresql://hookgate:pw@127.0.0.1:5432/hookgate";
        let config = load(&without_url, &[("HOOKGATE_DATABASE_URL", url)]).unwrap();
        assert_eq!(config.store.backend, StoreBackend::Postgres);
        assert_eq!(config.store.url.as_ref().map(Secret::expose), Some(url));
        assert!(
            !format!("{:?}", config.store).contains("pw@"),
            "the URL's password never prints"
        );

        let unknown = format!("{MINIMAL}\n[store]\nbackend = \"sqlite\"\n");
        let err = load(&unknown, &[]).unwrap_err().to_string();
        assert!(err.contains("unknown variant `sqlite`"), "{err}");
    }

    #[test]
    fn a_missing_admin_token_is_refused() {
        let err = load("", &[]).unwrap_err();
        assert!(err.to_string().contains("admin_token"), "{err}");
    }

    #[test]
    fn a_short_admin_token_is_refused_with_how_to_make_one() {
        let short = MINIMAL.replace("a-token-long-enough-for-tests", "only-23-characters-long");
        let err = load(&short, &[]).unwrap_err();
        assert!(err.to_string().contains("at least 24 characters"), "{err}");
        assert!(err.to_string().contains("openssl rand"), "{err}");
    }

    #[test]
    fn a_bad_duration_names_the_text() {
        let text = MINIMAL.replace(
            "[server]",
            "[delivery]\nrequest_timeout = \"soon\"\n[server]",
        );
        let err = load(&text, &[]).unwrap_err();
        assert!(
            err.to_string().contains("`soon` is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn endpoint_urls_with_credentials_are_refused_without_echoing_them() {
        let text = MINIMAL.replace(
            "http://127.0.0.1:9000/hook",
            "http://merchant:hunter2@127.0.0.1:9000/hook",
        );
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("must not carry a user name or password"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_previous_secret_needs_an_expiry() {
        let text = format!("{MINIMAL}\nprevious_secret = \"old-secret\"\n");
        let err = load(&text, &[]).unwrap_err();
        assert!(
            err.to_string().contains("previous_secret_expires_at"),
            "{err}"
        );
    }

    #[test]
    fn endpoint_plugin_chains_carry_their_config() {
        let text = format!(
            "{MINIMAL}\n[[endpoints.plugins]]\nname = \"min-amount\"\nconfig = {{ default = \"10\" }}\n"
        );
        let config = load(&text, &[]).unwrap();
        let step = &config.endpoints[0].plugins[0];
        assert_eq!(step.name, "min-amount");
        assert_eq!(step.config["default"].as_str(), Some("10"));
        assert_eq!(config.plugins.time_limit, Duration::from_millis(10));
    }

    const CHAIN: &str = r#"
        [[chains]]
        name = "anvil"
        chain_id = 31337
        rpc_url = "http://127.0.0.1:8545"
        confirmations = 3
        [[chains.tokens]]
        symbol = "USDC"
        contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
        decimals = 6
    "#;

    #[test]
    fn a_chain_gets_defaults_and_its_tokens() {
        let config = load(&format!("{MINIMAL}{CHAIN}"), &[]).unwrap();
        let chain = &config.chains[0];
        assert_eq!(chain.confirmations, 3);
        assert_eq!(chain.poll_interval, Duration::from_secs(2));
        assert!(!chain.use_finalized);
        assert_eq!(chain.native_decimals, 18);
        assert_eq!(chain.tokens[0].id(), "usdc");
        assert_eq!(config.payments.default_expiry, Duration::from_secs(3600));
    }

    #[test]
    fn chain_validation_errors_name_the_field() {
        let cases = [
            (
                "rpc_url = \"http://127.0.0.1:8545\"",
                "rpc_url = \"ftp://x\"",
                "chains[0] (`anvil`).rpc_url",
            ),
            (
                "confirmations = 3",
                "confirmations = 0",
                "chains[0] (`anvil`).confirmations",
            ),
            (
                "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                "0x5FbD",
                "chains[0] (`anvil`).tokens[0].contract",
            ),
            ("name = \"anvil\"", "name = \"an vil\"", "chains[0].name"),
        ];
        for (from, to, field) in cases {
            let text = format!("{MINIMAL}{}", CHAIN.replace(from, to));
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
        let twice = format!("{MINIMAL}{CHAIN}{CHAIN}");
        let err = load(&twice, &[]).unwrap_err().to_string();
        assert!(err.contains("defined twice"), "{err}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let config = load(MINIMAL, &[]).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("C2FVsBQIhrscChlQIMV"), "{printed}");
        assert!(!printed.contains("a-long-token"), "{printed}");
    }
}
