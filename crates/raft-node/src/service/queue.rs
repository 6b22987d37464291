//! `raftq.v1.QueueService`: the public queue API.
//!
//! Every call is routed by [`super::call`]: served here when this node leads,
//! forwarded to the leader otherwise. Writes go through the proposer
//! ([`crate::propose`]) into one Raft entry with other concurrent requests;
//! reads pass the read-index barrier ([`crate::read`]) first; a receive that
//! may wait goes through [`crate::wait`]; `Consume` streams receives with
//! credit-based flow control (`consume_local`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use raftq_proto::v1 as pb;
use raftq_proto::v1::queue_service_client::QueueServiceClient;
use raftq_proto::v1::queue_service_server::QueueService;
use raftq_storage::command::{Command, Response as Applied};
use raftq_storage::queue::{
    QueueName, Receipt, MAX_ENQUEUE_MESSAGES, MAX_RECEIPTS, MAX_RECEIVE, MAX_RECEIVE_BYTES,
};
use tokio::sync::{mpsc, watch, Notify};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::call;
use super::status::to_status;
use crate::auth::{Caller, Permission};
use crate::convert;
use crate::error::{Error, Result};
use crate::forward::Route;
use crate::limits::{forwarded_waits, WaitSlot, FORWARDED};
use crate::network::MAX_GRPC_MESSAGE_BYTES;
use crate::node::{Node, REQUEST_TIMEOUT};
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
/// Message bytes a consume stream leases ahead of what it has handed to the
/// transport: it leases only what it can soon send, so a consumer that stops
/// reading, or goes away, leaves few leases behind (and those are released
/// uncounted when the stream ends).
pub const CONSUME_LEASE_AHEAD_BYTES: u64 = 1024 * 1024;
/// Messages buffered between a consume stream's receiver and the network.
const CONSUME_BUFFER: usize = 1_024;

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

/// Refuses the call with `PERMISSION_DENIED` unless its caller has
/// `permission` on `queue` ([`crate::auth`]); nothing is proposed first.
fn authorize<T>(
    request: &Request<T>,
    permission: Permission,
    queue: &str,
) -> std::result::Result<(), Status> {
    Caller::of(request)?
        .check(permission, queue)
        .map_err(to_status)
}

/// Refuses a create or update unless its caller has `manage` on `name` and,
/// when `config` names a dead-letter queue, `send` on that queue: dead
/// letters are sends into it (RabbitMQ checks write on the dead-letter
/// exchange at declare the same way).
fn authorize_config<T>(
    request: &Request<T>,
    name: &str,
    config: Option<&pb::QueueConfig>,
) -> std::result::Result<(), Status> {
    authorize(request, Permission::Manage, name)?;
    match config
        .and_then(|c| c.dead_letter_queue.as_deref())
        .filter(|dlq| !dlq.is_empty())
    {
        Some(dlq) => authorize(request, Permission::Send, dlq),
        None => Ok(()),
    }
}

/// A slot for a long call (a waiting receive, a consume stream) this node
/// relays to the leader: all its clients' relayed calls share its one
/// connection to the leader, so they are bounded together
/// ([`crate::limits::forwarded_waits`]). `None` when this node leads or
/// the call was forwarded to it.
fn relay_slot<T>(
    node: &Node,
    request: &Request<T>,
) -> std::result::Result<Option<WaitSlot>, Status> {
    let leads = node.forwarder.leader().map(|(id, _)| id) == Some(node.id);
    if leads || super::is_forwarded(request) {
        return Ok(None);
    }
    node.forwarded_waits.take(Some(FORWARDED)).map_err(|_| {
        Status::resource_exhausted(format!(
            "this node already forwards {} waiting receives and consume streams to the leader: \
             call the leader directly, or receive without waiting",
            forwarded_waits(node.config.max_streams_per_connection)
        ))
    })
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
        authorize_config(
            &request,
            &request.get_ref().name,
            request.get_ref().config.as_ref(),
        )?;
        call(
            &self.node,
            "create_queue",
            true,
            request,
            |node, req| async move {
                let command = Command::CreateQueue {
                    name: QueueName::new(&req.name),
                    config: convert::config_from_pb(req.config)?,
                    now: node.clock.stamp()?,
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
        authorize_config(
            &request,
            &request.get_ref().name,
            request.get_ref().config.as_ref(),
        )?;
        call(
            &self.node,
            "update_queue",
            true,
            request,
            |node, req| async move {
                let command = Command::UpdateQueue {
                    name: QueueName::new(&req.name),
                    patch: convert::patch_from_pb(req.config, &req.reset)?,
                };
                match propose(&node, command).await? {
                    Applied::QueueUpdated { config } => Ok(pb::UpdateQueueResponse {
                        config: Some(convert::config_to_pb(&config)),
                    }),
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
        authorize(&request, Permission::Manage, &request.get_ref().name)?;
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
        let caller = Caller::of(&request)?;
        call(
            &self.node,
            "list_queues",
            true,
            request,
            |node, _req| async move {
                read::barrier(&node).await?;
                let now = node.clock.now();
                // O(queues) under the lock; the pass over the messages after
                // it, off the async workers.
                let view = node.state.read().queues.view();
                let stats = tokio::task::spawn_blocking(move || view.stats(now))
                    .await
                    .map_err(|err| Error::Internal(format!("queue stats: {err}")))?;
                Ok(pb::ListQueuesResponse {
                    queues: stats
                        .into_iter()
                        .filter(|info| caller.sees(&info.name))
                        .map(convert::info_to_pb)
                        .collect(),
                })
            },
            |channel, req| async move { client(channel).list_queues(req).await },
        )
        .await
    }

    async fn get_queue(
        &self,
        request: Request<pb::GetQueueRequest>,
    ) -> std::result::Result<Response<pb::GetQueueResponse>, Status> {
        Caller::of(&request)?
            .check_sees(&request.get_ref().name)
            .map_err(to_status)?;
        call(
            &self.node,
            "get_queue",
            true,
            request,
            |node, req| async move {
                read::barrier(&node).await?;
                let view = node
                    .state
                    .read()
                    .queues
                    .stats_view(&QueueName::new(&req.name))?;
                let stats = view.stats(node.clock.now());
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
        authorize(&request, Permission::Send, &request.get_ref().queue)?;
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
                if bytes > MAX_ENQUEUE_BYTES && req.messages.len() == 1 {
                    return Err(Error::TooLarge(format!(
                        "a message is at most {MAX_ENQUEUE_BYTES} bytes (body and attributes; the \
                         largest max_message_bytes a queue may set), not {bytes}: store large \
                         payloads elsewhere and send a reference"
                    )));
                }
                if bytes > MAX_ENQUEUE_BYTES {
                    return Err(Error::TooLarge(format!(
                        "an enqueue carries at most {MAX_ENQUEUE_BYTES} bytes of messages, not {bytes}: send fewer per request"
                    )));
                }
                let voters: Vec<u64> = node
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                node.disk.check_enqueue(voters)?;
                node.memory.check_enqueue()?;
                let command = Command::Enqueue {
                    queue: QueueName::new(&req.queue),
                    messages: req
                        .messages
                        .into_iter()
                        .map(convert::message_from_pb)
                        .collect(),
                    now: node.clock.stamp()?,
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
        authorize(&request, Permission::Receive, &request.get_ref().queue)?;
        // A receive that may wait holds one of its connection's wait slots
        // until it answers (forwarded ones are counted where they arrived).
        let waits = request.get_ref().wait_ms > 0;
        let _slot = if waits && !super::from_peer(&self.node, &request) {
            self.node.wait_slots.take(request.remote_addr())?
        } else {
            None
        };
        let _relayed = if waits {
            relay_slot(&self.node, &request)?
        } else {
            None
        };
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
                    max_bytes: req.max_bytes,
                    consumer: req.consumer,
                };
                let wait = Duration::from_millis(req.wait_ms);
                let deliveries = wait::receive(&node, &spec, wait, std::future::pending()).await?;
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
        let caller = Caller::of(&request)?;
        // Held for as long as the relayed stream runs.
        let slot = relay_slot(&self.node, &request)?;
        call(
            &self.node,
            "consume",
            true,
            request,
            |node, inbound| async move { consume_local(node, caller, inbound).await },
            |channel, req| async move {
                // Relay the client's stream to the leader and the leader's back.
                let (metadata, extensions, inbound) = req.into_parts();
                let outbound = inbound
                    .take_while(|item| std::future::ready(item.is_ok()))
                    .filter_map(|item| std::future::ready(item.ok()));
                let relayed = Request::from_parts(metadata, extensions, outbound);
                let response = client(channel).consume(relayed).await?;
                let (metadata, stream, extensions) = response.into_parts();
                // The relay's slot is freed when the stream ends.
                let stream: ConsumeStream = Box::pin(stream.inspect(move |_| {
                    let _held = &slot;
                }));
                Ok(Response::from_parts(metadata, stream, extensions))
            },
        )
        .await
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> std::result::Result<Response<pb::AckResponse>, Status> {
        authorize(&request, Permission::Receive, &request.get_ref().queue)?;
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
        authorize(&request, Permission::Receive, &request.get_ref().queue)?;
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
                    now: node.clock.stamp()?,
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
        authorize(&request, Permission::Receive, &request.get_ref().queue)?;
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
                    now: node.clock.stamp()?,
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

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> std::result::Result<Response<pb::ReleaseResponse>, Status> {
        authorize(&request, Permission::Receive, &request.get_ref().queue)?;
        call(
            &self.node,
            "release",
            true,
            request,
            |node, req| async move {
                let receipts = convert::receipts_from_pb(&req.receipts)?;
                let command = Command::Release {
                    queue: QueueName::new(&req.queue),
                    receipts,
                };
                match propose(&node, command).await? {
                    Applied::Released(results) => Ok(pb::ReleaseResponse {
                        results: receipt_results(&req.receipts, results),
                    }),
                    other => Err(unexpected(other)),
                }
            },
            |channel, req| async move { client(channel).release(req).await },
        )
        .await
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> std::result::Result<Response<pb::PurgeResponse>, Status> {
        authorize(&request, Permission::Manage, &request.get_ref().name)?;
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
                        now: node.clock.stamp()?,
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
        authorize(&request, Permission::Manage, &request.get_ref().dlq)?;
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
                        now: node.clock.stamp()?,
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
/// does) at most as many messages as the client has credit for, and no more
/// than [`CONSUME_LEASE_AHEAD_BYTES`] ahead of what the transport has taken,
/// and sends them down the stream. The stream ends with a status when the
/// receive fails (e.g. leadership moved: the client reconnects), and quietly
/// when the client goes away or closes its side of the stream. Either way,
/// the leases of messages the stream never handed to the transport are
/// released: they do not count as deliveries, and the messages are ready
/// again at once.
async fn consume_local(
    node: Arc<Node>,
    caller: Caller,
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
    caller.check(Permission::Receive, &start.queue)?;
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
        max_bytes: None,
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
    let outbox = Arc::new(Outbox::default());
    let stream = Outgoing {
        inner: tokio_stream::wrappers::ReceiverStream::new(rx),
        outbox: outbox.clone(),
        node: node.clone(),
        queue: spec.queue.clone(),
    };
    tokio::spawn(consume_loop(node, spec, granted_rx, tx, outbox));
    Ok(Box::pin(stream))
}

/// The leases a consume stream has made but not yet handed to the transport.
#[derive(Default)]
struct Outbox {
    unsent: Mutex<HashMap<String, (Receipt, u64)>>,
    bytes: AtomicU64,
    taken: Notify,
    /// Set when the client closed its side: the stream hands out nothing
    /// more (what is left is released instead).
    closing: std::sync::atomic::AtomicBool,
}

impl Outbox {
    fn add(&self, receipt: Receipt, size: u64) {
        self.unsent
            .lock()
            .expect("outbox lock is never poisoned")
            .insert(receipt.to_string(), (receipt, size));
        self.bytes.fetch_add(size, Ordering::Relaxed);
    }

    fn take(&self, receipt: &str) {
        let taken = self
            .unsent
            .lock()
            .expect("outbox lock is never poisoned")
            .remove(receipt);
        if let Some((_, size)) = taken {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.taken.notify_one();
        }
    }

    fn drain(&self) -> Vec<Receipt> {
        let drained: Vec<(Receipt, u64)> = self
            .unsent
            .lock()
            .expect("outbox lock is never poisoned")
            .drain()
            .map(|(_, v)| v)
            .collect();
        let bytes: u64 = drained.iter().map(|(_, size)| size).sum();
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        drained.into_iter().map(|(receipt, _)| receipt).collect()
    }
}

/// A consume stream's response body: marks each message handed to the
/// transport as sent, and releases the unsent ones when it is dropped.
struct Outgoing {
    inner: tokio_stream::wrappers::ReceiverStream<std::result::Result<pb::ConsumeResponse, Status>>,
    outbox: Arc<Outbox>,
    node: Arc<Node>,
    queue: QueueName,
}

impl Stream for Outgoing {
    type Item = std::result::Result<pb::ConsumeResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.outbox.closing.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(pb::ConsumeResponse {
            message: Some(delivery),
        }))) = &polled
        {
            self.outbox.take(&delivery.receipt);
        }
        polled
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        release_later(self.node.clone(), self.queue.clone(), self.outbox.drain());
    }
}

/// Releases `receipts` (leases never handed to a consumer) in the
/// background, on the leader, wherever it is now.
fn release_later(node: Arc<Node>, queue: QueueName, receipts: Vec<Receipt>) {
    if receipts.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        for chunk in receipts.chunks(MAX_RECEIPTS) {
            if let Err(err) = release(&node, &queue, chunk).await {
                tracing::debug!(queue = %queue, error = %err, "unsent leases not released; they run out");
                return;
            }
        }
        tracing::debug!(queue = %queue, released = receipts.len(), "released the leases a consume stream did not send");
    });
}

/// Proposes a release here when this node leads, or sends it to the leader.
async fn release(node: &Node, queue: &QueueName, receipts: &[Receipt]) -> Result<()> {
    match node.forwarder.route(false)? {
        Route::Local => {
            propose(
                node,
                Command::Release {
                    queue: queue.clone(),
                    receipts: receipts.to_vec(),
                },
            )
            .await?;
        }
        Route::Leader { channel, .. } => {
            let mut request = Request::new(pb::ReleaseRequest {
                queue: queue.to_string(),
                receipts: receipts.iter().map(ToString::to_string).collect(),
            });
            request.set_timeout(REQUEST_TIMEOUT);
            client(channel).release(request).await.map_err(|status| {
                Error::Unavailable(format!("the leader did not take the release: {status}"))
            })?;
        }
    }
    Ok(())
}

async fn consume_loop(
    node: Arc<Node>,
    mut spec: ReceiveSpec,
    mut granted: watch::Receiver<u64>,
    tx: mpsc::Sender<std::result::Result<pb::ConsumeResponse, Status>>,
    outbox: Arc<Outbox>,
) {
    let mut sent: u64 = 0;
    loop {
        let credit = granted.borrow_and_update().saturating_sub(sent);
        if credit == 0 {
            tokio::select! {
                changed = granted.changed() => if changed.is_err() { break },
                _ = tx.closed() => break,
            }
            continue;
        }
        let ahead = outbox.bytes.load(Ordering::Relaxed);
        if ahead >= CONSUME_LEASE_AHEAD_BYTES {
            tokio::select! {
                _ = outbox.taken.notified() => {}
                _ = tx.closed() => break,
            }
            continue;
        }
        spec.max = credit.min(u64::from(MAX_RECEIVE)) as u32;
        spec.max_bytes = Some((CONSUME_LEASE_AHEAD_BYTES - ahead).min(MAX_RECEIVE_BYTES));
        let closed = tx.clone();
        let received =
            wait::receive(&node, &spec, MAX_WAIT, async move { closed.closed().await }).await;
        match received {
            // A wait ends empty at once when the node stops: end the stream
            // (the client's consumer reconnects to another node) instead of
            // asking again in a loop until the connection closes.
            Ok(deliveries) if deliveries.is_empty() && node.is_stopping() => {
                let _ = tx
                    .send(Err(Status::unavailable(format!(
                        "node {} is stopping: consume from another node",
                        node.id
                    ))))
                    .await;
                // Not `closing`, and no release here: the stream still hands
                // over the messages queued ahead of the status, then the
                // status; its drop releases only what it never handed over.
                return;
            }
            Ok(deliveries) => {
                for delivery in deliveries {
                    sent += 1;
                    let size = raftq_storage::queue::message::message_size(
                        &delivery.body,
                        &delivery.attributes,
                    );
                    outbox.add(delivery.receipt, size);
                    let message = pb::ConsumeResponse {
                        message: Some(convert::delivery_to_pb(delivery)),
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        break;
                    }
                }
                if tx.is_closed() {
                    break;
                }
            }
            Err(err) => {
                let _ = tx.send(Err(to_status(err))).await;
                return;
            }
        }
    }
    // The client is gone or closed its side: nothing more is handed out,
    // and whatever was leased and not sent is released here (the stream's
    // drop releases what is left after that).
    outbox.closing.store(true, Ordering::Relaxed);
    release_later(node.clone(), spec.queue.clone(), outbox.drain());
}
