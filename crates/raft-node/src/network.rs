//! The peer network: openraft's RPCs to other nodes over the internal tonic
//! service (`raftq.internal.v1.RaftService`) on their gRPC port.
//!
//! - One lazily connected channel per peer, reused for every RPC (tonic
//!   multiplexes over HTTP/2); the factory keeps them.
//! - Payloads are openraft's serde types in raftq's record format
//!   ([`raftq_storage::codec`]); every message names its target node id, and
//!   a node refuses traffic meant for another.
//! - Every call has a timeout (openraft's `hard_ttl` for append and vote,
//!   [`snapshot_chunk_timeout`] for snapshot chunks: 10 s, and for the last
//!   chunk, which loads the whole snapshot, more by the snapshot's size). A peer that cannot be
//!   reached is reported as `Unreachable`, so openraft backs off instead of
//!   retrying in a tight loop.
//! - An append is bounded by bytes as well as entries: one whose encoding
//!   exceeds the peer's byte budget is not sent; openraft is told it was too
//!   large (`PayloadTooLarge`) with how many entries would fit, and sends
//!   fewer. The budget starts at [`MAX_APPEND_BYTES`] and adapts: an append
//!   that does not finish within openraft's append timeout (the heartbeat
//!   interval) quarters it, one that succeeds doubles it back. Without this,
//!   a follower behind a burst of large messages would be sent more than a
//!   gRPC message may carry, or more than it can write within the timeout,
//!   again and again, and never catch up.
//! - Every message carries the sender's cluster id, incarnation, wall clock
//!   and disk alarm, and the incarnation it registered for the receiver
//!   ([`crate::identity`], [`crate::clock`], [`crate::disk`]); replies are
//!   checked the same way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
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

use crate::clock::Clock;
use crate::disk::DiskMonitor;
use crate::identity::{Identity, RefusalKind, Refused};
use crate::tls::Tls;

/// Timeout of one snapshot chunk RPC (a chunk is at most 4 MiB).
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// The last chunk also loads the whole snapshot on the receiver (decode and
/// rebuild the queues: ~2 s per million messages here); its timeout grows by
/// this much per MiB received, up to [`SNAPSHOT_INSTALL_MAX_TIMEOUT`].
pub const SNAPSHOT_INSTALL_TIMEOUT_PER_MIB: Duration = Duration::from_millis(100);
/// Longest a last snapshot chunk may take.
pub const SNAPSHOT_INSTALL_MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// The timeout of a snapshot chunk at byte `offset` of `len` bytes, the
/// last one when `done`.
pub fn snapshot_chunk_timeout(offset: u64, len: usize, done: bool) -> Duration {
    if !done {
        return SNAPSHOT_CHUNK_TIMEOUT;
    }
    let mib = (offset + len as u64).div_ceil(1024 * 1024);
    (SNAPSHOT_CHUNK_TIMEOUT + SNAPSHOT_INSTALL_TIMEOUT_PER_MIB * mib as u32)
        .min(SNAPSHOT_INSTALL_MAX_TIMEOUT)
}
/// Largest encoded append request sent: a quarter of what a gRPC message may
/// carry, and more than twice the largest entry (a proposal batch is at most
/// `max_batch_bytes`, 8 MiB). A single entry always goes alone, whatever
/// the budget.
pub const MAX_APPEND_BYTES: usize = 16 * 1024 * 1024;
/// The smallest append byte budget a peer's timeouts can bring it down to.
pub const MIN_APPEND_BYTES: usize = 256 * 1024;

/// How many bytes an append to one peer may carry now (see the module doc).
#[derive(Debug)]
struct AppendBudget(AtomicUsize);

impl AppendBudget {
    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn timed_out(&self, sent: usize) {
        let next = (sent.min(self.get()) / 4).max(MIN_APPEND_BYTES);
        self.0.store(next, Ordering::Relaxed);
    }

    fn succeeded(&self, sent: usize) {
        let current = self.get();
        if sent * 2 > current {
            self.0
                .store((current * 2).min(MAX_APPEND_BYTES), Ordering::Relaxed);
        }
    }
}

impl Default for AppendBudget {
    fn default() -> Self {
        AppendBudget(AtomicUsize::new(MAX_APPEND_BYTES))
    }
}

/// Tells an append's budget whether the append finished: dropped unfinished
/// (openraft's timeout cancelled it), it quarters the budget.
struct Watch<'a> {
    budget: &'a AppendBudget,
    bytes: usize,
    finished: bool,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.budget.timed_out(self.bytes);
        }
    }
}
/// Timeout for establishing a connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest message a node accepts or sends on gRPC: above the largest
/// snapshot chunk and the largest proposal batch.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Opens (lazily) a channel to node `target` at `addr` (`host:port`), its
/// connections starting from `source` when one is given; with `tls`, over
/// mutual TLS expecting the target's name in its certificate.
pub fn channel(
    target: NodeId,
    addr: &str,
    source: Option<IpAddr>,
    tls: Option<&Tls>,
) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|err| format!("bad address {addr:?}: {err}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.peer_client_config(target))
            .map_err(|err| format!("TLS to node {target} at {addr}: {err}"))?;
    }
    let endpoint = endpoint
        .local_address(source)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// One lazily connected channel per peer and address, shared by everything
/// that talks to that peer (Raft traffic, forwarded requests).
#[derive(Clone, Debug, Default)]
pub struct Channels {
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
    source: Option<IpAddr>,
    tls: Option<Tls>,
}

impl Channels {
    /// Channels whose connections start from `source` (the node's
    /// `source_address`), or from an address the system picks.
    /// With `tls`, every channel is mutual TLS.
    pub fn new(source: Option<IpAddr>, tls: Option<Tls>) -> Self {
        Channels {
            channels: Arc::default(),
            source,
            tls,
        }
    }

    /// The channel to node `target` at `addr`, opened on first use.
    pub fn get(&self, target: NodeId, addr: &str) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .expect("channel map lock is never poisoned");
        let key = (target, addr.to_string());
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let channel = channel(target, addr, self.source, self.tls.as_ref())?;
        channels.insert(key, channel.clone());
        Ok(channel)
    }
}

/// What every Raft message of a node carries and checks: its identity, its
/// clock and its disk alarm.
#[derive(Clone, Debug)]
pub struct PeerContext {
    /// Cluster id and incarnations.
    pub identity: Arc<Identity>,
    /// Clock offsets.
    pub clock: Arc<Clock>,
    /// Disk alarms.
    pub disk: Arc<DiskMonitor>,
    /// Where append round trips with entries are timed (the `replicate`
    /// stage of `raftq_write_stage_seconds`).
    pub replicated: prometheus::HistogramVec,
    /// Where entries' send and answer times are stamped (the `send` and
    /// `ack_to_commit` stages).
    pub timings: Arc<raftq_storage::timing::Timings>,
}

impl PeerContext {
    /// The envelope of a message from `source` to `target`.
    pub fn envelope(&self, source: NodeId, target: NodeId, payload: Vec<u8>) -> RaftMessage {
        let (cluster_id, source_incarnation, target_incarnation, record_index) =
            self.identity.outgoing(target);
        RaftMessage {
            target,
            source,
            payload: payload.into(),
            cluster_id,
            source_incarnation,
            target_incarnation,
            sent_at_ms: self.clock.wall().0,
            disk_alarm: self.disk.state().alarm,
            record_index,
        }
    }
}

/// Makes openraft's per-peer clients over the node's shared channels.
#[derive(Clone)]
pub struct Network {
    source: NodeId,
    channels: Channels,
    context: PeerContext,
    budgets: Arc<Mutex<HashMap<NodeId, Arc<AppendBudget>>>>,
}

impl Network {
    /// A network for node `source` over `channels`.
    pub fn new(source: NodeId, channels: Channels, context: PeerContext) -> Self {
        Network {
            source,
            channels,
            context,
            budgets: Arc::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            source: self.source,
            target,
            addr: node.addr.clone(),
            client: self.channels.get(target, &node.addr).map(|channel| {
                RaftServiceClient::new(channel)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            }),
            context: self.context.clone(),
            budget: self
                .budgets
                .lock()
                .expect("budget lock is never poisoned")
                .entry(target)
                .or_default()
                .clone(),
        }
    }
}

/// openraft's client for one peer.
pub struct PeerClient {
    source: NodeId,
    target: NodeId,
    addr: String,
    client: Result<RaftServiceClient<Channel>, String>,
    context: PeerContext,
    budget: Arc<AppendBudget>,
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
        let payload =
            codec::encode(request).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        self.send(kind, payload, timeout).await
    }

    async fn send<Resp, E>(
        &mut self,
        kind: Kind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
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
        let envelope = self.context.envelope(self.source, self.target, payload);
        let asked_at = self.context.clock.wall();
        let mut message = tonic::Request::new(envelope);
        message.set_timeout(timeout);
        let reply = match kind {
            Kind::Append => client.append_entries(message).await,
            Kind::Vote => client.vote(message).await,
            Kind::Snapshot => client.install_snapshot(message).await,
        };
        let reply = reply
            .map_err(|status| self.failed(kind, status))?
            .into_inner();
        self.context
            .clock
            .record_response(self.target, reply.sent_at_ms, asked_at);
        self.context.disk.record_peer(self.target, reply.disk_alarm);
        if let Err(refused) = self.context.identity.check(
            self.target,
            reply.cluster_id,
            reply.source_incarnation,
            reply.target_incarnation,
            reply.record_index,
        ) {
            return Err(self.refused_reply(refused));
        }
        let what = || format!("raft {kind:?} reply from node {}", self.target);
        let result: Result<Resp, E> = codec::decode(&what, &reply.payload)
            .map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        result.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }

    /// A failed call: a refusal from the peer is acted on (this node was
    /// removed, or lost its data) and reported as unreachable, so openraft
    /// backs off; transport failures are unreachable too.
    fn failed<E: std::error::Error>(
        &self,
        kind: Kind,
        status: tonic::Status,
    ) -> RPCError<NodeId, BasicNode, E> {
        let refusal = status
            .metadata()
            .get(raftq_proto::REFUSAL_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(RefusalKind::parse);
        if let Some(kind) = refusal {
            let refused = Refused {
                kind,
                message: status.message().to_string(),
            };
            if matches!(kind, RefusalKind::Removed | RefusalKind::LostData) {
                self.context.identity.refused(&refused);
            } else if self.context.identity.should_log(self.target, kind) {
                tracing::warn!(peer = self.target, reason = %refused.message, "a peer refuses this node's message");
            }
            return RPCError::Unreachable(Unreachable::new(&status));
        }
        tracing::debug!(peer = %self.addr, target = self.target, ?kind, code = ?status.code(), "raft rpc failed");
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        }
    }

    /// A reply whose identity disagrees with the record: not counted.
    fn refused_reply<E: std::error::Error>(
        &self,
        refused: Refused,
    ) -> RPCError<NodeId, BasicNode, E> {
        if refused.kind == RefusalKind::StaleRecord {
            self.context.identity.refused(&refused);
        } else if self.context.identity.should_log(self.target, refused.kind) {
            tracing::warn!(peer = self.target, reason = %refused.message, "ignoring a peer's reply");
        }
        RPCError::Unreachable(Unreachable::new(&std::io::Error::other(refused.message)))
    }
}

/// When `entries` entries encode to `bytes` bytes, more than `budget`: how
/// many entries to send instead (at least 1, fewer than `entries`). `None`
/// when the request may go as it is (a single entry always goes; it is
/// bounded well below the gRPC limit).
fn entries_that_fit(entries: usize, bytes: usize, budget: usize) -> Option<u64> {
    if bytes <= budget || entries <= 1 {
        return None;
    }
    let fits = (entries as u128 * budget as u128 / bytes as u128) as usize;
    Some(fits.clamp(1, entries - 1) as u64)
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
        let payload =
            codec::encode(&rpc).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        let budget = self.budget.clone();
        if let Some(fits) = entries_that_fit(rpc.entries.len(), payload.len(), budget.get()) {
            tracing::debug!(
                peer = self.target,
                entries = rpc.entries.len(),
                bytes = payload.len(),
                budget = budget.get(),
                fits,
                "append too large: asking openraft for fewer entries"
            );
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fits),
            ));
        }
        let mut watch = Watch {
            budget: &budget,
            bytes: payload.len(),
            finished: false,
        };
        let range = rpc
            .entries
            .first()
            .zip(rpc.entries.last())
            .map(|(first, last)| (first.log_id.index, last.log_id.index));
        let sent = std::time::Instant::now();
        if let Some((first, last)) = range {
            self.context.timings.sent(first, last, sent);
        }
        let result = self.send(Kind::Append, payload, option.hard_ttl()).await;
        watch.finished = true;
        if result.is_ok() {
            budget.succeeded(watch.bytes);
            if let Some((first, last)) = range {
                let acked = std::time::Instant::now();
                self.context.timings.acked(first, last, acked);
                self.context
                    .replicated
                    .with_label_values(&["replicate"])
                    .observe(acked.duration_since(sent).as_secs_f64());
            }
        }
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let timeout = snapshot_chunk_timeout(rpc.offset, rpc.data.len(), rpc.done);
        self.call(Kind::Snapshot, &rpc, timeout).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call(Kind::Vote, &rpc, option.hard_ttl()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_snapshot_chunk_may_take_longer_the_larger_the_snapshot() {
        assert_eq!(
            snapshot_chunk_timeout(0, 4 << 20, false),
            SNAPSHOT_CHUNK_TIMEOUT
        );
        assert_eq!(
            snapshot_chunk_timeout(1 << 30, 4 << 20, false),
            SNAPSHOT_CHUNK_TIMEOUT,
            "a middle chunk carries 4 MiB whatever the total"
        );
        assert_eq!(
            snapshot_chunk_timeout(316 << 20, 4 << 20, true),
            SNAPSHOT_CHUNK_TIMEOUT + Duration::from_secs(32),
            "320 MiB (about a million 256-byte messages)"
        );
        assert_eq!(
            snapshot_chunk_timeout(1 << 40, 0, true),
            SNAPSHOT_INSTALL_MAX_TIMEOUT
        );
    }

    #[test]
    fn an_append_over_the_byte_limit_asks_for_fewer_entries() {
        let max = MAX_APPEND_BYTES;
        assert_eq!(entries_that_fit(256, max, max), None);
        assert_eq!(entries_that_fit(1, 4 * max, max), None, "one always goes");
        assert_eq!(entries_that_fit(40, 120 * 1024 * 1024, max), Some(5));
        assert_eq!(entries_that_fit(2, 3 * max, max), Some(1));
    }

    #[test]
    fn a_timed_out_append_shrinks_the_budget_and_success_grows_it_back() {
        let budget = AppendBudget::default();
        budget.timed_out(MAX_APPEND_BYTES);
        assert_eq!(budget.get(), MAX_APPEND_BYTES / 4);
        for _ in 0..20 {
            budget.timed_out(1);
        }
        assert_eq!(budget.get(), MIN_APPEND_BYTES, "never below the minimum");
        budget.succeeded(10);
        assert_eq!(
            budget.get(),
            MIN_APPEND_BYTES,
            "a small append proves nothing"
        );
        budget.succeeded(MIN_APPEND_BYTES);
        assert_eq!(budget.get(), 2 * MIN_APPEND_BYTES);
    }
}
