//! Creating, changing, deleting and purging queues.

use crate::command::Response;
use crate::error::Refusal;
use crate::queue::{
    Counters, Queue, QueueConfig, QueueConfigPatch, QueueMeta, QueueName, Queues, Timestamp,
};

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
        created_at: now,
        counters: Counters::default(),
    };
    queues.insert_queue(Queue::new(meta, now));
    Response::QueueCreated { created: true }
}

/// Changes the options the patch sets and keeps every other one. Messages
/// already stored keep the expiry and delay they were given; new limits
/// apply to new enqueues. The result is validated like a new config.
pub fn update(queues: &mut Queues, name: QueueName, patch: QueueConfigPatch) -> Response {
    let config = match queues.lookup(&name) {
        Ok(queue) => patch.apply_to(queue.config()),
        Err(refusal) => return Response::Refused(refusal),
    };
    if let Err(refusal) = check_config(queues, &name, &config) {
        return Response::Refused(refusal);
    }
    let queue = queues.lookup_mut(&name).expect("looked up above");
    queue.meta.config = config.clone();
    Response::QueueUpdated { config }
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

/// Removes every message of a queue that no consumer holds, and forgets the
/// dedup ids of the messages it removed (a producer may send them again).
/// Messages in flight stay and can still be acked, as in a RabbitMQ quorum
/// queue; if their lease runs out they are delivered again. Ids are not
/// reset.
pub fn purge(queues: &mut Queues, name: QueueName, now: Timestamp) -> Response {
    let now = queues.advance_clock(now);
    match queues.lookup_mut(&name) {
        Ok(queue) => {
            let messages = queue.purge(now);
            queue.meta.counters.dropped += messages;
            Response::Purged { messages }
        }
        Err(refusal) => Response::Refused(refusal),
    }
}

/// Validates a config, including that its dead-letter queue exists and
/// does not lead back to this queue.
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
        // Follow the chain: it must not lead back here (A -> B -> A would
        // pass dead letters around forever, and neither could be deleted).
        let mut chain = vec![name.as_str(), dlq.as_str()];
        let mut next = queues
            .get(dlq)
            .and_then(|q| q.config().dead_letter_queue.as_ref());
        while let Some(queue) = next {
            chain.push(queue.as_str());
            if queue == name {
                return Err(Refusal::InvalidArgument(format!(
                    "dead_letter_queue {:?} would make a cycle ({}): a dead-letter queue must \
                     not dead-letter back into the queues that feed it",
                    dlq.as_str(),
                    chain.join(" -> ")
                )));
            }
            if chain.len() > queues.len() + 1 {
                break; // An older cycle that does not pass through here.
            }
            next = queues
                .get(queue)
                .and_then(|q| q.config().dead_letter_queue.as_ref());
        }
    }
    Ok(())
}
