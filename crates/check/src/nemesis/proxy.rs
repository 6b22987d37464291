//! A fault-injecting TCP proxy: one in front of each node of a
//! [`LocalCluster`](super::LocalCluster).
//!
//! A proxy knows which peer a connection comes from by its source address
//! (each node connects from its own, `--source-address`); connections from
//! any other address are clients and are never cut. When the link between
//! the two nodes is cut, the proxy stops passing bytes on its connections in
//! both directions and holds them, as a firewall that drops packets does
//! (TCP keeps retrying until the link is mended, or the peer gives up on
//! the call); new connections are accepted and held the same way. Mending
//! the link lets the held bytes through.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Cut;
use crate::error::{Error, Result};

/// The proxies of one cluster and the cuts between its nodes.
pub struct Proxies {
    cuts: watch::Sender<BTreeSet<Cut>>,
    sources: Arc<BTreeMap<IpAddr, u64>>,
    accept_loops: Vec<JoinHandle<()>>,
}

impl Proxies {
    /// Proxies for nodes that connect to each other from `sources`
    /// (address → node id).
    pub fn new(sources: BTreeMap<IpAddr, u64>) -> Self {
        Proxies {
            cuts: watch::Sender::new(BTreeSet::new()),
            sources: Arc::new(sources),
            accept_loops: Vec::new(),
        }
    }

    /// Starts the proxy of node `target`: it accepts on `listener` and
    /// forwards to `upstream`. Must run inside a tokio runtime.
    pub fn add(
        &mut self,
        target: u64,
        listener: std::net::TcpListener,
        upstream: SocketAddr,
    ) -> Result<()> {
        listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .map_err(|err| Error::Setup(format!("proxy of node {target}: {err}")))
            .map(|listener| {
                let sources = self.sources.clone();
                let cuts = self.cuts.subscribe();
                self.accept_loops.push(tokio::spawn(accept_loop(
                    listener, target, upstream, sources, cuts,
                )));
            })
    }

    /// Cuts the links in `cuts` (both ways), on top of those already cut.
    pub fn cut(&self, cuts: &[Cut]) {
        self.cuts.send_modify(|set| {
            set.extend(cuts.iter().map(|(a, b)| (*a.min(b), *a.max(b))));
        });
    }

    /// Mends every link.
    pub fn mend(&self) {
        self.cuts.send_modify(BTreeSet::clear);
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.mend();
        for task in &self.accept_loops {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: u64,
    upstream: SocketAddr,
    sources: Arc<BTreeMap<IpAddr, u64>>,
    cuts: watch::Receiver<BTreeSet<Cut>>,
) {
    loop {
        let Ok((inbound, from)) = listener.accept().await else {
            continue;
        };
        let link = sources
            .get(&from.ip())
            .map(|source| (*source.min(&target), *source.max(&target)));
        let cuts = cuts.clone();
        tokio::spawn(async move {
            // A node that is down refuses the connection: so does its proxy
            // (by closing the accepted one).
            let Ok(outbound) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::join!(
                pump(in_read, out_write, link, cuts.clone()),
                pump(out_read, in_write, link, cuts)
            );
        });
    }
}

/// Copies bytes from `from` to `to` while `link` is not cut; holds them
/// while it is.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Option<Cut>,
    mut cuts: watch::Receiver<BTreeSet<Cut>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(link) = link {
            if cuts.wait_for(|cut| !cut.contains(&link)).await.is_err() {
                break;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        stream.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(wait, stream.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf.to_vec())
    }

    #[tokio::test]
    async fn a_cut_link_holds_a_peers_bytes_until_mended_and_never_a_clients() {
        let upstream = echo_server().await;
        let peer: IpAddr = "127.0.1.2".parse().expect("ip");
        let mut proxies = Proxies::new(BTreeMap::from([(peer, 2)]));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let proxy = listener.local_addr().expect("addr");
        proxies.add(1, listener, upstream).expect("proxy");

        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(peer, 0)).expect("bind peer");
        let mut from_peer = socket.connect(proxy).await.expect("connect");
        let mut from_client = TcpStream::connect(proxy).await.expect("connect");
        let wait = Duration::from_secs(5);
        assert_eq!(
            round_trip(&mut from_peer, wait).await.as_deref(),
            Some(&b"ping"[..])
        );

        proxies.cut(&[(2, 1)]);
        assert_eq!(
            round_trip(&mut from_peer, Duration::from_millis(300)).await,
            None,
            "a cut link passes nothing"
        );
        assert_eq!(
            round_trip(&mut from_client, wait).await.as_deref(),
            Some(&b"ping"[..]),
            "clients are never cut off"
        );
        proxies.mend();
        let mut held = [0u8; 4];
        tokio::time::timeout(wait, from_peer.read_exact(&mut held))
            .await
            .expect("the held bytes arrive once mended")
            .expect("read");
        assert_eq!(&held, b"ping");
    }
}
