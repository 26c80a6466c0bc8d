//! The first answer to each create sent with an `Idempotency-Key`, so a retry gets it again.
//!
//! Kept per route and key with a fingerprint of the request body (the same key with another
//! body is a conflict, not a replay) and forgotten by the retention sweep after
//! `store.idempotency_window`.

use redb::{ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{StoreError, Tables, read_record};
use crate::time::UnixMillis;

/// `"{route} {key}"` → [`StoredAnswer`] (JSON).
pub(crate) const API_ANSWERS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_answers");
/// (stored at, `"{route} {key}"`): the answers oldest first, for the retention sweep.
pub(crate) const API_ANSWERS_BY_TIME: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("api_answers_by_time");

/// The answer a create gave, as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// SHA-256 (hex) of the request body the key first came with.
    pub fingerprint: String,
    pub status: u16,
    pub body: serde_json::Value,
    pub stored_at: UnixMillis,
}

impl Tables<'_> {
    pub fn api_answer(&self, key: &str) -> Result<Option<StoredAnswer>, StoreError> {
        read_record(&self.api_answers, key)
    }

    pub fn put_api_answer(&mut self, key: &str, answer: &StoredAnswer) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(answer)?;
        self.api_answers.insert(key, raw.as_slice())?;
        self.api_answers_by_time
            .insert((answer.stored_at, key), ())?;
        Ok(())
    }

    /// Forgets at most `limit` answers stored before `before`; how many it forgot.
    pub fn forget_api_answers(
        &mut self,
        before: UnixMillis,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut old = Vec::new();
        for entry in self
            .api_answers_by_time
            .range((0, "")..(before, ""))?
            .take(limit)
        {
            let (key, _) = entry?;
            let (at, key) = key.value();
            old.push((at, key.to_owned()));
        }
        for (at, key) in &old {
            self.api_answers_by_time.remove((*at, key.as_str()))?;
            self.api_answers.remove(key.as_str())?;
        }
        Ok(old.len())
    }
}
