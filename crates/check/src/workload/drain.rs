//! After the faults: wait for a leader, drain every queue, read the depths and
//! the replicas' digests.
//!
//! The drain is what makes `lost` decidable: once every queue has been
//! received and acked until empty, a payload never delivered is not "still
//! queued", it is gone. The final depths are recorded in the history
//! ([`crate::history::Op::Depth`]) so the checker knows whether the drain
//! finished. Every wait here is bounded by the caller's limit.

use std::collections::BTreeMap;
use std::time::Duration;

use raftq_client::{Client, ReceiveOptions};
use tokio::time::Instant;

use super::calls::{bounded, receive, record_depth, settle};
use super::{Workload, MAX_BATCH};
use crate::checker::ReplicaDigest;
use crate::error::Result;
use crate::history::{History, Process};

/// Pause of the drain between passes that found nothing ready.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// Deadline of one status call while waiting for a leader or digests.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// What a drain did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainOutcome {
    /// The leader found before draining, if any.
    pub leader: Option<u64>,
    /// Messages received while draining.
    pub received: u64,
    /// Each queue's final depth (`None`: could not be read).
    pub depths: BTreeMap<String, Option<u64>>,
}

impl DrainOutcome {
    /// Whether every queue was read as empty.
    pub fn is_complete(&self) -> bool {
        !self.depths.is_empty() && self.depths.values().all(|d| *d == Some(0))
    }
}

impl Workload {
    /// After the faults are healed: waits up to `limit` in all for a leader,
    /// then receives and acks every queue until all are empty, and records
    /// their final depths in `history`.
    pub async fn drain(&self, history: &History, limit: Duration) -> Result<DrainOutcome> {
        let deadline = Instant::now() + limit;
        let process = Process::new("drain");
        let mut outcome = DrainOutcome {
            leader: wait_for_leader(&self.client, limit).await,
            ..DrainOutcome::default()
        };
        while Instant::now() < deadline {
            let mut received = 0;
            for queue in self.queues.all() {
                received += self.drain_queue(history, &process, queue, deadline).await;
            }
            outcome.received += received;
            if received == 0 {
                if self.depths().await.values().all(|d| *d == Some(0)) {
                    break;
                }
                tokio::time::sleep(DRAIN_POLL).await;
            }
        }
        for queue in self.queues.all() {
            let depth = record_depth(
                &self.client,
                history,
                &process,
                queue,
                self.config.op_timeout,
            )
            .await;
            outcome.depths.insert(queue.to_string(), depth);
        }
        Ok(outcome)
    }

    /// Receives and acks one queue until a receive comes back empty.
    async fn drain_queue(
        &self,
        history: &History,
        process: &Process,
        queue: &str,
        deadline: Instant,
    ) -> u64 {
        let mut received = 0;
        while Instant::now() < deadline {
            let options = ReceiveOptions {
                max: MAX_BATCH as u32,
                max_bytes: None,
                visibility: Some(self.config.visibility),
                wait: Duration::ZERO,
                consumer: process.0.clone(),
            };
            let deliveries = receive(
                &self.client,
                history,
                process,
                queue,
                options,
                self.config.op_timeout,
            )
            .await;
            if deliveries.is_empty() {
                break;
            }
            received += deliveries.len() as u64;
            let receipts = deliveries.into_iter().map(|d| d.receipt).collect();
            settle(
                &self.client,
                history,
                process,
                queue,
                receipts,
                false,
                self.config.op_timeout,
            )
            .await;
        }
        received
    }

    /// Each queue's depth (ready, in flight and delayed), unrecorded.
    async fn depths(&self) -> BTreeMap<String, Option<u64>> {
        let mut depths = BTreeMap::new();
        for queue in self.queues.all() {
            let info = bounded(self.config.op_timeout, self.client.get_queue(queue)).await;
            let depth = match info {
                Ok(Ok(info)) => Some(info.ready + info.in_flight + info.delayed),
                _ => None,
            };
            depths.insert(queue.to_string(), depth);
        }
        depths
    }
}

/// Waits up to `limit` for a node to name a leader; returns it.
pub async fn wait_for_leader(client: &Client, limit: Duration) -> Option<u64> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Ok(status)) = bounded(STATUS_TIMEOUT, client.cluster_status()).await {
            if status.leader_id.is_some() {
                return status.leader_id;
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Asks each node for its applied index and state digest until all answer at
/// the same applied index, or `limit` passes; returns the last answers
/// (unreachable nodes are left out).
pub async fn replica_digests(
    client: &Client,
    addrs: &[String],
    limit: Duration,
) -> Vec<ReplicaDigest> {
    let deadline = Instant::now() + limit;
    loop {
        let mut digests = Vec::new();
        for addr in addrs {
            if let Ok(Ok(status)) = bounded(STATUS_TIMEOUT, client.node_status(addr)).await {
                digests.push(ReplicaDigest {
                    node_id: status.node_id,
                    applied_index: status.applied_index,
                    digest: status.state_digest,
                });
            }
        }
        let converged = digests.len() == addrs.len()
            && digests
                .windows(2)
                .all(|w| w[0].applied_index == w[1].applied_index);
        if converged || Instant::now() >= deadline {
            return digests;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
