//! Receive: lease up to `max` ready messages (and at most `max_bytes` of
//! them), in the order they became ready.
//!
//! For each ready message, the one ready longest first:
//! - past its expiry: dropped and counted as expired;
//! - already delivered `max_deliveries` times (leases released unseen do not
//!   count): moved, in this same apply, to the queue's dead-letter queue, or
//!   dropped and counted as dropped when there is none (the response names
//!   each such message, so the node can log it);
//! - otherwise leased: its lease count rises, the lease runs until
//!   `now + visibility`, and the message becomes visible again at the lease's
//!   end plus the queue's retry backoff, unless acked, nacked, released or
//!   extended.
//!
//! The byte budget keeps an answer inside what a response may carry: the
//! receive stops before the message that would exceed it, but always leases
//! at least one message, so every message can be received.
//!
//! A receive that finds nothing ready leases nothing and returns an empty
//! list; waiting for messages is the node's job (`wait.rs`), not a log entry.

use crate::command::Response;
use crate::error::Refusal;
use crate::queue::config::{MAX_VISIBILITY_TIMEOUT_MS, MIN_VISIBILITY_TIMEOUT_MS};
use crate::queue::{
    DeadLetter, Delivery, Lease, Message, QueueConfig, QueueName, Queues, Timestamp, MAX_KEY_BYTES,
    MAX_RECEIVE, MAX_RECEIVE_BYTES,
};

/// What a receive asks for.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The queue.
    pub queue: QueueName,
    /// Most messages, 1 to [`MAX_RECEIVE`].
    pub max: u32,
    /// Lease length; the queue's visibility timeout when absent.
    pub visibility_ms: Option<u64>,
    /// Most message bytes; [`MAX_RECEIVE_BYTES`] when absent or larger.
    pub max_bytes: Option<u64>,
    /// Who receives, for stats.
    pub consumer: String,
}

/// Applies a receive command.
pub fn apply(queues: &mut Queues, spec: Spec, now: Timestamp) -> Response {
    let now = queues.advance_clock(now);
    if let Err(refusal) = check(&spec) {
        return Response::Refused(refusal);
    }
    let name = spec.queue;
    let queue = match queues.lookup_mut(&name) {
        Ok(queue) => queue,
        Err(refusal) => return Response::Refused(refusal),
    };
    let config = queue.config().clone();
    let visibility = spec.visibility_ms.unwrap_or(config.visibility_timeout_ms);
    let budget = spec
        .max_bytes
        .map_or(MAX_RECEIVE_BYTES, |b| b.min(MAX_RECEIVE_BYTES));
    let mut deliveries = Vec::new();
    let mut bytes = 0;
    let mut dead = Vec::new();
    let mut dropped = Vec::new();
    let mut expired = 0;
    while deliveries.len() < spec.max as usize {
        let Some(id) = queue.next_ready() else {
            break;
        };
        let message = queue.message(id).expect("ready ids are messages");
        if message.expires_at <= now {
            queue.remove(id);
            queue.meta.counters.expired += 1;
            expired += 1;
        } else if config.max_deliveries > 0 && message.counted_deliveries() >= config.max_deliveries
        {
            let message = queue.remove(id).expect("ready ids are messages");
            if config.dead_letter_queue.is_some() {
                queue.meta.counters.dead_lettered += 1;
                dead.push(message);
            } else {
                queue.meta.counters.dropped += 1;
                dropped.push((message.id, message.counted_deliveries()));
            }
        } else {
            let size = message.size();
            if !deliveries.is_empty() && bytes + size > budget {
                break;
            }
            bytes += size;
            let delivery = queue
                .update(id, |message| {
                    lease(message, &spec.consumer, now, visibility, &config)
                })
                .expect("ready ids are messages");
            deliveries.push(delivery);
        }
    }
    let dead_lettered = dead.len() as u64;
    if let Some(dlq) = config.dead_letter_queue {
        move_to_dead_letter_queue(queues, &name, &dlq, dead, now);
    }
    Response::Received {
        deliveries,
        dead_lettered,
        dropped,
        expired,
    }
}

/// Checks a receive's arguments (max, visibility, max_bytes, consumer)
/// without looking at the queue, so a wrong one is refused whether or not a
/// message is ready.
pub fn check(spec: &Spec) -> Result<(), Refusal> {
    if !(1..=MAX_RECEIVE).contains(&spec.max) {
        return Err(Refusal::InvalidArgument(format!(
            "max must be 1 to {MAX_RECEIVE}, not {}",
            spec.max
        )));
    }
    if let Some(visibility) = spec.visibility_ms {
        if !(MIN_VISIBILITY_TIMEOUT_MS..=MAX_VISIBILITY_TIMEOUT_MS).contains(&visibility) {
            return Err(Refusal::InvalidArgument(format!(
                "visibility_ms must be {MIN_VISIBILITY_TIMEOUT_MS} to {MAX_VISIBILITY_TIMEOUT_MS}, not {visibility}"
            )));
        }
    }
    if spec.max_bytes == Some(0) {
        return Err(Refusal::InvalidArgument(
            "max_bytes must be at least 1 (leave it unset for the default)".into(),
        ));
    }
    if spec.consumer.len() > MAX_KEY_BYTES {
        return Err(Refusal::InvalidArgument(format!(
            "consumer must be at most {MAX_KEY_BYTES} bytes, not {}",
            spec.consumer.len()
        )));
    }
    Ok(())
}

/// Leases a ready message and describes the delivery.
fn lease(
    message: &mut Message,
    consumer: &str,
    now: Timestamp,
    visibility: u64,
    config: &QueueConfig,
) -> Delivery {
    message.delivery_count += 1;
    let deadline = now.plus_ms(visibility);
    assert!(deadline > now, "a lease deadline is after now");
    message.lease = Some(Box::new(Lease {
        consumer: consumer.to_string(),
        leased_at: now,
        deadline,
    }));
    message.visible_at =
        deadline.plus_ms(config.retry_backoff_ms(message.id.0, message.counted_deliveries()));
    Delivery {
        id: message.id,
        receipt: message.receipt().expect("just leased"),
        body: message.body.clone(),
        attributes: message.attributes.clone(),
        group: message.group.clone(),
        delivery_count: message.counted_deliveries(),
        enqueued_at: message.enqueued_at,
        lease_deadline: deadline,
        dead_letter: message.dead_letter.as_deref().cloned(),
    }
}

/// Appends dead letters to the dead-letter queue, each with a new id and a
/// record of where it came from. Limits of the dead-letter queue do not
/// apply: a dead letter is never refused or dropped on the way.
fn move_to_dead_letter_queue(
    queues: &mut Queues,
    source: &QueueName,
    dlq: &QueueName,
    dead: Vec<Message>,
    now: Timestamp,
) {
    if dead.is_empty() {
        return;
    }
    let (target, ids) = queues
        .lookup_with_ids(dlq)
        .expect("a queue's dead-letter queue exists: delete refuses to remove it");
    let lifetime = target.config().lifetime_ms();
    for message in dead {
        let id = ids.assign();
        target.meta.counters.enqueued += 1;
        target.insert(Message {
            id,
            visible_at: now,
            enqueued_at: now,
            expires_at: now.plus_ms(lifetime),
            delivery_count: 0,
            released: 0,
            lease: None,
            dead_letter: Some(Box::new(DeadLetter {
                source_queue: source.clone(),
                source_id: message.id,
                delivery_count: message.counted_deliveries(),
                reason: message.last_nack_reason.as_deref().map(str::to_string),
                dead_lettered_at: now,
            })),
            last_nack_reason: None,
            ..message
        });
    }
}
