//! [`Client`]: one handle on a raftq cluster.
//!
//! It sends each call to the leader it last heard of (starting from the
//! seeds), follows the leader hints nodes return, and retries calls that
//! failed with a retryable error (see [`Error::is_retryable`]) with backoff.
//! Every message it enqueues carries a dedup id (the caller's, or one the
//! client makes), so a retry after an unknown outcome — a timeout, a leader
//! crash — never stores a message twice within the queue's dedup window.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::security::{ClientTls, Credentials, Transport};
use bytes::Bytes;
use raftq_proto::v1 as pb;
use raftq_proto::v1::cluster_service_client::ClusterServiceClient;
use raftq_proto::v1::queue_service_client::QueueServiceClient;

use crate::error::{Error, Result};
use crate::leader::LeaderCache;
use crate::retry::RetryPolicy;

/// How long adding a node may take: the server waits up to 120 s for the new
/// node to catch up before promoting it.
const ADD_NODE_WAIT: Duration = Duration::from_secs(150);

/// Largest gRPC message the client accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Most messages the server takes in one enqueue request.
pub const MAX_ENQUEUE_MESSAGES: usize = 100;
/// Most bytes of bodies and attributes the server takes in one enqueue
/// request.
pub const MAX_ENQUEUE_BYTES: usize = 4 * 1024 * 1024;

/// A message to enqueue.
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// The payload.
    pub body: Bytes,
    /// String attributes.
    pub attributes: HashMap<String, String>,
    /// Idempotency key; the client makes one when absent.
    pub dedup_id: Option<String>,
    /// Message group (FIFO within the group, one in flight at a time).
    pub group: Option<String>,
    /// Do not deliver before this long.
    pub delay: Option<Duration>,
}

impl Message {
    /// A message with a body.
    ///
    /// ```
    /// let message = raftq_client::Message::new("hello").with_group("order-7");
    /// assert_eq!(message.group.as_deref(), Some("order-7"));
    /// ```
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message {
            body: body.into(),
            ..Message::default()
        }
    }

    /// Sets the dedup id.
    pub fn with_dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }

    /// Sets the group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets a delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets an attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }
}

/// What happened to one enqueued message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// Its id (for a duplicate, the first message's id).
    pub id: u64,
    /// True when the dedup id had been seen and nothing new was stored.
    pub duplicate: bool,
}

/// Options of a receive.
#[derive(Clone, Debug, Default)]
pub struct ReceiveOptions {
    /// Most messages (1 to 100; default 1).
    pub max: u32,
    /// Most message bytes (bodies and attributes); the server leases at
    /// least one message whatever its size, and never more than 16 MiB.
    pub max_bytes: Option<u64>,
    /// Lease length; the queue's visibility timeout when unset.
    pub visibility: Option<Duration>,
    /// Wait up to this long (at most 20 s) when nothing is ready.
    pub wait: Duration,
    /// Who receives, shown in queue stats.
    pub consumer: String,
}

/// Everything a [`Client`] can be set up with. Its `Debug` never shows the
/// token.
#[derive(Clone, Default)]
pub struct ClientConfig {
    /// How calls are retried.
    pub retry: RetryPolicy,
    /// TLS: the cluster's CA, and a client certificate when it asks for
    /// one. `None`: plaintext.
    pub tls: Option<ClientTls>,
    /// The bearer token sent on every call (clusters with auth on).
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("retry", &self.retry)
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

struct Inner {
    leader: LeaderCache,
    retry: RetryPolicy,
    client_id: String,
    next_dedup: AtomicU64,
}

/// A handle on a raftq cluster. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A client over some of the cluster's nodes (`host:port`). Connections
    /// open on first use, so this fails only on malformed addresses.
    ///
    /// ```no_run
    /// # async fn demo() -> raftq_client::Result<()> {
    /// let client = raftq_client::Client::connect(["127.0.0.1:7401", "127.0.0.1:7402"])?;
    /// client.create_queue("jobs", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub fn connect<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Result<Self> {
        Self::with_retry(seeds, RetryPolicy::default())
    }

    /// A client with its own retry policy.
    pub fn with_retry<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
        retry: RetryPolicy,
    ) -> Result<Self> {
        Self::with_config(
            seeds,
            ClientConfig {
                retry,
                ..ClientConfig::default()
            },
        )
    }

    /// A client with every setting: retries, TLS and the bearer token. Fails
    /// only on malformed addresses, TLS files that do not parse, or a token
    /// a header cannot carry.
    ///
    /// ```no_run
    /// # async fn demo() -> raftq_client::Result<()> {
    /// use raftq_client::{Client, ClientConfig, ClientTls};
    /// let tls = ClientTls::from_files("ca.pem".as_ref(), None, None)?;
    /// let client = Client::with_config(
    ///     ["node-1.example:7400"],
    ///     ClientConfig {
    ///         tls: Some(tls),
    ///         token: Some("rq_…".into()),
    ///         ..ClientConfig::default()
    ///     },
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn with_config<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
        config: ClientConfig,
    ) -> Result<Self> {
        let ClientConfig { retry, tls, token } = config;
        let credentials = Credentials::new(token.as_deref())?;
        let seeds = seeds
            .into_iter()
            .map(Into::into)
            .filter(|s: &String| !s.trim().is_empty())
            .collect();
        Ok(Client::over(
            LeaderCache::new(seeds, tls, credentials)?,
            retry,
        ))
    }

    /// A client over `leader`'s nodes, with a dedup id prefix of its own.
    fn over(leader: LeaderCache, retry: RetryPolicy) -> Client {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Client {
            inner: Arc::new(Inner {
                leader,
                retry,
                client_id: format!("{random:016x}"),
                next_dedup: AtomicU64::new(1),
            }),
        }
    }

    /// The seed addresses.
    pub fn seeds(&self) -> &[String] {
        self.inner.leader.seeds()
    }

    fn queue_client(channel: Transport) -> QueueServiceClient<Transport> {
        QueueServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A fresh dedup id, unique to this client.
    pub fn new_dedup_id(&self) -> String {
        let n = self.inner.next_dedup.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.inner.client_id)
    }

    /// Runs `call` against the current target, following leader hints and
    /// retrying retryable failures until the retry policy gives up.
    pub(crate) async fn with_retries<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut(Transport) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.with_retries_waiting(Duration::ZERO, call).await
    }

    /// As [`Client::with_retries`], for a call that may legitimately take
    /// `expected` before answering (a waiting receive, a node catching up):
    /// each attempt may take that much longer than the policy's timeout.
    pub(crate) async fn with_retries_waiting<T, F, Fut>(
        &self,
        expected: Duration,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(Transport) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut retry = self.inner.retry;
        retry.attempt_timeout += expected;
        retry.max_elapsed += expected;
        let mut attempt = 0;
        loop {
            let (addr, channel) = match self.inner.leader.target().await {
                Ok(target) => target,
                Err(error) if error.is_retryable() && started.elapsed() < retry.max_elapsed => {
                    tracing::debug!(attempt, error = %error, "retrying");
                    tokio::time::sleep(retry.backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let result = tokio::time::timeout(retry.attempt_timeout, call(channel)).await;
            let error = match result {
                Ok(Ok(response)) => {
                    self.inner.leader.answered(&addr);
                    self.inner.leader.observe(response.metadata());
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => {
                    self.inner.leader.note_status(&addr, &status);
                    Error::from(status)
                }
                Err(_) => {
                    self.inner.leader.failed(&addr);
                    Error::new(
                        tonic::Code::DeadlineExceeded,
                        format!("{addr} did not answer in {:?}", retry.attempt_timeout),
                    )
                }
            };
            if !error.is_retryable() || started.elapsed() >= retry.max_elapsed {
                return Err(error);
            }
            tracing::debug!(%addr, attempt, error = %error, "retrying");
            tokio::time::sleep(retry.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Creates a queue (no-op if it exists with the same config).
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// use raftq_client::proto::QueueConfig;
    /// let config = QueueConfig { max_deliveries: Some(5), ..Default::default() };
    /// let created = client.create_queue("jobs", config).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_queue(&self, name: &str, config: pb::QueueConfig) -> Result<bool> {
        let request = pb::CreateQueueRequest {
            name: name.into(),
            config: Some(config),
        };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).create_queue(request).await }
            })
            .await?;
        Ok(response.created)
    }

    /// Changes the options of a queue's config that `config` sets, and sets
    /// those named in `reset` back to their defaults (removing
    /// `dead_letter_queue`, `message_ttl_ms`, `max_length` or `max_bytes`);
    /// every other option keeps its value. Returns the whole config now in
    /// force. Names are the fields of [`pb::QueueConfig`].
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// use raftq_client::proto::QueueConfig;
    /// let longer = QueueConfig { visibility_timeout_ms: Some(60_000), ..Default::default() };
    /// let config = client.update_queue("jobs", longer, &["dead_letter_queue"]).await?;
    /// assert_eq!(config.dead_letter_queue, None);
    /// # Ok(()) }
    /// ```
    pub async fn update_queue(
        &self,
        name: &str,
        config: pb::QueueConfig,
        reset: &[&str],
    ) -> Result<pb::QueueConfig> {
        let request = pb::UpdateQueueRequest {
            name: name.into(),
            config: Some(config),
            reset: reset.iter().map(|r| r.to_string()).collect(),
        };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).update_queue(request).await }
            })
            .await?;
        response
            .config
            .ok_or_else(|| Error::new(tonic::Code::Internal, "the server sent no config"))
    }

    /// Deletes a queue and its messages; returns how many it held.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// let dropped = client.delete_queue("jobs").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_queue(&self, name: &str) -> Result<u64> {
        let request = pb::DeleteQueueRequest { name: name.into() };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).delete_queue(request).await }
            })
            .await?;
        Ok(response.messages)
    }

    /// Every queue with its stats.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// for queue in client.list_queues().await? {
    ///     println!("{}: {} ready", queue.name, queue.ready);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_queues(&self) -> Result<Vec<pb::QueueInfo>> {
        let response = self
            .with_retries(|ch| async move {
                Self::queue_client(ch)
                    .list_queues(pb::ListQueuesRequest {})
                    .await
            })
            .await?;
        Ok(response.queues)
    }

    /// One queue's config and stats.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// let info = client.get_queue("jobs").await?;
    /// println!("{} in flight", info.in_flight);
    /// # Ok(()) }
    /// ```
    pub async fn get_queue(&self, name: &str) -> Result<pb::QueueInfo> {
        let request = pb::GetQueueRequest { name: name.into() };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).get_queue(request).await }
            })
            .await?;
        response
            .queue
            .ok_or_else(|| Error::new(tonic::Code::Internal, "the server sent no queue"))
    }

    /// Enqueues messages, retrying safely: each message without a dedup id
    /// gets one first. The messages go in requests of at most
    /// [`MAX_ENQUEUE_MESSAGES`] messages and [`MAX_ENQUEUE_BYTES`] of bodies
    /// and attributes (a larger single message goes alone, and the server
    /// judges it against the queue's limit), one after the other, in order.
    /// A single message over [`MAX_ENQUEUE_BYTES`] is not sent: its result is
    /// `RESOURCE_EXHAUSTED`, and the others go on. Returns one result per
    /// message; a refused message is an `Err` with the reason. An error of a
    /// whole request (after retries) ends the call: the messages of earlier
    /// requests are stored, the later ones were not sent.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// use raftq_client::Message;
    /// let results = client.enqueue("jobs", vec![Message::new("a"), Message::new("b")]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue(
        &self,
        queue: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Enqueued>>> {
        let mut results = Vec::with_capacity(messages.len());
        for request in split_requests(messages, MAX_ENQUEUE_MESSAGES, MAX_ENQUEUE_BYTES) {
            if let Some(refusal) = too_large_for_a_request(&request) {
                results.push(Err(refusal));
                continue;
            }
            results.extend(self.enqueue_request(queue, request).await?);
        }
        Ok(results)
    }

    async fn enqueue_request(
        &self,
        queue: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Enqueued>>> {
        let request = pb::EnqueueRequest {
            queue: queue.into(),
            messages: messages
                .into_iter()
                .map(|m| pb::NewMessage {
                    body: m.body,
                    attributes: m.attributes,
                    dedup_id: Some(m.dedup_id.unwrap_or_else(|| self.new_dedup_id())),
                    group: m.group,
                    delay_ms: m.delay.map(|d| d.as_millis() as u64),
                })
                .collect(),
        };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).enqueue(request).await }
            })
            .await?;
        Ok(response
            .results
            .into_iter()
            .map(|r| match r.result {
                Some(pb::enqueue_result::Result::Id(id)) => Ok(Enqueued {
                    id,
                    duplicate: r.duplicate,
                }),
                Some(pb::enqueue_result::Result::Error(refusal)) => Err(refusal_error(refusal)),
                None => Err(Error::new(
                    tonic::Code::Internal,
                    "the server sent an empty result",
                )),
            })
            .collect())
    }

    /// Enqueues one message; its refusal is the call's error.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// let id = client.enqueue_one("jobs", raftq_client::Message::new("hello")).await?.id;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_one(&self, queue: &str, message: Message) -> Result<Enqueued> {
        self.enqueue(queue, vec![message])
            .await?
            .pop()
            .unwrap_or_else(|| {
                Err(Error::new(
                    tonic::Code::Internal,
                    "the server sent no result",
                ))
            })
    }

    /// Leases up to `options.max` messages, waiting up to `options.wait`.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// use std::time::Duration;
    /// let options = raftq_client::ReceiveOptions { max: 10, wait: Duration::from_secs(5), ..Default::default() };
    /// for message in client.receive("jobs", options).await? {
    ///     client.ack("jobs", vec![message.receipt]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn receive(&self, queue: &str, options: ReceiveOptions) -> Result<Vec<pb::Delivery>> {
        let request = pb::ReceiveRequest {
            queue: queue.into(),
            max: options.max.max(1),
            max_bytes: options.max_bytes,
            visibility_ms: options.visibility.map(|d| d.as_millis() as u64),
            wait_ms: options.wait.as_millis() as u64,
            consumer: options.consumer,
        };
        let response = self
            .with_retries_waiting(options.wait, |ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).receive(request).await }
            })
            .await?;
        Ok(response.messages)
    }

    /// Acks messages by receipt; one result per receipt. Acks are idempotent
    /// within the queue's dedup window, so the client's retries are safe.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client, receipt: String) -> raftq_client::Result<()> {
    /// for result in client.ack("jobs", vec![receipt]).await? {
    ///     result?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ack(&self, queue: &str, receipts: Vec<String>) -> Result<Vec<Result<()>>> {
        let request = pb::AckRequest {
            queue: queue.into(),
            receipts,
        };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).ack(request).await }
            })
            .await?;
        Ok(receipt_results(response.results))
    }

    /// Ends leases now; redelivery after `delay` or the queue's backoff.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client, receipt: String) -> raftq_client::Result<()> {
    /// client.nack("jobs", vec![receipt], None, Some("db down".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn nack(
        &self,
        queue: &str,
        receipts: Vec<String>,
        delay: Option<Duration>,
        reason: Option<String>,
    ) -> Result<Vec<Result<()>>> {
        let request = pb::NackRequest {
            queue: queue.into(),
            receipts,
            delay_ms: delay.map(|d| d.as_millis() as u64),
            reason,
        };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).nack(request).await }
            })
            .await?;
        Ok(receipt_results(response.results))
    }

    /// Moves lease deadlines to now + `visibility`.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client, receipt: String) -> raftq_client::Result<()> {
    /// client.extend("jobs", vec![receipt], std::time::Duration::from_secs(60)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn extend(
        &self,
        queue: &str,
        receipts: Vec<String>,
        visibility: Duration,
    ) -> Result<Vec<Result<()>>> {
        let request = pb::ExtendRequest {
            queue: queue.into(),
            receipts,
            visibility_ms: visibility.as_millis() as u64,
        };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).extend(request).await }
            })
            .await?;
        Ok(receipt_results(response.results))
    }

    /// Gives back leases whose messages never reached the application (one
    /// result per receipt): each message is ready again at once, in its old
    /// place, and the lease does not count toward `max_deliveries`. The
    /// [`crate::Consumer`] does this itself for messages it buffered but
    /// never handed out; use it for receives whose messages you drop unread.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client, receipt: String) -> raftq_client::Result<()> {
    /// client.release("jobs", vec![receipt]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(&self, queue: &str, receipts: Vec<String>) -> Result<Vec<Result<()>>> {
        let request = pb::ReleaseRequest {
            queue: queue.into(),
            receipts,
        };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).release(request).await }
            })
            .await?;
        Ok(receipt_results(response.results))
    }

    /// Removes every message of a queue that no consumer holds; returns how
    /// many. Leased messages stay and can still be acked.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// let removed = client.purge("jobs").await?;
    /// # Ok(()) }
    /// ```
    pub async fn purge(&self, name: &str) -> Result<u64> {
        let request = pb::PurgeRequest { name: name.into() };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).purge(request).await }
            })
            .await?;
        Ok(response.messages)
    }

    /// Moves up to `max` dead letters back to their source queues; returns
    /// (moved, skipped).
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// let (moved, skipped) = client.redrive("jobs-dlq", 100).await?;
    /// # Ok(()) }
    /// ```
    pub async fn redrive(&self, dlq: &str, max: u32) -> Result<(u64, u64)> {
        let request = pb::RedriveRequest {
            dlq: dlq.into(),
            max,
        };
        let response = self
            .with_retries(|ch| {
                let request = request.clone();
                async move { Self::queue_client(ch).redrive(request).await }
            })
            .await?;
        Ok((response.moved, response.skipped))
    }

    /// The cluster as the node reached sees it.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// let status = client.cluster_status().await?;
    /// println!("leader: {:?}", status.leader_id);
    /// # Ok(()) }
    /// ```
    pub async fn cluster_status(&self) -> Result<pb::StatusResponse> {
        self.status_of(false).await
    }

    async fn status_of(&self, digest: bool) -> Result<pb::StatusResponse> {
        self.with_retries(|ch| async move {
            ClusterServiceClient::new(ch)
                .status(pb::StatusRequest { digest })
                .await
        })
        .await
    }

    /// The cluster as the node at `addr` sees it (no leader routing), with
    /// that node's state digest (`state_digest`: equal on replicas that
    /// applied the same log; it takes a pass over the node's whole state).
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// let status = client.node_status("127.0.0.1:7402").await?;
    /// # Ok(()) }
    /// ```
    pub async fn node_status(&self, addr: &str) -> Result<pb::StatusResponse> {
        let single = self.to_node(
            addr,
            RetryPolicy {
                max_elapsed: Duration::ZERO,
                ..self.inner.retry
            },
        )?;
        single.status_of(true).await
    }

    /// A client of the node at `addr` only, with this client's TLS and
    /// token, and the retry policy given.
    pub fn to_node(&self, addr: &str, retry: RetryPolicy) -> Result<Client> {
        let leader = self.inner.leader.with_seeds(vec![addr.to_string()])?;
        Ok(Client::over(leader, retry))
    }

    /// Adds a node: it joins as a learner and becomes a voter once caught up.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// client.add_node(4, "127.0.0.1:7404").await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_node(&self, id: u64, addr: &str) -> Result<pb::StatusResponse> {
        let request = pb::AddNodeRequest {
            id,
            addr: addr.into(),
        };
        let response = self
            .with_retries_waiting(ADD_NODE_WAIT, |ch| {
                let request = request.clone();
                async move {
                    let mut request = tonic::Request::new(request);
                    request.set_timeout(ADD_NODE_WAIT);
                    ClusterServiceClient::new(ch).add_node(request).await
                }
            })
            .await?;
        response
            .status
            .ok_or_else(|| Error::new(tonic::Code::Internal, "the server sent no status"))
    }

    /// Removes a node from the cluster.
    ///
    /// ```no_run
    /// # async fn demo(client: raftq_client::Client) -> raftq_client::Result<()> {
    /// client.remove_node(4).await?;
    /// # Ok(()) }
    /// ```
    pub async fn remove_node(&self, id: u64) -> Result<pb::StatusResponse> {
        let request = pb::RemoveNodeRequest { id };
        let response = self
            .with_retries(
                |ch| async move { ClusterServiceClient::new(ch).remove_node(request).await },
            )
            .await?;
        response
            .status
            .ok_or_else(|| Error::new(tonic::Code::Internal, "the server sent no status"))
    }

    /// The current target's channel (for the consumer's stream).
    pub(crate) async fn target(&self) -> Result<(String, Transport)> {
        self.inner.leader.target().await
    }

    /// Notes the outcome of a call to `addr` that failed with `status`.
    pub(crate) fn note_status(&self, addr: &str, status: &tonic::Status) {
        self.inner.leader.note_status(addr, status);
    }

    /// Learns the leader from metadata (for the consumer's stream).
    pub(crate) fn observe(&self, metadata: &tonic::metadata::MetadataMap) {
        self.inner.leader.observe(metadata);
    }

    /// The retry policy.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }
}

/// The bytes a message counts for against a request's byte limit.
pub(crate) fn message_bytes(message: &Message) -> usize {
    message.body.len()
        + message
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Splits items into groups of at most `max` items and `max_bytes` bytes,
/// in order; an item larger than `max_bytes` goes alone.
pub(crate) fn split_by<T>(
    items: Vec<T>,
    max: usize,
    max_bytes: usize,
    bytes: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut total = 0;
    for item in items {
        let size = bytes(&item);
        if !current.is_empty() && (current.len() >= max || total + size > max_bytes) {
            out.push(std::mem::take(&mut current));
            total = 0;
        }
        total += size;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn split_requests(messages: Vec<Message>, max: usize, max_bytes: usize) -> Vec<Vec<Message>> {
    split_by(messages, max, max_bytes, message_bytes)
}

/// The refusal of a request that is one message too large for any enqueue
/// request (the server would refuse the whole request; the other messages of
/// the call must not fail with it).
fn too_large_for_a_request(request: &[Message]) -> Option<Error> {
    match request {
        [only] if message_bytes(only) > MAX_ENQUEUE_BYTES => Some(Error::new(
            tonic::Code::ResourceExhausted,
            format!(
                "too large: this message has {} bytes of body and attributes; an enqueue \
                 request carries at most {MAX_ENQUEUE_BYTES}",
                message_bytes(only)
            ),
        )),
        _ => None,
    }
}

fn refusal_error(refusal: pb::Refusal) -> Error {
    Error::new(tonic::Code::from_i32(refusal.code), refusal.message)
}

fn receipt_results(results: Vec<pb::ReceiptResult>) -> Vec<Result<()>> {
    results
        .into_iter()
        .map(|r| match r.error {
            None => Ok(()),
            Some(refusal) => Err(refusal_error(refusal)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_split_by_count_and_by_bytes() {
        let lines: Vec<Message> = (0..100).map(|_| Message::new(vec![b'x'; 60_000])).collect();
        let requests = split_requests(lines, MAX_ENQUEUE_MESSAGES, MAX_ENQUEUE_BYTES);
        assert_eq!(
            requests.len(),
            2,
            "100 lines of 60 KB do not fit one 4 MiB request"
        );
        assert!(requests
            .iter()
            .all(|r| r.iter().map(message_bytes).sum::<usize>() <= MAX_ENQUEUE_BYTES));
        let small: Vec<Message> = (0..250).map(|_| Message::new("x")).collect();
        let requests = split_requests(small, MAX_ENQUEUE_MESSAGES, MAX_ENQUEUE_BYTES);
        assert_eq!(
            requests.iter().map(Vec::len).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let huge = vec![Message::new(vec![0u8; 5 << 20]), Message::new("y")];
        assert_eq!(
            split_requests(huge, 100, MAX_ENQUEUE_BYTES).len(),
            2,
            "a huge one goes alone"
        );
    }

    #[test]
    fn a_message_too_large_for_any_request_is_refused_alone() {
        let huge = [Message::new(vec![0u8; MAX_ENQUEUE_BYTES + 1])];
        let refusal = too_large_for_a_request(&huge).expect("refused");
        assert_eq!(refusal.code, tonic::Code::ResourceExhausted);
        assert!(
            refusal.message.starts_with("too large"),
            "{}",
            refusal.message
        );
        let fits = [Message::new(vec![0u8; MAX_ENQUEUE_BYTES])];
        assert!(too_large_for_a_request(&fits).is_none());
        let two = [Message::new("a"), Message::new("b")];
        assert!(too_large_for_a_request(&two).is_none());
    }
}
