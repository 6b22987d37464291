//! Each call to the cluster, bounded by a deadline and recorded in the
//! history as an invoke and a completion.
//!
//! [`phase_of`] decides what an error means for the history: a definite
//! refusal (`fail`) or an open outcome (`unknown`). A call past its deadline
//! is abandoned and recorded as `unknown`.

use std::future::Future;
use std::time::Duration;

use raftq_client::{proto, Client, Code, ReceiveOptions};

use crate::error::Error;
use crate::history::{
    DeliveryRecord, History, Op, Origin, PayloadId, Phase, Process, ReceiptResult,
};

/// One recorded receive call; returns what it delivered (nothing on error).
pub(super) async fn receive(
    client: &Client,
    history: &History,
    process: &Process,
    queue: &str,
    options: ReceiveOptions,
    op_timeout: Duration,
) -> Vec<proto::Delivery> {
    let op = |deliveries| Op::Receive {
        queue: queue.to_string(),
        max: options.max,
        visibility_ms: options.visibility.map(|v| v.as_millis() as u64),
        deliveries,
    };
    let invocation = history.invoke(process, None, op(Vec::new()));
    let limit = op_timeout + options.wait;
    match bounded(limit, client.receive(queue, options.clone())).await {
        Ok(Ok(deliveries)) => {
            let records = deliveries.iter().map(delivery_record).collect();
            history.complete(invocation, Phase::Ok, op(records), None);
            deliveries
        }
        Ok(Err(err)) => {
            history.complete(
                invocation,
                phase_of(&err),
                op(Vec::new()),
                Some(err.to_string()),
            );
            Vec::new()
        }
        Err(timeout) => {
            history.complete(
                invocation,
                Phase::Unknown,
                op(Vec::new()),
                Some(timeout.to_string()),
            );
            Vec::new()
        }
    }
}

/// The payload id a body carries: the whole body, or what comes before the
/// first line break of a large message (the rest is padding).
pub(super) fn payload_of(body: &[u8]) -> PayloadId {
    let id = body.split(|b| *b == b'\n').next().unwrap_or(body);
    PayloadId(String::from_utf8_lossy(id).into_owned())
}

pub(super) fn delivery_record(delivery: &proto::Delivery) -> DeliveryRecord {
    DeliveryRecord {
        id: delivery.id,
        payload: payload_of(&delivery.body),
        delivery_count: delivery.delivery_count,
        receipt: delivery.receipt.clone(),
        group: delivery.group.clone(),
        dead_letter: delivery.dead_letter.as_ref().map(|d| Origin {
            queue: d.source_queue.clone(),
            id: d.source_id,
        }),
    }
}

/// One recorded ack (or nack) call; returns how many receipts it accepted.
pub(super) async fn settle(
    client: &Client,
    history: &History,
    process: &Process,
    queue: &str,
    receipts: Vec<String>,
    nack: bool,
    op_timeout: Duration,
) -> u64 {
    let op = |results| {
        let (queue, receipts) = (queue.to_string(), receipts.clone());
        if nack {
            Op::Nack {
                queue,
                receipts,
                results,
            }
        } else {
            Op::Ack {
                queue,
                receipts,
                results,
            }
        }
    };
    let invocation = history.invoke(process, None, op(Vec::new()));
    let call = async {
        if nack {
            client.nack(queue, receipts.clone(), None, None).await
        } else {
            client.ack(queue, receipts.clone()).await
        }
    };
    match bounded(op_timeout, call).await {
        Ok(Ok(items)) => {
            let results = receipts
                .iter()
                .zip(items)
                .map(|(receipt, item)| ReceiptResult {
                    receipt: receipt.clone(),
                    refused: item.err().map(|e| e.to_string()),
                })
                .collect::<Vec<_>>();
            let accepted = results.iter().filter(|r| r.refused.is_none()).count();
            history.complete(invocation, Phase::Ok, op(results), None);
            accepted as u64
        }
        Ok(Err(err)) => {
            history.complete(
                invocation,
                phase_of(&err),
                op(Vec::new()),
                Some(err.to_string()),
            );
            0
        }
        Err(timeout) => {
            history.complete(
                invocation,
                Phase::Unknown,
                op(Vec::new()),
                Some(timeout.to_string()),
            );
            0
        }
    }
}

/// Reads and records a queue's depth after the drain.
pub(super) async fn record_depth(
    client: &Client,
    history: &History,
    process: &Process,
    queue: &str,
    op_timeout: Duration,
) -> Option<u64> {
    let op = |messages| Op::Depth {
        queue: queue.to_string(),
        messages,
    };
    let invocation = history.invoke(process, None, op(None));
    match bounded(op_timeout, client.get_queue(queue)).await {
        Ok(Ok(info)) => {
            let depth = info.ready + info.in_flight + info.delayed;
            history.complete(invocation, Phase::Ok, op(Some(depth)), None);
            Some(depth)
        }
        Ok(Err(err)) => {
            history.complete(invocation, phase_of(&err), op(None), Some(err.to_string()));
            None
        }
        Err(timeout) => {
            history.complete(
                invocation,
                Phase::Unknown,
                op(None),
                Some(timeout.to_string()),
            );
            None
        }
    }
}

/// Whether an error proves the call did not happen (`fail`) or leaves it
/// open (`unknown`). Only codes the server sends for a request it refused
/// before proposing it, or a deterministic refusal, are definite; everything
/// else (timeouts, transport errors, internal errors) may have been applied.
pub fn phase_of(error: &raftq_client::Error) -> Phase {
    match error.code {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented => Phase::Fail,
        _ => Phase::Unknown,
    }
}

/// A call with a deadline.
pub(super) async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = T>,
) -> std::result::Result<T, Elapsed> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| Elapsed(limit))
}

/// A call that did not return within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
pub struct Elapsed(Duration);

impl From<Elapsed> for Error {
    fn from(elapsed: Elapsed) -> Self {
        Error::Client(raftq_client::Error::new(
            Code::DeadlineExceeded,
            elapsed.to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_and_unknown_errors() {
        let err = |code| raftq_client::Error::new(code, "x");
        assert_eq!(phase_of(&err(Code::NotFound)), Phase::Fail);
        assert_eq!(phase_of(&err(Code::Unavailable)), Phase::Unknown);
        assert_eq!(phase_of(&err(Code::DeadlineExceeded)), Phase::Unknown);
        assert_eq!(phase_of(&err(Code::Internal)), Phase::Unknown);
    }
}
