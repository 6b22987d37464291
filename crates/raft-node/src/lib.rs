//! One raftq cluster node: openraft wired to the `raftq-storage` crate, the
//! peer network over tonic, the public gRPC services, leader forwarding and
//! long-poll waiting.
//!
//! Empty for now: the node arrives with the running cluster (issue 3). The
//! queue logic and the durable Raft log it will drive live in `raftq-storage`.
