//! One chain's scanner: follows the node from the stored cursor and commits what it finds.
//!
//! Each step reads the head, the watched addresses (after the head, so a payment created
//! before the read is watched in every block the step covers), fetches the next range of full
//! blocks in JSON-RPC batches, checks they extend the stored cursor, collects native transfers
//! (receipt status 1) and ERC-20 `Transfer` logs to watched addresses, and hands all of it to
//! the writer as one [`ScanStep`]: transfers, payment changes, events and the new cursor commit
//! in one transaction. Nothing is committed for a range that failed to fetch, so the cursor
//! never passes a block whose data is missing, and a restart re-scans exactly the uncommitted
//! blocks (re-recording a transfer is a no-op, so no event is raised twice).
//!
//! A block whose parent is not the cursor's hash is a reorg: the scanner asks the node for the
//! hashes of the stored window, finds the newest block both agree on, and commits a [`Rewind`]
//! to it. A reorg deeper than the window stops this chain's scanner with an error rather than
//! guessing. RPC failures back off with jitter and are logged once per streak; while the node
//! is unreachable nothing expires, because expiry waits for blocks stamped past `expires_at`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};

use super::rpc::{Block, ChainRpc, RpcError, TRANSFER_TOPIC};
use crate::config::{ChainConfig, PaymentsConfig};
use crate::payments::rules::Finality;
use crate::payments::work::{Observed, Rewind, Rewound, ScanStep, Scanned};
use crate::payments::{Transfer, TransferIndex};
use crate::queue::{QueueError, QueueHandle};
use crate::store::{ChainCursor, Reads, StoreError};
use crate::time::now_millis;

/// How long one RPC request may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("the chain changed while it was being read ({0}); reading again")]
    Moved(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The scanner cannot go on without an operator.
    #[error("{0}")]
    Fatal(String),
}

/// What a completed step means for the next one.
enum Progress {
    /// More blocks are waiting: step again at once.
    Behind,
    /// At the head: wait for the poll interval.
    CaughtUp,
}

/// What the readiness check knows about one chain's scanner; shared with the scanner task.
#[derive(Debug)]
pub struct ChainHealth {
    pub name: String,
    /// How long the scanner may go without completing a step before the gateway reports
    /// itself not ready: ten poll intervals, at least a minute.
    pub lag_bound: Duration,
    /// When the scanner last completed a step (or started), Unix milliseconds.
    last_progress: AtomicU64,
    /// The newest block the scanner committed.
    cursor: AtomicU64,
    /// The node's head at the last step.
    head: AtomicU64,
    /// Why the scanner stopped for good, or the last error of a failure streak.
    trouble: Mutex<Option<(bool, String)>>,
    /// Another node scans this chain now (several nodes on PostgreSQL): nothing is late here.
    standby: std::sync::atomic::AtomicBool,
}

/// One chain's line in the readiness answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChainReport {
    pub chain: String,
    pub ok: bool,
    pub cursor: u64,
    pub last_progress_ms_ago: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ChainHealth {
    fn new(chain: &ChainConfig) -> Self {
        Self {
            name: chain.name.clone(),
            lag_bound: (chain.poll_interval * 10).max(Duration::from_secs(60)),
            last_progress: AtomicU64::new(now_millis()),
            cursor: AtomicU64::new(0),
            head: AtomicU64::new(0),
            trouble: Mutex::new(None),
            standby: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether another node scans the chain; becoming its scanner starts the lag clock anew.
    pub fn set_standby(&self, standby: bool) {
        if !standby {
            self.last_progress.store(now_millis(), Ordering::Release);
        }
        self.standby.store(standby, Ordering::Release);
    }

    fn trouble(&self) -> MutexGuard<'_, Option<(bool, String)>> {
        self.trouble.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn progressed(&self, cursor: u64) {
        self.last_progress.store(now_millis(), Ordering::Release);
        self.cursor.store(cursor, Ordering::Release);
        *self.trouble() = None;
    }

    /// Blocks between the node's head and the cursor, as of the last step.
    pub fn lag(&self) -> u64 {
        self.head
            .load(Ordering::Acquire)
            .saturating_sub(self.cursor.load(Ordering::Acquire))
    }

    fn failed(&self, error: String, fatal: bool) {
        *self.trouble() = Some((fatal, error));
    }

    /// Whether the scanner is within its lag bound at `now`, and why not.
    pub fn report(&self, now: crate::time::UnixMillis) -> ChainReport {
        let ago = now.saturating_sub(self.last_progress.load(Ordering::Acquire));
        let trouble = self.trouble().clone();
        let stopped = trouble.as_ref().is_some_and(|(fatal, _)| *fatal);
        let standby = self.standby.load(Ordering::Acquire);
        let late = !standby && u128::from(ago) > self.lag_bound.as_millis();
        ChainReport {
            chain: self.name.clone(),
            ok: !stopped && !late,
            cursor: self.cursor.load(Ordering::Acquire),
            last_progress_ms_ago: ago,
            error: match (trouble, late) {
                (Some((_, error)), _) => Some(error),
                (None, true) => Some(format!(
                    "no scan step completed for longer than {:?}",
                    self.lag_bound
                )),
                (None, false) if standby => Some("another node scans this chain".to_owned()),
                (None, false) => None,
            },
        }
    }
}

/// The scanner of one configured chain.
pub struct Scanner {
    chain: ChainConfig,
    finality: Finality,
    tokens: Vec<Address>,
    late_window_ms: u64,
    store: Arc<dyn Reads>,
    queue: QueueHandle,
    rpc: ChainRpc,
    chain_id_ok: bool,
    health: Arc<ChainHealth>,
}

impl Scanner {
    pub fn new(
        chain: &ChainConfig,
        payments: &PaymentsConfig,
        store: Arc<dyn Reads>,
        queue: QueueHandle,
    ) -> Self {
        let rpc = ChainRpc::new(&chain.rpc_url, RPC_TIMEOUT, chain.batch_blocks)
            .expect("rpc_url is validated at config load");
        Self {
            finality: if chain.use_finalized {
                Finality::Finalized
            } else {
                Finality::Depth(chain.confirmations)
            },
            tokens: chain
                .tokens
                .iter()
                .map(|token| token.contract.parse().expect("validated at config load"))
                .collect(),
            late_window_ms: payments.late_window.as_millis() as u64,
            chain: chain.clone(),
            store,
            queue,
            rpc,
            chain_id_ok: false,
            health: Arc::new(ChainHealth::new(chain)),
        }
    }

    /// The scanner's health, for the readiness check.
    pub fn health(&self) -> Arc<ChainHealth> {
        self.health.clone()
    }

    /// The scanner reporting to `health` (one a previous scanner of the chain reported to, on
    /// a node that scans again after another node did).
    pub fn with_health(mut self, health: Arc<ChainHealth>) -> Self {
        self.health = health;
        self
    }

    /// Runs until the queue closes or a fatal error stops this chain.
    pub async fn run(mut self) {
        let mut failures = 0u32;
        // Set while the scanner is behind the head: when and at which block catching up began.
        let mut behind: Option<(std::time::Instant, u64)> = None;
        loop {
            let result = match self.check_chain_id().await {
                Ok(()) => self.step().await,
                Err(err) => Err(err),
            };
            let wait = match result {
                Ok(progress) => {
                    self.health.progressed(self.cursor_number());
                    if failures > 0 {
                        tracing::info!(chain = %self.chain.name, failures, "chain RPC recovered; scanning again");
                        failures = 0;
                    }
                    match progress {
                        Progress::Behind => {
                            if behind.is_none() {
                                let at = self.cursor_number();
                                behind = Some((std::time::Instant::now(), at));
                            }
                            continue;
                        }
                        Progress::CaughtUp => {
                            if let Some((since, from)) = behind.take() {
                                let head = self.cursor_number();
                                tracing::info!(chain = %self.chain.name, head,
                                    blocks = head.saturating_sub(from),
                                    elapsed_ms = since.elapsed().as_millis() as u64,
                                    "caught up with the chain head");
                            }
                            self.chain.poll_interval
                        }
                    }
                }
                Err(StepError::Fatal(message)) => {
                    tracing::error!(chain = %self.chain.name, "scanner stopped: {message}");
                    self.health
                        .failed(format!("scanner stopped: {message}"), true);
                    return;
                }
                Err(StepError::Queue(QueueError::Closed)) => return,
                Err(StepError::Moved(reason)) => {
                    tracing::debug!(chain = %self.chain.name, %reason, "chain moved during a step");
                    Duration::ZERO
                }
                Err(err) => {
                    self.health.failed(err.to_string(), false);
                    if failures == 0 {
                        tracing::warn!(chain = %self.chain.name, error = %err,
                            "scan step failed; the cursor stays; retrying with backoff (logged once per streak)");
                    } else {
                        tracing::debug!(chain = %self.chain.name, error = %err, failures, "scan step failed again");
                    }
                    failures = failures.saturating_add(1);
                    retry_delay(failures, rand::random::<f64>())
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Checks once per run that the node serves the configured chain.
    async fn check_chain_id(&mut self) -> Result<(), StepError> {
        if self.chain_id_ok {
            return Ok(());
        }
        let reported = self.rpc.chain_id().await?;
        if reported != self.chain.chain_id {
            return Err(StepError::Fatal(format!(
                "the node at {} serves chain id {reported}, but chains `{}` is configured with \
                 chain_id {}; fix rpc_url or chain_id",
                self.chain.rpc_url, self.chain.name, self.chain.chain_id
            )));
        }
        self.chain_id_ok = true;
        Ok(())
    }

    async fn step(&mut self) -> Result<Progress, StepError> {
        let cursor = self.store.chain_cursor(&self.chain.name)?;
        let head = self.rpc.head().await?;
        self.health.head.store(head, Ordering::Release);
        let finalized = match self.finality {
            Finality::Finalized => self.rpc.finalized().await?,
            Finality::Depth(_) => None,
        };
        let from = match &cursor {
            Some(cursor) => cursor.number + 1,
            None => self.chain.start_block.unwrap_or(head),
        };
        if from > head {
            // No new block, but the newest scanned one may have been replaced (a reorg that
            // keeps the height, or a node whose chain got shorter).
            if let Some(cursor) = &cursor {
                let on_node = self.rpc.block_hashes(&[cursor.number]).await?;
                if on_node.first().copied().flatten() != Some(cursor.hash) {
                    let watched = self.watched()?;
                    self.rewind(cursor, &watched).await?;
                    return Ok(Progress::Behind);
                }
            }
            self.commit(cursor.as_ref(), Vec::new(), Vec::new(), None, finalized)
                .await?;
            return Ok(Progress::CaughtUp);
        }
        let to = head.min(from + self.chain.batch_blocks - 1);
        let watched = self.watched()?;
        let blocks = self.rpc.blocks(from..=to).await?;
        if let Some(cursor) = &cursor
            && blocks[0].parent_hash != cursor.hash
        {
            self.rewind(cursor, &watched).await?;
            return Ok(Progress::Behind);
        }
        for pair in blocks.windows(2) {
            if pair[1].parent_hash != pair[0].hash {
                return Err(StepError::Moved(format!(
                    "block {} is not the child of the block {} read just before",
                    pair[1].number, pair[0].number
                )));
            }
        }
        let mut observed = self.native_transfers(&blocks, &watched).await?;
        observed.extend(self.token_transfers(&blocks, &watched).await?);
        let range: Vec<(u64, B256)> = blocks
            .iter()
            .map(|block| (block.number.to(), block.hash))
            .collect();
        let head_time = blocks.last().map(|block| block.timestamp.to::<u64>());
        self.commit(cursor.as_ref(), range, observed, head_time, finalized)
            .await?;
        Ok(if to < head {
            Progress::Behind
        } else {
            Progress::CaughtUp
        })
    }

    /// The stored cursor's block number (0 before the first step), for progress logs.
    fn cursor_number(&self) -> u64 {
        self.store
            .chain_cursor(&self.chain.name)
            .ok()
            .flatten()
            .map_or(0, |cursor| cursor.number)
    }

    /// The addresses to look for: open payments' and those ended within the late window.
    fn watched(&self) -> Result<HashSet<Address>, StepError> {
        let since = now_millis().saturating_sub(self.late_window_ms);
        Ok(self
            .store
            .watched_addresses(&self.chain.name, since)?
            .into_iter()
            .collect())
    }

    /// Commits a step; a stale cursor (moved by another writer) is read again next step.
    async fn commit(
        &self,
        cursor: Option<&ChainCursor>,
        blocks: Vec<(u64, B256)>,
        observed: Vec<Observed>,
        head_time: Option<u64>,
        finalized: Option<u64>,
    ) -> Result<(), StepError> {
        let step = ScanStep {
            chain: self.chain.name.clone(),
            finality: self.finality,
            expected: cursor.map(|cursor| (cursor.number, cursor.hash)),
            blocks,
            observed,
            head_time,
            finalized,
        };
        match self.queue.run(step).await? {
            Scanned::Applied { .. } => Ok(()),
            Scanned::Stale => Err(StepError::Moved("the stored cursor moved".to_owned())),
        }
    }

    /// Walks back to the newest block the node and the stored window agree on, and rewinds.
    async fn rewind(
        &self,
        cursor: &ChainCursor,
        watched: &HashSet<Address>,
    ) -> Result<(), StepError> {
        let numbers: Vec<u64> = cursor.recent.iter().map(|(number, _)| *number).collect();
        let on_node = self.rpc.block_hashes(&numbers).await?;
        let ancestor = cursor
            .recent
            .iter()
            .zip(&on_node)
            .rev()
            .find(|((_, stored), node)| node.as_ref() == Some(stored))
            .map(|((number, _), _)| *number);
        let Some(ancestor) = ancestor else {
            return Err(StepError::Fatal(format!(
                "reorg deeper than the {} stored block hashes (none of blocks {}..={} is still \
                 canonical); the scanner will not guess. Investigate the node, then restart",
                ChainCursor::WINDOW,
                numbers.first().copied().unwrap_or_default(),
                cursor.number
            )));
        };
        let rewind = Rewind {
            chain: self.chain.name.clone(),
            expected: (cursor.number, cursor.hash),
            ancestor,
            watched: watched.iter().copied().collect(),
        };
        match self.queue.run(rewind).await? {
            Rewound::Applied { events } => {
                tracing::warn!(chain = %self.chain.name, depth = cursor.number - ancestor,
                    ancestor, events, "reorg: rewound to the common ancestor");
                Ok(())
            }
            Rewound::Stale => Err(StepError::Moved("the stored cursor moved".to_owned())),
            Rewound::TooDeep => Err(StepError::Fatal(format!(
                "reorg below block {ancestor}, outside the stored hash window"
            ))),
        }
    }

    /// Value transfers to watched addresses whose transaction succeeded.
    async fn native_transfers(
        &self,
        blocks: &[Block],
        watched: &HashSet<Address>,
    ) -> Result<Vec<Observed>, StepError> {
        let mut candidates = Vec::new();
        for block in blocks {
            for tx in &block.transactions {
                if let Some(to) = tx.to
                    && !tx.value.is_zero()
                    && watched.contains(&to)
                {
                    candidates.push(Observed {
                        to,
                        token: None,
                        transfer: Transfer {
                            tx_hash: tx.hash,
                            index: TransferIndex::Native,
                            block_number: block.number.to(),
                            block_hash: block.hash,
                            block_time: block.timestamp.to(),
                            from: tx.from,
                            value: tx.value,
                            late: false,
                        },
                    });
                }
            }
        }
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let hashes: Vec<B256> = candidates.iter().map(|c| c.transfer.tx_hash).collect();
        let succeeded = self.rpc.succeeded(&hashes).await?;
        Ok(candidates
            .into_iter()
            .zip(succeeded)
            .filter_map(|(candidate, ok)| ok.then_some(candidate))
            .collect())
    }

    /// ERC-20 `Transfer` logs of the configured tokens to watched addresses.
    async fn token_transfers(
        &mut self,
        blocks: &[Block],
        watched: &HashSet<Address>,
    ) -> Result<Vec<Observed>, StepError> {
        if self.tokens.is_empty() || watched.is_empty() {
            return Ok(Vec::new());
        }
        let first = blocks[0].number.to::<u64>();
        let last = blocks[blocks.len() - 1].number.to::<u64>();
        let recipients: Vec<Address> = watched.iter().copied().collect();
        let logs = self
            .rpc
            .transfer_logs(first..=last, &self.tokens, &recipients)
            .await?;
        let mut observed = Vec::new();
        for log in logs {
            let number = log.block_number.to::<u64>();
            let block = number
                .checked_sub(first)
                .and_then(|offset| blocks.get(offset as usize))
                .ok_or_else(|| RpcError::Garbage {
                    method: "eth_getLogs",
                    reason: format!("a log of block {number}, outside {first}..={last}"),
                })?;
            if log.block_hash != block.hash {
                return Err(StepError::Moved(format!(
                    "a log names block {number} as {}, the block read has {}",
                    log.block_hash, block.hash
                )));
            }
            let standard = log.topics.len() == 3
                && log.topics[0] == TRANSFER_TOPIC
                && log.data.len() == 32
                && self.tokens.contains(&log.address);
            if log.removed || !standard {
                continue;
            }
            let to = Address::from_word(log.topics[2]);
            if !watched.contains(&to) {
                continue;
            }
            observed.push(Observed {
                to,
                token: Some(log.address),
                transfer: Transfer {
                    tx_hash: log.transaction_hash,
                    index: TransferIndex::Log(log.log_index.to()),
                    block_number: number,
                    block_hash: block.hash,
                    block_time: block.timestamp.to(),
                    from: Address::from_word(log.topics[1]),
                    value: U256::from_be_slice(&log.data),
                    late: false,
                },
            });
        }
        Ok(observed)
    }
}

/// Delay before retrying after `failures` failed steps in a row: 0.5 s doubling to 30 s, each
/// scaled by `1 ± 20 %` (`random` in `[0, 1)`).
fn retry_delay(failures: u32, random: f64) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(30));
    base.mul_f64(0.8 + 0.4 * random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_retries_back_off_exponentially_with_jitter_up_to_a_cap() {
        assert_eq!(retry_delay(1, 0.5), Duration::from_millis(500));
        assert_eq!(retry_delay(2, 0.5), Duration::from_secs(1));
        assert_eq!(retry_delay(4, 0.5), Duration::from_secs(4));
        assert_eq!(retry_delay(50, 0.5), Duration::from_secs(30));
        assert_eq!(retry_delay(1, 0.0), Duration::from_millis(400));
        assert!(retry_delay(1, 0.999) < Duration::from_millis(600));
    }
}
