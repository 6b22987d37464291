//! Conversions between the public proto types and the storage crate's.
//!
//! The wire keeps units in field names (`_ms`) and leaves every config field
//! optional, so a client states only what it changes from the defaults.

use raftq_proto::v1 as pb;
use raftq_storage::queue::{
    DeadLetter, Delivery, NewMessage, Overflow, QueueConfig, QueueConfigPatch, QueueName,
    QueueStats, Receipt,
};
use raftq_storage::Refusal;

use crate::error::{Error, Result};
use crate::service::status::refusal_code;

fn overflow_from_pb(value: i32) -> Result<Overflow> {
    match pb::Overflow::try_from(value) {
        Ok(pb::Overflow::Reject) => Ok(Overflow::Reject),
        Ok(pb::Overflow::DropOldest) => Ok(Overflow::DropOldest),
        Err(_) => Err(Error::InvalidArgument(format!(
            "overflow {value} is not a known policy"
        ))),
    }
}

/// A queue config from the wire; unset fields take their defaults. A
/// `retry_backoff_min_ms` above the default maximum raises the maximum with it.
pub fn config_from_pb(config: Option<pb::QueueConfig>) -> Result<QueueConfig> {
    let defaults = QueueConfig::default();
    let Some(c) = config else {
        return Ok(defaults);
    };
    let overflow = match c.overflow {
        None => defaults.overflow,
        Some(value) => overflow_from_pb(value)?,
    };
    Ok(QueueConfig {
        visibility_timeout_ms: c
            .visibility_timeout_ms
            .unwrap_or(defaults.visibility_timeout_ms),
        max_deliveries: c.max_deliveries.unwrap_or(defaults.max_deliveries),
        dead_letter_queue: c
            .dead_letter_queue
            .filter(|q| !q.is_empty())
            .map(QueueName::new),
        retry_backoff_min_ms: c
            .retry_backoff_min_ms
            .unwrap_or(defaults.retry_backoff_min_ms),
        retry_backoff_max_ms: c.retry_backoff_max_ms.unwrap_or(
            defaults
                .retry_backoff_max_ms
                .max(c.retry_backoff_min_ms.unwrap_or(0)),
        ),
        message_ttl_ms: c.message_ttl_ms.or(defaults.message_ttl_ms),
        retention_ms: c.retention_ms.unwrap_or(defaults.retention_ms),
        max_length: c.max_length.or(defaults.max_length),
        max_bytes: c.max_bytes.or(defaults.max_bytes),
        overflow,
        max_message_bytes: c.max_message_bytes.unwrap_or(defaults.max_message_bytes),
        default_delay_ms: c.default_delay_ms.unwrap_or(defaults.default_delay_ms),
        max_delay_ms: c.max_delay_ms.unwrap_or(defaults.max_delay_ms),
        dedup_window_ms: c.dedup_window_ms.unwrap_or(defaults.dedup_window_ms),
    })
}

/// The option names an update may reset, as in `queue.proto`.
pub const CONFIG_FIELDS: [&str; 14] = [
    "visibility_timeout_ms",
    "max_deliveries",
    "dead_letter_queue",
    "retry_backoff_min_ms",
    "retry_backoff_max_ms",
    "message_ttl_ms",
    "retention_ms",
    "max_length",
    "max_bytes",
    "overflow",
    "max_message_bytes",
    "default_delay_ms",
    "max_delay_ms",
    "dedup_window_ms",
];

/// An update from the wire: the fields set in `config` change; those named
/// in `reset` go back to their defaults (the optional settings are removed).
/// An unknown name, or a field both set and reset, is refused by name; a
/// name given twice resets once; an update that changes nothing is refused.
pub fn patch_from_pb(
    config: Option<pb::QueueConfig>,
    reset: &[String],
) -> Result<QueueConfigPatch> {
    let c = config.unwrap_or_default();
    let d = QueueConfig::default();
    let mut patch = QueueConfigPatch {
        visibility_timeout_ms: c.visibility_timeout_ms,
        max_deliveries: c.max_deliveries,
        dead_letter_queue: c
            .dead_letter_queue
            .clone()
            .map(|q| (!q.is_empty()).then(|| QueueName::new(q))),
        retry_backoff_min_ms: c.retry_backoff_min_ms,
        retry_backoff_max_ms: c.retry_backoff_max_ms,
        message_ttl_ms: c.message_ttl_ms.map(Some),
        retention_ms: c.retention_ms,
        max_length: c.max_length.map(Some),
        max_bytes: c.max_bytes.map(Some),
        overflow: c.overflow.map(overflow_from_pb).transpose()?,
        max_message_bytes: c.max_message_bytes,
        default_delay_ms: c.default_delay_ms,
        max_delay_ms: c.max_delay_ms,
        dedup_window_ms: c.dedup_window_ms,
    };
    let mut seen = std::collections::BTreeSet::new();
    for name in reset {
        if !seen.insert(name.as_str()) {
            continue; // Named twice: one reset.
        }
        let set = match name.as_str() {
            "visibility_timeout_ms" => patch
                .visibility_timeout_ms
                .replace(d.visibility_timeout_ms)
                .is_some(),
            "max_deliveries" => patch.max_deliveries.replace(d.max_deliveries).is_some(),
            "dead_letter_queue" => patch.dead_letter_queue.replace(None).is_some(),
            "retry_backoff_min_ms" => patch
                .retry_backoff_min_ms
                .replace(d.retry_backoff_min_ms)
                .is_some(),
            "retry_backoff_max_ms" => patch
                .retry_backoff_max_ms
                .replace(d.retry_backoff_max_ms)
                .is_some(),
            "message_ttl_ms" => patch.message_ttl_ms.replace(None).is_some(),
            "retention_ms" => patch.retention_ms.replace(d.retention_ms).is_some(),
            "max_length" => patch.max_length.replace(None).is_some(),
            "max_bytes" => patch.max_bytes.replace(None).is_some(),
            "overflow" => patch.overflow.replace(d.overflow).is_some(),
            "max_message_bytes" => patch
                .max_message_bytes
                .replace(d.max_message_bytes)
                .is_some(),
            "default_delay_ms" => patch.default_delay_ms.replace(d.default_delay_ms).is_some(),
            "max_delay_ms" => patch.max_delay_ms.replace(d.max_delay_ms).is_some(),
            "dedup_window_ms" => patch.dedup_window_ms.replace(d.dedup_window_ms).is_some(),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "reset names {other:?}, which is not a queue option; the options are {}",
                    CONFIG_FIELDS.join(", ")
                )))
            }
        };
        if set {
            return Err(Error::InvalidArgument(format!(
                "{name} is both set and reset in one update: do one or the other"
            )));
        }
    }
    if patch == QueueConfigPatch::default() {
        return Err(Error::InvalidArgument(format!(
            "the update changes nothing: set at least one option or name one to reset ({})",
            CONFIG_FIELDS.join(", ")
        )));
    }
    Ok(patch)
}

/// A queue config for the wire, every field set.
pub fn config_to_pb(c: &QueueConfig) -> pb::QueueConfig {
    pb::QueueConfig {
        visibility_timeout_ms: Some(c.visibility_timeout_ms),
        max_deliveries: Some(c.max_deliveries),
        dead_letter_queue: c.dead_letter_queue.as_ref().map(|q| q.to_string()),
        retry_backoff_min_ms: Some(c.retry_backoff_min_ms),
        retry_backoff_max_ms: Some(c.retry_backoff_max_ms),
        message_ttl_ms: c.message_ttl_ms,
        retention_ms: Some(c.retention_ms),
        max_length: c.max_length,
        max_bytes: c.max_bytes,
        overflow: Some(match c.overflow {
            Overflow::Reject => pb::Overflow::Reject as i32,
            Overflow::DropOldest => pb::Overflow::DropOldest as i32,
        }),
        max_message_bytes: Some(c.max_message_bytes),
        default_delay_ms: Some(c.default_delay_ms),
        max_delay_ms: Some(c.max_delay_ms),
        dedup_window_ms: Some(c.dedup_window_ms),
    }
}

/// Queue stats for the wire.
pub fn info_to_pb(stats: QueueStats) -> pb::QueueInfo {
    let c = stats.counters;
    pb::QueueInfo {
        config: stats.config.as_ref().map(config_to_pb),
        name: stats.name,
        ready: stats.ready,
        in_flight: stats.in_flight,
        delayed: stats.delayed,
        bytes: stats.bytes,
        oldest_ready_age_ms: stats.oldest_ready_age_ms,
        oldest_in_flight_age_ms: stats.oldest_in_flight_age_ms,
        oldest_in_flight_consumer: stats.oldest_in_flight_consumer,
        counters: Some(pb::QueueCounters {
            enqueued: c.enqueued,
            acked: c.acked,
            dead_lettered: c.dead_lettered,
            expired: c.expired,
            dropped: c.dropped,
            redriven: c.redriven,
            released: c.released,
        }),
        dead_letter_source_of: stats.dead_letter_source_of,
    }
}

/// A message from the wire.
pub fn message_from_pb(m: pb::NewMessage) -> NewMessage {
    NewMessage {
        body: m.body,
        attributes: m.attributes.into_iter().collect(),
        dedup_id: m.dedup_id,
        group: m.group,
        delay_ms: m.delay_ms,
    }
}

fn dead_letter_to_pb(d: DeadLetter) -> pb::DeadLetterInfo {
    pb::DeadLetterInfo {
        source_queue: d.source_queue.to_string(),
        source_id: d.source_id.0,
        delivery_count: d.delivery_count,
        reason: d.reason,
        dead_lettered_at_ms: d.dead_lettered_at.0,
    }
}

/// A delivery for the wire.
pub fn delivery_to_pb(d: Delivery) -> pb::Delivery {
    pb::Delivery {
        id: d.id.0,
        receipt: d.receipt.to_string(),
        body: d.body,
        attributes: d.attributes.into_iter().collect(),
        group: d.group,
        delivery_count: d.delivery_count,
        enqueued_at_ms: d.enqueued_at.0,
        lease_deadline_ms: d.lease_deadline.0,
        dead_letter: d.dead_letter.map(dead_letter_to_pb),
    }
}

/// A per-item refusal for the wire.
pub fn refusal_to_pb(refusal: &Refusal) -> pb::Refusal {
    pb::Refusal {
        code: refusal_code(refusal) as i32,
        message: refusal.to_string(),
    }
}

/// Parses receipts as printed by receive (`ID-LEASE`).
pub fn receipts_from_pb(receipts: &[String]) -> Result<Vec<Receipt>> {
    receipts
        .iter()
        .map(|r| r.parse::<Receipt>().map_err(Error::from))
        .collect()
}
