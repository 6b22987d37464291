//! The leader's housekeeping, every [`TICK_CHECK_INTERVAL`]:
//!
//! - a `Tick` entry when a message expiry or a dedup window end is due, and
//!   never otherwise, so an idle cluster writes nothing to its log;
//! - a `RegisterNode` entry for every member whose log incarnation the
//!   replicated record does not hold yet (the first one, for the leader
//!   itself, also sets the cluster id; see `raftq_storage::cluster`);
//! - the clock check: a leader whose clock is too far from its voters'
//!   stops leading (it stamps nothing and sends no heartbeats, so another
//!   node is elected) until its clock is close again; see [`crate::clock`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use raftq_storage::command::{Command, Response};
use raftq_storage::queue::expire;
use raftq_storage::NodeId;

use crate::identity::Standing;
use crate::node::Node;

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
        let (leading, voters, members) = {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            (
                metrics.current_leader == Some(node.id),
                membership.voter_ids().collect::<Vec<NodeId>>(),
                membership
                    .nodes()
                    .map(|(id, _)| *id)
                    .collect::<BTreeSet<NodeId>>(),
            )
        };
        check_clock(&node, leading, &voters);
        if !leading || node.identity.standing() != Standing::Member {
            continue;
        }
        register_members(&node, &members).await;
        let Ok(now) = node.clock.stamp() else {
            continue;
        };
        let due = expire::next_due(&node.state.read().queues).is_some_and(|at| at <= now);
        if due {
            if let Err(err) = node.proposer.propose(Command::Tick { now }).await {
                tracing::debug!(error = %err, "tick not proposed");
            }
        }
    }
}

/// Applies the clock's verdict: a leader far from its voters stops sending
/// heartbeats (its proposals are refused by the clock), so its followers
/// elect another leader.
fn check_clock(node: &Node, leading: bool, voters: &[NodeId]) {
    match node.clock.evaluate(node.id, leading, voters) {
        Some(Some(why)) => {
            tracing::error!(node_id = node.id, reason = %why, "stepping aside as leader");
            node.raft.runtime_config().heartbeat(false);
        }
        Some(None) => {
            tracing::info!(
                node_id = node.id,
                "this node's clock is close to its voters' again"
            );
            node.raft.runtime_config().heartbeat(true);
        }
        None => {}
    }
}

/// Registers the incarnation of every member that has none registered,
/// this leader's own first (the first registration chooses the cluster id).
async fn register_members(node: &Node, members: &BTreeSet<NodeId>) {
    let mut cluster_id = node.identity.record().cluster_id;
    let mut pending: Vec<(NodeId, u64)> = node
        .identity
        .unregistered()
        .into_iter()
        .filter(|(member, _)| members.contains(member))
        .collect();
    pending.sort_by_key(|(member, _)| *member != node.id);
    for (member, incarnation) in pending {
        let id = match cluster_id {
            Some(id) => id,
            None if member == node.id => raftq_storage::cluster::random_id(),
            None => return,
        };
        let command = Command::RegisterNode {
            node: member,
            incarnation,
            cluster_id: id,
        };
        match node.proposer.propose(command).await {
            Ok(Response::NodeRegistered) => {
                cluster_id = Some(id);
                tracing::info!(
                    node_id = node.id,
                    member,
                    incarnation = %format!("{incarnation:016x}"),
                    cluster_id = %format!("{id:016x}"),
                    "registered a member's log incarnation"
                );
            }
            Ok(Response::Refused(refusal)) => {
                tracing::warn!(node_id = node.id, member, reason = %refusal, "registration refused")
            }
            Ok(other) => tracing::warn!(?other, "unexpected answer to a registration"),
            Err(err) => {
                tracing::debug!(error = %err, "registration not proposed");
                return;
            }
        }
    }
}
