//! Tick: the housekeeping entry the leader proposes when something is due.
//!
//! It drops messages past their TTL or retention and forgets dedup ids whose
//! window ended. Lease expiry needs no tick: a receive sees an expired lease's
//! message as ready by itself. Receive also drops expired messages it meets,
//! so a late tick never causes an expired message to be delivered.

use crate::command::Response;
use crate::queue::{QueueName, Queues, Timestamp};

/// Applies a tick at `now`.
pub fn tick(queues: &mut Queues, now: Timestamp) -> Response {
    let now = queues.advance_clock(now);
    let names: Vec<QueueName> = queues.iter().map(|q| q.name().clone()).collect();
    let mut expired = 0;
    let mut dedup_trimmed = 0;
    for name in names {
        let due = queues
            .get(&name)
            .is_some_and(|q| !q.expired(now).is_empty() || q.dedup_due(now));
        if !due {
            continue;
        }
        let queue = queues.lookup_mut(&name).expect("listed above");
        for id in queue.expired(now) {
            queue.remove(id);
            queue.meta.counters.expired += 1;
            expired += 1;
        }
        dedup_trimmed += queue.dedup_trim(now);
    }
    Response::Ticked {
        expired,
        dedup_trimmed,
    }
}

/// The earliest time at which a tick would have work: the first message
/// expiry or dedup window end over all queues. The node's ticker proposes a
/// tick only then, so an idle cluster writes no log entries.
pub fn next_due(queues: &Queues) -> Option<Timestamp> {
    queues.iter().filter_map(|q| q.next_due()).min()
}
