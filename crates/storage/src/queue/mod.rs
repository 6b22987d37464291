//! The queue state machine: pure, deterministic queue logic.
//!
//! [`Queues`] holds every queue, the cluster-wide message id counter, the
//! cluster's identity record ([`crate::cluster`]) and the clock, and applies
//! [`Command`]s to them. It has no I/O, no clock, no randomness and no tokio:
//! time enters only as the `now` the leader stamped on a command, and the
//! state's clock is the largest `now` seen so far, so it never runs backwards
//! across leader changes. Two replicas
//! that apply the same commands hold the same state and return the same
//! responses; the property tests check this module against a simple model.
//!
//! What it deliberately does not do:
//! - persist anything: the state lives in memory, and snapshots
//!   ([`crate::snapshot`]) persist it;
//! - expire leases with commands: an expired lease needs no entry, the next
//!   receive simply sees the message as ready again;
//! - reject on timing: a `now` older than the clock is treated as the clock.
//!
//! Files, by command: [`admin`] (create, update, delete, purge),
//! [`enqueue`], [`receive`] (with dead-lettering), [`ack`] (ack, nack, extend),
//! [`expire`] (tick), [`redrive`], [`stats`]; [`index`] is one queue and its
//! indexes, [`config`] and [`message`] the nouns.

pub mod ack;
pub mod admin;
pub mod config;
pub mod enqueue;
pub mod expire;
pub mod index;
pub mod message;
pub mod receive;
pub mod redrive;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet};

pub use config::{Overflow, QueueConfig, QueueConfigPatch};
pub use index::{
    Counters, DedupEntry, Queue, QueueMeta, QueueView, DEDUP_ENTRY_OVERHEAD_BYTES,
    MESSAGE_OVERHEAD_BYTES,
};
pub use message::{
    Attributes, DeadLetter, Delivery, Lease, Message, MessageId, NewMessage, QueueName, Receipt,
    Timestamp,
};
pub use stats::QueueStats;

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterRecord;
use crate::command::{Command, Response};
use crate::error::Refusal;

/// Most messages in one enqueue command.
pub const MAX_ENQUEUE_MESSAGES: usize = 100;
/// Most messages one receive may lease.
pub const MAX_RECEIVE: u32 = 100;
/// Most message bytes (bodies and attributes) one receive leases: well
/// inside the 64 MiB a gRPC response may carry, with room for the per-message
/// fields. A receive always leases at least one ready message, and the
/// largest message is 4 MiB, so every message can be received.
pub const MAX_RECEIVE_BYTES: u64 = 16 * 1024 * 1024;
/// Most receipts in one ack, nack, extend or release.
pub const MAX_RECEIPTS: usize = 100;
/// Most commands in one batch entry.
pub const MAX_BATCH_COMMANDS: usize = 4096;
/// Most attributes on one message.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key, dedup id, group key or consumer name, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Longest nack reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// What the replicated state holds besides its queues: the clock, the next
/// message id and the cluster's identity record. Persisted with every apply
/// and in every snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Globals {
    /// The largest `now` applied so far.
    pub clock: Timestamp,
    /// The id the next message gets, in any queue.
    pub next_id: u64,
    /// The cluster id and the members' incarnations.
    pub cluster: ClusterRecord,
}

/// What a snapshot is written from: [`Queues::view`].
#[derive(Clone, Debug, Default)]
pub struct StateView {
    /// The clock, id counter and cluster record.
    pub globals: Globals,
    /// Every queue, in name order.
    pub queues: Vec<QueueView>,
}

/// The cluster-wide message id counter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ids {
    next: u64,
}

impl Ids {
    /// The next id; ids start at 1 and are never reused.
    pub(crate) fn assign(&mut self) -> MessageId {
        let id = MessageId(self.next);
        self.next += 1;
        id
    }
}

impl Default for Ids {
    fn default() -> Self {
        Ids { next: 1 }
    }
}

/// Every queue, the id counter, the cluster record and the clock.
#[derive(Clone, Debug, Default)]
pub struct Queues {
    clock: Timestamp,
    ids: Ids,
    cluster: ClusterRecord,
    queues: BTreeMap<QueueName, Queue>,
}

impl Queues {
    /// No queues, clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest `now` applied so far.
    pub fn clock(&self) -> Timestamp {
        self.clock
    }

    /// Moves the clock forward to `now` (never back) and returns it.
    pub fn advance_clock(&mut self, now: Timestamp) -> Timestamp {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// The id the next message will get.
    pub fn next_id(&self) -> u64 {
        self.ids.next
    }

    /// The cluster's identity record.
    pub fn cluster(&self) -> &ClusterRecord {
        &self.cluster
    }

    /// Forgets the incarnations of nodes that left the membership (the state
    /// machine calls this with every membership entry it applies).
    pub fn retain_members(&mut self, members: &BTreeSet<crate::NodeId>) {
        self.cluster.retain_members(members);
    }

    /// A point-in-time copy of what a snapshot holds: the globals and each
    /// queue's metadata, messages and dedup entries. Cheap to take (the maps
    /// are shared, see [`Queue::view`]), so the state machine takes it
    /// between applies and the snapshot is written while applies go on.
    pub fn view(&self) -> StateView {
        StateView {
            globals: self.globals(),
            queues: self.queues.values().map(Queue::view).collect(),
        }
    }

    /// The clock, id counter and cluster record, for persisting.
    pub fn globals(&self) -> Globals {
        Globals {
            clock: self.clock,
            next_id: self.ids.next,
            cluster: self.cluster.clone(),
        }
    }

    /// Restores what [`Queues::globals`] returned; call before loading queues.
    pub fn load_globals(&mut self, globals: Globals) {
        self.clock = globals.clock;
        self.ids = Ids {
            next: globals.next_id.max(1),
        };
        self.cluster = globals.cluster;
    }

    /// Applies one command and returns its result. A refusal changes nothing
    /// but the clock, which every command with a `now` moves forward.
    pub fn apply(&mut self, command: Command) -> Response {
        match command {
            Command::CreateQueue { name, config, now } => admin::create(self, name, config, now),
            Command::UpdateQueue { name, patch } => admin::update(self, name, patch),
            Command::DeleteQueue { name } => admin::delete(self, name),
            Command::Purge { name, now } => admin::purge(self, name, now),
            Command::Enqueue {
                queue,
                messages,
                now,
            } => enqueue::apply(self, queue, messages, now),
            Command::Receive {
                queue,
                max,
                visibility_ms,
                max_bytes,
                consumer,
                now,
            } => receive::apply(
                self,
                receive::Spec {
                    queue,
                    max,
                    visibility_ms,
                    max_bytes,
                    consumer,
                },
                now,
            ),
            Command::Ack { queue, receipts } => ack::ack(self, queue, receipts),
            Command::Nack {
                queue,
                receipts,
                delay_ms,
                reason,
                now,
            } => ack::nack(self, queue, receipts, delay_ms, reason, now),
            Command::Extend {
                queue,
                receipts,
                visibility_ms,
                now,
            } => ack::extend(self, queue, receipts, visibility_ms, now),
            Command::Release { queue, receipts } => ack::release(self, queue, receipts),
            Command::RegisterNode {
                node,
                incarnation,
                cluster_id,
            } => self.cluster.register(node, incarnation, cluster_id),
            Command::Tick { now } => expire::tick(self, now),
            Command::Redrive { dlq, max, now } => redrive::apply(self, dlq, max, now),
            Command::Batch(commands) => self.apply_batch(commands),
        }
    }

    fn apply_batch(&mut self, commands: Vec<Command>) -> Response {
        if commands.len() > MAX_BATCH_COMMANDS {
            return Response::Refused(Refusal::InvalidArgument(format!(
                "a batch holds at most {MAX_BATCH_COMMANDS} commands, not {}",
                commands.len()
            )));
        }
        let responses = commands
            .into_iter()
            .map(|command| match command {
                Command::Batch(_) => Response::Refused(Refusal::InvalidArgument(
                    "a batch cannot contain another batch".into(),
                )),
                command => self.apply(command),
            })
            .collect();
        Response::Batch(responses)
    }

    /// One queue, if it exists.
    pub fn get(&self, name: &QueueName) -> Option<&Queue> {
        self.queues.get(name)
    }

    /// About how much memory the queues hold ([`Queue::memory_estimate`]
    /// summed; one pass over the queues, not the messages).
    pub fn memory_estimate(&self) -> u64 {
        self.queues.values().map(Queue::memory_estimate).sum()
    }

    /// How many queues there are.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Whether there is no queue.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// All queues in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Queue> {
        self.queues.values()
    }

    /// A queue for a read: refuses a bad name or a missing queue.
    pub fn lookup(&self, name: &QueueName) -> Result<&Queue, Refusal> {
        name.validate()?;
        self.queues
            .get(name)
            .ok_or_else(|| Refusal::QueueNotFound(name.to_string()))
    }

    /// A queue to change, brought up to the clock.
    pub(crate) fn lookup_mut(&mut self, name: &QueueName) -> Result<&mut Queue, Refusal> {
        Ok(self.lookup_with_ids(name)?.0)
    }

    /// As [`Queues::lookup_mut`], with the id counter for new messages.
    pub(crate) fn lookup_with_ids(
        &mut self,
        name: &QueueName,
    ) -> Result<(&mut Queue, &mut Ids), Refusal> {
        name.validate()?;
        let clock = self.clock;
        let queue = self
            .queues
            .get_mut(name)
            .ok_or_else(|| Refusal::QueueNotFound(name.to_string()))?;
        queue.promote(clock);
        Ok((queue, &mut self.ids))
    }

    /// Adds a new queue.
    pub(crate) fn insert_queue(&mut self, queue: Queue) {
        let name = queue.name().clone();
        self.queues.insert(name, queue);
    }

    /// Removes a queue with its messages and dedup ids.
    pub(crate) fn remove_queue(&mut self, name: &QueueName) -> Option<Queue> {
        self.queues.remove(name)
    }

    /// Restores a queue read from disk (at open or snapshot install).
    pub fn load_queue(&mut self, meta: QueueMeta) {
        let name = meta.name.clone();
        let queue = Queue::new(meta, self.clock);
        self.queues.insert(name, queue);
    }

    /// Restores a message read from disk. Its queue must be loaded first.
    pub fn load_message(&mut self, queue: &QueueName, message: Message) -> Result<(), String> {
        let target = self
            .queues
            .get_mut(queue)
            .ok_or_else(|| format!("message {} of unknown queue {queue}", message.id))?;
        target.insert(message);
        Ok(())
    }

    /// Restores a dedup entry read from disk.
    pub fn load_dedup(
        &mut self,
        queue: &QueueName,
        dedup_id: String,
        entry: DedupEntry,
    ) -> Result<(), String> {
        let target = self
            .queues
            .get_mut(queue)
            .ok_or_else(|| format!("dedup id of unknown queue {queue}"))?;
        target.dedup_insert(&dedup_id, entry);
        Ok(())
    }

    /// Checks every queue's indexes (tests and debug assertions).
    pub fn check_indexes(&self) -> Result<(), String> {
        for queue in self.queues.values() {
            queue
                .check_indexes()
                .map_err(|err| format!("queue {}: {err}", queue.name()))?;
        }
        Ok(())
    }

    /// A digest of the whole state: [`StateView::digest`] of [`Queues::view`].
    pub fn digest(&self) -> u64 {
        self.view().digest()
    }
}

impl StateView {
    /// A digest of the whole state (clock, id counter, cluster record,
    /// queues, messages, dedup entries), equal on replicas that applied the
    /// same log. FNV-1a over the encoded records, in key order. One pass over
    /// every message: compute it on a view, off the state's lock.
    pub fn digest(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        feed(&postcard::to_allocvec(&self.globals).expect("globals encode"));
        for queue in &self.queues {
            feed(&postcard::to_allocvec(&queue.meta).expect("meta encodes"));
            for message in queue.messages.values() {
                feed(&postcard::to_allocvec(message).expect("message encodes"));
            }
            let mut dedup: Vec<_> = queue.dedup.iter().collect();
            dedup.sort_by(|a, b| a.0.cmp(b.0));
            for (id, entry) in dedup {
                feed(id.as_bytes());
                feed(&postcard::to_allocvec(entry).expect("dedup encodes"));
            }
        }
        hash
    }
}

/// Checks a free-text key (dedup id, group, consumer, attribute key).
pub(crate) fn check_key(what: &str, value: &str) -> Result<(), Refusal> {
    if value.is_empty() || value.len() > MAX_KEY_BYTES {
        return Err(Refusal::InvalidArgument(format!(
            "{what} must be 1 to {MAX_KEY_BYTES} bytes, not {}",
            value.len()
        )));
    }
    Ok(())
}

/// Checks the number of receipts in an ack, nack, extend or release.
pub(crate) fn check_receipts(receipts: &[Receipt]) -> Result<(), Refusal> {
    if receipts.is_empty() || receipts.len() > MAX_RECEIPTS {
        return Err(Refusal::InvalidArgument(format!(
            "give 1 to {MAX_RECEIPTS} receipts, not {}",
            receipts.len()
        )));
    }
    Ok(())
}
