//! Everything raftq persists, and the queue logic that decides what to persist.
//!
//! An enqueue reaches this crate as a [`Command`] inside an openraft log entry:
//!
//! 1. `LogStore::append` ([`log_store`]) writes the entry to the Raft log's own
//!    sled database, with a version byte and a checksum ([`codec`]), and tells
//!    openraft it is durable only after the group-commit flush returned.
//! 2. Once a majority has it, openraft calls
//!    `StateMachine::apply` ([`state_machine`]), which runs each command through the
//!    pure queue logic ([`queue::Queues::apply`]) on the state in memory:
//!    nothing is written, the log is the state's durability.
//! 3. [`snapshot`] streams the state to a file on openraft's snapshot policy
//!    and at a clean shutdown; a restart loads the newest one and re-applies
//!    the log after it; lagging followers get it in chunks.
//!
//! The queue logic in [`queue`] has no I/O, no clock and no tokio: time enters
//! only as the `now` the leader stamped on the command, so every replica that
//! applies the same log reaches the same state.

pub mod cluster;
pub mod codec;
pub mod command;
pub mod error;
pub mod fsync;
pub mod log_store;
pub mod queue;
pub mod snapshot;
pub mod state_machine;
pub mod timing;
pub mod types;

pub use command::{Command, Response};
pub use error::{Error, Refusal, Result};
pub use log_store::LogStore;
pub use state_machine::StateMachine;
pub use types::{NodeId, TypeConfig};
