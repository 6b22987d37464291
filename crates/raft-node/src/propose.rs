//! Proposal batching: many client requests, one Raft entry.
//!
//! openraft 0.9 appends and fsyncs each `client_write` on its own, so a node
//! that proposed one entry per request would top out near the disk's fsync
//! rate. The proposer instead queues requests and, whenever a proposal slot is
//! free, folds everything waiting (up to `max_batch_commands` commands and
//! `max_batch_bytes` payload bytes) into one [`Command::Batch`] entry. While
//! `max_inflight_proposals` entries are being committed, new requests wait and
//! ride the next entry together. Each caller gets its own response back.
//!
//! A batch never exceeds `max_batch_bytes` unless one command alone does: a
//! request that would take it over waits for the next batch. Raft entries
//! are thus bounded, and so are the append requests that carry them.
//!
//! The queue of waiting requests is bounded, in requests
//! ([`PROPOSAL_QUEUE_CAPACITY`]) and in bytes (`proposal_queue_bytes`,
//! [`PROPOSAL_QUEUE_BYTES`] by default): a
//! request that finds it full is refused at once with `UNAVAILABLE` ("the
//! leader is overloaded"), which clients retry with backoff, so requests
//! arriving faster than the cluster commits are pushed back instead of
//! queueing for ever (latency stays bounded; memory too).
//!
//! Nothing is proposed while this node's clock is too far from its voters'
//! for it to lead ([`crate::clock`]): every request is refused with
//! `UNAVAILABLE` so clients find the next leader.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use raftq_storage::command::{Command, Response};
use raftq_storage::timing::Timings;
use raftq_storage::{NodeId, TypeConfig};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Requests that may wait for a proposal slot.
pub const PROPOSAL_QUEUE_CAPACITY: usize = 16 * 1024;
/// Payload bytes that may wait for a proposal slot by default (16 full
/// batches of the default `max_batch_bytes`; `proposal_queue_bytes`); one
/// request alone always fits.
pub const PROPOSAL_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Bytes a command counts for against `max_batch_bytes`, roughly its encoded size.
fn weight(command: &Command) -> usize {
    match command {
        Command::Enqueue { messages, .. } => messages
            .iter()
            .map(|m| {
                64 + m.body.len()
                    + m.attributes
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            })
            .sum(),
        _ => 64,
    }
}

struct Proposal {
    command: Command,
    weight: usize,
    reply: oneshot::Sender<Result<Response>>,
    /// When the caller handed it over.
    received: Instant,
}

/// Limits of one batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most commands per entry.
    pub max_commands: usize,
    /// Most payload bytes per entry.
    pub max_bytes: usize,
    /// Most entries being committed at once.
    pub max_inflight: usize,
    /// Most payload bytes waiting for a proposal slot.
    pub queue_bytes: usize,
    /// A leader that has not heard from a majority for longer than this
    /// (ms) refuses new writes and gives up waiting on those in flight, so
    /// clients go and find the new leader (openraft 0.9 keeps a cut-off
    /// leader leading until it hears of a higher term).
    pub stale_leader_ms: u64,
}

/// Hands commands to Raft in batches.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Proposal>,
    /// Payload bytes of the requests waiting in `tx`.
    waiting: Arc<AtomicUsize>,
    /// The most `waiting` may reach.
    queue_bytes: usize,
}

impl Proposer {
    /// Starts the batching task. `timings` holds the stamps the log store
    /// and the state machine make, for the write-latency breakdown.
    pub fn start(
        raft: Raft<TypeConfig>,
        limits: BatchLimits,
        metrics: Metrics,
        clock: Arc<Clock>,
        timings: Arc<Timings>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE_CAPACITY);
        let waiting = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(
            raft,
            Waiting {
                rx,
                bytes: waiting.clone(),
            },
            limits,
            metrics,
            clock,
            timings,
        ));
        Proposer {
            tx,
            waiting,
            queue_bytes: limits.queue_bytes,
        }
    }

    /// Proposes one command and waits until it is committed and applied on
    /// this node (the leader); returns its response.
    pub async fn propose(&self, command: Command) -> Result<Response> {
        let (reply, response) = oneshot::channel();
        let weight = weight(&command);
        let before = self.waiting.fetch_add(weight, Ordering::AcqRel);
        if before > 0 && before + weight > self.queue_bytes {
            self.waiting.fetch_sub(weight, Ordering::AcqRel);
            return Err(overloaded(format!("{before} bytes of writes")));
        }
        let proposal = Proposal {
            weight,
            command,
            reply,
            received: Instant::now(),
        };
        if let Err(err) = self.tx.try_send(proposal) {
            self.waiting.fetch_sub(weight, Ordering::AcqRel);
            return Err(match err {
                mpsc::error::TrySendError::Full(_) => {
                    overloaded(format!("{PROPOSAL_QUEUE_CAPACITY} writes"))
                }
                mpsc::error::TrySendError::Closed(_) => {
                    Error::Unavailable("this node is shutting down".into())
                }
            });
        }
        response
            .await
            .map_err(|_| Error::Unavailable("this node is shutting down".into()))?
    }
}

/// The refusal of a write that finds the proposal queue full.
fn overloaded(what: String) -> Error {
    Error::Unavailable(format!(
        "the leader is overloaded: {what} already wait to be proposed; nothing was written, \
         retry after a backoff"
    ))
}

/// The receiving end of the proposal queue, with its byte count.
struct Waiting {
    rx: mpsc::Receiver<Proposal>,
    bytes: Arc<AtomicUsize>,
}

impl Waiting {
    async fn recv(&mut self) -> Option<Proposal> {
        let proposal = self.rx.recv().await?;
        self.bytes.fetch_sub(proposal.weight, Ordering::AcqRel);
        Some(proposal)
    }

    fn try_recv(&mut self) -> Option<Proposal> {
        let proposal = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(proposal.weight, Ordering::AcqRel);
        Some(proposal)
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    mut rx: Waiting,
    limits: BatchLimits,
    metrics: Metrics,
    clock: Arc<Clock>,
    timings: Arc<Timings>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_inflight));
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Wait for a slot first: what arrives meanwhile joins this batch.
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut bytes = first.weight;
        let mut batch = vec![first];
        while batch.len() < limits.max_commands {
            match rx.try_recv() {
                Some(next) if bytes + next.weight > limits.max_bytes => {
                    carried = Some(next);
                    break;
                }
                Some(next) => {
                    bytes += next.weight;
                    batch.push(next);
                }
                None => break,
            }
        }
        metrics.proposal_batch_commands.observe(batch.len() as f64);
        let refusal = clock
            .check_leading()
            .err()
            .map(|err| err.to_string())
            .or_else(|| cut_off(&raft, limits.stale_leader_ms));
        if let Some(why) = refusal {
            for proposal in batch {
                let _ = proposal.reply.send(Err(Error::Unavailable(format!(
                    "{why}; nothing was written, retry: another node may lead"
                ))));
            }
            continue;
        }
        let raft = raft.clone();
        let stale_leader_ms = limits.stale_leader_ms;
        let timing = Timing {
            metrics: metrics.clone(),
            timings: timings.clone(),
        };
        tokio::spawn(async move {
            commit(&raft, batch, stale_leader_ms, &timing).await;
            drop(slot);
        });
    }
}

/// How often a write in flight checks that its leader still hears from a
/// majority.
const CUT_OFF_CHECK: Duration = Duration::from_millis(100);

/// Why this node, leading a cluster of several voters, looks cut off from
/// its majority: no quorum has acknowledged it for over `stale_ms`. A
/// leader just elected (no acknowledgement yet) is not cut off.
fn cut_off(raft: &Raft<TypeConfig>, stale_ms: u64) -> Option<String> {
    let watch = raft.metrics();
    let metrics = watch.borrow();
    let silent = metrics.millis_since_quorum_ack?;
    if metrics.current_leader != Some(metrics.id) || silent <= stale_ms {
        return None;
    }
    let voters = metrics.membership_config.membership().voter_ids().count();
    (voters > 1).then(|| {
        format!(
            "node {} leads but has not heard from a majority for {silent} ms (cut off?)",
            metrics.id
        )
    })
}

/// Resolves once this leader looks cut off from its majority.
async fn until_cut_off(raft: &Raft<TypeConfig>, stale_ms: u64) -> String {
    loop {
        tokio::time::sleep(CUT_OFF_CHECK).await;
        if let Some(why) = cut_off(raft, stale_ms) {
            return why;
        }
    }
}

/// Where a batch's stage durations go.
struct Timing {
    metrics: Metrics,
    timings: Arc<Timings>,
}

impl Timing {
    fn observe(&self, stage: &str, from: Option<Instant>, to: Option<Instant>) {
        if let (Some(from), Some(to)) = (from, to) {
            self.metrics
                .write_stage_seconds
                .with_label_values(&[stage])
                .observe(to.saturating_duration_since(from).as_secs_f64());
        }
    }

    /// Turns the stamps of the entry at `index` into stage durations.
    fn entry(&self, index: u64, proposed: Instant, answered: Instant) {
        let Some(stamps) = self.timings.take(index) else {
            return;
        };
        self.observe("append", Some(proposed), stamps.appended);
        self.observe("flush", stamps.appended, stamps.flushed);
        self.observe("send", stamps.appended, stamps.sent);
        self.observe("ack_to_commit", stamps.acked, stamps.apply_started);
        self.observe("commit", stamps.appended, stamps.apply_started);
        self.observe("apply", stamps.apply_started, stamps.applied);
        self.observe("respond", stamps.applied, Some(answered));
    }
}

async fn commit(
    raft: &Raft<TypeConfig>,
    batch: Vec<Proposal>,
    stale_leader_ms: u64,
    timing: &Timing,
) {
    let proposed = Instant::now();
    for proposal in &batch {
        timing.observe("queue", Some(proposal.received), Some(proposed));
    }
    let received: Vec<Instant> = batch.iter().map(|p| p.received).collect();
    let (commands, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let single = commands.len() == 1;
    let entry = if single {
        commands.into_iter().next().expect("one command")
    } else {
        Command::Batch(commands)
    };
    let written = tokio::select! {
        written = raft.client_write(entry) => written,
        why = until_cut_off(raft, stale_leader_ms) => {
            // The entry may still commit (if this leader is heard again) or
            // be replaced by the next leader: the outcome is unknown, and a
            // retry is safe (enqueues carry dedup ids, acks are idempotent).
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(format!(
                    "{why}; the outcome of this write is unknown, retry: another node may lead"
                ))));
            }
            return;
        }
    };
    match written {
        Ok(written) => {
            let answered = Instant::now();
            timing.entry(written.log_id.index, proposed, answered);
            for at in &received {
                timing.observe("total", Some(*at), Some(answered));
            }
            let responses = match written.data {
                Response::Batch(responses) if !single => responses,
                other => vec![other],
            };
            assert_eq!(
                responses.len(),
                replies.len(),
                "one response per batched command"
            );
            for (reply, response) in replies.into_iter().zip(responses) {
                // A caller that gave up (timeout) no longer listens.
                let _ = reply.send(Ok(response));
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(write_error(&err)));
            }
        }
    }
}

/// Maps openraft's write error to the node's.
pub fn write_error(
    err: &RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
) -> Error {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => Error::NotLeader {
            leader_id: forward.leader_id,
            leader_addr: forward.leader_node.as_ref().map(|node| node.addr.clone()),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(err)) => {
            Error::InvalidArgument(format!("membership change refused: {err}"))
        }
        RaftError::Fatal(fatal) => {
            Error::Unavailable(format!("raft has stopped on this node: {fatal}"))
        }
    }
}
