//! Cluster, failover and consistency tests for raftq, and the checker they
//! share.
//!
//! Empty for now: cluster tests need the node (issue 3) and the checker comes
//! with the failover drill (issue 4). The storage crate's own tests live in
//! `crates/storage`.
