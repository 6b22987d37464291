//! The HTTP port: `/metrics` (Prometheus text), `/health` (the process
//! answers) and `/ready` (a leader is known, this node has applied all it
//! has logged, and, if it leads, a quorum acknowledged it within an election
//! timeout: it can serve). With `http_tls` the port serves TLS with the
//! node's certificate (no client certificate asked for).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::incoming::{Connection, HttpListener};
use crate::node::Node;

/// How long a TLS handshake on the HTTP port may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the node shuts down; over TLS with `tls` (`http_tls`).
/// Connections still open [`crate::incoming::CLOSE_GRACE`] after the node
/// is told to stop are closed (a request head that never ends would
/// otherwise hold the stop, and the node, forever).
pub async fn serve(node: Arc<Node>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let mut shutdown = node.shutdown_signal();
    let (close_tx, close_rx) = watch::channel(false);
    let stop = crate::incoming::close_after_grace(
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        },
        close_tx,
    );
    let listener = HttpListener::new(listener, close_rx);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(node);
    let result = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(acceptor) => {
            axum::serve(TlsListener::new(listener, acceptor), app)
                .with_graceful_shutdown(stop)
                .await
        }
    };
    if let Err(err) = result {
        tracing::error!(error = %err, "HTTP server failed");
    }
}

/// The HTTP port's listener with TLS: handshakes run side by side (a slow
/// or stalled one holds up no other client), each bounded by
/// [`HANDSHAKE_TIMEOUT`]; a failed one is dropped.
struct TlsListener {
    listener: HttpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<Connection>, SocketAddr)>>,
}

impl TlsListener {
    fn new(listener: HttpListener, acceptor: TlsAcceptor) -> Self {
        TlsListener {
            listener,
            acceptor,
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Connection>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                (stream, addr) = axum::serve::Listener::accept(&mut self.listener) => {
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => Some((tls, addr)),
                            Ok(Err(err)) => {
                                tracing::debug!(%addr, error = %err, "HTTP TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(%addr, "HTTP TLS handshake timed out");
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(accepted)) = done {
                        return accepted;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        axum::serve::Listener::local_addr(&self.listener)
    }
}

/// Renders on a blocking thread: a large state has many series, and the
/// async workers serve the write path.
async fn metrics(State(node): State<Arc<Node>>) -> (StatusCode, String) {
    match tokio::task::spawn_blocking(move || node.metrics.render(&node)).await {
        Ok(text) => (StatusCode::OK, text),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the metrics failed: {err}\n"),
        ),
    }
}

async fn ready(State(node): State<Arc<Node>>) -> (StatusCode, String) {
    if let Err(err) = node.check_standing() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {err}\n"),
        );
    }
    let metrics = node.raft.metrics().borrow().clone();
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    let logged = metrics.last_log_index.unwrap_or(0);
    match metrics.current_leader {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known\n".into(),
        ),
        Some(leader)
            if leader == node.id
                && metrics
                    .millis_since_quorum_ack
                    .is_none_or(|ms| ms > node.config.election_timeout_max_ms) =>
        {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: this leader has not heard from a quorum within an election timeout\n"
                    .into(),
            )
        }
        Some(_) if applied < logged => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: applied {applied} of {logged} logged entries\n"),
        ),
        Some(leader) => (
            StatusCode::OK,
            format!("ready: leader {leader}, applied {applied}\n"),
        ),
    }
}
