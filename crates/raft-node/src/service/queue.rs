//! `raftq.v1.QueueService`: the public queue API.
//!
//! Every call is routed by [`super::call`]: served here when this node leads,
//! forwarded to the leader otherwise. Writes go through the proposer
//! ([`crate::propose`]) into one Raft entry with other concurrent requests;
//! reads pass the read-index barrier ([`crate::read`]) first; a receive that
//! may wait goes through [`crate::wait`]; `Consume` streams receives with
//! credit-based flow control.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use raftq_proto::v1 as pb;
use raftq_proto::v1::queue_service_client::QueueServiceClient;
use raftq_proto::v1::queue_service_server::QueueService;
use raftq_storage::command::{Command, Response as Applied};
use raftq_storage::queue::{QueueName, MAX_ENQUEUE_MESSAGES, MAX_RECEIVE};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::call;
use super::status::to_status;
use crate::convert;
use crate::error::{Error, Result};
use crate::network::MAX_GRPC_MESSAGE_BYTES;
use crate::node::{now, Node, REQUEST_TIMEOUT};
use crate::read;
use crate::wait::{self, ReceiveSpec, MAX_WAIT};

/// Most message bytes (bodies and attributes) in one enqueue request; a
/// larger request is refused with `RESOURCE_EXHAUSTED` before it reaches the
/// log.
pub const MAX_ENQUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Largest request the queue service decodes at all; above it the transport
/// refuses the request with `OUT_OF_RANGE` without reading it.
pub const MAX_REQUEST_BYTES: usize = MAX_GRPC_MESSAGE_BYTES;
/// Most credit (prefetch) a consume stream may hold.
pub const MAX_CONSUME_CREDIT: u64 = 1_000;
/// Messages buffered between a consume stream's receiver and the network.
const CONSUME_BUFFER: usize = 128;

/// The queue service of one node.
pub struct QueueApi {
    node: Arc<Node>,
}

impl QueueApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        QueueApi { node }
    }
}

fn client(channel: Channel) -> QueueServiceClient<Channel> {
    QueueServiceClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
}

/// Proposes a command and waits for its applied response; a whole-command
/// refusal becomes an error.
async fn propose(node: &Node, command: Command) -> Result<Applied> {
    let response = tokio::time::timeout(REQUEST_TIMEOUT, node.proposer.propose(command))
        .await
        .map_err(|_| Error::Timeout("the request did not commit in time".into()))??;
    match response {
        Applied::Refused(refusal) => Err(refusal.into()),
        other => Ok(other),
    }
}

fn unexpected(response: Applied) -> Error {
    Error::Internal(format!("unexpected applied response {response:?}"))
}

fn receipt_results(
    receipts: &[String],
    results: Vec<std::result::Result<(), raftq_storage::Refusal>>,
) -> Vec<pb::ReceiptResult> {
    receipts
        .iter()
        .zip(results)
        .map(|(receipt, result)| pb::ReceiptResult {
            receipt: receipt.clone(),
            error: result.err().as_ref().map(convert::refusal_to_pb),
        })
        .collect()
}

type ConsumeStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::ConsumeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl QueueService for QueueApi {
    async fn create_queue(
        &self,
        request: Request<pb::CreateQueueRequest>,
    ) -> std::result::Result<Response<pb::CreateQueueResponse>, Status> {
        call(
            &self.node,
            "create_queue",
            true,
            request,
            |node, req| async move {
                let command = Command::CreateQueue {
                    name: QueueName::new(&req.name),
                    config: convert::config_from_pb(req.config)?,
                    now: now(),
                };
                match propose(&node, command).await? {
                    Applied::QueueCreated { created } => Ok(pb::CreateQueueResponse { created }),
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).create_queue(req).await },
        )
        .await
    }

    async fn update_queue(
        &self,
        request: Request<pb::UpdateQueueRequest>,
    ) -> std::result::Result<Response<pb::UpdateQueueResponse>, Status> {
        call(
            &self.node,
            "update_queue",
            true,
            request,
            |node, req| async move {
                let command = Command::UpdateQueue {
                    name: QueueName::new(&req.name),
                    config: convert::config_from_pb(req.config)?,
                };
                match propose(&node, command).await? {
                    Applied::QueueUpdated => Ok(pb::UpdateQueueResponse {}),
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).update_queue(req).await },
        )
        .await
    }

    async fn delete_queue(
        &self,
        request: Request<pb::DeleteQueueRequest>,
    ) -> std::result::Result<Response<pb::DeleteQueueResponse>, Status> {
        call(
            &self.node,
            "delete_queue",
            true,
            request,
            |node, req| async move {
                match propose(
                    &node,
                    Command::DeleteQueue {
                        name: QueueName::new(&req.name),
                    },
                )
                .await?
                {
                    Applied::QueueDeleted { messages } => Ok(pb::DeleteQueueResponse { messages }),
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).delete_queue(req).await },
        )
        .await
    }

    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> std::result::Result<Response<pb::ListQueuesResponse>, Status> {
        call(
            &self.node,
            "list_queues",
            true,
            request,
            |node, _req| async move {
                read::barrier(&node).await?;
                let state = node.state.read();
                let now = now();
                let queues = state
                    .queues
                    .iter()
                    .map(|q| state.queues.stats(q.name(), now).map(convert::info_to_pb))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(pb::ListQueuesResponse { queues })
            },
            |channel, req| async move { client(channel).list_queues(req).await },
        )
        .await
    }

    async fn get_queue(
        &self,
        request: Request<pb::GetQueueRequest>,
    ) -> std::result::Result<Response<pb::GetQueueResponse>, Status> {
        call(
            &self.node,
            "get_queue",
            true,
            request,
            |node, req| async move {
                read::barrier(&node).await?;
                let stats = node
                    .state
                    .read()
                    .queues
                    .stats(&QueueName::new(&req.name), now())?;
                Ok(pb::GetQueueResponse {
                    queue: Some(convert::info_to_pb(stats)),
                })
            },
            |channel, req| async move { client(channel).get_queue(req).await },
        )
        .await
    }

    async fn enqueue(
        &self,
        request: Request<pb::EnqueueRequest>,
    ) -> std::result::Result<Response<pb::EnqueueResponse>, Status> {
        call(
            &self.node,
            "enqueue",
            true,
            request,
            |node, req| async move {
                if req.messages.is_empty() || req.messages.len() > MAX_ENQUEUE_MESSAGES {
                    return Err(Error::InvalidArgument(format!(
                        "an enqueue carries 1 to {MAX_ENQUEUE_MESSAGES} messages, not {}",
                        req.messages.len()
                    )));
                }
                let bytes: usize = req
                    .messages
                    .iter()
                    .map(|m| {
                        m.body.len()
                            + m.attributes
                                .iter()
                                .map(|(k, v)| k.len() + v.len())
                                .sum::<usize>()
                    })
                    .sum();
                if bytes > MAX_ENQUEUE_BYTES {
                    return Err(Error::TooLarge(format!(
                        "an enqueue carries at most {MAX_ENQUEUE_BYTES} bytes of messages, not {bytes}: send fewer per request"
                    )));
                }
                let command = Command::Enqueue {
                    queue: QueueName::new(&req.queue),
                    messages: req
                        .messages
                        .into_iter()
                        .map(convert::message_from_pb)
                        .collect(),
                    now: now(),
                };
                match propose(&node, command).await? {
                    Applied::Enqueued(results) => Ok(pb::EnqueueResponse {
                        results: results
                            .into_iter()
                            .map(|result| match result {
                                Ok(enqueued) => pb::EnqueueResult {
                                    result: Some(pb::enqueue_result::Result::Id(enqueued.id.0)),
                                    duplicate: enqueued.duplicate,
                                },
                                Err(refusal) => pb::EnqueueResult {
                                    result: Some(pb::enqueue_result::Result::Error(
                                        convert::refusal_to_pb(&refusal),
                                    )),
                                    duplicate: false,
                                },
                            })
                            .collect(),
                    }),
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).enqueue(req).await },
        )
        .await
    }

    async fn receive(
        &self,
        request: Request<pb::ReceiveRequest>,
    ) -> std::result::Result<Response<pb::ReceiveResponse>, Status> {
        call(
            &self.node,
            "receive",
            true,
            request,
            |node, req| async move {
                let max = if req.max == 0 { 1 } else { req.max };
                if max > MAX_RECEIVE {
                    return Err(Error::InvalidArgument(format!(
                        "max must be 1 to {MAX_RECEIVE}, not {max}"
                    )));
                }
                if req.wait_ms > MAX_WAIT.as_millis() as u64 {
                    return Err(Error::InvalidArgument(format!(
                        "wait_ms must be at most {}, not {}",
                        MAX_WAIT.as_millis(),
                        req.wait_ms
                    )));
                }
                let spec = ReceiveSpec {
                    queue: QueueName::new(&req.queue),
                    max,
                    visibility_ms: req.visibility_ms,
                    consumer: req.consumer,
                };
                let deliveries =
                    wait::receive(&node, &spec, Duration::from_millis(req.wait_ms)).await?;
                Ok(pb::ReceiveResponse {
                    messages: deliveries
                        .into_iter()
                        .map(convert::delivery_to_pb)
                        .collect(),
                })
            },
            |channel, req| async move { client(channel).receive(req).await },
        )
        .await
    }

    type ConsumeStream = ConsumeStream;

    async fn consume(
        &self,
        request: Request<Streaming<pb::ConsumeRequest>>,
    ) -> std::result::Result<Response<Self::ConsumeStream>, Status> {
        call(
            &self.node,
            "consume",
            true,
            request,
            |node, inbound| async move { consume_local(node, inbound).await },
            |channel, req| async move {
                // Relay the client's stream to the leader and the leader's back.
                let (metadata, extensions, inbound) = req.into_parts();
                let outbound = inbound
                    .take_while(|item| std::future::ready(item.is_ok()))
                    .filter_map(|item| std::future::ready(item.ok()));
                let relayed = Request::from_parts(metadata, extensions, outbound);
                let response = client(channel).consume(relayed).await?;
                let (metadata, stream, extensions) = response.into_parts();
                let stream: ConsumeStream = Box::pin(stream);
                Ok(Response::from_parts(metadata, stream, extensions))
            },
        )
        .await
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> std::result::Result<Response<pb::AckResponse>, Status> {
        call(
            &self.node,
            "ack",
            true,
            request,
            |node, req| async move {
                let receipts = convert::receipts_from_pb(&req.receipts)?;
                let command = Command::Ack {
                    queue: QueueName::new(&req.queue),
                    receipts,
                };
                match propose(&node, command).await? {
                    Applied::Acked(results) => Ok(pb::AckResponse {
                        results: receipt_results(&req.receipts, results),
                    }),
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).ack(req).await },
        )
        .await
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> std::result::Result<Response<pb::NackResponse>, Status> {
        call(
            &self.node,
            "nack",
            true,
            request,
            |node, req| async move {
                let receipts = convert::receipts_from_pb(&req.receipts)?;
                let command = Command::Nack {
                    queue: QueueName::new(&req.queue),
                    receipts,
                    delay_ms: req.delay_ms,
                    reason: req.reason,
                    now: now(),
                };
                match propose(&node, command).await? {
                    Applied::Nacked(results) => Ok(pb::NackResponse {
                        results: receipt_results(&req.receipts, results),
                    }),
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).nack(req).await },
        )
        .await
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> std::result::Result<Response<pb::ExtendResponse>, Status> {
        call(
            &self.node,
            "extend",
            true,
            request,
            |node, req| async move {
                let receipts = convert::receipts_from_pb(&req.receipts)?;
                let command = Command::Extend {
                    queue: QueueName::new(&req.queue),
                    receipts,
                    visibility_ms: req.visibility_ms,
                    now: now(),
                };
                match propose(&node, command).await? {
                    Applied::Extended(results) => {
                        let deadlines = results
                            .iter()
                            .map(|r| r.as_ref().map_or(0, |t| t.0))
                            .collect();
                        let results = results.into_iter().map(|r| r.map(|_| ())).collect();
                        Ok(pb::ExtendResponse {
                            results: receipt_results(&req.receipts, results),
                            lease_deadline_ms: deadlines,
                        })
                    }
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).extend(req).await },
        )
        .await
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> std::result::Result<Response<pb::PurgeResponse>, Status> {
        call(
            &self.node,
            "purge",
            true,
            request,
            |node, req| async move {
                match propose(
                    &node,
                    Command::Purge {
                        name: QueueName::new(&req.name),
                    },
                )
                .await?
                {
                    Applied::Purged { messages } => Ok(pb::PurgeResponse { messages }),
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).purge(req).await },
        )
        .await
    }

    async fn redrive(
        &self,
        request: Request<pb::RedriveRequest>,
    ) -> std::result::Result<Response<pb::RedriveResponse>, Status> {
        call(
            &self.node,
            "redrive",
            true,
            request,
            |node, req| async move {
                let max = if req.max == 0 { 1_000 } else { req.max };
                match propose(
                    &node,
                    Command::Redrive {
                        dlq: QueueName::new(&req.dlq),
                        max,
                        now: now(),
                    },
                )
                .await?
                {
                    Applied::Redriven { moved, skipped } => {
                        Ok(pb::RedriveResponse { moved, skipped })
                    }
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).redrive(req).await },
        )
        .await
    }
}

/// Serves a consume stream on the leader.
///
/// The first client message names the queue and the initial credit; each
/// later one grants more. A task receives (waiting as a long-poll receive
/// does) at most as many messages as the client has credit for, and sends
/// them down the stream. The stream ends with a status when the receive
/// fails (e.g. leadership moved: the client reconnects), and quietly when
/// the client goes away.
async fn consume_local(
    node: Arc<Node>,
    mut inbound: Streaming<pb::ConsumeRequest>,
) -> Result<ConsumeStream> {
    let start = match inbound.message().await {
        Ok(Some(pb::ConsumeRequest {
            request: Some(pb::consume_request::Request::Start(start)),
        })) => start,
        Ok(_) => {
            return Err(Error::InvalidArgument(
                "the first message of a consume stream must be `start`".into(),
            ))
        }
        Err(status) => {
            return Err(Error::InvalidArgument(format!(
                "consume stream failed: {status}"
            )))
        }
    };
    let credit = u64::from(start.credit);
    if credit == 0 || credit > MAX_CONSUME_CREDIT {
        return Err(Error::InvalidArgument(format!(
            "credit must be 1 to {MAX_CONSUME_CREDIT}, not {credit}"
        )));
    }
    let spec = ReceiveSpec {
        queue: QueueName::new(&start.queue),
        max: 1,
        visibility_ms: start.visibility_ms,
        consumer: start.consumer,
    };
    node.state.read().queues.lookup(&spec.queue)?;
    let (granted_tx, granted_rx) = watch::channel(credit);
    tokio::spawn(async move {
        while let Ok(Some(message)) = inbound.message().await {
            if let Some(pb::consume_request::Request::Credit(more)) = message.request {
                granted_tx
                    .send_modify(|granted| *granted = granted.saturating_add(u64::from(more)));
            }
        }
    });
    let (tx, rx) = mpsc::channel(CONSUME_BUFFER);
    tokio::spawn(consume_loop(node, spec, granted_rx, tx));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

async fn consume_loop(
    node: Arc<Node>,
    mut spec: ReceiveSpec,
    mut granted: watch::Receiver<u64>,
    tx: mpsc::Sender<std::result::Result<pb::ConsumeResponse, Status>>,
) {
    let mut sent: u64 = 0;
    loop {
        let credit = granted.borrow_and_update().saturating_sub(sent);
        if credit == 0 {
            tokio::select! {
                changed = granted.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
            continue;
        }
        spec.max = credit.min(u64::from(MAX_RECEIVE)) as u32;
        let received = tokio::select! {
            received = wait::receive(&node, &spec, MAX_WAIT) => received,
            _ = tx.closed() => return,
        };
        match received {
            Ok(deliveries) => {
                for delivery in deliveries {
                    sent += 1;
                    let message = pb::ConsumeResponse {
                        message: Some(convert::delivery_to_pb(delivery)),
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                let _ = tx.send(Err(to_status(err))).await;
                return;
            }
        }
    }
}
