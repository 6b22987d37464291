//! Redrive: move dead letters back to the queues they came from.
//!
//! Up to `max` messages of the dead-letter queue that are not leased right now
//! move, lowest id first, to the end of their source queue with a new id
//! there, a delivery count of zero and no dead-letter record. The source
//! queue's limits apply as for an enqueue: under `reject` a message that does
//! not fit stays in the dead-letter queue, under `drop_oldest` the oldest
//! messages make room. A message that stays (its source queue is gone or
//! full) is counted as skipped.

use crate::command::Response;
use crate::error::Refusal;
use crate::queue::enqueue::make_room;
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
    let candidates: Vec<(MessageId, Option<QueueName>)> = match queues.lookup(&dlq) {
        Ok(source) => source
            .messages()
            .filter(|message| !message.is_in_flight(now))
            .map(|message| {
                (
                    message.id,
                    message.dead_letter.as_ref().map(|d| d.source_queue.clone()),
                )
            })
            .collect(),
        Err(refusal) => return Response::Refused(refusal),
    };
    let mut moved = 0;
    let mut skipped = 0;
    for (id, target) in candidates {
        if moved >= u64::from(max) {
            break;
        }
        let Some(target) = target.filter(|t| queues.get(t).is_some()) else {
            skipped += 1;
            continue;
        };
        let size = queues
            .get(&dlq)
            .and_then(|q| q.message(id))
            .expect("candidate is in the dead-letter queue")
            .size();
        let queue = queues.lookup_mut(&target).expect("checked above");
        if make_room(queue, size).is_err() {
            skipped += 1;
            continue;
        }
        let source = queues.lookup_mut(&dlq).expect("looked up above");
        let message = source
            .remove(id)
            .expect("candidate is in the dead-letter queue");
        source.meta.counters.redriven += 1;
        let (queue, ids) = queues.lookup_with_ids(&target).expect("checked above");
        let lifetime = queue.config().lifetime_ms();
        let new_id = ids.assign();
        queue.meta.counters.enqueued += 1;
        queue.insert(Message {
            id: new_id,
            enqueued_at: now,
            visible_at: now,
            expires_at: now.plus_ms(lifetime),
            delivery_count: 0,
            released: 0,
            lease: None,
            last_nack_reason: None,
            dead_letter: None,
            ..message
        });
        moved += 1;
    }
    Response::Redriven { moved, skipped }
}
