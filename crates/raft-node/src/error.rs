//! The node's one error type, and its result alias.
//!
//! Every error a request can meet is one of these; [`crate::service::status`]
//! turns them into gRPC statuses in one place.

use raftq_storage::Refusal;

/// What went wrong with a request or the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command was applied and refused (bad input, no such queue, …).
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// The request is malformed before it reaches the log.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// This node is not the leader; the leader is named when known.
    #[error("this node is not the leader{}", leader_hint(.leader_id, .leader_addr))]
    NotLeader {
        /// The leader's id, when known.
        leader_id: Option<u64>,
        /// The leader's address, when known.
        leader_addr: Option<String>,
    },
    /// A request over a size limit; the text names the limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A data disk is below its free-space limit: enqueues are refused.
    #[error("disk alarm: {0}")]
    DiskAlarm(String),
    /// The queue state is at its memory budget: enqueues are refused.
    #[error("memory alarm: {0}")]
    MemoryAlarm(String),
    /// No leader or no quorum now; retry.
    #[error("unavailable: {0}; retry")]
    Unavailable(String),
    /// The cluster did not answer in time; retry.
    #[error("timed out: {0}; retry")]
    Timeout(String),
    /// A membership request names a node that is not a member.
    #[error("node {0} is not a member of the cluster: see `raftq cluster status`")]
    NotMember(u64),
    /// The caller lacks a permission; the text names it and the queue.
    #[error("{0}")]
    PermissionDenied(String),
    /// Configuration is invalid; the text names the rule.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Storage failed: the node cannot go on.
    #[error("storage: {0}")]
    Storage(#[from] raftq_storage::Error),
    /// A socket could not be bound or a file read.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Something that should not happen; the text says what.
    #[error("internal: {0}")]
    Internal(String),
}

fn leader_hint(id: &Option<u64>, addr: &Option<String>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!(": the leader is node {id} at {addr}"),
        (Some(id), None) => format!(": the leader is node {id}"),
        _ => "; no leader is known right now, retry".to_string(),
    }
}

/// Results of the node.
pub type Result<T> = std::result::Result<T, Error>;
