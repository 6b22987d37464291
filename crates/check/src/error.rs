//! The check crate's error: what stopped a workload, a drain or a history
//! file from doing its job.
//!
//! A violation the checker finds is not an error: it is a finding, reported in
//! [`crate::report::Report`]. Errors here mean the drill itself could not
//! run (the cluster refused to create its queues, a history file is not JSON).

/// An error of the drill's machinery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the cluster failed where the drill cannot go on without it.
    #[error("cluster call failed: {0}")]
    Client(#[from] raftq_client::Error),
    /// Reading or writing a history file failed.
    #[error("history file: {0}")]
    Io(#[from] std::io::Error),
    /// A line of a history file is not a record.
    #[error("history file, line {line}: {source}")]
    Json {
        /// The 1-based line number.
        line: usize,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// A history's records break its invariants (sequence, pairing).
    #[error("malformed history: {0}")]
    Malformed(String),
    /// A configuration value is out of its range.
    #[error("invalid workload config: {0}")]
    Config(String),
    /// A queue of the workload already exists: an earlier run left it.
    #[error("queue {0:?} already exists; delete it or choose another prefix")]
    QueueExists(String),
    /// The drill could not set up what it runs on (a local cluster's
    /// processes, ports, files).
    #[error("setup: {0}")]
    Setup(String),
    /// A workload task ended abnormally.
    #[error("workload task failed: {0}")]
    Task(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
