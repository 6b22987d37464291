//! Queue stats: what an operator watches.
//!
//! Stats are a read, computed from the messages at a given `now`; they cost
//! one pass over the queue's messages.

use serde::{Deserialize, Serialize};

use crate::queue::{Counters, Queue, QueueConfig, QueueName, Timestamp};

/// A queue's depth and health at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue.
    pub name: String,
    /// Its configuration.
    pub config: Option<QueueConfig>,
    /// Messages that may be delivered now (including those waiting behind
    /// their group's head).
    pub ready: u64,
    /// Messages leased to a consumer whose lease has not run out.
    pub in_flight: u64,
    /// Messages not yet visible: delayed at enqueue, nacked with a delay, or in
    /// retry backoff after a lease ran out.
    pub delayed: u64,
    /// Message bytes held.
    pub bytes: u64,
    /// Age of the oldest ready message, in ms (0 when none).
    pub oldest_ready_age_ms: u64,
    /// How long the longest-held lease has been held, in ms (0 when none).
    pub oldest_in_flight_age_ms: u64,
    /// The consumer holding that lease.
    pub oldest_in_flight_consumer: Option<String>,
    /// Running totals (enqueued, acked, dead-lettered, expired, dropped,
    /// redriven, released).
    pub counters: Counters,
    /// The id the next message will get (ids are cluster-wide).
    pub next_id: u64,
    /// Whether this queue is another queue's dead-letter queue.
    pub dead_letter_source_of: Vec<String>,
}

/// Computes a queue's stats at `now`.
pub fn of(queue: &Queue, now: Timestamp) -> QueueStats {
    let mut stats = QueueStats {
        name: queue.name().to_string(),
        config: Some(queue.config().clone()),
        bytes: queue.bytes(),
        counters: queue.meta.counters.clone(),
        ..QueueStats::default()
    };
    let mut oldest_ready: Option<Timestamp> = None;
    let mut oldest_lease: Option<(Timestamp, &str)> = None;
    for message in queue.messages() {
        if message.is_in_flight(now) {
            stats.in_flight += 1;
            let lease = message.lease.as_ref().expect("in flight means leased");
            if oldest_lease.is_none_or(|(at, _)| lease.leased_at < at) {
                oldest_lease = Some((lease.leased_at, &lease.consumer));
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
    if let Some((at, consumer)) = oldest_lease {
        stats.oldest_in_flight_age_ms = now.millis_since(at);
        stats.oldest_in_flight_consumer = Some(consumer.to_string());
    }
    stats
}

/// Names of the queues that dead-letter into `name`.
pub fn dead_letter_sources<'a>(
    queues: impl Iterator<Item = &'a Queue>,
    name: &QueueName,
) -> Vec<String> {
    queues
        .filter(|q| q.config().dead_letter_queue.as_ref() == Some(name))
        .map(|q| q.name().to_string())
        .collect()
}

impl crate::queue::Queues {
    /// A queue's stats at `now` (a read: it changes nothing).
    pub fn stats(&self, name: &QueueName, now: Timestamp) -> Result<QueueStats, crate::Refusal> {
        let queue = self.lookup(name)?;
        let mut stats = of(queue, now.max(self.clock()));
        stats.next_id = self.next_id();
        stats.dead_letter_source_of = dead_letter_sources(self.iter(), name);
        Ok(stats)
    }
}
