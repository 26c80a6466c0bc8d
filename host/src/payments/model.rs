//! A payment and the transfers that pay it, as the store keeps them.
//!
//! A payment embeds its transfers: there are few per payment, and the rules always need all
//! of them together. Raw amounts are U256 (stored as hex text by alloy's serde); the API and
//! events speak decimal text.

use alloy::primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::PaymentId;
use crate::time::UnixMillis;

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting; nothing received yet.
    Pending,
    /// Something arrived, less than the amount.
    Underpaid,
    /// The amount (or more) arrived; waiting for the chain's confirmation depth.
    Detected,
    /// Paid at the confirmation depth. Final unless a deeper reorg orphans its transfers.
    Confirmed,
    /// Not fully paid by `expires_at`.
    Expired,
    /// Called off by the merchant before it was paid in full.
    Canceled,
}

impl PaymentStatus {
    /// Whether the payment can still change state by itself (chain progress or time).
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Underpaid | Self::Detected)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Underpaid => "underpaid",
            Self::Detected => "detected",
            Self::Confirmed => "confirmed",
            Self::Expired => "expired",
            Self::Canceled => "canceled",
        }
    }
}

/// What a payment is paid in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRef {
    /// The configured token's id (its lowercase symbol), e.g. `usdc`.
    pub id: String,
    pub contract: Address,
}

/// Where a transfer sits in its transaction: a native value transfer, or an ERC-20 log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferIndex {
    Native,
    Log(u64),
}

/// Coins or tokens that reached a payment's address, keyed by `(tx_hash, index)` on its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub tx_hash: B256,
    pub index: TransferIndex,
    pub block_number: u64,
    pub block_hash: B256,
    /// The block's timestamp, unix seconds: decides whether the transfer came after expiry.
    pub block_time: u64,
    pub from: Address,
    pub value: U256,
    /// Arrived after the payment was confirmed or had expired: recorded, signalled, not counted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

impl Transfer {
    /// Whether `other` is the same on-chain transfer (same transaction and log).
    pub fn same_as(&self, other: &Transfer) -> bool {
        self.tx_hash == other.tx_hash && self.index == other.index
    }

    /// Names this transfer in one block, for idempotency keys.
    pub fn cause(&self) -> String {
        let index = match self.index {
            TransferIndex::Native => "native".to_owned(),
            TransferIndex::Log(index) => index.to_string(),
        };
        format!("{}:{index}@{}", self.tx_hash, self.block_hash)
    }
}

/// One payment the gateway watches for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    /// The configured chain's name, e.g. `ethereum`.
    pub chain: String,
    pub chain_id: u64,
    /// `None` for the chain's native coin.
    pub token: Option<TokenRef>,
    pub decimals: u8,
    pub address: Address,
    /// The watch-only derivation index, when the gateway chose the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation_index: Option<u32>,
    /// The amount asked for, in raw units.
    pub amount_raw: U256,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    /// The merchant's own JSON, returned as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<RawValue>>,
    pub status: PaymentStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<Transfer>,
    /// `payment.underpaid` has been raised (it is raised once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub underpaid_notified: bool,
    /// When the status last changed.
    pub updated_at: UnixMillis,
}

impl Payment {
    /// The sum of the transfers that count toward the amount (late ones do not).
    pub fn paid(&self) -> U256 {
        self.counted().fold(U256::ZERO, |sum, transfer| {
            sum.saturating_add(transfer.value)
        })
    }

    /// Transfers that count toward the amount.
    pub fn counted(&self) -> impl Iterator<Item = &Transfer> {
        self.transfers.iter().filter(|transfer| !transfer.late)
    }
}
