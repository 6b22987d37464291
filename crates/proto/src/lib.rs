//! The public gRPC contract of raftq (`raftq.v1`) and its generated code.
//!
//! Empty for now: the `.proto` files and the tonic/prost code generated from
//! them arrive with the running cluster (issue 3). Nothing here pretends to work
//! yet.
