//! The typed keys of the state machine's sled tree, encoded so that byte order
//! is key order.
//!
//! Layout (one tree, one prefix byte per kind):
//!
//! | key | bytes | value |
//! |---|---|---|
//! | [`Key::Applied`] | `00` | last applied log id, membership, clock, next id, cluster record |
//! | [`Key::Queue`] | `01 name` | the queue's config and counters |
//! | [`Key::Message`] | `02 name 00 id:u64be` | one message |
//! | [`Key::Dedup`] | `03 name 00 dedup_id` | one remembered dedup id |
//!
//! Queue names never contain a zero byte (`[A-Za-z0-9._-]`), so `00` ends the
//! name and all messages of a queue sort together, in id order. Rebuilding the
//! in-memory state at open reads queues first, then their messages, then dedup
//! entries, because the prefixes sort that way.

use crate::error::{Error, Result};
use crate::queue::message::{MessageId, QueueName};

const APPLIED: u8 = 0x00;
const QUEUE: u8 = 0x01;
const MESSAGE: u8 = 0x02;
const DEDUP: u8 = 0x03;

/// A key in the state machine tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// The last applied log id, the membership and the state machine clock,
    /// written in the same batch as every apply.
    Applied,
    /// A queue's persistent metadata.
    Queue(QueueName),
    /// A message of a queue.
    Message(QueueName, MessageId),
    /// A dedup id remembered by a queue.
    Dedup(QueueName, String),
}

impl Key {
    /// The key's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Key::Applied => vec![APPLIED],
            Key::Queue(name) => {
                let mut out = Vec::with_capacity(1 + name.as_str().len());
                out.push(QUEUE);
                out.extend_from_slice(name.as_str().as_bytes());
                out
            }
            Key::Message(name, id) => {
                let mut out = Self::queue_prefix(MESSAGE, name);
                out.extend_from_slice(&id.0.to_be_bytes());
                out
            }
            Key::Dedup(name, dedup_id) => {
                let mut out = Self::queue_prefix(DEDUP, name);
                out.extend_from_slice(dedup_id.as_bytes());
                out
            }
        }
    }

    /// The prefix under which all messages of `name` lie.
    pub fn messages_of(name: &QueueName) -> Vec<u8> {
        Self::queue_prefix(MESSAGE, name)
    }

    fn queue_prefix(kind: u8, name: &QueueName) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + name.as_str().len() + 8);
        out.push(kind);
        out.extend_from_slice(name.as_str().as_bytes());
        out.push(0);
        out
    }

    /// Parses key bytes written by [`Key::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Key> {
        let corrupt = |why: &str| Error::Corrupt {
            what: format!("state key {bytes:02x?}"),
            why: why.to_string(),
        };
        let (&kind, rest) = bytes.split_first().ok_or_else(|| corrupt("empty key"))?;
        let utf8 = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| corrupt("not UTF-8"))
        };
        let split = |rest: &[u8]| -> Result<(QueueName, Vec<u8>)> {
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| corrupt("no end of queue name"))?;
            Ok((
                QueueName::new(utf8(&rest[..end])?),
                rest[end + 1..].to_vec(),
            ))
        };
        match kind {
            APPLIED if rest.is_empty() => Ok(Key::Applied),
            QUEUE => Ok(Key::Queue(QueueName::new(utf8(rest)?))),
            MESSAGE => {
                let (name, id) = split(rest)?;
                let id: [u8; 8] = id
                    .try_into()
                    .map_err(|_| corrupt("message id not 8 bytes"))?;
                Ok(Key::Message(name, MessageId(u64::from_be_bytes(id))))
            }
            DEDUP => {
                let (name, dedup_id) = split(rest)?;
                Ok(Key::Dedup(name, utf8(&dedup_id)?))
            }
            _ => Err(corrupt("unknown key kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_in_key_order() {
        let q = QueueName::new("orders");
        let keys = [
            Key::Applied,
            Key::Queue(q.clone()),
            Key::Queue(QueueName::new("orders2")),
            Key::Message(q.clone(), MessageId(1)),
            Key::Message(q.clone(), MessageId(256)),
            Key::Message(q.clone(), MessageId(u64::MAX)),
            Key::Message(QueueName::new("orders2"), MessageId(0)),
            Key::Dedup(q.clone(), "a".into()),
        ];
        let encoded: Vec<Vec<u8>> = keys.iter().map(Key::encode).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted, "byte order must be key order");
        for (key, bytes) in keys.iter().zip(&encoded) {
            assert_eq!(&Key::decode(bytes).expect("decode"), key);
        }
        assert!(encoded[3].starts_with(&Key::messages_of(&q)));
        assert!(!encoded[6].starts_with(&Key::messages_of(&q)));
    }
}
