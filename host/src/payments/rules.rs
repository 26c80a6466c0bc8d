//! The confirmation rules, as pure functions over a payment's state.
//!
//! Chain state and time come in as arguments, changes come out as values, so every rule is
//! tested here without a chain. The scanner and the clock call these inside a unit of work and
//! turn each [`Change`] into an event.
//!
//! * A transfer counts unless it arrived late: after the payment was confirmed, expired or
//!   canceled, or
//!   in a block stamped at or after `expires_at` while the payment was not yet paid.
//! * Less than the amount: `underpaid` (raised once). The amount or more: `detected`, with the
//!   excess. Detected and the counted transfers deep enough (or finalized): `confirmed`.
//! * Not fully paid at `expires_at`, by the clock and by the chain scanned so far: `expired`. A late transfer is kept and raises `late`.
//! * A reorg removes the transfers above the common ancestor; a payment they had paid moves
//!   back to `pending` or `underpaid`, and `reorged` names the orphaned transactions. Orphaned
//!   transfers are gone before the next depth check, so they can never confirm a payment.

use alloy::primitives::U256;

use super::model::{Payment, PaymentStatus, Transfer};
use crate::time::UnixMillis;

/// How deep a transfer must be before a payment counts as confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finality {
    /// At least this many blocks including its own (`head - block + 1`).
    Depth(u64),
    /// At or below the chain's `finalized` block.
    Finalized,
}

/// What the scanner knows about the chain's tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// The newest block scanned and committed.
    pub head: u64,
    /// That block's timestamp, unix seconds (0 when unknown, e.g. right after a rewind).
    pub time: u64,
    /// The chain's `finalized` block, when it reports one.
    pub finalized: Option<u64>,
}

impl Tip {
    /// Confirmations of a block at `number`: 1 for the head itself.
    pub fn depth(&self, number: u64) -> u64 {
        (self.head + 1).saturating_sub(number)
    }

    fn is_final(&self, number: u64, finality: Finality) -> bool {
        match finality {
            Finality::Depth(needed) => self.depth(number) >= needed,
            Finality::Finalized => self.finalized.is_some_and(|finalized| number <= finalized),
        }
    }
}

/// A state change worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Underpaid {
        transfer: Transfer,
        paid: U256,
    },
    /// Paid in full; `excess` is what came on top of the amount.
    Detected {
        transfer: Transfer,
        paid: U256,
        excess: U256,
    },
    Confirmed {
        /// The newest counted transfer and its confirmations.
        transfer: Transfer,
        confirmations: u64,
    },
    Expired,
    Canceled,
    Late {
        transfer: Transfer,
    },
    Reorged {
        orphaned: Vec<Transfer>,
        previous: PaymentStatus,
    },
}

impl Change {
    /// The event type this change raises.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Underpaid { .. } => "payment.underpaid",
            Self::Detected { .. } => "payment.detected",
            Self::Confirmed { .. } => "payment.confirmed",
            Self::Expired => "payment.expired",
            Self::Canceled => "payment.canceled",
            Self::Late { .. } => "payment.late",
            Self::Reorged { .. } => "payment.reorged",
        }
    }
}

/// Records a transfer to the payment's address. Re-recording one it has is a no-op, so a
/// re-scanned block changes nothing.
pub fn accept(payment: &mut Payment, transfer: Transfer, now: UnixMillis) -> Vec<Change> {
    if payment
        .transfers
        .iter()
        .any(|known| known.same_as(&transfer))
    {
        return Vec::new();
    }
    let after_expiry = transfer.block_time.saturating_mul(1000) >= payment.expires_at;
    let late = match payment.status {
        PaymentStatus::Confirmed | PaymentStatus::Expired | PaymentStatus::Canceled => true,
        PaymentStatus::Pending | PaymentStatus::Underpaid => after_expiry,
        PaymentStatus::Detected => false,
    };
    if late {
        let transfer = Transfer {
            late: true,
            ..transfer
        };
        payment.transfers.push(transfer.clone());
        return vec![Change::Late { transfer }];
    }
    payment.transfers.push(transfer.clone());
    let paid = payment.paid();
    if paid < payment.amount_raw {
        set_status(payment, PaymentStatus::Underpaid, now);
        if payment.underpaid_notified {
            return Vec::new();
        }
        payment.underpaid_notified = true;
        return vec![Change::Underpaid { transfer, paid }];
    }
    if payment.status == PaymentStatus::Detected {
        // Paid in full already; the extra only adds to the excess.
        return Vec::new();
    }
    set_status(payment, PaymentStatus::Detected, now);
    vec![Change::Detected {
        transfer,
        paid,
        excess: paid - payment.amount_raw,
    }]
}

/// Moves the payment on with the chain and the clock: confirms it once its counted transfers
/// are final, expires it when unpaid at `expires_at` — once the clock has passed it *and* the
/// scan has reached a block stamped at or after it. A payment is never expired on the strength
/// of blocks the gateway has not read (a lagging or unreachable node): a transfer in those
/// blocks may have paid it in time.
pub fn advance(
    payment: &mut Payment,
    tip: Tip,
    finality: Finality,
    now: UnixMillis,
) -> Vec<Change> {
    match payment.status {
        PaymentStatus::Detected => {
            let all_final = payment
                .counted()
                .all(|transfer| tip.is_final(transfer.block_number, finality));
            let newest = payment
                .counted()
                .max_by_key(|transfer| transfer.block_number)
                .cloned();
            match newest {
                Some(transfer) if all_final => {
                    set_status(payment, PaymentStatus::Confirmed, now);
                    vec![Change::Confirmed {
                        confirmations: tip.depth(transfer.block_number),
                        transfer,
                    }]
                }
                _ => Vec::new(),
            }
        }
        PaymentStatus::Pending | PaymentStatus::Underpaid
            if now >= payment.expires_at && tip.time.saturating_mul(1000) >= payment.expires_at =>
        {
            set_status(payment, PaymentStatus::Expired, now);
            vec![Change::Expired]
        }
        _ => Vec::new(),
    }
}

/// Drops the transfers in blocks above `ancestor` (orphaned by a reorg) and moves the payment
/// back if they had paid it.
pub fn orphan(payment: &mut Payment, ancestor: u64, now: UnixMillis) -> Vec<Change> {
    let (orphaned, kept): (Vec<Transfer>, Vec<Transfer>) = std::mem::take(&mut payment.transfers)
        .into_iter()
        .partition(|transfer| transfer.block_number > ancestor);
    payment.transfers = kept;
    if orphaned.is_empty() {
        return Vec::new();
    }
    let previous = payment.status;
    if matches!(previous, PaymentStatus::Detected | PaymentStatus::Confirmed)
        && payment.paid() < payment.amount_raw
    {
        let back = if payment.paid().is_zero() {
            PaymentStatus::Pending
        } else {
            PaymentStatus::Underpaid
        };
        set_status(payment, back, now);
    }
    vec![Change::Reorged { orphaned, previous }]
}

/// Calls the payment off at the merchant's request: only while nothing or less than the
/// amount arrived (`pending`, `underpaid`). A transfer after that is late, like one after
/// expiry. Refused with the status that forbids it otherwise.
pub fn cancel(payment: &mut Payment, now: UnixMillis) -> Result<Vec<Change>, PaymentStatus> {
    match payment.status {
        PaymentStatus::Pending | PaymentStatus::Underpaid => {
            set_status(payment, PaymentStatus::Canceled, now);
            Ok(vec![Change::Canceled])
        }
        other => Err(other),
    }
}

fn set_status(payment: &mut Payment, status: PaymentStatus, now: UnixMillis) {
    if payment.status != status {
        payment.status = status;
        payment.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{Address, B256};

    use super::*;
    use crate::ids::PaymentId;
    use crate::payments::model::TransferIndex;

    const EXPIRES: UnixMillis = 1_000_000_000;
    const BEFORE: u64 = 900_000; // block time (s) before expiry
    const AFTER: u64 = 1_000_000; // block time (s) at expiry

    fn payment(amount: u64) -> Payment {
        Payment {
            id: PaymentId::new(),
            chain: "anvil".to_owned(),
            chain_id: 31337,
            token: None,
            decimals: 18,
            address: Address::repeat_byte(0xaa),
            derivation_index: None,
            amount_raw: U256::from(amount),
            created_at: 0,
            expires_at: EXPIRES,
            metadata: None,
            status: PaymentStatus::Pending,
            transfers: Vec::new(),
            underpaid_notified: false,
            updated_at: 0,
        }
    }

    fn transfer(tx: u8, block: u64, value: u64, block_time: u64) -> Transfer {
        Transfer {
            tx_hash: B256::repeat_byte(tx),
            index: TransferIndex::Native,
            block_number: block,
            block_hash: B256::repeat_byte(block as u8),
            block_time,
            from: Address::repeat_byte(1),
            value: U256::from(value),
            late: false,
        }
    }

    /// A tip whose head block is stamped after every expiry in these tests.
    fn tip(head: u64) -> Tip {
        Tip {
            head,
            time: AFTER,
            finalized: None,
        }
    }

    fn types(changes: &[Change]) -> Vec<&'static str> {
        changes.iter().map(Change::event_type).collect()
    }

    #[test]
    fn an_exact_payment_is_detected_then_confirmed_at_depth() {
        let mut p = payment(100);
        let changes = accept(&mut p, transfer(1, 10, 100, BEFORE), 1);
        assert_eq!(types(&changes), ["payment.detected"]);
        assert_eq!(p.status, PaymentStatus::Detected);
        assert!(advance(&mut p, tip(11), Finality::Depth(3), 2).is_empty());
        let changes = advance(&mut p, tip(12), Finality::Depth(3), 3);
        assert_eq!(
            changes,
            [Change::Confirmed {
                transfer: transfer(1, 10, 100, BEFORE),
                confirmations: 3
            }]
        );
        assert_eq!(p.status, PaymentStatus::Confirmed);
        assert!(advance(&mut p, tip(50), Finality::Depth(3), 4).is_empty());
    }

    #[test]
    fn an_underpayment_waits_raises_underpaid_once_and_a_top_up_detects() {
        let mut p = payment(100);
        assert_eq!(
            types(&accept(&mut p, transfer(1, 10, 30, BEFORE), 1)),
            ["payment.underpaid"]
        );
        assert!(accept(&mut p, transfer(2, 11, 30, BEFORE), 2).is_empty());
        assert_eq!(p.status, PaymentStatus::Underpaid);
        assert!(advance(&mut p, tip(40), Finality::Depth(3), 3).is_empty());
        let changes = accept(&mut p, transfer(3, 12, 40, BEFORE), 4);
        assert_eq!(types(&changes), ["payment.detected"]);
        // Confirmed only once every counted transfer is deep enough.
        assert!(advance(&mut p, tip(13), Finality::Depth(3), 5).is_empty());
        assert_eq!(
            types(&advance(&mut p, tip(14), Finality::Depth(3), 6)),
            ["payment.confirmed"]
        );
    }

    #[test]
    fn an_overpayment_is_detected_with_its_excess() {
        let mut p = payment(100);
        let changes = accept(&mut p, transfer(1, 10, 130, BEFORE), 1);
        assert!(matches!(
            &changes[..],
            [Change::Detected { paid, excess, .. }] if *paid == U256::from(130) && *excess == U256::from(30)
        ));
    }

    #[test]
    fn the_same_transfer_seen_twice_changes_nothing() {
        let mut p = payment(100);
        accept(&mut p, transfer(1, 10, 100, BEFORE), 1);
        let before = p.clone();
        assert!(accept(&mut p, transfer(1, 10, 100, BEFORE), 2).is_empty());
        assert_eq!(p.transfers, before.transfers);
    }

    #[test]
    fn an_unpaid_payment_expires_at_its_time_and_later_transfers_are_late() {
        let mut p = payment(100);
        assert!(advance(&mut p, tip(5), Finality::Depth(1), EXPIRES - 1).is_empty());
        assert_eq!(
            types(&advance(&mut p, tip(5), Finality::Depth(1), EXPIRES)),
            ["payment.expired"]
        );
        let changes = accept(&mut p, transfer(1, 10, 100, AFTER), EXPIRES + 5);
        assert_eq!(types(&changes), ["payment.late"]);
        assert_eq!(p.status, PaymentStatus::Expired);
        assert!(p.transfers[0].late);
        assert!(p.paid().is_zero());
    }

    #[test]
    fn only_a_payment_not_yet_paid_in_full_can_be_canceled_and_later_transfers_are_late() {
        let mut underpaid = payment(100);
        accept(&mut underpaid, transfer(1, 10, 40, BEFORE), 1);
        assert_eq!(
            types(&cancel(&mut underpaid, 2).unwrap()),
            ["payment.canceled"]
        );
        assert_eq!(underpaid.status, PaymentStatus::Canceled);
        assert!(!underpaid.status.is_open());
        let changes = accept(&mut underpaid, transfer(2, 11, 60, BEFORE), 3);
        assert_eq!(types(&changes), ["payment.late"]);
        assert_eq!(underpaid.status, PaymentStatus::Canceled);
        assert_eq!(cancel(&mut underpaid, 4), Err(PaymentStatus::Canceled));

        let mut detected = payment(100);
        accept(&mut detected, transfer(1, 10, 100, BEFORE), 1);
        assert_eq!(cancel(&mut detected, 2), Err(PaymentStatus::Detected));
        assert_eq!(detected.status, PaymentStatus::Detected);
        let mut pending = payment(100);
        assert!(advance(&mut pending, tip(5), Finality::Depth(1), EXPIRES).len() == 1);
        assert_eq!(cancel(&mut pending, EXPIRES), Err(PaymentStatus::Expired));
    }

    #[test]
    fn a_payment_does_not_expire_before_the_scan_reaches_a_block_past_its_expiry() {
        let mut p = payment(100);
        let behind = Tip {
            head: 5,
            time: BEFORE,
            finalized: None,
        };
        // The clock says expired, but blocks up to the expiry are not read yet: one of them
        // may pay it.
        assert!(advance(&mut p, behind, Finality::Depth(1), EXPIRES + 60_000).is_empty());
        assert_eq!(
            types(&accept(
                &mut p,
                transfer(1, 5, 100, BEFORE),
                EXPIRES + 60_000
            )),
            ["payment.detected"]
        );
        let mut unpaid = payment(100);
        let caught_up = Tip {
            head: 6,
            time: AFTER,
            finalized: None,
        };
        assert_eq!(
            types(&advance(
                &mut unpaid,
                caught_up,
                Finality::Depth(1),
                EXPIRES
            )),
            ["payment.expired"]
        );
    }

    #[test]
    fn a_transfer_mined_after_expiry_is_late_even_if_the_clock_has_not_expired_it_yet() {
        let mut p = payment(100);
        let changes = accept(&mut p, transfer(1, 10, 100, AFTER), EXPIRES - 10);
        assert_eq!(types(&changes), ["payment.late"]);
        assert_eq!(p.status, PaymentStatus::Pending);
    }

    #[test]
    fn a_transfer_after_confirmation_is_late_and_not_counted() {
        let mut p = payment(100);
        accept(&mut p, transfer(1, 10, 100, BEFORE), 1);
        advance(&mut p, tip(20), Finality::Depth(2), 2);
        let changes = accept(&mut p, transfer(2, 21, 50, BEFORE), 3);
        assert_eq!(types(&changes), ["payment.late"]);
        assert_eq!(p.paid(), U256::from(100));
    }

    #[test]
    fn a_detected_payment_that_is_paid_in_time_does_not_expire() {
        let mut p = payment(100);
        accept(&mut p, transfer(1, 10, 100, BEFORE), 1);
        assert!(advance(&mut p, tip(10), Finality::Depth(5), EXPIRES + 1).is_empty());
        assert_eq!(p.status, PaymentStatus::Detected);
    }

    #[test]
    fn a_reorg_moves_a_detected_payment_back_and_its_orphan_never_confirms() {
        let mut p = payment(100);
        accept(&mut p, transfer(1, 10, 100, BEFORE), 1);
        let changes = orphan(&mut p, 9, 2);
        assert!(matches!(
            &changes[..],
            [Change::Reorged { orphaned, previous: PaymentStatus::Detected }] if orphaned.len() == 1
        ));
        assert_eq!(p.status, PaymentStatus::Pending);
        assert!(advance(&mut p, tip(100), Finality::Depth(3), 3).is_empty());
        // Re-included in another block: detected and confirmed again.
        let mut again = transfer(1, 11, 100, BEFORE);
        again.block_hash = B256::repeat_byte(0xee);
        assert_eq!(types(&accept(&mut p, again, 4)), ["payment.detected"]);
        assert_eq!(
            types(&advance(&mut p, tip(13), Finality::Depth(3), 5)),
            ["payment.confirmed"]
        );
        assert_eq!(p.transfers[0].block_hash, B256::repeat_byte(0xee));
    }

    #[test]
    fn a_reorg_that_leaves_part_of_the_payment_makes_it_underpaid() {
        let mut p = payment(100);
        accept(&mut p, transfer(1, 10, 60, BEFORE), 1);
        accept(&mut p, transfer(2, 12, 40, BEFORE), 2);
        assert_eq!(p.status, PaymentStatus::Detected);
        assert_eq!(types(&orphan(&mut p, 11, 3)), ["payment.reorged"]);
        assert_eq!(p.status, PaymentStatus::Underpaid);
        assert_eq!(p.paid(), U256::from(60));
    }

    #[test]
    fn a_reorg_below_every_transfer_changes_nothing() {
        let mut p = payment(100);
        accept(&mut p, transfer(1, 10, 100, BEFORE), 1);
        assert!(orphan(&mut p, 10, 2).is_empty());
        assert_eq!(p.status, PaymentStatus::Detected);
    }

    #[test]
    fn finalized_mode_confirms_at_the_finalized_block_not_at_a_depth() {
        let mut p = payment(100);
        accept(&mut p, transfer(1, 10, 100, BEFORE), 1);
        let deep = Tip {
            head: 1000,
            time: BEFORE,
            finalized: Some(9),
        };
        assert!(advance(&mut p, deep, Finality::Finalized, 2).is_empty());
        let reached = Tip {
            head: 1000,
            time: BEFORE,
            finalized: Some(10),
        };
        assert_eq!(
            types(&advance(&mut p, reached, Finality::Finalized, 3)),
            ["payment.confirmed"]
        );
    }
}
