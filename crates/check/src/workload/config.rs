//! What a workload runs: its size, its mix of behaviours, its seed, and the
//! names of its queues.
//!
//! Every limit has a range [`WorkloadConfig::validate`] enforces, so that a
//! drill against a production cluster stays a bounded, polite load.

use std::time::Duration;

use crate::error::{Error, Result};

/// Most workers of each kind (producers, consumers).
pub const MAX_WORKERS: usize = 256;
/// Most messages in one enqueue or receive (the server's limit).
pub const MAX_BATCH: usize = 100;

/// What a workload does, and how much of it.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Queue name prefix, unique to the run (`^[A-Za-z0-9._-]{1,100}$`); also
    /// the prefix of every payload id.
    pub prefix: String,
    /// The seed of every random choice.
    pub seed: u64,
    /// The run stops after this long.
    pub duration: Duration,
    /// The run stops after this many calls.
    pub max_ops: u64,
    /// Producer tasks.
    pub producers: usize,
    /// Consumer tasks.
    pub consumers: usize,
    /// Most messages per enqueue (1 to 100; each enqueue picks 1 to this).
    pub enqueue_batch: usize,
    /// Most messages per receive (1 to 100).
    pub receive_batch: u32,
    /// The queues' visibility timeout, also asked for on each receive (1 s to
    /// 12 h; short, so that held messages come back during the run).
    pub visibility: Duration,
    /// How long a receive waits for a message (long poll; at most 20 s).
    pub receive_wait: Duration,
    /// Producers pause while this many enqueued messages are not acked yet,
    /// so that consumers keep up and the run exercises leases, not a backlog.
    pub max_backlog: u64,
    /// Message groups of the grouped queue.
    pub groups: u32,
    /// Per mille of deliveries a consumer holds past the lease, then acks.
    pub hold_per_mille: u32,
    /// Per mille of deliveries a consumer nacks (the retry queue excepted).
    pub nack_per_mille: u32,
    /// Per mille of deliveries from the retry queue a consumer nacks, so that
    /// messages reach its dead-letter queue.
    pub retry_nack_per_mille: u32,
    /// Per mille of messages sent with an explicit dedup id (the payload id);
    /// the others get the client's own.
    pub explicit_dedup_per_mille: u32,
    /// `max_deliveries` of the retry queue.
    pub dlq_max_deliveries: u32,
    /// Per mille of messages that are large: their payload id is followed by
    /// a line break and padding up to `large_bytes`, so that large messages
    /// cross every path (appends, receives, snapshots) during the faults.
    pub large_per_mille: u32,
    /// Largest padding of a large message, bytes (at most 1,000,000: the
    /// queues keep the default 1 MiB message limit).
    pub large_bytes: usize,
    /// Deadline of one call (a receive's wait is added); past it the call is
    /// abandoned and recorded as unknown.
    pub op_timeout: Duration,
    /// How often the progress callback is called during a run.
    pub progress_interval: Duration,
}

impl WorkloadConfig {
    /// Defaults for a seed, with a prefix unique to this process and moment.
    pub fn new(seed: u64) -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        WorkloadConfig {
            prefix: format!("raftq-check-{now_ms:x}-{}", std::process::id()),
            seed,
            duration: Duration::from_secs(30),
            max_ops: 100_000,
            producers: 4,
            consumers: 4,
            enqueue_batch: 5,
            receive_batch: 10,
            visibility: Duration::from_secs(2),
            receive_wait: Duration::from_millis(500),
            max_backlog: 200,
            groups: 8,
            hold_per_mille: 20,
            nack_per_mille: 50,
            retry_nack_per_mille: 400,
            explicit_dedup_per_mille: 250,
            dlq_max_deliveries: 2,
            large_per_mille: 10,
            large_bytes: 256 * 1024,
            op_timeout: Duration::from_secs(10),
            progress_interval: Duration::from_secs(1),
        }
    }

    /// Names the first rule the config breaks.
    pub fn validate(&self) -> Result<()> {
        let fail = |why: String| Err(Error::Config(why));
        let valid_prefix = (1..=100).contains(&self.prefix.len())
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid_prefix {
            return fail(format!(
                "prefix {:?} must match ^[A-Za-z0-9._-]{{1,100}}$",
                self.prefix
            ));
        }
        if self.producers > MAX_WORKERS || self.consumers > MAX_WORKERS {
            return fail(format!(
                "at most {MAX_WORKERS} producers and {MAX_WORKERS} consumers"
            ));
        }
        if self.producers == 0 || self.consumers == 0 {
            return fail("at least one producer and one consumer".into());
        }
        if !(1..=MAX_BATCH).contains(&self.enqueue_batch)
            || !(1..=MAX_BATCH as u32).contains(&self.receive_batch)
        {
            return fail(format!("batches must be 1 to {MAX_BATCH} messages"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(12 * 3600)).contains(&self.visibility) {
            return fail("visibility must be 1 s to 12 h".into());
        }
        if self.receive_wait > Duration::from_secs(20) {
            return fail("receive_wait must be at most 20 s".into());
        }
        if self.groups == 0 || self.dlq_max_deliveries == 0 {
            return fail("groups and dlq_max_deliveries must be at least 1".into());
        }
        if self.large_bytes > 1_000_000 {
            return fail(format!(
                "large_bytes must be at most 1000000 (the queues' message limit), not {}",
                self.large_bytes
            ));
        }
        let per_mille = [
            self.hold_per_mille + self.nack_per_mille,
            self.hold_per_mille + self.retry_nack_per_mille,
            self.explicit_dedup_per_mille,
            self.large_per_mille,
        ];
        if per_mille.iter().any(|p| *p > 1000) {
            return fail(
                "hold + nack (and hold + retry nack) must be at most 1000 per mille".into(),
            );
        }
        if self.op_timeout.is_zero() || self.progress_interval.is_zero() {
            return fail("op_timeout and progress_interval must be positive".into());
        }
        Ok(())
    }
}

/// The names of a workload's queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueNames {
    /// Ungrouped messages.
    pub plain: String,
    /// Messages in groups.
    pub grouped: String,
    /// Small `max_deliveries`, dead-letters into `dead`.
    pub retry: String,
    /// The dead-letter queue of `retry`.
    pub dead: String,
}

impl QueueNames {
    /// The names under a prefix.
    pub fn new(prefix: &str) -> Self {
        QueueNames {
            plain: format!("{prefix}-plain"),
            grouped: format!("{prefix}-grouped"),
            retry: format!("{prefix}-retry"),
            dead: format!("{prefix}-dead"),
        }
    }

    /// All four, in drain order: the dead-letter queue last, since draining
    /// the retry queue may dead-letter messages into it.
    pub fn all(&self) -> [&str; 4] {
        [&self.plain, &self.grouped, &self.retry, &self.dead]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_rules_are_named() {
        let config = WorkloadConfig::new(1);
        config.validate().expect("defaults are valid");
        let bad = WorkloadConfig {
            prefix: "no spaces".into(),
            ..config.clone()
        };
        assert!(matches!(bad.validate(), Err(Error::Config(why)) if why.contains("prefix")));
        let bad = WorkloadConfig {
            hold_per_mille: 700,
            ..config
        };
        assert!(bad.validate().is_err());
    }
}
