//! The housekeeping ticker: while this node leads, it proposes a `Tick` entry
//! when a message expiry or a dedup window end is due, and never otherwise,
//! so an idle cluster writes nothing to its log.

use std::sync::Arc;
use std::time::Duration;

use raftq_storage::command::Command;
use raftq_storage::queue::expire;

use crate::node::{now, Node};

/// How often the ticker looks for due housekeeping.
pub const TICK_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Runs until the node shuts down.
pub async fn run(node: Arc<Node>) {
    let mut shutdown = node.shutdown_signal();
    let mut interval = tokio::time::interval(TICK_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if node.raft.metrics().borrow().current_leader != Some(node.id) {
            continue;
        }
        let now = now();
        let due = expire::next_due(&node.state.read().queues).is_some_and(|at| at <= now);
        if due {
            if let Err(err) = node.proposer.propose(Command::Tick { now }).await {
                tracing::debug!(error = %err, "tick not proposed");
            }
        }
    }
}
