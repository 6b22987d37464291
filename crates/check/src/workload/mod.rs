//! The drill's workload: producers and consumers on queues of their own,
//! every call recorded in a [`History`].
//!
//! [`Workload::setup`] creates four queues under a unique prefix:
//!
//! - `<prefix>-plain`: ungrouped messages;
//! - `<prefix>-grouped`: messages in a few message groups (FIFO per group,
//!   one leased at a time);
//! - `<prefix>-retry`: a small `max_deliveries`, dead-lettering into
//! - `<prefix>-dead`: its dead-letter queue.
//!
//! All have a short visibility timeout, no retry backoff, no TTL and no length
//! limit, and none but `-retry` drops or moves a message by itself
//! (`max_deliveries` 0), so that whatever leaves a queue left it by an ack: the
//! checker relies on this.
//!
//! [`Workload::run`] starts producers, which enqueue batches of messages whose
//! bodies are unique payload ids (through the client library, so its dedup
//! ids and retries are under test; some messages carry an explicit dedup id),
//! and consumers, which receive from any of the four queues and, per delivery,
//! ack it, nack it, or hold it past its lease and ack it late (which the queue
//! must refuse if the message was leased again meanwhile). The run stops at a
//! duration or an operation count, whichever comes first; every call has a
//! deadline, and a call past it is recorded as `unknown`.
//!
//! [`Workload::drain`] runs after the faults are healed: it waits (bounded)
//! for a leader, then receives and acks every queue, the dead-letter queue
//! last, until all are empty or a deadline passes, and records each queue's
//! final depth for the checker. [`Workload::teardown`] deletes the queues.
//!
//! Every random choice comes from [`WorkloadConfig::seed`] through one
//! [`Rng`] stream per worker; the seed is logged at setup. The same seed makes
//! the same choices, not the same interleaving: the cluster's timing is not
//! under the workload's control.
//!
//! What it does not do: inject faults (the nemesis does, and records them with
//! [`History::fault_start`]), use `extend`, delays or the streaming consumer,
//! or judge anything (the checker does).
//!
//! Files: `config.rs` (what to run), `producer.rs` and `consumer.rs` (the
//! workers), `calls.rs` (each cluster call, bounded and recorded), `drain.rs`
//! (the drain, the leader wait and the replica digests).

mod calls;
mod config;
mod consumer;
mod drain;
mod producer;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raftq_client::{proto, Client};
use tokio::time::Instant;

pub use calls::{phase_of, Elapsed};
pub use config::{QueueNames, WorkloadConfig, MAX_BATCH, MAX_WORKERS};
pub use consumer::{HOLD_MARGIN, MAX_HOLDERS};
pub use drain::{replica_digests, wait_for_leader, DrainOutcome};

use crate::error::{Error, Result};
use crate::history::{History, Progress};
use crate::rng::Rng;
use calls::bounded;
use consumer::consume;
use producer::produce;

/// Records kept free in the history for the drain: the run stops when fewer
/// remain.
const HISTORY_RESERVE: usize = 50_000;
/// Pause of a producer while the backlog is full.
const BACKLOG_POLL: Duration = Duration::from_millis(20);

/// A workload on its own queues of a cluster.
pub struct Workload {
    client: Client,
    config: WorkloadConfig,
    queues: QueueNames,
}

impl Workload {
    /// Validates the config and creates the queues. Fails if one of them
    /// exists already (an earlier run left it).
    pub async fn setup(client: Client, config: WorkloadConfig) -> Result<Self> {
        config.validate()?;
        let queues = QueueNames::new(&config.prefix);
        tracing::info!(seed = config.seed, prefix = %config.prefix, "workload setup");
        let visibility_ms = Some(config.visibility.as_millis() as u64);
        // A short retry backoff (0.1 s doubling to 1 s) so that redeliveries
        // come back within the run and its drain, backoff included.
        let base = proto::QueueConfig {
            visibility_timeout_ms: visibility_ms,
            max_deliveries: Some(0),
            retry_backoff_min_ms: Some(100),
            retry_backoff_max_ms: Some(1_000),
            ..proto::QueueConfig::default()
        };
        let retry = proto::QueueConfig {
            max_deliveries: Some(config.dlq_max_deliveries),
            dead_letter_queue: Some(queues.dead.clone()),
            ..base.clone()
        };
        let workload = Workload {
            client,
            config,
            queues,
        };
        for (name, queue_config) in [
            (&workload.queues.plain, &base),
            (&workload.queues.grouped, &base),
            (&workload.queues.dead, &base),
            (&workload.queues.retry, &retry),
        ] {
            let created = bounded(
                workload.config.op_timeout,
                workload.client.create_queue(name, queue_config.clone()),
            )
            .await
            .map_err(Error::from)
            .and_then(|created| Ok(created?));
            match created {
                Ok(true) => {}
                Ok(false) => return Err(Error::QueueExists(name.clone())),
                Err(err) => {
                    // Best effort: leave nothing behind of a setup that failed.
                    let _ = workload.teardown().await;
                    return Err(err);
                }
            }
        }
        Ok(workload)
    }

    /// The config.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// The queue names.
    pub fn queues(&self) -> &QueueNames {
        &self.queues
    }

    /// Runs producers and consumers until the duration or the operation count
    /// is reached, recording into `history` and calling `progress` every
    /// [`WorkloadConfig::progress_interval`] and once at the end. Returns the
    /// final progress.
    pub async fn run(
        &self,
        history: &History,
        progress: impl Fn(Progress) + Send + Sync + 'static,
    ) -> Result<Progress> {
        let ctx = Arc::new(Ctx {
            client: self.client.clone(),
            config: self.config.clone(),
            queues: self.queues.clone(),
            history: history.clone(),
            deadline: Instant::now() + self.config.duration,
            ops: AtomicU64::new(0),
            backlog: AtomicI64::new(0),
            stop: AtomicBool::new(false),
        });
        let root = Rng::new(self.config.seed);
        let mut workers = Vec::new();
        for index in 0..self.config.producers {
            let rng = root.fork(index as u64);
            workers.push(tokio::spawn(produce(ctx.clone(), index, rng)));
        }
        for index in 0..self.config.consumers {
            let rng = root.fork((MAX_WORKERS + index) as u64);
            workers.push(tokio::spawn(consume(ctx.clone(), index, rng)));
        }
        let progress = Arc::new(progress);
        let ticker = {
            let (history, progress, interval) = (
                history.clone(),
                progress.clone(),
                self.config.progress_interval,
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    progress(history.progress());
                }
            })
        };
        let mut failure = None;
        for worker in workers {
            if let Err(err) = worker.await {
                ctx.stop.store(true, Ordering::Relaxed);
                failure.get_or_insert(Error::Task(err.to_string()));
            }
        }
        ticker.abort();
        let last = history.progress();
        progress(last);
        match failure {
            Some(err) => Err(err),
            None => Ok(last),
        }
    }

    /// Deletes the queues (the dead-letter queue last; a missing one is fine).
    pub async fn teardown(&self) -> Result<()> {
        for queue in [
            &self.queues.retry,
            &self.queues.plain,
            &self.queues.grouped,
            &self.queues.dead,
        ] {
            match bounded(self.config.op_timeout, self.client.delete_queue(queue)).await? {
                Ok(_) => {}
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}

/// What the workers share.
struct Ctx {
    client: Client,
    config: WorkloadConfig,
    queues: QueueNames,
    history: History,
    deadline: Instant,
    ops: AtomicU64,
    /// Messages stored by an enqueue and not yet acked.
    backlog: AtomicI64,
    stop: AtomicBool,
}

impl Ctx {
    /// Takes one operation from the budget, or says the run is over.
    fn may_invoke(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && Instant::now() < self.deadline
            && !self.history.is_nearly_full(HISTORY_RESERVE)
            && self.ops.fetch_add(1, Ordering::Relaxed) < self.config.max_ops
    }

    /// Whether the run is still on (without taking from the budget).
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && Instant::now() < self.deadline
            && self.ops.load(Ordering::Relaxed) < self.config.max_ops
    }

    /// Waits while the backlog is full; false when the run ended meanwhile.
    async fn backlog_room(&self) -> bool {
        while self.backlog.load(Ordering::Relaxed) >= self.config.max_backlog as i64 {
            if !self.running() {
                return false;
            }
            tokio::time::sleep(BACKLOG_POLL).await;
        }
        true
    }
}
