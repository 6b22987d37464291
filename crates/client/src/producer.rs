//! [`Producer`]: batched, idempotent enqueue for services that send many
//! messages, without a latency tax at low load.
//!
//! A producer keeps at most `max_inflight` enqueue requests under way.
//!
//! - **A slot is free and nothing is waiting:** `send` sends its message at
//!   once, in its own task, as a request of one: no timer, no hand-off to
//!   another task. A single synchronous publisher pays one round trip.
//! - **Every slot is busy:** messages wait in the producer; when a request
//!   completes, the messages waiting are sent together (up to `max_batch`
//!   messages and `max_batch_bytes` of one queue per request). The busier
//!   the producer, the bigger its batches, and batching costs no time a
//!   message would not have waited anyway.
//!
//! `linger` adds an optional wait before such a batch goes (it never delays
//! a message sent at once). Every message gets its dedup id before it is
//! sent, so the client's retries never store it twice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};

use crate::client::{message_bytes, Client, Enqueued, Message};
use crate::error::{Error, Result};

/// How a producer batches.
#[derive(Clone, Copy, Debug)]
pub struct ProducerConfig {
    /// How long a batch formed while every request slot was busy waits for
    /// more messages before it goes (default 0: at once). A message sent
    /// while a slot is free never waits.
    pub linger: Duration,
    /// Most messages per request (at most 100, the server's limit).
    pub max_batch: usize,
    /// Most body and attribute bytes per request (the server takes 4 MiB).
    pub max_batch_bytes: usize,
    /// Requests under way at once.
    pub max_inflight: usize,
    /// Messages waiting for a request slot; `send` waits when this many are.
    pub max_pending: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::ZERO,
            max_batch: 100,
            max_batch_bytes: 3 * 1024 * 1024,
            max_inflight: 16,
            max_pending: 10_000,
        }
    }
}

/// A message waiting for a request slot.
struct Waiting {
    queue: String,
    message: Message,
    reply: oneshot::Sender<Result<Enqueued>>,
    _room: OwnedSemaphorePermit,
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    /// Request slots.
    slots: Arc<Semaphore>,
    /// Room for waiting messages.
    room: Arc<Semaphore>,
    waiting: Mutex<VecDeque<Waiting>>,
    /// Woken when a message starts waiting, a slot frees, or the producer
    /// is dropped.
    wake: Arc<Notify>,
}

impl Drop for Shared {
    /// Lets the dispatcher see the producer is gone.
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl Shared {
    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting
            .lock()
            .expect("producer lock is never poisoned")
    }
}

/// A batching producer. Cheap to clone; clones share the slots and the
/// messages waiting.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl Producer {
    /// Starts a producer on `client`. Needs a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> raftq_client::Result<()> {
    /// use raftq_client::{Client, Message, Producer, ProducerConfig};
    /// let client = Client::connect(["127.0.0.1:7401"])?;
    /// let producer = Producer::new(client, ProducerConfig::default());
    /// let enqueued = producer.send("jobs", Message::new("hello")).await?;
    /// println!("stored as {}", enqueued.id);
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client, config: ProducerConfig) -> Self {
        let config = ProducerConfig {
            max_batch: config.max_batch.clamp(1, 100),
            max_inflight: config.max_inflight.max(1),
            max_pending: config.max_pending.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            client,
            config,
            slots: Arc::new(Semaphore::new(config.max_inflight)),
            room: Arc::new(Semaphore::new(config.max_pending)),
            waiting: Mutex::new(VecDeque::new()),
            wake: Arc::new(Notify::new()),
        });
        tokio::spawn(dispatch(Arc::downgrade(&shared), shared.wake.clone()));
        Producer { shared }
    }

    /// Enqueues one message and waits for its result: at once when a
    /// request slot is free, in the next batch otherwise.
    ///
    /// ```no_run
    /// # async fn demo(producer: raftq_client::Producer) -> raftq_client::Result<()> {
    /// producer.send("jobs", raftq_client::Message::new("work item")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, queue: &str, mut message: Message) -> Result<Enqueued> {
        let shared = &self.shared;
        if message.dedup_id.is_none() {
            message.dedup_id = Some(shared.client.new_dedup_id());
        }
        // At once, when nothing waits before it and a slot is free.
        if shared.waiting().is_empty() {
            if let Ok(slot) = shared.slots.clone().try_acquire_owned() {
                let result = shared.client.enqueue(queue, vec![message]).await;
                drop(slot);
                shared.wake.notify_one();
                return match result {
                    Ok(mut results) => results.pop().unwrap_or_else(|| {
                        Err(Error::new(
                            tonic::Code::Internal,
                            "the server sent no result",
                        ))
                    }),
                    Err(err) => Err(err),
                };
            }
        }
        let stopped = || Error::new(tonic::Code::Cancelled, "the producer has stopped");
        let room = shared
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        let (reply, result) = oneshot::channel();
        shared.waiting().push_back(Waiting {
            queue: queue.into(),
            message,
            reply,
            _room: room,
        });
        shared.wake.notify_one();
        result.await.map_err(|_| stopped())?
    }
}

/// Sends the messages that wait, in batches, as request slots free up. Ends
/// when the producer is dropped.
async fn dispatch(shared: std::sync::Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if strong.waiting().is_empty() {
            drop(strong);
            notified.await;
            continue;
        }
        let Ok(slot) = strong.slots.clone().acquire_owned().await else {
            return;
        };
        if !strong.config.linger.is_zero() {
            tokio::time::sleep(strong.config.linger).await;
        }
        let Some((queue, batch)) = take_batch(&strong) else {
            continue;
        };
        let request = strong.clone();
        tokio::spawn(async move {
            send_batch(&request.client, &queue, batch).await;
            drop(slot);
            request.wake.notify_one();
        });
    }
}

/// Takes the next batch: the first waiting message's queue, and the messages
/// of that queue that fit one request, in order.
fn take_batch(shared: &Shared) -> Option<(String, Vec<Waiting>)> {
    let mut waiting = shared.waiting();
    let queue = waiting.front()?.queue.clone();
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut rest = VecDeque::with_capacity(waiting.len());
    while let Some(item) = waiting.pop_front() {
        let size = message_bytes(&item.message);
        let fits = batch.len() < shared.config.max_batch
            && (batch.is_empty() || bytes + size <= shared.config.max_batch_bytes);
        if item.queue == queue && fits {
            bytes += size;
            batch.push(item);
        } else {
            rest.push_back(item);
        }
    }
    *waiting = rest;
    Some((queue, batch))
}

async fn send_batch(client: &Client, queue: &str, batch: Vec<Waiting>) {
    let (messages, replies): (Vec<Message>, Vec<_>) =
        batch.into_iter().map(|w| (w.message, w.reply)).unzip();
    match client.enqueue(queue, messages).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
