//! Long-poll receive: wait for a message without writing to the log.
//!
//! A receive that finds nothing ready and may wait (`wait_ms`) does not
//! propose anything. It reads the leader's applied state, which holds every
//! acknowledged enqueue, to learn when a message could next be ready (now, or
//! the next delay or lease end), and sleeps until then, until the state
//! changes (any apply wakes it), or until its deadline. Only when a message
//! may be ready does it propose a `Receive` entry. A receive that comes back
//! empty anyway (another consumer was faster, or the message waits behind its
//! group's head) waits at least [`EMPTY_RECEIVE_PAUSE`] before trying again.

use std::future::Future;
use std::time::Duration;

use raftq_storage::command::{Command, Response};
use raftq_storage::queue::{Delivery, QueueName};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::node::{Node, REQUEST_TIMEOUT};

/// The longest a receive may wait (SQS's limit).
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Pause after a receive that found nothing despite the state saying it would.
pub const EMPTY_RECEIVE_PAUSE: Duration = Duration::from_millis(50);

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
    let deadline = Instant::now() + wait.min(MAX_WAIT);
    let mut applied = node.state.subscribe();
    let mut shutdown = node.shutdown_signal();
    let mut cancel = std::pin::pin!(cancel);
    loop {
        applied.borrow_and_update();
        let now = node.clock.now();
        let next = {
            let state = node.state.read();
            state.queues.lookup(&spec.queue)?.next_visible_at(now)
        };
        let mut pause = None;
        if next.is_some_and(|at| at <= now) {
            let deliveries = receive_now(node, spec).await?;
            if !deliveries.is_empty() || Instant::now() >= deadline {
                return Ok(deliveries);
            }
            applied.borrow_and_update();
            pause = Some(Instant::now() + EMPTY_RECEIVE_PAUSE);
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
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Ok(Vec::new()),
            _ = &mut cancel => return Ok(Vec::new()),
        }
    }
}
