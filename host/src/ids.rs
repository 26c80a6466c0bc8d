//! Typed identifiers with a readable prefix (`evt_…`, `dlv_…`).
//!
//! Ids are UUIDv7, so their numeric order is their creation order: redb keys them as `u128`
//! and range scans walk them oldest first. The prefix tells a human which kind of id they hold
//! and makes pasting a delivery id where an event id belongs a clean 404 instead of a wrong row.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The id text did not have the expected `prefix_<32 hex>` form.
#[derive(Debug, thiserror::Error)]
#[error("`{text}` is not a valid {kind} id (expected `{prefix}` followed by 32 hex digits)")]
pub struct InvalidId {
    text: String,
    kind: &'static str,
    prefix: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7().as_u128())
            }

            /// The id as stored in redb.
            pub fn as_u128(self) -> u128 {
                self.0
            }

            /// Rebuilds an id read back from redb.
            pub fn from_u128(raw: u128) -> Self {
                Self(raw)
            }

            /// Writes the id's text (`prefix` and 32 lowercase hex digits) into `buffer`
            /// without going through `fmt`: ids are written several times per delivery.
            pub fn encode(self, buffer: &mut [u8; 36]) -> &str {
                buffer[..4].copy_from_slice(Self::PREFIX.as_bytes());
                Uuid::from_u128(self.0).simple().encode_lower(&mut buffer[4..]);
                std::str::from_utf8(buffer).expect("an ASCII prefix and hex digits")
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.encode(&mut [0; 36]))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let invalid = || InvalidId {
                    text: text.chars().take(80).collect(),
                    kind: $kind,
                    prefix: Self::PREFIX,
                };
                let hex = text.strip_prefix(Self::PREFIX).ok_or_else(invalid)?;
                if hex.len() != 32 {
                    return Err(invalid());
                }
                Uuid::try_parse(hex)
                    .map(|uuid| Self(uuid.as_u128()))
                    .map_err(|_| invalid())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.encode(&mut [0; 36]))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// Identifies one published event; also sent as `webhook-id`.
    EventId,
    "evt_",
    "event"
);
prefixed_id!(
    /// Identifies one delivery: one event bound for one endpoint.
    DeliveryId,
    "dlv_",
    "delivery"
);

prefixed_id!(
    /// Identifies one payment the gateway watches for.
    PaymentId,
    "pay_",
    "payment"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text_form() {
        let id = DeliveryId::new();
        let text = id.to_string();
        assert!(text.starts_with("dlv_") && text.len() == 36, "{text}");
        assert_eq!(text.parse::<DeliveryId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<DeliveryId>(&json).unwrap(), id);
        let known = EventId::from_u128(0x0193_0000_0000_7000_8000_0000_0000_00ff);
        assert_eq!(known.to_string(), "evt_019300000000700080000000000000ff");
    }

    #[test]
    fn an_id_with_the_wrong_prefix_is_rejected() {
        let event = EventId::new().to_string();
        let err = event.parse::<DeliveryId>().unwrap_err();
        assert!(err.to_string().contains("not a valid delivery id"), "{err}");
    }

    #[test]
    fn ids_sort_in_creation_order() {
        let first = EventId::new();
        let second = EventId::new();
        assert!(first < second);
    }
}
