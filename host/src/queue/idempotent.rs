//! `Idempotency-Key` for creates: a unit of work that runs once per key.
//!
//! The first request with a key runs its unit of work and keeps the answer it produced in the
//! same transaction, so a crash can never leave the work done and the answer lost (a retry
//! would then do it twice). A later request with the key and the same body gets that answer
//! again; with another body it is refused, since the key then names two different requests.

use sha2::{Digest as _, Sha256};

use super::{Txn, UnitOfWork};
use crate::store::{StoreError, StoredAnswer};

/// An answer as the API sends it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// How the unit's output is answered; `None` for an outcome not worth keeping (a refusal
/// that a retry may not meet again, such as an address in use).
pub type Answering<T> = Box<dyn Fn(&T) -> Option<Answer> + Send>;

/// `work`, run at most once per `key`.
pub struct Idempotent<W: UnitOfWork> {
    key: String,
    fingerprint: String,
    work: W,
    answering: Answering<W::Output>,
}

/// What an idempotent request came to.
pub enum Keyed<T> {
    /// The work ran now; `answer` is what was kept for retries (if anything).
    Fresh { output: T, answer: Option<Answer> },
    /// An earlier request with this key and body ran it: its answer.
    Replayed(Answer),
    /// The key came earlier with a different body.
    Mismatch,
}

impl<W: UnitOfWork> Idempotent<W> {
    /// `route` scopes the key (`POST /v1/payments`); `body` is the request body as sent.
    pub fn new(
        route: &str,
        key: &str,
        body: &[u8],
        work: W,
        answering: Answering<W::Output>,
    ) -> Self {
        Self {
            key: format!("{route} {key}"),
            fingerprint: hex::encode(Sha256::digest(body)),
            work,
            answering,
        }
    }
}

impl<W: UnitOfWork> UnitOfWork for Idempotent<W> {
    type Output = Keyed<W::Output>;

    fn apply(&mut self, txn: &mut dyn Txn) -> Result<Self::Output, StoreError> {
        if let Some(stored) = txn.api_answer(&self.key)? {
            if stored.fingerprint != self.fingerprint {
                return Ok(Keyed::Mismatch);
            }
            return Ok(Keyed::Replayed(Answer {
                status: stored.status,
                body: stored.body,
            }));
        }
        let output = self.work.apply(txn)?;
        let answer = (self.answering)(&output);
        if let Some(answer) = &answer {
            let stored = StoredAnswer {
                fingerprint: self.fingerprint.clone(),
                status: answer.status,
                body: answer.body.clone(),
                stored_at: txn.now(),
            };
            txn.put_api_answer(&self.key, &stored)?;
        }
        Ok(Keyed::Fresh { output, answer })
    }
}
