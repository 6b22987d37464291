//! State machine apply throughput, in messages per second.
//!
//! Each benchmark builds its openraft entries outside the timed section (that
//! is the client's and the log's work) and times what the state machine does
//! with them: [`StateMachine::apply_entries`] (the queue logic on the state
//! in memory, under the state lock, as openraft calls it; nothing is written
//! to disk), or, in the `apply/queues` group, the pure [`Queues::apply`]
//! alone.
//!
//! Bodies are 256 bytes. Memory stays bounded: an enqueue-only workload
//! starts over with a fresh state once its queue holds
//! [`RESET_AT_MESSAGES`]; the receive+ack workload enqueues (untimed) as many
//! messages as it receives and acks, so its backlog stays at
//! [`RECEIVE_BACKLOG`].
//!
//! Run with `cargo bench -p raftq-storage --bench apply`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use raftq_storage::queue::{Queues, Receipt};
use raftq_storage::types::Entry;
use raftq_storage::{Command, Response, StateMachine};
use tempfile::TempDir;

/// The queue every benchmark uses.
const QUEUE: &str = "bench";
/// Size of every message body.
const BODY_BYTES: usize = 256;
/// Messages per batch in the batched workloads.
const BATCH: usize = 64;
/// An enqueue-only workload starts over from an empty state at this many
/// stored messages (about 25 MiB of bodies).
const RESET_AT_MESSAGES: u64 = 100_000;
/// Messages kept ready in the queue of the receive+ack workload.
const RECEIVE_BACKLOG: usize = 10_000;
/// The leader clock the commands carry (ms); it advances 1 ms per apply.
const START_MS: u64 = 1_700_000_000_000;

/// What applies the entries.
#[derive(Clone, Copy)]
enum Kind {
    /// `StateMachine::apply_entries`.
    StateMachine,
    /// `Queues::apply` alone.
    Memory,
}

enum Backend {
    StateMachine {
        // Field order matters: the state machine closes before its directory
        // is removed.
        state_machine: StateMachine,
        _dir: TempDir,
    },
    Memory(Queues),
}

impl Backend {
    fn open(kind: Kind) -> Self {
        match kind {
            Kind::StateMachine => {
                let dir = tempfile::Builder::new()
                    .prefix("raftq-bench-apply-")
                    .tempdir()
                    .expect("a temporary directory can be created");
                let state_machine =
                    StateMachine::open(dir.path()).expect("a fresh state machine opens");
                Backend::StateMachine {
                    state_machine,
                    _dir: dir,
                }
            }
            Kind::Memory => Backend::Memory(Queues::new()),
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Vec<Response> {
        match self {
            Backend::StateMachine { state_machine, .. } => state_machine
                .apply_entries(entries)
                .expect("an in-memory apply succeeds"),
            Backend::Memory(queues) => entries
                .into_iter()
                .map(|entry| match entry.payload {
                    openraft::EntryPayload::Normal(command) => queues.apply(command),
                    _ => Response::None,
                })
                .collect(),
        }
    }
}

/// A state with one queue, and the log position and clock to continue from.
struct Fixture {
    kind: Kind,
    backend: Backend,
    next_index: u64,
    now_ms: u64,
    stored_messages: u64,
    body: Bytes,
}

impl Fixture {
    fn new(kind: Kind) -> Self {
        let mut fixture = Fixture {
            kind,
            backend: Backend::open(kind),
            next_index: 1,
            now_ms: START_MS,
            stored_messages: 0,
            body: Bytes::from(vec![b'x'; BODY_BYTES]),
        };
        fixture.create_queue();
        fixture
    }

    fn create_queue(&mut self) {
        let entry = self.entry(Command::create(QUEUE, self.now_ms));
        let responses = self.backend.apply(vec![entry]);
        assert!(
            matches!(responses[0], Response::QueueCreated { created: true }),
            "the bench queue is created: {responses:?}"
        );
    }

    /// Starts over from an empty state (untimed).
    fn reset(&mut self) {
        // Close the old state before opening the new one.
        self.backend = Backend::Memory(Queues::new());
        *self = Fixture::new(self.kind);
    }

    fn entry(&mut self, command: Command) -> Entry {
        let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), self.next_index);
        self.next_index += 1;
        Entry {
            log_id,
            payload: openraft::EntryPayload::Normal(command),
        }
    }

    fn enqueue_command(&mut self, messages: usize) -> Command {
        self.now_ms += 1;
        Command::enqueue(
            QUEUE,
            std::iter::repeat_n(self.body.clone(), messages),
            self.now_ms,
        )
    }

    /// Applies `entries` and returns how long that took.
    fn timed_apply(&mut self, entries: Vec<Entry>) -> (Duration, Vec<Response>) {
        let started = Instant::now();
        let responses = self.backend.apply(entries);
        (started.elapsed(), responses)
    }

    /// `entries` entries, each an enqueue of `messages` messages, in one apply.
    fn enqueue(&mut self, entries: usize, messages: usize) -> Duration {
        if self.stored_messages >= RESET_AT_MESSAGES {
            self.reset();
        }
        let batch: Vec<Entry> = (0..entries)
            .map(|_| {
                let command = self.enqueue_command(messages);
                self.entry(command)
            })
            .collect();
        let (elapsed, responses) = self.timed_apply(batch);
        check_enqueued(&responses[0], messages);
        self.stored_messages += (entries * messages) as u64;
        elapsed
    }

    /// One entry holding a `Command::Batch` of `commands` one-message
    /// enqueues: the entry the node builds from concurrent producers.
    fn enqueue_batch_command(&mut self, commands: usize) -> Duration {
        if self.stored_messages >= RESET_AT_MESSAGES {
            self.reset();
        }
        let batch = (0..commands).map(|_| self.enqueue_command(1)).collect();
        let entry = self.entry(Command::Batch(batch));
        let (elapsed, responses) = self.timed_apply(vec![entry]);
        match &responses[0] {
            Response::Batch(responses) => check_enqueued(&responses[0], 1),
            other => panic!("a batch answers with a batch: {other:?}"),
        }
        self.stored_messages += commands as u64;
        elapsed
    }

    /// Fills the queue up to the receive backlog (untimed).
    fn fill_backlog(&mut self) {
        while (self.stored_messages as usize) < RECEIVE_BACKLOG {
            let command = self.enqueue_command(BATCH);
            let entry = self.entry(command);
            self.backend.apply(vec![entry]);
            self.stored_messages += BATCH as u64;
        }
    }

    /// Fills the backlog on first use and refills `messages` (untimed), then
    /// receives and acks `messages`: two applies of one entry each, both
    /// timed.
    fn receive_ack(&mut self, messages: usize) -> Duration {
        self.fill_backlog();
        let refill = self.enqueue_command(messages);
        let refill = self.entry(refill);
        self.backend.apply(vec![refill]);
        self.now_ms += 1;
        let receive = Command::receive(QUEUE, messages as u32, self.now_ms);
        let receive = self.entry(receive);
        let ack_index = self.next_index;
        self.next_index += 1;

        let started = Instant::now();
        let responses = self.backend.apply(vec![receive]);
        let receipts: Vec<Receipt> = match &responses[0] {
            Response::Received { deliveries, .. } => {
                deliveries.iter().map(|delivery| delivery.receipt).collect()
            }
            other => panic!("a receive answers with deliveries: {other:?}"),
        };
        assert_eq!(receipts.len(), messages, "the backlog has enough ready");
        let ack = Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), ack_index),
            payload: openraft::EntryPayload::Normal(Command::ack(QUEUE, receipts)),
        };
        let responses = self.backend.apply(vec![ack]);
        let elapsed = started.elapsed();

        match &responses[0] {
            Response::Acked(results) => {
                assert!(results.iter().all(Result::is_ok), "every ack is accepted")
            }
            other => panic!("an ack answers with results: {other:?}"),
        }
        elapsed
    }
}

fn check_enqueued(response: &Response, messages: usize) {
    match response {
        Response::Enqueued(results) => {
            assert_eq!(results.len(), messages, "one result per message");
            assert!(results.iter().all(Result::is_ok), "every message is stored");
        }
        other => panic!("an enqueue answers with results: {other:?}"),
    }
}

/// Benchmarks `step` on a fixture of its own, `messages` per step; the
/// fixture (and its directory) is gone before the next benchmark starts.
fn bench(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    kind: Kind,
    messages: usize,
    mut step: impl FnMut(&mut Fixture) -> Duration,
) {
    let mut fixture = Fixture::new(kind);
    group.throughput(Throughput::Elements(messages as u64));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| step(&mut fixture)).sum())
    });
}

fn workloads(group: &mut BenchmarkGroup<'_, WallTime>, kind: Kind) {
    bench(group, "enqueue/1entry_x_1msg", kind, 1, |f| f.enqueue(1, 1));
    bench(group, "enqueue/64entries_x_1msg", kind, BATCH, |f| {
        f.enqueue(BATCH, 1)
    });
    bench(group, "enqueue/1entry_x_64msg", kind, BATCH, |f| {
        f.enqueue(1, BATCH)
    });
    bench(
        group,
        "enqueue/1entry_batch_of_64_enqueues",
        kind,
        BATCH,
        |f| f.enqueue_batch_command(BATCH),
    );
    bench(group, "receive_ack/64", kind, BATCH, |f| {
        f.receive_ack(BATCH)
    });
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

fn apply_state_machine(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply/state_machine");
    configure(&mut group);
    workloads(&mut group, Kind::StateMachine);
    group.finish();
}

fn apply_queues(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply/queues");
    configure(&mut group);
    workloads(&mut group, Kind::Memory);
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().without_plots().configure_from_args();
    apply_state_machine(&mut criterion);
    apply_queues(&mut criterion);
    criterion.final_summary();
}
