//! A queue's configuration, its defaults and the ranges it must stay in.
//!
//! Defaults follow what users of SQS and RabbitMQ quorum queues expect:
//! a 30 s lease, 20 deliveries before dead-lettering (RabbitMQ 4's delivery
//! limit), 4 days of retention (SQS), a 5 minute dedup window (SQS FIFO),
//! 1 MiB messages, delays up to 15 minutes. A retry backoff is on by default
//! (1 s, doubling to 60 s): a message that fails is not redelivered at once,
//! so a poison message neither starves the messages behind it nor burns its
//! 20 deliveries in a second; it reaches its delivery limit after about 15
//! minutes of retries. Set `retry_backoff_min_ms` to 0 to redeliver at once.
//!
//! [`QueueConfigPatch`] is what an update carries: only the fields it sets
//! change, so an operator who changes one option never resets the others.

use serde::{Deserialize, Serialize};

use crate::error::Refusal;
use crate::queue::message::QueueName;

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Shortest lease.
pub const MIN_VISIBILITY_TIMEOUT_MS: u64 = SECOND;
/// Longest lease (SQS's limit).
pub const MAX_VISIBILITY_TIMEOUT_MS: u64 = 12 * HOUR;
/// Longest retention (SQS's limit).
pub const MAX_RETENTION_MS: u64 = 14 * DAY;
/// Shortest retention.
pub const MIN_RETENTION_MS: u64 = MINUTE;
/// Longest dedup window.
pub const MAX_DEDUP_WINDOW_MS: u64 = DAY;
/// Largest `max_message_bytes` a queue may set: a whole enqueue request must
/// fit the node's 4 MiB gRPC limit.
pub const MAX_MESSAGE_BYTES_LIMIT: u64 = 4 * 1024 * 1024;
/// Longest retry backoff.
pub const MAX_RETRY_BACKOFF_MS: u64 = 12 * HOUR;

/// What an enqueue does when the queue is at `max_length` or `max_bytes`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// Refuse the new message with `QueueFull` (the default: nothing accepted
    /// is ever dropped to make room).
    #[default]
    Reject,
    /// Drop the oldest messages (lowest ids, leased or not) to make room.
    DropOldest,
}

/// A queue's configuration. Every field has a default; `validate` names the
/// first rule a configuration breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// How long a received message stays leased before it is delivered again,
    /// unless acked, nacked or extended. 1 s to 12 h; default 30 s.
    pub visibility_timeout_ms: u64,
    /// Deliveries after which the next receive moves the message to the
    /// dead-letter queue (or drops it, without one). 0 turns this off.
    /// Default 20.
    pub max_deliveries: u32,
    /// Where messages go after `max_deliveries`. Must exist and not be this
    /// queue. Without it, such messages are dropped and counted.
    pub dead_letter_queue: Option<QueueName>,
    /// Retry backoff after a nack or a lease expiry, for the first retry;
    /// doubles with each delivery up to `retry_backoff_max_ms`, with
    /// deterministic jitter. Default 1 s; 0 redelivers at once.
    pub retry_backoff_min_ms: u64,
    /// The largest retry backoff. At least `retry_backoff_min_ms`, at most
    /// 12 h. Default 60 s.
    pub retry_backoff_max_ms: u64,
    /// Messages older than this are dropped. None (the default): only
    /// retention applies.
    pub message_ttl_ms: Option<u64>,
    /// How long a message is kept at most, delivered or not. 1 min to 14 days;
    /// default 4 days.
    pub retention_ms: u64,
    /// Most messages the queue holds (ready, leased and delayed). None: no limit.
    pub max_length: Option<u64>,
    /// Most message bytes the queue holds. None: no limit.
    pub max_bytes: Option<u64>,
    /// What enqueue does at `max_length` or `max_bytes`.
    pub overflow: Overflow,
    /// Largest message (body plus attributes). Default 1 MiB, at most 4 MiB.
    pub max_message_bytes: u64,
    /// Delay applied to messages that name none. Default 0; below the
    /// message lifetime (TTL and retention) and at most `max_delay_ms`.
    pub default_delay_ms: u64,
    /// Longest delay an enqueue or nack may ask for. Default 15 min. A delay
    /// must also end before the message's lifetime (TTL and retention) does,
    /// or the message would expire unseen; such a delay is refused.
    pub max_delay_ms: u64,
    /// How long a dedup id is remembered. 1 s to 24 h; default 5 min.
    pub dedup_window_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            visibility_timeout_ms: 30 * SECOND,
            max_deliveries: 20,
            dead_letter_queue: None,
            retry_backoff_min_ms: SECOND,
            retry_backoff_max_ms: MINUTE,
            message_ttl_ms: None,
            retention_ms: 4 * DAY,
            max_length: None,
            max_bytes: None,
            overflow: Overflow::Reject,
            max_message_bytes: 1024 * 1024,
            default_delay_ms: 0,
            max_delay_ms: 15 * MINUTE,
            dedup_window_ms: 5 * MINUTE,
        }
    }
}

impl QueueConfig {
    /// Checks every range and relation; the error names the broken rule.
    /// The dead-letter queue's existence is checked by the caller, which can
    /// see the other queues.
    pub fn validate(&self, name: &QueueName) -> Result<(), Refusal> {
        let bad = |rule: String| Err(Refusal::InvalidArgument(rule));
        if !(MIN_VISIBILITY_TIMEOUT_MS..=MAX_VISIBILITY_TIMEOUT_MS)
            .contains(&self.visibility_timeout_ms)
        {
            return bad(format!(
                "visibility_timeout_ms must be {MIN_VISIBILITY_TIMEOUT_MS} to {MAX_VISIBILITY_TIMEOUT_MS}, not {}",
                self.visibility_timeout_ms
            ));
        }
        if let Some(dlq) = &self.dead_letter_queue {
            dlq.validate()?;
            if dlq == name {
                return bad(format!(
                    "queue {:?} cannot be its own dead_letter_queue",
                    name.as_str()
                ));
            }
        }
        if self.retry_backoff_min_ms > self.retry_backoff_max_ms {
            return bad(format!(
                "retry_backoff_min_ms ({}) must not exceed retry_backoff_max_ms ({})",
                self.retry_backoff_min_ms, self.retry_backoff_max_ms
            ));
        }
        if self.retry_backoff_max_ms > MAX_RETRY_BACKOFF_MS {
            return bad(format!(
                "retry_backoff_max_ms must be at most {MAX_RETRY_BACKOFF_MS}, not {}",
                self.retry_backoff_max_ms
            ));
        }
        if !(MIN_RETENTION_MS..=MAX_RETENTION_MS).contains(&self.retention_ms) {
            return bad(format!(
                "retention_ms must be {MIN_RETENTION_MS} to {MAX_RETENTION_MS}, not {}",
                self.retention_ms
            ));
        }
        if let Some(ttl) = self.message_ttl_ms {
            if ttl < SECOND || ttl > self.retention_ms {
                return bad(format!(
                    "message_ttl_ms must be {SECOND} to retention_ms ({}), not {ttl}",
                    self.retention_ms
                ));
            }
        }
        if self.max_length == Some(0) {
            return bad("max_length must be at least 1 (leave it unset for no limit)".into());
        }
        if self.max_bytes == Some(0) {
            return bad("max_bytes must be at least 1 (leave it unset for no limit)".into());
        }
        if !(1..=MAX_MESSAGE_BYTES_LIMIT).contains(&self.max_message_bytes) {
            return bad(format!(
                "max_message_bytes must be 1 to {MAX_MESSAGE_BYTES_LIMIT}, not {}",
                self.max_message_bytes
            ));
        }
        if self.max_delay_ms > MAX_RETENTION_MS {
            return bad(format!(
                "max_delay_ms must be at most {MAX_RETENTION_MS}, not {}",
                self.max_delay_ms
            ));
        }
        if let Err(why) = self.check_delay(self.default_delay_ms) {
            return bad(format!("default_delay_ms: {why}"));
        }
        if !(SECOND..=MAX_DEDUP_WINDOW_MS).contains(&self.dedup_window_ms) {
            return bad(format!(
                "dedup_window_ms must be {SECOND} to {MAX_DEDUP_WINDOW_MS}, not {}",
                self.dedup_window_ms
            ));
        }
        Ok(())
    }

    /// Checks a delay an enqueue, a nack or the default asks for: at most
    /// `max_delay_ms`, and ending before the message lifetime does (a delay
    /// that reaches the TTL or the retention would let the message expire
    /// unseen). The error names the limit.
    pub fn check_delay(&self, delay_ms: u64) -> Result<(), String> {
        if delay_ms > self.max_delay_ms {
            return Err(format!(
                "a delay of {delay_ms} ms exceeds max_delay_ms {}",
                self.max_delay_ms
            ));
        }
        let lifetime = self.lifetime_ms();
        if delay_ms > 0 && delay_ms >= lifetime {
            let limit = match self.message_ttl_ms {
                Some(ttl) if ttl <= self.retention_ms => format!("message_ttl_ms {ttl}"),
                _ => format!("retention_ms {}", self.retention_ms),
            };
            return Err(format!(
                "a delay of {delay_ms} ms reaches the message lifetime ({limit}): the message would expire before it could be delivered"
            ));
        }
        Ok(())
    }

    /// How long a message enqueued now may live: TTL and retention, whichever
    /// is shorter.
    pub fn lifetime_ms(&self) -> u64 {
        self.message_ttl_ms
            .map_or(self.retention_ms, |ttl| ttl.min(self.retention_ms))
    }

    /// The retry backoff before delivery number `delivery_count + 1`:
    /// exponential from `retry_backoff_min_ms`, capped at
    /// `retry_backoff_max_ms`, with "equal jitter" (between half and all of
    /// it) derived from the message id and delivery count, so that every
    /// replica computes the same value and retries of many messages spread out.
    pub fn retry_backoff_ms(&self, id: u64, delivery_count: u32) -> u64 {
        if self.retry_backoff_min_ms == 0 || self.retry_backoff_max_ms == 0 {
            return 0;
        }
        let doublings = delivery_count.saturating_sub(1).min(40);
        let base = self
            .retry_backoff_min_ms
            .saturating_mul(1u64 << doublings)
            .min(self.retry_backoff_max_ms);
        let half = base / 2;
        let jitter = mix(id ^ (u64::from(delivery_count) << 48)) % (base - half + 1);
        half + jitter
    }
}

/// A change to a queue's configuration: each `Some` field replaces the
/// current value, each `None` keeps it. For the optional settings
/// (`dead_letter_queue`, `message_ttl_ms`, `max_length`, `max_bytes`) the
/// inner `None` removes the setting. The result must pass
/// [`QueueConfig::validate`] like a new config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfigPatch {
    /// New `visibility_timeout_ms`.
    pub visibility_timeout_ms: Option<u64>,
    /// New `max_deliveries`.
    pub max_deliveries: Option<u32>,
    /// New `dead_letter_queue` (`Some(None)` detaches it).
    pub dead_letter_queue: Option<Option<QueueName>>,
    /// New `retry_backoff_min_ms`.
    pub retry_backoff_min_ms: Option<u64>,
    /// New `retry_backoff_max_ms`.
    pub retry_backoff_max_ms: Option<u64>,
    /// New `message_ttl_ms` (`Some(None)` removes the TTL).
    pub message_ttl_ms: Option<Option<u64>>,
    /// New `retention_ms`.
    pub retention_ms: Option<u64>,
    /// New `max_length` (`Some(None)` removes the limit).
    pub max_length: Option<Option<u64>>,
    /// New `max_bytes` (`Some(None)` removes the limit).
    pub max_bytes: Option<Option<u64>>,
    /// New `overflow`.
    pub overflow: Option<Overflow>,
    /// New `max_message_bytes`.
    pub max_message_bytes: Option<u64>,
    /// New `default_delay_ms`.
    pub default_delay_ms: Option<u64>,
    /// New `max_delay_ms`.
    pub max_delay_ms: Option<u64>,
    /// New `dedup_window_ms`.
    pub dedup_window_ms: Option<u64>,
}

impl QueueConfigPatch {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &QueueConfigPatch::default()
    }

    /// `config` with this patch's fields replaced. A patch that raises
    /// `retry_backoff_min_ms` above the current maximum without naming a
    /// maximum raises the maximum with it, as a create does.
    pub fn apply_to(&self, config: &QueueConfig) -> QueueConfig {
        let mut next = config.clone();
        macro_rules! set {
            ($($field:ident),*) => {
                $(if let Some(value) = &self.$field {
                    next.$field = value.clone();
                })*
            };
        }
        set!(
            visibility_timeout_ms,
            max_deliveries,
            dead_letter_queue,
            retry_backoff_min_ms,
            retry_backoff_max_ms,
            message_ttl_ms,
            retention_ms,
            max_length,
            max_bytes,
            overflow,
            max_message_bytes,
            default_delay_ms,
            max_delay_ms,
            dedup_window_ms
        );
        if self.retry_backoff_max_ms.is_none() {
            next.retry_backoff_max_ms = next.retry_backoff_max_ms.max(next.retry_backoff_min_ms);
        }
        next
    }
}

/// A fixed 64-bit mixing function (splitmix64's finalizer): deterministic,
/// well spread, no state.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        QueueConfig::default()
            .validate(&QueueName::new("q"))
            .expect("defaults valid");
    }

    #[test]
    fn backoff_grows_within_bounds_and_is_deterministic() {
        let config = QueueConfig {
            retry_backoff_min_ms: 100,
            retry_backoff_max_ms: 10_000,
            ..QueueConfig::default()
        };
        for id in 0..50 {
            for delivery in 1..20 {
                let b = config.retry_backoff_ms(id, delivery);
                let full = (100u64 << (delivery - 1).min(40)).min(10_000);
                assert!(
                    b >= full / 2 && b <= full,
                    "id {id} delivery {delivery}: {b}"
                );
                assert_eq!(b, config.retry_backoff_ms(id, delivery));
            }
        }
        let off = QueueConfig {
            retry_backoff_min_ms: 0,
            ..QueueConfig::default()
        };
        assert_eq!(off.retry_backoff_ms(5, 3), 0);
        let first = QueueConfig::default().retry_backoff_ms(5, 1);
        assert!(
            (500..=1_000).contains(&first),
            "default first backoff {first}"
        );
    }

    #[test]
    fn each_broken_rule_is_named() {
        let name = QueueName::new("q");
        let cases: Vec<(QueueConfig, &str)> = vec![
            (
                QueueConfig {
                    visibility_timeout_ms: 10,
                    ..Default::default()
                },
                "visibility_timeout_ms",
            ),
            (
                QueueConfig {
                    dead_letter_queue: Some(name.clone()),
                    ..Default::default()
                },
                "own dead_letter_queue",
            ),
            (
                QueueConfig {
                    retry_backoff_min_ms: 5,
                    retry_backoff_max_ms: 1,
                    ..Default::default()
                },
                "retry_backoff_min_ms",
            ),
            (
                QueueConfig {
                    retention_ms: 1,
                    ..Default::default()
                },
                "retention_ms",
            ),
            (
                QueueConfig {
                    message_ttl_ms: Some(1),
                    ..Default::default()
                },
                "message_ttl_ms",
            ),
            (
                QueueConfig {
                    max_length: Some(0),
                    ..Default::default()
                },
                "max_length",
            ),
            (
                QueueConfig {
                    max_message_bytes: 0,
                    ..Default::default()
                },
                "max_message_bytes",
            ),
            (
                QueueConfig {
                    default_delay_ms: 16 * MINUTE,
                    ..Default::default()
                },
                "default_delay_ms",
            ),
            (
                QueueConfig {
                    message_ttl_ms: Some(5 * SECOND),
                    default_delay_ms: 5 * SECOND,
                    ..Default::default()
                },
                "message_ttl_ms 5000",
            ),
            (
                QueueConfig {
                    dedup_window_ms: 2 * DAY,
                    ..Default::default()
                },
                "dedup_window_ms",
            ),
        ];
        for (config, rule) in cases {
            let err = config.validate(&name).expect_err(rule);
            assert!(err.to_string().contains(rule), "{err} should name {rule}");
        }
    }
}
