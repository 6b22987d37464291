//! The two kinds of failure this crate knows.
//!
//! - A [`Refusal`] is deterministic: every replica applying the same command
//!   refuses it the same way (no such queue, stale receipt, queue full). It is
//!   an applied result, travels inside [`crate::Response`] and changes nothing.
//! - An [`Error`] is a node failure: a sled I/O error, a corrupt or torn log
//!   record, an undecodable committed entry. It goes to openraft as a storage
//!   error and stops the node, because applying past it would let replicas
//!   diverge.

use serde::{Deserialize, Serialize};

/// A node failure: storage I/O or corrupt data. Never caused by user input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed to read or write.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A filesystem operation (snapshot files) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A record could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] postcard::Error),
    /// A stored record failed its checksum or is cut short: a torn write or
    /// disk corruption. The record is never applied.
    #[error("corrupt record at {what}: {why}")]
    Corrupt {
        /// Which record (a key or a log index).
        what: String,
        /// What was wrong with it.
        why: String,
    },
    /// A record was written by a newer release that this one cannot read.
    #[error("record at {what} has format version {version}; this release reads up to {supported}: upgrade this node")]
    UnknownVersion {
        /// Which record.
        what: String,
        /// The version byte found.
        version: u8,
        /// The newest version this release reads.
        supported: u8,
    },
    /// A record was written by an earlier development release whose format
    /// this one no longer reads.
    #[error("record at {what} has format version {version}, written by an earlier release; this release reads versions {oldest} and later. Drain the node's queues with the release that wrote them, then start this release on an empty data dir")]
    OldVersion {
        /// Which record.
        what: String,
        /// The version byte found.
        version: u8,
        /// The oldest version this release reads.
        oldest: u8,
    },
    /// The data dir holds the sled state database of a release from before
    /// the queue state moved to memory (persisted by snapshots); this
    /// release does not read it.
    #[error("{path} is the state database of a release from before raftq kept the queue state in memory; this release does not read it. Drain the node's queues with the release that wrote them, then start this release on an empty data dir")]
    OldStateDatabase {
        /// The old database's directory.
        path: String,
    },
    /// A write would overwrite log entries this node has already applied:
    /// the cluster has lost entries that this node acknowledged (another
    /// node lost its data and came back under its old id, or a backup was
    /// restored). Continuing would make this replica diverge.
    #[error("the log would lose entry {index} and later, but this node has applied up to {applied}: the cluster lost acknowledged entries; stopping instead of diverging")]
    LogBelowApplied {
        /// The first entry the write would remove.
        index: u64,
        /// This node's applied index.
        applied: u64,
    },
}

impl Error {
    /// Whether this is a record written by a release this one cannot read.
    pub fn is_version(&self) -> bool {
        matches!(
            self,
            Error::UnknownVersion { .. }
                | Error::OldVersion { .. }
                | Error::OldStateDatabase { .. }
        )
    }
}

/// Results of this crate's fallible, non-deterministic operations.
pub type Result<T> = std::result::Result<T, Error>;

/// A deterministic refusal of a command or of one item of it. It leaves the
/// queues as they were (only the state clock may move forward to the
/// command's `now`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The request itself is malformed or out of range; the text names the
    /// rule. Fix the request; retrying it unchanged fails again.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No queue of that name exists. Create it first.
    #[error("queue {0:?} does not exist: create it first")]
    QueueNotFound(String),
    /// A queue of that name exists with a different configuration.
    #[error("queue {0:?} already exists with a different configuration: use update to change it")]
    QueueExists(String),
    /// The queue is at `max_length` or `max_bytes` and its overflow policy
    /// is `reject`. Consume, raise the limit or retry later.
    #[error("queue {queue:?} is full ({limit}); consume from it, raise the limit or retry later")]
    QueueFull {
        /// The queue.
        queue: String,
        /// Which limit was hit.
        limit: String,
    },
    /// The receipt belongs to an earlier lease: the message was delivered
    /// again since, or nacked. Its current holder acks it.
    #[error(
        "stale receipt: message {0} was leased again or released since this receipt was issued"
    )]
    ReceiptStale(u64),
    /// The message the receipt names is gone: acked, purged, expired or
    /// dead-lettered.
    #[error("unknown receipt: message {0} is no longer in the queue (acked, purged, expired or dead-lettered)")]
    ReceiptUnknown(u64),
    /// The queue cannot be deleted because another queue dead-letters into
    /// it. Point that queue elsewhere first.
    #[error("queue {queue:?} is the dead-letter queue of {used_by:?}: update {used_by:?} first")]
    DeadLetterQueueInUse {
        /// The queue that was to be deleted.
        queue: String,
        /// A queue whose `dead_letter_queue` names it.
        used_by: String,
    },
}
