//! When each Raft entry passed each stage on this node, for the latency
//! breakdown of a write (the node's `raftq_write_stage_seconds` histogram).
//!
//! The log store notes when it was handed an entry and when the flush that
//! made it durable returned; the state machine notes when it began and
//! finished applying it. The leader's proposer, once `client_write` returns
//! the entry's index, takes the entry's stamps and turns them into stage
//! durations. Only the latest [`KEPT_ENTRIES`] entries are kept, so a node
//! that is not leading (nobody takes its stamps) stays bounded.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// How many entries' stamps are kept.
pub const KEPT_ENTRIES: usize = 4096;

/// The stamps of one entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stamps {
    /// The log store was handed it (`append`).
    pub appended: Option<Instant>,
    /// The flush that made it durable returned.
    pub flushed: Option<Instant>,
    /// The first append request carrying it went to a follower (leader).
    pub sent: Option<Instant>,
    /// The first follower's answer to such a request came back (leader).
    pub acked: Option<Instant>,
    /// The state machine began applying it (it was committed).
    pub apply_started: Option<Instant>,
    /// The state machine finished applying it.
    pub applied: Option<Instant>,
}

/// The stamps of the latest entries, by log index.
#[derive(Debug, Default)]
pub struct Timings {
    entries: Mutex<VecDeque<(u64, Stamps)>>,
}

impl Timings {
    /// A fresh, empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes the stamps of entry `index`, adding it in its place if it is
    /// not kept. The entries stay sorted by index and new ones arrive at the
    /// back, so the search from the back stops at once on the append path
    /// (a full scan there cost every append 4,096 comparisons on a
    /// follower, where nobody takes the stamps).
    fn with(&self, index: u64, change: impl FnOnce(&mut Stamps)) {
        let mut entries = self.entries.lock().expect("timings lock is never poisoned");
        let at = match entries.iter().rposition(|(i, _)| *i <= index) {
            Some(at) if entries[at].0 == index => at,
            before => {
                let at = before.map_or(0, |before| before + 1);
                entries.insert(at, (index, Stamps::default()));
                if entries.len() <= KEPT_ENTRIES {
                    at
                } else {
                    entries.pop_front();
                    match at.checked_sub(1) {
                        Some(at) => at,
                        None => return, // It was the oldest: dropped at once.
                    }
                }
            }
        };
        change(&mut entries[at].1);
    }

    /// Notes that the log store was handed entries `first..=last`.
    pub fn appended(&self, first: u64, last: u64, at: Instant) {
        for index in first..=last {
            self.with(index, |s| s.appended = Some(at));
        }
    }

    /// Notes that entries up to `last` are durable.
    pub fn flushed(&self, last: u64, at: Instant) {
        let mut entries = self.entries.lock().expect("timings lock is never poisoned");
        for (index, stamps) in entries.iter_mut().rev() {
            if *index > last {
                continue;
            }
            if stamps.flushed.is_some() {
                break;
            }
            stamps.flushed = Some(at);
        }
    }

    /// Notes that an append request carrying entries `first..=last` was
    /// sent at `at` (the first send of each counts).
    pub fn sent(&self, first: u64, last: u64, at: Instant) {
        self.stamp_range(first, last, |s| s.sent.get_or_insert(at));
    }

    /// Notes that a follower answered, at `at`, an append request carrying
    /// entries `first..=last` (the first answer for each counts).
    pub fn acked(&self, first: u64, last: u64, at: Instant) {
        self.stamp_range(first, last, |s| s.acked.get_or_insert(at));
    }

    /// Stamps the entries of `first..=last` that are kept (never adds one:
    /// a follower's stamps come after the leader's `appended`).
    fn stamp_range(
        &self,
        first: u64,
        last: u64,
        mut stamp: impl FnMut(&mut Stamps) -> &mut Instant,
    ) {
        let mut entries = self.entries.lock().expect("timings lock is never poisoned");
        for (index, stamps) in entries.iter_mut().rev() {
            if *index < first {
                break;
            }
            if *index <= last {
                stamp(stamps);
            }
        }
    }

    /// Notes that entry `index` began applying.
    pub fn apply_started(&self, index: u64, at: Instant) {
        self.with(index, |s| s.apply_started = Some(at));
    }

    /// Notes that entry `index` was applied.
    pub fn applied(&self, index: u64, at: Instant) {
        self.with(index, |s| s.applied = Some(at));
    }

    /// Takes the stamps of entry `index`, if they are still kept.
    pub fn take(&self, index: u64) -> Option<Stamps> {
        let mut entries = self.entries.lock().expect("timings lock is never poisoned");
        let at = entries.iter().rposition(|(i, _)| *i == index)?;
        entries.remove(at).map(|(_, stamps)| stamps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_follow_an_entry_through_its_stages_and_old_ones_are_dropped() {
        let timings = Timings::new();
        let t = Instant::now();
        timings.appended(1, 3, t);
        timings.flushed(2, t);
        timings.apply_started(1, t);
        timings.applied(1, t);
        let one = timings.take(1).expect("kept");
        assert!(one.appended.is_some() && one.flushed.is_some() && one.applied.is_some());
        let three = timings.take(3).expect("kept");
        assert!(three.flushed.is_none(), "not flushed yet");
        assert!(timings.take(1).is_none(), "taken once");
        timings.appended(10, 10 + KEPT_ENTRIES as u64, t);
        assert!(timings.take(10).is_none(), "the oldest are dropped");
        assert!(timings.take(11).is_some(), "the newest are kept");
    }

    #[test]
    fn stamps_stay_sorted_when_an_entry_is_stamped_out_of_order() {
        let timings = Timings::new();
        let t = Instant::now();
        timings.appended(5, 6, t);
        timings.apply_started(3, t); // Below every kept entry.
        timings.appended(4, 4, t); // Between kept entries.
        timings.appended(5, 5, t); // Again: stamped in place, not added.
        timings.flushed(6, t);
        for index in 3..=6 {
            let stamps = timings.take(index).expect("kept");
            assert!(stamps.flushed.is_some(), "entry {index} is flushed");
        }
        assert!(timings.take(5).is_none(), "entry 5 was kept once");
    }
}
