//! The queue state machine checked against a simple reference model.
//!
//! [`Model`] implements the semantics documented in `src/queue/` with plain
//! vectors and linear scans: no indexes, no timers, no cleverness, so that it
//! is obviously right. Random command sequences (enqueues with dedup ids,
//! groups and delays; receives; acks, nacks and extends with current, stale
//! and bogus receipts; ticks; redrives; purges; batches; time jumps, and now
//! and then a `now` that lags the clock as after a leader change) run against
//! both [`Queues`] and the model. After every step:
//!
//! - the real response equals the model's (refusal texts aside);
//! - the stored state (clock, queue metadata, every message, every dedup
//!   entry) and the stats equal the model's, and `check_indexes` passes;
//! - [`Observer`] checks invariants from the responses alone, without the
//!   model: ids are never reused, an acked message is never delivered again,
//!   one live lease per message and per group, first deliveries in id order,
//!   no delivery past `max_deliveries` and dead-lettering exactly there,
//!   no delivery past a message's lifetime, dedup within the window returns
//!   the first id.
//!
//! The generator uses small configs (1–5 s leases, 0–4 deliveries, short
//! dedup windows and TTLs, sometimes a retry backoff, a `max_length` or
//! `max_bytes` with either overflow policy) and jumps time both at random and
//! to exactly one millisecond before, at or after the next lease deadline,
//! visibility, expiry or dedup lapse, where `<` and `<=` differ.
//! `random_commands_reach_every_interesting_transition` checks that the
//! generator actually reaches each transition worth testing.
//!
//! A failure names the step, the command, what differed and the commands that
//! led there, followed by proptest's shrunk scenario.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use raftq_storage::command::{Enqueued, Response};
use raftq_storage::queue::config::{MAX_VISIBILITY_TIMEOUT_MS, MIN_VISIBILITY_TIMEOUT_MS};
use raftq_storage::queue::redrive::MAX_REDRIVE;
use raftq_storage::queue::{
    Counters, DeadLetter, DedupEntry, Delivery, Lease, Message, MessageId, NewMessage, Overflow,
    QueueConfig, QueueMeta, QueueName, QueueStats, Queues, Receipt, Timestamp, MAX_BATCH_COMMANDS,
    MAX_ENQUEUE_MESSAGES, MAX_KEY_BYTES, MAX_REASON_BYTES, MAX_RECEIPTS, MAX_RECEIVE,
};
use raftq_storage::{Command, Refusal};

/// Every queue's `max_delay_ms`; larger delays are generated now and then to
/// check that they are refused.
const MAX_DELAY_MS: u64 = 10_000;
/// The clock at the start of every case.
const START_MS: u64 = 1_000_000;
/// Receipts drawn as "recent" come from this many last deliveries of a queue.
const RECENT_RECEIPTS: usize = 6;
/// A name no queue has.
const MISSING_QUEUE: &str = "no-such-queue";

// ---------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------

/// Every queue as a vector of messages in id order, and the clock.
#[derive(Debug, Default)]
struct Model {
    /// The largest `now` seen.
    clock: u64,
    /// The queues in name order.
    queues: Vec<ModelQueue>,
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

/// How long a message enqueued now may live: TTL or retention, the shorter.
fn lifetime_ms(config: &QueueConfig) -> u64 {
    match config.message_ttl_ms {
        Some(ttl) => ttl.min(config.retention_ms),
        None => config.retention_ms,
    }
}

/// What a message counts for against `max_bytes`: body plus attributes.
fn message_bytes(body: &Bytes, attributes: &BTreeMap<String, String>) -> u64 {
    let attributes: usize = attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    (body.len() + attributes) as u64
}

fn in_flight(message: &Message, now: Timestamp) -> bool {
    message
        .lease
        .as_ref()
        .is_some_and(|lease| lease.deadline > now)
}

impl Model {
    /// Moves the clock to `now` unless it is ahead. Like the real code, every
    /// command that carries a `now` does this first, also when it is then
    /// refused (see the note in `Queues::apply`'s doc: "refusals change
    /// nothing" does not hold for the clock).
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
            .ok_or_else(|| Refusal::QueueNotFound(name.to_string()))
    }

    fn apply(&mut self, command: &Command) -> Response {
        let result = match command {
            Command::CreateQueue { name, config, now } => Ok(self.create(name, config, *now)),
            Command::Enqueue {
                queue,
                messages,
                now,
            } => self.enqueue(queue, messages, *now),
            Command::Receive {
                queue,
                max,
                visibility_ms,
                consumer,
                now,
            } => self.receive(queue, *max, *visibility_ms, consumer, *now),
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
            Command::Tick { now } => Ok(self.tick(*now)),
            Command::Redrive { dlq, max, now } => self.redrive(dlq, *max, *now),
            Command::Purge { name } => self.purge(name),
            Command::Batch(commands) => Ok(self.batch(commands)),
            Command::UpdateQueue { .. } | Command::DeleteQueue { .. } => {
                panic!("the model does not cover {command}")
            }
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

    fn create(&mut self, name: &QueueName, config: &QueueConfig, now: Timestamp) -> Response {
        let now = self.advance(now);
        if let Some(existing) = self.queue(name) {
            return if &existing.meta.config == config {
                Response::QueueCreated { created: false }
            } else {
                Response::Refused(Refusal::QueueExists(name.to_string()))
            };
        }
        self.queues.push(ModelQueue {
            meta: QueueMeta {
                name: name.clone(),
                config: config.clone(),
                next_id: 1,
                created_at: now,
                counters: Counters::default(),
            },
            messages: Vec::new(),
            dedup: Vec::new(),
            overflow_drops: 0,
            acked: Vec::new(),
        });
        self.queues.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        Response::QueueCreated { created: true }
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
        let queue = self.queue_mut(name)?;
        let results = messages
            .iter()
            .map(|new| queue.enqueue_one(new, now))
            .collect();
        Ok(Response::Enqueued(results))
    }

    fn receive(
        &mut self,
        name: &QueueName,
        max: u32,
        visibility_ms: Option<u64>,
        consumer: &str,
        now: Timestamp,
    ) -> Result<Response, Refusal> {
        let now = self.advance(now);
        let visibility_ok = visibility_ms
            .is_none_or(|v| (MIN_VISIBILITY_TIMEOUT_MS..=MAX_VISIBILITY_TIMEOUT_MS).contains(&v));
        if !(1..=MAX_RECEIVE).contains(&max) || !visibility_ok || consumer.len() > MAX_KEY_BYTES {
            return Err(invalid());
        }
        let queue = self.queue_mut(name)?;
        let config = queue.meta.config.clone();
        let visibility = visibility_ms.unwrap_or(config.visibility_timeout_ms);
        let mut deliveries = Vec::new();
        let mut dead = Vec::new();
        let mut expired = 0;
        while deliveries.len() < max as usize {
            let Some(index) = queue.first_deliverable(now) else {
                break;
            };
            let message = &mut queue.messages[index];
            if message.expires_at <= now {
                queue.messages.remove(index);
                queue.meta.counters.expired += 1;
                expired += 1;
            } else if config.max_deliveries > 0 && message.delivery_count >= config.max_deliveries {
                dead.push(queue.messages.remove(index));
                queue.meta.counters.dead_lettered += 1;
            } else {
                message.delivery_count += 1;
                let deadline = now.plus_ms(visibility);
                message.lease = Some(Lease {
                    consumer: consumer.to_string(),
                    leased_at: now,
                    deadline,
                });
                let backoff = config.retry_backoff_ms(message.id.0, message.delivery_count);
                message.visible_at = deadline.plus_ms(backoff);
                deliveries.push(Delivery {
                    id: message.id,
                    receipt: Receipt {
                        message: message.id,
                        delivery: message.delivery_count,
                    },
                    body: message.body.clone(),
                    attributes: message.attributes.clone(),
                    group: message.group.clone(),
                    delivery_count: message.delivery_count,
                    enqueued_at: message.enqueued_at,
                    lease_deadline: deadline,
                    dead_letter: message.dead_letter.clone(),
                });
            }
        }
        let dead_lettered = dead.len() as u64;
        if let Some(dlq) = &config.dead_letter_queue {
            let target = self.queue_mut(dlq).expect("a dead-letter queue exists");
            for message in dead {
                let dead_letter = DeadLetter {
                    source_queue: name.clone(),
                    source_id: message.id,
                    delivery_count: message.delivery_count,
                    reason: message.last_nack_reason.clone(),
                    dead_lettered_at: now,
                };
                target.arrive(message, Some(dead_letter), now);
            }
        }
        Ok(Response::Received {
            deliveries,
            dead_lettered,
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
        if delay_ms.is_some_and(|delay| delay > config.max_delay_ms) {
            return Err(invalid());
        }
        let results = receipts
            .iter()
            .map(|&receipt| {
                let index = queue.current_lease(receipt)?;
                let message = &mut queue.messages[index];
                let delay = delay_ms.unwrap_or_else(|| {
                    config.retry_backoff_ms(message.id.0, message.delivery_count)
                });
                message.lease = None;
                message.visible_at = now.plus_ms(delay);
                if reason.is_some() {
                    message.last_nack_reason = reason.clone();
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
                let backoff = config.retry_backoff_ms(message.id.0, message.delivery_count);
                message.visible_at = deadline.plus_ms(backoff);
                Ok(deadline)
            })
            .collect();
        Ok(Response::Extended(results))
    }

    fn tick(&mut self, now: Timestamp) -> Response {
        let now = self.advance(now);
        let mut expired = 0;
        let mut dedup_trimmed = 0;
        for queue in &mut self.queues {
            let before = queue.messages.len();
            queue.messages.retain(|m| m.expires_at > now);
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
                (
                    m.id,
                    m.dead_letter.as_ref().map(|d| d.source_queue.clone()),
                    message_bytes(&m.body, &m.attributes),
                )
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
            let index = source
                .messages
                .iter()
                .position(|m| m.id == id)
                .expect("candidate");
            let message = source.messages.remove(index);
            source.meta.counters.redriven += 1;
            self.queue_mut(&target)
                .expect("exists")
                .arrive(message, None, now);
            moved += 1;
        }
        Ok(Response::Redriven { moved, skipped })
    }

    fn purge(&mut self, name: &QueueName) -> Result<Response, Refusal> {
        let queue = self.queue_mut(name)?;
        let messages = queue.messages.len() as u64;
        queue.messages.clear();
        queue.meta.counters.dropped += messages;
        Ok(Response::Purged { messages })
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

    /// A queue's stats as [`Queues::stats`] computes them.
    fn stats(&self, name: &QueueName, now: Timestamp) -> QueueStats {
        let now = now.max(Timestamp(self.clock));
        let queue = self.queue(name).expect("a model queue");
        let mut stats = QueueStats {
            name: name.to_string(),
            config: Some(queue.meta.config.clone()),
            bytes: queue.bytes(),
            counters: queue.meta.counters.clone(),
            next_id: queue.meta.next_id,
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

fn check_receipt_count(receipts: &[Receipt]) -> Result<(), Refusal> {
    if receipts.is_empty() || receipts.len() > MAX_RECEIPTS {
        return Err(invalid());
    }
    Ok(())
}

impl ModelQueue {
    fn take_id(&mut self) -> MessageId {
        let id = MessageId(self.meta.next_id);
        self.meta.next_id += 1;
        self.meta.counters.enqueued += 1;
        id
    }

    fn enqueue_one(&mut self, new: &NewMessage, now: Timestamp) -> Result<Enqueued, Refusal> {
        let config = self.meta.config.clone();
        if new
            .delay_ms
            .is_some_and(|delay| delay > config.max_delay_ms)
        {
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
        self.make_room(message_bytes(&new.body, &new.attributes))?;
        let id = self.take_id();
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
        self.messages
            .iter()
            .map(|m| message_bytes(&m.body, &m.attributes))
            .sum()
    }

    /// A message moved in (dead-lettered or redriven): a new id, visible now.
    /// No limit applies here: dead letters ignore the DLQ's limits, and
    /// redrive makes room (or skips the message) before it calls this.
    fn arrive(&mut self, message: Message, dead_letter: Option<DeadLetter>, now: Timestamp) {
        let id = self.take_id();
        let lifetime = lifetime_ms(&self.meta.config);
        self.messages.push(Message {
            id,
            enqueued_at: now,
            visible_at: now,
            expires_at: now.plus_ms(lifetime),
            delivery_count: 0,
            lease: None,
            last_nack_reason: None,
            dead_letter,
            ..message
        });
    }

    /// The lowest-id message that is visible and first of its group.
    fn first_deliverable(&self, now: Timestamp) -> Option<usize> {
        let mut groups_seen: Vec<&str> = Vec::new();
        for (index, message) in self.messages.iter().enumerate() {
            let heads_its_group = match &message.group {
                None => true,
                Some(group) if groups_seen.contains(&group.as_str()) => false,
                Some(group) => {
                    groups_seen.push(group);
                    true
                }
            };
            if heads_its_group && message.visible_at <= now {
                return Some(index);
            }
        }
        None
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
// Invariants, checked from the responses alone.
// ---------------------------------------------------------------------------

/// A lease as the responses tell it.
#[derive(Debug)]
struct ObservedLease {
    delivery: u32,
    deadline: Timestamp,
    group: Option<String>,
}

type Key = (QueueName, MessageId);

/// What the responses so far have shown, to check invariants against.
#[derive(Debug, Default)]
struct Observer {
    clock: Timestamp,
    configs: HashMap<QueueName, QueueConfig>,
    /// The highest id an enqueue returned per queue.
    highest_enqueued: HashMap<QueueName, MessageId>,
    /// The body each (queue, id) was first seen with; bodies are unique.
    bodies: HashMap<Key, Bytes>,
    /// Bodies of acked messages.
    acked: HashSet<Bytes>,
    /// Receipts whose ack succeeded: acking one again may succeed again
    /// (acks are idempotent within the dedup window) and ends no lease.
    acked_receipts: HashSet<(QueueName, Receipt)>,
    /// Messages seen arriving in a dead-letter queue.
    dead_lettered: HashSet<Key>,
    /// The last delivery count seen per message.
    deliveries: HashMap<Key, u32>,
    /// Leases not acked or nacked, as last extended.
    leases: HashMap<Key, ObservedLease>,
    /// Messages enqueued with a delay (not visible on arrival).
    delayed: HashSet<Key>,
    /// The last first-delivered id per (queue, group).
    first_in_group: HashMap<(QueueName, String), MessageId>,
    /// The last first-delivered id per queue among ungrouped messages that
    /// were visible on arrival.
    first_plain: HashMap<QueueName, MessageId>,
    /// Per (queue, dedup id): the first id and when its window started.
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
        | Command::Enqueue { now, .. }
        | Command::Receive { now, .. }
        | Command::Nack { now, .. }
        | Command::Extend { now, .. }
        | Command::Tick { now }
        | Command::Redrive { now, .. } => Some(*now),
        _ => None,
    }
}

impl Observer {
    fn observe(
        &mut self,
        command: &Command,
        response: &Response,
        real: &Queues,
    ) -> Result<(), String> {
        if let Some(now) = command_now(command) {
            self.clock = self.clock.max(now);
        }
        match (command, response) {
            (Command::Batch(commands), Response::Batch(responses)) => {
                for (command, response) in commands.iter().zip(responses) {
                    self.observe(command, response, real)?;
                }
            }
            (Command::CreateQueue { name, config, .. }, Response::QueueCreated { .. }) => {
                self.configs.insert(name.clone(), config.clone());
            }
            (
                Command::Enqueue {
                    queue, messages, ..
                },
                Response::Enqueued(results),
            ) => {
                for (new, result) in messages.iter().zip(results) {
                    if let Ok(enqueued) = result {
                        self.enqueued(queue, new, enqueued)?;
                    }
                }
            }
            (Command::Receive { queue, .. }, Response::Received { deliveries, .. }) => {
                for pair in deliveries.windows(2) {
                    ensure!(
                        pair[0].id < pair[1].id,
                        "one receive delivered {} before {}: not in id order",
                        pair[0].id,
                        pair[1].id
                    );
                }
                for delivery in deliveries {
                    self.delivered(queue, delivery, real)?;
                }
            }
            (Command::Ack { queue, receipts }, Response::Acked(results)) => {
                for (receipt, result) in receipts.iter().zip(results) {
                    if result.is_ok() {
                        if self.acked_receipts.contains(&(queue.clone(), *receipt)) {
                            continue;
                        }
                        let key = self.ended_lease(queue, *receipt, "ack")?;
                        let body = self.bodies.get(&key).expect("a delivered message").clone();
                        self.acked.insert(body);
                        self.acked_receipts.insert((queue.clone(), *receipt));
                    }
                }
            }
            (
                Command::Nack {
                    queue, receipts, ..
                },
                Response::Nacked(results),
            ) => {
                for (receipt, result) in receipts.iter().zip(results) {
                    if result.is_ok() {
                        self.ended_lease(queue, *receipt, "nack")?;
                    }
                }
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
                        ensure!(
                            *deadline == self.clock.plus_ms(*visibility_ms),
                            "extend of {receipt} set deadline {deadline}, not now {} + {visibility_ms}",
                            self.clock
                        );
                        let key = (queue.clone(), receipt.message);
                        let lease = self.leases.get_mut(&key);
                        ensure!(
                            lease.as_ref().is_some_and(|l| l.delivery == receipt.delivery),
                            "extend accepted {receipt}, which is not a lease handed out and still held"
                        );
                        lease.expect("checked").deadline = *deadline;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn enqueued(
        &mut self,
        queue: &QueueName,
        new: &NewMessage,
        result: &Enqueued,
    ) -> Result<(), String> {
        let config = &self.configs[queue];
        if let Some(dedup_id) = &new.dedup_id {
            let key = (queue.clone(), dedup_id.clone());
            if let Some(&(first, since)) = self.dedup.get(&key) {
                if self.clock < since.plus_ms(config.dedup_window_ms) {
                    ensure!(
                        result.duplicate && result.id == first,
                        "dedup id {dedup_id} first seen at {since} with id {first} returned {result:?} at {} (window {} ms)",
                        self.clock,
                        config.dedup_window_ms
                    );
                    return Ok(());
                }
            }
            ensure!(
                !result.duplicate,
                "dedup id {dedup_id} not seen within the window returned a duplicate ({result:?})"
            );
            self.dedup.insert(key, (result.id, self.clock));
        } else {
            ensure!(
                !result.duplicate,
                "a message without dedup id was a duplicate"
            );
        }
        let highest = self.highest_enqueued.entry(queue.clone()).or_default();
        ensure!(
            result.id > *highest,
            "enqueue in {queue} returned id {} after id {}: ids must only grow",
            result.id,
            highest
        );
        *highest = result.id;
        let key = (queue.clone(), result.id);
        ensure!(
            !self.bodies.contains_key(&key),
            "id {} of {queue} reused by an enqueue",
            result.id
        );
        self.bodies.insert(key.clone(), new.body.clone());
        if new.delay_ms.unwrap_or(config.default_delay_ms) > 0 {
            self.delayed.insert(key);
        }
        Ok(())
    }

    fn delivered(
        &mut self,
        queue: &QueueName,
        delivery: &Delivery,
        real: &Queues,
    ) -> Result<(), String> {
        let id = delivery.id;
        let count = delivery.delivery_count;
        let key = (queue.clone(), id);
        ensure!(
            delivery.receipt
                == Receipt {
                    message: id,
                    delivery: count
                },
            "delivery of {id} carries receipt {} for delivery {count}",
            delivery.receipt
        );
        ensure!(
            delivery.lease_deadline > self.clock,
            "lease of {id} ends before now"
        );
        let lifetime = lifetime_ms(&self.configs[queue]);
        ensure!(
            delivery.enqueued_at.plus_ms(lifetime) > self.clock,
            "message {id} of {queue} enqueued at {} delivered at {}, past its lifetime of {lifetime} ms",
            delivery.enqueued_at,
            self.clock
        );
        let body = self
            .bodies
            .entry(key.clone())
            .or_insert_with(|| delivery.body.clone());
        ensure!(
            *body == delivery.body,
            "id {id} of {queue} delivered with body {:?}, first seen with {body:?}: an id was reused",
            delivery.body
        );
        ensure!(
            !self.acked.contains(&delivery.body),
            "message {id} of {queue} ({:?}) delivered again after an ack",
            delivery.body
        );
        ensure!(
            !self.dead_lettered.contains(&key),
            "message {id} of {queue} delivered again after it was dead-lettered"
        );
        let previous = self.deliveries.get(&key).copied().unwrap_or(0);
        ensure!(
            count == previous + 1,
            "message {id} of {queue} delivered as delivery {count} after delivery {previous}"
        );
        let max = self.configs[queue].max_deliveries;
        ensure!(
            max == 0 || count <= max,
            "message {id} of {queue} delivered {count} times, max_deliveries is {max}"
        );
        if let Some(lease) = self.leases.get(&key) {
            ensure!(
                lease.deadline <= self.clock,
                "message {id} of {queue} leased again while lease {}-{} runs until {}",
                id,
                lease.delivery,
                lease.deadline
            );
        }
        if let Some(group) = &delivery.group {
            let live = self.leases.iter().find(|((q, other), lease)| {
                q == queue
                    && *other != id
                    && lease.group.as_ref() == Some(group)
                    && lease.deadline > self.clock
                    && real.get(q).is_some_and(|q| q.message(*other).is_some())
            });
            if let Some(((_, other), lease)) = live {
                return Err(format!(
                    "message {id} of group {group} in {queue} leased while message {other} of the same group holds a lease until {}",
                    lease.deadline
                ));
            }
        }
        if count == 1 {
            self.first_delivery(queue, delivery)?;
        }
        if let Some(dead) = &delivery.dead_letter {
            self.dead_letter_delivered(queue, delivery, dead)?;
        }
        self.deliveries.insert(key.clone(), count);
        let lease = ObservedLease {
            delivery: count,
            deadline: delivery.lease_deadline,
            group: delivery.group.clone(),
        };
        self.leases.insert(key, lease);
        Ok(())
    }

    /// First deliveries are in id order within a group, and within a queue
    /// among ungrouped messages that were visible on arrival (a delayed or
    /// grouped message may rightly be overtaken by a later id).
    fn first_delivery(&mut self, queue: &QueueName, delivery: &Delivery) -> Result<(), String> {
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
        } else if !self.delayed.contains(&(queue.clone(), id)) {
            let last = self.first_plain.entry(queue.clone()).or_default();
            ensure!(
                id > *last,
                "first delivery of {id} of {queue} after first delivery of {last}, both ungrouped and undelayed"
            );
            *last = id;
        }
        Ok(())
    }

    /// A dead letter came from a queue that dead-letters here, after exactly
    /// `max_deliveries` deliveries there.
    fn dead_letter_delivered(
        &mut self,
        queue: &QueueName,
        delivery: &Delivery,
        dead: &DeadLetter,
    ) -> Result<(), String> {
        let source = &self.configs[&dead.source_queue];
        ensure!(
            source.dead_letter_queue.as_ref() == Some(queue),
            "dead letter {} in {queue} came from {}, which does not dead-letter here",
            delivery.id,
            dead.source_queue
        );
        let source_key = (dead.source_queue.clone(), dead.source_id);
        let delivered = self.deliveries.get(&source_key).copied().unwrap_or(0);
        ensure!(
            source.max_deliveries > 0
                && dead.delivery_count == source.max_deliveries
                && delivered == source.max_deliveries,
            "message {} of {} dead-lettered after {delivered} deliveries (record says {}), max_deliveries is {}",
            dead.source_id,
            dead.source_queue,
            dead.delivery_count,
            source.max_deliveries
        );
        ensure!(
            self.bodies.get(&source_key) == Some(&delivery.body),
            "dead letter {} in {queue} does not carry the body of {} of {}",
            delivery.id,
            dead.source_id,
            dead.source_queue
        );
        self.dead_lettered.insert(source_key);
        Ok(())
    }

    /// An ack or nack succeeded: it must have named the lease last handed out.
    fn ended_lease(
        &mut self,
        queue: &QueueName,
        receipt: Receipt,
        what: &str,
    ) -> Result<Key, String> {
        let key = (queue.clone(), receipt.message);
        let lease = self.leases.remove(&key);
        ensure!(
            lease.is_some_and(|l| l.delivery == receipt.delivery),
            "{what} accepted {receipt}, which is not a lease handed out and still held"
        );
        Ok(key)
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
    delay_ms: Option<u64>,
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
        consumer: u8,
    },
    Ack {
        queue: Target,
        picks: Vec<Pick>,
    },
    Nack {
        queue: Target,
        picks: Vec<Pick>,
        delay_ms: Option<u64>,
        reason: Option<u8>,
    },
    Extend {
        queue: Target,
        picks: Vec<Pick>,
        visibility_ms: u64,
    },
    Tick,
    Redrive {
        dlq: Target,
        max: u32,
    },
    Purge {
        queue: Target,
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
    let backoff = prop_oneof![
        2 => Just((0u64, 0u64)),
        1 => (0u64..=1_000).prop_flat_map(|min| (Just(min), min.max(1)..=min.max(100) * 8)),
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
            |(
                visibility,
                max_deliveries,
                (backoff_min, backoff_max),
                ttl,
                retention,
                dedup,
                delay,
                (max_length, max_bytes, overflow),
            )| {
                let defaults = QueueConfig::default();
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
                    ..defaults
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

fn message_spec() -> impl Strategy<Value = MessageSpec> {
    let delay = prop_oneof![
        10 => Just(None),
        4 => (0u64..=8_000).prop_map(Some),
        1 => (MAX_DELAY_MS + 1..=2 * MAX_DELAY_MS).prop_map(Some),
    ];
    (
        prop::option::weighted(0.3, 0u8..4),
        prop::option::weighted(0.35, 0u8..3),
        delay,
    )
        .prop_map(|(dedup, group, delay_ms)| MessageSpec {
            dedup,
            group,
            delay_ms,
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
    let nack_delay = prop_oneof![
        5 => Just(None),
        4 => (0u64..=3_000).prop_map(Some),
        1 => Just(Some(MAX_DELAY_MS + 1)),
    ];
    let extend_visibility = prop_oneof![12 => 1_000u64..=6_000, 1 => Just(0u64)];
    let redrive_max = prop_oneof![6 => 1u32..=5, 1 => Just(0u32)];
    prop_oneof![
        25 => (target(), messages).prop_map(|(queue, messages)| Op::Enqueue { queue, messages }),
        22 => (target(), max, receive_visibility, 0u8..3).prop_map(
            |(queue, max, visibility_ms, consumer)| Op::Receive { queue, max, visibility_ms, consumer }
        ),
        12 => (target(), picks()).prop_map(|(queue, picks)| Op::Ack { queue, picks }),
        6 => (target(), picks(), nack_delay, prop::option::weighted(0.5, 0u8..3)).prop_map(
            |(queue, picks, delay_ms, reason)| Op::Nack { queue, picks, delay_ms, reason }
        ),
        5 => (target(), picks(), extend_visibility).prop_map(
            |(queue, picks, visibility_ms)| Op::Extend { queue, picks, visibility_ms }
        ),
        6 => Just(Op::Tick),
        3 => (prop_oneof![4 => Just(Target::Dlq), 1 => target()], redrive_max)
            .prop_map(|(dlq, max)| Op::Redrive { dlq, max }),
        1 => target().prop_map(|queue| Op::Purge { queue }),
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
    (
        prop::collection::vec((config(), prop::bool::weighted(0.7)), 1..=2),
        config(),
        prop::collection::vec(step, 1..=300),
    )
        .prop_map(|(mains, dlq, steps)| Scenario { mains, dlq, steps })
}

// ---------------------------------------------------------------------------
// Running a scenario.
// ---------------------------------------------------------------------------

/// Every transition the generator should reach, by the name [`Coverage`]
/// counts it under.
const TRANSITIONS: [&str; 22] = [
    "queue full",
    "dropped oldest",
    "duplicate enqueue",
    "delayed enqueue",
    "grouped delivery",
    "redelivery",
    "ack",
    "nack",
    "extend",
    "stale receipt",
    "unknown receipt",
    "expired by receive",
    "expired by tick",
    "dedup id trimmed",
    "dead-lettered to a DLQ",
    "dead letter dropped (no DLQ)",
    "dead letter delivered",
    "redriven",
    "purged",
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
        debug_assert!(
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
            .into_iter()
            .filter(|t| self.0.get(t).copied().unwrap_or(0) == 0)
            .collect()
    }

    fn receipt<T>(&mut self, what: &'static str, result: &Result<T, Refusal>) {
        match result {
            Ok(_) => self.add(what, 1),
            Err(Refusal::ReceiptStale(_)) => self.add("stale receipt", 1),
            Err(Refusal::ReceiptUnknown(_)) => self.add("unknown receipt", 1),
            Err(_) => {}
        }
    }

    fn record(
        &mut self,
        command: &Command,
        response: &Response,
        has_dlq: &dyn Fn(&QueueName) -> bool,
    ) {
        match (command, response) {
            (_, Response::Refused(Refusal::InvalidArgument(_))) => self.add("invalid argument", 1),
            (_, Response::Refused(Refusal::QueueNotFound(_))) => self.add("missing queue", 1),
            (Command::Batch(commands), Response::Batch(responses)) => {
                for (command, response) in commands.iter().zip(responses) {
                    self.record(command, response, has_dlq);
                }
            }
            (Command::Enqueue { messages, .. }, Response::Enqueued(results)) => {
                for (new, result) in messages.iter().zip(results) {
                    match result {
                        Ok(enqueued) if enqueued.duplicate => self.add("duplicate enqueue", 1),
                        Ok(_) if new.delay_ms.is_some_and(|d| d > 0) => {
                            self.add("delayed enqueue", 1)
                        }
                        Ok(_) => {}
                        Err(Refusal::QueueFull { .. }) => self.add("queue full", 1),
                        Err(_) => self.add("invalid argument", 1),
                    }
                }
            }
            (
                Command::Receive { queue, .. },
                Response::Received {
                    deliveries,
                    dead_lettered,
                    expired,
                },
            ) => {
                self.add("expired by receive", *expired);
                if has_dlq(queue) {
                    self.add("dead-lettered to a DLQ", *dead_lettered);
                } else {
                    self.add("dead letter dropped (no DLQ)", *dead_lettered);
                }
                for delivery in deliveries {
                    self.add("grouped delivery", u64::from(delivery.group.is_some()));
                    self.add("redelivery", u64::from(delivery.delivery_count > 1));
                    self.add(
                        "dead letter delivered",
                        u64::from(delivery.dead_letter.is_some()),
                    );
                }
            }
            (Command::Ack { .. }, Response::Acked(results)) => {
                results
                    .iter()
                    .for_each(|result| self.receipt("ack", result));
            }
            (Command::Nack { .. }, Response::Nacked(results)) => {
                results
                    .iter()
                    .for_each(|result| self.receipt("nack", result));
            }
            (Command::Extend { .. }, Response::Extended(results)) => {
                results
                    .iter()
                    .for_each(|result| self.receipt("extend", result));
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
            }
            (Command::Redrive { .. }, Response::Redriven { moved, .. }) => {
                self.add("redriven", *moved);
            }
            (Command::Purge { .. }, Response::Purged { messages }) => self.add("purged", *messages),
            _ => {}
        }
    }
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
            observer: Observer::default(),
            coverage: Coverage::default(),
            now: START_MS,
            mains: (1..=mains)
                .map(|i| QueueName::new(format!("q{i}")))
                .collect(),
            dlq: QueueName::new("dlq"),
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

    /// Turns a generated operation into a command, drawing receipts and
    /// bodies now.
    fn command(&mut self, op: &Op, now: Timestamp) -> Command {
        match op {
            Op::Enqueue { queue, messages } => {
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
                            delay_ms: spec.delay_ms,
                        }
                    })
                    .collect();
                Command::Enqueue {
                    queue: self.target(*queue),
                    messages,
                    now,
                }
            }
            Op::Receive {
                queue,
                max,
                visibility_ms,
                consumer,
            } => Command::Receive {
                queue: self.target(*queue),
                max: *max,
                visibility_ms: *visibility_ms,
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
                delay_ms,
                reason,
            } => {
                let queue = self.target(*queue);
                let receipts = picks.iter().map(|p| self.pick(&queue, p)).collect();
                let reason = reason.map(|r| match r {
                    0 => "timeout".to_string(),
                    1 => "bad input".to_string(),
                    _ => "x".repeat(MAX_REASON_BYTES + 1),
                });
                Command::Nack {
                    queue,
                    receipts,
                    delay_ms: *delay_ms,
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
            Op::Tick => Command::Tick { now },
            Op::Redrive { dlq, max } => Command::Redrive {
                dlq: self.target(*dlq),
                max: *max,
                now,
            },
            Op::Purge { queue } => Command::Purge {
                name: self.target(*queue),
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
        let mut creates = vec![Command::CreateQueue {
            name: dlq.clone(),
            config: scenario.dlq.clone(),
            now,
        }];
        for (name, (config, dead_letters)) in self.mains.clone().into_iter().zip(&scenario.mains) {
            let config = QueueConfig {
                dead_letter_queue: dead_letters.then(|| dlq.clone()),
                ..config.clone()
            };
            creates.push(Command::CreateQueue { name, config, now });
        }
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
        self.apply(command)
    }

    /// Applies one command to both sides and checks everything.
    fn apply(&mut self, command: Command) -> Result<(), String> {
        self.note(describe(&command));
        let drops_before = self.model.overflow_drops();
        let expected = self.model.apply(&command);
        self.coverage
            .add("dropped oldest", self.model.overflow_drops() - drops_before);
        let actual = self.real.apply(command.clone());
        if normalize(actual.clone()) != expected {
            return Err(format!(
                "response differs\n  real:  {actual:?}\n  model: {expected:?}"
            ));
        }
        self.real
            .check_indexes()
            .map_err(|err| format!("check_indexes: {err}"))?;
        self.compare_state()?;
        self.compare_stats(Timestamp(self.model.clock))?;
        self.observer
            .observe(&command, &actual, &self.real)
            .map_err(|err| format!("invariant broken: {err}"))?;
        self.remember_receipts(&command, &actual);
        let dead_letters = |name: &QueueName| {
            self.model
                .queue(name)
                .is_some_and(|q| q.meta.config.dead_letter_queue.is_some())
        };
        self.coverage.record(&command, &actual, &dead_letters);
        Ok(())
    }

    /// The clock, each queue's metadata, messages and dedup entries.
    fn compare_state(&self) -> Result<(), String> {
        ensure!(
            self.real.clock() == Timestamp(self.model.clock),
            "clock is {} but the model's is {}",
            self.real.clock(),
            self.model.clock
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
                .map(|(id, entry)| (id.clone(), entry.clone()))
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
            consumer,
            now,
        } => {
            format!(
                "receive {queue} max={max} visibility={visibility_ms:?} {consumer} @{}",
                now.0
            )
        }
        Command::Ack { queue, receipts: r } => format!("ack {queue} [{}]", receipts(r)),
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

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
    for _ in 0..64 {
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
