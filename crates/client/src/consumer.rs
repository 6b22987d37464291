//! [`Consumer`]: an async `Stream` of messages from one queue.
//!
//! It holds a `Consume` stream to the leader with credit-based flow control:
//! the server sends at most `prefetch` messages the application has not yet
//! acked or nacked; each ack or nack grants one more as soon as it is issued
//! (not when its result comes back, so acks pipeline). While the application
//! holds a message, the consumer extends its lease before it runs out
//! (`auto_extend`), so slow work is not redelivered under its feet. Acks are
//! coalesced: those issued together travel in one request. When the stream
//! breaks (leader change, node loss), the consumer reconnects with backoff;
//! messages already handed out keep their receipts and can still be acked.
//!
//! Only messages handed to the application count as deliveries: when the
//! consumer is dropped, acks and nacks already issued still complete (their
//! results are still returned; one issued after the drop fails with
//! `CANCELLED`), and the messages it received but never handed out (its
//! prefetch buffer) are released, so they are ready again at once and do not
//! move toward the dead-letter queue. The server does the same for messages
//! it leased but could not send down the stream.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use raftq_proto::v1 as pb;
use raftq_proto::v1::queue_service_client::QueueServiceClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

use crate::client::{Client, MAX_MESSAGE_BYTES};
use crate::error::{Error, Result};

/// Most acks coalesced into one request.
const MAX_ACK_BATCH: usize = 100;
/// How long releasing unread messages may take when a consumer is dropped.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dropped consumer reads what the server still sends before it
/// gives up (what is left then runs out its lease).
const WIND_DOWN: Duration = Duration::from_secs(5);

/// How a consumer receives.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Messages the server may send ahead of the application's acks (1–1000).
    pub prefetch: u32,
    /// Lease length; the queue's visibility timeout when unset.
    pub visibility: Option<Duration>,
    /// Name shown in queue stats.
    pub consumer: String,
    /// Extend the lease of messages the application still holds.
    pub auto_extend: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            prefetch: 32,
            visibility: None,
            consumer: String::new(),
            auto_extend: true,
        }
    }
}

enum Settle {
    Ack,
    Nack {
        delay: Option<Duration>,
        reason: Option<String>,
    },
}

struct SettleOp {
    receipt: String,
    settle: Settle,
    reply: oneshot::Sender<Result<()>>,
}

/// A held message: its lease deadline and lease length, in ms.
#[derive(Clone, Copy)]
struct Held {
    deadline_ms: u64,
    lease_ms: u64,
}

struct Shared {
    client: Client,
    queue: String,
    settle_tx: mpsc::Sender<SettleOp>,
    held: Mutex<HashMap<String, Held>>,
    credit_tx: Mutex<Option<mpsc::Sender<u32>>>,
    /// Turns true when the consumer is dropped: the stream task closes its
    /// side, reads what the server still sends, and releases it.
    stop: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// The message is done with (acked, nacked or dropped): forget it and let
    /// the server send one more.
    fn release(&self, receipt: &str) {
        let removed = self
            .held
            .lock()
            .expect("held lock is never poisoned")
            .remove(receipt);
        if removed.is_some() {
            if let Some(credit) = self
                .credit_tx
                .lock()
                .expect("credit lock is never poisoned")
                .as_ref()
            {
                let _ = credit.try_send(1);
            }
        }
    }
}

/// A message handed to the application. Ack or nack it when done; dropping it
/// without either lets its lease run out and it is delivered again.
pub struct Received {
    /// The delivery as the server sent it.
    pub delivery: pb::Delivery,
    shared: Arc<Shared>,
    settled: bool,
}

impl Received {
    /// The payload.
    pub fn body(&self) -> &Bytes {
        &self.delivery.body
    }

    /// The message id.
    pub fn id(&self) -> u64 {
        self.delivery.id
    }

    /// Which delivery this is (1 for the first).
    pub fn delivery_count(&self) -> u32 {
        self.delivery.delivery_count
    }

    /// Acks the message: it is deleted and never delivered again.
    ///
    /// ```no_run
    /// # async fn demo(message: raftq_client::Received) -> raftq_client::Result<()> {
    /// message.ack().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ack(mut self) -> Result<()> {
        self.settle(Settle::Ack).await
    }

    /// Nacks the message: redelivered after `delay` (or the queue's backoff).
    ///
    /// ```no_run
    /// # async fn demo(message: raftq_client::Received) -> raftq_client::Result<()> {
    /// message.nack(None, Some("downstream unavailable".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn nack(mut self, delay: Option<Duration>, reason: Option<String>) -> Result<()> {
        self.settle(Settle::Nack { delay, reason }).await
    }

    async fn settle(&mut self, settle: Settle) -> Result<()> {
        self.settled = true;
        let receipt = self.delivery.receipt.clone();
        let (reply, result) = oneshot::channel();
        let sent = self
            .shared
            .settle_tx
            .send(SettleOp {
                receipt: receipt.clone(),
                settle,
                reply,
            })
            .await;
        // Handed to the settle task: the server may send one more now,
        // without waiting for this ack's round trip (as an AMQP prefetch
        // counts an ack once it is sent).
        self.shared.release(&receipt);
        let result = match sent {
            Ok(()) => result.await.unwrap_or_else(|_| {
                Err(Error::new(
                    tonic::Code::Cancelled,
                    "the consumer has stopped",
                ))
            }),
            Err(_) => Err(Error::new(
                tonic::Code::Cancelled,
                "the consumer has stopped",
            )),
        };
        result
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.release(&self.delivery.receipt);
        }
    }
}

/// A stream of messages from one queue.
pub struct Consumer {
    rx: mpsc::Receiver<Result<Received>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Consumer {
    /// Starts consuming `queue`. Needs a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> raftq_client::Result<()> {
    /// use futures::StreamExt;
    /// use raftq_client::{Client, Consumer, ConsumerConfig};
    /// let client = Client::connect(["127.0.0.1:7401"])?;
    /// let mut consumer = Consumer::new(client, "jobs", ConsumerConfig::default());
    /// while let Some(message) = consumer.next().await {
    ///     let message = message?;
    ///     println!("{:?}", message.body());
    ///     message.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client, queue: &str, config: ConsumerConfig) -> Self {
        let config = ConsumerConfig {
            prefetch: config.prefetch.clamp(1, 1000),
            ..config
        };
        let (settle_tx, settle_rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            client,
            queue: queue.into(),
            settle_tx,
            held: Mutex::default(),
            credit_tx: Mutex::default(),
            stop: tokio::sync::watch::Sender::new(false),
        });
        let (out_tx, rx) = mpsc::channel(config.prefetch as usize);
        // The stream task is not aborted on drop: it winds down itself.
        tokio::spawn(stream_task(shared.clone(), config.clone(), out_tx));
        // The settle task is not aborted on drop either: it finishes the
        // acks and nacks already issued.
        tokio::spawn(settle_task(shared.clone(), settle_rx));
        let mut tasks = Vec::new();
        if config.auto_extend {
            tasks.push(tokio::spawn(extend_task(shared.clone())));
        }
        Consumer { rx, tasks, shared }
    }
}

impl Drop for Consumer {
    /// Stops the consumer and releases the messages it received but never
    /// handed to the application: those in its buffer at once, and those
    /// still on their way once the server has ended the stream.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.stop.send_replace(true);
        self.rx.close();
        let mut unread = Vec::new();
        while let Ok(item) = self.rx.try_recv() {
            if let Ok(mut received) = item {
                received.settled = true;
                unread.push(received.delivery.receipt.clone());
            }
        }
        release_unread(&self.shared, unread);
    }
}

/// After the consumer was dropped: closes this side of the stream (so the
/// server stops leasing and ends it), reads what the server still sends, and
/// releases it.
async fn wind_down(shared: &Arc<Shared>, mut stream: tonic::Streaming<pb::ConsumeResponse>) {
    drop(
        shared
            .credit_tx
            .lock()
            .expect("credit lock is never poisoned")
            .take(),
    );
    let mut unread = Vec::new();
    let _ = tokio::time::timeout(WIND_DOWN, async {
        while let Ok(Some(response)) = stream.message().await {
            if let Some(delivery) = response.message {
                unread.push(delivery.receipt);
            }
        }
    })
    .await;
    release_unread(shared, unread);
}

/// Releases, in the background, leases of messages the application never saw.
fn release_unread(shared: &Arc<Shared>, receipts: Vec<String>) {
    if receipts.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let client = shared.client.clone();
    let queue = shared.queue.clone();
    runtime.spawn(async move {
        for chunk in receipts.chunks(MAX_ACK_BATCH) {
            let released =
                tokio::time::timeout(RELEASE_TIMEOUT, client.release(&queue, chunk.to_vec())).await;
            if !matches!(released, Ok(Ok(_))) {
                tracing::debug!(%queue, "unread messages not released; their leases run out");
                return;
            }
        }
    });
}

impl Stream for Consumer {
    type Item = Result<Received>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn stream_task(
    shared: Arc<Shared>,
    config: ConsumerConfig,
    out: mpsc::Sender<Result<Received>>,
) {
    let retry = shared.client.retry_policy();
    let mut attempt = 0;
    loop {
        if out.is_closed() {
            return;
        }
        let (addr, channel) = match shared.client.target().await {
            Ok(target) => target,
            Err(err) if err.is_retryable() => {
                tracing::debug!(error = %err, "no node to consume from yet; retrying");
                tokio::time::sleep(retry.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            Err(err) => {
                let _ = out.send(Err(err)).await;
                return;
            }
        };
        let (credit_tx, credit_rx) = mpsc::channel::<u32>(4096);
        *shared
            .credit_tx
            .lock()
            .expect("credit lock is never poisoned") = Some(credit_tx);
        let held = shared
            .held
            .lock()
            .expect("held lock is never poisoned")
            .len() as u32;
        let start = pb::ConsumeRequest {
            request: Some(pb::consume_request::Request::Start(pb::ConsumeStart {
                queue: shared.queue.clone(),
                credit: config.prefetch.saturating_sub(held).max(1),
                visibility_ms: config.visibility.map(|d| d.as_millis() as u64),
                consumer: config.consumer.clone(),
            })),
        };
        let grants =
            tokio_stream::wrappers::ReceiverStream::new(credit_rx).map(|n| pb::ConsumeRequest {
                request: Some(pb::consume_request::Request::Credit(n)),
            });
        let outbound = tokio_stream::once(start).chain(grants);
        let mut client = QueueServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut stop = shared.stop.subscribe();
        let failure = match client.consume(outbound).await {
            Ok(response) => {
                shared.client.observe(response.metadata());
                let mut stream = response.into_inner();
                loop {
                    let next = tokio::select! {
                        next = stream.message() => next,
                        () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                            wind_down(&shared, stream).await;
                            return;
                        }
                    };
                    match next {
                        Ok(Some(pb::ConsumeResponse {
                            message: Some(delivery),
                        })) => {
                            attempt = 0;
                            let lease_ms = delivery
                                .lease_deadline_ms
                                .saturating_sub(now_ms())
                                .max(1_000);
                            shared
                                .held
                                .lock()
                                .expect("held lock is never poisoned")
                                .insert(
                                    delivery.receipt.clone(),
                                    Held {
                                        deadline_ms: delivery.lease_deadline_ms,
                                        lease_ms,
                                    },
                                );
                            let received = Received {
                                delivery,
                                shared: shared.clone(),
                                settled: false,
                            };
                            if let Err(unsent) = out.send(Ok(received)).await {
                                if let Ok(mut received) = unsent.0 {
                                    received.settled = true;
                                    let receipt = received.delivery.receipt.clone();
                                    release_unread(&shared, vec![receipt]);
                                }
                                wind_down(&shared, stream).await;
                                return;
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            break Error::new(tonic::Code::Unavailable, "the consume stream ended")
                        }
                        Err(status) => {
                            shared.client.observe(status.metadata());
                            break Error::from(status);
                        }
                    }
                }
            }
            Err(status) => {
                shared.client.note_status(&addr, &status);
                Error::from(status)
            }
        };
        if !failure.is_retryable() {
            let _ = out.send(Err(failure)).await;
            return;
        }
        tracing::debug!(%addr, error = %failure, "consume stream broke; reconnecting");
        tokio::time::sleep(retry.backoff(attempt)).await;
        attempt += 1;
    }
}

/// Sends acks (coalesced) and nacks. When the consumer is dropped it takes
/// no new ones but finishes those already issued, then ends.
async fn settle_task(shared: Arc<Shared>, mut rx: mpsc::Receiver<SettleOp>) {
    let mut stop = shared.stop.subscribe();
    loop {
        let received = tokio::select! {
            biased;
            op = rx.recv() => Some(op),
            _ = stop.wait_for(|stop| *stop) => None,
        };
        let first = match received {
            Some(Some(op)) => op,
            Some(None) => return,
            None => {
                // Dropped: refuse new settles; what is queued is still received.
                rx.close();
                match rx.recv().await {
                    Some(op) => op,
                    None => return,
                }
            }
        };
        let mut acks = Vec::new();
        let mut others = Vec::new();
        for op in std::iter::once(first) {
            match op.settle {
                Settle::Ack => acks.push(op),
                _ => others.push(op),
            }
        }
        while acks.len() < MAX_ACK_BATCH {
            match rx.try_recv() {
                Ok(op) if matches!(op.settle, Settle::Ack) => acks.push(op),
                Ok(op) => others.push(op),
                Err(_) => break,
            }
        }
        if !acks.is_empty() {
            let receipts = acks.iter().map(|op| op.receipt.clone()).collect();
            match shared.client.ack(&shared.queue, receipts).await {
                Ok(results) => {
                    for (op, result) in acks.into_iter().zip(results) {
                        let _ = op.reply.send(result);
                    }
                }
                Err(err) => {
                    for op in acks {
                        let _ = op.reply.send(Err(err.clone()));
                    }
                }
            }
        }
        for op in others {
            let Settle::Nack { delay, reason } = op.settle else {
                continue;
            };
            let result = shared
                .client
                .nack(&shared.queue, vec![op.receipt.clone()], delay, reason)
                .await
                .and_then(|mut results| results.pop().unwrap_or(Ok(())));
            let _ = op.reply.send(result);
        }
    }
}

async fn extend_task(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    loop {
        interval.tick().await;
        let now = now_ms();
        let due: Vec<(String, Held)> = shared
            .held
            .lock()
            .expect("held lock is never poisoned")
            .iter()
            .filter(|(_, held)| held.deadline_ms.saturating_sub(now) < held.lease_ms / 2)
            .map(|(receipt, held)| (receipt.clone(), *held))
            .collect();
        for chunk in due.chunks(MAX_ACK_BATCH) {
            let lease_ms = chunk
                .iter()
                .map(|(_, h)| h.lease_ms)
                .max()
                .unwrap_or(30_000);
            let receipts: Vec<String> = chunk.iter().map(|(r, _)| r.clone()).collect();
            let Ok(results) = shared
                .client
                .extend(
                    &shared.queue,
                    receipts.clone(),
                    Duration::from_millis(lease_ms),
                )
                .await
            else {
                continue;
            };
            let mut lost = Vec::new();
            {
                let mut held = shared.held.lock().expect("held lock is never poisoned");
                for (receipt, result) in receipts.iter().zip(results) {
                    match (result, held.get_mut(receipt)) {
                        (Ok(()), Some(entry)) => entry.deadline_ms = now_ms() + lease_ms,
                        // The lease is gone (stale or unknown): stop extending it.
                        (Err(err), Some(_)) if !err.is_retryable() => lost.push(receipt.clone()),
                        _ => {}
                    }
                }
            }
            for receipt in lost {
                shared.release(&receipt);
            }
        }
    }
}
