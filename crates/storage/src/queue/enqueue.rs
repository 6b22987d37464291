//! Enqueue: append messages, each with the next cluster-wide id.
//!
//! Each message of a command gets its own result. A message is refused, and
//! nothing of it stored, when it is malformed (size, attributes, delay, keys)
//! or the queue is full under `overflow = reject`. A message whose dedup id
//! was seen within the window returns the first message's id and stores
//! nothing (`duplicate: true`), also when that first message is long acked.

use crate::command::{Enqueued, Response};
use crate::error::Refusal;
use crate::queue::index::DedupEntry;
use crate::queue::message::message_size;
use crate::queue::{
    check_key, Ids, Message, NewMessage, Overflow, Queue, QueueName, Queues, Timestamp,
    MAX_ATTRIBUTES, MAX_ENQUEUE_MESSAGES,
};

/// Applies an enqueue command.
pub fn apply(
    queues: &mut Queues,
    name: QueueName,
    messages: Vec<NewMessage>,
    now: Timestamp,
) -> Response {
    let now = queues.advance_clock(now);
    if messages.is_empty() || messages.len() > MAX_ENQUEUE_MESSAGES {
        return Response::Refused(Refusal::InvalidArgument(format!(
            "an enqueue carries 1 to {MAX_ENQUEUE_MESSAGES} messages, not {}",
            messages.len()
        )));
    }
    let (queue, ids) = match queues.lookup_with_ids(&name) {
        Ok(found) => found,
        Err(refusal) => return Response::Refused(refusal),
    };
    let results = messages
        .into_iter()
        .map(|message| enqueue_one(queue, ids, message, now))
        .collect();
    Response::Enqueued(results)
}

fn enqueue_one(
    queue: &mut Queue,
    ids: &mut Ids,
    new: NewMessage,
    now: Timestamp,
) -> Result<Enqueued, Refusal> {
    check_message(queue, &new)?;
    if let Some(dedup_id) = &new.dedup_id {
        if let Some(id) = queue.dedup_lookup(dedup_id, now) {
            return Ok(Enqueued {
                id,
                duplicate: true,
            });
        }
    }
    let size = message_size(&new.body, &new.attributes);
    make_room(queue, size)?;
    let config = queue.config();
    let delay = new.delay_ms.unwrap_or(config.default_delay_ms);
    let id = ids.assign();
    let message = Message {
        id,
        body: new.body,
        attributes: new.attributes,
        group: new.group,
        enqueued_at: now,
        visible_at: now.plus_ms(delay),
        expires_at: now.plus_ms(config.lifetime_ms()),
        delivery_count: 0,
        released: 0,
        lease: None,
        last_nack_reason: None,
        dead_letter: None,
    };
    if let Some(dedup_id) = new.dedup_id {
        let expires_at = now.plus_ms(config.dedup_window_ms);
        queue.dedup_insert(&dedup_id, DedupEntry { id, expires_at });
    }
    queue.meta.counters.enqueued += 1;
    queue.insert(message);
    Ok(Enqueued {
        id,
        duplicate: false,
    })
}

/// Refuses a malformed message, naming the rule.
fn check_message(queue: &Queue, new: &NewMessage) -> Result<(), Refusal> {
    let config = queue.config();
    let size = message_size(&new.body, &new.attributes);
    if size > config.max_message_bytes {
        return Err(Refusal::InvalidArgument(format!(
            "message of {size} bytes (body and attributes) exceeds max_message_bytes {} of queue {:?}",
            config.max_message_bytes,
            queue.name().as_str()
        )));
    }
    if new.attributes.len() > MAX_ATTRIBUTES {
        return Err(Refusal::InvalidArgument(format!(
            "a message carries at most {MAX_ATTRIBUTES} attributes, not {}",
            new.attributes.len()
        )));
    }
    for key in new.attributes.keys() {
        check_key("an attribute key", key)?;
    }
    if let Some(dedup_id) = &new.dedup_id {
        check_key("dedup_id", dedup_id)?;
    }
    if let Some(group) = &new.group {
        check_key("group", group)?;
    }
    if let Some(delay) = new.delay_ms {
        config.check_delay(delay).map_err(|why| {
            Refusal::InvalidArgument(format!("{why} (queue {:?})", queue.name().as_str()))
        })?;
    }
    Ok(())
}

/// Applies `max_length`/`max_bytes` for a new message of `size` bytes:
/// refuses it under `reject`, drops the oldest messages under `drop_oldest`.
/// Enqueue and redrive both come through here.
pub(crate) fn make_room(queue: &mut Queue, size: u64) -> Result<(), Refusal> {
    let config = queue.config();
    let max_length = config.max_length.unwrap_or(u64::MAX);
    let max_bytes = config.max_bytes.unwrap_or(u64::MAX);
    let overflow = config.overflow;
    let full = |q: &Queue| q.len() + 1 > max_length || q.bytes() + size > max_bytes;
    if !full(queue) {
        return Ok(());
    }
    let refusal = || Refusal::QueueFull {
        queue: queue.name().to_string(),
        limit: if queue.len() + 1 > max_length {
            format!("max_length {max_length}")
        } else {
            format!("max_bytes {max_bytes}")
        },
    };
    if overflow == Overflow::Reject || size > max_bytes {
        return Err(refusal());
    }
    while full(queue) {
        let oldest = queue.oldest().expect("a full queue holds a message");
        queue.remove(oldest);
        queue.meta.counters.dropped += 1;
    }
    Ok(())
}
