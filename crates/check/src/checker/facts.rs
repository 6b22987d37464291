//! The history digested into indexes the checks share.
//!
//! [`Facts::gather`] pairs each invoke with its completion ([`Call`]) and
//! extracts what the checks reason about: what each enqueue did with each
//! payload ([`Sent`]), every delivery a returned receive shows ([`Seen`]),
//! and every receipt an ack or nack carried ([`Settle`]), tied to the delivery
//! it came from. Nothing here judges; it only indexes.
//!
//! A receipt names a delivery by queue, id and delivery count; when an id
//! was reused, two deliveries share a receipt, and a settle is tied to the
//! latest of them that completed before the settle was invoked.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Op, PayloadId, Phase, Record};
use crate::report::Operations;

/// A message: its queue and its id there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageKey {
    /// The queue.
    pub queue: String,
    /// The id in that queue.
    pub id: u64,
}

impl std::fmt::Display for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.queue, self.id)
    }
}

pub(super) fn key(queue: &str, id: u64) -> MessageKey {
    MessageKey {
        queue: queue.to_string(),
        id,
    }
}

/// An invoke and its completion, if any.
pub(super) struct Call<'a> {
    pub(super) invoke: &'a Record,
    pub(super) done: Option<&'a Record>,
}

impl<'a> Call<'a> {
    pub(super) fn phase(&self) -> Phase {
        self.done.map_or(Phase::Unknown, |d| d.phase)
    }
    pub(super) fn inv(&self) -> u64 {
        self.invoke.seq
    }
    pub(super) fn comp(&self) -> u64 {
        self.done.map_or(u64::MAX, |d| d.seq)
    }
    pub(super) fn op(&self) -> &'a Op {
        self.done.map_or(&self.invoke.op, |d| &d.op)
    }
}

/// What an enqueue did with one payload.
pub(super) enum Sent {
    /// It returned an id.
    Stored(MessageKey, u64),
    /// The server refused it.
    Refused,
    /// Nobody knows.
    Unknown,
}

/// One delivery a receive returned.
pub(super) struct Seen<'a> {
    pub(super) key: MessageKey,
    pub(super) queue: &'a str,
    pub(super) count: u32,
    pub(super) payload: &'a PayloadId,
    pub(super) receipt: &'a str,
    pub(super) group: Option<&'a str>,
    /// For a dead letter, its source message.
    pub(super) origin: Option<MessageKey>,
    pub(super) call: usize,
    pub(super) inv: u64,
    pub(super) comp: u64,
    pub(super) inv_ms: u64,
    pub(super) comp_ms: u64,
    pub(super) visibility_ms: Option<u64>,
}

impl Seen<'_> {
    /// The message the payload was stored as by its enqueue.
    pub(super) fn home(&self) -> &MessageKey {
        self.origin.as_ref().unwrap_or(&self.key)
    }
    pub(super) fn at(&self) -> String {
        format!(
            "{} (delivery {}, receive seq {}..{})",
            self.key, self.count, self.inv, self.comp
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum SettleKind {
    Ack,
    Nack,
}

/// One receipt of an ack or nack.
pub(super) struct Settle<'a> {
    pub(super) kind: SettleKind,
    pub(super) key: MessageKey,
    pub(super) count: u32,
    /// The payload of the delivery the receipt came from.
    pub(super) payload: &'a PayloadId,
    pub(super) accepted: bool,
    /// The call returned and refused this receipt.
    pub(super) refused: bool,
    pub(super) inv: u64,
    pub(super) comp: u64,
}

impl Settle<'_> {
    pub(super) fn at(&self) -> String {
        let kind = match self.kind {
            SettleKind::Ack => "ack",
            SettleKind::Nack => "nack",
        };
        format!(
            "{kind} of {} delivery {} (seq {}..{})",
            self.key, self.count, self.inv, self.comp
        )
    }
}

/// The history, digested into indexes.
pub(super) struct Facts<'a> {
    pub(super) calls: Vec<Call<'a>>,
    pub(super) sent: BTreeMap<&'a PayloadId, Vec<Sent>>,
    pub(super) seen: Vec<Seen<'a>>,
    pub(super) settles: Vec<Settle<'a>>,
    pub(super) depths: Vec<(String, Option<u64>)>,
    pub(super) by_key: BTreeMap<MessageKey, Vec<usize>>,
    pub(super) copies: HashMap<MessageKey, Vec<usize>>,
    pub(super) by_payload: BTreeMap<&'a PayloadId, Vec<usize>>,
    pub(super) settles_by_key: HashMap<MessageKey, Vec<usize>>,
}

impl<'a> Facts<'a> {
    pub(super) fn gather(records: &'a [Record]) -> Self {
        let completions: HashMap<u64, &Record> = records
            .iter()
            .filter_map(|r| r.invoke_seq.map(|seq| (seq, r)))
            .collect();
        let calls: Vec<Call> = records
            .iter()
            .filter(|r| r.phase == Phase::Invoke)
            .map(|r| Call {
                invoke: r,
                done: completions.get(&r.seq).copied(),
            })
            .collect();
        let mut facts = Facts {
            calls: Vec::new(),
            sent: BTreeMap::new(),
            seen: Vec::new(),
            settles: Vec::new(),
            depths: Vec::new(),
            by_key: BTreeMap::new(),
            copies: HashMap::new(),
            by_payload: BTreeMap::new(),
            settles_by_key: HashMap::new(),
        };
        for (index, call) in calls.iter().enumerate() {
            match call.op() {
                Op::Enqueue { .. } => facts.note_enqueue(call),
                Op::Receive { .. } => facts.note_receive(index, call),
                Op::Depth { queue, messages } => {
                    let messages = (call.phase() == Phase::Ok).then_some(*messages).flatten();
                    facts.depths.push((queue.clone(), messages));
                }
                Op::Ack { .. } | Op::Nack { .. } | Op::Fault { .. } => {}
            }
        }
        let receipts = facts.receipt_index();
        for call in &calls {
            facts.note_settle(call, &receipts);
        }
        facts.calls = calls;
        facts.index();
        facts
    }

    pub(super) fn note_enqueue(&mut self, call: &Call<'a>) {
        let Op::Enqueue {
            queue,
            messages,
            results,
        } = call.op()
        else {
            return;
        };
        for message in messages {
            let outcome = match call.phase() {
                Phase::Fail => Sent::Refused,
                Phase::Ok => match results.iter().find(|r| r.payload == message.payload) {
                    Some(result) => match (result.id, &result.refused) {
                        (Some(id), None) => Sent::Stored(key(queue, id), call.comp()),
                        (_, Some(_)) => Sent::Refused,
                        (None, None) => Sent::Unknown,
                    },
                    None => Sent::Unknown,
                },
                Phase::Unknown | Phase::Invoke => Sent::Unknown,
            };
            self.sent.entry(&message.payload).or_default().push(outcome);
        }
    }

    pub(super) fn note_receive(&mut self, index: usize, call: &Call<'a>) {
        let Op::Receive {
            queue,
            visibility_ms,
            deliveries,
            ..
        } = call.op()
        else {
            return;
        };
        if call.phase() != Phase::Ok {
            return;
        }
        let done = call.done.expect("an ok call has a completion");
        for delivery in deliveries {
            self.seen.push(Seen {
                key: key(queue, delivery.id),
                queue,
                count: delivery.delivery_count,
                payload: &delivery.payload,
                receipt: &delivery.receipt,
                group: delivery.group.as_deref(),
                origin: delivery.dead_letter.as_ref().map(|o| key(&o.queue, o.id)),
                call: index,
                inv: call.inv(),
                comp: call.comp(),
                inv_ms: call.invoke.time_ms,
                comp_ms: done.time_ms,
                visibility_ms: *visibility_ms,
            });
        }
    }

    /// The deliveries seen by (queue, receipt).
    pub(super) fn receipt_index(&self) -> HashMap<(&'a str, &'a str), Vec<usize>> {
        let mut receipts: HashMap<(&'a str, &'a str), Vec<usize>> = HashMap::new();
        for (index, seen) in self.seen.iter().enumerate() {
            receipts
                .entry((seen.queue, seen.receipt))
                .or_default()
                .push(index);
        }
        receipts
    }

    /// The delivery a settle's receipt came from: the latest one with that
    /// receipt that completed before the settle was invoked.
    pub(super) fn note_settle(
        &mut self,
        call: &Call<'a>,
        receipts: &HashMap<(&'a str, &'a str), Vec<usize>>,
    ) {
        let (kind, queue, sent, results) = match call.op() {
            Op::Ack {
                queue,
                receipts,
                results,
            } => (SettleKind::Ack, queue, receipts, results),
            Op::Nack {
                queue,
                receipts,
                results,
            } => (SettleKind::Nack, queue, receipts, results),
            _ => return,
        };
        for receipt in sent {
            let Some(candidates) = receipts.get(&(queue.as_str(), receipt.as_str())) else {
                continue;
            };
            let Some(seen) = candidates
                .iter()
                .map(|i| &self.seen[*i])
                .filter(|s| s.comp < call.inv())
                .max_by_key(|s| s.comp)
                .or_else(|| candidates.first().map(|i| &self.seen[*i]))
            else {
                continue;
            };
            let accepted = call.phase() == Phase::Ok
                && results
                    .iter()
                    .any(|r| &r.receipt == receipt && r.refused.is_none());
            self.settles.push(Settle {
                kind,
                key: seen.key.clone(),
                count: seen.count,
                payload: seen.payload,
                accepted,
                refused: call.phase() == Phase::Ok && !accepted,
                inv: call.inv(),
                comp: call.comp(),
            });
        }
    }

    pub(super) fn index(&mut self) {
        for (i, seen) in self.seen.iter().enumerate() {
            self.by_key.entry(seen.key.clone()).or_default().push(i);
            if let Some(origin) = &seen.origin {
                self.copies.entry(origin.clone()).or_default().push(i);
            }
            self.by_payload.entry(seen.payload).or_default().push(i);
        }
        for list in self.by_payload.values_mut() {
            list.sort_by_key(|i| (self.seen[*i].comp, self.seen[*i].inv));
        }
        for (i, settle) in self.settles.iter().enumerate() {
            self.settles_by_key
                .entry(settle.key.clone())
                .or_default()
                .push(i);
        }
    }

    pub(super) fn settles_of(
        &self,
        key: &MessageKey,
    ) -> impl Iterator<Item = (usize, &Settle<'a>)> {
        self.settles_by_key
            .get(key)
            .into_iter()
            .flatten()
            .map(|i| (*i, &self.settles[*i]))
    }

    pub(super) fn deliveries_of(
        &self,
        key: &MessageKey,
    ) -> impl Iterator<Item = (usize, &Seen<'a>)> {
        self.by_key
            .get(key)
            .into_iter()
            .flatten()
            .map(|i| (*i, &self.seen[*i]))
    }

    pub(super) fn copies_of(&self, key: &MessageKey) -> impl Iterator<Item = (usize, &Seen<'a>)> {
        self.copies
            .get(key)
            .into_iter()
            .flatten()
            .map(|i| (*i, &self.seen[*i]))
    }

    pub(super) fn operations(&self) -> Operations {
        let mut ops = Operations::default();
        for call in &self.calls {
            match call.invoke.op {
                Op::Enqueue { .. } => ops.enqueue += 1,
                Op::Receive { .. } => ops.receive += 1,
                Op::Ack { .. } => ops.ack += 1,
                Op::Nack { .. } => ops.nack += 1,
                Op::Depth { .. } | Op::Fault { .. } => continue,
            }
            ops.total += 1;
            match call.phase() {
                Phase::Ok => ops.ok += 1,
                Phase::Fail => ops.fail += 1,
                Phase::Unknown | Phase::Invoke => ops.unknown += 1,
            }
        }
        ops
    }
}
