//! `raftq.v1.ClusterService`: status and membership changes.
//!
//! Status is this node's own view, served wherever asked (only the leader
//! knows each follower's replication progress). Membership changes go to the
//! leader. Adding a node is two steps, as openraft's `add_learner` returns
//! before the new node has the log: it joins as a learner, the leader watches
//! its replication until it has caught up, and only then is it promoted to
//! voter, so a slow new node never weakens the quorum.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, ServerState};
use raftq_proto::v1 as pb;
use raftq_proto::v1::cluster_service_client::ClusterServiceClient;
use raftq_proto::v1::cluster_service_server::ClusterService;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::call;
use crate::auth::Caller;
use crate::config::check_addr;
use crate::error::{Error, Result};
use crate::identity::Standing;
use crate::node::Node;
use crate::propose::write_error;

/// How long a new node may take to catch up before `AddNode` gives up (it
/// stays a learner; calling `AddNode` again resumes).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// A learner within this many entries of the leader's log counts as caught up.
pub const CAUGHT_UP_LAG: u64 = 64;

/// The cluster service of one node.
pub struct ClusterApi {
    node: Arc<Node>,
}

impl ClusterApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ClusterApi { node }
    }
}

/// This node's view of the cluster; with `digest`, also the state digest (a
/// pass over the whole state, on a view taken under the state's lock in
/// O(queues): call it off the async workers, as `Status` does).
pub fn status(node: &Node, digest: bool) -> pb::StatusResponse {
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let last_log = metrics.last_log_index.unwrap_or(0);
    let members = membership
        .nodes()
        .map(|(id, member)| {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map_or(0, |log_id| log_id.index);
            let matched = if *id == node.id { last_log } else { matched };
            let role = if metrics.current_leader == Some(*id) {
                "leader"
            } else if voters.contains(id) {
                "voter"
            } else {
                "learner"
            };
            pb::Member {
                id: *id,
                addr: member.addr.clone(),
                role: role.into(),
                matched_index: matched,
                lag: if metrics.replication.is_some() {
                    last_log.saturating_sub(matched)
                } else {
                    0
                },
                disk_alarm: if *id == node.id {
                    node.disk.state().alarm
                } else {
                    node.disk.peer_alarm(*id)
                },
                clock_offset_ms: node.clock.peer_offset(*id).unwrap_or(0),
            }
        })
        .collect();
    let leader_addr = metrics
        .current_leader
        .and_then(|id| membership.get_node(&id))
        .map(|n| n.addr.clone());
    let (state, note) = match node.identity.standing() {
        Standing::Removed(why) => ("removed", Some(why)),
        Standing::Refused(why) => ("refused", Some(why)),
        Standing::Member => {
            let state = match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            };
            (
                state,
                node.clock.check_leading().err().map(|e| e.to_string()),
            )
        }
    };
    let disk = node.disk.state();
    let (applied, view) = {
        let state = node.state.read();
        (
            state.last_applied.map_or(0, |id| id.index),
            digest.then(|| state.queues.view()),
        )
    };
    let digest = view.map_or(0, |view| view.digest());
    pb::StatusResponse {
        node_id: node.id,
        leader_id: metrics.current_leader,
        leader_addr,
        term: metrics.current_term,
        last_log_index: last_log,
        commit_index: applied,
        applied_index: applied,
        members,
        state: state.into(),
        state_digest: digest,
        note,
        disk_free_bytes: disk.free_bytes,
        disk_min_free_bytes: disk.min_free_bytes,
        disk_alarm: disk.alarm,
        cluster_id: node
            .identity
            .cluster_id()
            .map(|id| format!("{id:016x}"))
            .unwrap_or_default(),
        incarnation: format!("{:016x}", node.identity.incarnation()),
    }
}

/// Refuses a membership change on a leader that has just removed itself:
/// it leads on until the change that removed it is committed, but it must
/// not start another (openraft 0.9 asserts against it, and would act on a
/// membership it is no longer in). The client retries and finds the next
/// leader. Found by the failover drill (a removal of the leader followed by
/// a second removal).
fn check_can_change_membership(node: &Node) -> Result<()> {
    let metrics = node.raft.metrics().borrow().clone();
    let voter = metrics
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == node.id);
    if metrics.state != ServerState::Leader || !voter {
        return Err(Error::Unavailable(format!(
            "node {} is leaving the cluster (it was removed) and takes no membership changes; \
             retry, the next leader will",
            node.id
        )));
    }
    Ok(())
}

async fn add_node(node: &Node, id: u64, addr: String) -> Result<pb::StatusResponse> {
    if id == 0 {
        return Err(Error::InvalidArgument("node id must be at least 1".into()));
    }
    check_addr(&addr).map_err(|why| Error::InvalidArgument(format!("address {addr:?}: {why}")))?;
    let _one_at_a_time = node.membership_change.lock().await;
    let (is_voter, existing) = {
        let metrics = node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == id);
        (is_voter, membership.get_node(&id).map(|n| n.addr.clone()))
    };
    if let Some(existing) = &existing {
        if existing != &addr {
            return Err(Error::InvalidArgument(format!(
                "node {id} is already a member at {existing}; remove it first to move it to {addr}"
            )));
        }
        if is_voter {
            return Ok(status(node, false));
        }
    } else {
        check_can_change_membership(node)?;
        node.raft
            .add_learner(id, BasicNode { addr: addr.clone() }, false)
            .await
            .map_err(|err| write_error(&err))?;
        tracing::info!(node_id = node.id, new = id, %addr, "added learner; waiting for it to catch up");
    }
    wait_caught_up(node, id).await?;
    check_can_change_membership(node)?;
    node.raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(|err| write_error(&err))?;
    tracing::info!(node_id = node.id, new = id, "promoted to voter");
    Ok(status(node, false))
}

async fn wait_caught_up(node: &Node, id: u64) -> Result<()> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let mut metrics = node.raft.metrics();
    loop {
        {
            let m = metrics.borrow_and_update();
            if m.current_leader != Some(node.id) {
                return Err(node.forwarder.not_leader());
            }
            let last = m.last_log_index.unwrap_or(0);
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map_or(0, |log_id| log_id.index);
            if matched > 0 && last.saturating_sub(matched) <= CAUGHT_UP_LAG {
                return Ok(());
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() {
                return Err(Error::Unavailable("raft has stopped on this node".into()));
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::Timeout(format!(
                    "node {id} did not catch up within {}s; it stays a learner, call add-node again to retry",
                    CATCH_UP_TIMEOUT.as_secs()
                )));
            }
        }
    }
}

async fn remove_node(node: &Node, id: u64) -> Result<pb::StatusResponse> {
    let _one_at_a_time = node.membership_change.lock().await;
    let (voters, is_member) = {
        let metrics = node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        (voters, membership.get_node(&id).is_some())
    };
    if !is_member {
        return Err(Error::NotMember(id));
    }
    check_can_change_membership(node)?;
    if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(Error::InvalidArgument(format!(
                "node {id} is the only voter; a cluster cannot remove its last voter"
            )));
        }
        node.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|err| write_error(&err))?;
    } else {
        node.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(|err| write_error(&err))?;
    }
    tracing::info!(node_id = node.id, removed = id, "node removed");
    Ok(status(node, false))
}

/// The note of a status cut down for a caller who is not an admin.
pub const LEADER_ONLY_NOTE: &str = "the members, indexes and disks are shown to admin tokens only";

/// What a caller who is not an admin sees of a status: who answered, who
/// leads, the term and the state; not the members, indexes or disks.
fn leader_only(full: pb::StatusResponse) -> pb::StatusResponse {
    pb::StatusResponse {
        node_id: full.node_id,
        leader_id: full.leader_id,
        leader_addr: full.leader_addr,
        term: full.term,
        state: full.state,
        note: Some(LEADER_ONLY_NOTE.to_string()),
        ..pb::StatusResponse::default()
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> std::result::Result<Response<pb::StatusResponse>, Status> {
        // Any authenticated caller may ask (clients find the leader this
        // way); only an admin sees the membership, indexes and disks.
        let admin = Caller::of(&request)?.is_admin();
        call(
            &self.node,
            "status",
            false,
            request,
            |node, req| async move {
                if !admin {
                    return Ok(leader_only(status(&node, false)));
                }
                if !req.digest {
                    return Ok(status(&node, false));
                }
                // A pass over every message: not on an async worker.
                tokio::task::spawn_blocking(move || status(&node, true))
                    .await
                    .map_err(|err| Error::Internal(format!("status digest: {err}")))
            },
            |channel, req| async move { ClusterServiceClient::new(channel).status(req).await },
        )
        .await
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> std::result::Result<Response<pb::AddNodeResponse>, Status> {
        Caller::of(&request)?
            .check_admin("adding a node")
            .map_err(super::status::to_status)?;
        call(
            &self.node,
            "add_node",
            true,
            request,
            |node, req| async move {
                Ok(pb::AddNodeResponse {
                    status: Some(add_node(&node, req.id, req.addr).await?),
                })
            },
            |channel, mut req| async move {
                req.set_timeout(CATCH_UP_TIMEOUT + Duration::from_secs(30));
                ClusterServiceClient::new(channel).add_node(req).await
            },
        )
        .await
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> std::result::Result<Response<pb::RemoveNodeResponse>, Status> {
        Caller::of(&request)?
            .check_admin("removing a node")
            .map_err(super::status::to_status)?;
        call(
            &self.node,
            "remove_node",
            true,
            request,
            |node, req| async move {
                Ok(pb::RemoveNodeResponse {
                    status: Some(remove_node(&node, req.id).await?),
                })
            },
            |channel, req| async move { ClusterServiceClient::new(channel).remove_node(req).await },
        )
        .await
    }
}
