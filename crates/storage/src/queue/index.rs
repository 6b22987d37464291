//! One queue: its messages and the in-memory indexes that make receive cheap.
//!
//! The messages and the dedup entries are persistent maps ([`imbl`]): a
//! clone shares their nodes, so [`Queue::view`], the point-in-time copy a
//! snapshot is written from, costs almost nothing to take, and a later
//! change copies only the nodes on its path while the snapshot still holds
//! them. The indexes are plain collections; a snapshot does not need them
//! (they are rebuilt when one is loaded).
//!
//! The stored truth is [`QueueMeta`] plus the [`Message`]s and the dedup
//! entries; everything else here is an index derived from them and the
//! state machine clock, rebuilt by `Queue::place` when the state is loaded.
//!
//! Invariants (with `promoted_to` the latest time the queue was brought up to):
//! - every message is in exactly one of: `timers` (its `visible_at` is after
//!   `promoted_to`), `ready` (visible, and first of its group if it has one),
//!   or neither (visible but waiting behind an earlier message of its group);
//! - `ready` is ordered by `(visible_at, id)`: a message is delivered in the
//!   order it became ready, so first deliveries keep enqueue order while a
//!   redelivered message (visible again after its lease and backoff) queues
//!   behind the messages that were waiting, instead of jumping ahead of all
//!   of them every time;
//! - `groups[g]` holds the ids of all messages of group `g`; the first is the
//!   group's head, the only one that may be delivered or leased;
//! - `expiry` holds every message by [`Message::expiry_due`] (its expiry, or
//!   its lease's end if later) and `dedup_expiry` every dedup entry by the
//!   end of its window; `bytes` is the sum of message sizes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::queue::config::QueueConfig;
use crate::queue::message::{Message, MessageId, QueueName, Timestamp};

/// Memory a message takes beyond its bytes: the record, its place in the
/// persistent map and in the indexes. Measured by `benches/restart.rs`
/// (RSS growth over a million 256-byte messages: ~700 bytes each).
pub const MESSAGE_OVERHEAD_BYTES: u64 = 700;
/// Memory a remembered dedup id takes beyond the id (map and expiry index).
pub const DEDUP_ENTRY_OVERHEAD_BYTES: u64 = 200;

/// Running totals of a queue, for stats and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages stored (duplicates not counted).
    pub enqueued: u64,
    /// Messages acked.
    pub acked: u64,
    /// Messages moved to the dead-letter queue after `max_deliveries`.
    pub dead_lettered: u64,
    /// Messages dropped past their TTL or retention.
    pub expired: u64,
    /// Messages dropped without being acked: by `drop_oldest` overflow, by a
    /// purge, or after `max_deliveries` when the queue has no dead-letter
    /// queue.
    pub dropped: u64,
    /// Messages moved back out of this (dead-letter) queue by redrive.
    pub redriven: u64,
    /// Leases released unseen (not counted as deliveries).
    pub released: u64,
}

/// What is persisted of a queue besides its messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMeta {
    /// The queue's name.
    pub name: QueueName,
    /// Its configuration.
    pub config: QueueConfig,
    /// When it was created.
    pub created_at: Timestamp,
    /// Running totals.
    pub counters: Counters,
}

/// What a snapshot holds of one queue, taken at one point in time.
#[derive(Clone, Debug)]
pub struct QueueView {
    /// Its metadata.
    pub meta: QueueMeta,
    /// Its messages, by id.
    pub messages: imbl::OrdMap<MessageId, Message>,
    /// Its remembered dedup ids.
    pub dedup: imbl::HashMap<Arc<str>, DedupEntry>,
    /// Message bytes it holds.
    pub bytes: u64,
}

/// A remembered dedup id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    /// The id of the message first enqueued with it.
    pub id: MessageId,
    /// When it is forgotten.
    pub expires_at: Timestamp,
}

/// One queue with its indexes.
#[derive(Clone, Debug)]
pub struct Queue {
    /// Persistent metadata.
    pub meta: QueueMeta,
    messages: imbl::OrdMap<MessageId, Message>,
    ready: BTreeSet<(Timestamp, MessageId)>,
    timers: BTreeSet<(Timestamp, MessageId)>,
    promoted_to: Timestamp,
    groups: HashMap<String, BTreeSet<MessageId>>,
    expiry: BTreeSet<(Timestamp, MessageId)>,
    dedup: imbl::HashMap<Arc<str>, DedupEntry>,
    dedup_expiry: BTreeSet<(Timestamp, Arc<str>)>,
    bytes: u64,
    /// Receipts acked within the dedup window, by the time they are
    /// forgotten: a repeated ack of one of them succeeds again (see
    /// `ack.rs`). Not persisted, not in snapshots or the digest: a node that
    /// restarted answers such a repeat with "unknown receipt" instead, and no
    /// state depends on it.
    acked: BTreeSet<(Timestamp, MessageId, u32)>,
    acked_by_id: HashMap<MessageId, u32>,
}

impl Queue {
    /// An empty queue brought up to `now`.
    pub fn new(meta: QueueMeta, now: Timestamp) -> Self {
        Queue {
            meta,
            messages: imbl::OrdMap::new(),
            ready: BTreeSet::new(),
            timers: BTreeSet::new(),
            promoted_to: now,
            groups: HashMap::new(),
            expiry: BTreeSet::new(),
            dedup: imbl::HashMap::new(),
            dedup_expiry: BTreeSet::new(),
            bytes: 0,
            acked: BTreeSet::new(),
            acked_by_id: HashMap::new(),
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &QueueName {
        &self.meta.name
    }

    /// Its configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.meta.config
    }

    /// All messages in id order.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.messages.values()
    }

    /// One message.
    pub fn message(&self, id: MessageId) -> Option<&Message> {
        self.messages.get(&id)
    }

    /// How many messages it holds.
    pub fn len(&self) -> u64 {
        self.messages.len() as u64
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Message bytes it holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// About how much memory it holds: its message bytes plus
    /// [`MESSAGE_OVERHEAD_BYTES`] per message and
    /// [`DEDUP_ENTRY_OVERHEAD_BYTES`] per remembered dedup id.
    pub fn memory_estimate(&self) -> u64 {
        self.bytes
            + self.messages.len() as u64 * MESSAGE_OVERHEAD_BYTES
            + self.dedup.len() as u64 * DEDUP_ENTRY_OVERHEAD_BYTES
    }

    /// The dedup entries, for snapshots.
    pub fn dedup_entries(&self) -> impl Iterator<Item = (&str, &DedupEntry)> {
        self.dedup.iter().map(|(id, entry)| (&**id, entry))
    }

    /// A point-in-time copy of what a snapshot holds of this queue: its
    /// metadata, messages and dedup entries. Cheap: the maps share their
    /// nodes with the queue.
    pub fn view(&self) -> QueueView {
        QueueView {
            meta: self.meta.clone(),
            messages: self.messages.clone(),
            dedup: self.dedup.clone(),
            bytes: self.bytes,
        }
    }

    /// One dedup entry.
    pub fn dedup_entry(&self, dedup_id: &str) -> Option<&DedupEntry> {
        self.dedup.get(dedup_id)
    }

    /// Whether a message may be delivered when visible: it has no group, or it
    /// heads its group.
    fn heads_its_group(&self, message: &Message) -> bool {
        match &message.group {
            None => true,
            Some(group) => self
                .groups
                .get(group)
                .and_then(|ids| ids.first())
                .is_some_and(|&head| head == message.id),
        }
    }

    /// Puts a message into the indexes its `visible_at`, group and expiry
    /// call for.
    fn place(&mut self, id: MessageId) {
        let message = &self.messages[&id];
        self.expiry.insert((message.expiry_due(), id));
        if message.visible_at > self.promoted_to {
            self.timers.insert((message.visible_at, id));
        } else if self.heads_its_group(message) {
            self.ready.insert((message.visible_at, id));
        }
    }

    /// Takes a message out of `ready`, `timers` and `expiry`.
    fn unplace(&mut self, id: MessageId) {
        let message = &self.messages[&id];
        let key = (message.visible_at, id);
        let expiry = (message.expiry_due(), id);
        self.timers.remove(&key);
        self.ready.remove(&key);
        self.expiry.remove(&expiry);
    }

    /// Brings the indexes up to `now`: messages whose time has come move from
    /// `timers` to `ready` (or wait behind their group's head).
    pub fn promote(&mut self, now: Timestamp) {
        if now <= self.promoted_to {
            return;
        }
        self.promoted_to = now;
        while let Some(&(visible_at, id)) = self.timers.first() {
            if visible_at > now {
                break;
            }
            self.timers.pop_first();
            if self.heads_its_group(&self.messages[&id]) {
                self.ready.insert((visible_at, id));
            }
        }
    }

    /// Adds a message (new, moved in, or loaded from disk).
    pub fn insert(&mut self, message: Message) {
        let id = message.id;
        self.bytes += message.size();
        if let Some(group) = &message.group {
            self.groups.entry(group.clone()).or_default().insert(id);
        }
        let previous = self.messages.insert(id, message);
        assert!(previous.is_none(), "message id {id} inserted twice");
        self.place(id);
    }

    /// Removes a message and everything that indexes it; the next message of
    /// its group, if any, becomes the head.
    pub fn remove(&mut self, id: MessageId) -> Option<Message> {
        if !self.messages.contains_key(&id) {
            return None;
        }
        self.unplace(id);
        let message = self.messages.remove(&id).expect("checked above");
        self.bytes -= message.size();
        if let Some(group) = &message.group {
            let ids = self
                .groups
                .get_mut(group)
                .expect("grouped message is in its group");
            let was_head = ids.first() == Some(&id);
            ids.remove(&id);
            match ids.first().copied() {
                None => {
                    self.groups.remove(group);
                }
                Some(next) if was_head => {
                    // The new head may have been visible and waiting.
                    let visible_at = self.messages[&next].visible_at;
                    if visible_at <= self.promoted_to {
                        self.ready.insert((visible_at, next));
                    }
                }
                Some(_) => {}
            }
        }
        Some(message)
    }

    /// Changes a message through `change`, keeping the indexes right. The
    /// change must not touch its id, group or size.
    pub fn update<R>(
        &mut self,
        id: MessageId,
        change: impl FnOnce(&mut Message) -> R,
    ) -> Option<R> {
        if !self.messages.contains_key(&id) {
            return None;
        }
        self.unplace(id);
        let message = self.messages.get_mut(&id).expect("checked above");
        let result = change(message);
        self.place(id);
        Some(result)
    }

    /// The ready message that became ready first (lowest id among equals).
    /// The caller leases, dead-letters or drops it, each of which takes it
    /// out of `ready`.
    pub fn next_ready(&mut self) -> Option<MessageId> {
        self.ready.first().map(|&(_, id)| id)
    }

    /// Ids of messages due to expire at or before `now` (a leased message
    /// only once its lease has ended too).
    pub fn expired(&self, now: Timestamp) -> Vec<MessageId> {
        self.expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|&(_, id)| id)
            .collect()
    }

    /// The lowest id in the queue.
    pub fn oldest(&self) -> Option<MessageId> {
        self.messages.get_min().map(|(id, _)| *id)
    }

    /// The message first enqueued with `dedup_id`, if remembered at `now`.
    pub fn dedup_lookup(&self, dedup_id: &str, now: Timestamp) -> Option<MessageId> {
        self.dedup
            .get(dedup_id)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.id)
    }

    /// Remembers `dedup_id` for `id` until `expires_at`, replacing a lapsed entry.
    pub fn dedup_insert(&mut self, dedup_id: &str, entry: DedupEntry) {
        let dedup_id: Arc<str> = Arc::from(dedup_id);
        self.dedup_expiry
            .insert((entry.expires_at, dedup_id.clone()));
        if let Some(old) = self.dedup.insert(dedup_id.clone(), entry) {
            self.dedup_expiry.remove(&(old.expires_at, dedup_id));
        }
    }

    /// Forgets dedup ids whose window ended at or before `now`; returns how many.
    pub fn dedup_trim(&mut self, now: Timestamp) -> u64 {
        let mut trimmed = 0;
        while let Some((at, _)) = self.dedup_expiry.first() {
            if *at > now {
                break;
            }
            let (_, dedup_id) = self.dedup_expiry.pop_first().expect("checked above");
            self.dedup.remove(&dedup_id);
            trimmed += 1;
        }
        trimmed
    }

    /// Forgets every dedup id (the queue is being deleted).
    pub fn dedup_clear(&mut self) {
        self.dedup.clear();
        self.dedup_expiry.clear();
    }

    /// Removes every message no consumer holds at `now` (ready, delayed, or
    /// whose lease ran out) and forgets the dedup ids that named them, so a
    /// producer may send them again; returns how many were removed. Messages
    /// in flight stay, so their consumers can still ack them (as a RabbitMQ
    /// quorum queue's purge keeps unacknowledged messages).
    pub fn purge(&mut self, now: Timestamp) -> u64 {
        let removed: BTreeSet<MessageId> = self
            .messages
            .values()
            .filter(|m| !m.is_in_flight(now))
            .map(|m| m.id)
            .collect();
        for &id in &removed {
            self.remove(id);
        }
        let named: Vec<Arc<str>> = self
            .dedup
            .iter()
            .filter(|(_, entry)| removed.contains(&entry.id))
            .map(|(dedup_id, _)| dedup_id.clone())
            .collect();
        for dedup_id in named {
            if let Some(entry) = self.dedup.remove(&dedup_id) {
                self.dedup_expiry.remove(&(entry.expires_at, dedup_id));
            }
        }
        removed.len() as u64
    }

    /// Removes every message; returns how many there were.
    pub fn remove_all(&mut self) -> u64 {
        let count = self.len();
        self.messages.clear();
        self.ready.clear();
        self.timers.clear();
        self.groups.clear();
        self.expiry.clear();
        self.bytes = 0;
        count
    }

    /// Whether the indexes agree with the messages (for tests and debug
    /// assertions): every message placed exactly where the invariants say.
    pub fn check_indexes(&self) -> Result<(), String> {
        let mut bytes = 0;
        for message in self.messages.values() {
            let id = message.id;
            bytes += message.size();
            let in_timers = self.timers.contains(&(message.visible_at, id));
            let in_ready = self.ready.contains(&(message.visible_at, id));
            let expect_timer = message.visible_at > self.promoted_to;
            let expect_ready = !expect_timer && self.heads_its_group(message);
            if in_timers != expect_timer || in_ready != expect_ready {
                return Err(format!(
                    "message {id}: in timers {in_timers} (want {expect_timer}), in ready {in_ready} (want {expect_ready})"
                ));
            }
            if !self.expiry.contains(&(message.expiry_due(), id)) {
                return Err(format!("message {id} missing from expiry index"));
            }
        }
        if bytes != self.bytes {
            return Err(format!("bytes {} but messages sum to {bytes}", self.bytes));
        }
        if self.timers.len() + self.ready.len() > self.messages.len()
            || self.expiry.len() != self.messages.len()
        {
            return Err("index holds ids that are not messages".into());
        }
        let leased_heads = self
            .groups
            .values()
            .map(|ids| {
                ids.iter()
                    .filter(|id| self.messages[*id].is_in_flight(self.promoted_to))
                    .count()
            })
            .max()
            .unwrap_or(0);
        if leased_heads > 1 {
            return Err("a group has more than one message in flight".into());
        }
        Ok(())
    }
}

impl Queue {
    /// Whether a dedup id's window ended at or before `now`.
    pub fn dedup_due(&self, now: Timestamp) -> bool {
        self.dedup_expiry.first().is_some_and(|(at, _)| *at <= now)
    }

    /// The earliest message expiry or dedup window end.
    pub fn next_due(&self) -> Option<Timestamp> {
        let message = self.expiry.first().map(|(at, _)| *at);
        let dedup = self.dedup_expiry.first().map(|(at, _)| *at);
        match (message, dedup) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Queue {
    /// About how many messages a receive at `now` could lease, counting at
    /// most `cap`: the ready ones plus those whose time came since the queue
    /// was last brought up to date (a message waiting behind its group's
    /// head may be counted; never one that could not be leased otherwise).
    pub fn ready_now(&self, now: Timestamp, cap: u64) -> u64 {
        let ready = self.ready.len() as u64;
        if ready >= cap {
            return cap;
        }
        let due = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take((cap - ready) as usize)
            .count() as u64;
        ready + due
    }

    /// When a receive could next find a message: `Some(t)` with `t <= now`
    /// when one may be ready now, the next message's `visible_at` when all are
    /// waiting, `None` when the queue holds nothing deliverable. A read for
    /// long-polling receivers, so they wait without writing to the log. It
    /// may be early (a message that becomes visible behind its group's head),
    /// never late.
    pub fn next_visible_at(&self, now: Timestamp) -> Option<Timestamp> {
        if !self.ready.is_empty() {
            return Some(now.min(self.promoted_to));
        }
        self.timers.first().map(|(at, _)| *at)
    }
}

impl Queue {
    /// Remembers an acked receipt until `until`.
    pub fn remember_ack(&mut self, receipt: crate::queue::Receipt, until: Timestamp) {
        self.acked
            .insert((until, receipt.message, receipt.delivery));
        self.acked_by_id.insert(receipt.message, receipt.delivery);
    }

    /// Forgets acked receipts remembered until `now` or earlier.
    pub fn forget_acks(&mut self, now: Timestamp) {
        while let Some(&(until, id, _)) = self.acked.first() {
            if until > now {
                break;
            }
            self.acked.pop_first();
            self.acked_by_id.remove(&id);
        }
    }

    /// Whether `receipt` was acked within the window.
    pub fn was_acked(&self, receipt: crate::queue::Receipt) -> bool {
        self.acked_by_id.get(&receipt.message) == Some(&receipt.delivery)
    }
}
