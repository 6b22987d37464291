//! Cluster, failover and consistency tests for raftq, and the harness they
//! share.
//!
//! - [`cluster`]: an in-process cluster of real nodes (real sled stores in a
//!   temp dir, real gRPC on loopback ports), with kill, restart and add.
//!
//! The tests live in `tests/tests/`: `queue_api.rs` (every RPC and bad
//! input, through a follower and the leader), `failover.rs` (leader loss
//! under load, catch-up by log and by snapshot), `membership.rs` (add and
//! remove nodes under load).

pub mod cluster;
pub mod load;
