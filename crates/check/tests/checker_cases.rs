//! The checker against hand-made histories: one clean history that must pass,
//! and for each violation kind a history that shows exactly that violation
//! and must be reported as exactly that kind. A checker that cannot fail
//! proves nothing.

use raftq_check::{
    check, DeliveryRecord, EnqueueResult, FaultWindow, History, NewPayload, Op, Origin, PayloadId,
    Phase, Process, ReceiptResult, Record, ReplicaDigest, Report, ViolationKind,
};

const PLAIN: &str = "t-plain";
const GROUPED: &str = "t-grouped";
const RETRY: &str = "t-retry";
const DEAD: &str = "t-dead";
const VISIBILITY_MS: u64 = 2_000;

/// Writes records by hand: sequence numbers and a clock that only moves when
/// told to.
#[derive(Default)]
struct Script {
    records: Vec<Record>,
    now_ms: u64,
}

/// A delivery as a test states it: (message id, payload, delivery count).
type D<'a> = (u64, &'a str, u32);

impl Script {
    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    fn push(&mut self, process: &str, phase: Phase, invoke_seq: Option<u64>, op: Op) -> u64 {
        let seq = self.records.len() as u64;
        self.records.push(Record {
            seq,
            time_ms: self.now_ms,
            process: Process::new(process),
            node: None,
            phase,
            invoke_seq,
            op,
            error: (phase == Phase::Fail || phase == Phase::Unknown).then(|| "error".to_string()),
        });
        seq
    }

    fn invoke(&mut self, process: &str, op: Op) -> u64 {
        self.push(process, Phase::Invoke, None, op)
    }

    fn complete(&mut self, process: &str, invoke: u64, phase: Phase, op: Op) {
        self.push(process, phase, Some(invoke), op);
    }

    fn enqueue_op(queue: &str, payloads: &[(&str, Option<&str>)], ids: &[Option<u64>]) -> Op {
        Op::Enqueue {
            queue: queue.into(),
            messages: payloads
                .iter()
                .map(|(p, g)| NewPayload {
                    payload: PayloadId::new(*p),
                    group: g.map(Into::into),
                })
                .collect(),
            results: payloads
                .iter()
                .zip(ids)
                .map(|((p, _), id)| EnqueueResult {
                    payload: PayloadId::new(*p),
                    id: *id,
                    duplicate: false,
                    refused: id.is_none().then(|| "refused".to_string()),
                })
                .collect(),
        }
    }

    /// An enqueue of one message that returned `id`.
    fn enqueue(&mut self, queue: &str, payload: &str, group: Option<&str>, id: u64) {
        let invoke = self.invoke(
            "producer",
            Self::enqueue_op(queue, &[(payload, group)], &[]),
        );
        self.advance(5);
        let op = Self::enqueue_op(queue, &[(payload, group)], &[Some(id)]);
        self.complete("producer", invoke, Phase::Ok, op);
    }

    fn receive_op(queue: &str, deliveries: &[D], group: Option<&str>, origin: Option<&str>) -> Op {
        Op::Receive {
            queue: queue.into(),
            max: 10,
            visibility_ms: Some(VISIBILITY_MS),
            deliveries: deliveries
                .iter()
                .map(|(id, payload, count)| DeliveryRecord {
                    id: *id,
                    payload: PayloadId::new(*payload),
                    delivery_count: *count,
                    receipt: format!("{id}-{count}"),
                    group: group.map(Into::into),
                    dead_letter: origin.map(|q| Origin {
                        queue: q.into(),
                        id: *id,
                    }),
                })
                .collect(),
        }
    }

    /// Invokes a receive; complete it with [`Script::received`].
    fn receive_invoke(&mut self, process: &str, queue: &str) -> u64 {
        self.invoke(process, Self::receive_op(queue, &[], None, None))
    }

    fn received(
        &mut self,
        process: &str,
        invoke: u64,
        queue: &str,
        deliveries: &[D],
        group: Option<&str>,
    ) {
        let op = Self::receive_op(queue, deliveries, group, None);
        self.complete(process, invoke, Phase::Ok, op);
    }

    /// A receive that returned `deliveries` at once.
    fn receive(&mut self, process: &str, queue: &str, deliveries: &[D], group: Option<&str>) {
        let invoke = self.receive_invoke(process, queue);
        self.advance(5);
        self.received(process, invoke, queue, deliveries, group);
    }

    /// A receive from a dead-letter queue: each delivery's origin is the same
    /// id in `source`.
    fn receive_dead(&mut self, queue: &str, source: &str, deliveries: &[D]) {
        let invoke = self.invoke("consumer", Self::receive_op(queue, &[], None, None));
        self.advance(5);
        let op = Self::receive_op(queue, deliveries, None, Some(source));
        self.complete("consumer", invoke, Phase::Ok, op);
    }

    fn settle_op(nack: bool, queue: &str, receipts: &[(u64, u32)], accepted: Option<bool>) -> Op {
        let receipts: Vec<String> = receipts.iter().map(|(id, n)| format!("{id}-{n}")).collect();
        let results = match accepted {
            None => vec![],
            Some(ok) => receipts
                .iter()
                .map(|r| ReceiptResult {
                    receipt: r.clone(),
                    refused: (!ok).then(|| "stale receipt".to_string()),
                })
                .collect(),
        };
        let queue = queue.to_string();
        if nack {
            Op::Nack {
                queue,
                receipts,
                results,
            }
        } else {
            Op::Ack {
                queue,
                receipts,
                results,
            }
        }
    }

    /// An ack (or nack) of receipts `(id, delivery count)`, accepted or refused.
    fn settle(
        &mut self,
        process: &str,
        nack: bool,
        queue: &str,
        receipts: &[(u64, u32)],
        accepted: bool,
    ) {
        let invoke = self.invoke(process, Self::settle_op(nack, queue, receipts, None));
        self.advance(5);
        let op = Self::settle_op(nack, queue, receipts, Some(accepted));
        self.complete(process, invoke, Phase::Ok, op);
    }

    fn ack(&mut self, queue: &str, receipts: &[(u64, u32)], accepted: bool) {
        self.settle("consumer", false, queue, receipts, accepted);
    }

    fn nack(&mut self, queue: &str, receipts: &[(u64, u32)], accepted: bool) {
        self.settle("consumer", true, queue, receipts, accepted);
    }

    /// The drain's final depth reads: every queue empty.
    fn drained(&mut self) {
        for queue in [PLAIN, GROUPED, RETRY, DEAD] {
            let invoke = self.invoke(
                "drain",
                Op::Depth {
                    queue: queue.into(),
                    messages: None,
                },
            );
            self.complete(
                "drain",
                invoke,
                Phase::Ok,
                Op::Depth {
                    queue: queue.into(),
                    messages: Some(0),
                },
            );
        }
    }

    fn history(&self) -> History {
        History::from_records(self.records.clone()).expect("a well-formed history")
    }

    fn check(&self) -> Report {
        let digests = [(1, 100, 7), (2, 100, 7), (3, 100, 7)].map(ReplicaDigest::from);
        let report = check(&self.history(), &digests, &[]);
        println!("{report}");
        report
    }
}

/// Asserts that the report shows exactly one kind of violation, conclusively.
fn assert_only(report: &Report, kind: ViolationKind) {
    assert_eq!(report.violated(), vec![kind], "{report}");
    assert!(report.inconclusive.is_empty(), "{report}");
    assert!(!report.is_ok());
    let violation = report
        .violations
        .iter()
        .find(|v| v.kind == kind)
        .expect("listed");
    assert!(!violation.examples.is_empty(), "examples are given");
}

/// A history with every allowed behaviour: acks, a nack and its redelivery, a
/// lease that expired while held and the late ack refused, group FIFO, a
/// message dead-lettered after two deliveries, an enqueue of unknown outcome
/// that was stored, one that was not, and a refused one.
fn clean() -> Script {
    let mut s = Script::default();
    s.enqueue(PLAIN, "a", None, 1);
    s.enqueue(PLAIN, "b", None, 2);
    s.receive("consumer", PLAIN, &[(1, "a", 1), (2, "b", 1)], None);
    s.ack(PLAIN, &[(1, 1), (2, 1)], true);

    s.enqueue(GROUPED, "c", Some("g"), 1);
    s.enqueue(GROUPED, "d", Some("g"), 2);
    s.receive("consumer", GROUPED, &[(1, "c", 1)], Some("g"));
    s.nack(GROUPED, &[(1, 1)], true);
    s.receive("consumer", GROUPED, &[(1, "c", 2)], Some("g"));
    s.ack(GROUPED, &[(1, 2)], true);
    s.receive("consumer", GROUPED, &[(2, "d", 1)], Some("g"));
    s.ack(GROUPED, &[(2, 1)], true);

    s.enqueue(PLAIN, "e", None, 3);
    s.receive("consumer", PLAIN, &[(3, "e", 1)], None);
    s.advance(VISIBILITY_MS + 500);
    s.receive("other", PLAIN, &[(3, "e", 2)], None);
    s.ack(PLAIN, &[(3, 1)], false);
    s.settle("other", false, PLAIN, &[(3, 2)], true);

    s.enqueue(RETRY, "f", None, 1);
    s.receive("consumer", RETRY, &[(1, "f", 1)], None);
    s.nack(RETRY, &[(1, 1)], true);
    s.receive("consumer", RETRY, &[(1, "f", 2)], None);
    s.nack(RETRY, &[(1, 2)], true);
    s.receive_dead(DEAD, RETRY, &[(1, "f", 1)]);
    s.ack(DEAD, &[(1, 1)], true);

    let invoke = s.invoke(
        "producer",
        Script::enqueue_op(PLAIN, &[("g", None), ("h", None)], &[]),
    );
    s.advance(10_000);
    s.complete(
        "producer",
        invoke,
        Phase::Unknown,
        Script::enqueue_op(PLAIN, &[("g", None), ("h", None)], &[]),
    );
    s.receive("consumer", PLAIN, &[(4, "g", 1)], None);
    s.ack(PLAIN, &[(4, 1)], true);
    let invoke = s.invoke("producer", Script::enqueue_op(PLAIN, &[("i", None)], &[]));
    s.complete(
        "producer",
        invoke,
        Phase::Ok,
        Script::enqueue_op(PLAIN, &[("i", None)], &[None]),
    );
    s
}

#[test]
fn clean_history_passes() {
    let mut s = clean();
    s.drained();
    let report = s.check();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.violation_count(), 0);
    assert_eq!(report.payloads.sent, 9);
    assert_eq!(report.payloads.acknowledged, 6);
    assert_eq!(report.payloads.delivered, 7);
    assert_eq!(report.payloads.acked, 7);
    assert_eq!(report.payloads.dead_lettered, 1);
    assert_eq!(report.duplicates.after_nack, 2);
    assert_eq!(report.duplicates.after_expiry, 1);
    assert_eq!(report.duplicates.dead_letter, 1);
    assert_eq!(report.duplicates.violating(), 0);
    assert_eq!(report.operations.fail, 0);
    assert_eq!(report.operations.unknown, 1);
    let json = report.to_json();
    let back: Report = serde_json::from_str(&json).expect("a report reads back");
    assert_eq!(back, report);
}

#[test]
fn without_a_drain_the_run_is_inconclusive() {
    let report = clean().check();
    assert_eq!(report.violation_count(), 0);
    assert!(!report.is_ok());
    assert!(report.summary().contains("INCONCLUSIVE"));
}

#[test]
fn an_incomplete_drain_is_inconclusive() {
    let mut s = clean();
    let invoke = s.invoke(
        "drain",
        Op::Depth {
            queue: PLAIN.into(),
            messages: None,
        },
    );
    s.complete(
        "drain",
        invoke,
        Phase::Ok,
        Op::Depth {
            queue: PLAIN.into(),
            messages: Some(3),
        },
    );
    let report = s.check();
    assert!(!report.is_ok());
    assert!(
        report.inconclusive[0].contains("left 3 messages"),
        "{report}"
    );
}

#[test]
fn lost_acknowledged_enqueue() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.drained();
    let report = s.check();
    assert_only(&report, ViolationKind::Lost);
    assert_eq!(report.count(ViolationKind::Lost), 1);
}

#[test]
fn lost_after_delivery() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.drained();
    assert_only(&s.check(), ViolationKind::LostAfterDelivery);
}

#[test]
fn an_ack_refused_yet_applied_is_reported_not_failed() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.ack(PLAIN, &[(9, 1)], false);
    s.drained();
    let report = s.check();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.payloads.acks_refused_but_applied, 1);
    assert!(report.summary().contains("acks refused but applied: 1"));
}

#[test]
fn unexpected_payload_never_enqueued() {
    let mut s = clean();
    s.receive("consumer", PLAIN, &[(9, "stranger", 1)], None);
    s.ack(PLAIN, &[(9, 1)], true);
    s.drained();
    assert_only(&s.check(), ViolationKind::Unexpected);
}

#[test]
fn unexpected_payload_whose_enqueue_was_refused() {
    let mut s = clean();
    let invoke = s.invoke("producer", Script::enqueue_op(PLAIN, &[("x", None)], &[]));
    s.complete(
        "producer",
        invoke,
        Phase::Fail,
        Script::enqueue_op(PLAIN, &[("x", None)], &[]),
    );
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.ack(PLAIN, &[(9, 1)], true);
    s.drained();
    assert_only(&s.check(), ViolationKind::Unexpected);
}

#[test]
fn payload_stored_twice_by_a_retry() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.receive("consumer", PLAIN, &[(9, "x", 1), (10, "x", 1)], None);
    s.ack(PLAIN, &[(9, 1), (10, 1)], true);
    s.drained();
    let report = s.check();
    assert_only(&report, ViolationKind::StoredTwice);
    assert_eq!(report.duplicates.stored_twice, 1);
}

#[test]
fn delivered_after_ack() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.ack(PLAIN, &[(9, 1)], true);
    s.receive("consumer", PLAIN, &[(9, "x", 2)], None);
    s.ack(PLAIN, &[(9, 2)], true);
    s.drained();
    let report = s.check();
    assert_only(&report, ViolationKind::DeliveredAfterAck);
    assert_eq!(report.duplicates.after_ack, 1);
}

#[test]
fn dead_letter_of_an_acked_message() {
    let mut s = clean();
    s.enqueue(RETRY, "x", None, 9);
    s.receive("consumer", RETRY, &[(9, "x", 1)], None);
    s.ack(RETRY, &[(9, 1)], true);
    s.receive_dead(DEAD, RETRY, &[(9, "x", 1)]);
    s.ack(DEAD, &[(9, 1)], true);
    s.drained();
    assert_only(&s.check(), ViolationKind::DeliveredAfterAck);
}

#[test]
fn one_lease_delivered_twice() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.receive("other", PLAIN, &[(9, "x", 1)], None);
    s.ack(PLAIN, &[(9, 1)], true);
    s.settle("other", false, PLAIN, &[(9, 1)], false);
    s.drained();
    let report = s.check();
    assert_only(&report, ViolationKind::LeaseDeliveredTwice);
    assert_eq!(report.duplicates.same_lease, 1);
}

#[test]
fn stale_receipt_accepted_by_ack() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.advance(VISIBILITY_MS + 500);
    s.receive("other", PLAIN, &[(9, "x", 2)], None);
    s.ack(PLAIN, &[(9, 1)], true);
    s.settle("other", false, PLAIN, &[(9, 2)], false);
    s.drained();
    assert_only(&s.check(), ViolationKind::StaleReceiptAccepted);
}

#[test]
fn stale_receipt_accepted_by_nack() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.advance(VISIBILITY_MS + 500);
    s.receive("other", PLAIN, &[(9, "x", 2)], None);
    s.nack(PLAIN, &[(9, 1)], true);
    s.settle("other", false, PLAIN, &[(9, 2)], true);
    s.drained();
    assert_only(&s.check(), ViolationKind::StaleReceiptAccepted);
}

#[test]
fn early_redelivery_breaks_a_lease() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.advance(100);
    s.receive("other", PLAIN, &[(9, "x", 2)], None);
    s.settle("other", false, PLAIN, &[(9, 2)], true);
    s.drained();
    let report = s.check();
    assert_only(&report, ViolationKind::EarlyRedelivery);
    assert_eq!(
        report.duplicates.after_expiry, 2,
        "counted as a redelivery too"
    );
}

#[test]
fn id_reused_for_another_payload() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.ack(PLAIN, &[(9, 1)], true);
    s.enqueue(PLAIN, "y", None, 9);
    s.receive("consumer", PLAIN, &[(9, "y", 1)], None);
    s.ack(PLAIN, &[(9, 1)], true);
    s.drained();
    assert_only(&s.check(), ViolationKind::IdReused);
}

#[test]
fn group_fifo_broken() {
    let mut s = clean();
    s.enqueue(GROUPED, "x", Some("h"), 9);
    s.enqueue(GROUPED, "y", Some("h"), 10);
    s.receive("consumer", GROUPED, &[(10, "y", 1)], Some("h"));
    s.ack(GROUPED, &[(10, 1)], true);
    s.receive("consumer", GROUPED, &[(9, "x", 1)], Some("h"));
    s.ack(GROUPED, &[(9, 1)], true);
    s.drained();
    assert_only(&s.check(), ViolationKind::GroupOrder);
}

#[test]
fn two_of_a_group_leased_at_once() {
    let mut s = clean();
    s.enqueue(GROUPED, "x", Some("h"), 9);
    s.enqueue(GROUPED, "y", Some("h"), 10);
    s.receive("consumer", GROUPED, &[(9, "x", 1)], Some("h"));
    s.receive("other", GROUPED, &[(10, "y", 1)], Some("h"));
    s.ack(GROUPED, &[(9, 1)], true);
    s.settle("other", false, GROUPED, &[(10, 1)], true);
    s.drained();
    assert_only(&s.check(), ViolationKind::GroupConcurrentLease);
}

#[test]
fn two_of_a_group_in_one_receive() {
    let mut s = clean();
    s.enqueue(GROUPED, "x", Some("h"), 9);
    s.enqueue(GROUPED, "y", Some("h"), 10);
    s.receive("consumer", GROUPED, &[(9, "x", 1), (10, "y", 1)], Some("h"));
    s.ack(GROUPED, &[(9, 1), (10, 1)], true);
    s.drained();
    assert_only(&s.check(), ViolationKind::GroupConcurrentLease);
}

#[test]
fn ungrouped_first_deliveries_out_of_order() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.enqueue(PLAIN, "y", None, 10);
    s.receive("consumer", PLAIN, &[(10, "y", 1)], None);
    s.receive("consumer", PLAIN, &[(9, "x", 1)], None);
    s.ack(PLAIN, &[(9, 1), (10, 1)], true);
    s.drained();
    assert_only(&s.check(), ViolationKind::QueueOrder);
}

#[test]
fn overlapping_receives_may_deliver_in_either_order() {
    let mut s = clean();
    s.enqueue(PLAIN, "x", None, 9);
    s.enqueue(PLAIN, "y", None, 10);
    let first = s.receive_invoke("consumer", PLAIN);
    let second = s.receive_invoke("other", PLAIN);
    s.received("other", second, PLAIN, &[(10, "y", 1)], None);
    s.received("consumer", first, PLAIN, &[(9, "x", 1)], None);
    s.ack(PLAIN, &[(9, 1)], true);
    s.settle("other", false, PLAIN, &[(10, 1)], true);
    s.drained();
    let report = s.check();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn replica_digests_differ() {
    let mut s = clean();
    s.drained();
    let digests = [(1, 100, 7), (2, 100, 8), (3, 100, 7)].map(ReplicaDigest::from);
    let report = check(&s.history(), &digests, &[]);
    assert_only(&report, ViolationKind::DigestMismatch);
    assert_eq!(report.count(ViolationKind::DigestMismatch), 1);
}

/// A replica that never caught up after healing (found by a 10-minute
/// drill whose nemesis had left a removed node out of the cluster) cannot be
/// compared: the run is inconclusive, and so not OK.
#[test]
fn replicas_that_did_not_converge_make_the_run_inconclusive() {
    let mut s = clean();
    s.drained();
    let digests = [(1, 100, 7), (2, 100, 7), (3, 99, 9)].map(ReplicaDigest::from);
    let report = check(&s.history(), &digests, &[]);
    assert!(report.violated().is_empty(), "{report}");
    assert!(!report.is_ok(), "{report}");
    assert!(
        report
            .inconclusive
            .iter()
            .any(|n| n.contains("different applied indexes") && n.contains("node 3 at 99")),
        "{report}"
    );
}

#[test]
fn failover_times_and_availability_are_reported() {
    let mut s = clean();
    s.drained();
    let end = s.now_ms;
    s.advance(1_000);
    let start = s.now_ms;
    // Invoked before the fault: does not count for failover.
    let invoke = s.invoke("producer", Script::enqueue_op(PLAIN, &[("x", None)], &[]));
    s.advance(300);
    let invoke_y = s.invoke("other", Script::enqueue_op(PLAIN, &[("y", None)], &[]));
    s.advance(500);
    s.complete(
        "producer",
        invoke,
        Phase::Ok,
        Script::enqueue_op(PLAIN, &[("x", None)], &[Some(9)]),
    );
    s.complete(
        "other",
        invoke_y,
        Phase::Ok,
        Script::enqueue_op(PLAIN, &[("y", None)], &[Some(10)]),
    );
    s.receive("consumer", PLAIN, &[(9, "x", 1), (10, "y", 1)], None);
    s.ack(PLAIN, &[(9, 1), (10, 1)], true);
    s.drained();
    let faults = [
        FaultWindow {
            start_ms: start + 100,
            end_ms: start + 2_000,
        },
        FaultWindow {
            start_ms: s.now_ms + 10_000,
            end_ms: u64::MAX,
        },
    ];
    let report = check(&s.history(), &[], &faults);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.liveness.failover_ms, vec![Some(700), None]);
    assert_eq!(report.liveness.failover_max_ms, Some(700));
    assert!(report.liveness.calls_inside_faults >= 1);
    assert!(report.liveness.ok_share_outside_faults().is_some());
    assert!(end < start);
}
