//! The gRPC port's accepted connections, each of which the node can close.
//!
//! tonic stops a server gracefully: it sends every connection an HTTP/2
//! GOAWAY and waits until each has ended. A connection that never finished
//! its HTTP/2 handshake (a client that opened TCP and never sent the
//! preface) or a stream that does not end would hold that wait — and with it
//! the node's state, its open log database and its file lock — forever. So:
//!
//! - a connection that sends no byte within [`FIRST_BYTE_TIMEOUT`] of being
//!   accepted is closed (a silent client cannot hold a connection slot);
//! - once the node stops, connections get [`CLOSE_GRACE`] to end on their
//!   own, then every one still open is closed: its reads and writes fail.

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

/// One accepted TCP connection: reads and writes go to the socket until the
/// node closes it, then fail with `ConnectionAborted`.
pub struct Connection {
    stream: TcpStream,
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connection {
    fn new(stream: TcpStream, mut close: watch::Receiver<bool>) -> Self {
        Connection {
            stream,
            closed: Box::pin(async move {
                // An error means the server is gone: close as well.
                let _ = close.wait_for(|closed| *closed).await;
            }),
            first_byte: Some(Box::pin(tokio::time::sleep(FIRST_BYTE_TIMEOUT))),
        }
    }

    /// An error when the node has closed this connection (registers the
    /// task to be woken when it does).
    fn check_open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the node is stopping",
            )),
            Poll::Pending => Ok(()),
        }
    }
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
        this.check_open(cx)?;
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
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_open(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
