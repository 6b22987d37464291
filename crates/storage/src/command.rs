//! The command set: the payload of every raftq Raft log entry, and what
//! applying one returns.
//!
//! [`Command`] is one closed enum: every change to a queue is one of these,
//! stamped by the leader with `now` where time matters. [`Command::Batch`]
//! carries many client requests in one entry, applied in order with one
//! response each: the node folds concurrent requests into one batch while the
//! previous entry commits, because openraft 0.9 appends and fsyncs each
//! `client_write` on its own.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Refusal;
use crate::queue::{
    Delivery, MessageId, NewMessage, QueueConfig, QueueConfigPatch, QueueName, Receipt, Timestamp,
};
use crate::types::NodeId;

/// A change to the queues; one Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a queue; the same config again is a no-op, another is refused.
    CreateQueue {
        /// Its name.
        name: QueueName,
        /// Its configuration.
        config: QueueConfig,
        /// The leader's clock.
        now: Timestamp,
    },
    /// Changes the options of a queue's configuration that the patch sets.
    UpdateQueue {
        /// The queue.
        name: QueueName,
        /// What changes.
        patch: QueueConfigPatch,
    },
    /// Deletes a queue and its messages.
    DeleteQueue {
        /// The queue.
        name: QueueName,
    },
    /// Removes the messages of a queue that no consumer holds.
    Purge {
        /// The queue.
        name: QueueName,
        /// The leader's clock (which leases are still held).
        now: Timestamp,
    },
    /// Appends messages; each gets the next id of the cluster-wide counter.
    Enqueue {
        /// The queue.
        queue: QueueName,
        /// The messages, at most [`crate::queue::MAX_ENQUEUE_MESSAGES`].
        messages: Vec<NewMessage>,
        /// The leader's clock.
        now: Timestamp,
    },
    /// Leases up to `max` ready messages in the order they became ready.
    Receive {
        /// The queue.
        queue: QueueName,
        /// How many at most (1 to [`crate::queue::MAX_RECEIVE`]).
        max: u32,
        /// Lease length; the queue's visibility timeout when absent.
        visibility_ms: Option<u64>,
        /// Most message bytes (bodies and attributes) to lease, so the
        /// answer fits a response; at least one message is leased whatever
        /// its size. At most (and when absent)
        /// [`crate::queue::MAX_RECEIVE_BYTES`].
        max_bytes: Option<u64>,
        /// Who receives, for stats.
        consumer: String,
        /// The leader's clock.
        now: Timestamp,
    },
    /// Deletes each message whose current lease matches its receipt.
    Ack {
        /// The queue.
        queue: QueueName,
        /// The receipts.
        receipts: Vec<Receipt>,
    },
    /// Ends each matching lease now.
    Nack {
        /// The queue.
        queue: QueueName,
        /// The receipts.
        receipts: Vec<Receipt>,
        /// Keep the message invisible this long; the retry backoff when absent.
        delay_ms: Option<u64>,
        /// Why, kept with the message and its dead letter.
        reason: Option<String>,
        /// The leader's clock.
        now: Timestamp,
    },
    /// Moves each matching lease's deadline to `now + visibility_ms`.
    Extend {
        /// The queue.
        queue: QueueName,
        /// The receipts.
        receipts: Vec<Receipt>,
        /// The new lease length from now.
        visibility_ms: u64,
        /// The leader's clock.
        now: Timestamp,
    },
    /// Ends each matching lease now without counting it as a delivery: the
    /// consumer never got the message (a consume stream could not send it,
    /// a client closed before handing it to the application). The message is
    /// ready again at once, in its old place.
    Release {
        /// The queue.
        queue: QueueName,
        /// The receipts.
        receipts: Vec<Receipt>,
    },
    /// Records a member's incarnation (the identity of its log) and, with
    /// the first registration, the cluster id; see [`crate::cluster`].
    RegisterNode {
        /// The member.
        node: NodeId,
        /// Its log's incarnation.
        incarnation: u64,
        /// The cluster id the leader holds or, for the first registration,
        /// chose.
        cluster_id: u64,
    },
    /// Housekeeping: drop expired messages, forget lapsed dedup ids.
    Tick {
        /// The leader's clock.
        now: Timestamp,
    },
    /// Moves up to `max` dead letters back to their source queues.
    Redrive {
        /// The dead-letter queue.
        dlq: QueueName,
        /// How many at most.
        max: u32,
        /// The leader's clock.
        now: Timestamp,
    },
    /// Many commands in one entry, applied in order, one response each.
    Batch(Vec<Command>),
}

impl Command {
    /// An enqueue of plain bodies (tests, benchmarks, examples).
    pub fn enqueue(
        queue: &str,
        bodies: impl IntoIterator<Item = impl Into<bytes::Bytes>>,
        now: u64,
    ) -> Self {
        Command::Enqueue {
            queue: QueueName::new(queue),
            messages: bodies.into_iter().map(NewMessage::new).collect(),
            now: Timestamp(now),
        }
    }

    /// A receive with the queue's visibility timeout.
    pub fn receive(queue: &str, max: u32, now: u64) -> Self {
        Command::Receive {
            queue: QueueName::new(queue),
            max,
            visibility_ms: None,
            max_bytes: None,
            consumer: String::new(),
            now: Timestamp(now),
        }
    }

    /// A create with the default config.
    pub fn create(queue: &str, now: u64) -> Self {
        Command::CreateQueue {
            name: QueueName::new(queue),
            config: QueueConfig::default(),
            now: Timestamp(now),
        }
    }

    /// An ack of some receipts.
    pub fn ack(queue: &str, receipts: impl IntoIterator<Item = Receipt>) -> Self {
        Command::Ack {
            queue: QueueName::new(queue),
            receipts: receipts.into_iter().collect(),
        }
    }
}

impl fmt::Display for Command {
    /// A compact one-line form for logs and tests; bodies are not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::CreateQueue { name, now, .. } => write!(f, "create {name} @{}", now.0),
            Command::UpdateQueue { name, .. } => write!(f, "update {name}"),
            Command::DeleteQueue { name } => write!(f, "delete {name}"),
            Command::Purge { name, now } => write!(f, "purge {name} @{}", now.0),
            Command::Enqueue {
                queue,
                messages,
                now,
            } => {
                write!(f, "enqueue {queue} x{} @{}", messages.len(), now.0)
            }
            Command::Receive {
                queue, max, now, ..
            } => write!(f, "receive {queue} max={max} @{}", now.0),
            Command::Ack { queue, receipts } => write!(f, "ack {queue} x{}", receipts.len()),
            Command::Nack {
                queue,
                receipts,
                now,
                ..
            } => {
                write!(f, "nack {queue} x{} @{}", receipts.len(), now.0)
            }
            Command::Extend {
                queue,
                receipts,
                now,
                ..
            } => {
                write!(f, "extend {queue} x{} @{}", receipts.len(), now.0)
            }
            Command::Release { queue, receipts } => {
                write!(f, "release {queue} x{}", receipts.len())
            }
            Command::RegisterNode {
                node, incarnation, ..
            } => write!(f, "register node {node} incarnation {incarnation:016x}"),
            Command::Tick { now } => write!(f, "tick @{}", now.0),
            Command::Redrive { dlq, max, now } => write!(f, "redrive {dlq} max={max} @{}", now.0),
            Command::Batch(commands) => write!(f, "batch x{}", commands.len()),
        }
    }
}

/// What an enqueued message became.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// Its id; for a duplicate, the first message's id.
    pub id: MessageId,
    /// True when the dedup id was seen within the window and nothing was stored.
    pub duplicate: bool,
}

/// The result of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries carry no command.
    None,
    /// The command was refused as a whole; nothing changed.
    Refused(Refusal),
    /// A queue was created, or already existed with this config.
    QueueCreated {
        /// False when it already existed with the same config.
        created: bool,
    },
    /// A queue's config was changed; the config now in force.
    QueueUpdated {
        /// The whole config after the change.
        config: QueueConfig,
    },
    /// A queue was deleted.
    QueueDeleted {
        /// How many messages it held.
        messages: u64,
    },
    /// A queue was purged.
    Purged {
        /// How many messages were removed.
        messages: u64,
    },
    /// One result per message, in order.
    Enqueued(Vec<Result<Enqueued, Refusal>>),
    /// The messages leased, in the order they became ready.
    Received {
        /// The leased messages.
        deliveries: Vec<Delivery>,
        /// Messages moved to the dead-letter queue on the way.
        dead_lettered: u64,
        /// Messages dropped on the way because they reached
        /// `max_deliveries` and the queue has no dead-letter queue: each id
        /// with its delivery count, for the node's log.
        dropped: Vec<(MessageId, u32)>,
        /// Expired messages dropped on the way.
        expired: u64,
    },
    /// One result per receipt.
    Acked(Vec<Result<(), Refusal>>),
    /// One result per receipt.
    Nacked(Vec<Result<(), Refusal>>),
    /// One result per receipt: the new deadline.
    Extended(Vec<Result<Timestamp, Refusal>>),
    /// One result per receipt.
    Released(Vec<Result<(), Refusal>>),
    /// A member's incarnation is recorded.
    NodeRegistered,
    /// A tick's work.
    Ticked {
        /// Messages dropped past their expiry.
        expired: u64,
        /// Dedup ids forgotten.
        dedup_trimmed: u64,
    },
    /// A redrive's work.
    Redriven {
        /// Messages moved back.
        moved: u64,
        /// Messages left in place because their source queue is gone or full.
        skipped: u64,
    },
    /// One response per command of a batch.
    Batch(Vec<Response>),
}

impl Response {
    /// The refusal, when the whole command was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Response::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }
}
