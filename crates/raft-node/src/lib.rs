//! One raftq cluster node.
//!
//! # The path of a request
//!
//! An **enqueue**:
//!
//! 1. arrives at [`service::queue`] (`QueueApi::enqueue`) on any node;
//!    [`service::call`] routes it: a follower forwards it to the leader
//!    ([`forward`]) and returns the answer with the leader in the metadata;
//! 2. on the leader it is checked against the disk alarm ([`disk`]: no
//!    enqueue while a voter's disk is low) and the [`memory`] budget of the
//!    queue state, becomes a `Command::Enqueue`
//!    stamped by the leader's [`clock`] (the state's time carried forward;
//!    refused while this node's clock is far from its voters') and goes to
//!    the [`propose`]r, which folds it with concurrent requests into one
//!    `Command::Batch` entry (bounded by count and bytes) and calls openraft's
//!    `client_write` (a full proposal queue refuses it: the leader is
//!    overloaded, the client backs off);
//! 3. openraft appends the entry to the sled log (`raftq_storage::log_store`,
//!    group-committed fsync) and sends it to the followers over [`network`]
//!    (appends bounded by an adaptive byte budget); every message carries the
//!    sender's cluster id, log incarnation, clock and disk alarm, checked by
//!    [`identity`] on both sides; each follower's [`service::raft`] hands it
//!    to its openraft, which appends and fsyncs it the same way;
//! 4. once a majority has it durable, it is committed and applied
//!    (`raftq_storage::state_machine` → `queue::enqueue`); `client_write`
//!    returns the batch's responses and each caller gets its own.
//!
//! A **receive** takes the same road; when nothing is ready and the request
//! may wait, [`wait`] sleeps on the applied state instead of writing to the
//! log, and one ready message wakes one waiter. A **consume** stream receives in a loop, leasing no more than it can
//! soon send, and releases what it could not send when it ends. **Ack**,
//! nack, extend and release take the same road as enqueue. **Reads**
//! (list, get) pass [`read::barrier`] (read-index) on the leader and are
//! computed from a point-in-time view of the state, off its lock, as are
//! `/metrics` and the status digest. The
//! [`ticker`] proposes housekeeping ticks and registers members' log
//! incarnations, [`bootstrap`] forms the cluster on first start, [`metrics`]
//! and [`service::http`] expose the node. A storage failure or hang stops
//! the node ([`node`]). [`tls`] and [`auth`] decide who may call: peers by
//! certificate, users by token and per-queue permission; [`limits`] bounds
//! what one connection may hold.

pub mod auth;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod convert;
pub mod disk;
pub mod error;
pub mod forward;
pub mod identity;
pub mod incoming;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod network;
pub mod node;
pub mod pki;
pub mod propose;
pub mod read;
pub mod service;
pub mod shutdown;
pub mod ticker;
pub mod tls;
pub mod wait;

pub use config::{NodeConfig, ServeArgs};
pub use error::{Error, Result};
pub use node::{Node, NodeHandle};
