//! One readable scenario per queue behaviour, on the pure state machine.
//! Each test is a short story: set up, act, check what a user would see.

use bytes::Bytes;
use raftq_storage::command::{Command, Enqueued, Response};
use raftq_storage::queue::{
    Delivery, MessageId, NewMessage, Overflow, QueueConfig, QueueConfigPatch, QueueName, Queues,
    Receipt, Timestamp, MAX_RECEIVE_BYTES,
};
use raftq_storage::Refusal;

const SECOND: u64 = 1_000;

/// A queue state with a little vocabulary for the stories below.
struct Story {
    queues: Queues,
    now: u64,
}

impl Story {
    fn new() -> Self {
        Story {
            queues: Queues::new(),
            now: 1_000_000,
        }
    }

    fn with_queue(name: &str, config: QueueConfig) -> Self {
        let mut story = Story::new();
        story.create(name, config);
        story
    }

    fn apply(&mut self, command: Command) -> Response {
        let response = self.queues.apply(command);
        self.queues.check_indexes().expect("indexes consistent");
        response
    }

    fn create(&mut self, name: &str, config: QueueConfig) {
        let response = self.apply(Command::CreateQueue {
            name: QueueName::new(name),
            config,
            now: Timestamp(self.now),
        });
        assert_eq!(response, Response::QueueCreated { created: true });
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    fn enqueue_messages(
        &mut self,
        queue: &str,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<Enqueued, Refusal>> {
        match self.apply(Command::Enqueue {
            queue: QueueName::new(queue),
            messages,
            now: Timestamp(self.now),
        }) {
            Response::Enqueued(results) => results,
            other => panic!("expected Enqueued, got {other:?}"),
        }
    }

    fn enqueue(&mut self, queue: &str, body: &str) -> MessageId {
        let results = self.enqueue_messages(queue, vec![NewMessage::new(body.to_string())]);
        results[0].clone().expect("enqueued").id
    }

    fn receive_with(&mut self, queue: &str, max: u32, visibility_ms: Option<u64>) -> Vec<Delivery> {
        match self.apply(Command::Receive {
            queue: QueueName::new(queue),
            max,
            visibility_ms,
            max_bytes: None,
            consumer: "worker-1".into(),
            now: Timestamp(self.now),
        }) {
            Response::Received { deliveries, .. } => deliveries,
            other => panic!("expected Received, got {other:?}"),
        }
    }

    fn receive(&mut self, queue: &str, max: u32) -> Vec<Delivery> {
        self.receive_with(queue, max, None)
    }

    fn bodies(deliveries: &[Delivery]) -> Vec<String> {
        deliveries
            .iter()
            .map(|d| String::from_utf8_lossy(&d.body).into_owned())
            .collect()
    }

    fn ack(&mut self, queue: &str, receipt: Receipt) -> Result<(), Refusal> {
        match self.apply(Command::ack(queue, [receipt])) {
            Response::Acked(results) => results[0].clone(),
            other => panic!("expected Acked, got {other:?}"),
        }
    }

    fn nack(
        &mut self,
        queue: &str,
        receipt: Receipt,
        delay_ms: Option<u64>,
        reason: Option<&str>,
    ) -> Result<(), Refusal> {
        match self.apply(Command::Nack {
            queue: QueueName::new(queue),
            receipts: vec![receipt],
            delay_ms,
            reason: reason.map(str::to_string),
            now: Timestamp(self.now),
        }) {
            Response::Nacked(results) => results[0].clone(),
            other => panic!("expected Nacked, got {other:?}"),
        }
    }

    fn extend(
        &mut self,
        queue: &str,
        receipt: Receipt,
        visibility_ms: u64,
    ) -> Result<Timestamp, Refusal> {
        match self.apply(Command::Extend {
            queue: QueueName::new(queue),
            receipts: vec![receipt],
            visibility_ms,
            now: Timestamp(self.now),
        }) {
            Response::Extended(results) => results[0].clone(),
            other => panic!("expected Extended, got {other:?}"),
        }
    }

    fn release(&mut self, queue: &str, receipt: Receipt) -> Result<(), Refusal> {
        match self.apply(Command::Release {
            queue: QueueName::new(queue),
            receipts: vec![receipt],
        }) {
            Response::Released(results) => results[0].clone(),
            other => panic!("expected Released, got {other:?}"),
        }
    }

    fn purge(&mut self, queue: &str) -> u64 {
        match self.apply(Command::Purge {
            name: QueueName::new(queue),
            now: Timestamp(self.now),
        }) {
            Response::Purged { messages } => messages,
            other => panic!("expected Purged, got {other:?}"),
        }
    }

    fn refused(&mut self, command: Command) -> Refusal {
        let before = self.queues.digest();
        let response = self.apply(command);
        assert_eq!(self.queues.digest(), before, "a refusal changes nothing");
        match response {
            Response::Refused(refusal) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn stats(&self, queue: &str) -> raftq_storage::queue::QueueStats {
        self.queues
            .stats(&QueueName::new(queue), Timestamp(self.now))
            .expect("stats")
    }
}

/// The defaults without the retry backoff, so that the stories below about
/// other behaviours see a message again as soon as its lease ends; the
/// backoff has stories of its own.
fn config() -> QueueConfig {
    QueueConfig {
        retry_backoff_min_ms: 0,
        ..QueueConfig::default()
    }
}

#[test]
fn enqueued_messages_get_increasing_ids_that_are_never_reused_even_after_a_purge() {
    let mut s = Story::with_queue("q", config());
    assert_eq!(s.enqueue("q", "a"), MessageId(1));
    assert_eq!(s.enqueue("q", "b"), MessageId(2));
    assert_eq!(s.purge("q"), 2);
    assert_eq!(s.enqueue("q", "c"), MessageId(3));
}

#[test]
fn a_queue_created_again_under_its_old_name_never_reuses_ids_and_refuses_old_receipts() {
    // The field case: worker A holds a lease of the old queue's message 1;
    // the queue is deleted and created again, and gets a new message.
    let mut s = Story::with_queue("jobs", config());
    assert_eq!(s.enqueue("jobs", "old-work"), MessageId(1));
    let held_by_a = s.receive_with("jobs", 1, Some(600 * SECOND)).remove(0);
    s.apply(Command::DeleteQueue {
        name: "jobs".into(),
    });
    s.create("jobs", config());
    let new_id = s.enqueue("jobs", "new-work");
    assert!(new_id > MessageId(1), "ids are never reused: got {new_id}");
    let held_by_b = s.receive("jobs", 1).remove(0);
    assert_ne!(held_by_b.receipt, held_by_a.receipt);
    assert_eq!(
        s.ack("jobs", held_by_a.receipt),
        Err(Refusal::ReceiptUnknown(1)),
        "A's late ack names the old queue's message"
    );
    assert_eq!(s.stats("jobs").in_flight, 1, "new-work survives");
    assert_eq!(s.nack("jobs", held_by_b.receipt, None, None), Ok(()));
    // Ids are cluster-wide: another queue's ids never meet these either.
    s.create("other", config());
    assert!(s.enqueue("other", "x") > new_id);
}

#[test]
fn receive_leases_ready_messages_in_id_order_and_an_expired_lease_delivers_again() {
    let mut s = Story::with_queue("q", config());
    for body in ["a", "b", "c"] {
        s.enqueue("q", body);
    }
    let first = s.receive("q", 2);
    assert_eq!(Story::bodies(&first), ["a", "b"]);
    assert!(first.iter().all(|d| d.delivery_count == 1));
    assert_eq!(Story::bodies(&s.receive("q", 10)), ["c"]);
    assert!(s.receive("q", 10).is_empty(), "everything is leased");
    s.advance(30 * SECOND);
    let again = s.receive("q", 10);
    assert_eq!(Story::bodies(&again), ["a", "b", "c"]);
    assert!(again.iter().all(|d| d.delivery_count == 2));
}

#[test]
fn an_acked_message_is_gone_a_repeated_ack_succeeds_within_the_window_and_is_unknown_after() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            dedup_window_ms: 120 * SECOND,
            ..config()
        },
    );
    s.enqueue("q", "a");
    let d = s.receive("q", 1).remove(0);
    assert_eq!(s.ack("q", d.receipt), Ok(()));
    s.advance(60 * SECOND);
    assert!(
        s.receive("q", 10).is_empty(),
        "an acked message is never delivered again"
    );
    let before = s.queues.digest();
    assert_eq!(
        s.ack("q", d.receipt),
        Ok(()),
        "a retried ack whose answer was lost hears done"
    );
    assert_eq!(s.queues.digest(), before, "and changes nothing");
    assert_eq!(s.stats("q").counters.acked, 1);
    s.advance(60 * SECOND);
    s.apply(Command::Tick {
        now: Timestamp(s.now),
    });
    assert_eq!(
        s.ack("q", d.receipt),
        Err(Refusal::ReceiptUnknown(1)),
        "after the window the receipt is unknown"
    );
    assert_eq!(
        s.ack(
            "q",
            Receipt {
                message: MessageId(1),
                delivery: 2
            }
        ),
        Err(Refusal::ReceiptUnknown(1)),
        "a receipt that was never acked is not made up"
    );
}

#[test]
fn a_receipt_from_an_earlier_lease_is_stale_for_ack_nack_and_extend() {
    let mut s = Story::with_queue("q", config());
    s.enqueue("q", "a");
    let old = s.receive("q", 1).remove(0);
    s.advance(31 * SECOND);
    let new = s.receive("q", 1).remove(0);
    assert_eq!(new.delivery_count, 2);
    let before = s.queues.digest();
    assert_eq!(s.ack("q", old.receipt), Err(Refusal::ReceiptStale(1)));
    assert_eq!(
        s.nack("q", old.receipt, None, None),
        Err(Refusal::ReceiptStale(1))
    );
    assert_eq!(
        s.extend("q", old.receipt, 5 * SECOND),
        Err(Refusal::ReceiptStale(1))
    );
    assert_eq!(s.queues.digest(), before, "stale receipts change nothing");
    assert_eq!(s.ack("q", new.receipt), Ok(()));
}

#[test]
fn a_slow_consumer_may_still_ack_after_its_lease_ran_out_if_nobody_leased_it_again() {
    let mut s = Story::with_queue("q", config());
    s.enqueue("q", "a");
    let d = s.receive("q", 1).remove(0);
    s.advance(45 * SECOND);
    assert_eq!(s.ack("q", d.receipt), Ok(()));
    assert!(s.receive("q", 1).is_empty());
}

#[test]
fn extend_keeps_a_message_leased_past_its_original_deadline() {
    let mut s = Story::with_queue("q", config());
    s.enqueue("q", "a");
    let d = s.receive("q", 1).remove(0);
    s.advance(20 * SECOND);
    let deadline = s.extend("q", d.receipt, 60 * SECOND).expect("extended");
    assert_eq!(deadline, Timestamp(s.now + 60 * SECOND));
    s.advance(30 * SECOND);
    assert!(
        s.receive("q", 1).is_empty(),
        "still leased after the first deadline"
    );
    s.advance(31 * SECOND);
    assert_eq!(s.receive("q", 1)[0].delivery_count, 2);
}

#[test]
fn nack_releases_at_once_or_after_its_delay() {
    let mut s = Story::with_queue("q", config());
    s.enqueue("q", "a");
    s.advance(1);
    s.enqueue("q", "b");
    let a = s.receive("q", 1).remove(0);
    s.advance(1);
    assert_eq!(s.nack("q", a.receipt, None, Some("db down")), Ok(()));
    let again = s.receive("q", 2);
    assert_eq!(
        Story::bodies(&again),
        ["b", "a"],
        "a redelivery queues behind the message that was waiting"
    );
    assert_eq!(again[1].delivery_count, 2);
    s.ack("q", again[0].receipt).expect("ack b");
    let again = again[1].clone();
    assert_eq!(s.nack("q", again.receipt, Some(10 * SECOND), None), Ok(()));
    assert!(s.receive("q", 5).is_empty(), "not before its delay");
    s.advance(10 * SECOND);
    assert_eq!(Story::bodies(&s.receive("q", 5)), ["a"]);
    assert_eq!(
        s.ack("q", a.receipt),
        Err(Refusal::ReceiptStale(1)),
        "nack ended that lease"
    );
}

#[test]
fn nack_and_lease_expiry_share_one_exponential_backoff() {
    let config = QueueConfig {
        retry_backoff_min_ms: 2 * SECOND,
        retry_backoff_max_ms: 8 * SECOND,
        ..config()
    };
    let mut s = Story::with_queue("q", config.clone());
    s.enqueue("q", "a");
    let d = s.receive("q", 1).remove(0);
    s.nack("q", d.receipt, None, None).expect("nack");
    let backoff = config.retry_backoff_ms(1, 1);
    assert!((SECOND..=2 * SECOND).contains(&backoff));
    s.advance(backoff - 1);
    assert!(s.receive("q", 1).is_empty(), "in backoff");
    s.advance(1);
    let d = s.receive("q", 1).remove(0);
    assert_eq!(d.delivery_count, 2);
    // The lease runs out: the second retry waits the doubled backoff.
    let backoff = config.retry_backoff_ms(1, 2);
    assert!((2 * SECOND..=4 * SECOND).contains(&backoff));
    s.advance(30 * SECOND + backoff - 1);
    assert!(s.receive("q", 1).is_empty(), "lease over, backoff not");
    assert_eq!(s.stats("q").delayed, 1);
    s.advance(1);
    assert_eq!(s.receive("q", 1)[0].delivery_count, 3);
}

#[test]
fn a_message_past_max_deliveries_moves_to_the_dead_letter_queue_with_its_history() {
    let mut s = Story::with_queue("dlq", config());
    s.create(
        "q",
        QueueConfig {
            max_deliveries: 2,
            dead_letter_queue: Some("dlq".into()),
            ..config()
        },
    );
    s.enqueue("q", "poison");
    for _ in 0..2 {
        let d = s.receive("q", 1).remove(0);
        s.nack("q", d.receipt, None, Some("cannot parse"))
            .expect("nack");
    }
    assert!(
        s.receive("q", 1).is_empty(),
        "third delivery dead-letters instead"
    );
    assert_eq!(s.stats("q").counters.dead_lettered, 1);
    let dead = s.receive("dlq", 1).remove(0);
    assert_eq!(Story::bodies(std::slice::from_ref(&dead)), ["poison"]);
    let origin = dead.dead_letter.expect("dead-letter record");
    assert_eq!(origin.source_queue, QueueName::new("q"));
    assert_eq!(origin.source_id, MessageId(1));
    assert_eq!(origin.delivery_count, 2);
    assert_eq!(origin.reason.as_deref(), Some("cannot parse"));
}

#[test]
fn without_a_dead_letter_queue_a_message_past_max_deliveries_is_dropped_and_counted() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            max_deliveries: 1,
            ..config()
        },
    );
    s.enqueue("q", "a");
    s.receive("q", 1);
    s.advance(30 * SECOND);
    let response = s.apply(Command::receive("q", 1, s.now));
    assert!(
        matches!(&response, Response::Received { deliveries, dropped, dead_lettered: 0, .. }
            if deliveries.is_empty() && dropped == &[(MessageId(1), 1)]),
        "the response names the dropped message for the node's log: {response:?}"
    );
    let stats = s.stats("q");
    assert_eq!(
        (
            stats.ready,
            stats.counters.dropped,
            stats.counters.dead_lettered
        ),
        (0, 1, 0),
        "counted as dropped: no dead-letter queue received it"
    );
}

#[test]
fn by_default_a_failing_message_backs_off_and_does_not_starve_the_messages_behind_it() {
    let mut s = Story::with_queue("q", QueueConfig::default());
    s.enqueue("q", "poison");
    s.advance(1);
    for i in 0..5 {
        s.enqueue("q", &format!("work-{i}"));
    }
    let poison = s.receive("q", 1).remove(0);
    assert_eq!(Story::bodies(std::slice::from_ref(&poison)), ["poison"]);
    s.nack("q", poison.receipt, None, Some("cannot parse"))
        .expect("nack");
    // The retry backoff holds it back at first ...
    let next = s.receive("q", 10);
    assert_eq!(next.len(), 5, "the other messages go first");
    for d in &next {
        s.ack("q", d.receipt).expect("ack");
    }
    assert!(s.receive("q", 1).is_empty(), "the poison message backs off");
    // ... and its delivery limit takes minutes of retries, not a second.
    let mut deliveries = 1;
    let started = s.now;
    loop {
        s.advance(SECOND);
        let got = s.receive("q", 1);
        let Some(d) = got.first() else {
            if s.stats("q").counters.dropped == 1 {
                break;
            }
            continue;
        };
        deliveries += 1;
        s.nack("q", d.receipt, None, None).expect("nack");
    }
    assert_eq!(deliveries, QueueConfig::default().max_deliveries);
    let minutes = (s.now - started) / 60_000;
    assert!(minutes >= 10, "20 deliveries took only {minutes} minutes");
}

#[test]
fn max_deliveries_zero_redelivers_forever() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            max_deliveries: 0,
            ..config()
        },
    );
    s.enqueue("q", "a");
    for round in 1..=30 {
        assert_eq!(s.receive("q", 1)[0].delivery_count, round);
        s.advance(30 * SECOND);
    }
}

#[test]
fn redrive_moves_dead_letters_back_to_their_source_queue_as_new_messages() {
    let mut s = Story::with_queue("dlq", config());
    s.create(
        "q",
        QueueConfig {
            max_deliveries: 1,
            dead_letter_queue: Some("dlq".into()),
            ..config()
        },
    );
    s.enqueue("q", "a");
    s.enqueue("q", "b");
    s.receive("q", 2);
    s.advance(30 * SECOND);
    assert!(s.receive("q", 2).is_empty());
    assert_eq!(s.stats("dlq").ready, 2);
    assert_eq!(
        s.apply(Command::Redrive {
            dlq: "dlq".into(),
            max: 10,
            now: Timestamp(s.now)
        }),
        Response::Redriven {
            moved: 2,
            skipped: 0
        }
    );
    let back = s.receive("q", 10);
    assert_eq!(Story::bodies(&back), ["a", "b"]);
    assert!(
        back[0].id > MessageId(4),
        "new ids, after those the dead letters had"
    );
    assert!(back
        .iter()
        .all(|d| d.delivery_count == 1 && d.dead_letter.is_none()));
}

#[test]
fn a_duplicate_dedup_id_within_the_window_returns_the_first_id_and_stores_nothing() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            dedup_window_ms: 60 * SECOND,
            ..config()
        },
    );
    let msg = |body: &str| NewMessage {
        dedup_id: Some("order-7".into()),
        ..NewMessage::new(body.to_string())
    };
    let first = s.enqueue_messages("q", vec![msg("a")]);
    assert_eq!(
        first[0],
        Ok(Enqueued {
            id: MessageId(1),
            duplicate: false
        })
    );
    s.advance(59 * SECOND);
    let again = s.enqueue_messages("q", vec![msg("a-retry"), msg("a-retry-2")]);
    assert!(again.iter().all(|r| *r
        == Ok(Enqueued {
            id: MessageId(1),
            duplicate: true
        })));
    let d = s.receive("q", 10);
    assert_eq!(Story::bodies(&d), ["a"]);
    s.ack("q", d[0].receipt).expect("ack");
    assert_eq!(
        s.enqueue_messages("q", vec![msg("after-ack")])[0],
        Ok(Enqueued {
            id: MessageId(1),
            duplicate: true
        }),
        "still a duplicate after the first was acked"
    );
    s.advance(SECOND);
    assert_eq!(
        s.enqueue_messages("q", vec![msg("new")])[0],
        Ok(Enqueued {
            id: MessageId(2),
            duplicate: false
        }),
        "the window has passed"
    );
}

#[test]
fn tick_forgets_dedup_ids_whose_window_ended() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            dedup_window_ms: 10 * SECOND,
            ..config()
        },
    );
    s.enqueue_messages(
        "q",
        vec![NewMessage {
            dedup_id: Some("x".into()),
            ..NewMessage::new("a")
        }],
    );
    s.advance(10 * SECOND);
    assert_eq!(
        s.apply(Command::Tick {
            now: Timestamp(s.now)
        }),
        Response::Ticked {
            expired: 0,
            dedup_trimmed: 1
        }
    );
}

#[test]
fn delayed_messages_stay_invisible_until_their_delay_passed() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            default_delay_ms: 5 * SECOND,
            ..config()
        },
    );
    s.enqueue("q", "default-delay");
    s.enqueue_messages(
        "q",
        vec![NewMessage {
            delay_ms: Some(0),
            ..NewMessage::new("now")
        }],
    );
    s.enqueue_messages(
        "q",
        vec![NewMessage {
            delay_ms: Some(60 * SECOND),
            ..NewMessage::new("later")
        }],
    );
    let take = |s: &mut Story| {
        let got = s.receive("q", 10);
        for d in &got {
            s.ack("q", d.receipt).expect("ack");
        }
        Story::bodies(&got)
    };
    assert_eq!(take(&mut s), ["now"]);
    assert_eq!(s.stats("q").delayed, 2);
    s.advance(5 * SECOND - 1);
    assert!(take(&mut s).is_empty());
    s.advance(1);
    assert_eq!(take(&mut s), ["default-delay"]);
    s.advance(55 * SECOND);
    assert_eq!(take(&mut s), ["later"]);
}

#[test]
fn a_delay_beyond_max_delay_is_refused() {
    let mut s = Story::with_queue("q", config());
    let results = s.enqueue_messages(
        "q",
        vec![NewMessage {
            delay_ms: Some(16 * 60 * SECOND),
            ..NewMessage::new("x")
        }],
    );
    assert!(
        matches!(&results[0], Err(Refusal::InvalidArgument(why)) if why.contains("max_delay_ms"))
    );
    assert_eq!(s.stats("q").counters.enqueued, 0);
}

#[test]
fn messages_past_their_ttl_are_dropped_by_tick_and_never_delivered() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            message_ttl_ms: Some(10 * SECOND),
            ..config()
        },
    );
    s.enqueue("q", "a");
    s.advance(5 * SECOND);
    s.enqueue("q", "b");
    s.advance(5 * SECOND);
    assert_eq!(
        Story::bodies(&s.receive("q", 10)),
        ["b"],
        "receive skips the expired one"
    );
    s.advance(5 * SECOND);
    assert_eq!(
        s.apply(Command::Tick {
            now: Timestamp(s.now)
        }),
        Response::Ticked {
            expired: 0,
            dedup_trimmed: 0
        },
        "b is past its TTL but leased: it expires when its lease ends"
    );
    s.advance(25 * SECOND);
    assert_eq!(
        s.apply(Command::Tick {
            now: Timestamp(s.now)
        }),
        Response::Ticked {
            expired: 1,
            dedup_trimmed: 0
        }
    );
    let stats = s.stats("q");
    assert_eq!(
        (
            stats.ready + stats.in_flight + stats.delayed,
            stats.counters.expired
        ),
        (0, 2)
    );
}

#[test]
fn a_leased_group_head_past_its_ttl_expires_only_when_its_lease_ends() {
    // The field case: TTL 5 s, lease 1 min; `one` and `two` in group g.
    let mut s = Story::with_queue(
        "short",
        QueueConfig {
            message_ttl_ms: Some(5 * SECOND),
            visibility_timeout_ms: 60 * SECOND,
            ..config()
        },
    );
    let grouped = |body: &str| NewMessage {
        group: Some("g".into()),
        ..NewMessage::new(body.to_string())
    };
    s.enqueue_messages("short", vec![grouped("one")]);
    s.advance(3 * SECOND);
    s.enqueue_messages("short", vec![grouped("two")]);
    let one = s.receive("short", 10).remove(0);
    s.advance(3 * SECOND);
    s.apply(Command::Tick {
        now: Timestamp(s.now),
    });
    assert!(
        s.receive("short", 10).is_empty(),
        "two stays behind its group's head while one is held"
    );
    assert_eq!(
        s.ack("short", one.receipt),
        Ok(()),
        "the holder can ack one"
    );
    assert_eq!(Story::bodies(&s.receive("short", 10)), ["two"]);
}

#[test]
fn a_delay_that_reaches_the_message_ttl_is_refused_naming_the_limit() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            message_ttl_ms: Some(5 * SECOND),
            ..config()
        },
    );
    let delayed = |ms: u64| NewMessage {
        delay_ms: Some(ms),
        ..NewMessage::new("x")
    };
    let results = s.enqueue_messages("q", vec![delayed(5 * SECOND), delayed(4 * SECOND)]);
    assert!(
        matches!(&results[0], Err(Refusal::InvalidArgument(why)) if why.contains("message_ttl_ms 5000")),
        "{results:?}"
    );
    assert!(results[1].is_ok());
    let refusal = s.refused(Command::CreateQueue {
        name: "r".into(),
        config: QueueConfig {
            message_ttl_ms: Some(5 * SECOND),
            default_delay_ms: 6 * SECOND,
            ..config()
        },
        now: Timestamp(s.now),
    });
    assert!(refusal.to_string().contains("message_ttl_ms"), "{refusal}");
    let d = s.receive("q", 1);
    assert!(d.is_empty());
}

#[test]
fn retention_bounds_the_life_of_every_message() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            retention_ms: 60 * SECOND,
            ..config()
        },
    );
    s.enqueue("q", "a");
    s.advance(60 * SECOND);
    assert!(s.receive("q", 1).is_empty());
    assert_eq!(s.stats("q").counters.expired, 1);
}

#[test]
fn a_full_queue_rejects_new_messages_by_default() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            max_length: Some(2),
            ..config()
        },
    );
    s.enqueue("q", "a");
    s.enqueue("q", "b");
    let results = s.enqueue_messages("q", vec![NewMessage::new("c")]);
    assert!(
        matches!(&results[0], Err(Refusal::QueueFull { limit, .. }) if limit.contains("max_length"))
    );
    assert_eq!(Story::bodies(&s.receive("q", 10)), ["a", "b"]);
}

#[test]
fn max_bytes_with_drop_oldest_makes_room_by_dropping_the_oldest_messages() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            max_bytes: Some(10),
            overflow: Overflow::DropOldest,
            ..config()
        },
    );
    s.enqueue("q", "aaaa");
    s.enqueue("q", "bbbb");
    s.enqueue("q", "cccc");
    assert_eq!(Story::bodies(&s.receive("q", 10)), ["bbbb", "cccc"]);
    assert_eq!(s.stats("q").counters.dropped, 1);
    let too_big = s.enqueue_messages("q", vec![NewMessage::new("x".repeat(11))]);
    assert!(
        matches!(too_big[0], Err(Refusal::QueueFull { .. })),
        "larger than the whole queue"
    );
}

#[test]
fn an_oversize_message_is_refused_and_its_batch_neighbours_are_stored() {
    let mut s = Story::with_queue(
        "q",
        QueueConfig {
            max_message_bytes: 8,
            ..config()
        },
    );
    let results = s.enqueue_messages(
        "q",
        vec![
            NewMessage::new("ok"),
            NewMessage::new("far too long"),
            NewMessage::new("ok2"),
        ],
    );
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(
        matches!(&results[1], Err(Refusal::InvalidArgument(why)) if why.contains("max_message_bytes"))
    );
    assert_eq!(Story::bodies(&s.receive("q", 10)), ["ok", "ok2"]);
}

#[test]
fn attributes_travel_with_the_message_and_are_bounded() {
    let mut s = Story::with_queue("q", config());
    let mut message = NewMessage::new("a");
    message
        .attributes
        .insert("content-type".into(), "json".into());
    s.enqueue_messages("q", vec![message]);
    assert_eq!(s.receive("q", 1)[0].attributes["content-type"], "json");
    let mut many = NewMessage::new("b");
    for i in 0..33 {
        many.attributes.insert(format!("k{i}"), "v".into());
    }
    assert!(
        matches!(&s.enqueue_messages("q", vec![many])[0], Err(Refusal::InvalidArgument(why)) if why.contains("attributes"))
    );
}

#[test]
fn within_a_group_first_deliveries_are_fifo_and_one_at_a_time_while_groups_run_in_parallel() {
    let mut s = Story::with_queue("q", config());
    let grouped = |group: &str, body: &str| NewMessage {
        group: Some(group.into()),
        ..NewMessage::new(body.to_string())
    };
    s.enqueue_messages(
        "q",
        vec![
            grouped("g1", "g1-a"),
            grouped("g1", "g1-b"),
            grouped("g2", "g2-a"),
            NewMessage::new("free"),
            grouped("g2", "g2-b"),
        ],
    );
    let first = s.receive("q", 10);
    assert_eq!(
        Story::bodies(&first),
        ["g1-a", "g2-a", "free"],
        "one per group at a time"
    );
    assert!(s.receive("q", 10).is_empty());
    s.ack("q", first[1].receipt).expect("ack g2-a");
    assert_eq!(Story::bodies(&s.receive("q", 10)), ["g2-b"]);
    s.nack("q", first[0].receipt, None, None)
        .expect("nack g1-a");
    let retry = s.receive("q", 10);
    assert_eq!(
        Story::bodies(&retry),
        ["g1-a"],
        "the head comes back before g1-b"
    );
    s.ack("q", retry[0].receipt).expect("ack");
    assert_eq!(Story::bodies(&s.receive("q", 10)), ["g1-b"]);
}

#[test]
fn stats_report_depth_bytes_and_the_oldest_lease_holder() {
    let mut s = Story::with_queue("q", config());
    s.enqueue("q", "aaaa");
    s.advance(SECOND);
    s.enqueue("q", "bb");
    s.enqueue_messages(
        "q",
        vec![NewMessage {
            delay_ms: Some(60 * SECOND),
            ..NewMessage::new("c")
        }],
    );
    s.receive("q", 1);
    s.advance(2 * SECOND);
    let stats = s.stats("q");
    assert_eq!(
        (stats.ready, stats.in_flight, stats.delayed, stats.bytes),
        (1, 1, 1, 7)
    );
    assert_eq!(stats.oldest_ready_age_ms, 2 * SECOND);
    assert_eq!(stats.oldest_in_flight_age_ms, 2 * SECOND);
    assert_eq!(stats.oldest_in_flight_consumer.as_deref(), Some("worker-1"));
}

#[test]
fn every_kind_of_bad_input_is_refused_by_name_and_changes_nothing() {
    let mut s = Story::with_queue("q", config());
    s.enqueue("q", "a");
    let cases: Vec<(Command, &str)> = vec![
        (Command::enqueue("nope", ["x"], s.now), "does not exist"),
        (Command::enqueue("bad name!", ["x"], s.now), "queue name"),
        (
            Command::enqueue("q", Vec::<Bytes>::new(), s.now),
            "1 to 100 messages",
        ),
        (
            Command::enqueue("q", vec![Bytes::from("x"); 101], s.now),
            "1 to 100 messages",
        ),
        (Command::receive("q", 0, s.now), "max must be"),
        (Command::receive("q", 101, s.now), "max must be"),
        (
            Command::Receive {
                queue: "q".into(),
                max: 1,
                visibility_ms: Some(10),
                max_bytes: None,
                consumer: String::new(),
                now: Timestamp(s.now),
            },
            "visibility_ms",
        ),
        (
            Command::Receive {
                queue: "q".into(),
                max: 1,
                visibility_ms: None,
                max_bytes: Some(0),
                consumer: String::new(),
                now: Timestamp(s.now),
            },
            "max_bytes",
        ),
        (Command::ack("q", []), "receipts"),
        (
            Command::CreateQueue {
                name: "q".into(),
                config: QueueConfig {
                    max_deliveries: 3,
                    ..config()
                },
                now: Timestamp(s.now),
            },
            "already exists",
        ),
        (
            Command::CreateQueue {
                name: "r".into(),
                config: QueueConfig {
                    dead_letter_queue: Some("missing".into()),
                    ..config()
                },
                now: Timestamp(s.now),
            },
            "dead_letter_queue \"missing\" does not exist",
        ),
        (
            Command::CreateQueue {
                name: "r".into(),
                config: QueueConfig {
                    visibility_timeout_ms: 0,
                    ..config()
                },
                now: Timestamp(s.now),
            },
            "visibility_timeout_ms",
        ),
        (
            Command::UpdateQueue {
                name: "nope".into(),
                patch: QueueConfigPatch::default(),
            },
            "does not exist",
        ),
        (
            Command::UpdateQueue {
                name: "q".into(),
                patch: QueueConfigPatch {
                    dead_letter_queue: Some(Some("missing".into())),
                    ..QueueConfigPatch::default()
                },
            },
            "dead_letter_queue \"missing\" does not exist",
        ),
        (
            Command::Release {
                queue: "q".into(),
                receipts: vec![],
            },
            "receipts",
        ),
        (
            Command::Redrive {
                dlq: "q".into(),
                max: 0,
                now: Timestamp(s.now),
            },
            "max must be",
        ),
        (Command::Batch(vec![Command::Batch(vec![])]), "UNREACHABLE"),
    ];
    for (command, expect) in cases {
        if let Command::Batch(_) = command {
            let before = s.queues.digest();
            let response = s.apply(command);
            assert!(
                matches!(&response, Response::Batch(r) if matches!(&r[0], Response::Refused(_)))
            );
            assert_eq!(s.queues.digest(), before);
            continue;
        }
        let label = command.to_string();
        let refusal = s.refused(command);
        assert!(
            refusal.to_string().contains(expect),
            "{label}: {refusal} should say {expect:?}"
        );
    }
}

#[test]
fn a_dead_letter_queue_in_use_cannot_be_deleted() {
    let mut s = Story::with_queue("dlq", config());
    s.create(
        "q",
        QueueConfig {
            dead_letter_queue: Some("dlq".into()),
            ..config()
        },
    );
    let refusal = s.refused(Command::DeleteQueue { name: "dlq".into() });
    assert!(
        matches!(refusal, Refusal::DeadLetterQueueInUse { .. }),
        "{refusal}"
    );
    assert_eq!(
        s.apply(Command::DeleteQueue { name: "q".into() }),
        Response::QueueDeleted { messages: 0 }
    );
    assert_eq!(
        s.apply(Command::DeleteQueue { name: "dlq".into() }),
        Response::QueueDeleted { messages: 0 }
    );
}

/// Found by review: two queues that were each other's dead-letter queue
/// could not be deleted (each was "in use" by the other).
#[test]
fn a_dead_letter_cycle_is_refused_by_name_and_changes_nothing() {
    let mut s = Story::with_queue("a", config());
    s.create(
        "b",
        QueueConfig {
            dead_letter_queue: Some("a".into()),
            ..config()
        },
    );
    s.create(
        "c",
        QueueConfig {
            dead_letter_queue: Some("b".into()),
            ..config()
        },
    );
    let refusal = s.refused(Command::UpdateQueue {
        name: "a".into(),
        patch: QueueConfigPatch {
            dead_letter_queue: Some(Some("c".into())),
            ..Default::default()
        },
    });
    assert!(
        refusal.to_string().contains("a -> c -> b -> a"),
        "names the cycle: {refusal}"
    );
    assert_eq!(s.stats("a").config.and_then(|c| c.dead_letter_queue), None);
    for name in ["c", "b", "a"] {
        assert_eq!(
            s.apply(Command::DeleteQueue { name: name.into() }),
            Response::QueueDeleted { messages: 0 }
        );
    }
}

#[test]
fn creating_a_queue_again_with_the_same_config_is_a_no_op() {
    let mut s = Story::with_queue("q", config());
    s.enqueue("q", "a");
    assert_eq!(
        s.apply(Command::CreateQueue {
            name: "q".into(),
            config: config(),
            now: Timestamp(s.now)
        }),
        Response::QueueCreated { created: false }
    );
    assert_eq!(s.stats("q").ready, 1);
}

#[test]
fn the_clock_never_runs_backwards_when_a_new_leader_stamps_an_older_now() {
    let mut s = Story::with_queue("q", config());
    s.enqueue("q", "a");
    let d = s.receive("q", 1).remove(0);
    let late = s.now + 31 * SECOND;
    s.apply(Command::Tick {
        now: Timestamp(late),
    });
    // A leader whose clock lags proposes with an older now: the state uses its own.
    let again = match s.apply(Command::receive("q", 1, s.now)) {
        Response::Received { deliveries, .. } => deliveries,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        again[0].delivery_count, 2,
        "the lease expired by the state's clock"
    );
    assert_eq!(s.queues.clock(), Timestamp(late));
    assert_ne!(d.receipt, again[0].receipt);
}

#[test]
fn a_batch_applies_its_commands_in_order_with_one_response_each() {
    let mut s = Story::with_queue("q", config());
    let response = s.apply(Command::Batch(vec![
        Command::enqueue("q", ["a"], s.now),
        Command::enqueue("missing", ["b"], s.now),
        Command::receive("q", 5, s.now),
    ]));
    let Response::Batch(responses) = response else {
        panic!("batch")
    };
    assert!(matches!(&responses[0], Response::Enqueued(r) if r[0].is_ok()));
    assert!(matches!(
        &responses[1],
        Response::Refused(Refusal::QueueNotFound(_))
    ));
    assert!(
        matches!(&responses[2], Response::Received { deliveries, .. } if deliveries.len() == 1)
    );
}

#[test]
fn a_receive_leases_no_more_bytes_than_its_budget_but_always_one_message() {
    let mut s = Story::with_queue(
        "big",
        QueueConfig {
            max_message_bytes: 4 * 1024 * 1024,
            ..config()
        },
    );
    let body = "x".repeat(1_000_000);
    for _ in 0..70 {
        s.enqueue("big", &body);
    }
    // The field case: 70 messages of 1,000,000 bytes, one receive of 100.
    let first = s.receive("big", 100);
    let bytes: usize = first.iter().map(|d| d.body.len()).sum();
    assert!(bytes as u64 <= MAX_RECEIVE_BYTES, "{bytes} bytes leased");
    assert_eq!(first.len() as u64, MAX_RECEIVE_BYTES / 1_000_000);
    assert_eq!(
        s.stats("big").in_flight,
        first.len() as u64,
        "only what the answer carries is leased"
    );
    let mut received = first.len();
    while received < 70 {
        let more = s.receive("big", 100);
        assert!(!more.is_empty());
        received += more.len();
    }
    // A budget smaller than one message still leases one.
    s.enqueue("big", &"y".repeat(4 * 1024 * 1024));
    let one = match s.apply(Command::Receive {
        queue: "big".into(),
        max: 100,
        visibility_ms: None,
        max_bytes: Some(1),
        consumer: String::new(),
        now: Timestamp(s.now),
    }) {
        Response::Received { deliveries, .. } => deliveries,
        other => panic!("{other:?}"),
    };
    assert_eq!(one.len(), 1);
}

#[test]
fn a_released_lease_does_not_count_as_a_delivery_and_the_message_keeps_its_place() {
    let mut s = Story::with_queue("dlq", config());
    s.create(
        "q",
        QueueConfig {
            max_deliveries: 1,
            dead_letter_queue: Some("dlq".into()),
            ..config()
        },
    );
    s.enqueue("q", "a");
    s.advance(1);
    s.enqueue("q", "b");
    // A consume stream leased both but could send neither.
    let unsent = s.receive("q", 2);
    s.advance(SECOND);
    for d in &unsent {
        assert_eq!(s.release("q", d.receipt), Ok(()));
    }
    assert_eq!(
        s.release("q", unsent[0].receipt),
        Err(Refusal::ReceiptStale(unsent[0].id.0)),
        "a released lease is over"
    );
    let again = s.receive("q", 2);
    assert_eq!(Story::bodies(&again), ["a", "b"], "in their old places");
    assert!(
        again.iter().all(|d| d.delivery_count == 1),
        "the released leases did not count: {again:?}"
    );
    assert!(
        again
            .iter()
            .zip(&unsent)
            .all(|(a, u)| a.receipt != u.receipt),
        "a new lease has a new receipt"
    );
    assert_eq!(s.stats("q").counters.released, 2);
    assert_eq!(s.stats("q").counters.dead_lettered, 0);
    // The counted delivery does count: the next one dead-letters.
    s.advance(30 * SECOND);
    assert!(s.receive("q", 2).is_empty());
    assert_eq!(s.stats("q").counters.dead_lettered, 2);
}

#[test]
fn an_update_changes_only_the_options_it_names() {
    let mut s = Story::with_queue("dlq", config());
    s.create(
        "jobs",
        QueueConfig {
            max_deliveries: 3,
            dead_letter_queue: Some("dlq".into()),
            max_length: Some(10),
            ..config()
        },
    );
    let response = s.apply(Command::UpdateQueue {
        name: "jobs".into(),
        patch: QueueConfigPatch {
            visibility_timeout_ms: Some(SECOND),
            ..QueueConfigPatch::default()
        },
    });
    let Response::QueueUpdated { config: updated } = response else {
        panic!("{response:?}")
    };
    assert_eq!(updated.visibility_timeout_ms, SECOND);
    assert_eq!(updated.max_deliveries, 3, "kept");
    assert_eq!(updated.dead_letter_queue, Some("dlq".into()), "kept");
    assert_eq!(updated.max_length, Some(10), "kept");
    // An optional setting is removed only when the patch says so.
    let response = s.apply(Command::UpdateQueue {
        name: "jobs".into(),
        patch: QueueConfigPatch {
            max_length: Some(None),
            ..QueueConfigPatch::default()
        },
    });
    assert!(
        matches!(&response, Response::QueueUpdated { config } if config.max_length.is_none() && config.max_deliveries == 3)
    );
    // An update that would break a rule changes nothing.
    let refusal = s.refused(Command::UpdateQueue {
        name: "jobs".into(),
        patch: QueueConfigPatch {
            retry_backoff_min_ms: Some(10 * SECOND),
            retry_backoff_max_ms: Some(SECOND),
            ..QueueConfigPatch::default()
        },
    });
    assert!(refusal.to_string().contains("retry_backoff_min_ms"));
}

#[test]
fn a_purge_keeps_leased_messages_ackable_and_forgets_the_dedup_ids_of_what_it_removed() {
    let mut s = Story::with_queue("p", config());
    let with_dedup = |body: &str, id: &str| NewMessage {
        dedup_id: Some(id.into()),
        ..NewMessage::new(body.to_string())
    };
    s.enqueue_messages("p", vec![with_dedup("held", "order-0")]);
    let held = s.receive("p", 1).remove(0);
    s.enqueue_messages("p", vec![with_dedup("job-1", "order-1")]);
    s.enqueue("p", "job-2");
    assert_eq!(s.purge("p"), 2, "the two messages nobody holds");
    let stats = s.stats("p");
    assert_eq!((stats.ready, stats.in_flight), (0, 1));
    assert_eq!(stats.counters.dropped, 2);
    // The producer may send the purged message again under its dedup id ...
    let fixed = s.enqueue_messages("p", vec![with_dedup("job-1-fixed", "order-1")]);
    assert!(
        matches!(
            fixed[0],
            Ok(Enqueued {
                duplicate: false,
                ..
            })
        ),
        "{fixed:?}"
    );
    // ... while the held message's dedup id still stands.
    let again = s.enqueue_messages("p", vec![with_dedup("held-again", "order-0")]);
    assert!(
        matches!(
            again[0],
            Ok(Enqueued {
                duplicate: true,
                ..
            })
        ),
        "{again:?}"
    );
    assert_eq!(
        s.ack("p", held.receipt),
        Ok(()),
        "the holder acks after the purge"
    );
    assert_eq!(Story::bodies(&s.receive("p", 10)), ["job-1-fixed"]);
}

#[test]
fn leases_end_on_time_when_stamps_continue_from_a_clock_a_skewed_leader_pushed_ahead() {
    // A leader an hour ahead stamped the state. The next leader, whose wall
    // clock is right, stamps the state's clock plus the time it measured
    // since (raft-node's `Clock`), because the state keeps the largest stamp
    // and stamps from its wall clock would not move it for an hour.
    let config = QueueConfig {
        visibility_timeout_ms: 5 * SECOND,
        ..config()
    };
    let mut s = Story::with_queue("t", config);
    let wall = s.now;
    let hour = 3_600 * SECOND;
    s.now = wall + hour;
    s.enqueue("t", "a");
    let pushed = s.queues.clock();
    let receive_at = |s: &mut Story, now: u64| match s.apply(Command::receive("t", 1, now)) {
        Response::Received { deliveries, .. } => deliveries,
        other => panic!("{other:?}"),
    };
    let held = receive_at(&mut s, wall).remove(0);
    assert_eq!(held.lease_deadline, pushed.plus_ms(5 * SECOND));
    assert!(
        receive_at(&mut s, wall + 10 * SECOND).is_empty(),
        "stamped by the wall clock, the state's time stands still"
    );
    let again = receive_at(&mut s, pushed.plus_ms(6 * SECOND).0);
    assert_eq!(
        again.len(),
        1,
        "stamps that continue from the state end the lease"
    );
    assert_ne!(again[0].receipt, held.receipt);
}
