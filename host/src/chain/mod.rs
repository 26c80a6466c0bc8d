//! EVM chains: from JSON-RPC to committed transfers.
//!
//! * [`rpc`] — the node's JSON-RPC (alloy's HTTP client): batched blocks and receipts,
//!   adaptive `eth_getLogs`, classified errors.
//! * [`scanner`] — one task per configured chain: cursor, watched addresses, reorg walk-back,
//!   retries; each step is one unit of work for the writer (see [`crate::payments::work`]).

pub mod rpc;
pub mod scanner;

pub use scanner::Scanner;
