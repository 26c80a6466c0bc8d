//! The records kept in redb. Field names are the stored JSON; add fields with defaults only.
//! Fields at their default are left out of the stored JSON: records are written on every
//! publish and every attempt, and smaller ones cost the writer less.

use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, EventId};
use crate::time::UnixMillis;

/// One published event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created_at: UnixMillis,
    /// The data object exactly as the publisher sent it (numbers keep every digit).
    pub data: Box<serde_json::value::RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// SHA-256 of the type and data, to tell a retried publish from a conflicting one.
    pub fingerprint: String,
    /// The deliveries the event fanned out to.
    pub deliveries: Vec<DeliveryRef>,
    /// Endpoints whose plugin chain dropped the event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedRef>,
}

/// One delivery of an event, as the event lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRef {
    pub id: DeliveryId,
    pub endpoint_id: String,
    /// Why the delivery was parked at publish time (a plugin failed), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<String>,
}

/// An endpoint that will not receive an event because a plugin filter dropped it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DroppedRef {
    pub endpoint_id: String,
    /// `name@version` of the filter that dropped it.
    pub by: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    DeadLettered,
    /// The endpoint's plugin filter dropped the event after it was committed.
    Dropped,
}

/// One event bound for one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub endpoint_id: String,
    pub status: DeliveryStatus,
    pub created_at: UnixMillis,
    /// Attempts made so far, over the delivery's whole life.
    pub attempt_count: u32,
    /// `attempt_count` when the current retry cycle began (0, or the count at the last replay).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cycle_start: u32,
    /// When the next attempt is due; also its key in the due-time index. `None` once final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<UnixMillis>,
    /// When it was dead-lettered; also its key in the dead-letter index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered_at: Option<UnixMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The body's content type; `None` means `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Extra headers a plugin asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// `name@version` of each plugin that shaped the body, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    /// No body yet: the plugin chain has not run (a domain event, rendered after its commit)
    /// or failed (the delivery is parked; a replay runs it again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_render: bool,
}

impl DeliveryRecord {
    /// A new delivery of `event_id` to `endpoint_id`, pending, with no attempt yet.
    pub fn pending(
        id: DeliveryId,
        event_id: EventId,
        endpoint_id: String,
        created_at: UnixMillis,
    ) -> Self {
        Self {
            id,
            event_id,
            endpoint_id,
            status: DeliveryStatus::Pending,
            created_at,
            attempt_count: 0,
            cycle_start: 0,
            next_attempt_at: None,
            dead_lettered_at: None,
            last_error: None,
            content_type: None,
            headers: Vec::new(),
            plugins: Vec::new(),
            needs_render: false,
        }
    }
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// One HTTP attempt and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub number: u32,
    pub at: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// At most 1 KiB of the response body, lossily decoded as UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_snippet: Option<String>,
}

/// What the gateway learned about an endpoint at run time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointState {
    /// Why the endpoint is disabled; `None` while it is enabled.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<UnixMillis>,
}

/// How far a chain has been scanned, and the recent block hashes that detect a reorg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCursor {
    /// The last block whose transfers are committed.
    pub number: u64,
    pub hash: alloy::primitives::B256,
    /// That block's timestamp, unix seconds; 0 when unknown (after a rewind, until the next
    /// step). Expiry waits until the scan has passed `expires_at` by this clock.
    #[serde(default)]
    pub time: u64,
    /// `(number, hash)` of up to [`ChainCursor::WINDOW`] blocks ending at the cursor, oldest
    /// first: a reorg is walked back through them to the common ancestor.
    pub recent: Vec<(u64, alloy::primitives::B256)>,
}

impl ChainCursor {
    /// Block hashes kept: the deepest reorg the scanner can walk back.
    pub const WINDOW: usize = 128;

    /// A cursor at one block, with no history (a fresh scan start).
    pub fn at(number: u64, hash: alloy::primitives::B256) -> Self {
        Self {
            number,
            hash,
            time: 0,
            recent: vec![(number, hash)],
        }
    }

    /// Moves the cursor forward through `blocks` (consecutive, each the child of the last).
    pub fn advance(&mut self, blocks: &[(u64, alloy::primitives::B256)]) {
        if let Some(&(number, hash)) = blocks.last() {
            self.recent.extend_from_slice(blocks);
            let excess = self.recent.len().saturating_sub(Self::WINDOW);
            self.recent.drain(..excess);
            self.number = number;
            self.hash = hash;
        }
    }

    /// Moves the cursor back to `number`, a block it remembers; `false` if it does not.
    pub fn rewind(&mut self, number: u64) -> bool {
        let Some(position) = self.recent.iter().position(|(at, _)| *at == number) else {
            return false;
        };
        self.recent.truncate(position + 1);
        self.number = number;
        self.hash = self.recent[position].1;
        // The ancestor's time is not kept; the next step sets it again.
        self.time = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_keeps_a_bounded_window_and_rewinds_within_it() {
        use alloy::primitives::B256;
        let hash = |n: u64| B256::with_last_byte(n as u8);
        let mut cursor = ChainCursor::at(0, hash(0));
        let blocks: Vec<_> = (1..=200).map(|n| (n, hash(n))).collect();
        cursor.advance(&blocks);
        assert_eq!(cursor.number, 200);
        assert_eq!(cursor.recent.len(), ChainCursor::WINDOW);
        assert_eq!(
            cursor.recent.first(),
            Some(&(73, hash(73))),
            "72 and older dropped"
        );
        assert!(cursor.recent.contains(&(150, hash(150))));
        assert!(cursor.rewind(190));
        assert_eq!((cursor.number, cursor.hash), (190, hash(190)));
        assert_eq!(cursor.recent.last(), Some(&(190, hash(190))));
        assert!(!cursor.rewind(10), "below the window");
    }

    #[test]
    fn default_fields_are_left_out_and_read_back_as_defaults() {
        let record =
            DeliveryRecord::pending(DeliveryId::new(), EventId::new(), "orders".to_owned(), 1);
        let json = serde_json::to_string(&record).unwrap();
        for absent in [
            "cycle_start",
            "next_attempt_at",
            "dead_lettered_at",
            "last_error",
        ] {
            assert!(!json.contains(absent), "{absent} in {json}");
        }
        let back: DeliveryRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.next_attempt_at, None);
        assert_eq!(back.cycle_start, 0);
        assert!(!back.needs_render);
        // Records written before fields were left out (with explicit nulls) still read.
        let older = json.replacen('{', r#"{"next_attempt_at":null,"last_error":null,"#, 1);
        let back: DeliveryRecord = serde_json::from_str(&older).unwrap();
        assert_eq!(back.last_error, None);
    }
}
