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
    /// `UNAVAILABLE` (no leader, node down, connection lost or cut in
    /// flight), `DEADLINE_EXCEEDED` and `ABORTED`; false for errors that need
    /// a changed request (`INVALID_ARGUMENT`, `NOT_FOUND`,
    /// `FAILED_PRECONDITION`, …).
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
    /// A call cut off in flight (the node died, the connection broke) comes
    /// back from the transport as `UNKNOWN` or `CANCELLED`; it is reported as
    /// `UNAVAILABLE`, since sending it again is what helps. raftq's servers
    /// never answer `UNKNOWN` or `CANCELLED` themselves.
    fn from(status: tonic::Status) -> Self {
        let code = match status.code() {
            Code::Unknown | Code::Cancelled if is_transport_failure(status.message()) => {
                Code::Unavailable
            }
            code => code,
        };
        Error::new(code, status.message())
    }
}

fn is_transport_failure(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "transport error",
        "h2 protocol error",
        "connection",
        "broken pipe",
        "stream no longer needed",
        "operation was canceled",
        "timeout expired",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

impl From<tonic::transport::Error> for Error {
    fn from(err: tonic::transport::Error) -> Self {
        Error::new(Code::Unavailable, format!("connection failed: {err}"))
    }
}

/// Results of the client.
pub type Result<T> = std::result::Result<T, Error>;
