//! The Rust client library services embed to talk to a raftq cluster: leader
//! discovery, safe retries, idempotent batched enqueue and consumer streams.
//!
//! Empty for now: it arrives with the public gRPC API (issue 3).
