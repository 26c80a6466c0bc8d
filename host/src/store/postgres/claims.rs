//! The deliveries this node holds and the claim token of each, shared by the writer (which
//! settles with the token and registers what it commits), the feeders (which register what
//! they claim) and the lease renewal.
//!
//! A held delivery's queue row carries this node's token and the end of its lease as its due
//! time. While the node lives, [`renew`] moves every lease forward well before it runs out, so
//! a delivery waiting in a full lane or a slow receiver's worker is not taken over by another
//! node. When the node dies the renewals stop, the leases run out, and any node claims the
//! rows again with new tokens; a late result from this node then no longer matches and is
//! refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use uuid::Uuid;

use super::PgStore;
use super::queue::ClaimToken;
use crate::ids::DeliveryId;
use crate::store::StoreError;

/// Held deliveries and their tokens.
#[derive(Debug, Default)]
pub struct Claims(Mutex<HashMap<DeliveryId, ClaimToken>>);

impl Claims {
    fn map(&self) -> MutexGuard<'_, HashMap<DeliveryId, ClaimToken>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `ids` are held under `token` (a newer claim replaces an older one).
    pub fn hold(&self, ids: impl IntoIterator<Item = DeliveryId>, token: ClaimToken) {
        let mut map = self.map();
        for id in ids {
            map.insert(id, token);
        }
    }

    /// Stops holding `id`; its token, if it was held.
    pub fn take(&self, id: DeliveryId) -> Option<ClaimToken> {
        self.map().remove(&id)
    }

    /// Stops holding `id` if it is still held under `token` (not claimed again since).
    fn forget(&self, id: DeliveryId, token: ClaimToken) {
        let mut map = self.map();
        if map.get(&id) == Some(&token) {
            map.remove(&id);
        }
    }

    /// How many deliveries are held.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Vec<(DeliveryId, ClaimToken)> {
        self.map().iter().map(|(id, token)| (*id, *token)).collect()
    }
}

/// Column arrays of `(id, token)` pairs for `unnest`.
pub(crate) fn columns(pairs: &[(DeliveryId, ClaimToken)]) -> (Vec<Uuid>, Vec<Uuid>) {
    pairs
        .iter()
        .map(|(id, token)| (Uuid::from_u128(id.as_u128()), token.as_uuid()))
        .unzip()
}

/// Moves the lease of every held delivery to `lease` from now, every `lease / 3`, for as long
/// as the task runs. Deliveries whose row no longer carries the token (settled meanwhile, or
/// taken over after a stall) stop being held.
pub async fn renew(store: PgStore, claims: Arc<Claims>, lease: Duration) {
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if claims.is_empty() {
            continue;
        }
        if let Err(err) = renew_once(&store, &claims, lease).await {
            tracing::warn!(error = %err, held = claims.len(),
                "cannot renew the leases of held deliveries; trying again shortly");
        }
    }
}

/// Renews the leases of the held rows no other transaction has locked, and returns the held
/// deliveries that are no longer this node's: their row carries another token (taken over
/// after a stall), or is gone (settled). A row locked now (the writer is settling it, another
/// node's claim is looking at it) is skipped rather than waited for, and stays held: waiting
/// would take row locks in another order than the writer's transaction and could deadlock
/// with it (seen in the delivery bench: the writer stalled for seconds until the server broke
/// the deadlock). The next renewal, a third of a lease later, catches what was skipped.
const RENEW: &str = "
WITH held AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS h(id, claim)
), locked AS MATERIALIZED (
    SELECT q.delivery_id, q.claim FROM queue q
     WHERE q.delivery_id = ANY($1::uuid[])
     ORDER BY q.delivery_id
       FOR UPDATE SKIP LOCKED
), renewed AS (
    UPDATE queue q
       SET due_at = now() + $3::float8 * interval '1 millisecond'
      FROM locked l JOIN held h ON h.id = l.delivery_id AND h.claim = l.claim
     WHERE q.delivery_id = l.delivery_id
 RETURNING q.delivery_id
)
SELECT h.id FROM held h
 WHERE NOT EXISTS (SELECT 1 FROM renewed r WHERE r.delivery_id = h.id)
   AND (EXISTS (SELECT 1 FROM locked l WHERE l.delivery_id = h.id)
        OR NOT EXISTS (SELECT 1 FROM queue q WHERE q.delivery_id = h.id))";

/// One renewal of every held delivery's lease (see [`RENEW`]).
pub async fn renew_once(
    store: &PgStore,
    claims: &Claims,
    lease: Duration,
) -> Result<(), StoreError> {
    let held = claims.snapshot();
    let (ids, tokens) = columns(&held);
    let client = store.client().await?;
    let lost: std::collections::HashSet<Uuid> = client
        .query(RENEW, &[&ids, &tokens, &(lease.as_secs_f64() * 1_000.0)])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for (id, token) in held {
        if lost.contains(&Uuid::from_u128(id.as_u128())) {
            claims.forget(id, token);
        }
    }
    Ok(())
}

/// Gives up held deliveries this node will not send now (its lane was full or behind): their
/// rows become due at once for any node, and one notification names their endpoints.
pub(crate) async fn release(
    client: &tokio_postgres::Client,
    claims: &Claims,
    ids: &[DeliveryId],
) -> Result<(), StoreError> {
    let pairs: Vec<(DeliveryId, ClaimToken)> = ids
        .iter()
        .filter_map(|id| claims.take(*id).map(|token| (*id, token)))
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    let (ids, tokens) = columns(&pairs);
    client
        .execute(
            "WITH released AS (
                UPDATE queue q SET claim = NULL, due_at = now()
                  FROM unnest($1::uuid[], $2::uuid[]) AS r(id, claim)
                 WHERE q.delivery_id = r.id AND q.claim = r.claim
             RETURNING q.endpoint_id
             ), named AS (
                SELECT string_agg(DISTINCT endpoint_id, E'\\n') AS endpoints FROM released
             )
             SELECT pg_notify($3, CASE WHEN length(endpoints) > 4000 THEN '*' ELSE endpoints END)
               FROM named WHERE endpoints IS NOT NULL",
            &[&ids, &tokens, &super::queue::CHANNEL],
        )
        .await?;
    Ok(())
}
