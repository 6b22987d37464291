//! The memory budget of the queue state: a node must never be OOM-killed by
//! a backlog.
//!
//! The queue state lives in memory (the log and the snapshots are its
//! durability), so a backlog that outgrows the machine would kill every
//! replica at once. The leader estimates what the state holds
//! ([`raftq_storage::queue::Queues::memory_estimate`]: message bytes plus a
//! measured per-message and per-dedup-id overhead) every
//! [`MEMORY_CHECK_INTERVAL`]; past the budget, enqueues are refused with
//! `RESOURCE_EXHAUSTED` saying so, while receives, acks, purges and deletes
//! (which shrink the state) keep working. Like RabbitMQ's memory alarm
//! (`vm_memory_high_watermark`, 40% of the machine's memory by default),
//! the default budget is 40% of the machine's memory, or of the cgroup's
//! limit when that is smaller. Replicas hold the same state, so the leader's
//! estimate stands for all of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

/// How often the leader re-estimates the state's memory.
pub const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// The default budget, as a share of the machine's (or cgroup's) memory.
pub const DEFAULT_BUDGET_PERCENT: u64 = 40;
/// The budget when the machine's memory cannot be read.
pub const FALLBACK_BUDGET_BYTES: u64 = 4 << 30;

/// The budget and the last estimate.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Bytes the queue state may use; 0: no limit.
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (`None`: the default; 0: no limit).
    pub fn new(limit: Option<u64>) -> Self {
        MemoryBudget {
            limit: limit.unwrap_or_else(default_budget),
            used: AtomicU64::new(0),
        }
    }

    /// The budget in bytes (0: no limit).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The last estimate of the state's memory, in bytes.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Records a new estimate.
    pub fn set_used(&self, bytes: u64) {
        self.used.store(bytes, Ordering::Relaxed);
    }

    /// Refuses an enqueue while the state is at or over its budget.
    pub fn check_enqueue(&self) -> Result<()> {
        let used = self.used();
        if self.limit > 0 && used >= self.limit {
            return Err(Error::MemoryAlarm(format!(
                "the queue state uses about {used} bytes of memory, at or over this node's \
                 budget of {} bytes (max_state_memory_bytes): enqueues are refused until \
                 consumers catch up or queues are purged; receives, acks, purges and deletes \
                 still work",
                self.limit
            )));
        }
        Ok(())
    }
}

/// 40% of the machine's memory or of the cgroup's limit, whichever is
/// smaller; [`FALLBACK_BUDGET_BYTES`] when neither can be read.
pub fn default_budget() -> u64 {
    machine_memory().map_or(FALLBACK_BUDGET_BYTES, |total| {
        total / 100 * DEFAULT_BUDGET_PERCENT
    })
}

/// The memory this process may use: the smaller of the machine's
/// (`/proc/meminfo`) and the cgroup's limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`), when readable.
pub fn machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total(&text));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .find_map(|text| text.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(total), Some(limit)) => Some(total.min(limit)),
        (total, limit) => total.or(limit),
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo_total("nothing"), None);
    }

    #[test]
    fn the_default_budget_is_a_share_of_this_machine() {
        let total = machine_memory().expect("Linux has /proc/meminfo");
        assert_eq!(default_budget(), total / 100 * DEFAULT_BUDGET_PERCENT);
    }

    #[test]
    fn enqueues_are_refused_at_the_budget_and_never_without_one() {
        let budget = MemoryBudget::new(Some(1000));
        budget.set_used(999);
        assert!(budget.check_enqueue().is_ok());
        budget.set_used(1000);
        let err = budget.check_enqueue().expect_err("at the budget");
        assert!(err.to_string().contains("max_state_memory_bytes"), "{err}");
        let unlimited = MemoryBudget::new(Some(0));
        unlimited.set_used(u64::MAX);
        assert!(unlimited.check_enqueue().is_ok());
    }
}
