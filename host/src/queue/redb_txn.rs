//! The redb implementation of [`Txn`]: the outbox and the domain tables inside the writer's
//! one write transaction.
//!
//! Both ways an event enters the outbox end here: [`publish`] (the API: fan-out and plugin
//! bodies decided before the commit) and [`RedbTxn::emit`] (domain events: fanned out here to
//! the subscribed endpoints; deliveries to endpoints without plugins get the default body at
//! once, the others are rendered by their plugin chain after the commit, see
//! [`super::Sink::render`]). Table invariants — an event with all its deliveries and due
//! entries, a payment with its address and open-payment index entries — are kept here only.

use std::sync::Arc;

use alloy::primitives::Address;
use bytes::Bytes;
use redb::ReadableTable as _;

use super::writer::AfterCommit;
use super::{
    DeliveryContent, EventSummary, NewEvent, PublishOutcome, ReadyDelivery, RenderJob, Txn,
};
use crate::delivery::Subscriptions;
use crate::ids::{DeliveryId, EventId, PaymentId};
use crate::payments::Payment;
use crate::plugins::Rendered;
use crate::queue::Emit;
use crate::store::{
    ChainCursor, DeliveryRecord, DeliveryRef, DeliveryStatus, EndpointState, EventRecord,
    StoreError, StoredAnswer, StoredEndpoint, Tables, address_key, body_of, corrupt, read_record,
};
use crate::time::UnixMillis;

/// One write transaction as units of work see it.
pub(super) struct RedbTxn<'a, 'txn> {
    pub tables: &'a mut Tables<'txn>,
    pub after: &'a mut AfterCommit,
    pub subscriptions: &'a Subscriptions,
    pub now: UnixMillis,
}

/// The counter holding the next watch-only derivation index.
const ADDRESS_INDEX: &str = "address_index";

impl Txn for RedbTxn<'_, '_> {
    fn now(&self) -> UnixMillis {
        self.now
    }

    fn stored_endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>, StoreError> {
        self.tables.stored_endpoint(id)
    }

    fn put_stored_endpoint(&mut self, record: &StoredEndpoint) -> Result<(), StoreError> {
        self.tables.put_stored_endpoint(record)
    }

    fn endpoint_disabled(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            read_record::<&str, EndpointState>(&self.tables.endpoints, id)?
                .and_then(|state| state.disabled_reason),
        )
    }

    fn set_endpoint_disabled(
        &mut self,
        id: &str,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let state = EndpointState {
            disabled_at: reason.as_ref().map(|_| self.now),
            disabled_reason: reason.clone(),
        };
        self.tables.put_endpoint_state(id, &state)?;
        self.after.endpoint_changes.push((id.to_owned(), reason));
        Ok(())
    }

    fn api_answer(&self, key: &str) -> Result<Option<StoredAnswer>, StoreError> {
        self.tables.api_answer(key)
    }

    fn put_api_answer(&mut self, key: &str, answer: &StoredAnswer) -> Result<(), StoreError> {
        self.tables.put_api_answer(key, answer)
    }

    fn delete_stored_endpoint(&mut self, id: &str) -> Result<bool, StoreError> {
        self.tables.delete_stored_endpoint(id)
    }

    fn publish(&mut self, event: &NewEvent) -> Result<PublishOutcome, StoreError> {
        publish(self.tables, event, self.after)
    }

    fn emit(&mut self, event: Emit) -> Result<Option<EventId>, StoreError> {
        if self
            .tables
            .idempotency
            .get(event.idempotency_key.as_str())?
            .is_some()
        {
            return Ok(None);
        }
        let id = EventId::new();
        let mut record = EventRecord {
            id,
            fingerprint: crate::events::fingerprint(&event.event_type, event.data.get()),
            event_type: event.event_type,
            created_at: self.now,
            data: event.data,
            idempotency_key: Some(event.idempotency_key),
            deliveries: Vec::new(),
            dropped: Vec::new(),
        };
        let endpoints = self.subscriptions.subscribers(&record.event_type);
        let mut records = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            let delivery = DeliveryRecord {
                needs_render: !endpoint.plugins.is_empty(),
                ..DeliveryRecord::pending(DeliveryId::new(), id, endpoint.id.clone(), self.now)
            };
            record.deliveries.push(DeliveryRef {
                id: delivery.id,
                endpoint_id: delivery.endpoint_id.clone(),
                parked: None,
            });
            records.push(delivery);
        }
        let raw = serde_json::to_vec(&record)?;
        self.tables.events.insert(id.as_u128(), raw.as_slice())?;
        if let Some(key) = &record.idempotency_key {
            self.tables.idempotency.insert(key.as_str(), id.as_u128())?;
        }
        let record = Arc::new(record);
        for mut delivery in records {
            self.tables.schedule(&mut delivery, self.now)?;
            self.tables.put_delivery(&delivery)?;
            if delivery.needs_render {
                self.after.render.push(RenderJob {
                    delivery_id: delivery.id,
                    endpoint_id: delivery.endpoint_id.clone(),
                    event: record.clone(),
                });
            } else {
                let body = crate::events::default_body(
                    id,
                    &record.event_type,
                    record.created_at,
                    record.data.get(),
                );
                self.after.deliver_now.push(ready(&delivery, body));
            }
        }
        Ok(Some(id))
    }

    fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        read_record(&self.tables.payments, id.as_u128())
    }

    fn put_payment(&mut self, payment: &Payment) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(payment)?;
        self.tables
            .payments
            .insert(payment.id.as_u128(), raw.as_slice())?;
        let key = address_key(&payment.chain, &payment.address);
        let open_key = (payment.chain.as_str(), payment.id.as_u128());
        if payment.status.is_open() {
            let detected = payment.status == crate::payments::PaymentStatus::Detected;
            self.tables
                .open_payments
                .insert(open_key, (detected, payment.expires_at))?;
            self.tables
                .addresses
                .insert(key.as_str(), (payment.id.as_u128(), 0))?;
        } else {
            self.tables.open_payments.remove(open_key)?;
            // The address stays watched for late transfers until the late window passes.
            let owner = self
                .tables
                .addresses
                .get(key.as_str())?
                .map(|v| v.value().0);
            if owner == Some(payment.id.as_u128()) {
                self.tables.addresses.insert(
                    key.as_str(),
                    (payment.id.as_u128(), payment.updated_at.max(1)),
                )?;
            }
        }
        Ok(())
    }

    fn payment_at(&self, chain: &str, address: Address) -> Result<Option<Payment>, StoreError> {
        let key = address_key(chain, &address);
        let Some(entry) = self.tables.addresses.get(key.as_str())? else {
            return Ok(None);
        };
        let id = PaymentId::from_u128(entry.value().0);
        self.payment(id)?
            .map(Some)
            .ok_or_else(|| corrupt(format!("address {key} points at missing payment {id}")))
    }

    fn open_payments(&self, chain: &str) -> Result<Vec<Payment>, StoreError> {
        self.open_where(chain, |_| true)
    }

    fn payments_to_advance(
        &self,
        chain: &str,
        now: UnixMillis,
    ) -> Result<Vec<Payment>, StoreError> {
        self.open_where(chain, |(detected, expires_at)| {
            detected || expires_at <= now
        })
    }

    fn take_address_index(&mut self) -> Result<u32, StoreError> {
        let next = self
            .tables
            .counters
            .get(ADDRESS_INDEX)?
            .map_or(0, |value| value.value());
        let index = u32::try_from(next)
            .ok()
            .filter(|index| *index < 0x8000_0000)
            .ok_or_else(|| corrupt("every non-hardened derivation index is used".to_owned()))?;
        self.tables.counters.insert(ADDRESS_INDEX, next + 1)?;
        Ok(index)
    }

    fn chain_cursor(&self, chain: &str) -> Result<Option<ChainCursor>, StoreError> {
        read_record(&self.tables.cursors, chain)
    }

    fn put_chain_cursor(&mut self, chain: &str, cursor: &ChainCursor) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(cursor)?;
        self.tables.cursors.insert(chain, raw.as_slice())?;
        Ok(())
    }
}

impl RedbTxn<'_, '_> {
    /// The open payments of `chain` whose index entry `keep` accepts.
    fn open_where(
        &self,
        chain: &str,
        keep: impl Fn((bool, u64)) -> bool,
    ) -> Result<Vec<Payment>, StoreError> {
        let mut ids = Vec::new();
        for entry in self
            .tables
            .open_payments
            .range((chain, 0)..=(chain, u128::MAX))?
        {
            let (key, value) = entry?;
            if keep(value.value()) {
                ids.push(PaymentId::from_u128(key.value().1));
            }
        }
        ids.into_iter()
            .map(|id| {
                self.payment(id)?
                    .ok_or_else(|| corrupt(format!("open payment {id} is missing")))
            })
            .collect()
    }
}

/// Commits an event published through the API, with the deliveries decided before the commit.
pub(super) fn publish(
    tables: &mut Tables<'_>,
    event: &NewEvent,
    after: &mut AfterCommit,
) -> Result<PublishOutcome, StoreError> {
    if let Some(key) = &event.idempotency_key {
        let existing = tables.idempotency.get(key.as_str())?.map(|id| id.value());
        // A key whose event the retention sweep already removed is forgotten with it.
        if let Some(id) = existing
            && let Some(record) = tables.event(EventId::from_u128(id))?
        {
            return Ok(if record.fingerprint == event.fingerprint {
                PublishOutcome::Replayed(summary(&record))
            } else {
                PublishOutcome::Conflict { key: key.clone() }
            });
        }
        tables
            .idempotency
            .insert(key.as_str(), event.id.as_u128())?;
    }
    let record = event.record();
    let raw = serde_json::to_vec(&record)?;
    tables.events.insert(event.id.as_u128(), raw.as_slice())?;
    let record = Arc::new(record);
    for delivery in &event.deliveries {
        let mut pending = event.pending_record(delivery);
        tables.schedule(&mut pending, event.created_at)?;
        match &delivery.content {
            DeliveryContent::Ready(payload) => {
                set_payload(tables, &mut pending, payload)?;
                after
                    .deliver_now
                    .push(ready(&pending, payload.body.clone()));
            }
            DeliveryContent::Render => {
                after.render.push(RenderJob {
                    delivery_id: delivery.id,
                    endpoint_id: delivery.endpoint_id.clone(),
                    event: record.clone(),
                });
            }
        }
        tables.put_delivery(&pending)?;
    }
    Ok(PublishOutcome::Created(summary(&record)))
}

/// Records how to send a payload, and stores its body when plugins shaped it (the default body
/// is rendered again from the event when needed; see [`crate::store::body_of`]).
pub(super) fn set_payload(
    tables: &mut Tables<'_>,
    record: &mut DeliveryRecord,
    payload: &Rendered,
) -> Result<(), StoreError> {
    if !payload.plugins.is_empty() {
        tables
            .bodies
            .insert(record.id.as_u128(), payload.body.as_ref())?;
    }
    record.content_type = Some(payload.content_type.clone());
    record.headers = payload.headers.clone();
    record.plugins = payload.plugins.clone();
    record.needs_render = false;
    Ok(())
}

/// The in-memory job for a pending delivery's next attempt.
pub(crate) fn ready(record: &DeliveryRecord, body: Bytes) -> ReadyDelivery {
    ReadyDelivery {
        id: record.id,
        event_id: record.event_id,
        endpoint_id: record.endpoint_id.clone(),
        attempt_number: record.attempt_count + 1,
        attempt_in_cycle: record.attempt_count - record.cycle_start + 1,
        body,
        content_type: record
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".to_owned()),
        headers: record.headers.clone(),
    }
}

fn summary(record: &EventRecord) -> EventSummary {
    EventSummary {
        id: record.id,
        event_type: record.event_type.clone(),
        created_at: record.created_at,
        deliveries: record.deliveries.clone(),
        dropped: record.dropped.clone(),
    }
}

/// Parks a delivery in the dead-letter list with `reason`.
pub(super) fn dead_letter(
    tables: &mut Tables<'_>,
    record: &mut DeliveryRecord,
    reason: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    record.status = DeliveryStatus::DeadLettered;
    record.last_error = Some(reason.to_owned());
    record.dead_lettered_at = Some(now);
    tables.dead_letters.insert((now, record.id.as_u128()), ())?;
    Ok(())
}

/// The body a pending delivery sends, read back inside the transaction.
pub(super) fn stored_body(
    tables: &Tables<'_>,
    record: &DeliveryRecord,
) -> Result<Bytes, StoreError> {
    body_of(record, &tables.bodies, &tables.events)
}
