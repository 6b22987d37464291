//! The lease checks: one lease delivered twice, a stale receipt accepted, a
//! delivery after a successful ack, a redelivery before the lease could have
//! run out; and the classification of duplicate deliveries by cause.
//!
//! They reason per message and payload (a reused id is the id-reuse check's
//! business, not a redelivery): delivery `n + 1` supersedes delivery `n`, a
//! dead letter supersedes every delivery of its source message, and an
//! accepted ack ends the message.

use std::collections::{BTreeMap, HashSet};

use super::facts::{Facts, MessageKey, Seen, Settle, SettleKind};
use super::{CheckOptions, Findings};
use crate::history::PayloadId;
use crate::report::{Duplicates, ViolationKind};

/// Deliveries marked by the lease checks, for the duplicate classification.
#[derive(Default)]
pub(super) struct Marks {
    pub(super) after_ack: HashSet<usize>,
    pub(super) same_lease: HashSet<usize>,
}

/// Lease delivered twice, stale receipt accepted, delivered after ack, early
/// redelivery.
pub(super) fn check_leases(
    facts: &Facts,
    options: &CheckOptions,
    findings: &mut Findings,
) -> Marks {
    let mut marks = Marks::default();
    let mut keys: Vec<&MessageKey> = facts.by_key.keys().collect();
    keys.sort();
    for key in keys {
        let mut deliveries: Vec<(usize, &Seen)> = facts.deliveries_of(key).collect();
        deliveries.sort_by_key(|(_, s)| (s.payload, s.count, s.comp));
        for pair in deliveries.windows(2) {
            let (first, second) = (pair[0].1, pair[1]);
            if first.count == second.1.count && first.payload == second.1.payload {
                marks.same_lease.insert(second.0);
                findings.add(ViolationKind::LeaseDeliveredTwice, || {
                    format!("{} was also returned as {}", first.at(), second.1.at())
                });
            }
        }
    }
    for (index, settle) in facts.settles.iter().enumerate() {
        if settle.accepted {
            check_settle(facts, index, settle, &mut marks, findings);
        }
    }
    check_early_redelivery(facts, options, &marks, findings);
    marks
}

/// The checks of one accepted ack or nack.
pub(super) fn check_settle(
    facts: &Facts,
    index: usize,
    settle: &Settle,
    marks: &mut Marks,
    findings: &mut Findings,
) {
    let later = facts
        .deliveries_of(&settle.key)
        .filter(|(_, s)| s.count > settle.count)
        .chain(facts.copies_of(&settle.key))
        .filter(|(_, s)| s.payload == settle.payload);
    let mut stale: Option<String> = None;
    for (i, seen) in later {
        if seen.comp < settle.inv {
            stale.get_or_insert_with(|| seen.at());
        } else if settle.kind == SettleKind::Ack && marks.after_ack.insert(i) {
            findings.add(ViolationKind::DeliveredAfterAck, || {
                format!(
                    "{} came after (or raced) the {} that returned ok",
                    seen.at(),
                    settle.at()
                )
            });
        }
    }
    if stale.is_none() {
        stale = facts
            .settles_of(&settle.key)
            .find(|(i, other)| {
                *i != index
                    && other.accepted
                    && other.count == settle.count
                    && other.payload == settle.payload
                    && other.comp < settle.inv
            })
            .map(|(_, other)| other.at());
    }
    if let Some(superseded_by) = stale {
        findings.add(ViolationKind::StaleReceiptAccepted, || {
            format!(
                "{} returned ok, though {superseded_by} had completed before it was invoked",
                settle.at()
            )
        });
    }
}

/// A redelivery without a nack before the previous lease could have expired.
pub(super) fn check_early_redelivery(
    facts: &Facts,
    options: &CheckOptions,
    marks: &Marks,
    findings: &mut Findings,
) {
    for (key, indexes) in &facts.by_key {
        let by_count: BTreeMap<(&PayloadId, u32), &Seen> = indexes
            .iter()
            .filter(|i| !marks.after_ack.contains(i) && !marks.same_lease.contains(i))
            .map(|i| {
                (
                    (facts.seen[*i].payload, facts.seen[*i].count),
                    &facts.seen[*i],
                )
            })
            .collect();
        for ((payload, count), next) in &by_count {
            let Some(previous) = count
                .checked_sub(1)
                .and_then(|c| by_count.get(&(*payload, c)))
            else {
                continue;
            };
            let Some(visibility) = previous.visibility_ms else {
                continue;
            };
            let nacked = facts.settles_of(key).any(|(_, s)| {
                s.kind == SettleKind::Nack
                    && s.count == previous.count
                    && s.payload == previous.payload
                    && s.inv < next.comp
            });
            let earliest_expiry = previous.inv_ms + visibility;
            if !nacked && next.comp_ms + options.lease_slack_ms < earliest_expiry {
                findings.add(ViolationKind::EarlyRedelivery, || {
                    format!(
                        "{} at {} ms, though the lease of {} (invoked at {} ms, {} ms) ran at least to {} ms",
                        next.at(), next.comp_ms, previous.at(), previous.inv_ms, visibility, earliest_expiry
                    )
                });
            }
        }
    }
}

/// Every delivery after a payload's first, by cause.
pub(super) fn classify_duplicates(facts: &Facts, marks: &Marks) -> Duplicates {
    let mut duplicates = Duplicates::default();
    for deliveries in facts.by_payload.values() {
        let primary = facts.seen[deliveries[0]].home();
        let mut dead_letter = facts.seen[deliveries[0]]
            .origin
            .as_ref()
            .map(|_| &facts.seen[deliveries[0]].key);
        for &i in &deliveries[1..] {
            let seen = &facts.seen[i];
            let second_dead_letter =
                seen.origin.is_some() && *dead_letter.get_or_insert(&seen.key) != &seen.key;
            let counter = if seen.home() != primary || second_dead_letter {
                &mut duplicates.stored_twice
            } else if marks.after_ack.contains(&i) {
                &mut duplicates.after_ack
            } else if marks.same_lease.contains(&i) {
                &mut duplicates.same_lease
            } else if seen.origin.is_some() && seen.count == 1 {
                &mut duplicates.dead_letter
            } else if facts.settles_of(&seen.key).any(|(_, s)| {
                s.kind == SettleKind::Nack
                    && s.count + 1 == seen.count
                    && s.payload == seen.payload
                    && s.inv < seen.comp
            }) {
                &mut duplicates.after_nack
            } else {
                &mut duplicates.after_expiry
            };
            *counter += 1;
        }
    }
    duplicates
}
