//! Units of work on payments: each runs inside one writer transaction, so a payment's new
//! state, the chain cursor and the events they raise commit together or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use alloy::primitives::{Address, B256};

use super::derive::ExtendedPublicKey;
use super::events;
use super::model::{Payment, PaymentStatus, TokenRef, Transfer};
use super::rules::{self, Finality, Tip};
use crate::ids::PaymentId;
use crate::queue::{Emit, Txn, UnitOfWork};
use crate::store::{ChainCursor, StoreError};
use crate::time::UnixMillis;

/// A payment to create, validated against the configuration.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub chain: String,
    pub chain_id: u64,
    pub token: Option<TokenRef>,
    pub decimals: u8,
    pub amount_raw: alloy::primitives::U256,
    pub expires_at: UnixMillis,
    pub metadata: Option<Box<serde_json::value::RawValue>>,
    /// The caller's address; `None` derives the next one from the `xpub`.
    pub address: Option<Address>,
}

/// Creates a payment and raises `payment.created`.
pub struct CreatePayment {
    pub spec: NewPayment,
    pub xpub: Option<Arc<ExtendedPublicKey>>,
}

/// What creating a payment came to.
#[derive(Debug, Clone)]
pub enum Created {
    Payment(Box<Payment>),
    /// The address belongs to a live payment already.
    AddressInUse {
        address: Address,
        payment_id: PaymentId,
    },
    /// No address was given and no `xpub` is configured.
    NoAddress,
}

impl UnitOfWork for CreatePayment {
    type Output = Created;

    fn apply(&mut self, txn: &mut dyn Txn) -> Result<Created, StoreError> {
        let spec = &self.spec;
        let live_owner = |txn: &dyn Txn, address| -> Result<Option<PaymentId>, StoreError> {
            Ok(txn
                .payment_at(&spec.chain, address)?
                .filter(|payment| payment.status.is_open())
                .map(|payment| payment.id))
        };
        let (address, derivation_index) = match (spec.address, &self.xpub) {
            (Some(address), _) => {
                if let Some(payment_id) = live_owner(txn, address)? {
                    return Ok(Created::AddressInUse {
                        address,
                        payment_id,
                    });
                }
                (address, None)
            }
            (None, Some(xpub)) => loop {
                let index = txn.take_address_index()?;
                // BIP-32 skips the (vanishingly rare) invalid child; a caller-given address
                // that happens to equal a derived one is never handed out twice.
                if let Some(address) = xpub.address(index)
                    && live_owner(txn, address)?.is_none()
                {
                    break (address, Some(index));
                }
            },
            (None, None) => return Ok(Created::NoAddress),
        };
        let now = txn.now();
        let payment = Payment {
            id: PaymentId::new(),
            chain: spec.chain.clone(),
            chain_id: spec.chain_id,
            token: spec.token.clone(),
            decimals: spec.decimals,
            address,
            derivation_index,
            amount_raw: spec.amount_raw,
            created_at: now,
            expires_at: spec.expires_at,
            metadata: spec.metadata.clone(),
            status: PaymentStatus::Pending,
            transfers: Vec::new(),
            underpaid_notified: false,
            updated_at: now,
        };
        txn.put_payment(&payment)?;
        txn.emit(events::created(&payment))?;
        Ok(Created::Payment(Box::new(payment)))
    }
}

/// Cancels a payment (the merchant's request) and raises `payment.canceled`.
pub struct CancelPayment {
    pub id: PaymentId,
}

/// What a cancel came to.
#[derive(Debug, Clone)]
pub enum Canceled {
    Canceled(Box<Payment>),
    NotFound,
    /// The payment is in a state a cancel cannot leave (paid in full, or final).
    Refused(PaymentStatus),
}

impl UnitOfWork for CancelPayment {
    type Output = Canceled;

    fn apply(&mut self, txn: &mut dyn Txn) -> Result<Canceled, StoreError> {
        let Some(mut payment) = txn.payment(self.id)? else {
            return Ok(Canceled::NotFound);
        };
        match rules::cancel(&mut payment, txn.now()) {
            Ok(changes) => {
                txn.put_payment(&payment)?;
                for change in &changes {
                    txn.emit(events::for_change(&payment, change))?;
                }
                Ok(Canceled::Canceled(Box::new(payment)))
            }
            Err(status) => Ok(Canceled::Refused(status)),
        }
    }
}

/// A transfer the scanner saw to a watched address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub to: Address,
    /// The token contract; `None` for the native coin.
    pub token: Option<Address>,
    pub transfer: Transfer,
}

/// One scan step of a chain: new canonical blocks, the transfers in them, and the chain's
/// progress applied to every open payment (confirmations, expiry). With no blocks it is a
/// clock tick: expiry still advances while the node is unreachable.
pub struct ScanStep {
    pub chain: String,
    pub finality: Finality,
    /// The cursor the scan started from; the step is refused if the store moved since.
    pub expected: Option<(u64, B256)>,
    /// New blocks, consecutive, each the child of the one before (the first, of `expected`).
    pub blocks: Vec<(u64, B256)>,
    pub observed: Vec<Observed>,
    /// The timestamp (unix seconds) of the last of `blocks`.
    pub head_time: Option<u64>,
    /// The chain's `finalized` block, when the node reports one.
    pub finalized: Option<u64>,
}

/// What a scan step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanned {
    /// Committed; `events` were raised.
    Applied { events: usize },
    /// The stored cursor is not where the scan began (another writer moved it): scan again.
    Stale,
}

impl UnitOfWork for ScanStep {
    type Output = Scanned;

    fn apply(&mut self, txn: &mut dyn Txn) -> Result<Scanned, StoreError> {
        let stored = txn.chain_cursor(&self.chain)?;
        if stored.as_ref().map(|cursor| (cursor.number, cursor.hash)) != self.expected {
            return Ok(Scanned::Stale);
        }
        let now = txn.now();
        let mut touched: BTreeMap<PaymentId, Payment> = BTreeMap::new();
        let mut raised = Vec::new();
        for observed in &self.observed {
            let Some(found) = txn.payment_at(&self.chain, observed.to)? else {
                continue;
            };
            // A step may pay one payment several times: keep working on the same copy.
            let id = found.id;
            let payment = touched.entry(id).or_insert(found);
            let paid_in = payment.token.as_ref().map(|token| token.contract);
            if paid_in != observed.token {
                tracing::debug!(payment_id = %id, tx = %observed.transfer.tx_hash,
                    "transfer in another asset than the payment's; not counted");
                continue;
            }
            for change in rules::accept(payment, observed.transfer.clone(), now) {
                raised.push(events::for_change(payment, &change));
            }
        }
        let mut cursor = match stored {
            Some(mut cursor) => {
                cursor.advance(&self.blocks);
                cursor
            }
            None => {
                // The first step of a fresh chain starts the cursor at its first block.
                let Some((&(number, hash), rest)) = self.blocks.split_first() else {
                    return Ok(Scanned::Applied { events: 0 });
                };
                let mut cursor = ChainCursor::at(number, hash);
                cursor.advance(rest);
                cursor
            }
        };
        if let Some(time) = self.head_time {
            cursor.time = time;
        }
        let tip = Tip {
            head: cursor.number,
            time: cursor.time,
            finalized: self.finalized,
        };
        // Payments a transfer reached are written back; the other open ones only if the
        // chain's progress or the clock changed them.
        let mut dirty: BTreeSet<PaymentId> = touched.keys().copied().collect();
        for payment in txn.payments_to_advance(&self.chain, now)? {
            touched.entry(payment.id).or_insert(payment);
        }
        for payment in touched.values_mut() {
            for change in rules::advance(payment, tip, self.finality, now) {
                raised.push(events::for_change(payment, &change));
                dirty.insert(payment.id);
            }
        }
        let events = raise(txn, raised)?;
        for id in &dirty {
            txn.put_payment(&touched[id])?;
        }
        if !self.blocks.is_empty() {
            txn.put_chain_cursor(&self.chain, &cursor)?;
        }
        Ok(Scanned::Applied { events })
    }
}

/// A reorg: moves the cursor back to the common ancestor and takes the orphaned transfers
/// off every payment that had them.
pub struct Rewind {
    pub chain: String,
    pub expected: (u64, B256),
    pub ancestor: u64,
    /// Addresses to check besides the open payments (ended payments may hold late or
    /// confirmed transfers above the ancestor).
    pub watched: Vec<Address>,
}

/// What a rewind came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewound {
    Applied {
        events: usize,
    },
    Stale,
    /// The ancestor is older than the stored hash window: nothing was changed.
    TooDeep,
}

impl UnitOfWork for Rewind {
    type Output = Rewound;

    fn apply(&mut self, txn: &mut dyn Txn) -> Result<Rewound, StoreError> {
        let Some(mut cursor) = txn.chain_cursor(&self.chain)? else {
            return Ok(Rewound::Stale);
        };
        if (cursor.number, cursor.hash) != self.expected {
            return Ok(Rewound::Stale);
        }
        if !cursor.rewind(self.ancestor) {
            return Ok(Rewound::TooDeep);
        }
        let now = txn.now();
        let mut touched: BTreeMap<PaymentId, Payment> = BTreeMap::new();
        for payment in txn.open_payments(&self.chain)? {
            touched.insert(payment.id, payment);
        }
        for address in &self.watched {
            if let Some(payment) = txn.payment_at(&self.chain, *address)? {
                touched.entry(payment.id).or_insert(payment);
            }
        }
        let mut raised = Vec::new();
        for payment in touched.values_mut() {
            for change in rules::orphan(payment, self.ancestor, now) {
                raised.push(events::for_change(payment, &change));
                txn.put_payment(payment)?;
            }
        }
        let events = raise(txn, raised)?;
        txn.put_chain_cursor(&self.chain, &cursor)?;
        Ok(Rewound::Applied { events })
    }
}

/// Emits the events a step raised, in order; returns how many were new.
fn raise(txn: &mut dyn Txn, raised: Vec<Emit>) -> Result<usize, StoreError> {
    let mut count = 0;
    for event in raised {
        tracing::info!(event = %event.event_type, key = %event.idempotency_key, "payment event");
        if txn.emit(event)?.is_some() {
            count += 1;
        }
    }
    Ok(count)
}
