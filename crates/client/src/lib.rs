//! The Rust client library for raftq.
//!
//! - [`Client`]: every call of the API, sent to the leader (found from the
//!   seeds and the hints nodes return), retried with backoff when a retry can
//!   help ([`Error::is_retryable`]); every enqueued message carries a dedup
//!   id, so retries never store it twice.
//! - [`Producer`]: enqueue one message at a time, sent at once while a request
//!   slot is free and batched only while every slot is busy (no fixed linger).
//! - [`Consumer`]: an async `Stream` of [`Received`] messages with prefetch,
//!   lease extension while the application holds a message, and coalesced acks.
//!
//! No openraft type appears here; wire types come from [`proto`].
//!
//! ```no_run
//! # async fn demo() -> raftq_client::Result<()> {
//! use raftq_client::{Client, Message};
//! let client = Client::connect(["127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"])?;
//! client.create_queue("jobs", Default::default()).await?;
//! client.enqueue_one("jobs", Message::new("hello")).await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod consumer;
pub mod error;
pub mod leader;
pub mod producer;
pub mod retry;
pub mod security;

pub use client::{Client, ClientConfig, Enqueued, Message, ReceiveOptions};
pub use consumer::{Consumer, ConsumerConfig, Received};
pub use error::{Error, Result};
pub use producer::{Producer, ProducerConfig};
pub use retry::RetryPolicy;
pub use security::ClientTls;
/// gRPC status codes, as carried by [`Error::code`].
pub use tonic::Code;

/// The wire types of the public API (`raftq.v1`).
pub use raftq_proto::v1 as proto;
