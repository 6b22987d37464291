//! The failover drill's workload and consistency checker, shared by the
//! cluster tests and `raftq check`.
//!
//! A drill has four steps, each in its own module:
//!
//! 1. [`workload`]: [`Workload::setup`] creates queues of its own, and
//!    [`Workload::run`] drives producers and consumers through the client
//!    library while the [`nemesis`] injects faults and records their windows;
//! 2. [`history`]: every call is recorded as an invoke and a completion
//!    (`ok`, `fail`, `unknown`) in a [`History`], written as JSON lines;
//! 3. after healing, [`Workload::drain`] empties every queue and
//!    [`replica_digests`] reads each node's state digest;
//! 4. [`checker`]: [`check`] reads the history and returns a [`Report`]
//!    ([`report`]): lost, unexpected, duplicates by cause, stale receipts
//!    accepted, reused ids, order violations, replica mismatches, and the
//!    failover figures.
//!
//! [`rng`] is the seeded generator behind every random choice.
//!
//! ```no_run
//! # async fn demo() -> raftq_check::Result<()> {
//! use std::time::Duration;
//! use raftq_check::{check, replica_digests, History, Workload, WorkloadConfig};
//! let addrs = vec!["127.0.0.1:7401".to_string(), "127.0.0.1:7402".to_string()];
//! let client = raftq_client::Client::connect(addrs.clone())?;
//! let workload = Workload::setup(client.clone(), WorkloadConfig::new(42)).await?;
//! let history = History::new();
//! workload.run(&history, |p| eprintln!("{p}")).await?;
//! workload.drain(&history, Duration::from_secs(60)).await?;
//! let digests = replica_digests(&client, &addrs, Duration::from_secs(10)).await;
//! let report = check(&history, &digests, &history.fault_windows());
//! println!("{report}");
//! workload.teardown().await?;
//! # Ok(()) }
//! ```

pub mod checker;
pub mod error;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod rng;
pub mod workload;

pub use checker::{check, check_with, CheckOptions, MessageKey, ReplicaDigest};
pub use error::{Error, Result};
pub use history::{
    DeliveryRecord, EnqueueResult, FaultWindow, History, Invocation, NewPayload, Op, Origin,
    PayloadId, Phase, Process, Progress, ReceiptResult, Record,
};
pub use report::{Duplicates, Liveness, Operations, Payloads, Report, Violation, ViolationKind};
pub use rng::Rng;
pub use workload::{
    replica_digests, wait_for_leader, DrainOutcome, QueueNames, Workload, WorkloadConfig,
};
