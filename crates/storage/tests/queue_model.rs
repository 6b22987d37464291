//! The queue state machine checked against a simple reference model.
//!
//! [`Model`] implements the semantics documented in `src/queue/` with plain
//! vectors and linear scans: no indexes, no timers, no cleverness, so that it
//! is obviously right. In short: message ids come from one counter for the
//! whole cluster, so they grow within a queue with gaps and are never reused,
//! not even by a queue deleted and created again; a receive meets the
//! deliverable messages (visible, first of their group) in the order they
//! became ready, `(visible_at, id)`, drops the expired ones, dead-letters (or,
//! without a dead-letter queue, drops) those at `max_deliveries` and leases
//! the rest within its count and byte budget; a lease released unseen does
//! not count as a delivery; a leased message outlives its expiry until its
//! lease ends; a purge keeps the messages in flight; an update patches the
//! options it names. Random command sequences (creates, config patches and
//! deletes; enqueues with dedup ids, groups and delays; receives with and
//! without a byte budget; acks, nacks, extends and releases with current,
//! stale and bogus receipts; ticks; redrives; purges; node registrations;
//! batches; time jumps, and now and then a `now` that lags the clock as after
//! a leader change) run against both [`Queues`] and the model. After every
//! step:
//!
//! - the real response equals the model's (refusal texts aside);
//! - the stored state (clock, id counter, cluster record, queue metadata,
//!   every message, every dedup entry) and the stats equal the model's, the
//!   next tick is due when the model says, no queue's `next_visible_at` is
//!   later than its first deliverable message, `check_indexes` passes, and
//!   the digest changed exactly when the state did;
//! - [`Observer`] checks invariants of each command from its response and the
//!   real state just before and after it, without the model (a batch is
//!   replayed command by command on a copy for this, and must end in the same
//!   state): ids are assigned one by one from one counter, in any queue, and a
//!   message that left never comes back; only the commands that may remove
//!   messages do, and only the ones they may; one live lease per message and
//!   per group; a receive meets only deliverable messages, in `(visible_at,
//!   id)` order, never leaves one waiting while it has room, and stays within
//!   its byte budget; first deliveries go in id order within a group and
//!   among ungrouped undelayed messages; counted deliveries never pass
//!   `max_deliveries`, and a message is dead-lettered or dropped only at it,
//!   its dead letter carrying its body and count; a release gives a message
//!   back, ready again in its old place, without counting it; a tick drops
//!   exactly the expired messages no one holds, and a purge exactly the
//!   messages no one holds; nothing is delivered past its lifetime; a dedup
//!   id within its window returns the first id.
//!
//! The generator uses small configs (1–5 s leases, 0–4 deliveries, short
//! dedup windows and TTLs, a retry backoff that is off, small or the default
//! one, a `max_length` or `max_bytes` with either overflow policy, a
//! dead-letter queue that mostly keeps its messages), patches that change no
//! option, one or a few, valid or not, small bodies and now and then a small
//! receive budget, delays 1 ms below, at or above the message lifetime or
//! `max_delay_ms`, and jumps time both at random and to exactly one
//! millisecond before, at or after the next lease deadline, visibility,
//! expiry or dedup lapse: everywhere `<` and `<=` differ.
//! `random_commands_reach_every_interesting_transition` checks that the
//! generator actually reaches each transition worth testing.
//!
//! A failure names the step, the command, what differed and the commands that
//! led there, followed by proptest's shrunk scenario. `PROPTEST_CASES` sets
//! how many scenarios run ([`DEFAULT_CASES`] by default).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use raftq_storage::cluster::ClusterRecord;
use raftq_storage::command::{Enqueued, Response};
use raftq_storage::queue::config::{
    MAX_DEDUP_WINDOW_MS, MAX_MESSAGE_BYTES_LIMIT, MAX_RETENTION_MS, MAX_RETRY_BACKOFF_MS,
    MAX_VISIBILITY_TIMEOUT_MS, MIN_RETENTION_MS, MIN_VISIBILITY_TIMEOUT_MS,
};
use raftq_storage::queue::expire;
use raftq_storage::queue::redrive::MAX_REDRIVE;
use raftq_storage::queue::{
    Counters, DeadLetter, DedupEntry, Delivery, Globals, Lease, Message, MessageId, NewMessage,
    Overflow, Queue, QueueConfig, QueueConfigPatch, QueueMeta, QueueName, QueueStats, Queues,
    Receipt, Timestamp, MAX_ATTRIBUTES, MAX_BATCH_COMMANDS, MAX_ENQUEUE_MESSAGES, MAX_KEY_BYTES,
    MAX_REASON_BYTES, MAX_RECEIPTS, MAX_RECEIVE, MAX_RECEIVE_BYTES,
};
use raftq_storage::{Command, NodeId, Refusal};

/// Every queue's `max_delay_ms` (unless a patch changes it); larger delays
/// are generated now and then to check that they are refused.
const MAX_DELAY_MS: u64 = 10_000;
/// The clock at the start of every case.
const START_MS: u64 = 1_000_000;
/// Receipts drawn as "recent" come from this many last deliveries of a queue.
const RECENT_RECEIPTS: usize = 6;
/// A name no queue has.
const MISSING_QUEUE: &str = "no-such-queue";
/// One second, the shortest TTL and dedup window.
const SECOND_MS: u64 = 1_000;
/// Random scenarios the model test runs unless `PROPTEST_CASES` says
/// otherwise: a few seconds in the debug profile.
const DEFAULT_CASES: u32 = 512;
/// Scenarios the coverage test generates (from a fixed seed).
const COVERAGE_SCENARIOS: usize = 128;

// ---------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------

/// Every queue as a vector of messages in id order, the id counter, the
/// cluster record and the clock.
#[derive(Debug)]
struct Model {
    /// The largest `now` seen.
    clock: u64,
    /// The id the next message gets, in any queue.
    next_id: u64,
    /// The cluster id, set by the first registration.
    cluster_id: Option<u64>,
    /// Each registered node's incarnation.
    incarnations: Vec<(NodeId, u64)>,
    /// The queues in name order.
    queues: Vec<ModelQueue>,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            clock: 0,
            next_id: 1,
            cluster_id: None,
            incarnations: Vec::new(),
            queues: Vec::new(),
        }
    }
}

/// One queue of the model.
#[derive(Debug)]
struct ModelQueue {
    meta: QueueMeta,
    /// In id order: new ids are always the largest, so pushing keeps it sorted.
    messages: Vec<Message>,
    dedup: Vec<(String, DedupEntry)>,
    /// Messages dropped by `drop_oldest` overflow (for coverage).
    overflow_drops: u64,
    /// Acked receipts and when they are forgotten: a repeated ack within the
    /// queue's dedup window succeeds again.
    acked: Vec<(u64, Receipt)>,
}

/// A refusal for a malformed request; texts are not compared.
fn invalid() -> Refusal {
    Refusal::InvalidArgument(String::new())
}

fn not_found(name: &QueueName) -> Refusal {
    Refusal::QueueNotFound(name.to_string())
}

/// How long a message enqueued now may live: TTL or retention, the shorter.
fn lifetime_ms(config: &QueueConfig) -> u64 {
    match config.message_ttl_ms {
        Some(ttl) => ttl.min(config.retention_ms),
        None => config.retention_ms,
    }
}

/// What a message counts for against `max_bytes` and a receive's budget:
/// body plus attributes.
fn message_bytes(body: &Bytes, attributes: &BTreeMap<String, String>) -> u64 {
    let attributes: usize = attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    (body.len() + attributes) as u64
}

fn size(message: &Message) -> u64 {
    message_bytes(&message.body, &message.attributes)
}

/// Whether a consumer holds the message at `now`.
fn in_flight(message: &Message, now: Timestamp) -> bool {
    message
        .lease
        .as_ref()
        .is_some_and(|lease| lease.deadline > now)
}

/// Deliveries that count toward `max_deliveries`: leases less the ones
/// released unseen.
fn counted(message: &Message) -> u32 {
    message.delivery_count - message.released
}

/// When a message may be dropped for its age: its expiry, or its lease's
/// deadline if it is leased and that is later.
fn expiry_due(message: &Message) -> Timestamp {
    match &message.lease {
        Some(lease) if lease.deadline > message.expires_at => lease.deadline,
        _ => message.expires_at,
    }
}

/// Whether an enqueue, a nack or a queue's default may ask for this delay:
/// at most `max_delay_ms`, and a delay ends before the message's lifetime.
fn delay_ok(config: &QueueConfig, delay_ms: u64) -> bool {
    delay_ms <= config.max_delay_ms && (delay_ms == 0 || delay_ms < lifetime_ms(config))
}

/// An attribute key, dedup id or group: 1 to `MAX_KEY_BYTES` bytes.
fn key_ok(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

/// The retry backoff after `counted` deliveries: none when
/// `retry_backoff_min_ms` is 0, else the queue's jittered exponential one,
/// which lies between half and all of `min << (counted - 1)`, capped at max.
fn backoff_ms(config: &QueueConfig, id: MessageId, counted: u32) -> u64 {
    if config.retry_backoff_min_ms == 0 {
        return 0;
    }
    let backoff = config.retry_backoff_ms(id.0, counted);
    let full = config
        .retry_backoff_min_ms
        .saturating_mul(1 << counted.saturating_sub(1).min(40))
        .min(config.retry_backoff_max_ms);
    assert!(
        (full / 2..=full).contains(&backoff),
        "backoff of {id} after {counted} deliveries is {backoff} ms, not between {} and {full} ms",
        full / 2
    );
    backoff
}

fn take_id(next_id: &mut u64) -> MessageId {
    let id = MessageId(*next_id);
    *next_id += 1;
    id
}

/// Whether `message` heads its group among `messages`: it has no group, or
/// no message of its group has a lower id.
fn heads_its_group<'a>(mut messages: impl Iterator<Item = &'a Message>, message: &Message) -> bool {
    message.group.is_none()
        || !messages.any(|other| other.group == message.group && other.id < message.id)
}

/// The deliverable message (visible at `now`, first of its group) that
/// became ready first: the least `(visible_at, id)`.
fn first_ready<'a>(messages: &[&'a Message], now: Timestamp) -> Option<&'a Message> {
    messages
        .iter()
        .copied()
        .filter(|m| m.visible_at <= now && heads_its_group(messages.iter().copied(), m))
        .min_by_key(|m| (m.visible_at, m.id))
}

fn check_receipt_count(receipts: &[Receipt]) -> Result<(), Refusal> {
    if receipts.is_empty() || receipts.len() > MAX_RECEIPTS {
        return Err(invalid());
    }
    Ok(())
}

/// `config` with each option the patch sets replaced.
fn patched(config: &QueueConfig, patch: &QueueConfigPatch) -> QueueConfig {
    let QueueConfigPatch {
        visibility_timeout_ms,
        max_deliveries,
        dead_letter_queue,
        retry_backoff_min_ms,
        retry_backoff_max_ms,
        message_ttl_ms,
        retention_ms,
        max_length,
        max_bytes,
        overflow,
        max_message_bytes,
        default_delay_ms,
        max_delay_ms,
        dedup_window_ms,
    } = patch.clone();
    QueueConfig {
        visibility_timeout_ms: visibility_timeout_ms.unwrap_or(config.visibility_timeout_ms),
        max_deliveries: max_deliveries.unwrap_or(config.max_deliveries),
        dead_letter_queue: dead_letter_queue.unwrap_or_else(|| config.dead_letter_queue.clone()),
        retry_backoff_min_ms: retry_backoff_min_ms.unwrap_or(config.retry_backoff_min_ms),
        retry_backoff_max_ms: retry_backoff_max_ms.unwrap_or(config.retry_backoff_max_ms),
        message_ttl_ms: message_ttl_ms.unwrap_or(config.message_ttl_ms),
        retention_ms: retention_ms.unwrap_or(config.retention_ms),
        max_length: max_length.unwrap_or(config.max_length),
        max_bytes: max_bytes.unwrap_or(config.max_bytes),
        overflow: overflow.unwrap_or(config.overflow),
        max_message_bytes: max_message_bytes.unwrap_or(config.max_message_bytes),
        default_delay_ms: default_delay_ms.unwrap_or(config.default_delay_ms),
        max_delay_ms: max_delay_ms.unwrap_or(config.max_delay_ms),
        dedup_window_ms: dedup_window_ms.unwrap_or(config.dedup_window_ms),
    }
}

impl Model {
    /// Moves the clock to `now` unless it is ahead. Like the real code, every
    /// command that carries a `now` does this first, also when it is then
    /// refused ("refusals change nothing" does not hold for the clock).
    fn advance(&mut self, now: Timestamp) -> Timestamp {
        self.clock = self.clock.max(now.0);
        Timestamp(self.clock)
    }

    fn overflow_drops(&self) -> u64 {
        self.queues.iter().map(|q| q.overflow_drops).sum()
    }

    fn queue(&self, name: &QueueName) -> Option<&ModelQueue> {
        self.queues.iter().find(|q| &q.meta.name == name)
    }

    fn queue_mut(&mut self, name: &QueueName) -> Result<&mut ModelQueue, Refusal> {
        self.queues
            .iter_mut()
            .find(|q| &q.meta.name == name)
            .ok_or_else(|| not_found(name))
    }

    /// A queue with the id counter, for commands that store messages.
    fn queue_and_ids(&mut self, name: &QueueName) -> Result<(&mut ModelQueue, &mut u64), Refusal> {
        let Model {
            queues, next_id, ..
        } = self;
        let queue = queues
            .iter_mut()
            .find(|q| &q.meta.name == name)
            .ok_or_else(|| not_found(name))?;
        Ok((queue, next_id))
    }

    fn globals(&self) -> Globals {
        Globals {
            clock: Timestamp(self.clock),
            next_id: self.next_id,
            cluster: ClusterRecord {
                cluster_id: self.cluster_id,
                incarnations: self.incarnations.iter().copied().collect(),
            },
        }
    }

    /// Whether queue `name` may have `config`: every range and relation
    /// [`QueueConfig`] documents, and a dead-letter queue that exists and is
    /// not the queue itself. (Generated names are always well formed.)
    /// Whether following dead-letter queues from `start` ever reaches
    /// `target` (a cycle through `target` if it points at `start`).
    fn dead_letters_reach(&self, start: &QueueName, target: &QueueName) -> bool {
        let mut seen: Vec<&QueueName> = Vec::new();
        let mut at = Some(start);
        while let Some(queue) = at {
            if queue == target {
                return true;
            }
            if seen.contains(&queue) {
                return false;
            }
            seen.push(queue);
            at = self
                .queue(queue)
                .and_then(|q| q.meta.config.dead_letter_queue.as_ref());
        }
        false
    }

    fn config_ok(&self, name: &QueueName, config: &QueueConfig) -> bool {
        let c = config;
        let dead_letter_queue_ok = c
            .dead_letter_queue
            .as_ref()
            .is_none_or(|dlq| self.queue(dlq).is_some() && !self.dead_letters_reach(dlq, name));
        let ttl_ok = c
            .message_ttl_ms
            .is_none_or(|ttl| (SECOND_MS..=c.retention_ms).contains(&ttl));
        (MIN_VISIBILITY_TIMEOUT_MS..=MAX_VISIBILITY_TIMEOUT_MS).contains(&c.visibility_timeout_ms)
            && dead_letter_queue_ok
            && c.retry_backoff_min_ms <= c.retry_backoff_max_ms
            && c.retry_backoff_max_ms <= MAX_RETRY_BACKOFF_MS
            && (MIN_RETENTION_MS..=MAX_RETENTION_MS).contains(&c.retention_ms)
            && ttl_ok
            && c.max_length != Some(0)
            && c.max_bytes != Some(0)
            && (1..=MAX_MESSAGE_BYTES_LIMIT).contains(&c.max_message_bytes)
            && c.max_delay_ms <= MAX_RETENTION_MS
            && delay_ok(c, c.default_delay_ms)
            && (SECOND_MS..=MAX_DEDUP_WINDOW_MS).contains(&c.dedup_window_ms)
    }

    fn apply(&mut self, command: &Command) -> Response {
        let result = match command {
            Command::CreateQueue { name, config, now } => self.create(name, config, *now),
            Command::UpdateQueue { name, patch } => self.update(name, patch),
            Command::DeleteQueue { name } => self.delete(name),
            Command::Purge { name, now } => self.purge(name, *now),
            Command::Enqueue {
                queue,
                messages,
                now,
            } => self.enqueue(queue, messages, *now),
            Command::Receive {
                queue,
                max,
                visibility_ms,
                max_bytes,
                consumer,
                now,
            } => self.receive(queue, *max, *visibility_ms, *max_bytes, consumer, *now),
            Command::Ack { queue, receipts } => self.ack(queue, receipts),
            Command::Nack {
                queue,
                receipts,
                delay_ms,
                reason,
                now,
            } => self.nack(queue, receipts, *delay_ms, reason, *now),
            Command::Extend {
                queue,
                receipts,
                visibility_ms,
                now,
            } => self.extend(queue, receipts, *visibility_ms, *now),
            Command::Release { queue, receipts } => self.release(queue, receipts),
            Command::RegisterNode {
                node,
                incarnation,
                cluster_id,
            } => self.register(*node, *incarnation, *cluster_id),
            Command::Tick { now } => Ok(self.tick(*now)),
            Command::Redrive { dlq, max, now } => self.redrive(dlq, *max, *now),
            Command::Batch(commands) => Ok(self.batch(commands)),
        };
        result.unwrap_or_else(Response::Refused)
    }

    fn batch(&mut self, commands: &[Command]) -> Response {
        if commands.len() > MAX_BATCH_COMMANDS {
            return Response::Refused(invalid());
        }
        let responses = commands
            .iter()
            .map(|command| match command {
                Command::Batch(_) => Response::Refused(invalid()),
                command => self.apply(command),
            })
            .collect();
        Response::Batch(responses)
    }

    fn create(
        &mut self,
        name: &QueueName,
        config: &QueueConfig,
        now: Timestamp,
    ) -> Result<Response, Refusal> {
        let now = self.advance(now);
        if !self.config_ok(name, config) {
            return Err(invalid());
        }
        if let Some(existing) = self.queue(name) {
            return if &existing.meta.config == config {
                Ok(Response::QueueCreated { created: false })
            } else {
                Err(Refusal::QueueExists(name.to_string()))
            };
        }
        self.queues.push(ModelQueue {
            meta: QueueMeta {
                name: name.clone(),
                config: config.clone(),
                created_at: now,
                counters: Counters::default(),
            },
            messages: Vec::new(),
            dedup: Vec::new(),
            overflow_drops: 0,
            acked: Vec::new(),
        });
        self.queues.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        Ok(Response::QueueCreated { created: true })
    }

    fn update(&mut self, name: &QueueName, patch: &QueueConfigPatch) -> Result<Response, Refusal> {
        let current = &self.queue(name).ok_or_else(|| not_found(name))?.meta.config;
        let config = patched(current, patch);
        if !self.config_ok(name, &config) {
            return Err(invalid());
        }
        self.queue_mut(name)?.meta.config = config.clone();
        Ok(Response::QueueUpdated { config })
    }

    fn delete(&mut self, name: &QueueName) -> Result<Response, Refusal> {
        let index = self
            .queues
            .iter()
            .position(|q| &q.meta.name == name)
            .ok_or_else(|| not_found(name))?;
        let user = self
            .queues
            .iter()
            .find(|q| q.meta.config.dead_letter_queue.as_ref() == Some(name));
        if let Some(user) = user {
            return Err(Refusal::DeadLetterQueueInUse {
                queue: name.to_string(),
                used_by: user.meta.name.to_string(),
            });
        }
        let queue = self.queues.remove(index);
        Ok(Response::QueueDeleted {
            messages: queue.messages.len() as u64,
        })
    }

    fn purge(&mut self, name: &QueueName, now: Timestamp) -> Result<Response, Refusal> {
        let now = self.advance(now);
        let queue = self.queue_mut(name)?;
        let (kept, removed): (Vec<Message>, Vec<Message>) = std::mem::take(&mut queue.messages)
            .into_iter()
            .partition(|m| in_flight(m, now));
        queue.messages = kept;
        queue
            .dedup
            .retain(|(_, entry)| !removed.iter().any(|m| m.id == entry.id));
        let messages = removed.len() as u64;
        queue.meta.counters.dropped += messages;
        Ok(Response::Purged { messages })
    }

    fn enqueue(
        &mut self,
        name: &QueueName,
        messages: &[NewMessage],
        now: Timestamp,
    ) -> Result<Response, Refusal> {
        let now = self.advance(now);
        if messages.is_empty() || messages.len() > MAX_ENQUEUE_MESSAGES {
            return Err(invalid());
        }
        let (queue, next_id) = self.queue_and_ids(name)?;
        let results = messages
            .iter()
            .map(|new| queue.enqueue_one(new, now, next_id))
            .collect();
        Ok(Response::Enqueued(results))
    }

    fn receive(
        &mut self,
        name: &QueueName,
        max: u32,
        visibility_ms: Option<u64>,
        max_bytes: Option<u64>,
        consumer: &str,
        now: Timestamp,
    ) -> Result<Response, Refusal> {
        let now = self.advance(now);
        let visibility_ok = visibility_ms
            .is_none_or(|v| (MIN_VISIBILITY_TIMEOUT_MS..=MAX_VISIBILITY_TIMEOUT_MS).contains(&v));
        if !(1..=MAX_RECEIVE).contains(&max)
            || !visibility_ok
            || max_bytes == Some(0)
            || consumer.len() > MAX_KEY_BYTES
        {
            return Err(invalid());
        }
        let queue = self.queue_mut(name)?;
        let config = queue.meta.config.clone();
        let visibility = visibility_ms.unwrap_or(config.visibility_timeout_ms);
        let budget = max_bytes
            .unwrap_or(MAX_RECEIVE_BYTES)
            .min(MAX_RECEIVE_BYTES);
        let mut deliveries = Vec::new();
        let mut bytes = 0;
        let mut dead = Vec::new();
        let mut dropped = Vec::new();
        let mut expired = 0;
        while deliveries.len() < max as usize {
            let all: Vec<&Message> = queue.messages.iter().collect();
            let Some(id) = first_ready(&all, now).map(|m| m.id) else {
                break;
            };
            let index = queue.index_of(id);
            let message = &queue.messages[index];
            if message.expires_at <= now {
                queue.messages.remove(index);
                queue.meta.counters.expired += 1;
                expired += 1;
            } else if config.max_deliveries > 0 && counted(message) >= config.max_deliveries {
                let message = queue.messages.remove(index);
                if config.dead_letter_queue.is_some() {
                    queue.meta.counters.dead_lettered += 1;
                    dead.push(message);
                } else {
                    queue.meta.counters.dropped += 1;
                    dropped.push((message.id, counted(&message)));
                }
            } else {
                if !deliveries.is_empty() && bytes + size(message) > budget {
                    break;
                }
                bytes += size(message);
                let message = &mut queue.messages[index];
                deliveries.push(lease(message, consumer, now, visibility, &config));
            }
        }
        let dead_lettered = dead.len() as u64;
        if let Some(dlq) = &config.dead_letter_queue {
            let (target, next_id) = self.queue_and_ids(dlq).expect("a dead-letter queue exists");
            for message in dead {
                let dead_letter = DeadLetter {
                    source_queue: name.clone(),
                    source_id: message.id,
                    delivery_count: counted(&message),
                    reason: message.last_nack_reason.as_deref().map(str::to_string),
                    dead_lettered_at: now,
                };
                target.arrive(message, Some(dead_letter), now, next_id);
            }
        }
        Ok(Response::Received {
            deliveries,
            dead_lettered,
            dropped,
            expired,
        })
    }

    fn ack(&mut self, name: &QueueName, receipts: &[Receipt]) -> Result<Response, Refusal> {
        check_receipt_count(receipts)?;
        let now = self.clock;
        let queue = self.queue_mut(name)?;
        queue.acked.retain(|(until, _)| *until > now);
        let window = queue.meta.config.dedup_window_ms;
        let results = receipts
            .iter()
            .map(|&receipt| {
                let index = match queue.current_lease(receipt) {
                    Ok(index) => index,
                    Err(_) if queue.acked.iter().any(|(_, r)| *r == receipt) => return Ok(()),
                    Err(refusal) => return Err(refusal),
                };
                queue.messages.remove(index);
                queue.meta.counters.acked += 1;
                queue.acked.push((now + window, receipt));
                Ok(())
            })
            .collect();
        Ok(Response::Acked(results))
    }

    fn nack(
        &mut self,
        name: &QueueName,
        receipts: &[Receipt],
        delay_ms: Option<u64>,
        reason: &Option<String>,
        now: Timestamp,
    ) -> Result<Response, Refusal> {
        let now = self.advance(now);
        check_receipt_count(receipts)?;
        if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
            return Err(invalid());
        }
        let queue = self.queue_mut(name)?;
        let config = queue.meta.config.clone();
        if delay_ms.is_some_and(|delay| !delay_ok(&config, delay)) {
            return Err(invalid());
        }
        let results = receipts
            .iter()
            .map(|&receipt| {
                let index = queue.current_lease(receipt)?;
                let message = &mut queue.messages[index];
                let delay =
                    delay_ms.unwrap_or_else(|| backoff_ms(&config, message.id, counted(message)));
                message.lease = None;
                message.visible_at = now.plus_ms(delay);
                if reason.is_some() {
                    message.last_nack_reason = reason.as_deref().map(Into::into);
                }
                Ok(())
            })
            .collect();
        Ok(Response::Nacked(results))
    }

    fn extend(
        &mut self,
        name: &QueueName,
        receipts: &[Receipt],
        visibility_ms: u64,
        now: Timestamp,
    ) -> Result<Response, Refusal> {
        let now = self.advance(now);
        check_receipt_count(receipts)?;
        if !(MIN_VISIBILITY_TIMEOUT_MS..=MAX_VISIBILITY_TIMEOUT_MS).contains(&visibility_ms) {
            return Err(invalid());
        }
        let queue = self.queue_mut(name)?;
        let config = queue.meta.config.clone();
        let results = receipts
            .iter()
            .map(|&receipt| {
                let index = queue.current_lease(receipt)?;
                let message = &mut queue.messages[index];
                let deadline = now.plus_ms(visibility_ms);
                message.lease.as_mut().expect("a current lease").deadline = deadline;
                let backoff = backoff_ms(&config, message.id, counted(message));
                message.visible_at = deadline.plus_ms(backoff);
                Ok(deadline)
            })
            .collect();
        Ok(Response::Extended(results))
    }

    /// Ends each matching lease without counting it: the message is ready
    /// again at once, where it was before that lease.
    fn release(&mut self, name: &QueueName, receipts: &[Receipt]) -> Result<Response, Refusal> {
        check_receipt_count(receipts)?;
        let queue = self.queue_mut(name)?;
        let results = receipts
            .iter()
            .map(|&receipt| {
                let index = queue.current_lease(receipt)?;
                let message = &mut queue.messages[index];
                let lease = message.lease.take().expect("a current lease");
                message.released += 1;
                message.visible_at = lease.leased_at;
                queue.meta.counters.released += 1;
                Ok(())
            })
            .collect();
        Ok(Response::Released(results))
    }

    /// Records a node's incarnation; the first registration sets the cluster
    /// id. Another cluster's id, or another incarnation for a known node, is
    /// refused.
    fn register(
        &mut self,
        node: NodeId,
        incarnation: u64,
        cluster_id: u64,
    ) -> Result<Response, Refusal> {
        if incarnation == 0 || cluster_id == 0 || self.cluster_id.is_some_and(|c| c != cluster_id) {
            return Err(invalid());
        }
        match self.incarnations.iter().find(|(n, _)| *n == node) {
            Some(&(_, known)) if known != incarnation => return Err(invalid()),
            Some(_) => {}
            None => self.incarnations.push((node, incarnation)),
        }
        self.cluster_id = Some(cluster_id);
        Ok(Response::NodeRegistered)
    }

    fn tick(&mut self, now: Timestamp) -> Response {
        let now = self.advance(now);
        let mut expired = 0;
        let mut dedup_trimmed = 0;
        for queue in &mut self.queues {
            let before = queue.messages.len();
            queue.messages.retain(|m| expiry_due(m) > now);
            let dropped = (before - queue.messages.len()) as u64;
            queue.meta.counters.expired += dropped;
            expired += dropped;
            let before = queue.dedup.len();
            queue.dedup.retain(|(_, entry)| entry.expires_at > now);
            dedup_trimmed += (before - queue.dedup.len()) as u64;
        }
        Response::Ticked {
            expired,
            dedup_trimmed,
        }
    }

    fn redrive(&mut self, dlq: &QueueName, max: u32, now: Timestamp) -> Result<Response, Refusal> {
        let now = self.advance(now);
        if !(1..=MAX_REDRIVE).contains(&max) {
            return Err(invalid());
        }
        let candidates: Vec<(MessageId, Option<QueueName>, u64)> = self
            .queue_mut(dlq)?
            .messages
            .iter()
            .filter(|m| !in_flight(m, now))
            .map(|m| {
                let source = m.dead_letter.as_ref().map(|d| d.source_queue.clone());
                (m.id, source, size(m))
            })
            .collect();
        let names: Vec<QueueName> = self.queues.iter().map(|q| q.meta.name.clone()).collect();
        let mut moved = 0u64;
        let mut skipped = 0u64;
        for (id, target, size) in candidates {
            if moved >= u64::from(max) {
                break;
            }
            let Some(target) = target.filter(|t| names.contains(t)) else {
                skipped += 1;
                continue;
            };
            // The source queue's limits apply as for an enqueue.
            if self
                .queue_mut(&target)
                .expect("exists")
                .make_room(size)
                .is_err()
            {
                skipped += 1;
                continue;
            }
            let source = self.queue_mut(dlq).expect("exists");
            let message = source.messages.remove(source.index_of(id));
            source.meta.counters.redriven += 1;
            let (target, next_id) = self.queue_and_ids(&target).expect("exists");
            target.arrive(message, None, now, next_id);
            moved += 1;
        }
        Ok(Response::Redriven { moved, skipped })
    }

    /// Instants after `now` when something changes, to jump to.
    fn future_events(&self, now: u64) -> Vec<(Timestamp, String)> {
        let mut events = Vec::new();
        for queue in &self.queues {
            let name = &queue.meta.name;
            for m in &queue.messages {
                events.push((m.visible_at, format!("{name} {} visible", m.id)));
                events.push((m.expires_at, format!("{name} {} expires", m.id)));
                if let Some(lease) = &m.lease {
                    events.push((lease.deadline, format!("{name} {} lease ends", m.id)));
                }
            }
            for (dedup_id, entry) in &queue.dedup {
                events.push((entry.expires_at, format!("{name} dedup {dedup_id} lapses")));
            }
        }
        events.retain(|(at, _)| at.0 > now);
        events.sort();
        events
    }

    /// When a tick next has work: the earliest expiry of a message (its
    /// lease's end, if later) or end of a dedup window.
    fn next_due(&self) -> Option<Timestamp> {
        self.queues
            .iter()
            .flat_map(|q| {
                let messages = q.messages.iter().map(expiry_due);
                messages.chain(q.dedup.iter().map(|(_, entry)| entry.expires_at))
            })
            .min()
    }

    /// A queue's stats as [`Queues::stats`] computes them.
    fn stats(&self, name: &QueueName, now: Timestamp) -> QueueStats {
        let now = now.max(Timestamp(self.clock));
        let queue = self.queue(name).expect("a model queue");
        let mut stats = QueueStats {
            name: name.to_string(),
            config: Some(queue.meta.config.clone()),
            bytes: queue.bytes(),
            counters: queue.meta.counters.clone(),
            next_id: self.next_id,
            dead_letter_source_of: self
                .queues
                .iter()
                .filter(|q| q.meta.config.dead_letter_queue.as_ref() == Some(name))
                .map(|q| q.meta.name.to_string())
                .collect(),
            ..QueueStats::default()
        };
        let mut oldest_ready: Option<Timestamp> = None;
        let mut oldest_lease: Option<&Lease> = None;
        for message in &queue.messages {
            if in_flight(message, now) {
                stats.in_flight += 1;
                let lease = message.lease.as_ref().expect("in flight");
                if oldest_lease.is_none_or(|oldest| lease.leased_at < oldest.leased_at) {
                    oldest_lease = Some(lease);
                }
            } else if message.visible_at > now {
                stats.delayed += 1;
            } else {
                stats.ready += 1;
                if oldest_ready.is_none_or(|at| message.enqueued_at < at) {
                    oldest_ready = Some(message.enqueued_at);
                }
            }
        }
        stats.oldest_ready_age_ms = oldest_ready.map_or(0, |at| now.millis_since(at));
        if let Some(lease) = oldest_lease {
            stats.oldest_in_flight_age_ms = now.millis_since(lease.leased_at);
            stats.oldest_in_flight_consumer = Some(lease.consumer.clone());
        }
        stats
    }
}

/// Leases a message for `visibility` ms and describes the delivery.
fn lease(
    message: &mut Message,
    consumer: &str,
    now: Timestamp,
    visibility: u64,
    config: &QueueConfig,
) -> Delivery {
    message.delivery_count += 1;
    let deadline = now.plus_ms(visibility);
    message.lease = Some(Box::new(Lease {
        consumer: consumer.to_string(),
        leased_at: now,
        deadline,
    }));
    let backoff = backoff_ms(config, message.id, counted(message));
    message.visible_at = deadline.plus_ms(backoff);
    Delivery {
        id: message.id,
        receipt: Receipt {
            message: message.id,
            delivery: message.delivery_count,
        },
        body: message.body.clone(),
        attributes: message.attributes.clone(),
        group: message.group.clone(),
        delivery_count: counted(message),
        enqueued_at: message.enqueued_at,
        lease_deadline: deadline,
        dead_letter: message.dead_letter.as_deref().cloned(),
    }
}

impl ModelQueue {
    fn index_of(&self, id: MessageId) -> usize {
        self.messages
            .iter()
            .position(|m| m.id == id)
            .expect("a message of this queue")
    }

    fn enqueue_one(
        &mut self,
        new: &NewMessage,
        now: Timestamp,
        next_id: &mut u64,
    ) -> Result<Enqueued, Refusal> {
        let config = self.meta.config.clone();
        let size = message_bytes(&new.body, &new.attributes);
        let well_formed = size <= config.max_message_bytes
            && new.attributes.len() <= MAX_ATTRIBUTES
            && new.attributes.keys().all(|key| key_ok(key))
            && new.dedup_id.as_deref().is_none_or(key_ok)
            && new.group.as_deref().is_none_or(key_ok)
            && new.delay_ms.is_none_or(|delay| delay_ok(&config, delay));
        if !well_formed {
            return Err(invalid());
        }
        if let Some(dedup_id) = &new.dedup_id {
            let remembered = self
                .dedup
                .iter()
                .find(|(id, entry)| id == dedup_id && entry.expires_at > now);
            if let Some((_, entry)) = remembered {
                return Ok(Enqueued {
                    id: entry.id,
                    duplicate: true,
                });
            }
        }
        self.make_room(size)?;
        let id = take_id(next_id);
        self.meta.counters.enqueued += 1;
        if let Some(dedup_id) = &new.dedup_id {
            self.dedup.retain(|(id, _)| id != dedup_id);
            let expires_at = now.plus_ms(config.dedup_window_ms);
            self.dedup
                .push((dedup_id.clone(), DedupEntry { id, expires_at }));
        }
        self.messages.push(Message {
            id,
            body: new.body.clone(),
            attributes: new.attributes.clone(),
            group: new.group.clone(),
            enqueued_at: now,
            visible_at: now.plus_ms(new.delay_ms.unwrap_or(config.default_delay_ms)),
            expires_at: now.plus_ms(lifetime_ms(&config)),
            delivery_count: 0,
            released: 0,
            lease: None,
            last_nack_reason: None,
            dead_letter: None,
        });
        Ok(Enqueued {
            id,
            duplicate: false,
        })
    }

    /// Applies `max_length` and `max_bytes` before a new message of `size`
    /// bytes: refuses it, or drops the oldest messages (leased or not).
    fn make_room(&mut self, size: u64) -> Result<(), Refusal> {
        let config = &self.meta.config;
        let max_length = config.max_length.unwrap_or(u64::MAX);
        let max_bytes = config.max_bytes.unwrap_or(u64::MAX);
        let too_long = |q: &ModelQueue| q.messages.len() as u64 + 1 > max_length;
        let too_big = |q: &ModelQueue| q.bytes() + size > max_bytes;
        if !too_long(self) && !too_big(self) {
            return Ok(());
        }
        if config.overflow == Overflow::Reject || size > max_bytes {
            let limit = if too_long(self) {
                format!("max_length {max_length}")
            } else {
                format!("max_bytes {max_bytes}")
            };
            return Err(Refusal::QueueFull {
                queue: self.meta.name.to_string(),
                limit,
            });
        }
        while too_long(self) || too_big(self) {
            self.messages.remove(0);
            self.meta.counters.dropped += 1;
            self.overflow_drops += 1;
        }
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.messages.iter().map(size).sum()
    }

    /// A message moved in (dead-lettered or redriven): the next id, visible
    /// now. No limit applies here: dead letters ignore the DLQ's limits, and
    /// redrive makes room (or skips the message) before it calls this.
    fn arrive(
        &mut self,
        message: Message,
        dead_letter: Option<DeadLetter>,
        now: Timestamp,
        next_id: &mut u64,
    ) {
        let id = take_id(next_id);
        self.meta.counters.enqueued += 1;
        let lifetime = lifetime_ms(&self.meta.config);
        self.messages.push(Message {
            id,
            enqueued_at: now,
            visible_at: now,
            expires_at: now.plus_ms(lifetime),
            delivery_count: 0,
            released: 0,
            lease: None,
            last_nack_reason: None,
            dead_letter: dead_letter.map(Box::new),
            ..message
        });
    }

    /// The index of the message whose current lease `receipt` names.
    fn current_lease(&self, receipt: Receipt) -> Result<usize, Refusal> {
        let index = self
            .messages
            .iter()
            .position(|m| m.id == receipt.message)
            .ok_or(Refusal::ReceiptUnknown(receipt.message.0))?;
        let message = &self.messages[index];
        if message.lease.is_none() || message.delivery_count != receipt.delivery {
            return Err(Refusal::ReceiptStale(receipt.message.0));
        }
        Ok(index)
    }
}

/// Blanks the text of invalid-argument refusals, which the model does not
/// reproduce.
fn normalize(response: Response) -> Response {
    let blank = |refusal: Refusal| match refusal {
        Refusal::InvalidArgument(_) => invalid(),
        other => other,
    };
    match response {
        Response::Refused(refusal) => Response::Refused(blank(refusal)),
        Response::Enqueued(results) => {
            Response::Enqueued(results.into_iter().map(|r| r.map_err(blank)).collect())
        }
        Response::Batch(responses) => {
            Response::Batch(responses.into_iter().map(normalize).collect())
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------
// Invariants, checked from each command's response and the real state just
// before and after it.
// ---------------------------------------------------------------------------

/// What the commands so far have shown about one message id.
#[derive(Debug)]
struct Seen {
    queue: QueueName,
    body: Bytes,
    /// Leases handed out: the number of the last receipt.
    leases: u32,
    /// Deliveries that count: leases less releases.
    counted: u32,
    /// When it expires, as its arrival and its queue's config then say.
    expires_at: Timestamp,
    /// Enqueued with a delay, so not ready on arrival.
    delayed: bool,
    /// The command that removed it; it must never come back.
    gone: Option<&'static str>,
}

/// A lease as the responses tell it.
#[derive(Debug)]
struct ObservedLease {
    queue: QueueName,
    delivery: u32,
    leased_at: Timestamp,
    deadline: Timestamp,
    group: Option<String>,
}

/// Messages a command moves into a queue with new ids.
#[derive(Debug)]
enum MovedIn {
    /// Dead letters from `source`, whose `max_deliveries` is `max`, into `dlq`.
    DeadLetters {
        source: QueueName,
        dlq: QueueName,
        max: u32,
    },
    /// Dead letters moved out of `dlq` back to their source queues.
    Redriven { dlq: QueueName },
}

/// Which messages a command may remove.
#[derive(Debug)]
enum Leaving {
    /// None.
    Nothing,
    /// Exactly these.
    Exactly(Vec<MessageId>),
    /// Only the oldest messages of this queue, and only if it drops the
    /// oldest to make room.
    Oldest(QueueName),
    /// Only messages of this queue (which ones, the command's check says).
    From(QueueName),
    /// `moved` messages out of `dlq`, and the oldest messages of queues that
    /// drop them to make room for the redriven ones.
    Redriven { dlq: QueueName, moved: u64 },
    /// Any: the command's own check accounts for them.
    Checked,
}

/// What the commands so far have shown, to check invariants against.
#[derive(Debug, Default)]
struct Observer {
    clock: Timestamp,
    /// The id the next message gets, counted from the responses: one for
    /// each message stored by an enqueue, dead-lettered or redriven.
    next_id: u64,
    configs: HashMap<QueueName, QueueConfig>,
    /// Every message that ever arrived, by id (ids are cluster-wide).
    seen: HashMap<MessageId, Seen>,
    /// Leases handed out and not ended by an ack, nack or release, as last
    /// extended, of messages still stored.
    leases: HashMap<MessageId, ObservedLease>,
    /// Receipts whose ack succeeded: acking one again may succeed again
    /// (acks are idempotent within the dedup window) and ends no lease.
    acked_receipts: HashSet<(QueueName, Receipt)>,
    /// The last first-delivered id per (queue, group).
    first_in_group: HashMap<(QueueName, String), MessageId>,
    /// The last first-delivered id per queue among ungrouped messages that
    /// were visible on arrival.
    first_plain: HashMap<QueueName, MessageId>,
    /// Per (queue, dedup id): the first id and the end of its window.
    dedup: HashMap<(QueueName, String), (MessageId, Timestamp)>,
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn command_now(command: &Command) -> Option<Timestamp> {
    match command {
        Command::CreateQueue { now, .. }
        | Command::Purge { now, .. }
        | Command::Enqueue { now, .. }
        | Command::Receive { now, .. }
        | Command::Nack { now, .. }
        | Command::Extend { now, .. }
        | Command::Tick { now }
        | Command::Redrive { now, .. } => Some(*now),
        _ => None,
    }
}

/// The command's name, to say what removed a message.
fn command_kind(command: &Command) -> &'static str {
    match command {
        Command::CreateQueue { .. } => "a create",
        Command::UpdateQueue { .. } => "an update",
        Command::DeleteQueue { .. } => "a delete",
        Command::Purge { .. } => "a purge",
        Command::Enqueue { .. } => "an enqueue",
        Command::Receive { .. } => "a receive",
        Command::Ack { .. } => "an ack",
        Command::Nack { .. } => "a nack",
        Command::Extend { .. } => "an extend",
        Command::Release { .. } => "a release",
        Command::RegisterNode { .. } => "a node registration",
        Command::Tick { .. } => "a tick",
        Command::Redrive { .. } => "a redrive",
        Command::Batch(_) => "a batch",
    }
}

fn queue_in<'a>(queues: &'a Queues, name: &QueueName) -> Result<&'a Queue, String> {
    queues
        .get(name)
        .ok_or_else(|| format!("queue {name} is missing"))
}

impl Observer {
    fn new() -> Self {
        Observer {
            next_id: 1,
            ..Observer::default()
        }
    }

    /// Checks one command (not a batch) given the state before and after it.
    fn observe(
        &mut self,
        command: &Command,
        response: &Response,
        pre: &Queues,
        post: &Queues,
    ) -> Result<(), String> {
        if let Some(now) = command_now(command) {
            self.clock = self.clock.max(now);
        }
        ensure!(
            post.clock() == self.clock,
            "the clock is {}, but the largest now so far is {}",
            post.clock(),
            self.clock
        );
        let first_new_id = self.next_id;
        let mut moved_in = None;
        let leaving = match (command, response) {
            (_, Response::Refused(_)) => Leaving::Nothing,
            (Command::CreateQueue { name, config, .. }, Response::QueueCreated { .. }) => {
                self.configs.insert(name.clone(), config.clone());
                Leaving::Nothing
            }
            (Command::UpdateQueue { name, .. }, Response::QueueUpdated { config }) => {
                self.configs.insert(name.clone(), config.clone());
                Leaving::Nothing
            }
            (Command::DeleteQueue { name }, Response::QueueDeleted { messages }) => {
                let held: Vec<MessageId> = queue_in(pre, name)?.messages().map(|m| m.id).collect();
                ensure!(
                    *messages == held.len() as u64,
                    "deleting {name} reports {messages} messages; it held {}",
                    held.len()
                );
                self.configs.remove(name);
                self.dedup.retain(|(queue, _), _| queue != name);
                self.acked_receipts.retain(|(queue, _)| queue != name);
                Leaving::Exactly(held)
            }
            (
                Command::Enqueue {
                    queue, messages, ..
                },
                Response::Enqueued(results),
            ) => {
                for (new, result) in messages.iter().zip(results) {
                    self.enqueued(queue, new, result)?;
                }
                Leaving::Oldest(queue.clone())
            }
            (
                Command::Receive {
                    queue,
                    visibility_ms,
                    ..
                },
                Response::Received {
                    deliveries,
                    dead_lettered,
                    ..
                },
            ) => {
                let config = self.configs[queue].clone();
                let visibility = visibility_ms.unwrap_or(config.visibility_timeout_ms);
                for delivery in deliveries {
                    self.delivered(queue, delivery, visibility, post)?;
                }
                let (before, after) = (queue_in(pre, queue)?, queue_in(post, queue)?);
                self.check_receive(command, response, before, after)?;
                if *dead_lettered > 0 {
                    let dlq = config.dead_letter_queue.clone().ok_or_else(|| {
                        format!("{queue} dead-lettered {dead_lettered} messages, but it has no dead-letter queue")
                    })?;
                    moved_in = Some(MovedIn::DeadLetters {
                        source: queue.clone(),
                        dlq,
                        max: config.max_deliveries,
                    });
                    self.next_id += dead_lettered;
                }
                Leaving::From(queue.clone())
            }
            (Command::Ack { queue, receipts }, Response::Acked(results)) => {
                let mut acked = Vec::new();
                for (receipt, result) in receipts.iter().zip(results) {
                    if result.is_err() || self.acked_receipts.contains(&(queue.clone(), *receipt)) {
                        continue;
                    }
                    self.ended_lease(queue, *receipt, "ack")?;
                    self.acked_receipts.insert((queue.clone(), *receipt));
                    acked.push(receipt.message);
                }
                Leaving::Exactly(acked)
            }
            (
                Command::Nack {
                    queue,
                    receipts,
                    delay_ms,
                    ..
                },
                Response::Nacked(results),
            ) => {
                for (receipt, result) in receipts.iter().zip(results) {
                    if result.is_ok() {
                        self.ended_lease(queue, *receipt, "nack")?;
                        let message = queue_in(post, queue)?.message(receipt.message);
                        let visible_at = self.clock.plus_ms(delay_ms.unwrap_or(0));
                        ensure!(
                            message.is_some_and(|m| m.lease.is_none()
                                && if delay_ms.is_some() {
                                    m.visible_at == visible_at
                                } else {
                                    m.visible_at >= visible_at
                                }),
                            "nack of {receipt} with delay {delay_ms:?} at {} left {message:?}",
                            self.clock
                        );
                    }
                }
                Leaving::Nothing
            }
            (
                Command::Extend {
                    queue,
                    receipts,
                    visibility_ms,
                    ..
                },
                Response::Extended(results),
            ) => {
                for (receipt, result) in receipts.iter().zip(results) {
                    if let Ok(deadline) = result {
                        self.extended(queue, *receipt, *deadline, *visibility_ms)?;
                    }
                }
                Leaving::Nothing
            }
            (Command::Release { queue, receipts }, Response::Released(results)) => {
                for (receipt, result) in receipts.iter().zip(results) {
                    if result.is_ok() {
                        self.released(queue, *receipt, post)?;
                    }
                }
                Leaving::Nothing
            }
            (Command::Tick { .. }, Response::Ticked { expired, .. }) => {
                self.check_tick(*expired, pre, post)?;
                Leaving::Checked
            }
            (Command::Purge { name, .. }, Response::Purged { messages }) => {
                self.check_purge(name, *messages, pre, post)?;
                Leaving::From(name.clone())
            }
            (Command::Redrive { dlq, .. }, Response::Redriven { moved, .. }) => {
                if *moved > 0 {
                    moved_in = Some(MovedIn::Redriven { dlq: dlq.clone() });
                    self.next_id += moved;
                }
                Leaving::Redriven {
                    dlq: dlq.clone(),
                    moved: *moved,
                }
            }
            (Command::RegisterNode { .. }, Response::NodeRegistered) => Leaving::Nothing,
            _ => return Err(format!("{command} answered {response:?}")),
        };
        self.departures(command, &leaving, pre, post)?;
        self.arrivals(command, first_new_id, moved_in.as_ref(), pre, post)?;
        ensure!(
            post.next_id() == self.next_id,
            "the next id is {}, but the commands so far assigned ids up to {}",
            post.next_id(),
            self.next_id - 1
        );
        Ok(())
    }

    fn enqueued(
        &mut self,
        queue: &QueueName,
        new: &NewMessage,
        result: &Result<Enqueued, Refusal>,
    ) -> Result<(), String> {
        let config = &self.configs[queue];
        let remembered = new.dedup_id.as_ref().and_then(|dedup_id| {
            let key = (queue.clone(), dedup_id.clone());
            let &(first, until) = self.dedup.get(&key)?;
            (self.clock < until).then_some((first, until))
        });
        let enqueued = match result {
            Ok(enqueued) => enqueued,
            Err(Refusal::QueueFull { .. }) => {
                ensure!(
                    remembered.is_none(),
                    "a duplicate of {remembered:?} refused as full"
                );
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        if let Some((first, until)) = remembered {
            ensure!(
                enqueued.duplicate && enqueued.id == first,
                "dedup id {:?} remembered for {first} until {until} returned {enqueued:?} at {}",
                new.dedup_id,
                self.clock
            );
            return Ok(());
        }
        ensure!(
            !enqueued.duplicate,
            "dedup id {:?} not remembered returned a duplicate ({enqueued:?})",
            new.dedup_id
        );
        let id = enqueued.id;
        ensure!(
            id.0 == self.next_id,
            "enqueue in {queue} assigned id {id}, but the next id is {}",
            self.next_id
        );
        self.next_id += 1;
        let delay = new.delay_ms.unwrap_or(config.default_delay_ms);
        self.seen.insert(
            id,
            Seen {
                queue: queue.clone(),
                body: new.body.clone(),
                leases: 0,
                counted: 0,
                expires_at: self.clock.plus_ms(lifetime_ms(config)),
                delayed: delay > 0,
                gone: None,
            },
        );
        if let Some(dedup_id) = &new.dedup_id {
            let until = self.clock.plus_ms(config.dedup_window_ms);
            self.dedup
                .insert((queue.clone(), dedup_id.clone()), (id, until));
        }
        Ok(())
    }

    fn delivered(
        &mut self,
        queue: &QueueName,
        delivery: &Delivery,
        visibility: u64,
        post: &Queues,
    ) -> Result<(), String> {
        let id = delivery.id;
        let now = self.clock;
        let seen = self
            .seen
            .get(&id)
            .ok_or_else(|| format!("message {id} delivered from {queue} never arrived"))?;
        ensure!(
            seen.queue == *queue,
            "message {id} of {} delivered from {queue}",
            seen.queue
        );
        if let Some(what) = seen.gone {
            return Err(format!(
                "message {id} of {queue} delivered again after {what} removed it"
            ));
        }
        ensure!(
            delivery.body == seen.body,
            "message {id} of {queue} delivered with body {:?}, arrived with {:?}",
            delivery.body,
            seen.body
        );
        let receipt = Receipt {
            message: id,
            delivery: seen.leases + 1,
        };
        ensure!(
            delivery.receipt == receipt,
            "delivery of {id} after {} leases carries receipt {}",
            seen.leases,
            delivery.receipt
        );
        let count = delivery.delivery_count;
        ensure!(
            count == seen.counted + 1,
            "message {id} of {queue} delivered as delivery {count} after {} counted deliveries",
            seen.counted
        );
        let max = self.configs[queue].max_deliveries;
        ensure!(
            max == 0 || count <= max,
            "message {id} of {queue} delivered {count} times, max_deliveries is {max}"
        );
        ensure!(
            delivery.lease_deadline == now.plus_ms(visibility),
            "lease {} runs until {}, not now {now} + {visibility} ms",
            delivery.receipt,
            delivery.lease_deadline
        );
        ensure!(
            seen.expires_at > now,
            "message {id} of {queue} delivered at {now}, past its expiry at {}",
            seen.expires_at
        );
        if let Some(lease) = self.leases.get(&id) {
            ensure!(
                lease.deadline <= now,
                "message {id} of {queue} leased again while lease {id}-{} runs until {}",
                lease.delivery,
                lease.deadline
            );
        }
        if let Some(group) = &delivery.group {
            let live = self.leases.iter().find(|(other, lease)| {
                lease.queue == *queue
                    && **other != id
                    && lease.group.as_ref() == Some(group)
                    && lease.deadline > now
                    && post
                        .get(queue)
                        .is_some_and(|q| q.message(**other).is_some())
            });
            if let Some((other, lease)) = live {
                return Err(format!(
                    "message {id} of group {group} in {queue} leased while message {other} of the same group holds a lease until {}",
                    lease.deadline
                ));
            }
        }
        if receipt.delivery == 1 {
            let delayed = seen.delayed;
            self.first_delivery(queue, delivery, delayed)?;
        }
        let seen = self.seen.get_mut(&id).expect("looked up above");
        seen.leases += 1;
        seen.counted += 1;
        let lease = ObservedLease {
            queue: queue.clone(),
            delivery: receipt.delivery,
            leased_at: now,
            deadline: delivery.lease_deadline,
            group: delivery.group.clone(),
        };
        self.leases.insert(id, lease);
        Ok(())
    }

    /// First deliveries are in id order within a group, and within a queue
    /// among ungrouped messages that were visible on arrival (a delayed or
    /// grouped message may rightly be overtaken by a later id). Both follow
    /// from the ready order: such messages become ready in id order.
    fn first_delivery(
        &mut self,
        queue: &QueueName,
        delivery: &Delivery,
        delayed: bool,
    ) -> Result<(), String> {
        let id = delivery.id;
        if let Some(group) = &delivery.group {
            let last = self
                .first_in_group
                .entry((queue.clone(), group.clone()))
                .or_default();
            ensure!(
                id > *last,
                "first delivery of {id} in group {group} of {queue} after first delivery of {last}"
            );
            *last = id;
        } else if !delayed {
            let last = self.first_plain.entry(queue.clone()).or_default();
            ensure!(
                id > *last,
                "first delivery of {id} of {queue} after first delivery of {last}, both ungrouped and undelayed"
            );
            *last = id;
        }
        Ok(())
    }

    /// A receive, against its queue just before and after it: it met (leased
    /// or removed) only deliverable messages, removed exactly the expired
    /// ones and those at `max_deliveries` it met, in `(visible_at, id)`
    /// order, left none waiting ahead of one it met, stayed within its byte
    /// budget, and stopped with room left only when nothing deliverable was
    /// left or the next message would have broken the budget.
    fn check_receive(
        &self,
        command: &Command,
        response: &Response,
        pre: &Queue,
        post: &Queue,
    ) -> Result<(), String> {
        let (
            Command::Receive { max, max_bytes, .. },
            Response::Received {
                deliveries,
                dead_lettered,
                dropped,
                expired,
            },
        ) = (command, response)
        else {
            unreachable!("a receive and its answer")
        };
        let now = self.clock;
        let name = pre.name();
        let config = &self.configs[name];
        let key = |m: &Message| (m.visible_at, m.id);
        let leased = deliveries
            .iter()
            .map(|d| {
                pre.message(d.id)
                    .ok_or_else(|| format!("receive leased {}, which was not in {name}", d.id))
            })
            .collect::<Result<Vec<&Message>, String>>()?;
        let removed: Vec<&Message> = pre
            .messages()
            .filter(|m| post.message(m.id).is_none())
            .collect();
        let met: Vec<&Message> = leased.iter().chain(&removed).copied().collect();
        for m in &met {
            ensure!(
                m.visible_at <= now,
                "receive at {now} met message {} of {name}, visible only at {}",
                m.id,
                m.visible_at
            );
            let head = pre.messages().find(|other| {
                other.group.is_some()
                    && other.group == m.group
                    && other.id < m.id
                    && post.message(other.id).is_some()
            });
            if let Some(head) = head {
                return Err(format!(
                    "receive met message {} of group {:?} in {name} while {} of that group was still there",
                    m.id, m.group, head.id
                ));
            }
        }
        let (past_expiry, at_max): (Vec<&Message>, Vec<&Message>) =
            removed.iter().partition(|m| m.expires_at <= now);
        ensure!(
            *expired == past_expiry.len() as u64,
            "receive reports {expired} expired, but removed {} messages past their expiry",
            past_expiry.len()
        );
        let max_deliveries = config.max_deliveries;
        let spent = |m: &Message| max_deliveries > 0 && counted(m) >= max_deliveries;
        for m in &at_max {
            ensure!(
                spent(m),
                "receive removed message {} of {name} (expires at {}) after {} deliveries; max_deliveries is {max_deliveries}",
                m.id,
                m.expires_at,
                counted(m)
            );
        }
        let mut spent_ids: Vec<(MessageId, u32)> =
            at_max.iter().map(|m| (m.id, counted(m))).collect();
        spent_ids.sort();
        let mut reported = dropped.clone();
        reported.sort();
        if config.dead_letter_queue.is_some() {
            ensure!(
                *dead_lettered == spent_ids.len() as u64 && dropped.is_empty(),
                "receive dead-lettered {dead_lettered} and dropped {dropped:?}, but removed {spent_ids:?} at max_deliveries"
            );
        } else {
            ensure!(
                *dead_lettered == 0 && reported == spent_ids,
                "receive without a dead-letter queue dead-lettered {dead_lettered} and dropped {dropped:?}, but removed {spent_ids:?} at max_deliveries"
            );
        }
        for m in &leased {
            ensure!(
                m.expires_at > now && !spent(m),
                "receive at {now} leased message {} (expires at {}, {} deliveries) instead of removing it",
                m.id,
                m.expires_at,
                counted(m)
            );
        }
        // Order: a message ready from the start (a group head already) was
        // there to be taken all along, so whatever was met before it, or
        // while it waited, became ready before it.
        for (i, b) in leased.iter().enumerate() {
            if !heads_its_group(pre.messages(), b) {
                continue;
            }
            if let Some(a) = leased[..i].iter().find(|a| key(a) > key(b)) {
                return Err(format!(
                    "receive leased {} (ready since {}) before {} (ready since {})",
                    a.id, a.visible_at, b.id, b.visible_at
                ));
            }
        }
        let waited = pre.messages().filter(|s| {
            s.visible_at <= now
                && heads_its_group(pre.messages(), s)
                && post.message(s.id).is_some()
                && !leased.iter().any(|m| m.id == s.id)
        });
        for s in waited {
            if let Some(m) = met.iter().find(|m| key(m) > key(s)) {
                return Err(format!(
                    "receive met {} (ready since {}) while {} (ready since {}) waited",
                    m.id, m.visible_at, s.id, s.visible_at
                ));
            }
        }
        // Room and budget.
        let budget = max_bytes
            .unwrap_or(MAX_RECEIVE_BYTES)
            .min(MAX_RECEIVE_BYTES);
        let bytes: u64 = leased.iter().map(|m| size(m)).sum();
        ensure!(
            leased.len() <= *max as usize,
            "receive of at most {max} leased {}",
            leased.len()
        );
        ensure!(
            leased.len() <= 1 || bytes <= budget,
            "receive leased {} messages of {bytes} bytes, over its budget of {budget}",
            leased.len()
        );
        if leased.len() < *max as usize {
            if let Some(next) = first_ready(&post.messages().collect::<Vec<_>>(), now) {
                ensure!(
                    !leased.is_empty() && bytes + size(next) > budget,
                    "receive stopped after {} of {max} messages ({bytes} of {budget} bytes) though message {} ({} bytes) was ready",
                    leased.len(),
                    next.id,
                    size(next)
                );
                ensure!(
                    next.expires_at > now && !spent(next),
                    "receive stopped at its byte budget before message {}, which it should have removed",
                    next.id
                );
            }
        }
        Ok(())
    }

    fn extended(
        &mut self,
        queue: &QueueName,
        receipt: Receipt,
        deadline: Timestamp,
        visibility_ms: u64,
    ) -> Result<(), String> {
        ensure!(
            deadline == self.clock.plus_ms(visibility_ms),
            "extend of {receipt} set deadline {deadline}, not now {} + {visibility_ms}",
            self.clock
        );
        let lease = self.leases.get_mut(&receipt.message);
        ensure!(
            lease
                .as_ref()
                .is_some_and(|l| l.queue == *queue && l.delivery == receipt.delivery),
            "extend accepted {receipt}, which is not a lease handed out and still held"
        );
        lease.expect("checked").deadline = deadline;
        Ok(())
    }

    /// A release ends the lease without counting it: the message is ready
    /// again at once, where it was before that lease.
    fn released(
        &mut self,
        queue: &QueueName,
        receipt: Receipt,
        post: &Queues,
    ) -> Result<(), String> {
        let lease = self.ended_lease(queue, receipt, "release")?;
        let seen = self
            .seen
            .get_mut(&receipt.message)
            .expect("leased, so seen");
        ensure!(
            seen.counted > 0,
            "release of {receipt} with no counted delivery"
        );
        seen.counted -= 1;
        let message = queue_in(post, queue)?.message(receipt.message);
        ensure!(
            message.is_some_and(|m| m.lease.is_none() && m.visible_at == lease.leased_at),
            "release of {receipt} left {message:?}, not ready again since its lease began at {}",
            lease.leased_at
        );
        Ok(())
    }

    /// An ack, nack or release succeeded: it must have named the lease last
    /// handed out.
    fn ended_lease(
        &mut self,
        queue: &QueueName,
        receipt: Receipt,
        what: &str,
    ) -> Result<ObservedLease, String> {
        let lease = self.leases.remove(&receipt.message);
        match lease {
            Some(lease) if lease.queue == *queue && lease.delivery == receipt.delivery => Ok(lease),
            _ => Err(format!(
                "{what} accepted {receipt}, which is not a lease handed out and still held"
            )),
        }
    }

    /// A tick drops exactly the messages past their expiry that no one holds.
    fn check_tick(&self, expired: u64, pre: &Queues, post: &Queues) -> Result<(), String> {
        let now = self.clock;
        let mut dropped = 0;
        for queue in pre.iter() {
            let after = queue_in(post, queue.name())?;
            for m in queue.messages() {
                let due = m.expires_at <= now && !in_flight(m, now);
                let kept = after.message(m.id).is_some();
                ensure!(
                    kept != due,
                    "tick at {now} {} message {} of {} (expires at {}, lease {:?})",
                    if kept { "kept" } else { "dropped" },
                    m.id,
                    queue.name(),
                    m.expires_at,
                    m.lease
                );
                dropped += u64::from(!kept);
            }
        }
        ensure!(
            expired == dropped,
            "tick reports {expired} expired, but dropped {dropped}"
        );
        Ok(())
    }

    /// A purge removes exactly the messages no one holds, and the dedup ids
    /// of the messages it removed.
    fn check_purge(
        &mut self,
        name: &QueueName,
        messages: u64,
        pre: &Queues,
        post: &Queues,
    ) -> Result<(), String> {
        let now = self.clock;
        let (before, after) = (queue_in(pre, name)?, queue_in(post, name)?);
        let mut removed = Vec::new();
        for m in before.messages() {
            let kept = after.message(m.id).is_some();
            ensure!(
                kept == in_flight(m, now),
                "purge at {now} {} message {} of {name} (lease {:?})",
                if kept { "kept" } else { "removed" },
                m.id,
                m.lease
            );
            if !kept {
                removed.push(m.id);
            }
        }
        ensure!(
            messages == removed.len() as u64,
            "purge reports {messages} messages, but removed {}",
            removed.len()
        );
        self.dedup
            .retain(|(queue, _), (first, _)| queue != name || !removed.contains(first));
        Ok(())
    }

    /// The messages that left any queue: only those `leaving` allows, and
    /// each for good.
    fn departures(
        &mut self,
        command: &Command,
        leaving: &Leaving,
        pre: &Queues,
        post: &Queues,
    ) -> Result<(), String> {
        let kind = command_kind(command);
        let mut left: BTreeMap<QueueName, Vec<MessageId>> = BTreeMap::new();
        for queue in pre.iter() {
            let after = post.get(queue.name());
            for message in queue.messages() {
                if after.and_then(|q| q.message(message.id)).is_none() {
                    left.entry(queue.name().clone())
                        .or_default()
                        .push(message.id);
                }
            }
        }
        match leaving {
            Leaving::Nothing => ensure!(left.is_empty(), "{kind} removed {left:?}"),
            Leaving::Exactly(ids) => {
                let all: BTreeSet<MessageId> = left.values().flatten().copied().collect();
                let expected: BTreeSet<MessageId> = ids.iter().copied().collect();
                ensure!(
                    all == expected,
                    "{kind} removed {left:?}, not exactly {expected:?}"
                );
            }
            Leaving::Oldest(name) => {
                for (queue, ids) in &left {
                    ensure!(
                        queue == name,
                        "{kind} of {name} removed {ids:?} from {queue}"
                    );
                    self.only_oldest(kind, queue, ids, post)?;
                }
            }
            Leaving::From(name) => {
                ensure!(
                    left.keys().all(|queue| queue == name),
                    "{kind} of {name} removed {left:?}"
                );
            }
            Leaving::Redriven { dlq, moved } => {
                for (queue, ids) in &left {
                    if queue == dlq {
                        ensure!(
                            ids.len() as u64 == *moved,
                            "redrive moved {moved} out of {dlq}, but {ids:?} left it"
                        );
                    } else {
                        self.only_oldest(kind, queue, ids, post)?;
                    }
                }
            }
            Leaving::Checked => {}
        }
        for id in left.into_values().flatten() {
            if let Some(seen) = self.seen.get_mut(&id) {
                seen.gone = Some(kind);
            }
            self.leases.remove(&id);
        }
        Ok(())
    }

    /// Messages dropped to make room: only by a queue that drops the oldest,
    /// and only its oldest.
    fn only_oldest(
        &self,
        kind: &str,
        queue: &QueueName,
        ids: &[MessageId],
        post: &Queues,
    ) -> Result<(), String> {
        ensure!(
            self.configs[queue].overflow == Overflow::DropOldest,
            "{kind} removed {ids:?} from {queue}, which does not drop the oldest to make room"
        );
        let oldest_kept = queue_in(post, queue)?.messages().next().map(|m| m.id);
        ensure!(
            oldest_kept.is_none_or(|kept| ids.iter().all(|id| *id < kept)),
            "{kind} dropped {ids:?} from {queue} to make room but kept the older {oldest_kept:?}"
        );
        Ok(())
    }

    /// The messages that appeared in any queue: each has one of the ids this
    /// command assigned, and was enqueued by it or moved in by it.
    fn arrivals(
        &mut self,
        command: &Command,
        first_new_id: u64,
        moved_in: Option<&MovedIn>,
        pre: &Queues,
        post: &Queues,
    ) -> Result<(), String> {
        let assigned = first_new_id..self.next_id;
        let mut moved = 0;
        for queue in post.iter() {
            let before = pre.get(queue.name());
            for message in queue.messages() {
                if before.and_then(|q| q.message(message.id)).is_some() {
                    continue;
                }
                let id = message.id;
                ensure!(
                    assigned.contains(&id.0),
                    "message {id} appeared in {}, but this command assigned ids {assigned:?}",
                    queue.name()
                );
                match self.seen.get(&id) {
                    Some(seen) => ensure!(
                        seen.queue == *queue.name(),
                        "message {id} enqueued into {} appeared in {}",
                        seen.queue,
                        queue.name()
                    ),
                    None => {
                        moved += 1;
                        self.moved_in(moved_in, queue.name(), message, pre, post)?;
                    }
                }
            }
        }
        if let Some(MovedIn::DeadLetters { dlq, .. }) = moved_in {
            ensure!(
                moved == assigned.end - assigned.start,
                "{} dead letters were due in {dlq}, {moved} arrived",
                assigned.end - assigned.start
            );
        }
        // Enqueued by this command, then dropped by it to make room.
        for id in assigned.map(MessageId) {
            if let Some(seen) = self.seen.get_mut(&id) {
                if post.get(&seen.queue).and_then(|q| q.message(id)).is_none() {
                    seen.gone = Some(command_kind(command));
                }
            }
        }
        Ok(())
    }

    /// A dead letter or a redriven message, as it arrived in `queue`.
    fn moved_in(
        &mut self,
        moved_in: Option<&MovedIn>,
        queue: &QueueName,
        message: &Message,
        pre: &Queues,
        post: &Queues,
    ) -> Result<(), String> {
        let id = message.id;
        let now = self.clock;
        let Some(how) = moved_in else {
            return Err(format!(
                "message {id} appeared in {queue}, which nothing enqueued or moved there"
            ));
        };
        let expires_at = now.plus_ms(lifetime_ms(&self.configs[queue]));
        ensure!(
            message.enqueued_at == now
                && message.visible_at == now
                && message.expires_at == expires_at
                && message.delivery_count == 0
                && message.released == 0
                && message.lease.is_none()
                && message.last_nack_reason.is_none(),
            "message {id} moved into {queue} at {now} (to expire at {expires_at}) arrived as {message:?}"
        );
        let left = |name: &QueueName, id: MessageId| -> Option<&Message> {
            let origin = pre.get(name)?.message(id)?;
            post.get(name)
                .is_none_or(|q| q.message(id).is_none())
                .then_some(origin)
        };
        match how {
            MovedIn::DeadLetters { source, dlq, max } => {
                ensure!(
                    queue == dlq,
                    "dead letter {id} of {source} arrived in {queue}, not in {dlq}"
                );
                let Some(dead) = &message.dead_letter else {
                    return Err(format!(
                        "dead letter {id} in {queue} has no dead-letter record"
                    ));
                };
                let origin = left(source, dead.source_id);
                let seen = self.seen.get(&dead.source_id);
                let (Some(origin), Some(seen)) = (origin, seen) else {
                    return Err(format!(
                        "dead letter {id} in {queue} names {} of {source}, which did not just leave it",
                        dead.source_id
                    ));
                };
                ensure!(
                    dead.source_queue == *source
                        && dead.dead_lettered_at == now
                        && seen.queue == *source
                        && *max > 0
                        && dead.delivery_count >= *max
                        && dead.delivery_count == seen.counted,
                    "dead letter {id} in {queue} at {now} carries {dead:?}; {} of {source} was delivered {} times, max_deliveries {max}",
                    dead.source_id,
                    seen.counted
                );
                ensure!(
                    message.body == origin.body
                        && message.attributes == origin.attributes
                        && message.group == origin.group
                        && dead.reason.as_deref() == origin.last_nack_reason.as_deref(),
                    "dead letter {id} does not carry what {} of {source} carried",
                    dead.source_id
                );
            }
            MovedIn::Redriven { dlq } => {
                ensure!(
                    message.dead_letter.is_none(),
                    "redriven message {id} in {queue} keeps a dead-letter record"
                );
                let origin = pre
                    .get(dlq)
                    .into_iter()
                    .flat_map(Queue::messages)
                    .find(|m| m.body == message.body && left(dlq, m.id).is_some());
                let Some(origin) = origin else {
                    return Err(format!(
                        "redriven message {id} in {queue} matches no message that left {dlq}"
                    ));
                };
                ensure!(
                    origin
                        .dead_letter
                        .as_ref()
                        .is_some_and(|d| d.source_queue == *queue)
                        && message.attributes == origin.attributes
                        && message.group == origin.group,
                    "message {} of {dlq} redriven to {queue} as {message:?}",
                    origin.id
                );
            }
        }
        let seen = Seen {
            queue: queue.clone(),
            body: message.body.clone(),
            leases: 0,
            counted: 0,
            expires_at,
            delayed: false,
            gone: None,
        };
        self.seen.insert(id, seen);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Generated scenarios.
// ---------------------------------------------------------------------------

/// Which queue a command names.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The first or second main queue (the first when there is one).
    Main(usize),
    /// The dead-letter queue.
    Dlq,
    /// A queue that does not exist.
    Missing,
}

/// A message to enqueue; its body is made unique when the step runs.
#[derive(Clone, Debug)]
struct MessageSpec {
    dedup: Option<u8>,
    group: Option<u8>,
    delay: Option<DelaySpec>,
}

/// A delay, resolved when the step runs: fixed, or 1 ms below, at or above
/// one of the limits of the queue's config, where refusals begin.
#[derive(Clone, Copy, Debug)]
enum DelaySpec {
    Ms(u64),
    /// The queue's message lifetime (TTL or retention) plus -1, 0 or 1 ms.
    Lifetime(i8),
    /// The queue's `max_delay_ms` plus -1, 0 or 1 ms.
    MaxDelay(i8),
}

/// A receipt, chosen when the step runs from the deliveries seen so far.
#[derive(Clone, Debug)]
enum Pick {
    /// One of the queue's last [`RECENT_RECEIPTS`] deliveries (mostly current).
    Recent(Index),
    /// Any delivery of the queue so far (often stale).
    Any(Index),
    /// Made up: a small id and a delivery count.
    Bogus { id: u64, delivery: u32 },
}

/// Where a patch points a queue's dead letters.
#[derive(Clone, Copy, Debug)]
enum DlqChoice {
    /// Nowhere: detach the dead-letter queue.
    Detach,
    /// To this queue (missing or not).
    To(Target),
    /// To the queue being updated (refused).
    Itself,
}

/// One option a patch sets; some values break a rule.
#[derive(Clone, Debug)]
enum PatchField {
    Visibility(u64),
    MaxDeliveries(u32),
    DeadLetterQueue(DlqChoice),
    Backoff { min: u64, max: u64 },
    Ttl(Option<u64>),
    Retention(u64),
    MaxLength(Option<u64>),
    MaxBytes(Option<u64>),
    Overflow(Overflow),
    MaxMessageBytes(u64),
    DefaultDelay(DelaySpec),
    MaxDelay(u64),
    DedupWindow(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Enqueue {
        queue: Target,
        messages: Vec<MessageSpec>,
    },
    Receive {
        queue: Target,
        max: u32,
        visibility_ms: Option<u64>,
        max_bytes: Option<u64>,
        consumer: u8,
    },
    Ack {
        queue: Target,
        picks: Vec<Pick>,
    },
    Nack {
        queue: Target,
        picks: Vec<Pick>,
        delay: Option<DelaySpec>,
        reason: Option<u8>,
    },
    Extend {
        queue: Target,
        picks: Vec<Pick>,
        visibility_ms: u64,
    },
    Release {
        queue: Target,
        picks: Vec<Pick>,
    },
    Tick,
    Redrive {
        dlq: Target,
        max: u32,
    },
    Purge {
        queue: Target,
    },
    Update {
        queue: Target,
        patch: Vec<PatchField>,
    },
    /// Deletes a queue and, if `recreate` and the delete went through,
    /// creates it again at once with its scenario config (not in a batch).
    Delete {
        queue: Target,
        recreate: bool,
    },
    /// Creates a queue of the scenario with its config: the first one that
    /// is missing, or else the one `which` picks (then a no-op, or refused
    /// when an update changed its config).
    Create {
        which: Index,
    },
    Register {
        node: NodeId,
        incarnation: u64,
        cluster_id: u64,
    },
    Batch(Vec<Op>),
    /// Moves the test's clock forward; no command.
    Advance(u64),
    /// Moves the test's clock to just before, at or just after (offset -1, 0
    /// or 1 ms) an instant where something changes: a lease deadline, a
    /// message's visibility or expiry, a dedup window's end. Boundaries are
    /// where `<` and `<=` differ.
    AdvanceToEvent {
        which: Index,
        offset: i8,
    },
}

#[derive(Clone, Debug)]
struct Step {
    op: Op,
    /// How far the command's `now` lags the test's clock (a new leader whose
    /// clock is behind).
    lag_ms: u64,
}

#[derive(Clone, Debug)]
struct Scenario {
    /// One or two main queues, each dead-lettering into the DLQ or not.
    mains: Vec<(QueueConfig, bool)>,
    dlq: QueueConfig,
    steps: Vec<Step>,
}

fn config() -> impl Strategy<Value = QueueConfig> {
    let defaults = QueueConfig::default();
    // Off (a zero minimum turns it off whatever the maximum), small, or the
    // default one.
    let backoff = prop_oneof![
        3 => Just((0u64, 0u64)),
        1 => (1u64..=8_000).prop_map(|max| (0, max)),
        2 => (1u64..=1_000).prop_flat_map(|min| (Just(min), min..=min.max(100) * 8)),
        1 => Just((defaults.retry_backoff_min_ms, defaults.retry_backoff_max_ms)),
    ];
    (
        1_000u64..=5_000,
        0u32..=4,
        backoff,
        prop::option::weighted(0.4, 2_000u64..=30_000),
        prop::option::weighted(0.25, 60_000u64..=180_000),
        1_000u64..=10_000,
        prop_oneof![4 => Just(0u64), 1 => 1u64..=2_000],
        (
            prop::option::weighted(0.3, 2u64..=12),
            prop::option::weighted(0.15, 10u64..=60),
            prop_oneof![Just(Overflow::Reject), Just(Overflow::DropOldest)],
        ),
    )
        .prop_map(
            move |(
                visibility,
                max_deliveries,
                (backoff_min, backoff_max),
                ttl,
                retention,
                dedup,
                delay,
                (max_length, max_bytes, overflow),
            )| {
                QueueConfig {
                    max_length,
                    max_bytes,
                    overflow,
                    visibility_timeout_ms: visibility,
                    max_deliveries,
                    retry_backoff_min_ms: backoff_min,
                    retry_backoff_max_ms: backoff_max,
                    message_ttl_ms: ttl,
                    retention_ms: retention.unwrap_or(defaults.retention_ms),
                    dedup_window_ms: dedup,
                    default_delay_ms: delay,
                    max_delay_ms: MAX_DELAY_MS,
                    ..defaults.clone()
                }
            },
        )
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        16 => (0usize..2).prop_map(Target::Main),
        3 => Just(Target::Dlq),
        1 => Just(Target::Missing),
    ]
}

/// Mostly a delay in `fixed`, sometimes one at a limit of the queue.
fn delay(fixed: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = DelaySpec> {
    prop_oneof![
        8 => fixed.prop_map(DelaySpec::Ms),
        1 => (-1i8..=1).prop_map(DelaySpec::Lifetime),
        1 => (-1i8..=1).prop_map(DelaySpec::MaxDelay),
    ]
}

fn message_spec() -> impl Strategy<Value = MessageSpec> {
    let delay = prop_oneof![
        10 => Just(None),
        4 => delay(0..=8_000).prop_map(Some),
        1 => (MAX_DELAY_MS + 1..=2 * MAX_DELAY_MS).prop_map(|ms| Some(DelaySpec::Ms(ms))),
    ];
    (
        prop::option::weighted(0.3, 0u8..4),
        prop::option::weighted(0.35, 0u8..3),
        delay,
    )
        .prop_map(|(dedup, group, delay)| MessageSpec {
            dedup,
            group,
            delay,
        })
}

fn picks() -> impl Strategy<Value = Vec<Pick>> {
    let pick = prop_oneof![
        5 => any::<Index>().prop_map(Pick::Recent),
        3 => any::<Index>().prop_map(Pick::Any),
        1 => (1u64..=30, 0u32..=5).prop_map(|(id, delivery)| Pick::Bogus { id, delivery }),
    ];
    prop::collection::vec(pick, 1..=4)
}

fn patch_field() -> impl Strategy<Value = PatchField> {
    let dead_letter_queue = prop_oneof![
        3 => Just(DlqChoice::Detach),
        4 => Just(DlqChoice::To(Target::Dlq)),
        2 => (0usize..2).prop_map(|i| DlqChoice::To(Target::Main(i))),
        1 => Just(DlqChoice::To(Target::Missing)),
        1 => Just(DlqChoice::Itself),
    ];
    let backoff = prop_oneof![
        1 => Just((0u64, 0u64)),
        1 => (1u64..=8_000).prop_map(|max| (0, max)),
        2 => (1u64..=1_000, 1_000u64..=8_000),
        1 => Just((1_000u64, 60_000u64)),
        1 => (2_000u64..=3_000, 1u64..=1_000),
    ];
    prop_oneof![
        2 => prop_oneof![9 => 1_000u64..=5_000, 1 => Just(10u64)].prop_map(PatchField::Visibility),
        2 => (0u32..=4).prop_map(PatchField::MaxDeliveries),
        2 => dead_letter_queue.prop_map(PatchField::DeadLetterQueue),
        2 => backoff.prop_map(|(min, max)| PatchField::Backoff { min, max }),
        2 => prop_oneof![
            2 => Just(None),
            5 => (2_000u64..=30_000).prop_map(Some),
            1 => Just(Some(500u64)),
        ]
        .prop_map(PatchField::Ttl),
        1 => prop_oneof![5 => 60_000u64..=180_000, 1 => Just(10u64)].prop_map(PatchField::Retention),
        1 => prop_oneof![2 => Just(None), 4 => (1u64..=12).prop_map(Some), 1 => Just(Some(0u64))]
            .prop_map(PatchField::MaxLength),
        1 => prop_oneof![2 => Just(None), 4 => (10u64..=60).prop_map(Some), 1 => Just(Some(0u64))]
            .prop_map(PatchField::MaxBytes),
        1 => prop_oneof![Just(Overflow::Reject), Just(Overflow::DropOldest)]
            .prop_map(PatchField::Overflow),
        1 => prop_oneof![1 => 8u64..=16, 2 => Just(1024 * 1024), 1 => Just(0u64)]
            .prop_map(PatchField::MaxMessageBytes),
        2 => prop_oneof![1 => Just(DelaySpec::Ms(0)), 2 => delay(1..=3_000)]
            .prop_map(PatchField::DefaultDelay),
        1 => prop_oneof![3 => Just(MAX_DELAY_MS), 2 => 0u64..MAX_DELAY_MS, 1 => Just(MAX_RETENTION_MS + 1)]
            .prop_map(PatchField::MaxDelay),
        1 => prop_oneof![4 => 1_000u64..=10_000, 1 => Just(0u64)].prop_map(PatchField::DedupWindow),
    ]
}

fn patch() -> impl Strategy<Value = Vec<PatchField>> {
    prop_oneof![
        1 => Just(Vec::new()),
        6 => prop::collection::vec(patch_field(), 1..=1),
        3 => prop::collection::vec(patch_field(), 2..=3),
    ]
}

fn leaf_op() -> impl Strategy<Value = Op> {
    let messages = prop_oneof![
        30 => prop::collection::vec(message_spec(), 1..=4),
        1 => Just(Vec::new()),
    ];
    let max = prop_oneof![20 => 1u32..=5, 4 => 6u32..=20, 1 => Just(0u32)];
    let receive_visibility = prop_oneof![
        6 => Just(None),
        4 => (1_000u64..=6_000).prop_map(Some),
        1 => Just(Some(MIN_VISIBILITY_TIMEOUT_MS - 1)),
    ];
    // Bodies and attributes are a few bytes each: a budget of up to 24
    // bytes stops a receive after one to a few messages.
    let budget = prop_oneof![
        14 => Just(None),
        5 => (1u64..=24).prop_map(Some),
        1 => Just(Some(0u64)),
        1 => Just(Some(u64::MAX)),
    ];
    let nack_delay = prop_oneof![
        5 => Just(None),
        4 => delay(0..=3_000).prop_map(Some),
        1 => Just(Some(DelaySpec::Ms(MAX_DELAY_MS + 1))),
    ];
    let extend_visibility = prop_oneof![12 => 1_000u64..=6_000, 1 => Just(0u64)];
    let redrive_max = prop_oneof![6 => 1u32..=5, 1 => Just(0u32)];
    let register = (
        1u64..=3,
        select(vec![0u64, 11, 12]),
        select(vec![0u64, 7, 8]),
    );
    // A delete wipes a queue's messages: mostly try the dead-letter queue
    // (refused while in use) or a missing one.
    let doomed = prop_oneof![
        2 => (0usize..2).prop_map(Target::Main),
        2 => Just(Target::Dlq),
        1 => Just(Target::Missing),
    ];
    // Receives take from the dead-letter queue a little more often than
    // other commands name it, so that dead letters are delivered.
    let source = prop_oneof![
        14 => (0usize..2).prop_map(Target::Main),
        5 => Just(Target::Dlq),
        1 => Just(Target::Missing),
    ];
    prop_oneof![
        25 => (target(), messages).prop_map(|(queue, messages)| Op::Enqueue { queue, messages }),
        22 => (source, max, receive_visibility, budget, 0u8..3).prop_map(
            |(queue, max, visibility_ms, max_bytes, consumer)| Op::Receive {
                queue, max, visibility_ms, max_bytes, consumer
            }
        ),
        12 => (target(), picks()).prop_map(|(queue, picks)| Op::Ack { queue, picks }),
        6 => (target(), picks(), nack_delay, prop::option::weighted(0.5, 0u8..3)).prop_map(
            |(queue, picks, delay, reason)| Op::Nack { queue, picks, delay, reason }
        ),
        5 => (target(), picks(), extend_visibility).prop_map(
            |(queue, picks, visibility_ms)| Op::Extend { queue, picks, visibility_ms }
        ),
        4 => (target(), picks()).prop_map(|(queue, picks)| Op::Release { queue, picks }),
        6 => Just(Op::Tick),
        3 => (prop_oneof![4 => Just(Target::Dlq), 1 => target()], redrive_max)
            .prop_map(|(dlq, max)| Op::Redrive { dlq, max }),
        1 => target().prop_map(|queue| Op::Purge { queue }),
        2 => (target(), patch()).prop_map(|(queue, patch)| Op::Update { queue, patch }),
        1 => (doomed, prop::bool::weighted(0.9))
            .prop_map(|(queue, recreate)| Op::Delete { queue, recreate }),
        1 => any::<Index>().prop_map(|which| Op::Create { which }),
        1 => register.prop_map(|(node, incarnation, cluster_id)| Op::Register {
            node, incarnation, cluster_id
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let jump = prop_oneof![
        6 => 0u64..=500,
        4 => 500u64..=6_000,
        2 => 6_000u64..=40_000,
        1 => 40_000u64..=400_000,
    ];
    prop_oneof![
        80 => leaf_op(),
        12 => jump.prop_map(Op::Advance),
        8 => (any::<Index>(), -1i8..=1)
            .prop_map(|(which, offset)| Op::AdvanceToEvent { which, offset }),
        3 => prop::collection::vec(leaf_op(), 2..=4).prop_map(Op::Batch),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let step = (op(), prop_oneof![12 => Just(0u64), 1 => 1u64..=3_000])
        .prop_map(|(op, lag_ms)| Step { op, lag_ms });
    // Dead-letter queues mostly keep their messages as long as the default
    // retention, so that dead letters live to be delivered and redriven.
    let dlq = (config(), prop::bool::weighted(0.7)).prop_map(|(config, keep)| QueueConfig {
        message_ttl_ms: config.message_ttl_ms.filter(|_| !keep),
        retention_ms: if keep {
            QueueConfig::default().retention_ms
        } else {
            config.retention_ms
        },
        ..config
    });
    (
        prop::collection::vec((config(), prop::bool::weighted(0.7)), 1..=2),
        dlq,
        prop::collection::vec(step, 1..=300),
    )
        .prop_map(|(mains, dlq, steps)| Scenario { mains, dlq, steps })
}

// ---------------------------------------------------------------------------
// Coverage.
// ---------------------------------------------------------------------------

/// Every transition the generator should reach, by the name [`Coverage`]
/// counts it under.
const TRANSITIONS: &[&str] = &[
    "queue full",
    "dropped oldest",
    "duplicate enqueue",
    "delayed enqueue",
    "delay refused for reaching the TTL",
    "grouped delivery",
    "redelivery",
    "redelivery behind an earlier-ready message",
    "delivery after a release",
    "receive cut by its byte budget",
    "ack",
    "nack",
    "extend",
    "release",
    "stale receipt",
    "unknown receipt",
    "stale release",
    "unknown release",
    "expired by receive",
    "expired by tick",
    "leased message kept past its TTL",
    "dedup id trimmed",
    "dead-lettered to a DLQ",
    "dropped at max_deliveries (no DLQ)",
    "dead letter delivered",
    "redriven",
    "purged",
    "purge kept a leased message",
    "purge cleared a dedup entry",
    "update applied",
    "empty update applied",
    "update refused",
    "queue deleted",
    "delete refused: DLQ in use",
    "node registered",
    "invalid argument",
    "missing queue",
    "lagging now",
];

/// How often each interesting transition happened, to show that the
/// generator reaches them.
#[derive(Debug, Default)]
struct Coverage(BTreeMap<&'static str, u64>);

impl Coverage {
    fn add(&mut self, transition: &'static str, count: u64) {
        assert!(
            TRANSITIONS.contains(&transition),
            "unknown transition {transition}"
        );
        *self.0.entry(transition).or_default() += count;
    }

    fn merge(&mut self, other: &Coverage) {
        for (transition, count) in &other.0 {
            self.add(transition, *count);
        }
    }

    /// The transitions that never happened.
    fn missing(&self) -> Vec<&'static str> {
        TRANSITIONS
            .iter()
            .copied()
            .filter(|t| self.0.get(t).copied().unwrap_or(0) == 0)
            .collect()
    }

    fn receipt<T>(&mut self, what: &'static str, result: &Result<T, Refusal>) {
        match result {
            Ok(_) => self.add(what, 1),
            Err(Refusal::ReceiptStale(_)) if what == "release" => self.add("stale release", 1),
            Err(Refusal::ReceiptUnknown(_)) if what == "release" => self.add("unknown release", 1),
            Err(Refusal::ReceiptStale(_)) => self.add("stale receipt", 1),
            Err(Refusal::ReceiptUnknown(_)) => self.add("unknown receipt", 1),
            Err(_) => {}
        }
    }

    /// A delay refused because it reaches the message lifetime, though
    /// within `max_delay_ms`.
    fn delay_refused(&mut self, pre: &Queues, queue: &QueueName, delay_ms: u64) {
        let Some(config) = pre.get(queue).map(Queue::config) else {
            return;
        };
        if delay_ms > 0 && delay_ms <= config.max_delay_ms && delay_ms >= lifetime_ms(config) {
            self.add("delay refused for reaching the TTL", 1);
        }
    }

    /// Counts one command (not a batch) given the state before and after it.
    fn record(&mut self, command: &Command, response: &Response, pre: &Queues, post: &Queues) {
        let now = post.clock();
        match (command, response) {
            (_, Response::Refused(Refusal::InvalidArgument(_))) => {
                self.add("invalid argument", 1);
                match command {
                    Command::UpdateQueue { .. } => self.add("update refused", 1),
                    Command::Nack {
                        queue,
                        delay_ms: Some(delay),
                        ..
                    } => self.delay_refused(pre, queue, *delay),
                    _ => {}
                }
            }
            (_, Response::Refused(Refusal::QueueNotFound(_))) => self.add("missing queue", 1),
            (_, Response::Refused(Refusal::DeadLetterQueueInUse { .. })) => {
                self.add("delete refused: DLQ in use", 1)
            }
            (Command::UpdateQueue { patch, .. }, Response::QueueUpdated { .. }) => {
                self.add("update applied", 1);
                self.add("empty update applied", u64::from(patch.is_empty()));
            }
            (Command::DeleteQueue { .. }, Response::QueueDeleted { .. }) => {
                self.add("queue deleted", 1)
            }
            (Command::RegisterNode { .. }, Response::NodeRegistered) => {
                self.add("node registered", 1)
            }
            (
                Command::Enqueue {
                    queue, messages, ..
                },
                Response::Enqueued(results),
            ) => {
                for (new, result) in messages.iter().zip(results) {
                    match result {
                        Ok(enqueued) if enqueued.duplicate => self.add("duplicate enqueue", 1),
                        Ok(_) if new.delay_ms.is_some_and(|d| d > 0) => {
                            self.add("delayed enqueue", 1)
                        }
                        Ok(_) => {}
                        Err(Refusal::QueueFull { .. }) => self.add("queue full", 1),
                        Err(_) => {
                            self.add("invalid argument", 1);
                            if let Some(delay) = new.delay_ms {
                                self.delay_refused(pre, queue, delay);
                            }
                        }
                    }
                }
            }
            (Command::Receive { .. }, Response::Received { .. }) => {
                self.received(command, response, pre, post, now)
            }
            (Command::Ack { .. }, Response::Acked(results)) => {
                results.iter().for_each(|r| self.receipt("ack", r));
            }
            (Command::Nack { .. }, Response::Nacked(results)) => {
                results.iter().for_each(|r| self.receipt("nack", r));
            }
            (Command::Extend { .. }, Response::Extended(results)) => {
                results.iter().for_each(|r| self.receipt("extend", r));
            }
            (Command::Release { .. }, Response::Released(results)) => {
                results.iter().for_each(|r| self.receipt("release", r));
            }
            (
                Command::Tick { .. },
                Response::Ticked {
                    expired,
                    dedup_trimmed,
                },
            ) => {
                self.add("expired by tick", *expired);
                self.add("dedup id trimmed", *dedup_trimmed);
                let kept = post
                    .iter()
                    .flat_map(Queue::messages)
                    .filter(|m| m.expires_at <= now)
                    .count();
                self.add("leased message kept past its TTL", kept as u64);
            }
            (Command::Redrive { .. }, Response::Redriven { moved, .. }) => {
                self.add("redriven", *moved);
            }
            (Command::Purge { name, .. }, Response::Purged { messages }) => {
                self.add("purged", *messages);
                if let (Some(before), Some(after)) = (pre.get(name), post.get(name)) {
                    self.add("purge kept a leased message", after.len());
                    let cleared = before.dedup_entries().count() - after.dedup_entries().count();
                    self.add("purge cleared a dedup entry", cleared as u64);
                }
            }
            _ => {}
        }
    }

    fn received(
        &mut self,
        command: &Command,
        response: &Response,
        pre: &Queues,
        post: &Queues,
        now: Timestamp,
    ) {
        let (
            Command::Receive { queue, max, .. },
            Response::Received {
                deliveries,
                dead_lettered,
                dropped,
                expired,
            },
        ) = (command, response)
        else {
            return;
        };
        self.add("expired by receive", *expired);
        self.add("dead-lettered to a DLQ", *dead_lettered);
        self.add("dropped at max_deliveries (no DLQ)", dropped.len() as u64);
        for delivery in deliveries {
            self.add("grouped delivery", u64::from(delivery.group.is_some()));
            self.add("redelivery", u64::from(delivery.delivery_count > 1));
            self.add(
                "delivery after a release",
                u64::from(delivery.receipt.delivery > delivery.delivery_count),
            );
            self.add(
                "dead letter delivered",
                u64::from(delivery.dead_letter.is_some()),
            );
        }
        let (Some(before), Some(after)) = (pre.get(queue), post.get(queue)) else {
            return;
        };
        if deliveries.len() < *max as usize
            && first_ready(&after.messages().collect::<Vec<_>>(), now).is_some()
        {
            self.add("receive cut by its byte budget", 1);
        }
        // A message leased before, ready again, that waited behind (or
        // after) a younger message that became ready before it.
        let position = |id: MessageId| deliveries.iter().position(|d| d.id == id);
        let behind = deliveries.iter().enumerate().any(|(i, young)| {
            before.messages().any(|old| {
                old.id < young.id
                    && old.delivery_count > 0
                    && old.visible_at <= now
                    && heads_its_group(before.messages(), old)
                    && match position(old.id) {
                        Some(j) => j > i,
                        None => after.message(old.id).is_some(),
                    }
            })
        });
        self.add(
            "redelivery behind an earlier-ready message",
            u64::from(behind),
        );
    }
}

// ---------------------------------------------------------------------------
// Running a scenario.
// ---------------------------------------------------------------------------

/// A record of the state (what a snapshot holds), by kind and key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Queue(QueueName),
    Message(QueueName, MessageId),
    Dedup(QueueName, String),
}

/// The keys of the queue, message and dedup records that differ between two
/// states.
fn changed_keys(pre: &Queues, post: &Queues) -> Vec<Key> {
    let names: BTreeSet<&QueueName> = pre.iter().chain(post.iter()).map(Queue::name).collect();
    let mut keys = Vec::new();
    for name in names {
        let (before, after) = (pre.get(name), post.get(name));
        if before.map(|q| &q.meta) != after.map(|q| &q.meta) {
            keys.push(Key::Queue(name.clone()));
        }
        let ids: BTreeSet<MessageId> = before
            .into_iter()
            .chain(after)
            .flat_map(|q| q.messages().map(|m| m.id))
            .collect();
        for id in ids {
            if before.and_then(|q| q.message(id)) != after.and_then(|q| q.message(id)) {
                keys.push(Key::Message(name.clone(), id));
            }
        }
        let dedup_ids: BTreeSet<&str> = before
            .into_iter()
            .chain(after)
            .flat_map(|q| q.dedup_entries().map(|(id, _)| id))
            .collect();
        for dedup_id in dedup_ids {
            let entry = |q: &Queue| q.dedup_entry(dedup_id).cloned();
            if before.and_then(entry) != after.and_then(entry) {
                keys.push(Key::Dedup(name.clone(), dedup_id.to_string()));
            }
        }
    }
    keys
}

/// The real queues, the model and the observer, driven step by step.
struct Harness {
    real: Queues,
    model: Model,
    observer: Observer,
    coverage: Coverage,
    /// The test's clock; commands carry it, less their lag.
    now: u64,
    mains: Vec<QueueName>,
    dlq: QueueName,
    /// Each queue of the scenario with the config it is created with.
    creates: Vec<(QueueName, QueueConfig)>,
    /// Every receipt handed out, per queue, oldest first.
    receipts: HashMap<QueueName, Vec<Receipt>>,
    /// One line per command or time jump, for failure messages.
    log: Vec<String>,
    /// The step being run (0 during setup).
    step: usize,
    next_body: u64,
}

impl Harness {
    fn new(mains: usize) -> Self {
        Harness {
            real: Queues::new(),
            model: Model::default(),
            observer: Observer::new(),
            coverage: Coverage::default(),
            now: START_MS,
            mains: (1..=mains)
                .map(|i| QueueName::new(format!("q{i}")))
                .collect(),
            dlq: QueueName::new("dlq"),
            creates: Vec::new(),
            receipts: HashMap::new(),
            log: Vec::new(),
            step: 0,
            next_body: 0,
        }
    }

    fn target(&self, target: Target) -> QueueName {
        match target {
            Target::Main(i) => self.mains[i % self.mains.len()].clone(),
            Target::Dlq => self.dlq.clone(),
            Target::Missing => QueueName::new(MISSING_QUEUE),
        }
    }

    fn pick(&self, queue: &QueueName, pick: &Pick) -> Receipt {
        let pool = self.receipts.get(queue).map_or(&[][..], Vec::as_slice);
        match pick {
            Pick::Recent(index) if !pool.is_empty() => {
                let recent = &pool[pool.len().saturating_sub(RECENT_RECEIPTS)..];
                recent[index.index(recent.len())]
            }
            Pick::Any(index) if !pool.is_empty() => pool[index.index(pool.len())],
            Pick::Bogus { id, delivery } => Receipt {
                message: MessageId(*id),
                delivery: *delivery,
            },
            _ => Receipt {
                message: MessageId(1_000_000),
                delivery: 1,
            },
        }
    }

    /// A delay for `queue`, at its limits as its config is now.
    fn delay(&self, queue: &QueueName, delay: DelaySpec) -> u64 {
        let config = self.model.queue(queue).map(|q| &q.meta.config);
        match delay {
            DelaySpec::Ms(ms) => ms,
            DelaySpec::Lifetime(offset) => config
                .map_or(SECOND_MS, lifetime_ms)
                .saturating_add_signed(offset.into()),
            DelaySpec::MaxDelay(offset) => config
                .map_or(MAX_DELAY_MS, |c| c.max_delay_ms)
                .saturating_add_signed(offset.into()),
        }
    }

    fn patch(&self, queue: &QueueName, fields: &[PatchField]) -> QueueConfigPatch {
        let mut patch = QueueConfigPatch::default();
        for field in fields {
            match field {
                PatchField::Visibility(ms) => patch.visibility_timeout_ms = Some(*ms),
                PatchField::MaxDeliveries(max) => patch.max_deliveries = Some(*max),
                PatchField::DeadLetterQueue(choice) => {
                    patch.dead_letter_queue = Some(match choice {
                        DlqChoice::Detach => None,
                        DlqChoice::To(target) => Some(self.target(*target)),
                        DlqChoice::Itself => Some(queue.clone()),
                    });
                }
                PatchField::Backoff { min, max } => {
                    patch.retry_backoff_min_ms = Some(*min);
                    patch.retry_backoff_max_ms = Some(*max);
                }
                PatchField::Ttl(ttl) => patch.message_ttl_ms = Some(*ttl),
                PatchField::Retention(ms) => patch.retention_ms = Some(*ms),
                PatchField::MaxLength(max) => patch.max_length = Some(*max),
                PatchField::MaxBytes(max) => patch.max_bytes = Some(*max),
                PatchField::Overflow(overflow) => patch.overflow = Some(*overflow),
                PatchField::MaxMessageBytes(max) => patch.max_message_bytes = Some(*max),
                PatchField::DefaultDelay(delay) => {
                    patch.default_delay_ms = Some(self.delay(queue, *delay));
                }
                PatchField::MaxDelay(ms) => patch.max_delay_ms = Some(*ms),
                PatchField::DedupWindow(ms) => patch.dedup_window_ms = Some(*ms),
            }
        }
        patch
    }

    /// Turns a generated operation into a command, drawing receipts and
    /// bodies now.
    fn command(&mut self, op: &Op, now: Timestamp) -> Command {
        match op {
            Op::Enqueue { queue, messages } => {
                let queue = self.target(*queue);
                let messages = messages
                    .iter()
                    .map(|spec| {
                        self.next_body += 1;
                        let mut attributes = BTreeMap::new();
                        if self.next_body.is_multiple_of(3) {
                            attributes.insert("seq".to_string(), self.next_body.to_string());
                        }
                        NewMessage {
                            body: Bytes::from(format!("m{}", self.next_body)),
                            attributes,
                            dedup_id: spec.dedup.map(|d| format!("d{d}")),
                            group: spec.group.map(|g| format!("g{g}")),
                            delay_ms: spec.delay.map(|d| self.delay(&queue, d)),
                        }
                    })
                    .collect();
                Command::Enqueue {
                    queue,
                    messages,
                    now,
                }
            }
            Op::Receive {
                queue,
                max,
                visibility_ms,
                max_bytes,
                consumer,
            } => Command::Receive {
                queue: self.target(*queue),
                max: *max,
                visibility_ms: *visibility_ms,
                max_bytes: *max_bytes,
                consumer: format!("c{consumer}"),
                now,
            },
            Op::Ack { queue, picks } => {
                let queue = self.target(*queue);
                let receipts = picks.iter().map(|p| self.pick(&queue, p)).collect();
                Command::Ack { queue, receipts }
            }
            Op::Nack {
                queue,
                picks,
                delay,
                reason,
            } => {
                let queue = self.target(*queue);
                let receipts = picks.iter().map(|p| self.pick(&queue, p)).collect();
                let reason = reason.map(|r| match r {
                    0 => "timeout".to_string(),
                    1 => "bad input".to_string(),
                    _ => "x".repeat(MAX_REASON_BYTES + 1),
                });
                let delay_ms = delay.map(|d| self.delay(&queue, d));
                Command::Nack {
                    queue,
                    receipts,
                    delay_ms,
                    reason,
                    now,
                }
            }
            Op::Extend {
                queue,
                picks,
                visibility_ms,
            } => {
                let queue = self.target(*queue);
                let receipts = picks.iter().map(|p| self.pick(&queue, p)).collect();
                Command::Extend {
                    queue,
                    receipts,
                    visibility_ms: *visibility_ms,
                    now,
                }
            }
            Op::Release { queue, picks } => {
                let queue = self.target(*queue);
                let receipts = picks.iter().map(|p| self.pick(&queue, p)).collect();
                Command::Release { queue, receipts }
            }
            Op::Tick => Command::Tick { now },
            Op::Redrive { dlq, max } => Command::Redrive {
                dlq: self.target(*dlq),
                max: *max,
                now,
            },
            Op::Purge { queue } => Command::Purge {
                name: self.target(*queue),
                now,
            },
            Op::Update { queue, patch } => {
                let name = self.target(*queue);
                let patch = self.patch(&name, patch);
                Command::UpdateQueue { name, patch }
            }
            Op::Delete { queue, .. } => Command::DeleteQueue {
                name: self.target(*queue),
            },
            Op::Create { which } => {
                let missing = self
                    .creates
                    .iter()
                    .find(|(name, _)| self.model.queue(name).is_none());
                let (name, config) =
                    missing.unwrap_or(&self.creates[which.index(self.creates.len())]);
                Command::CreateQueue {
                    name: name.clone(),
                    config: config.clone(),
                    now,
                }
            }
            Op::Register {
                node,
                incarnation,
                cluster_id,
            } => Command::RegisterNode {
                node: *node,
                incarnation: *incarnation,
                cluster_id: *cluster_id,
            },
            Op::Batch(ops) => Command::Batch(ops.iter().map(|op| self.command(op, now)).collect()),
            Op::Advance(_) | Op::AdvanceToEvent { .. } => {
                unreachable!("an advance is not a command")
            }
        }
    }

    /// Remembers the receipts a response handed out.
    fn remember_receipts(&mut self, command: &Command, response: &Response) {
        match (command, response) {
            (Command::Batch(commands), Response::Batch(responses)) => {
                for (command, response) in commands.iter().zip(responses) {
                    self.remember_receipts(command, response);
                }
            }
            (Command::Receive { queue, .. }, Response::Received { deliveries, .. }) => {
                let pool = self.receipts.entry(queue.clone()).or_default();
                pool.extend(deliveries.iter().map(|d| d.receipt));
            }
            _ => {}
        }
    }

    fn setup(&mut self, scenario: &Scenario) -> Result<(), String> {
        let now = Timestamp(self.now);
        let dlq = self.dlq.clone();
        self.creates = vec![(dlq.clone(), scenario.dlq.clone())];
        for (name, (config, dead_letters)) in self.mains.clone().into_iter().zip(&scenario.mains) {
            let config = QueueConfig {
                dead_letter_queue: dead_letters.then(|| dlq.clone()),
                ..config.clone()
            };
            self.creates.push((name, config));
        }
        let mut creates: Vec<Command> = self
            .creates
            .iter()
            .map(|(name, config)| Command::CreateQueue {
                name: name.clone(),
                config: config.clone(),
                now,
            })
            .collect();
        // The same create again is a no-op.
        creates.push(creates[0].clone());
        for command in creates {
            self.apply(command)?;
        }
        Ok(())
    }

    fn run_step(&mut self, step: &Step) -> Result<(), String> {
        match &step.op {
            Op::Advance(ms) => {
                self.now += ms;
                self.note(format!("advance +{ms} ms to {}", self.now));
                return Ok(());
            }
            Op::AdvanceToEvent { which, offset } => {
                let events = self.model.future_events(self.now);
                if !events.is_empty() {
                    let (at, what) = &events[which.index(events.len())];
                    let target = at.0.saturating_add_signed(i64::from(*offset)).max(self.now);
                    self.now = target;
                    self.note(format!(
                        "advance to {target} ({what} at {} {offset:+})",
                        at.0
                    ));
                }
                return Ok(());
            }
            _ => {}
        }
        if step.lag_ms > 0 {
            self.coverage.add("lagging now", 1);
        }
        let now = Timestamp(self.now.saturating_sub(step.lag_ms));
        let command = self.command(&step.op, now);
        self.apply(command)?;
        if let Op::Delete {
            queue,
            recreate: true,
        } = step.op
        {
            let name = self.target(queue);
            let deleted = self.model.queue(&name).is_none();
            let config = self.creates.iter().find(|(n, _)| *n == name);
            if let Some((_, config)) = config.filter(|_| deleted) {
                let config = config.clone();
                self.apply(Command::CreateQueue { name, config, now })?;
            }
        }
        Ok(())
    }

    /// Applies one command to both sides and checks everything.
    fn apply(&mut self, command: Command) -> Result<(), String> {
        self.note(describe(&command));
        let drops_before = self.model.overflow_drops();
        let expected = self.model.apply(&command);
        // Saturating: a delete takes its queue's drops out of the sum.
        let drops = self.model.overflow_drops().saturating_sub(drops_before);
        self.coverage.add("dropped oldest", drops);
        let pre = self.real.clone();
        let actual = self.real.apply(command.clone());
        if normalize(actual.clone()) != expected {
            return Err(format!(
                "response differs\n  real:  {actual:?}\n  model: {expected:?}"
            ));
        }
        self.real
            .check_indexes()
            .map_err(|err| format!("check_indexes: {err}"))?;
        self.check_changes(&pre)?;
        self.compare_state()?;
        self.compare_wakeups()?;
        self.compare_stats(Timestamp(self.model.clock))?;
        self.observe(&command, &actual, pre)?;
        self.remember_receipts(&command, &actual);
        Ok(())
    }

    /// Hands each command, with the state before and after it, to the
    /// observer and the coverage. A batch is replayed command by command on
    /// a copy of the state before it, which must end where the batch did.
    fn observe(
        &mut self,
        command: &Command,
        response: &Response,
        pre: Queues,
    ) -> Result<(), String> {
        let Harness {
            real,
            observer,
            coverage,
            ..
        } = self;
        let mut check = |command: &Command, response: &Response, pre: &Queues, post: &Queues| {
            observer
                .observe(command, response, pre, post)
                .map_err(|err| format!("invariant broken by {command}: {err}"))?;
            coverage.record(command, response, pre, post);
            Ok::<(), String>(())
        };
        let (Command::Batch(commands), Response::Batch(responses)) = (command, response) else {
            return check(command, response, &pre, real);
        };
        let mut state = pre;
        for (command, response) in commands.iter().zip(responses) {
            let before = state.clone();
            let alone = state.apply(command.clone());
            ensure!(
                alone == *response,
                "{command} answered {response:?} in a batch, but {alone:?} alone"
            );
            check(command, response, &before, &state)?;
        }
        ensure!(
            state.digest() == real.digest(),
            "a batch's commands applied one by one end in another state than the batch"
        );
        Ok(())
    }

    /// The digest changed exactly when the state did.
    fn check_changes(&mut self, pre: &Queues) -> Result<(), String> {
        let changed = changed_keys(pre, &self.real);
        // The digest covers the globals and every record, and nothing else.
        let globals_changed = pre.globals() != self.real.globals();
        let digest_changed = pre.digest() != self.real.digest();
        ensure!(
            digest_changed == (globals_changed || !changed.is_empty()),
            "the digest {} though the globals {} and {} records changed",
            if digest_changed { "changed" } else { "stayed" },
            if globals_changed { "changed" } else { "stayed" },
            changed.len()
        );
        Ok(())
    }

    /// The globals (clock, id counter, cluster record), each queue's
    /// metadata, messages and dedup entries.
    fn compare_state(&self) -> Result<(), String> {
        let (globals, model_globals) = (self.real.globals(), self.model.globals());
        ensure!(
            globals == model_globals,
            "globals differ\n  real:  {globals:?}\n  model: {model_globals:?}"
        );
        let names: Vec<&QueueName> = self.real.iter().map(|q| q.name()).collect();
        let model_names: Vec<&QueueName> = self.model.queues.iter().map(|q| &q.meta.name).collect();
        ensure!(
            names == model_names,
            "queues {names:?}, model has {model_names:?}"
        );
        for expected in &self.model.queues {
            let name = &expected.meta.name;
            let queue = self.real.get(name).expect("listed above");
            ensure!(
                queue.meta == expected.meta,
                "queue {name} meta differs\n  real:  {:?}\n  model: {:?}",
                queue.meta,
                expected.meta
            );
            let messages: Vec<&Message> = queue.messages().collect();
            let ids: Vec<u64> = messages.iter().map(|m| m.id.0).collect();
            let model_ids: Vec<u64> = expected.messages.iter().map(|m| m.id.0).collect();
            ensure!(
                ids == model_ids,
                "queue {name} holds ids {ids:?}, model {model_ids:?}"
            );
            for (message, model) in messages.iter().zip(&expected.messages) {
                ensure!(
                    *message == model,
                    "queue {name} message {} differs\n  real:  {message:?}\n  model: {model:?}",
                    model.id
                );
            }
            let mut dedup: Vec<(String, DedupEntry)> = queue
                .dedup_entries()
                .map(|(id, entry)| (id.to_string(), entry.clone()))
                .collect();
            dedup.sort_by(|a, b| a.0.cmp(&b.0));
            let mut model_dedup = expected.dedup.clone();
            model_dedup.sort_by(|a, b| a.0.cmp(&b.0));
            ensure!(
                dedup == model_dedup,
                "queue {name} dedup entries differ\n  real:  {dedup:?}\n  model: {model_dedup:?}"
            );
        }
        Ok(())
    }

    /// When the node would act next: the next tick is due exactly when the
    /// model says, and no queue's `next_visible_at` (what a waiting receive
    /// sleeps until) is later than the first instant a receive would find a
    /// message, the earliest `visible_at` of a group head.
    fn compare_wakeups(&self) -> Result<(), String> {
        let (due, model_due) = (expire::next_due(&self.real), self.model.next_due());
        ensure!(
            due == model_due,
            "the next tick is due at {due:?}, the model says at {model_due:?}"
        );
        let now = Timestamp(self.model.clock);
        for queue in &self.model.queues {
            let name = &queue.meta.name;
            let wake = self.real.get(name).expect("compared").next_visible_at(now);
            let ready_at = queue
                .messages
                .iter()
                .filter(|m| heads_its_group(queue.messages.iter(), m))
                .map(|m| m.visible_at.max(now))
                .min();
            let in_time = match (wake, ready_at) {
                (None, None) => true,
                (Some(wake), Some(ready_at)) => wake <= ready_at,
                _ => false,
            };
            ensure!(
                in_time,
                "next_visible_at({now}) of {name} is {wake:?}, but a receive first finds a message at {ready_at:?}"
            );
        }
        Ok(())
    }

    fn compare_stats(&self, at: Timestamp) -> Result<(), String> {
        for queue in &self.model.queues {
            let name = &queue.meta.name;
            let stats = self
                .real
                .stats(name, at)
                .map_err(|err| format!("stats of {name}: {err}"))?;
            let expected = self.model.stats(name, at);
            ensure!(
                stats == expected,
                "stats of {name} at {at} differ\n  real:  {stats:?}\n  model: {expected:?}"
            );
        }
        Ok(())
    }

    fn note(&mut self, text: String) {
        let label = match self.step {
            0 => "setup".to_string(),
            step => format!("{step}"),
        };
        self.log.push(format!("{label:>5}  {text}"));
    }

    /// A failure message: the step, what went wrong, the commands before.
    fn report(&self, total: usize, error: &str) -> String {
        let mut text = format!("failed at step {} of {total}\n{error}\nsteps:\n", self.step);
        let skip = self.log.len().saturating_sub(60);
        if skip > 0 {
            let _ = writeln!(text, "  ... {skip} earlier lines");
        }
        for line in self.log.iter().skip(skip) {
            let _ = writeln!(text, "  {line}");
        }
        text
    }
}

/// The options a patch sets, as `name=value`.
fn describe_patch(patch: &QueueConfigPatch) -> String {
    let QueueConfigPatch {
        visibility_timeout_ms,
        max_deliveries,
        dead_letter_queue,
        retry_backoff_min_ms,
        retry_backoff_max_ms,
        message_ttl_ms,
        retention_ms,
        max_length,
        max_bytes,
        overflow,
        max_message_bytes,
        default_delay_ms,
        max_delay_ms,
        dedup_window_ms,
    } = patch;
    let mut fields = Vec::new();
    let mut set = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            fields.push(format!("{name}={value}"));
        }
    };
    let show = |value: &dyn std::fmt::Debug| format!("{value:?}");
    set(
        "visibility_timeout_ms",
        visibility_timeout_ms.map(|v| show(&v)),
    );
    set("max_deliveries", max_deliveries.map(|v| show(&v)));
    set(
        "dead_letter_queue",
        dead_letter_queue.as_ref().map(|v| show(v)),
    );
    set(
        "retry_backoff_min_ms",
        retry_backoff_min_ms.map(|v| show(&v)),
    );
    set(
        "retry_backoff_max_ms",
        retry_backoff_max_ms.map(|v| show(&v)),
    );
    set("message_ttl_ms", message_ttl_ms.map(|v| show(&v)));
    set("retention_ms", retention_ms.map(|v| show(&v)));
    set("max_length", max_length.map(|v| show(&v)));
    set("max_bytes", max_bytes.map(|v| show(&v)));
    set("overflow", overflow.map(|v| show(&v)));
    set("max_message_bytes", max_message_bytes.map(|v| show(&v)));
    set("default_delay_ms", default_delay_ms.map(|v| show(&v)));
    set("max_delay_ms", max_delay_ms.map(|v| show(&v)));
    set("dedup_window_ms", dedup_window_ms.map(|v| show(&v)));
    format!("[{}]", fields.join(" "))
}

/// A one-line description of a command with the details that matter here.
fn describe(command: &Command) -> String {
    let receipts = |receipts: &[Receipt]| {
        receipts
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match command {
        Command::Enqueue {
            queue,
            messages,
            now,
        } => {
            let messages: Vec<String> = messages
                .iter()
                .map(|m| {
                    let mut text = String::from_utf8_lossy(&m.body).into_owned();
                    if let Some(dedup) = &m.dedup_id {
                        let _ = write!(text, " dedup={dedup}");
                    }
                    if let Some(group) = &m.group {
                        let _ = write!(text, " group={group}");
                    }
                    if let Some(delay) = m.delay_ms {
                        let _ = write!(text, " delay={delay}");
                    }
                    text
                })
                .collect();
            format!("enqueue {queue} @{} [{}]", now.0, messages.join(", "))
        }
        Command::Receive {
            queue,
            max,
            visibility_ms,
            max_bytes,
            consumer,
            now,
        } => {
            format!(
                "receive {queue} max={max} visibility={visibility_ms:?} max_bytes={max_bytes:?} {consumer} @{}",
                now.0
            )
        }
        Command::Ack { queue, receipts: r } => format!("ack {queue} [{}]", receipts(r)),
        Command::Release { queue, receipts: r } => format!("release {queue} [{}]", receipts(r)),
        Command::Nack {
            queue,
            receipts: r,
            delay_ms,
            reason,
            now,
        } => format!(
            "nack {queue} [{}] delay={delay_ms:?} reason={:?} @{}",
            receipts(r),
            reason.as_ref().map(|r| shorten(r)),
            now.0
        ),
        Command::Extend {
            queue,
            receipts: r,
            visibility_ms,
            now,
        } => {
            format!(
                "extend {queue} [{}] visibility={visibility_ms} @{}",
                receipts(r),
                now.0
            )
        }
        Command::UpdateQueue { name, patch } => {
            format!("update {name} {}", describe_patch(patch))
        }
        Command::RegisterNode {
            node,
            incarnation,
            cluster_id,
        } => format!("register node {node} incarnation {incarnation} cluster {cluster_id}"),
        Command::Batch(commands) => {
            format!(
                "batch [{}]",
                commands.iter().map(describe).collect::<Vec<_>>().join("; ")
            )
        }
        other => other.to_string(),
    }
}

fn shorten(text: &str) -> String {
    if text.len() > 12 {
        format!("{}…({} bytes)", &text[..12], text.len())
    } else {
        text.to_string()
    }
}

/// Runs a scenario; the error says which step failed and how.
fn run(scenario: &Scenario) -> Result<Coverage, String> {
    let mut harness = Harness::new(scenario.mains.len());
    let total = scenario.steps.len();
    harness
        .setup(scenario)
        .map_err(|err| harness.report(total, &err))?;
    for (i, step) in scenario.steps.iter().enumerate() {
        harness.step = i + 1;
        harness
            .run_step(step)
            .map_err(|err| harness.report(total, &err))?;
    }
    // Stats are a read at any `now`: compare them later too, as leases lapse
    // and delays pass.
    let clock = harness.model.clock;
    for later in [0, 1_500, 10_000, 100_000] {
        harness
            .compare_stats(Timestamp(clock + later))
            .map_err(|err| harness.report(total, &format!("at the end: {err}")))?;
    }
    Ok(harness.coverage)
}

/// Random scenarios per run: `PROPTEST_CASES`, or [`DEFAULT_CASES`].
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn queue_matches_the_model_under_random_commands(scenario in scenario()) {
        if let Err(report) = run(&scenario) {
            return Err(TestCaseError::fail(report));
        }
    }
}

#[test]
fn random_commands_reach_every_interesting_transition() {
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let mut total = Coverage::default();
    for _ in 0..COVERAGE_SCENARIOS {
        let scenario = scenario()
            .new_tree(&mut runner)
            .expect("a scenario")
            .current();
        let coverage = run(&scenario).unwrap_or_else(|report| panic!("{report}"));
        total.merge(&coverage);
    }
    println!("{total:#?}");
    assert!(
        total.missing().is_empty(),
        "never happened: {:?}\n{total:#?}",
        total.missing()
    );
}

/// Regression, found by this model: redrive used to append to the source
/// queue without applying its `max_length` (or `max_bytes`). Now a message
/// that does not fit under `reject` stays in the dead-letter queue.
#[test]
fn redrive_never_fills_a_queue_past_its_max_length() {
    let mut queues = Queues::new();
    let dlq = QueueConfig {
        max_deliveries: 0,
        ..QueueConfig::default()
    };
    let source = QueueConfig {
        max_deliveries: 1,
        max_length: Some(1),
        visibility_timeout_ms: 1_000,
        // No retry backoff: the message is ready again when its lease ends.
        retry_backoff_min_ms: 0,
        dead_letter_queue: Some(QueueName::new("dlq")),
        ..QueueConfig::default()
    };
    let commands = [
        Command::CreateQueue {
            name: QueueName::new("dlq"),
            config: dlq,
            now: Timestamp(0),
        },
        Command::CreateQueue {
            name: QueueName::new("q"),
            config: source,
            now: Timestamp(0),
        },
        Command::enqueue("q", ["a"], 0),
        Command::receive("q", 1, 0),
        // The lease ran out after one delivery: "a" moves to the DLQ.
        Command::receive("q", 1, 1_000),
        Command::enqueue("q", ["b"], 1_000),
        Command::Redrive {
            dlq: QueueName::new("dlq"),
            max: 10,
            now: Timestamp(1_000),
        },
    ];
    for command in commands {
        let response = queues.apply(command);
        assert!(response.refusal().is_none(), "{response:?}");
    }
    let held = queues.get(&QueueName::new("q")).expect("queue q").len();
    assert!(held <= 1, "q holds {held} messages, max_length is 1");
    let parked = queues.get(&QueueName::new("dlq")).expect("dlq").len();
    assert_eq!(
        parked, 1,
        "the dead letter that did not fit stays in the DLQ"
    );
}
