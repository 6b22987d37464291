//! The nouns of a queue: names, ids, timestamps, messages, leases, receipts.
//!
//! Invariants of a stored [`Message`]:
//! - `id` is unique in the whole cluster forever: ids come from one counter
//!   of the replicated state and are never reused, not after a purge and not
//!   in a queue deleted and created again under the same name. A receipt or
//!   an id from a queue's earlier life therefore never names a message of
//!   its later one.
//! - `lease`, when present, belongs to lease number `delivery_count`; a
//!   [`Receipt`] names that pair, so a receipt from an earlier lease never
//!   matches again.
//! - `released <= delivery_count`: leases given back unseen (a consume stream
//!   that could not send them, a consumer closed before handing them to the
//!   application) count as leases but not as deliveries; `max_deliveries`
//!   and the delivery count a consumer sees use `delivery_count - released`.
//! - `visible_at` is when the message may be delivered next: the enqueue delay,
//!   the end of a lease plus the retry backoff, or the end of a nack's delay.
//! - `expires_at` is `enqueued_at` plus the smaller of the queue's TTL and its
//!   retention; past it the message is dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Refusal;

/// Milliseconds since the Unix epoch, stamped by the leader on each command.
/// The state machine never reads a clock of its own.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This instant plus `ms` milliseconds, saturating at the end of time.
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to this instant, or 0 if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A message's id: assigned in enqueue order from one cluster-wide counter,
/// never reused, so ids increase within each queue and never repeat.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The longest queue name, in bytes.
pub const MAX_QUEUE_NAME_BYTES: usize = 128;

/// A queue's name. Valid names match `^[A-Za-z0-9._-]{1,128}$`; a command may
/// carry any string, and [`QueueName::validate`] refuses the bad ones when the
/// command is applied. Cheap to clone: every message key names its queue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Wraps a name without checking it.
    pub fn new(name: impl AsRef<str>) -> Self {
        QueueName(Arc::from(name.as_ref()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks the naming rule.
    pub fn validate(&self) -> Result<(), Refusal> {
        let ok = !self.0.is_empty()
            && self.0.len() <= MAX_QUEUE_NAME_BYTES
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(())
        } else {
            Err(Refusal::InvalidArgument(format!(
                "queue name {:?} must be 1 to {MAX_QUEUE_NAME_BYTES} characters of A-Z, a-z, 0-9, '.', '_' or '-'",
                truncate(&self.0, 160)
            )))
        }
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for QueueName {
    fn from(name: &str) -> Self {
        QueueName::new(name)
    }
}

/// Shortens user input quoted back in an error message.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Names one lease of one message: the message and the number of the lease
/// (1 for the first). Acks, nacks, extends and releases must present the
/// receipt of the current lease. Message ids are never reused, so a receipt
/// names at most one lease ever.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// The leased message.
    pub message: MessageId,
    /// Which lease of it (1 for the first); leases released unseen count too.
    pub delivery: u32,
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.message.0, self.delivery)
    }
}

impl std::str::FromStr for Receipt {
    type Err = Refusal;

    /// Parses the `ID-LEASE` form that `Display` prints.
    fn from_str(text: &str) -> Result<Self, Refusal> {
        let bad = || {
            Refusal::InvalidArgument(format!(
                "receipt {:?} is not of the form ID-LEASE, as printed by receive",
                truncate(text, 64)
            ))
        };
        let (id, delivery) = text.split_once('-').ok_or_else(bad)?;
        Ok(Receipt {
            message: MessageId(id.parse().map_err(|_| bad())?),
            delivery: delivery.parse().map_err(|_| bad())?,
        })
    }
}

/// String attributes carried with a message (content type, trace ids, …).
pub type Attributes = BTreeMap<String, String>;

/// A message as a producer hands it in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// The payload, opaque to raftq.
    pub body: Bytes,
    /// Optional string attributes.
    pub attributes: Attributes,
    /// Publisher idempotency key: a second message with the same key within
    /// the queue's dedup window is not stored; the first one's id is returned.
    pub dedup_id: Option<String>,
    /// Message group: within a group first deliveries are in id order and at
    /// most one message is leased at a time.
    pub group: Option<String>,
    /// Do not deliver before this many milliseconds have passed (overrides
    /// the queue's default delay).
    pub delay_ms: Option<u64>,
}

impl NewMessage {
    /// A message with just a body.
    pub fn new(body: impl Into<Bytes>) -> Self {
        NewMessage {
            body: body.into(),
            ..NewMessage::default()
        }
    }
}

/// The lease a consumer holds on a delivered message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who received it (free text from the consumer, for stats and logs).
    pub consumer: String,
    /// When it was leased.
    pub leased_at: Timestamp,
    /// When the lease runs out unless extended.
    pub deadline: Timestamp,
}

/// Where a dead letter came from and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The queue it was dead-lettered from; redrive moves it back there.
    pub source_queue: QueueName,
    /// Its id in that queue.
    pub source_id: MessageId,
    /// How often it was delivered there.
    pub delivery_count: u32,
    /// The reason given with its last nack, if any.
    pub reason: Option<String>,
    /// When it was moved.
    pub dead_lettered_at: Timestamp,
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its id (unique in the cluster, increasing within its queue).
    pub id: MessageId,
    /// The payload.
    pub body: Bytes,
    /// Its attributes.
    pub attributes: Attributes,
    /// Its message group, if any.
    pub group: Option<String>,
    /// When it was enqueued (into this queue).
    pub enqueued_at: Timestamp,
    /// When it may be delivered next.
    pub visible_at: Timestamp,
    /// When it is dropped if still here.
    pub expires_at: Timestamp,
    /// How often it has been leased; the current lease's receipt number.
    pub delivery_count: u32,
    /// How many of those leases were released unseen (never handed to a
    /// consumer); they do not count toward `max_deliveries`.
    pub released: u32,
    /// The current lease, kept after its deadline passes until the message is
    /// leased again or nacked, so a slow consumer can still ack it. Boxed,
    /// like the other fields most messages leave empty, to keep a message
    /// small in memory.
    pub lease: Option<Box<Lease>>,
    /// The reason given with the last nack.
    pub last_nack_reason: Option<Box<str>>,
    /// Set on messages in a dead-letter queue.
    pub dead_letter: Option<Box<DeadLetter>>,
}

impl Message {
    /// The bytes it counts for against `max_message_bytes` and `max_bytes`:
    /// body plus attribute keys and values.
    pub fn size(&self) -> u64 {
        message_size(&self.body, &self.attributes)
    }

    /// The receipt of its current lease, if leased.
    pub fn receipt(&self) -> Option<Receipt> {
        self.lease.as_ref().map(|_| Receipt {
            message: self.id,
            delivery: self.delivery_count,
        })
    }

    /// Whether a consumer holds it now (a lease whose deadline is still ahead).
    pub fn is_in_flight(&self, now: Timestamp) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|lease| lease.deadline > now)
    }

    /// Deliveries that count toward `max_deliveries`: leases minus those
    /// released unseen.
    pub fn counted_deliveries(&self) -> u32 {
        self.delivery_count.saturating_sub(self.released)
    }

    /// When it may be dropped for its age: its expiry, or the end of its
    /// lease if that is later. A leased message never expires under its
    /// consumer: the holder may still ack it, and within a group the next
    /// message is not delivered while it is held.
    pub fn expiry_due(&self) -> Timestamp {
        match &self.lease {
            Some(lease) => self.expires_at.max(lease.deadline),
            None => self.expires_at,
        }
    }
}

/// Body plus attribute bytes.
pub fn message_size(body: &Bytes, attributes: &Attributes) -> u64 {
    let attrs: usize = attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    (body.len() + attrs) as u64
}

/// A message handed to a consumer by receive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The message id.
    pub id: MessageId,
    /// The receipt to ack, nack, extend or release with.
    pub receipt: Receipt,
    /// The payload.
    pub body: Bytes,
    /// Its attributes.
    pub attributes: Attributes,
    /// Its group, if any.
    pub group: Option<String>,
    /// Which delivery this is (1 for the first), not counting leases
    /// released unseen.
    pub delivery_count: u32,
    /// When it was enqueued.
    pub enqueued_at: Timestamp,
    /// When this lease runs out.
    pub lease_deadline: Timestamp,
    /// Where it was dead-lettered from, for messages of a dead-letter queue.
    pub dead_letter: Option<DeadLetter>,
}
