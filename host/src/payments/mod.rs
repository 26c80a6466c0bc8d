//! Payments: what the gateway watches for and decides on.
//!
//! * [`model`] — a payment and its transfers as stored.
//! * [`amount`] — exact decimal text ⇄ raw U256 units.
//! * [`rules`] — the pure confirmation rules (detected, confirmed, expired, canceled, late,
//!   reorged).
//! * [`derive`] — watch-only addresses from an `xpub`.
//! * [`events`] — the webhook data of each payment event.
//! * [`work`] — units of work that apply the rules inside the writer's transaction.
//!
//! This file turns a create request into a validated [`work::CreatePayment`].

pub mod amount;
pub mod derive;
pub mod events;
pub mod model;
pub mod rules;
pub mod work;

use std::collections::HashMap;
use std::sync::Arc;

use alloy::primitives::Address;
use serde_json::value::RawValue;

use crate::config::{ChainConfig, Config};
use crate::time::{UnixMillis, parse_rfc3339};
pub use derive::{ExtendedPublicKey, XpubError};
pub use model::{Payment, PaymentStatus, TokenRef, Transfer, TransferIndex};
pub use work::{CancelPayment, Canceled, CreatePayment, Created, NewPayment};

/// A request to create a payment, as a client sends it.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PaymentRequest)]
pub struct CreateRequest {
    /// A configured chain's name.
    pub chain: String,
    /// A configured token's id or symbol; absent or null for the native coin.
    #[serde(default)]
    pub token: Option<String>,
    /// Decimal text in the token's units, e.g. `"12.5"`.
    pub amount: String,
    /// RFC 3339; default: now plus `payments.default_expiry`.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The address to watch; default: the next one derived from `payments.xpub`.
    #[serde(default)]
    pub address: Option<String>,
    /// Free JSON the merchant gets back in every event.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Box<RawValue>>,
}

/// A create request that cannot be accepted; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("chain: `{0}` is not a configured chain (see [[chains]] in the config)")]
    UnknownChain(String),
    #[error("token: `{token}` is not configured on chain `{chain}`")]
    UnknownToken { chain: String, token: String },
    #[error("amount: {0}")]
    Amount(#[from] amount::AmountError),
    #[error("expires_at: `{0}` is not RFC 3339 (like 2026-12-01T00:00:00Z)")]
    Expiry(String),
    #[error("expires_at: {0} is not in the future")]
    ExpiryPast(String),
    #[error("address: `{0}` is not an address (0x and 40 hex digits)")]
    Address(String),
    #[error("metadata: {size} bytes is over the limit of {limit} (payments.metadata_limit_bytes)")]
    MetadataTooLarge { size: usize, limit: usize },
    #[error("metadata: must be a JSON object")]
    MetadataNotObject,
}

/// The configured chains and address source, ready to validate create requests.
#[derive(Debug)]
pub struct Payments {
    chains: HashMap<String, ChainConfig>,
    xpub: Option<Arc<ExtendedPublicKey>>,
    default_expiry_ms: u64,
    metadata_limit: usize,
}

/// `payments.xpub` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("payments.xpub {0}")]
pub struct SetupError(#[from] XpubError);

impl Payments {
    pub fn new(config: &Config) -> Result<Self, SetupError> {
        let xpub = match &config.payments.xpub {
            Some(text) => Some(Arc::new(ExtendedPublicKey::parse(text)?)),
            None => None,
        };
        Ok(Self {
            chains: config
                .chains
                .iter()
                .map(|chain| (chain.name.clone(), chain.clone()))
                .collect(),
            xpub,
            default_expiry_ms: config.payments.default_expiry.as_millis() as u64,
            metadata_limit: config.payments.metadata_limit_bytes,
        })
    }

    /// Checks a request against the configuration; `now` in unix milliseconds.
    pub fn validate(
        &self,
        request: CreateRequest,
        now: UnixMillis,
    ) -> Result<CreatePayment, CreateError> {
        let chain = self
            .chains
            .get(&request.chain)
            .ok_or_else(|| CreateError::UnknownChain(request.chain.clone()))?;
        let (token, decimals) = match request.token.as_deref() {
            None | Some("") => (None, chain.native_decimals),
            Some(wanted) => {
                let config = chain
                    .tokens
                    .iter()
                    .find(|token| token.id() == wanted.to_ascii_lowercase())
                    .ok_or_else(|| CreateError::UnknownToken {
                        chain: chain.name.clone(),
                        token: wanted.to_owned(),
                    })?;
                let contract = config
                    .contract
                    .parse()
                    .expect("token contracts are validated at config load");
                (
                    Some(TokenRef {
                        id: config.id(),
                        contract,
                    }),
                    config.decimals,
                )
            }
        };
        let amount_raw = amount::parse(&request.amount, decimals)?;
        let expires_at = match &request.expires_at {
            Some(text) => {
                let at = parse_rfc3339(text).map_err(|_| CreateError::Expiry(text.clone()))?;
                if at <= now {
                    return Err(CreateError::ExpiryPast(text.clone()));
                }
                at
            }
            None => now.saturating_add(self.default_expiry_ms),
        };
        let address = match &request.address {
            Some(text) => Some(
                text.parse::<Address>()
                    .map_err(|_| CreateError::Address(text.clone()))?,
            ),
            None => None,
        };
        if let Some(metadata) = &request.metadata {
            let size = metadata.get().len();
            if size > self.metadata_limit {
                return Err(CreateError::MetadataTooLarge {
                    size,
                    limit: self.metadata_limit,
                });
            }
            if !metadata.get().trim_start().starts_with('{') {
                return Err(CreateError::MetadataNotObject);
            }
        }
        Ok(CreatePayment {
            spec: NewPayment {
                chain: chain.name.clone(),
                chain_id: chain.chain_id,
                token,
                decimals,
                amount_raw,
                expires_at,
                metadata: request.metadata,
                address,
            },
            xpub: self.xpub.clone(),
        })
    }
}
