//! The checker's report: what a history shows, counted, with examples.
//!
//! A [`Report`] has three kinds of content:
//!
//! - **violations** ([`ViolationKind`]): each is a broken guarantee, counted,
//!   with up to a few examples that name payloads, message ids and sequence
//!   numbers of the history, so that a reader can find the records;
//! - **inconclusive** reasons: the run could not prove what it should (the
//!   drain did not empty the queues, the history was truncated), so a clean
//!   result would mean nothing;
//! - **figures** that are reported, not judged: operation counts, duplicates
//!   by cause (the allowed ones included), failover times and availability.
//!
//! [`Report::is_ok`] is true only with no violation and nothing inconclusive.
//! The report serializes to JSON for CI artifacts and prints a human summary
//! ([`Report::summary`]).

use serde::{Deserialize, Serialize};

use crate::checker::ReplicaDigest;

/// A kind of broken guarantee. The doc of each says exactly what was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// An enqueue returned an id for a payload, and no receive ever returned
    /// that payload, though the drain emptied every queue.
    Lost,
    /// A payload was delivered, no ack was ever attempted on any of its
    /// receipts (in its queue or as a dead letter), and yet the drain found
    /// every queue empty: the message left the queues without being acked.
    LostAfterDelivery,
    /// A receive returned a payload that no enqueue sent, or whose every
    /// enqueue the server definitely refused.
    Unexpected,
    /// One payload was stored as two different messages (two ids in its
    /// queue, or two dead letters): a retried enqueue was not deduplicated.
    StoredTwice,
    /// A message was delivered again (a later delivery count, or as a dead
    /// letter) by a receive that did not complete before an ack of it that
    /// returned success was invoked.
    DeliveredAfterAck,
    /// Two receives returned the same delivery (same message, same delivery
    /// count): one lease handed out twice.
    LeaseDeliveredTwice,
    /// An ack or nack returned success for a receipt whose delivery had been
    /// superseded before the ack or nack was invoked: by a later delivery of
    /// the same message, by its dead-lettering, or by a successful ack or nack
    /// of the same receipt.
    StaleReceiptAccepted,
    /// A message was delivered again, without a nack, before the lease of its
    /// previous delivery could have run out (the receive completed more than
    /// the slack earlier than the previous receive's invoke plus its
    /// visibility timeout).
    EarlyRedelivery,
    /// One message id of a queue carried two different payloads.
    IdReused,
    /// Within a message group, a message was delivered (its receive invoked)
    /// after a later message of the group had been delivered: group FIFO
    /// broken, first deliveries out of id order included.
    GroupOrder,
    /// Two messages of one group were leased at once: one receive returned
    /// both, or an ack or nack of the earlier one succeeded after the later
    /// one had been delivered.
    GroupConcurrentLease,
    /// Two ungrouped messages of a queue were first delivered out of id
    /// order: the higher id's first delivery completed before the lower id's
    /// first delivery was invoked.
    QueueOrder,
    /// Two replicas at the same applied index reported different state
    /// digests.
    DigestMismatch,
}

impl ViolationKind {
    /// Every kind, in report order.
    pub const ALL: [ViolationKind; 13] = [
        ViolationKind::Lost,
        ViolationKind::LostAfterDelivery,
        ViolationKind::Unexpected,
        ViolationKind::StoredTwice,
        ViolationKind::DeliveredAfterAck,
        ViolationKind::LeaseDeliveredTwice,
        ViolationKind::StaleReceiptAccepted,
        ViolationKind::EarlyRedelivery,
        ViolationKind::IdReused,
        ViolationKind::GroupOrder,
        ViolationKind::GroupConcurrentLease,
        ViolationKind::QueueOrder,
        ViolationKind::DigestMismatch,
    ];

    /// Its name in the summary.
    pub fn label(self) -> &'static str {
        match self {
            ViolationKind::Lost => "lost",
            ViolationKind::LostAfterDelivery => "lost after delivery",
            ViolationKind::Unexpected => "unexpected",
            ViolationKind::StoredTwice => "stored twice",
            ViolationKind::DeliveredAfterAck => "delivered after ack",
            ViolationKind::LeaseDeliveredTwice => "lease delivered twice",
            ViolationKind::StaleReceiptAccepted => "stale receipt accepted",
            ViolationKind::EarlyRedelivery => "early redelivery",
            ViolationKind::IdReused => "id reused",
            ViolationKind::GroupOrder => "group order",
            ViolationKind::GroupConcurrentLease => "group concurrent lease",
            ViolationKind::QueueOrder => "queue order",
            ViolationKind::DigestMismatch => "replica digests differ",
        }
    }
}

/// One kind of violation, counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// What was broken.
    pub kind: ViolationKind,
    /// How many times.
    pub count: u64,
    /// The first few instances, in words that name records.
    pub examples: Vec<String>,
}

/// Operations of the history, by kind and outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operations {
    /// Cluster calls invoked.
    pub total: u64,
    /// Enqueue calls.
    pub enqueue: u64,
    /// Receive calls.
    pub receive: u64,
    /// Ack calls.
    pub ack: u64,
    /// Nack calls.
    pub nack: u64,
    /// Calls that returned.
    pub ok: u64,
    /// Calls the server definitely refused.
    pub fail: u64,
    /// Calls whose outcome is unknown, never-completed ones included.
    pub unknown: u64,
}

/// What happened to the payloads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payloads {
    /// Payloads some enqueue sent.
    pub sent: u64,
    /// Payloads an enqueue returned an id for.
    pub acknowledged: u64,
    /// Payloads some receive returned.
    pub delivered: u64,
    /// Payloads an ack returned success for.
    pub acked: u64,
    /// Payloads delivered from a dead-letter queue.
    pub dead_lettered: u64,
    /// Deliveries in all.
    pub deliveries: u64,
    /// Payloads gone after a complete drain though no ack of them returned
    /// success and at least one was refused: the ack took effect while the
    /// client was told it had not (a retried ack refused as an unknown
    /// receipt). Reported, not a violation: nothing was lost or duplicated,
    /// but the consumer got a wrong answer.
    #[serde(default)]
    pub acks_refused_but_applied: u64,
}

/// Deliveries beyond a payload's first, by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicates {
    /// Allowed: the previous lease ran out (held too long, or its receive's
    /// answer was lost).
    pub after_expiry: u64,
    /// Allowed: the previous delivery was nacked.
    pub after_nack: u64,
    /// Allowed: the first delivery of the payload's dead letter.
    pub dead_letter: u64,
    /// Violation: a delivery of a second stored copy of the payload.
    pub stored_twice: u64,
    /// Violation: a delivery after (or racing) a successful ack.
    pub after_ack: u64,
    /// Violation: the same lease handed out again.
    pub same_lease: u64,
}

impl Duplicates {
    /// Duplicates the queue's semantics allow.
    pub fn allowed(&self) -> u64 {
        self.after_expiry + self.after_nack + self.dead_letter
    }

    /// Duplicates that break a guarantee.
    pub fn violating(&self) -> u64 {
        self.stored_twice + self.after_ack + self.same_lease
    }
}

/// Liveness figures: reported, never failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Liveness {
    /// Fault windows given.
    pub faults: u64,
    /// Per fault, ms from its start to the first successful enqueue invoked
    /// after it started (`None`: none succeeded).
    pub failover_ms: Vec<Option<u64>>,
    /// Median failover time of the faults that recovered.
    pub failover_p50_ms: Option<u64>,
    /// 99th percentile failover time.
    pub failover_p99_ms: Option<u64>,
    /// Longest failover time.
    pub failover_max_ms: Option<u64>,
    /// Calls invoked while no fault was active.
    pub calls_outside_faults: u64,
    /// Of those, calls that returned.
    pub ok_outside_faults: u64,
    /// Calls invoked while a fault was active.
    pub calls_inside_faults: u64,
    /// Of those, calls that returned.
    pub ok_inside_faults: u64,
}

impl Liveness {
    /// The share of calls outside faults that returned, if there were any.
    pub fn ok_share_outside_faults(&self) -> Option<f64> {
        (self.calls_outside_faults > 0)
            .then(|| self.ok_outside_faults as f64 / self.calls_outside_faults as f64)
    }
}

/// What the checker found in a history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Calls by kind and outcome.
    pub operations: Operations,
    /// Payloads by fate.
    pub payloads: Payloads,
    /// Duplicate deliveries by cause.
    pub duplicates: Duplicates,
    /// Every violation kind with its count (zero included).
    pub violations: Vec<Violation>,
    /// The replica digests compared.
    pub replicas: Vec<ReplicaDigest>,
    /// Failover and availability figures.
    pub liveness: Liveness,
    /// Why the run proves less than it should; empty on a conclusive run.
    pub inconclusive: Vec<String>,
    /// Remarks that change no verdict.
    pub notes: Vec<String>,
}

impl Report {
    /// No violation and nothing inconclusive.
    pub fn is_ok(&self) -> bool {
        self.violation_count() == 0 && self.inconclusive.is_empty()
    }

    /// Violations of every kind.
    pub fn violation_count(&self) -> u64 {
        self.violations.iter().map(|v| v.count).sum()
    }

    /// How many violations of `kind`.
    pub fn count(&self, kind: ViolationKind) -> u64 {
        self.violations
            .iter()
            .filter(|v| v.kind == kind)
            .map(|v| v.count)
            .sum()
    }

    /// The kinds with at least one violation.
    pub fn violated(&self) -> Vec<ViolationKind> {
        self.violations
            .iter()
            .filter(|v| v.count > 0)
            .map(|v| v.kind)
            .collect()
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report has only serializable fields")
    }

    /// A human summary: verdict, operations, payloads, duplicates by cause,
    /// violations with examples, replicas, failover times.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let verdict = if self.violation_count() > 0 {
            format!("FAILED ({} violations)", self.violation_count())
        } else if !self.inconclusive.is_empty() {
            "INCONCLUSIVE".to_string()
        } else {
            "OK".to_string()
        };
        let o = &self.operations;
        let p = &self.payloads;
        let d = &self.duplicates;
        let line = |out: &mut String, text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(&mut out, format!("check: {verdict}"));
        line(
            &mut out,
            format!(
            "operations: {} (enqueue {}, receive {}, ack {}, nack {}): {} ok, {} fail, {} unknown",
            o.total, o.enqueue, o.receive, o.ack, o.nack, o.ok, o.fail, o.unknown
        ),
        );
        line(&mut out, format!(
            "payloads: {} sent, {} acknowledged, {} delivered ({} deliveries), {} acked, {} dead-lettered",
            p.sent, p.acknowledged, p.delivered, p.deliveries, p.acked, p.dead_lettered
        ));
        if p.acks_refused_but_applied > 0 {
            line(
                &mut out,
                format!(
                    "acks refused but applied: {} (the client was told the ack failed; see notes)",
                    p.acks_refused_but_applied
                ),
            );
        }
        line(
            &mut out,
            format!(
                "lost: {}  lost after delivery: {}  unexpected: {}",
                self.count(ViolationKind::Lost),
                self.count(ViolationKind::LostAfterDelivery),
                self.count(ViolationKind::Unexpected)
            ),
        );
        line(&mut out, format!(
            "duplicates: {} allowed (lease expiry {}, nack {}, dead letter {}); {} violating (stored twice {}, after ack {}, same lease {})",
            d.allowed(), d.after_expiry, d.after_nack, d.dead_letter,
            d.violating(), d.stored_twice, d.after_ack, d.same_lease
        ));
        for violation in self.violations.iter().filter(|v| v.count > 0) {
            line(
                &mut out,
                format!("VIOLATION {}: {}", violation.kind.label(), violation.count),
            );
            for example in &violation.examples {
                line(&mut out, format!("  - {example}"));
            }
        }
        line(&mut out, self.replica_line());
        line(&mut out, self.liveness_line());
        for reason in &self.inconclusive {
            line(&mut out, format!("INCONCLUSIVE: {reason}"));
        }
        for note in &self.notes {
            line(&mut out, format!("note: {note}"));
        }
        out
    }

    fn replica_line(&self) -> String {
        if self.replicas.is_empty() {
            return "replicas: no digests given".to_string();
        }
        let views: Vec<String> = self
            .replicas
            .iter()
            .map(|r| format!("{}@{}={:016x}", r.node_id, r.applied_index, r.digest))
            .collect();
        let verdict = if self.count(ViolationKind::DigestMismatch) == 0 {
            "no mismatch"
        } else {
            "MISMATCH"
        };
        format!("replicas: {} ({verdict})", views.join(" "))
    }

    fn liveness_line(&self) -> String {
        let l = &self.liveness;
        let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        let never = l.failover_ms.iter().filter(|f| f.is_none()).count();
        let share = l
            .ok_share_outside_faults()
            .map_or("-".to_string(), |s| format!("{:.2}%", s * 100.0));
        format!(
            "failover: {} faults, p50 {}, p99 {}, max {}, {} without a successful enqueue after; ok outside faults: {} ({}/{})",
            l.faults,
            ms(l.failover_p50_ms),
            ms(l.failover_p99_ms),
            ms(l.failover_max_ms),
            never,
            share,
            l.ok_outside_faults,
            l.calls_outside_faults
        )
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}
