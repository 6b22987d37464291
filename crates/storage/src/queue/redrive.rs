//! Redrive: move dead letters back to the queues they came from.
//!
//! Up to `max` messages of the dead-letter queue that are not leased right now
//! move, lowest id first, to the end of their source queue with a new id
//! there, a delivery count of zero and no dead-letter record. A message whose
//! source queue no longer exists stays where it is and is counted as skipped.

use crate::command::Response;
use crate::error::Refusal;
use crate::queue::{Message, MessageId, QueueName, Queues, Timestamp};

/// Most messages one redrive moves.
pub const MAX_REDRIVE: u32 = 10_000;

/// Applies a redrive of up to `max` messages out of `dlq`.
pub fn apply(queues: &mut Queues, dlq: QueueName, max: u32, now: Timestamp) -> Response {
    let now = queues.advance_clock(now);
    if !(1..=MAX_REDRIVE).contains(&max) {
        return Response::Refused(Refusal::InvalidArgument(format!(
            "max must be 1 to {MAX_REDRIVE}, not {max}"
        )));
    }
    let source = match queues.lookup(&dlq) {
        Ok(queue) => queue,
        Err(refusal) => return Response::Refused(refusal),
    };
    let mut picked = Vec::new();
    let mut skipped = 0;
    for message in source.messages() {
        if picked.len() >= max as usize {
            break;
        }
        if message.is_in_flight(now) {
            continue;
        }
        match &message.dead_letter {
            Some(dead) if queues.get(&dead.source_queue).is_some() => {
                picked.push((message.id, dead.source_queue.clone()));
            }
            _ => skipped += 1,
        }
    }
    let source = queues.lookup_mut(&dlq).expect("looked up above");
    let mut moved_messages = Vec::with_capacity(picked.len());
    for (id, target) in picked {
        let message = source.remove(id).expect("picked from this queue");
        source.meta.counters.redriven += 1;
        moved_messages.push((target, message));
    }
    let moved = moved_messages.len() as u64;
    for (target, message) in moved_messages {
        let queue = queues.lookup_mut(&target).expect("checked above");
        let lifetime = queue.config().lifetime_ms();
        let id = MessageId(queue.meta.next_id);
        queue.meta.next_id += 1;
        queue.meta.counters.enqueued += 1;
        queue.insert(Message {
            id,
            enqueued_at: now,
            visible_at: now,
            expires_at: now.plus_ms(lifetime),
            delivery_count: 0,
            lease: None,
            last_nack_reason: None,
            dead_letter: None,
            ..message
        });
    }
    Response::Redriven { moved, skipped }
}
