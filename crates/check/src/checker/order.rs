//! The order checks: first deliveries of ungrouped messages in id order, and
//! message groups: FIFO, with at most one message leased at a time.
//!
//! Each sweeps a queue's (or group's) messages from the highest id down,
//! keeping the earliest delivery among the higher ids, so a violation is found
//! in one pass instead of by comparing every pair.

use std::collections::{BTreeMap, HashMap};

use super::facts::{Facts, Seen, Settle};
use super::Findings;
use crate::report::ViolationKind;

/// First deliveries of ungrouped messages, per queue, in id order.
pub(super) fn check_queue_order(facts: &Facts, findings: &mut Findings) {
    let mut firsts: BTreeMap<&str, BTreeMap<u64, &Seen>> = BTreeMap::new();
    for seen in facts
        .seen
        .iter()
        .filter(|s| s.count == 1 && s.group.is_none())
    {
        let entry = firsts
            .entry(seen.key.queue.as_str())
            .or_default()
            .entry(seen.key.id)
            .or_insert(seen);
        if seen.comp < entry.comp {
            *entry = seen;
        }
    }
    for messages in firsts.values() {
        let mut earliest_later: Option<&Seen> = None;
        for seen in messages.values().rev() {
            if let Some(later) = earliest_later {
                if later.comp < seen.inv {
                    findings.add(ViolationKind::QueueOrder, || {
                        format!("{} was first delivered before {}", later.at(), seen.at())
                    });
                }
            }
            if earliest_later.is_none_or(|l| seen.comp < l.comp) {
                earliest_later = Some(seen);
            }
        }
    }
}

/// What one grouped message's deliveries and settles show about its life.
#[derive(Default)]
pub(super) struct GroupLife<'s> {
    /// Its earliest delivery (by completion).
    pub(super) first: Option<&'s Seen<'s>>,
    /// Its delivery invoked last.
    pub(super) last_delivery: Option<&'s Seen<'s>>,
    /// The accepted ack or nack of it invoked last.
    pub(super) last_settle: Option<&'s Settle<'s>>,
}

/// Group FIFO and one lease per group.
pub(super) fn check_group_order(facts: &Facts, findings: &mut Findings) {
    let mut groups: BTreeMap<(&str, &str), BTreeMap<u64, GroupLife>> = BTreeMap::new();
    let mut per_call: HashMap<(usize, &str, &str), &Seen> = HashMap::new();
    for seen in &facts.seen {
        let Some(group) = seen.group else { continue };
        let queue = seen.key.queue.as_str();
        if let Some(other) = per_call.insert((seen.call, queue, group), seen) {
            findings.add(ViolationKind::GroupConcurrentLease, || {
                format!(
                    "one receive returned {} and {} of group {group}",
                    other.at(),
                    seen.at()
                )
            });
        }
        let life = groups
            .entry((queue, group))
            .or_default()
            .entry(seen.key.id)
            .or_default();
        if life.first.is_none_or(|f| seen.comp < f.comp) {
            life.first = Some(seen);
        }
        if life.last_delivery.is_none_or(|l| seen.inv > l.inv) {
            life.last_delivery = Some(seen);
        }
    }
    for settle in facts.settles.iter().filter(|s| s.accepted) {
        let Some((_, seen)) = facts
            .deliveries_of(&settle.key)
            .find(|(_, s)| s.payload == settle.payload)
        else {
            continue;
        };
        let Some(group) = seen.group else { continue };
        let life = groups
            .entry((settle.key.queue.as_str(), group))
            .or_default()
            .entry(settle.key.id)
            .or_default();
        if life.last_settle.is_none_or(|l| settle.inv > l.inv) {
            life.last_settle = Some(settle);
        }
    }
    for ((_, group), messages) in &groups {
        let mut earliest_later: Option<&Seen> = None;
        for life in messages.values().rev() {
            if let Some(later) = earliest_later {
                if let Some(last) = life.last_delivery.filter(|l| l.inv > later.comp) {
                    findings.add(ViolationKind::GroupOrder, || {
                        format!(
                            "in group {group}, {} came after {} was delivered",
                            last.at(),
                            later.at()
                        )
                    });
                } else if let Some(settle) = life.last_settle.filter(|s| s.inv > later.comp) {
                    findings.add(ViolationKind::GroupConcurrentLease, || {
                        format!(
                            "in group {group}, the {} returned ok after {} was delivered",
                            settle.at(),
                            later.at()
                        )
                    });
                }
            }
            if let Some(first) = life.first {
                if earliest_later.is_none_or(|l| first.comp < l.comp) {
                    earliest_later = Some(first);
                }
            }
        }
    }
}
