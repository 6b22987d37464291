//! The operations a history records, and what each carries.
//!
//! An operation's invoke record carries the request (the queue, the payloads
//! sent, the receipts); its completion carries the same request with the
//! results filled in (the ids given, the deliveries returned, which receipts
//! were refused). Everything is plain data with serde, one JSON object per
//! record, tagged by `type`.

use serde::{Deserialize, Serialize};

/// The unique body of one message the workload enqueues; it identifies the
/// message across retries, redeliveries and dead-lettering.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PayloadId(pub String);

impl PayloadId {
    /// A payload id.
    pub fn new(id: impl Into<String>) -> Self {
        PayloadId(id.into())
    }
}

impl std::fmt::Display for PayloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One message of an enqueue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPayload {
    /// Its payload id (the message body).
    pub payload: PayloadId,
    /// Its message group, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The outcome of one message of an enqueue that returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueResult {
    /// The message it is about.
    pub payload: PayloadId,
    /// The id the queue gave it; `None` when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The queue had seen its dedup id and stored nothing new.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Why the queue refused it, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Where a dead letter came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// The queue it was dead-lettered from.
    pub queue: String,
    /// Its id there.
    pub id: u64,
}

/// One message a receive returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The message id in the queue received from.
    pub id: u64,
    /// Its body, read as a payload id.
    pub payload: PayloadId,
    /// 1 for the first delivery from this queue.
    pub delivery_count: u32,
    /// The receipt (`ID-LEASE`) to ack or nack it with.
    pub receipt: String,
    /// Its message group, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For a dead letter, the message it was in its source queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Origin>,
}

/// The outcome of one receipt of an ack or nack that returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptResult {
    /// The receipt it is about.
    pub receipt: String,
    /// Why it was refused (stale, unknown), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// An operation. The invoke record carries the request; the completion
/// carries the request again with the results filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Enqueue messages (one client call, retried inside the client).
    Enqueue {
        /// The queue.
        queue: String,
        /// The messages sent.
        messages: Vec<NewPayload>,
        /// One per message once the call returned.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        results: Vec<EnqueueResult>,
    },
    /// Receive (lease) messages.
    Receive {
        /// The queue.
        queue: String,
        /// Most messages asked for.
        max: u32,
        /// Lease length asked for; `None` means the queue's default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visibility_ms: Option<u64>,
        /// What it returned.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deliveries: Vec<DeliveryRecord>,
    },
    /// Ack receipts.
    Ack {
        /// The queue.
        queue: String,
        /// The receipts sent.
        receipts: Vec<String>,
        /// One per receipt once the call returned.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        results: Vec<ReceiptResult>,
    },
    /// Nack receipts (end the leases now).
    Nack {
        /// The queue.
        queue: String,
        /// The receipts sent.
        receipts: Vec<String>,
        /// One per receipt once the call returned.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        results: Vec<ReceiptResult>,
    },
    /// How many messages a queue holds (ready, in flight and delayed), read
    /// after the drain.
    Depth {
        /// The queue.
        queue: String,
        /// The count, once read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        messages: Option<u64>,
    },
    /// A fault a nemesis injected: the invoke is its start, the completion
    /// its end (healed).
    Fault {
        /// What it was (`kill node 2`, `partition {1} {2,3}`).
        name: String,
    },
}

impl Op {
    /// Whether it is a call to the cluster (not a fault or a note), counted
    /// in progress and availability figures.
    pub fn is_client_call(&self) -> bool {
        !matches!(self, Op::Fault { .. })
    }
}
