//! Leader forwarding: any node accepts any request.
//!
//! A request that needs the leader (every write, every linearizable read, a
//! membership change) is served locally when this node leads; otherwise it is
//! sent on, unchanged, to the leader's public gRPC service, and the answer is
//! returned with the leader's id and address in the metadata, so smart
//! clients go there next. A forwarded request carries [`FORWARDED_HEADER`];
//! a node that receives one and does not lead answers `UNAVAILABLE` with its
//! leader hint instead of forwarding again, so stale views can never bounce a
//! request around the cluster. The header grants nothing: a forwarded call
//! carries its caller's own token and the leader checks it again
//! ([`crate::auth`]).

use openraft::Raft;
use raftq_storage::{NodeId, TypeConfig};
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::network::Channels;

/// Metadata key marking a request a node forwarded.
pub const FORWARDED_HEADER: &str = "raftq-forwarded";

/// Where a request goes.
pub enum Route {
    /// This node leads: serve it here.
    Local,
    /// Send it to the leader.
    Leader {
        /// The leader's id.
        id: NodeId,
        /// Its address.
        addr: String,
        /// A channel to it.
        channel: Channel,
    },
}

/// Routes requests to the leader, over the node's shared channels.
pub struct Forwarder {
    id: NodeId,
    raft: Raft<TypeConfig>,
    channels: Channels,
}

impl Forwarder {
    /// A forwarder for node `id`.
    pub fn new(id: NodeId, raft: Raft<TypeConfig>, channels: Channels) -> Self {
        Forwarder { id, raft, channels }
    }

    /// The leader as this node sees it: id and address.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone());
        Some((leader, addr))
    }

    /// The error that names the leader (or says none is known).
    pub fn not_leader(&self) -> Error {
        match self.leader() {
            Some((id, addr)) if id != self.id => Error::NotLeader {
                leader_id: Some(id),
                leader_addr: addr,
            },
            _ => Error::NotLeader {
                leader_id: None,
                leader_addr: None,
            },
        }
    }

    /// Where a request goes; `forwarded` is whether another node sent it here.
    pub fn route(&self, forwarded: bool) -> Result<Route> {
        match self.leader() {
            Some((id, _)) if id == self.id => Ok(Route::Local),
            Some((id, Some(addr))) if !forwarded => {
                let channel = self.channel(id, &addr)?;
                Ok(Route::Leader { id, addr, channel })
            }
            _ => Err(self.not_leader()),
        }
    }

    fn channel(&self, id: NodeId, addr: &str) -> Result<Channel> {
        self.channels.get(id, addr).map_err(Error::Unavailable)
    }
}
