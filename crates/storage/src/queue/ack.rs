//! Ack, nack, extend and release: what a consumer does with a lease it holds.
//!
//! Each receipt gets its own result. A receipt matches when the message still
//! exists and its current lease is the one the receipt names; the lease may
//! have passed its deadline, as long as no one leased the message again, so a
//! slow consumer that finishes late can still ack. A receipt from an earlier
//! lease is refused as stale; one whose message is gone as unknown — unless
//! that receipt itself was acked within the queue's dedup window, in which
//! case the repeated ack succeeds again (acks are idempotent for retries).

use crate::command::Response;
use crate::error::Refusal;
use crate::queue::config::{MAX_VISIBILITY_TIMEOUT_MS, MIN_VISIBILITY_TIMEOUT_MS};
use crate::queue::message::truncate;
use crate::queue::{
    check_receipts, Queue, QueueName, Queues, Receipt, Timestamp, MAX_REASON_BYTES,
};

/// Deletes each message whose current lease matches its receipt.
///
/// Acks are idempotent within the queue's dedup window: acking a receipt that
/// was already acked succeeds again and changes nothing, so a client that
/// retries an ack whose answer was lost (a leader crash) hears "done", not
/// "unknown receipt".
pub fn ack(queues: &mut Queues, name: QueueName, receipts: Vec<Receipt>) -> Response {
    if let Err(refusal) = check_receipts(&receipts) {
        return Response::Refused(refusal);
    }
    let now = queues.clock();
    let queue = match queues.lookup_mut(&name) {
        Ok(queue) => queue,
        Err(refusal) => return Response::Refused(refusal),
    };
    queue.forget_acks(now);
    let window = queue.config().dedup_window_ms;
    let results = receipts
        .into_iter()
        .map(|receipt| {
            if let Err(refusal) = check_receipt(queue, receipt) {
                return if queue.was_acked(receipt) {
                    Ok(())
                } else {
                    Err(refusal)
                };
            }
            queue.remove(receipt.message);
            queue.meta.counters.acked += 1;
            queue.remember_ack(receipt, now.plus_ms(window));
            Ok(())
        })
        .collect();
    Response::Acked(results)
}

/// Ends each matching lease now. The message is visible again after `delay_ms`
/// or, without one, after the queue's retry backoff.
pub fn nack(
    queues: &mut Queues,
    name: QueueName,
    receipts: Vec<Receipt>,
    delay_ms: Option<u64>,
    reason: Option<String>,
    now: Timestamp,
) -> Response {
    let now = queues.advance_clock(now);
    if let Err(refusal) = check_receipts(&receipts) {
        return Response::Refused(refusal);
    }
    if let Some(reason) = &reason {
        if reason.len() > MAX_REASON_BYTES {
            return Response::Refused(Refusal::InvalidArgument(format!(
                "a nack reason is at most {MAX_REASON_BYTES} bytes, not {}",
                reason.len()
            )));
        }
    }
    let queue = match queues.lookup_mut(&name) {
        Ok(queue) => queue,
        Err(refusal) => return Response::Refused(refusal),
    };
    let config = queue.config().clone();
    if let Some(delay) = delay_ms {
        if let Err(why) = config.check_delay(delay) {
            return Response::Refused(Refusal::InvalidArgument(format!(
                "{why} (queue {:?})",
                truncate(name.as_str(), 128)
            )));
        }
    }
    let results = receipts
        .into_iter()
        .map(|receipt| {
            check_receipt(queue, receipt)?;
            queue.update(receipt.message, |message| {
                let delay = delay_ms.unwrap_or_else(|| {
                    config.retry_backoff_ms(message.id.0, message.counted_deliveries())
                });
                message.lease = None;
                message.visible_at = now.plus_ms(delay);
                if let Some(reason) = &reason {
                    message.last_nack_reason = Some(reason.as_str().into());
                }
            });
            Ok(())
        })
        .collect();
    Response::Nacked(results)
}

/// Moves each matching lease's deadline to `now + visibility_ms`.
pub fn extend(
    queues: &mut Queues,
    name: QueueName,
    receipts: Vec<Receipt>,
    visibility_ms: u64,
    now: Timestamp,
) -> Response {
    let now = queues.advance_clock(now);
    if let Err(refusal) = check_receipts(&receipts) {
        return Response::Refused(refusal);
    }
    if !(MIN_VISIBILITY_TIMEOUT_MS..=MAX_VISIBILITY_TIMEOUT_MS).contains(&visibility_ms) {
        return Response::Refused(Refusal::InvalidArgument(format!(
            "visibility_ms must be {MIN_VISIBILITY_TIMEOUT_MS} to {MAX_VISIBILITY_TIMEOUT_MS}, not {visibility_ms}"
        )));
    }
    let queue = match queues.lookup_mut(&name) {
        Ok(queue) => queue,
        Err(refusal) => return Response::Refused(refusal),
    };
    let config = queue.config().clone();
    let results = receipts
        .into_iter()
        .map(|receipt| {
            check_receipt(queue, receipt)?;
            let deadline = now.plus_ms(visibility_ms);
            queue.update(receipt.message, |message| {
                let lease = message.lease.as_mut().expect("receipt matched a lease");
                lease.deadline = deadline;
                message.visible_at = deadline
                    .plus_ms(config.retry_backoff_ms(message.id.0, message.counted_deliveries()));
            });
            Ok(deadline)
        })
        .collect();
    Response::Extended(results)
}

/// Ends each matching lease now without counting it as a delivery: the
/// message is ready again at once, in the place it had before it was leased
/// (its `visible_at` becomes the time it was leased), and its delivery count
/// goes back down. For leases whose message never reached a consumer: a
/// consume stream that ended before sending it, a client that closed with it
/// still buffered. (RabbitMQ 4 counts such "released" messages apart from
/// "failed" ones in the same way.)
pub fn release(queues: &mut Queues, name: QueueName, receipts: Vec<Receipt>) -> Response {
    if let Err(refusal) = check_receipts(&receipts) {
        return Response::Refused(refusal);
    }
    let queue = match queues.lookup_mut(&name) {
        Ok(queue) => queue,
        Err(refusal) => return Response::Refused(refusal),
    };
    let results = receipts
        .into_iter()
        .map(|receipt| {
            check_receipt(queue, receipt)?;
            queue.update(receipt.message, |message| {
                let lease = message.lease.take().expect("receipt matched a lease");
                message.released += 1;
                message.visible_at = lease.leased_at;
            });
            queue.meta.counters.released += 1;
            Ok(())
        })
        .collect();
    Response::Released(results)
}

/// Whether `receipt` names the current lease of a message in `queue`.
fn check_receipt(queue: &Queue, receipt: Receipt) -> Result<(), Refusal> {
    let message = queue
        .message(receipt.message)
        .ok_or(Refusal::ReceiptUnknown(receipt.message.0))?;
    if message.receipt() != Some(receipt) {
        return Err(Refusal::ReceiptStale(receipt.message.0));
    }
    Ok(())
}
