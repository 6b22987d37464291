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
        // A transport failure says only "transport error"; why (a TLS alert,
        // a reset) is in the status's sources.
        let text = with_sources(status.message(), std::error::Error::source(&status));
        if let Some(why) = tls_refusal(&text) {
            return Error::new(
                Code::FailedPrecondition,
                format!("TLS failed ({why}): {text}"),
            );
        }
        let code = match status.code() {
            Code::Unknown | Code::Cancelled if is_transport_failure(status.message()) => {
                Code::Unavailable
            }
            // A connection the node closed under a call (a stopping node
            // closes what is still open after its grace) reaches tonic as
            // an HTTP/2 error, which it reports as INTERNAL.
            Code::Internal if status.message().starts_with("h2 protocol error") => {
                Code::Unavailable
            }
            code => code,
        };
        Error::new(code, status.message())
    }
}

/// `message` followed by each error in the chain from `source`, joined by
/// ": ", leaving out an error that only repeats the text before it.
fn with_sources(message: &str, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut text = message.to_string();
    while let Some(inner) = source {
        let said = inner.to_string();
        if !text.ends_with(&said) {
            text = format!("{text}: {said}");
        }
        source = inner.source();
    }
    text
}

/// Why a TLS handshake failed for good, when `message` says it did: a
/// certificate the other side refused, or TLS spoken to a plaintext port.
/// Retrying cannot help, so these are `FAILED_PRECONDITION`, not
/// `UNAVAILABLE`.
fn tls_refusal(message: &str) -> Option<&'static str> {
    let message = message.to_ascii_lowercase();
    [
        ("invalid peer certificate", "the node's certificate is not trusted by the CA given, or does not name the host dialled"),
        ("peer sent no certificates", "the node asked for a client certificate"),
        ("certificate required", "the node asked for a client certificate"),
        ("received corrupt message", "the node does not speak TLS on this port"),
        ("invalidcontenttype", "the node does not speak TLS on this port"),
        ("unknown ca", "the node does not trust this client's certificate"),
        ("unknownca", "the node does not trust this client's certificate"),
        ("bad certificate", "the node refused this client's certificate"),
        ("badcertificate", "the node refused this client's certificate"),
    ]
    .into_iter()
    .find(|(needle, _)| message.contains(needle))
    .map(|(_, why)| why)
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
        let text = with_sources(&err.to_string(), std::error::Error::source(&err));
        match tls_refusal(&text) {
            Some(why) => Error::new(
                Code::FailedPrecondition,
                format!("TLS failed ({why}): {text}"),
            ),
            None => Error::new(Code::Unavailable, format!("connection failed: {text}")),
        }
    }
}

/// Results of the client.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_not_retried_and_a_cut_connection_is() {
        let refused = Error::from(tonic::Status::unavailable(
            "transport error: invalid peer certificate: UnknownIssuer",
        ));
        assert_eq!(refused.code, Code::FailedPrecondition);
        assert!(!refused.is_retryable() && refused.message.starts_with("TLS failed"));
        // What rustls says when the node refuses this client's certificate
        // comes in the status's source, after a plain "transport error".
        let mut alert = tonic::Status::unknown("transport error");
        alert.set_source(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: UnknownCA",
        )));
        let alert = Error::from(alert);
        assert_eq!(alert.code, Code::FailedPrecondition, "{alert}");
        assert!(
            alert.message.contains("does not trust this client"),
            "{alert}"
        );
        let closed = Error::from(tonic::Status::internal("h2 protocol error: http2 error"));
        assert!(closed.is_retryable(), "{closed}");
        let cut = Error::from(tonic::Status::unknown("transport error: connection reset"));
        assert!(cut.is_retryable(), "{cut}");
    }
}
