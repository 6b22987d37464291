//! Receive: lease up to `max` ready messages, in id order.
//!
//! For each ready message, lowest id first:
//! - past its expiry: dropped and counted as expired;
//! - already delivered `max_deliveries` times: moved, in this same apply, to
//!   the queue's dead-letter queue (or dropped and counted when there is none);
//! - otherwise leased: its delivery count rises, the lease runs until
//!   `now + visibility`, and the message becomes visible again at the lease's
//!   end plus the queue's retry backoff, unless acked, nacked or extended.
//!
//! A receive that finds nothing ready leases nothing and returns an empty
//! list; waiting for messages is the node's job (`wait.rs`), not a log entry.

use crate::command::Response;
use crate::error::Refusal;
use crate::queue::config::{MAX_VISIBILITY_TIMEOUT_MS, MIN_VISIBILITY_TIMEOUT_MS};
use crate::queue::{
    DeadLetter, Delivery, Lease, Message, MessageId, QueueName, Queues, Timestamp, MAX_KEY_BYTES,
    MAX_RECEIVE,
};

/// Applies a receive command.
pub fn apply(
    queues: &mut Queues,
    name: QueueName,
    max: u32,
    visibility_ms: Option<u64>,
    consumer: String,
    now: Timestamp,
) -> Response {
    let now = queues.advance_clock(now);
    if let Err(refusal) = check(max, visibility_ms, &consumer) {
        return Response::Refused(refusal);
    }
    let queue = match queues.lookup_mut(&name) {
        Ok(queue) => queue,
        Err(refusal) => return Response::Refused(refusal),
    };
    let config = queue.config().clone();
    let visibility = visibility_ms.unwrap_or(config.visibility_timeout_ms);
    let mut deliveries = Vec::new();
    let mut dead = Vec::new();
    let mut expired = 0;
    while deliveries.len() < max as usize {
        let Some(id) = queue.next_ready() else {
            break;
        };
        let message = queue.message(id).expect("ready ids are messages");
        if message.expires_at <= now {
            queue.remove(id);
            queue.meta.counters.expired += 1;
            expired += 1;
        } else if config.max_deliveries > 0 && message.delivery_count >= config.max_deliveries {
            dead.push(queue.remove(id).expect("ready ids are messages"));
            queue.meta.counters.dead_lettered += 1;
        } else {
            let delivery = queue
                .update(id, |message| {
                    lease(message, &consumer, now, visibility, &config)
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
        expired,
    }
}

fn check(max: u32, visibility_ms: Option<u64>, consumer: &str) -> Result<(), Refusal> {
    if !(1..=MAX_RECEIVE).contains(&max) {
        return Err(Refusal::InvalidArgument(format!(
            "max must be 1 to {MAX_RECEIVE}, not {max}"
        )));
    }
    if let Some(visibility) = visibility_ms {
        if !(MIN_VISIBILITY_TIMEOUT_MS..=MAX_VISIBILITY_TIMEOUT_MS).contains(&visibility) {
            return Err(Refusal::InvalidArgument(format!(
                "visibility_ms must be {MIN_VISIBILITY_TIMEOUT_MS} to {MAX_VISIBILITY_TIMEOUT_MS}, not {visibility}"
            )));
        }
    }
    if consumer.len() > MAX_KEY_BYTES {
        return Err(Refusal::InvalidArgument(format!(
            "consumer must be at most {MAX_KEY_BYTES} bytes, not {}",
            consumer.len()
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
    config: &crate::queue::QueueConfig,
) -> Delivery {
    message.delivery_count += 1;
    let deadline = now.plus_ms(visibility);
    assert!(deadline > now, "a lease deadline is after now");
    message.lease = Some(Lease {
        consumer: consumer.to_string(),
        leased_at: now,
        deadline,
    });
    message.visible_at =
        deadline.plus_ms(config.retry_backoff_ms(message.id.0, message.delivery_count));
    Delivery {
        id: message.id,
        receipt: message.receipt().expect("just leased"),
        body: message.body.clone(),
        attributes: message.attributes.clone(),
        group: message.group.clone(),
        delivery_count: message.delivery_count,
        enqueued_at: message.enqueued_at,
        lease_deadline: deadline,
        dead_letter: message.dead_letter.clone(),
    }
}

/// Appends dead letters to the dead-letter queue, each with a new id there and
/// a record of where it came from. Limits of the dead-letter queue do not
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
    let target = queues
        .lookup_mut(dlq)
        .expect("a queue's dead-letter queue exists: delete refuses to remove it");
    let lifetime = target.config().lifetime_ms();
    for message in dead {
        let id = MessageId(target.meta.next_id);
        target.meta.next_id += 1;
        target.meta.counters.enqueued += 1;
        target.insert(Message {
            id,
            visible_at: now,
            enqueued_at: now,
            expires_at: now.plus_ms(lifetime),
            delivery_count: 0,
            lease: None,
            dead_letter: Some(DeadLetter {
                source_queue: source.clone(),
                source_id: message.id,
                delivery_count: message.delivery_count,
                reason: message.last_nack_reason.clone(),
                dead_lettered_at: now,
            }),
            last_nack_reason: None,
            ..message
        });
    }
}
