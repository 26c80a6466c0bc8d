//! JSON-RPC to one EVM node, over alloy's HTTP client.
//!
//! Only what the scanner reads, deserialized into lean types (a full alloy block decodes every
//! transaction field; the scanner needs four). Full blocks and receipts go out in JSON-RPC
//! batches; Transfer logs in block ranges that halve when the node refuses a range as too
//! large and grow back after successes. Every error is classified: the node said no
//! ([`RpcError::Node`]), the node could not be reached ([`RpcError::Unreachable`]), or it
//! answered something that is not what JSON-RPC promises ([`RpcError::Garbage`]).

use std::ops::RangeInclusive;
use std::time::Duration;

use alloy::primitives::{Address, B256, U64, U256};
use alloy::rpc::client::RpcClient;
use alloy::transports::http::Http;
use alloy::transports::{TransportError, TransportErrorKind};
use serde::Deserialize;
use serde_json::json;

/// The ERC-20 `Transfer(address,address,uint256)` topic.
pub const TRANSFER_TOPIC: B256 =
    alloy::primitives::b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");

/// Most requests in one JSON-RPC batch.
const MAX_BATCH: usize = 200;

/// A failed call, classified.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("the node refused `{method}`: {message} (code {code})")]
    Node {
        method: &'static str,
        code: i64,
        message: String,
    },
    #[error("cannot reach the node for `{method}`: {reason}")]
    Unreachable {
        method: &'static str,
        reason: String,
    },
    #[error("the node answered `{method}` with something that is not valid JSON-RPC: {reason}")]
    Garbage {
        method: &'static str,
        reason: String,
    },
}

impl RpcError {
    fn from_transport(method: &'static str, err: TransportError) -> Self {
        match err {
            TransportError::ErrorResp(payload) => Self::Node {
                method,
                code: payload.code,
                message: clip(&payload.message),
            },
            TransportError::DeserError { err, text } => Self::Garbage {
                method,
                reason: format!("{err} in `{}`", clip(&text)),
            },
            TransportError::NullResp => Self::Garbage {
                method,
                reason: "null where a value was expected".to_owned(),
            },
            TransportError::Transport(TransportErrorKind::MissingBatchResponse(id)) => {
                Self::Garbage {
                    method,
                    reason: format!("a batch answer lacks request {id}"),
                }
            }
            other => Self::Unreachable {
                method,
                reason: clip(&other.to_string()),
            },
        }
    }

    /// Whether the node refused a log query for its size (range or result count).
    fn is_too_large(&self) -> bool {
        let Self::Node { code, message, .. } = self else {
            return false;
        };
        let message = message.to_ascii_lowercase();
        *code == -32005
            || [
                "range",
                "too many",
                "more than",
                "limit",
                "too large",
                "size exceeded",
                "timeout",
            ]
            .iter()
            .any(|needle| message.contains(needle))
    }
}

/// Keeps error text short: a garbage answer can be megabytes.
fn clip(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A block as the scanner needs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    pub number: U64,
    pub hash: B256,
    pub parent_hash: B256,
    pub timestamp: U64,
    pub transactions: Vec<Tx>,
}

/// A transaction's fields that tell a native transfer.
#[derive(Debug, Clone, Deserialize)]
pub struct Tx {
    pub hash: B256,
    pub from: Address,
    #[serde(default)]
    pub to: Option<Address>,
    pub value: U256,
}

/// An event log.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: alloy::primitives::Bytes,
    pub block_number: U64,
    pub block_hash: B256,
    pub transaction_hash: B256,
    pub log_index: U64,
    #[serde(default)]
    pub removed: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Receipt {
    status: Option<U64>,
}

#[derive(Debug, Clone, Deserialize)]
struct Header {
    number: U64,
    hash: B256,
}

/// One node's JSON-RPC endpoint.
#[derive(Clone)]
pub struct ChainRpc {
    client: RpcClient,
    /// The current `eth_getLogs` range; adapts to what the node accepts.
    log_range: u64,
    max_log_range: u64,
}

impl ChainRpc {
    /// A client for `url` whose every request gives up after `timeout`.
    pub fn new(url: &str, timeout: Duration, max_log_range: u64) -> Result<Self, String> {
        let url: url::Url = url.parse().map_err(|err| format!("rpc_url: {err}"))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
        let is_local = url
            .host_str()
            .is_some_and(|host| host == "localhost" || host.starts_with("127.") || host == "[::1]");
        let client = RpcClient::new(Http::with_client(http, url), is_local);
        Ok(Self {
            client,
            log_range: max_log_range,
            max_log_range,
        })
    }

    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        let id: U64 = self.call("eth_chainId", json!([])).await?;
        Ok(id.to())
    }

    pub async fn head(&self) -> Result<u64, RpcError> {
        let number: U64 = self.call("eth_blockNumber", json!([])).await?;
        Ok(number.to())
    }

    /// The `finalized` block's number; `None` when the node has no such tag yet.
    pub async fn finalized(&self) -> Result<Option<u64>, RpcError> {
        let header: Option<Header> = self
            .call("eth_getBlockByNumber", json!(["finalized", false]))
            .await
            .or_else(|err| match err {
                RpcError::Node { .. } => Ok(None),
                other => Err(other),
            })?;
        Ok(header.map(|header| header.number.to()))
    }

    /// Full blocks `range`, in order; an error if the node lacks any of them.
    pub async fn blocks(&self, range: RangeInclusive<u64>) -> Result<Vec<Block>, RpcError> {
        const METHOD: &str = "eth_getBlockByNumber";
        let numbers: Vec<u64> = range.collect();
        let mut blocks = Vec::with_capacity(numbers.len());
        for chunk in numbers.chunks(MAX_BATCH) {
            let answers: Vec<Option<Block>> = self
                .batch(METHOD, chunk.iter().map(|n| json!([U64::from(*n), true])))
                .await?;
            for (number, block) in chunk.iter().zip(answers) {
                let block = block.ok_or_else(|| RpcError::Node {
                    method: METHOD,
                    code: 0,
                    message: format!("block {number} is not available yet"),
                })?;
                if block.number.to::<u64>() != *number {
                    return Err(RpcError::Garbage {
                        method: METHOD,
                        reason: format!("asked for block {number}, got {}", block.number),
                    });
                }
                blocks.push(block);
            }
        }
        Ok(blocks)
    }

    /// The hashes of blocks `numbers` on the node's canonical chain (`None` where it has none).
    pub async fn block_hashes(&self, numbers: &[u64]) -> Result<Vec<Option<B256>>, RpcError> {
        let mut hashes = Vec::with_capacity(numbers.len());
        for chunk in numbers.chunks(MAX_BATCH) {
            let headers: Vec<Option<Header>> = self
                .batch(
                    "eth_getBlockByNumber",
                    chunk.iter().map(|n| json!([U64::from(*n), false])),
                )
                .await?;
            hashes.extend(headers.into_iter().map(|header| header.map(|h| h.hash)));
        }
        Ok(hashes)
    }

    /// Which of `hashes` executed successfully (receipt status 1).
    pub async fn succeeded(&self, hashes: &[B256]) -> Result<Vec<bool>, RpcError> {
        let mut statuses = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(MAX_BATCH) {
            let receipts: Vec<Option<Receipt>> = self
                .batch(
                    "eth_getTransactionReceipt",
                    chunk.iter().map(|hash| json!([hash])),
                )
                .await?;
            for (hash, receipt) in chunk.iter().zip(receipts) {
                let receipt = receipt.ok_or_else(|| RpcError::Node {
                    method: "eth_getTransactionReceipt",
                    code: 0,
                    message: format!("no receipt yet for mined transaction {hash}"),
                })?;
                statuses.push(receipt.status.is_some_and(|status| status.to::<u64>() == 1));
            }
        }
        Ok(statuses)
    }

    /// `Transfer` logs of `tokens` to any of `recipients` in blocks `range`, in block order.
    /// Asks in ranges that shrink when the node refuses one as too large.
    pub async fn transfer_logs(
        &mut self,
        range: RangeInclusive<u64>,
        tokens: &[Address],
        recipients: &[Address],
    ) -> Result<Vec<Log>, RpcError> {
        let recipients: Vec<B256> = recipients.iter().map(|a| a.into_word()).collect();
        let mut logs = Vec::new();
        let mut from = *range.start();
        while from <= *range.end() {
            let to = (from + self.log_range - 1).min(*range.end());
            let filter = json!([{
                "fromBlock": U64::from(from),
                "toBlock": U64::from(to),
                "address": tokens,
                "topics": [TRANSFER_TOPIC, null, recipients],
            }]);
            match self.call::<Vec<Log>>("eth_getLogs", filter).await {
                Ok(found) => {
                    logs.extend(found);
                    from = to + 1;
                    self.log_range = (self.log_range * 2).min(self.max_log_range);
                }
                Err(err) if err.is_too_large() && self.log_range > 1 => {
                    self.log_range = (self.log_range / 2).max(1);
                    tracing::debug!(error = %err, range = self.log_range, "eth_getLogs range shrunk");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(logs)
    }

    async fn call<
        R: serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + Unpin + 'static,
    >(
        &self,
        method: &'static str,
        params: serde_json::Value,
    ) -> Result<R, RpcError> {
        self.client
            .request(method, params)
            .await
            .map_err(|err| RpcError::from_transport(method, err))
    }

    /// One JSON-RPC batch of `method` calls; answers in request order.
    async fn batch<
        R: serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + Unpin + 'static,
    >(
        &self,
        method: &'static str,
        params: impl Iterator<Item = serde_json::Value>,
    ) -> Result<Vec<R>, RpcError> {
        let mut batch = self.client.new_batch();
        let mut waiters = Vec::new();
        for params in params {
            waiters.push(
                batch
                    .add_call::<_, R>(method, &params)
                    .map_err(|err| RpcError::from_transport(method, err))?,
            );
        }
        batch
            .send()
            .await
            .map_err(|err| RpcError::from_transport(method, err))?;
        let mut answers = Vec::with_capacity(waiters.len());
        for waiter in waiters {
            answers.push(
                waiter
                    .await
                    .map_err(|err| RpcError::from_transport(method, err))?,
            );
        }
        Ok(answers)
    }
}
