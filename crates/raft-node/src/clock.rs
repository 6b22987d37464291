//! The node's clock: the time a leader stamps on commands, and how far this
//! node's wall clock is from its peers'.
//!
//! Time enters the replicated state only as the `now` a leader stamps on a
//! command, and the state keeps the largest stamp it has seen (its clock
//! never runs backwards). Two rules keep one node's wrong wall clock from
//! deciding the cluster's time:
//!
//! - **Stamps continue the state's time.** A leader stamps
//!   `max(wall clock, state clock + time elapsed since the state clock last
//!   moved)`, the elapsed time measured on this node's monotonic clock. After
//!   a leader whose clock ran ahead, the state's clock is ahead too; a new
//!   leader whose wall clock is right would stamp times the state ignores,
//!   and leases, delays and expiries would stand still until real time caught
//!   up (an hour, for a clock an hour ahead). With this rule time in the
//!   state moves at the rate the current leader measures, whatever the wall
//!   clocks say.
//! - **A node far from its peers neither wins an election nor stamps.** Every
//!   Raft message carries its sender's wall clock, so each node knows every
//!   peer's offset from its own (a response's offset is corrected by half the
//!   round trip). A voter refuses to vote for a candidate whose clock is more
//!   than `max_clock_skew_ms` from its own ([`Clock::check_candidate`]), and a
//!   leader that finds too many of its voters that far away to form a
//!   majority with the others stops leading: it refuses every proposal, its
//!   heartbeats stop and another node is elected ([`Clock::evaluate`]).
//!
//! The offsets are metrics (`raftq_clock_offset_ms`) and in `cluster status`;
//! a crossing of the limit is a log line.
//!
//! For failover drills and tests, [`Clock::set_offset_ms`] shifts this node's
//! wall clock (the node option `clock_offset_ms`), as libfaketime would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raftq_storage::queue::Timestamp;
use raftq_storage::NodeId;

use crate::error::{Error, Result};

/// How long a peer's measured offset counts as current.
pub const OFFSET_FRESH_FOR: Duration = Duration::from_secs(10);

/// A peer's clock offset as last measured.
#[derive(Clone, Copy, Debug)]
struct PeerOffset {
    /// Its wall clock minus ours, ms.
    offset_ms: i64,
    /// When it was measured.
    at: Instant,
}

/// Why a leader stopped stamping.
#[derive(Clone, Debug, Default)]
struct Verdict {
    refusal: Option<String>,
}

/// This node's clock.
#[derive(Debug)]
pub struct Clock {
    offset_ms: AtomicI64,
    max_skew_ms: u64,
    /// The state's clock when it last moved, and when that was.
    anchor: Mutex<Option<(Timestamp, Instant)>>,
    peers: Mutex<HashMap<NodeId, PeerOffset>>,
    verdict: Mutex<Verdict>,
}

impl Clock {
    /// A clock whose wall time is shifted by `offset_ms` (0 in production),
    /// refusing to lead more than `max_skew_ms` from its peers.
    pub fn new(offset_ms: i64, max_skew_ms: u64) -> Self {
        Clock {
            offset_ms: AtomicI64::new(offset_ms),
            max_skew_ms,
            anchor: Mutex::new(None),
            peers: Mutex::new(HashMap::new()),
            verdict: Mutex::new(Verdict::default()),
        }
    }

    /// Shifts this node's wall clock by `offset_ms` from the system's (fault
    /// injection for drills and tests).
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    /// The wall clock, ms since the Unix epoch (with the injected offset).
    pub fn wall(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Timestamp(
            ms.saturating_add(self.offset_ms.load(Ordering::Relaxed))
                .max(0) as u64,
        )
    }

    /// The time to read the state at (stats, waiting receivers): the later
    /// of the wall clock and the state's clock carried forward.
    pub fn now(&self) -> Timestamp {
        let anchor = *self.anchor.lock().expect("clock lock is never poisoned");
        continue_from(self.wall(), anchor.map(|(at, seen)| (at, seen.elapsed())))
    }

    /// The time to stamp on a command; refused while this node's clock is
    /// too far from its peers' for it to lead.
    pub fn stamp(&self) -> Result<Timestamp> {
        self.check_leading()?;
        Ok(self.now())
    }

    /// Refuses when this node must not lead (see [`Clock::evaluate`]).
    pub fn check_leading(&self) -> Result<()> {
        let verdict = self.verdict.lock().expect("clock lock is never poisoned");
        match &verdict.refusal {
            Some(why) => Err(Error::Unavailable(why.clone())),
            None => Ok(()),
        }
    }

    /// Records the state's clock after an apply; time carries on from it.
    pub fn observe_state(&self, clock: Timestamp) {
        let mut anchor = self.anchor.lock().expect("clock lock is never poisoned");
        if anchor.is_none_or(|(at, _)| at != clock) {
            *anchor = Some((clock, Instant::now()));
        }
    }

    /// Records a peer's offset from a request it sent at `sent_at_ms` by its
    /// clock, received now (one way: the network delay counts as offset).
    pub fn record_request(&self, peer: NodeId, sent_at_ms: u64) {
        if sent_at_ms == 0 {
            return;
        }
        let offset = sent_at_ms as i64 - self.wall().0 as i64;
        self.record(peer, offset);
    }

    /// Records a peer's offset from a response it sent at `sent_at_ms`, to a
    /// request this node sent at `asked_at` (its wall clock): the peer's clock
    /// is compared with the middle of the round trip.
    pub fn record_response(&self, peer: NodeId, sent_at_ms: u64, asked_at: Timestamp) {
        if sent_at_ms == 0 {
            return;
        }
        let answered = self.wall();
        let middle = (asked_at.0 as i64 + answered.0 as i64) / 2;
        self.record(peer, sent_at_ms as i64 - middle);
    }

    fn record(&self, peer: NodeId, offset_ms: i64) {
        let previous = self
            .peers
            .lock()
            .expect("clock lock is never poisoned")
            .insert(
                peer,
                PeerOffset {
                    offset_ms,
                    at: Instant::now(),
                },
            );
        let far = |o: i64| o.unsigned_abs() > self.max_skew_ms;
        let was_far = previous.is_some_and(|p| far(p.offset_ms));
        if far(offset_ms) && !was_far {
            tracing::warn!(
                peer,
                offset_ms,
                limit_ms = self.max_skew_ms,
                "a peer's clock is far from this node's: check NTP on both"
            );
        } else if !far(offset_ms) && was_far {
            tracing::info!(
                peer,
                offset_ms,
                "a peer's clock is close to this node's again"
            );
        }
    }

    /// A peer's current offset (its clock minus ours, ms), if measured lately.
    pub fn peer_offset(&self, peer: NodeId) -> Option<i64> {
        self.peers
            .lock()
            .expect("clock lock is never poisoned")
            .get(&peer)
            .filter(|p| p.at.elapsed() < OFFSET_FRESH_FOR)
            .map(|p| p.offset_ms)
    }

    /// Every peer's current offset, for metrics.
    pub fn peer_offsets(&self) -> Vec<(NodeId, i64)> {
        let peers = self.peers.lock().expect("clock lock is never poisoned");
        let mut offsets: Vec<_> = peers
            .iter()
            .filter(|(_, p)| p.at.elapsed() < OFFSET_FRESH_FOR)
            .map(|(id, p)| (*id, p.offset_ms))
            .collect();
        offsets.sort_unstable();
        offsets
    }

    /// Whether a vote request sent at `sent_at_ms` by the candidate's clock
    /// comes from a clock close enough to this one; the error says how far.
    pub fn check_candidate(&self, candidate: NodeId, sent_at_ms: u64) -> Result<()> {
        if sent_at_ms == 0 || self.max_skew_ms == 0 {
            return Ok(());
        }
        let offset = sent_at_ms as i64 - self.wall().0 as i64;
        if offset.unsigned_abs() > self.max_skew_ms {
            return Err(Error::Unavailable(format!(
                "node {candidate}'s clock is {offset} ms from this node's (limit {} ms, \
                 max_clock_skew_ms): a node that far off may not lead; fix its time (NTP)",
                self.max_skew_ms
            )));
        }
        Ok(())
    }

    /// Judges, on a leader, whether its clock is too far from its voters'
    /// for it to lead: when so many voters are more than `max_clock_skew_ms`
    /// away that the others, with this node, are no majority. Returns the
    /// change of verdict, if any: `Some(Some(why))` when it must stop
    /// leading, `Some(None)` when it may lead again. Not leading clears it.
    pub fn evaluate(&self, me: NodeId, leading: bool, voters: &[NodeId]) -> Option<Option<String>> {
        let refusal = if leading && self.max_skew_ms > 0 {
            let far: Vec<(NodeId, i64)> = voters
                .iter()
                .filter(|v| **v != me)
                .filter_map(|v| self.peer_offset(*v).map(|o| (*v, o)))
                .filter(|(_, o)| o.unsigned_abs() > self.max_skew_ms)
                .collect();
            let quorum = voters.len() / 2 + 1;
            (voters.len() - far.len() < quorum).then(|| {
                format!(
                    "node {me}'s clock is far from its voters' ({}; limit {} ms): it refuses to \
                     lead so that another node is elected; fix its time (NTP)",
                    far.iter()
                        .map(|(id, o)| format!("node {id} {o:+} ms"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.max_skew_ms
                )
            })
        } else {
            None
        };
        let mut verdict = self.verdict.lock().expect("clock lock is never poisoned");
        if verdict.refusal == refusal {
            return None;
        }
        verdict.refusal = refusal.clone();
        Some(refusal)
    }
}

/// The later of `wall` and the state's clock `at` carried forward by the
/// time `elapsed` since it was seen.
fn continue_from(wall: Timestamp, anchor: Option<(Timestamp, Duration)>) -> Timestamp {
    match anchor {
        Some((at, elapsed)) => wall.max(at.plus_ms(elapsed.as_millis() as u64)),
        None => wall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_continue_the_state_clock_when_it_is_ahead_of_the_wall_clock() {
        let wall = Timestamp(1_000_000);
        let ahead = Timestamp(wall.0 + 3_600_000);
        assert_eq!(continue_from(wall, None), wall);
        assert_eq!(
            continue_from(wall, Some((ahead, Duration::from_secs(6)))),
            ahead.plus_ms(6_000),
            "time moves on from the state's clock"
        );
        let behind = Timestamp(wall.0 - 50);
        assert_eq!(
            continue_from(wall, Some((behind, Duration::from_millis(10)))),
            wall,
            "a state clock behind the wall clock gives way to it"
        );
    }

    #[test]
    fn a_leader_far_from_a_majority_of_its_voters_refuses_to_lead() {
        let clock = Clock::new(0, 2_000);
        let voters = [1, 2, 3];
        assert_eq!(clock.evaluate(1, true, &voters), None, "no evidence: leads");
        clock.record(2, -3_600_000);
        assert_eq!(
            clock.evaluate(1, true, &voters),
            None,
            "one far voter of three: the other makes a majority"
        );
        clock.record(3, -3_600_000);
        let verdict = clock.evaluate(1, true, &voters).expect("changed");
        assert!(verdict.is_some_and(|why| why.contains("node 2 -3600000 ms")));
        assert!(clock.stamp().is_err(), "it stamps nothing");
        assert_eq!(clock.evaluate(1, false, &voters), Some(None), "a follower");
        assert!(clock.stamp().is_ok());
    }

    #[test]
    fn a_candidate_far_from_this_clock_gets_no_vote() {
        let clock = Clock::new(0, 2_000);
        let now = clock.wall().0;
        assert!(clock.check_candidate(2, now + 500).is_ok());
        let err = clock.check_candidate(2, now + 3_600_000).expect_err("far");
        assert!(err.to_string().contains("max_clock_skew_ms"), "{err}");
        clock.set_offset_ms(3_600_000);
        assert!(clock.check_candidate(2, now + 3_600_000).is_ok());
    }
}
