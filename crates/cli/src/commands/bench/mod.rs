//! `raftq bench`: producers and consumers against a cluster, measured
//! through the client library a service uses.
//!
//! Each producer is a task with its own [`raftq_client::Client`] (its own
//! connections) that *publishes*: it enqueues one message at a time, either
//! through a [`raftq_client::Producer`] (`--batching on`: sent at once while
//! a request slot is free, batched with the others waiting while every slot
//! is busy) or as one `Client::enqueue` request per message
//! (`--batching off`). A publish is *confirmed* when its enqueue returns the
//! message's id, which the cluster does only once the message is in a Raft
//! entry fsynced on a majority of the nodes: a confirmed message survives
//! the loss of any minority. A publish that fails (after the client's own
//! retries) is counted and reported; the run goes on.
//!
//! Each consumer is a [`raftq_client::Consumer`] stream: every message it
//! hands over is counted as received and acked at once (acks of one
//! consumer travel together, coalesced by the client).
//!
//! # Closed loop and open loop
//!
//! - **Closed loop** (the default): each producer keeps `--in-flight`
//!   publishes awaiting their confirm and starts the next one as soon as one
//!   is confirmed. `--in-flight 1` is a synchronous publisher. The load
//!   follows the cluster's speed, so this measures throughput; its latency is
//!   that of a cluster kept exactly busy.
//! - **Open loop** (`--rate`): publishes start on a fixed schedule, `--rate`
//!   per second across all producers, whatever the latency, the way
//!   independent users arrive. Latency is counted from each publish's
//!   *scheduled* time, so a publish that started late (the producer's
//!   `--in-flight` bound was full, or the machine stalled) shows its wait
//!   instead of hiding it (no coordinated omission); sends that started more
//!   than 5 ms behind schedule are counted as `late_sends`. This is how tail
//!   latency at a given load is measured.
//!
//! # What is measured
//!
//! - publish → confirm: from the publish's start (scheduled start in open
//!   loop) to its confirm, per message;
//! - publish → receive: each body starts with a 16-byte header (the send
//!   time, a tag of this run and a sequence number), read back by the
//!   consumer that receives it; so with consumers, `--size` must be at least
//!   16. Only first deliveries count toward this latency;
//! - whether every confirmed message was received: each producer marks the
//!   sequence numbers confirmed, each consumer the ones received. After
//!   publishing stops, the consumers go on until every confirmed message was
//!   received or `--drain-timeout` passes, and the summary says how many were
//!   not.
//!
//! Every run is bounded: by `--duration` and `--messages` while publishing,
//! by [`SETTLE_TIMEOUT`](publish::SETTLE_TIMEOUT) for the publishes still
//! awaiting their confirm, and by `--drain-timeout` for the consumers. The
//! queue is created if missing and purged before and after the run.
//!
//! Deliberately not done: no warm-up messages (each client only finds the
//! leader before the clock starts), no server-side figures (CPU, fsyncs; see
//! the `/metrics` endpoint), and no retry of a failed publish beyond the
//! client's own.

mod args;
mod consume;
mod latency;
mod publish;
mod report;
mod run;
mod tally;

pub use args::BenchArgs;
pub use run::run;
