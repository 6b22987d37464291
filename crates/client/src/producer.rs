//! [`Producer`]: batched, idempotent enqueue for services that send many
//! messages.
//!
//! `send` hands a message to a background task and waits for its result. The
//! task collects what arrives within `linger` (or up to `max_batch` messages
//! per queue) and sends each queue's batch as one enqueue request, with up to
//! `max_inflight` requests under way. Every message gets its dedup id before
//! it is batched, so the client's retries never store it twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::client::{Client, Enqueued, Message};
use crate::error::{Error, Result};

/// How a producer batches.
#[derive(Clone, Copy, Debug)]
pub struct ProducerConfig {
    /// How long to wait for more messages before sending a batch.
    pub linger: Duration,
    /// Most messages per request (at most 100, the server's limit).
    pub max_batch: usize,
    /// Most body and attribute bytes per request (the server takes 4 MiB).
    pub max_batch_bytes: usize,
    /// Requests under way at once.
    pub max_inflight: usize,
    /// Messages waiting to be batched; `send` waits when this many are.
    pub max_pending: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(1),
            max_batch: 100,
            max_batch_bytes: 3 * 1024 * 1024,
            max_inflight: 16,
            max_pending: 10_000,
        }
    }
}

struct Pending {
    queue: String,
    message: Message,
    reply: oneshot::Sender<Result<Enqueued>>,
}

/// A batching producer. Cheap to clone; clones share the batching task.
#[derive(Clone)]
pub struct Producer {
    tx: mpsc::Sender<Pending>,
    client: Client,
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
        let (tx, rx) = mpsc::channel(config.max_pending);
        tokio::spawn(run(client.clone(), config, rx));
        Producer { tx, client }
    }

    /// Enqueues one message through the batcher and waits for its result.
    ///
    /// ```no_run
    /// # async fn demo(producer: raftq_client::Producer) -> raftq_client::Result<()> {
    /// producer.send("jobs", raftq_client::Message::new("work item")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, queue: &str, mut message: Message) -> Result<Enqueued> {
        if message.dedup_id.is_none() {
            message.dedup_id = Some(self.client.new_dedup_id());
        }
        let (reply, result) = oneshot::channel();
        self.tx
            .send(Pending {
                queue: queue.into(),
                message,
                reply,
            })
            .await
            .map_err(|_| Error::new(tonic::Code::Cancelled, "the producer has stopped"))?;
        result
            .await
            .map_err(|_| Error::new(tonic::Code::Cancelled, "the producer has stopped"))?
    }
}

async fn run(client: Client, config: ProducerConfig, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(config.max_inflight));
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + config.linger;
        let mut batches: HashMap<String, Vec<Pending>> = HashMap::new();
        batches.entry(first.queue.clone()).or_default().push(first);
        loop {
            let full = batches.values().any(|b| b.len() >= config.max_batch);
            if full {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => batches.entry(next.queue.clone()).or_default().push(next),
                Ok(None) | Err(_) => break,
            }
        }
        for (queue, pending) in batches {
            for chunk in chunks(pending, config.max_batch, config.max_batch_bytes) {
                let slot = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let client = client.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    send_batch(&client, &queue, chunk).await;
                    drop(slot);
                });
            }
        }
    }
}

/// Splits a queue's messages into requests of at most `max` messages and
/// `max_bytes` bytes (a single larger message goes alone; the server judges it).
fn chunks(pending: Vec<Pending>, max: usize, max_bytes: usize) -> Vec<Vec<Pending>> {
    crate::client::split_by(pending, max, max_bytes, |p| {
        crate::client::message_bytes(&p.message)
    })
}

async fn send_batch(client: &Client, queue: &str, batch: Vec<Pending>) {
    let (messages, replies): (Vec<Message>, Vec<_>) =
        batch.into_iter().map(|p| (p.message, p.reply)).unzip();
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
