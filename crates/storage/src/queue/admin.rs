//! Creating, changing, deleting and purging queues.

use crate::command::Response;
use crate::error::Refusal;
use crate::queue::{Counters, Queue, QueueConfig, QueueMeta, QueueName, Queues, Timestamp};

/// Creates a queue. The same config again is a no-op (`created: false`);
/// a different one is refused.
pub fn create(
    queues: &mut Queues,
    name: QueueName,
    config: QueueConfig,
    now: Timestamp,
) -> Response {
    let now = queues.advance_clock(now);
    if let Err(refusal) = check_config(queues, &name, &config) {
        return Response::Refused(refusal);
    }
    if let Some(existing) = queues.get(&name) {
        return if existing.config() == &config {
            Response::QueueCreated { created: false }
        } else {
            Response::Refused(Refusal::QueueExists(name.to_string()))
        };
    }
    let meta = QueueMeta {
        name,
        config,
        next_id: 1,
        created_at: now,
        counters: Counters::default(),
    };
    queues.insert_queue(Queue::new(meta, now));
    Response::QueueCreated { created: true }
}

/// Replaces a queue's config. Messages already stored keep the expiry and
/// delay they were given; new limits apply to new enqueues.
pub fn update(queues: &mut Queues, name: QueueName, config: QueueConfig) -> Response {
    if let Err(refusal) = check_config(queues, &name, &config) {
        return Response::Refused(refusal);
    }
    match queues.lookup_mut(&name) {
        Ok(queue) => {
            queue.meta.config = config;
            Response::QueueUpdated
        }
        Err(refusal) => Response::Refused(refusal),
    }
}

/// Deletes a queue and its messages. Refused while another queue names it as
/// its dead-letter queue, so dead letters never lose their destination.
pub fn delete(queues: &mut Queues, name: QueueName) -> Response {
    if let Err(refusal) = queues.lookup(&name) {
        return Response::Refused(refusal);
    }
    if let Some(user) = queues
        .iter()
        .find(|q| q.config().dead_letter_queue.as_ref() == Some(&name))
    {
        return Response::Refused(Refusal::DeadLetterQueueInUse {
            queue: name.to_string(),
            used_by: user.name().to_string(),
        });
    }
    let messages = queues.get(&name).map_or(0, Queue::len);
    queues.remove_queue(&name);
    Response::QueueDeleted { messages }
}

/// Removes every message of a queue, leased or not. Ids are not reset.
pub fn purge(queues: &mut Queues, name: QueueName) -> Response {
    match queues.lookup_mut(&name) {
        Ok(queue) => {
            let messages = queue.remove_all();
            queue.meta.counters.dropped += messages;
            Response::Purged { messages }
        }
        Err(refusal) => Response::Refused(refusal),
    }
}

/// Validates a config, including that its dead-letter queue exists.
fn check_config(queues: &Queues, name: &QueueName, config: &QueueConfig) -> Result<(), Refusal> {
    name.validate()?;
    config.validate(name)?;
    if let Some(dlq) = &config.dead_letter_queue {
        if queues.get(dlq).is_none() {
            return Err(Refusal::InvalidArgument(format!(
                "dead_letter_queue {:?} does not exist: create it first",
                dlq.as_str()
            )));
        }
    }
    Ok(())
}
