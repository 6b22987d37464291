//! Long-poll receive: wait for a message without writing to the log.
//!
//! A receive that finds nothing ready and may wait (`wait_ms`) does not
//! propose anything. It reads the leader's applied state, which holds every
//! acknowledged enqueue, to learn when a message could next be ready (now, or
//! the next delay or lease end), and sleeps until then, until the state
//! changes (any apply wakes it), or until its deadline. Only when a message
//! may be ready does it propose a `Receive` entry, and only for messages no
//! other receive being proposed has claimed ([`Claims`]): with 100 receivers
//! waiting on one queue, one new message makes one `Receive` entry, not 100.
//! A receive that comes back empty anyway (the message waits behind its
//! group's head, or was dropped) waits at least [`EMPTY_RECEIVE_PAUSE`]
//! before trying again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use raftq_storage::command::{Command, Response};
use raftq_storage::queue::{Delivery, QueueName};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::node::{Node, REQUEST_TIMEOUT};

/// The longest a receive may wait (SQS's limit).
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Pause after a receive that found nothing despite the state saying it would.
pub const EMPTY_RECEIVE_PAUSE: Duration = Duration::from_millis(50);

/// Ready messages claimed by receives being proposed, per queue. A waiting
/// receiver proposes only when the queue holds more ready messages than are
/// claimed; its claim lasts until its receive is applied (or abandoned).
#[derive(Debug, Default)]
pub struct Claims {
    claimed: Mutex<HashMap<QueueName, u64>>,
    /// Bumped when a claim ends, so waiters recheck even when the receive
    /// that held it failed and applied nothing.
    released: watch::Sender<u64>,
}

/// A receive's claim on ready messages; released when dropped.
struct Claim<'a> {
    claims: &'a Claims,
    queue: QueueName,
    count: u64,
}

impl Claims {
    /// Claims up to `max` of the `ready` messages of `queue` not claimed
    /// yet; `None` when every ready message is claimed.
    fn claim(&self, queue: &QueueName, ready: u64, max: u64) -> Option<Claim<'_>> {
        let mut claimed = self.claimed.lock().expect("claims lock is never poisoned");
        let taken = claimed.get(queue).copied().unwrap_or(0);
        let count = ready.saturating_sub(taken).min(max);
        if count == 0 {
            return None;
        }
        *claimed.entry(queue.clone()).or_default() += count;
        Some(Claim {
            claims: self,
            queue: queue.clone(),
            count,
        })
    }

    /// Ready messages of `queue` claimed now.
    pub fn claimed(&self, queue: &QueueName) -> u64 {
        let claimed = self.claimed.lock().expect("claims lock is never poisoned");
        claimed.get(queue).copied().unwrap_or(0)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claimed = self
            .claims
            .claimed
            .lock()
            .expect("claims lock is never poisoned");
        if let Some(taken) = claimed.get_mut(&self.queue) {
            *taken = taken.saturating_sub(self.count);
            if *taken == 0 {
                claimed.remove(&self.queue);
            }
        }
        drop(claimed);
        self.claims.released.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// What to receive.
#[derive(Clone, Debug)]
pub struct ReceiveSpec {
    /// The queue.
    pub queue: QueueName,
    /// Most messages.
    pub max: u32,
    /// Lease length; the queue's default when absent.
    pub visibility_ms: Option<u64>,
    /// Most message bytes; the state machine's limit when absent.
    pub max_bytes: Option<u64>,
    /// Who receives.
    pub consumer: String,
}

/// Proposes one receive (a Raft write) and returns what it leased. Messages
/// the receive dropped for reaching `max_deliveries` without a dead-letter
/// queue are logged here, on the leader, one line each.
pub async fn receive_now(node: &Node, spec: &ReceiveSpec) -> Result<Vec<Delivery>> {
    let command = Command::Receive {
        queue: spec.queue.clone(),
        max: spec.max,
        visibility_ms: spec.visibility_ms,
        max_bytes: spec.max_bytes,
        consumer: spec.consumer.clone(),
        now: node.clock.stamp()?,
    };
    let response = tokio::time::timeout(REQUEST_TIMEOUT, node.proposer.propose(command))
        .await
        .map_err(|_| Error::Timeout("the receive did not commit in time".into()))??;
    match response {
        Response::Received {
            deliveries,
            dropped,
            ..
        } => {
            node.metrics
                .receives_proposed
                .with_label_values(&[if deliveries.is_empty() {
                    "empty"
                } else {
                    "leased"
                }])
                .inc();
            for (id, deliveries) in dropped {
                tracing::warn!(
                    queue = %spec.queue,
                    message = id.0,
                    deliveries,
                    "message dropped after max_deliveries: the queue has no dead-letter queue"
                );
            }
            Ok(deliveries)
        }
        Response::Refused(refusal) => Err(refusal.into()),
        other => Err(Error::Internal(format!("receive answered {other:?}"))),
    }
}

/// Receives, waiting up to `wait` (capped at [`MAX_WAIT`]) for a message.
/// While it waits (never while a receive is being proposed, so no lease is
/// left behind unseen), `cancel` completing ends it with nothing.
pub async fn receive(
    node: &Node,
    spec: &ReceiveSpec,
    wait: Duration,
    cancel: impl Future<Output = ()>,
) -> Result<Vec<Delivery>> {
    raftq_storage::queue::receive::check(&raftq_storage::queue::receive::Spec {
        queue: spec.queue.clone(),
        max: spec.max,
        visibility_ms: spec.visibility_ms,
        max_bytes: spec.max_bytes,
        consumer: spec.consumer.clone(),
    })?;
    let deadline = Instant::now() + wait.min(MAX_WAIT);
    let mut applied = node.state.subscribe();
    let mut released = node.receive_claims.released.subscribe();
    let mut shutdown = node.shutdown_signal();
    let mut cancel = std::pin::pin!(cancel);
    loop {
        applied.borrow_and_update();
        released.borrow_and_update();
        let now = node.clock.now();
        let (next, ready) = {
            let state = node.state.read();
            let queue = state.queues.lookup(&spec.queue)?;
            (
                queue.next_visible_at(now),
                queue.ready_now(
                    now,
                    u64::from(spec.max) + node.receive_claims.claimed(&spec.queue),
                ),
            )
        };
        let mut pause = None;
        if next.is_some_and(|at| at <= now) {
            // Propose only for ready messages no other receive has claimed;
            // one without a wait proposes anyway (it answers now either way).
            let claim = node
                .receive_claims
                .claim(&spec.queue, ready, u64::from(spec.max));
            if claim.is_some() || Instant::now() >= deadline {
                let deliveries = receive_now(node, spec).await?;
                drop(claim);
                if !deliveries.is_empty() || Instant::now() >= deadline {
                    return Ok(deliveries);
                }
                applied.borrow_and_update();
                pause = Some(Instant::now() + EMPTY_RECEIVE_PAUSE);
            }
        } else if Instant::now() >= deadline {
            return Ok(Vec::new());
        }
        let wake = match next {
            Some(at) if at > now => {
                deadline.min(Instant::now() + Duration::from_millis(at.millis_since(now)))
            }
            _ => deadline,
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = tokio::time::sleep_until(pause.min(deadline)) => {}
                _ = shutdown.wait_for(|stop| *stop) => return Ok(Vec::new()),
                _ = &mut cancel => return Ok(Vec::new()),
            }
        }
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    return Err(Error::Unavailable("raft has stopped on this node".into()));
                }
            }
            _ = released.changed() => {}
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Ok(Vec::new()),
            _ = &mut cancel => return Ok(Vec::new()),
        }
    }
}
