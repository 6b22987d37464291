//! The peer network: openraft's RPCs to other nodes over the internal tonic
//! service (`raftq.internal.v1.RaftService`) on their gRPC port.
//!
//! - One lazily connected channel per peer, reused for every RPC (tonic
//!   multiplexes over HTTP/2); the factory keeps them.
//! - Payloads are openraft's serde types in raftq's record format
//!   ([`raftq_storage::codec`]); every message names its target node id, and
//!   a node refuses traffic meant for another.
//! - Every call has a timeout (openraft's `hard_ttl` for append and vote,
//!   [`SNAPSHOT_CHUNK_TIMEOUT`] for snapshot chunks). A peer that cannot be
//!   reached is reported as `Unreachable`, so openraft backs off instead of
//!   retrying in a tight loop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use raftq_proto::internal::raft_service_client::RaftServiceClient;
use raftq_proto::internal::RaftMessage;
use raftq_storage::codec;
use raftq_storage::{NodeId, TypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// Timeout of one snapshot chunk RPC.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for establishing a connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest message a node accepts or sends on gRPC: above the largest
/// snapshot chunk and the largest proposal batch.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Opens (lazily) a channel to `addr` (`host:port`), its connections
/// starting from `source` when one is given.
pub fn channel(addr: &str, source: Option<IpAddr>) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|err| format!("bad address {addr:?}: {err}"))?
        .local_address(source)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// One lazily connected channel per address, shared by everything that
/// talks to that address (Raft traffic, forwarded requests).
#[derive(Clone, Debug, Default)]
pub struct Channels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    source: Option<IpAddr>,
}

impl Channels {
    /// Channels whose connections start from `source` (the node's
    /// `source_address`), or from an address the system picks.
    pub fn new(source: Option<IpAddr>) -> Self {
        Channels {
            channels: Arc::default(),
            source,
        }
    }

    /// The channel to `addr`, opened on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .expect("channel map lock is never poisoned");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = channel(addr, self.source)?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Makes openraft's per-peer clients over the node's shared channels.
#[derive(Clone, Default)]
pub struct Network {
    source: NodeId,
    channels: Channels,
}

impl Network {
    /// A network for node `source` over `channels`.
    pub fn new(source: NodeId, channels: Channels) -> Self {
        Network { source, channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            source: self.source,
            target,
            addr: node.addr.clone(),
            client: self.channels.get(&node.addr).map(|channel| {
                RaftServiceClient::new(channel)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            }),
        }
    }
}

/// openraft's client for one peer.
pub struct PeerClient {
    source: NodeId,
    target: NodeId,
    addr: String,
    client: Result<RaftServiceClient<Channel>, String>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Kind,
        request: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(client) => client,
            Err(why) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(why.clone()),
                )))
            }
        };
        let payload =
            codec::encode(request).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        let mut message = tonic::Request::new(RaftMessage {
            target: self.target,
            source: self.source,
            payload: payload.into(),
        });
        message.set_timeout(timeout);
        let reply = match kind {
            Kind::Append => client.append_entries(message).await,
            Kind::Vote => client.vote(message).await,
            Kind::Snapshot => client.install_snapshot(message).await,
        };
        let reply = reply.map_err(|status| {
            tracing::debug!(peer = %self.addr, target = self.target, ?kind, code = ?status.code(), "raft rpc failed");
            match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                    RPCError::Unreachable(Unreachable::new(&status))
                }
                _ => RPCError::Network(NetworkError::new(&status)),
            }
        })?;
        let what = || format!("raft {kind:?} reply from node {}", self.target);
        let result: Result<Resp, E> = codec::decode(&what, &reply.into_inner().payload)
            .map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        result.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }
}

/// Which RPC.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.call(Kind::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(Kind::Snapshot, &rpc, SNAPSHOT_CHUNK_TIMEOUT)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call(Kind::Vote, &rpc, option.hard_ttl()).await
    }
}
