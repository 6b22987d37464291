//! The checker: reads a history and says which guarantees it shows broken.
//!
//! It works on what the clients observed, never on server internals, so it
//! checks the cluster the way a user would. Every decision uses only facts
//! that must hold whatever happened to operations of unknown outcome:
//!
//! - *happened before* is real time from the history's sequence numbers: A
//!   happened before B when A's completion precedes B's invoke; overlapping
//!   operations may have taken effect in either order;
//! - only receives that returned (`ok`) contribute deliveries; an ack or nack
//!   counts as *accepted* only when it returned and its receipt's result was
//!   not a refusal; an `unknown` ack counts as *attempted*;
//! - a refused ack or nack proves nothing (a retry of an ack that had already
//!   been applied is refused as an unknown receipt), so refusals are never
//!   used as evidence; a refused enqueue is, since enqueues carry dedup ids.
//!
//! A message is named by its queue and id ([`MessageKey`]); a payload (the
//! body, unique per enqueue) ties a message to the enqueue that sent it and
//! to its dead letter, whose delivery names its source message. The checks,
//! and exactly what each counts, are the docs of [`ViolationKind`]; duplicates
//! are classified in [`Duplicates`](crate::report::Duplicates).
//!
//! Assumptions it relies on, which the workload keeps: payload ids are unique
//! per enqueue; the queues drop nothing (no TTL, length limit, purge, or
//! max_deliveries without a dead-letter queue); one level of dead-lettering
//! (a dead-letter queue has none of its own); no extend and no nack delay
//! longer than 0 is needed for the lease check (a nack only shortens a lease);
//! and after the run a drain received and acked every queue until empty and
//! recorded the final depths ([`Op::Depth`]). Without those depths, `lost`
//! cannot be told from "still queued", and the report is inconclusive.
//!
//! What it does not do: it does not decide linearizability of queue stats,
//! and it cannot see lost fsyncs that a process crash does not expose.
//!
//! Files: `facts.rs` (the history indexed), `payloads.rs` (lost, unexpected,
//! stored twice, id reused), `leases.rs` (stale receipts, delivery after ack,
//! early redelivery, duplicates by cause), `order.rs` (queue and group
//! order); replica digests and liveness figures are here.

mod facts;
mod leases;
mod order;
mod payloads;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use facts::MessageKey;

use crate::history::{FaultWindow, History, Op, Phase};
use crate::report::{Liveness, Report, Violation, ViolationKind};
use facts::{Call, Facts};
use leases::{check_leases, classify_duplicates};
use order::{check_group_order, check_queue_order};
use payloads::check_payloads;

/// One replica's applied state after the run, as its status reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDigest {
    /// The node.
    pub node_id: u64,
    /// The last log index it applied.
    pub applied_index: u64,
    /// The digest of its queue state at that index.
    pub digest: u64,
}

impl From<(u64, u64, u64)> for ReplicaDigest {
    fn from((node_id, applied_index, digest): (u64, u64, u64)) -> Self {
        ReplicaDigest {
            node_id,
            applied_index,
            digest,
        }
    }
}

/// Tunables of the checker.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Clock slack for [`ViolationKind::EarlyRedelivery`]: the leader's clock
    /// stamps leases, the client's clock stamps the history; on one host they
    /// agree, across hosts they may not.
    pub lease_slack_ms: u64,
    /// Examples kept per violation kind.
    pub max_examples: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            lease_slack_ms: 250,
            max_examples: 10,
        }
    }
}

/// Checks a history with default options. `digests` are the replicas' final
/// states (after healing); `faults` the windows in which faults were active.
pub fn check(history: &History, digests: &[ReplicaDigest], faults: &[FaultWindow]) -> Report {
    check_with(history, digests, faults, &CheckOptions::default())
}

/// Checks a history.
pub fn check_with(
    history: &History,
    digests: &[ReplicaDigest],
    faults: &[FaultWindow],
    options: &CheckOptions,
) -> Report {
    let records = history.records();
    let facts = Facts::gather(&records);
    let mut findings = Findings::new(options.max_examples);
    let mut report = Report {
        operations: facts.operations(),
        replicas: digests.to_vec(),
        liveness: liveness(&facts.calls, faults),
        ..Report::default()
    };
    let drained = drain_status(&facts, &mut report.inconclusive);
    if history.dropped() > 0 {
        report.inconclusive.push(format!(
            "the history dropped {} records at its limit",
            history.dropped()
        ));
    }
    let unfinished = facts.calls.iter().filter(|c| c.done.is_none()).count();
    if unfinished > 0 {
        report.notes.push(format!(
            "{unfinished} calls never completed (counted as unknown)"
        ));
    }
    report.payloads = check_payloads(&facts, drained, &mut findings, &mut report.notes);
    let marks = check_leases(&facts, options, &mut findings);
    report.duplicates = classify_duplicates(&facts, &marks);
    check_queue_order(&facts, &mut findings);
    check_group_order(&facts, &mut findings);
    check_digests(digests, &mut findings, &mut report.inconclusive);
    report.violations = findings.into_violations();
    report
}

/// Violations counted so far, with a few examples each.
struct Findings {
    found: BTreeMap<ViolationKind, (u64, Vec<String>)>,
    max_examples: usize,
}

impl Findings {
    fn new(max_examples: usize) -> Self {
        Findings {
            found: BTreeMap::new(),
            max_examples,
        }
    }

    fn add(&mut self, kind: ViolationKind, example: impl FnOnce() -> String) {
        let (count, examples) = self.found.entry(kind).or_default();
        *count += 1;
        if examples.len() < self.max_examples {
            examples.push(example());
        }
    }

    fn into_violations(mut self) -> Vec<Violation> {
        ViolationKind::ALL
            .iter()
            .map(|kind| {
                let (count, examples) = self.found.remove(kind).unwrap_or_default();
                Violation {
                    kind: *kind,
                    count,
                    examples,
                }
            })
            .collect()
    }
}

/// Whether the drain emptied every queue; says why not in `inconclusive`.
fn drain_status(facts: &Facts, inconclusive: &mut Vec<String>) -> bool {
    if facts.depths.is_empty() {
        inconclusive.push(
            "no drain recorded (no queue depth read after the run): \
             a lost message cannot be told from a queued one"
                .to_string(),
        );
        return false;
    }
    let mut drained = true;
    for (queue, depth) in &facts.depths {
        match depth {
            Some(0) => {}
            Some(n) => {
                drained = false;
                inconclusive.push(format!(
                    "the drain left {n} messages in queue {queue}: lost counts may include them"
                ));
            }
            None => {
                drained = false;
                inconclusive.push(format!(
                    "the depth of queue {queue} could not be read after the drain"
                ));
            }
        }
    }
    drained
}

/// Replicas at the same applied index must hold the same state. Replicas
/// that did not all reach the same index after healing (a node left out of
/// the cluster, or one that never caught up) make the run inconclusive:
/// the laggard's state cannot be compared.
fn check_digests(
    digests: &[ReplicaDigest],
    findings: &mut Findings,
    inconclusive: &mut Vec<String>,
) {
    let mut by_index: BTreeMap<u64, Vec<&ReplicaDigest>> = BTreeMap::new();
    for digest in digests {
        by_index
            .entry(digest.applied_index)
            .or_default()
            .push(digest);
    }
    if by_index.len() > 1 {
        let stands: Vec<String> = digests
            .iter()
            .map(|r| format!("node {} at {}", r.node_id, r.applied_index))
            .collect();
        inconclusive.push(format!(
            "replicas stand at different applied indexes after healing ({}): only equal ones are compared",
            stands.join(", ")
        ));
    }
    for (index, replicas) in &by_index {
        let distinct: BTreeSet<u64> = replicas.iter().map(|r| r.digest).collect();
        if distinct.len() > 1 {
            findings.add(ViolationKind::DigestMismatch, || {
                let views: Vec<String> = replicas
                    .iter()
                    .map(|r| format!("node {} {:016x}", r.node_id, r.digest))
                    .collect();
                format!("at applied index {index}: {}", views.join(", "))
            });
        }
    }
}

/// Failover times and availability.
fn liveness(calls: &[Call], faults: &[FaultWindow]) -> Liveness {
    let successes: Vec<(u64, u64)> = calls
        .iter()
        .filter(|c| c.phase() == Phase::Ok)
        .filter_map(|c| match c.op() {
            Op::Enqueue { results, .. } if results.iter().any(|r| r.id.is_some()) => {
                Some((c.invoke.time_ms, c.done.map_or(u64::MAX, |d| d.time_ms)))
            }
            _ => None,
        })
        .collect();
    let failover_ms: Vec<Option<u64>> = faults
        .iter()
        .map(|fault| {
            successes
                .iter()
                .filter(|(inv, _)| *inv >= fault.start_ms)
                .map(|(_, comp)| comp - fault.start_ms)
                .min()
        })
        .collect();
    let mut recovered: Vec<u64> = failover_ms.iter().flatten().copied().collect();
    recovered.sort_unstable();
    let mut liveness = Liveness {
        faults: faults.len() as u64,
        failover_p50_ms: percentile(&recovered, 50),
        failover_p99_ms: percentile(&recovered, 99),
        failover_max_ms: recovered.last().copied(),
        failover_ms,
        ..Liveness::default()
    };
    for call in calls.iter().filter(|c| {
        matches!(
            c.invoke.op,
            Op::Enqueue { .. } | Op::Receive { .. } | Op::Ack { .. } | Op::Nack { .. }
        )
    }) {
        let ok = u64::from(call.phase() == Phase::Ok);
        if faults.iter().any(|f| f.contains(call.invoke.time_ms)) {
            liveness.calls_inside_faults += 1;
            liveness.ok_inside_faults += ok;
        } else {
            liveness.calls_outside_faults += 1;
            liveness.ok_outside_faults += ok;
        }
    }
    liveness
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], percent: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent * sorted.len() as u64).div_ceil(100).max(1);
    sorted.get(rank as usize - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 99), Some(7));
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), Some(50));
        assert_eq!(percentile(&values, 99), Some(99));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
    }
}
