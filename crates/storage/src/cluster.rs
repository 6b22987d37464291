//! The cluster's identity record: which cluster this state belongs to, and
//! which disk each member's id stands for.
//!
//! Raft assumes that a node id always speaks for the same durable log. A node
//! whose data dir was lost and that comes back under its old id (a
//! Kubernetes pod with a new volume, an operator who wiped a directory) would
//! vote, and count toward a quorum, with a log that lacks entries it once
//! acknowledged: a majority could then form without them, and acknowledged
//! writes would be lost. So each node's log carries an *incarnation*, a random
//! number chosen when its log is created, and the replicated state records
//! the incarnation of every member ([`ClusterRecord::incarnations`]), and one
//! random cluster id chosen by the first leader. Every Raft message carries
//! the sender's cluster id and incarnation, and what the sender believes the
//! receiver's incarnation to be; a node refuses any message that disagrees
//! with the record (see `raft-node/src/identity.rs`). A node with a lost disk
//! must be removed and added again, which forgets its old incarnation.
//!
//! The record changes only through log entries ([`crate::Command::RegisterNode`]
//! and membership changes), so every replica holds the same one.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};

use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::Refusal;
use crate::types::NodeId;

/// The cluster id and each registered member's incarnation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Chosen by the first leader; `None` until its registration applied.
    pub cluster_id: Option<u64>,
    /// The incarnation (log identity) of each registered member.
    pub incarnations: BTreeMap<NodeId, u64>,
}

impl ClusterRecord {
    /// The incarnation registered for `node`, if any.
    pub fn incarnation(&self, node: NodeId) -> Option<u64> {
        self.incarnations.get(&node).copied()
    }

    /// Registers `node`'s incarnation. The first registration also sets the
    /// cluster id. Refused when the cluster id differs from the recorded one
    /// (the proposer belongs to another cluster) or when `node` is registered
    /// with another incarnation (its disk changed: it must be removed and
    /// added again, which forgets the old one). Registering the same pair
    /// again changes nothing.
    pub fn register(&mut self, node: NodeId, incarnation: u64, cluster_id: u64) -> Response {
        if incarnation == 0 || cluster_id == 0 {
            return Response::Refused(Refusal::InvalidArgument(
                "incarnation and cluster id must not be 0".into(),
            ));
        }
        if let Some(recorded) = self.cluster_id {
            if recorded != cluster_id {
                return Response::Refused(Refusal::InvalidArgument(format!(
                    "cluster id {cluster_id:016x} is not this cluster's ({recorded:016x})"
                )));
            }
        }
        match self.incarnations.get(&node) {
            Some(&known) if known == incarnation => {}
            Some(&known) => {
                return Response::Refused(Refusal::InvalidArgument(format!(
                "node {node} is registered with incarnation {known:016x}, not {incarnation:016x}: \
                     remove it and add it again"
            )))
            }
            None => {
                self.incarnations.insert(node, incarnation);
            }
        }
        self.cluster_id = Some(cluster_id);
        Response::NodeRegistered
    }

    /// Forgets the incarnations of nodes that are no longer members (applied
    /// with every membership entry), so a removed id can be added again with
    /// a new disk.
    pub fn retain_members(&mut self, members: &BTreeSet<NodeId>) {
        self.incarnations.retain(|node, _| members.contains(node));
    }
}

/// A random non-zero id (an incarnation, a cluster id), from the standard
/// library's per-process random hash keys mixed with the time and the
/// process id. Not for cryptography: it only has to differ between logs.
pub fn random_id() -> u64 {
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        let id = hasher.finish();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_registration_sets_the_cluster_id_and_a_changed_disk_is_refused() {
        let mut record = ClusterRecord::default();
        assert_eq!(record.register(1, 11, 99), Response::NodeRegistered);
        assert_eq!(record.cluster_id, Some(99));
        assert_eq!(record.register(1, 11, 99), Response::NodeRegistered);
        assert_eq!(record.register(2, 22, 99), Response::NodeRegistered);
        assert!(
            record.register(2, 23, 99).refusal().is_some(),
            "a new disk under an old id"
        );
        assert!(
            record.register(3, 33, 98).refusal().is_some(),
            "another cluster"
        );
        assert_eq!(record.incarnation(2), Some(22));
        record.retain_members(&BTreeSet::from([1]));
        assert_eq!(record.incarnation(2), None);
        assert_eq!(
            record.register(2, 23, 99),
            Response::NodeRegistered,
            "re-added with a new disk"
        );
    }
}
