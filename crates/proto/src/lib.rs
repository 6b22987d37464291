//! raftq's gRPC contract and its generated code.
//!
//! - [`v1`]: the public API (`raftq.v1`): `QueueService` and `ClusterService`.
//!   The `.proto` files under `proto/raftq/v1/` document every call and field.
//! - [`internal`]: node-to-node Raft traffic (`raftq.internal.v1`), opaque
//!   payloads; not for clients.
//!
//! Generated with protox and tonic-prost-build at build time; no system
//! `protoc` is needed.

#![allow(missing_docs, clippy::all)]

/// The public API, `raftq.v1`.
pub mod v1 {
    tonic::include_proto!("raftq.v1");
}

/// Node-to-node traffic, `raftq.internal.v1`.
pub mod internal {
    tonic::include_proto!("raftq.internal.v1");
}

/// The encoded file descriptor set of every raftq proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/raftq_descriptor.bin"));

/// Response metadata key naming the leader's node id.
pub const LEADER_ID_HEADER: &str = "raftq-leader-id";
/// Response metadata key naming the leader's address.
pub const LEADER_ADDR_HEADER: &str = "raftq-leader-addr";
/// Metadata key on a refused internal Raft message naming why: `removed`,
/// `lost-data`, `stale-record`, `other-cluster` or `clock-skew` (see
/// `raft.proto`).
pub const REFUSAL_HEADER: &str = "raftq-refusal";
/// Metadata key on every status a raftq node answers with itself, naming
/// the node: a client tells a node that answered "unavailable" (no leader
/// there right now) from a connection that failed.
pub const NODE_ID_HEADER: &str = "raftq-node-id";
