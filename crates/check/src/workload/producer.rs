//! A producer: enqueues batches of fresh payloads to the three source queues,
//! while the backlog leaves room.
//!
//! Each payload id is `<prefix>/p<producer>/<n>`, unique to the run; a
//! quarter of the messages (by default) carry it as an explicit dedup id, the
//! rest get the client's own, so both paths of the client are exercised. One
//! in a hundred (by default) is large: the payload id, a line break, and up
//! to 256 KiB of padding.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use raftq_client::Message;

use super::calls::{bounded, phase_of};
use super::Ctx;
use crate::history::{EnqueueResult, NewPayload, Op, PayloadId, Phase, Process};
use crate::rng::Rng;

/// A producer: enqueues batches of fresh payloads to the three source queues.
pub(super) async fn produce(ctx: Arc<Ctx>, index: usize, mut rng: Rng) {
    let process = Process::new(format!("producer-{index}"));
    let mut next = 0u64;
    while ctx.backlog_room().await && ctx.may_invoke() {
        let (queue, grouped) = match rng.weighted(&[2, 2, 1]) {
            0 => (&ctx.queues.plain, false),
            1 => (&ctx.queues.grouped, true),
            _ => (&ctx.queues.retry, false),
        };
        let count = 1 + rng.below(ctx.config.enqueue_batch as u64);
        let mut payloads = Vec::new();
        let mut messages = Vec::new();
        for _ in 0..count {
            let payload = PayloadId(format!("{}/p{index}/{next}", ctx.config.prefix));
            next += 1;
            let group = grouped.then(|| format!("g{}", rng.below(u64::from(ctx.config.groups))));
            let mut message = if rng.chance(ctx.config.large_per_mille) {
                let padding = 1 + rng.below(ctx.config.large_bytes as u64) as usize;
                let mut body = Vec::with_capacity(payload.0.len() + 1 + padding);
                body.extend_from_slice(payload.0.as_bytes());
                body.push(b'\n');
                body.resize(body.len() + padding, b'.');
                Message::new(body)
            } else {
                Message::new(payload.0.clone())
            };
            if let Some(group) = &group {
                message = message.with_group(group.clone());
            }
            if rng.chance(ctx.config.explicit_dedup_per_mille) {
                message = message.with_dedup_id(format!("dedup-{}", payload.0));
            }
            payloads.push(NewPayload { payload, group });
            messages.push(message);
        }
        enqueue(&ctx, &process, queue, payloads, messages).await;
    }
}

/// One recorded enqueue call.
pub(super) async fn enqueue(
    ctx: &Ctx,
    process: &Process,
    queue: &str,
    payloads: Vec<NewPayload>,
    messages: Vec<Message>,
) {
    let op = |results| Op::Enqueue {
        queue: queue.to_string(),
        messages: payloads.clone(),
        results,
    };
    let invocation = ctx.history.invoke(process, None, op(Vec::new()));
    match bounded(ctx.config.op_timeout, ctx.client.enqueue(queue, messages)).await {
        Ok(Ok(items)) => {
            let results = payloads
                .iter()
                .zip(items)
                .map(|(sent, item)| EnqueueResult {
                    payload: sent.payload.clone(),
                    id: item.as_ref().ok().map(|e| e.id),
                    duplicate: item.as_ref().is_ok_and(|e| e.duplicate),
                    refused: item.err().map(|e| e.to_string()),
                })
                .collect::<Vec<_>>();
            let stored = results
                .iter()
                .filter(|r| r.id.is_some() && !r.duplicate)
                .count();
            ctx.backlog.fetch_add(stored as i64, Ordering::Relaxed);
            ctx.history
                .complete(invocation, Phase::Ok, op(results), None);
        }
        Ok(Err(err)) => ctx.history.complete(
            invocation,
            phase_of(&err),
            op(Vec::new()),
            Some(err.to_string()),
        ),
        Err(timeout) => ctx.history.complete(
            invocation,
            Phase::Unknown,
            op(Vec::new()),
            Some(timeout.to_string()),
        ),
    }
}
