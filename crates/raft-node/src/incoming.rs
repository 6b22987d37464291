//! Accepted connections that the node can close: the gRPC port's (through
//! [`incoming`]) and the HTTP port's ([`HttpListener`]).
//!
//! tonic and axum stop a server gracefully: each connection is asked to
//! finish (an HTTP/2 GOAWAY; no more keep-alive) and the server waits until
//! every one has ended. A connection that stalls — TCP opened and the
//! HTTP/2 preface never sent, half a request head — would hold that wait,
//! and with it the node's state, its open log database and that database's
//! file lock, forever. So:
//!
//! - a connection that sends no byte within
//!   [`FIRST_BYTE_TIMEOUT`] of being accepted is closed (a client that
//!   connects and says nothing does not keep its socket; one that sends a
//!   byte and stalls is closed at the stop);
//! - once the node stops, connections get [`CLOSE_GRACE`] to end on their
//!   own, then every one still open is closed: its reads and writes fail.
//!
//! The check on each read and write is one atomic load (the watch channel's
//! version); the close future is polled only when the socket would block.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// How long an accepted connection may stay silent before its first byte
/// (the TLS client hello, or the HTTP/2 preface without TLS).
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connections get to end by themselves after the node is told to
/// stop, before they are closed.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// The connections accepted on `listener` (with Nagle's algorithm off: it
/// would hold small responses back for the peer's delayed ACK), each closed
/// once `close` turns true.
pub fn incoming(
    listener: TcpListener,
    close: watch::Receiver<bool>,
) -> impl Stream<Item = io::Result<Connection>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| accepted.map(|stream| Connection::new(stream, close.clone())))
}

/// Turns `close` true [`CLOSE_GRACE`] after `stopped` completes: the
/// shutdown future to give tonic together with [`incoming`].
pub async fn close_after_grace(stopped: impl Future<Output = ()>, close: watch::Sender<bool>) {
    stopped.await;
    tokio::spawn(async move {
        tokio::time::sleep(CLOSE_GRACE).await;
        let _ = close.send(true);
    });
}

/// The HTTP port's listener: like [`incoming`], for axum.
pub struct HttpListener {
    listener: TcpListener,
    close: watch::Receiver<bool>,
}

impl HttpListener {
    /// Accepts on `listener`; each connection is closed once `close` turns
    /// true.
    pub fn new(listener: TcpListener, close: watch::Receiver<bool>) -> Self {
        HttpListener { listener, close }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Connection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Connection, std::net::SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        (Connection::new(stream, self.close.clone()), addr)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// One accepted TCP connection: reads and writes go to the socket until the
/// node closes it, then fail with `ConnectionAborted`.
pub struct Connection {
    stream: TcpStream,
    /// Checked first on every read and write (one atomic load).
    close: watch::Receiver<bool>,
    /// Polled when the socket has nothing to do, so that an idle connection
    /// is woken when the node closes it; `None` once it fired.
    closed: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connection {
    fn new(stream: TcpStream, close: watch::Receiver<bool>) -> Self {
        let mut wait = close.clone();
        Connection {
            stream,
            close,
            closed: Some(Box::pin(async move {
                // An error means the server is gone: close as well.
                let _ = wait.wait_for(|closed| *closed).await;
            })),
            first_byte: Some(Box::pin(tokio::time::sleep(FIRST_BYTE_TIMEOUT))),
        }
    }

    /// Whether the node has closed this connection (or its server is gone).
    fn is_closed(&mut self) -> bool {
        if self.closed.is_some() && !self.close.has_changed().unwrap_or(true) {
            return false;
        }
        self.closed = None;
        true
    }

    /// After the socket said `Pending`: arranges for the task to be woken
    /// when the node closes the connection; true if it already has.
    fn closes_while_waiting(&mut self, cx: &mut Context<'_>) -> bool {
        match self.closed.as_mut() {
            None => true,
            Some(closed) => {
                let fired = closed.as_mut().poll(cx).is_ready();
                if fired {
                    self.closed = None;
                }
                fired
            }
        }
    }

    /// `result` of a socket call, unless the node closed the connection.
    fn unless_closed<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_pending() && self.closes_while_waiting(cx) {
            return Poll::Ready(Err(aborted()));
        }
        result
    }
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the node is stopping")
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.is_closed() {
            return Poll::Ready(Err(aborted()));
        }
        if let Some(deadline) = this.first_byte.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no byte within {FIRST_BYTE_TIMEOUT:?} of connecting"),
                )));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.first_byte = None;
        }
        this.unless_closed(cx, read)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.is_closed() {
            return Poll::Ready(Err(aborted()));
        }
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.unless_closed(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.is_closed() {
            return Poll::Ready(Err(aborted()));
        }
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.unless_closed(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.is_closed() {
            return Poll::Ready(Err(aborted()));
        }
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        this.unless_closed(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(close: watch::Receiver<bool>) -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (Connection::new(server, close), client)
    }

    #[tokio::test]
    async fn a_connection_passes_bytes_until_closed_then_fails_every_call_without_panicking() {
        let (close_tx, close_rx) = watch::channel(false);
        let (mut server, mut client) = pair(close_rx).await;
        client.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").await.expect("write");
        client.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"pong");

        // A read waiting on an idle socket is woken and fails when closed.
        let waiting = tokio::spawn(async move {
            let got = server.read(&mut [0u8; 4]).await;
            (server, got)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        close_tx.send(true).expect("send");
        let (mut server, got) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(
            got.expect_err("closed").kind(),
            io::ErrorKind::ConnectionAborted
        );
        // Every later call fails the same way (none panics).
        for _ in 0..3 {
            let read = server.read(&mut [0u8; 4]).await;
            assert_eq!(
                read.expect_err("closed").kind(),
                io::ErrorKind::ConnectionAborted
            );
            let write = server.write(b"x").await;
            assert_eq!(
                write.expect_err("closed").kind(),
                io::ErrorKind::ConnectionAborted
            );
            let flush = server.flush().await;
            assert_eq!(
                flush.expect_err("closed").kind(),
                io::ErrorKind::ConnectionAborted
            );
        }
    }
}
