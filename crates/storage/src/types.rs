//! The openraft type configuration: what a log entry carries, what applying it
//! returns, and how snapshots travel.
//!
//! openraft types stay inside `raftq-storage` and `raftq-raft-node`: the client
//! crate and the public proto never see them, so a move to openraft 0.10
//! touches only those two crates.

use crate::command::{Command, Response};

/// A cluster member's id, as given by `--id` and in `--initial-cluster`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// raftq's openraft type configuration.
    ///
    /// Snapshots are files: the builder writes one to disk and openraft sends
    /// it to followers in bounded chunks, so no node ever holds a whole
    /// snapshot in one buffer.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log entry of raftq's Raft log.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// The membership as of a log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// The error type of openraft's storage traits.
pub type StorageError = openraft::StorageError<NodeId>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
