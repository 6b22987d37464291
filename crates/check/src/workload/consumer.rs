//! A consumer: receives from any of the four queues and, per delivery, acks
//! it, nacks it, or holds it past its lease before acking it.
//!
//! A hold runs in a task of its own (a process of its own in the history,
//! `consumer-<n>-hold-<k>`), so the consumer keeps receiving meanwhile; a
//! consumer has at most [`MAX_HOLDERS`] holds at a time. A hold ends at the
//! run's deadline at the latest, and then acks nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use raftq_client::ReceiveOptions;
use tokio::time::Instant;

use super::calls::{receive, settle};
use super::Ctx;
use crate::history::Process;
use crate::rng::Rng;

/// Most hold tasks of one consumer at a time; past it, a delivery chosen to
/// be held is acked at once.
pub const MAX_HOLDERS: usize = 16;
/// How much longer than its lease a consumer holds a message it holds.
pub const HOLD_MARGIN: Duration = Duration::from_millis(500);

/// A consumer: receives from any queue; acks, nacks or holds each delivery.
pub(super) async fn consume(ctx: Arc<Ctx>, index: usize, mut rng: Rng) {
    let process = Process::new(format!("consumer-{index}"));
    let queues = ctx.queues.all();
    let mut holders = Vec::new();
    let mut held = 0u64;
    while ctx.may_invoke() {
        let queue = queues[rng.weighted(&[3, 3, 2, 1])];
        let options = ReceiveOptions {
            max: 1 + rng.below(u64::from(ctx.config.receive_batch)) as u32,
            max_bytes: None,
            visibility: Some(ctx.config.visibility),
            wait: ctx.config.receive_wait,
            consumer: process.0.clone(),
        };
        let deliveries = receive(
            &ctx.client,
            &ctx.history,
            &process,
            queue,
            options,
            ctx.config.op_timeout,
        )
        .await;
        let nack_per_mille = if queue == ctx.queues.retry {
            ctx.config.retry_nack_per_mille
        } else {
            ctx.config.nack_per_mille
        };
        let (mut acks, mut nacks, mut holds) = (Vec::new(), Vec::new(), Vec::new());
        for delivery in deliveries {
            let roll = rng.below(1000) as u32;
            if roll < ctx.config.hold_per_mille {
                holds.push(delivery.receipt);
            } else if roll < ctx.config.hold_per_mille + nack_per_mille {
                nacks.push(delivery.receipt);
            } else {
                acks.push(delivery.receipt);
            }
        }
        ctx.settle(&process, queue, acks, false).await;
        ctx.settle(&process, queue, nacks, true).await;
        if !holds.is_empty() {
            holders.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
            if holders.len() < MAX_HOLDERS {
                let holder = Process::new(format!("{process}-hold-{held}"));
                held += 1;
                let queue = queue.to_string();
                holders.push(tokio::spawn(hold(ctx.clone(), holder, queue, holds)));
            } else {
                ctx.settle(&process, queue, holds, false).await;
            }
        }
    }
    for holder in holders {
        // A holder only sleeps and acks; it cannot panic but through a bug
        // that the run's other tasks would show too.
        let _ = holder.await;
    }
}

/// Holds deliveries past their lease (or to the end of the run), then acks
/// them: the queue must refuse each one that was leased again meanwhile.
pub(super) async fn hold(ctx: Arc<Ctx>, process: Process, queue: String, receipts: Vec<String>) {
    let until = (Instant::now() + ctx.config.visibility + HOLD_MARGIN).min(ctx.deadline);
    tokio::time::sleep_until(until).await;
    ctx.settle(&process, &queue, receipts, false).await;
}

impl Ctx {
    /// Acks (or nacks) receipts, if any and if the run is on; receipts acked
    /// leave the backlog.
    async fn settle(&self, process: &Process, queue: &str, receipts: Vec<String>, nack: bool) {
        if receipts.is_empty() || !self.may_invoke() {
            return;
        }
        let (client, history, timeout) = (&self.client, &self.history, self.config.op_timeout);
        let accepted = settle(client, history, process, queue, receipts, nack, timeout).await;
        if !nack {
            self.backlog.fetch_sub(accepted as i64, Ordering::Relaxed);
        }
    }
}
