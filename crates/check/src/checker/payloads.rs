//! The payload checks: lost, lost after delivery, unexpected, stored twice,
//! id reused; and the payload figures of the report.
//!
//! A payload is the unique body of one enqueue. Its *home* is the message
//! its enqueue stored (for a dead letter, the source message the delivery
//! names); its dead letters are the messages in a dead-letter queue that
//! carry it. One payload has one home and at most one dead letter; one
//! message carries one payload.

use std::collections::{BTreeMap, BTreeSet};

use super::facts::{Facts, MessageKey, Sent, SettleKind};
use super::Findings;
use crate::history::PayloadId;
use crate::report::{Payloads, ViolationKind};

/// Notes kept about acks refused though they took effect.
const MAX_REFUSED_ACK_NOTES: u64 = 5;

/// Lost, lost after delivery, unexpected, stored twice, id reused; and the
/// payload figures.
pub(super) fn check_payloads(
    facts: &Facts,
    drained: bool,
    findings: &mut Findings,
    notes: &mut Vec<String>,
) -> Payloads {
    let mut homes: BTreeMap<&PayloadId, BTreeSet<MessageKey>> = BTreeMap::new();
    let mut dead: BTreeMap<&PayloadId, BTreeSet<MessageKey>> = BTreeMap::new();
    let mut carried: BTreeMap<MessageKey, BTreeSet<&PayloadId>> = BTreeMap::new();
    let mut acknowledged = 0;
    for (payload, outcomes) in &facts.sent {
        let mut stored = None;
        for outcome in outcomes {
            if let Sent::Stored(key, comp) = outcome {
                stored.get_or_insert((key, comp));
                homes.entry(payload).or_default().insert(key.clone());
                carried.entry(key.clone()).or_default().insert(payload);
            }
        }
        let Some((key, comp)) = stored else { continue };
        acknowledged += 1;
        if !facts.by_payload.contains_key(payload) {
            findings.add(ViolationKind::Lost, || {
                format!("payload {payload} enqueued as {key} (ok at seq {comp}), never delivered")
            });
        }
    }
    for seen in &facts.seen {
        homes
            .entry(seen.payload)
            .or_default()
            .insert(seen.home().clone());
        carried
            .entry(seen.key.clone())
            .or_default()
            .insert(seen.payload);
        if let Some(origin) = &seen.origin {
            carried
                .entry(origin.clone())
                .or_default()
                .insert(seen.payload);
            dead.entry(seen.payload)
                .or_default()
                .insert(seen.key.clone());
        }
    }
    let mut acked = 0;
    let mut acks_refused_but_applied = 0;
    for (payload, deliveries) in &facts.by_payload {
        let first = &facts.seen[deliveries[0]];
        match facts.sent.get(payload) {
            None => findings.add(ViolationKind::Unexpected, || {
                format!(
                    "payload {payload} delivered as {} but never enqueued",
                    first.at()
                )
            }),
            Some(outcomes) if outcomes.iter().all(|o| matches!(o, Sent::Refused)) => {
                findings.add(ViolationKind::Unexpected, || {
                    format!(
                        "payload {payload} delivered as {} though every enqueue of it was refused",
                        first.at()
                    )
                })
            }
            Some(_) => {}
        }
        let keys: BTreeSet<&MessageKey> = deliveries.iter().map(|i| &facts.seen[*i].key).collect();
        let settles = || {
            keys.iter()
                .flat_map(|k| facts.settles_of(k))
                .filter(|(_, s)| s.payload == *payload)
        };
        acked += u64::from(settles().any(|(_, s)| s.kind == SettleKind::Ack && s.accepted));
        let mut acks = settles()
            .filter(|(_, s)| s.kind == SettleKind::Ack)
            .peekable();
        let first_ack = acks.peek().map(|(_, s)| s.at());
        let all_refused = first_ack.is_some() && acks.all(|(_, s)| s.refused);
        if let (true, true, Some(ack)) = (drained, all_refused, first_ack) {
            acks_refused_but_applied += 1;
            if acks_refused_but_applied <= MAX_REFUSED_ACK_NOTES {
                notes.push(format!(
                    "payload {payload} is gone after the drain though every ack of it was refused, e.g. the {ack}"
                ));
            }
        }
        if drained && !settles().any(|(_, s)| s.kind == SettleKind::Ack) {
            findings.add(ViolationKind::LostAfterDelivery, || {
                format!(
                    "payload {payload} delivered as {}, never acked, and gone after the drain",
                    first.at()
                )
            });
        }
    }
    for (payload, keys) in homes.iter().chain(dead.iter()) {
        for extra in keys.iter().skip(1) {
            findings.add(ViolationKind::StoredTwice, || {
                format!(
                    "payload {payload} stored as {} and as {extra}",
                    keys.iter()
                        .next()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            });
        }
    }
    for (key, payloads) in &carried {
        if payloads.len() > 1 {
            findings.add(ViolationKind::IdReused, || {
                let names: Vec<String> = payloads.iter().map(ToString::to_string).collect();
                format!("{key} carried payloads {}", names.join(", "))
            });
        }
    }
    Payloads {
        sent: facts.sent.len() as u64,
        acknowledged,
        delivered: facts.by_payload.len() as u64,
        acked,
        dead_lettered: dead.len() as u64,
        deliveries: facts.seen.len() as u64,
        acks_refused_but_applied,
    }
}
