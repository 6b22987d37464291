//! The client's error: what went wrong, and whether retrying can help.

use tonic::Code;

/// An error from a raftq call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Error {
    /// The gRPC status code (`Unavailable` for connection failures).
    pub code: Code,
    /// What the server (or the connection) said.
    pub message: String,
}

impl Error {
    /// An error with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    /// Whether the same request may succeed if sent again: true for
    /// `UNAVAILABLE` (no leader, node down, connection lost) and
    /// `DEADLINE_EXCEEDED`; false for errors that need a changed request
    /// (`INVALID_ARGUMENT`, `NOT_FOUND`, `FAILED_PRECONDITION`, …).
    ///
    /// Enqueues are safe to retry: the client gives every message a dedup id.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code,
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted
        )
    }

    /// Whether the queue does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code == Code::NotFound
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::new(status.code(), status.message())
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(err: tonic::transport::Error) -> Self {
        Error::new(Code::Unavailable, format!("connection failed: {err}"))
    }
}

/// Results of the client.
pub type Result<T> = std::result::Result<T, Error>;
