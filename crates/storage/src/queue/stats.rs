//! Queue stats: what an operator watches.
//!
//! Stats are a read, computed from the messages at a given `now`; they cost
//! one pass over the queue's messages. They are computed from a view
//! ([`crate::queue::Queues::view`], [`Queues::stats_view`]) taken under the
//! state's lock in O(queues) and read after it is released, so a scrape or a
//! status of a large state never holds up applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::queue::{
    Counters, QueueConfig, QueueMeta, QueueName, QueueView, Queues, StateView, Timestamp,
};

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

/// Computes a queue's stats at `now`, from the queue or from a view of it.
pub fn of(queue: &QueueView, now: Timestamp) -> QueueStats {
    let mut stats = QueueStats {
        name: queue.meta.name.to_string(),
        config: Some(queue.meta.config.clone()),
        bytes: queue.bytes,
        counters: queue.meta.counters.clone(),
        ..QueueStats::default()
    };
    let mut oldest_ready: Option<Timestamp> = None;
    let mut oldest_lease: Option<(Timestamp, &str)> = None;
    for message in queue.messages.values() {
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

/// For each queue that is some queue's dead-letter queue, the queues that
/// dead-letter into it (one pass over the configs).
fn dead_letter_sources<'a>(
    metas: impl Iterator<Item = &'a QueueMeta>,
) -> BTreeMap<&'a QueueName, Vec<String>> {
    let mut sources: BTreeMap<&QueueName, Vec<String>> = BTreeMap::new();
    for meta in metas {
        if let Some(target) = &meta.config.dead_letter_queue {
            sources
                .entry(target)
                .or_default()
                .push(meta.name.to_string());
        }
    }
    sources
}

impl StateView {
    /// Every queue's stats at `now` (at least the state's clock), in name
    /// order. One pass over each queue's messages; meant to run on a view
    /// taken from the state, so the apply path is never held while it runs.
    pub fn stats(&self, now: Timestamp) -> Vec<QueueStats> {
        let now = now.max(self.globals.clock);
        let sources = dead_letter_sources(self.queues.iter().map(|q| &q.meta));
        self.queues
            .iter()
            .map(|queue| {
                let mut stats = of(queue, now);
                stats.next_id = self.globals.next_id;
                stats.dead_letter_source_of =
                    sources.get(&queue.meta.name).cloned().unwrap_or_default();
                stats
            })
            .collect()
    }
}

/// One queue's stats, computed off the state's lock: take it with
/// [`Queues::stats_view`], compute with [`QueueStatsView::stats`].
#[derive(Clone, Debug)]
pub struct QueueStatsView {
    queue: QueueView,
    clock: Timestamp,
    next_id: u64,
    sources: Vec<String>,
}

impl QueueStatsView {
    /// The queue's stats at `now` (at least the state's clock when taken).
    pub fn stats(&self, now: Timestamp) -> QueueStats {
        let mut stats = of(&self.queue, now.max(self.clock));
        stats.next_id = self.next_id;
        stats.dead_letter_source_of = self.sources.clone();
        stats
    }
}

impl Queues {
    /// A queue's stats at `now` (a read: it changes nothing).
    pub fn stats(&self, name: &QueueName, now: Timestamp) -> Result<QueueStats, crate::Refusal> {
        Ok(self.stats_view(name)?.stats(now))
    }

    /// What [`Queues::stats`] needs of one queue, cheap to take (the message
    /// map is shared): take it under the state's lock, compute after.
    pub fn stats_view(&self, name: &QueueName) -> Result<QueueStatsView, crate::Refusal> {
        let queue = self.lookup(name)?;
        Ok(QueueStatsView {
            queue: queue.view(),
            clock: self.clock(),
            next_id: self.next_id(),
            sources: self
                .iter()
                .filter(|q| q.config().dead_letter_queue.as_ref() == Some(name))
                .map(|q| q.name().to_string())
                .collect(),
        })
    }
}
