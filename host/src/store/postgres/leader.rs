//! One scanner per chain across every node on the database: a session-level advisory lock.
//!
//! A node that wants to scan a chain tries `pg_try_advisory_lock` on a key derived from the
//! chain's name, on a connection of its own kept open for as long as it scans. The lock lives
//! exactly as long as that session: when the node dies (`kill -9`, a crash, a lost network),
//! its connection closes, the server ends the session and frees the lock, and the next node
//! that tries takes it. A node stops scanning as soon as its connection is gone
//! ([`ChainLease::is_held`]), before anyone else can take the lock. Even if two scanners did
//! overlap for a moment, a scan step carries the cursor it started from and is refused when
//! the cursor moved, and every event's idempotency key names its cause, so nothing is raised
//! twice.

use sha2::{Digest as _, Sha256};

use super::PgStore;
use crate::store::StoreError;

/// The lock key of `chain`'s scanner: 64 bits of a hash of a name no other lock uses.
pub fn chain_lock_key(chain: &str) -> i64 {
    let digest = Sha256::digest(format!("hookgate.scanner.{chain}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The right to scan one chain, held while this value and its connection live.
pub struct ChainLease {
    client: tokio_postgres::Client,
    chain: String,
}

impl ChainLease {
    /// Takes `chain`'s lease if no other node holds it; `None` when one does.
    pub async fn try_acquire(store: &PgStore, chain: &str) -> Result<Option<Self>, StoreError> {
        let client = store.dedicated("a chain scanner's lease").await?;
        let held: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&chain_lock_key(chain)])
            .await?
            .get(0);
        Ok(held.then(|| Self {
            client,
            chain: chain.to_owned(),
        }))
    }

    /// Whether the lease is still this node's: its session answers. Call before each step.
    pub async fn is_held(&self) -> bool {
        !self.client.is_closed() && self.client.simple_query("SELECT 1").await.is_ok()
    }

    /// Returns once the lease is lost (its session no longer answers within `every`),
    /// checking every `every`.
    pub async fn lost(&self, every: std::time::Duration) {
        loop {
            tokio::time::sleep(every).await;
            if !tokio::time::timeout(every, self.is_held())
                .await
                .unwrap_or(false)
            {
                return;
            }
        }
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chain_has_its_own_stable_key() {
        assert_eq!(chain_lock_key("ethereum"), chain_lock_key("ethereum"));
        assert_ne!(chain_lock_key("ethereum"), chain_lock_key("polygon"));
    }
}
