//! The internal Raft service: receives a peer's append, vote and snapshot
//! chunk RPCs, checks who sent them ([`crate::identity`], [`crate::clock`]),
//! and hands them to openraft.
//!
//! With TLS on, a message is taken only from a connection whose verified
//! client certificate names the node the message says it comes from
//! ([`crate::tls::is_node`]); anything else gets `UNAUTHENTICATED` before its
//! payload is decoded, so a process without a peer certificate can neither
//! append entries, vote nor install a snapshot.
//!
//! A refused message gets `FAILED_PRECONDITION` with the `raftq-refusal`
//! metadata naming why, so the sender can act on it (stop campaigning when
//! it was removed or lost its data).

use openraft::raft::{AppendEntriesResponse, VoteRequest};
use openraft::Raft;
use raftq_proto::internal::raft_service_server::RaftService;
use raftq_proto::internal::RaftMessage;
use raftq_storage::codec;
use raftq_storage::{NodeId, TypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::identity::{RefusalKind, Refused, Standing};
use crate::network::PeerContext;

/// Serves Raft traffic for one node.
pub struct RaftServer {
    id: NodeId,
    raft: Raft<TypeConfig>,
    context: PeerContext,
    peers_need_certs: bool,
}

impl RaftServer {
    /// The service of node `id`; with `peers_need_certs` (TLS on), every
    /// sender must present its node certificate.
    pub fn new(
        id: NodeId,
        raft: Raft<TypeConfig>,
        context: PeerContext,
        peers_need_certs: bool,
    ) -> Self {
        RaftServer {
            id,
            raft,
            context,
            peers_need_certs,
        }
    }

    /// Checks the target id and the sender's identity, records its clock and
    /// disk alarm, and decodes the payload.
    fn open<T: DeserializeOwned>(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<(RaftMessage, T), Status> {
        let certs = crate::tls::caller_certs(&request);
        let message = request.into_inner();
        if self.peers_need_certs {
            let Some(certs) = certs else {
                return Err(Status::unauthenticated(
                    "the Raft service takes messages only from peers with a node certificate \
                     from the cluster CA (mutual TLS)",
                ));
            };
            if !crate::tls::is_node(&certs, message.source) {
                tracing::warn!(
                    claimed = message.source,
                    "refusing a Raft message whose certificate does not name its sender"
                );
                return Err(Status::unauthenticated(format!(
                    "the caller's certificate does not name node {} ({}): a peer must present \
                     its own node certificate",
                    message.source,
                    crate::tls::peer_name(message.source)
                )));
            }
        }
        if message.target != self.id {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}: the sender's membership has a wrong address",
                self.id, message.target
            )));
        }
        self.context
            .clock
            .record_request(message.source, message.sent_at_ms);
        self.context
            .disk
            .record_peer(message.source, message.disk_alarm);
        if let Err(refused) = self.context.identity.check(
            message.source,
            message.cluster_id,
            message.source_incarnation,
            message.target_incarnation,
            message.record_index,
        ) {
            if refused.kind == RefusalKind::StaleRecord {
                // The sender knows this node by another log: this node is the
                // one that lost its data.
                self.context.identity.refused(&refused);
            } else if self
                .context
                .identity
                .should_log(message.source, refused.kind)
            {
                tracing::warn!(peer = message.source, reason = %refused.message, "refusing a peer's message");
            }
            return Err(refusal(&refused));
        }
        let what = || format!("raft request from node {}", message.source);
        let body = codec::decode(&what, &message.payload)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        Ok((message, body))
    }

    fn reply<T: Serialize>(
        &self,
        target: NodeId,
        result: &T,
    ) -> Result<Response<RaftMessage>, Status> {
        let payload = codec::encode(result).map_err(|err| Status::internal(err.to_string()))?;
        Ok(Response::new(
            self.context.envelope(self.id, target, payload),
        ))
    }

    /// Refuses a vote this node must not give: the candidate was removed from
    /// the cluster, its clock is too far from this node's, or this node
    /// itself is refused (it lost its data: it must not help any candidate
    /// to a majority).
    fn check_vote(
        &self,
        source: NodeId,
        sent_at_ms: u64,
        rpc: &VoteRequest<NodeId>,
    ) -> Result<(), Status> {
        if let Standing::Refused(why) = self.context.identity.standing() {
            return Err(refusal(&Refused {
                kind: RefusalKind::StaleRecord,
                message: format!("node {} takes no part: {why}", self.id),
            }));
        }
        if let Err(err) = self.context.clock.check_candidate(source, sent_at_ms) {
            if self
                .context
                .identity
                .should_log(source, RefusalKind::ClockSkew)
            {
                tracing::warn!(candidate = source, reason = %err, "vote refused");
            }
            return Err(refusal(&Refused {
                kind: RefusalKind::ClockSkew,
                message: err.to_string(),
            }));
        }
        if let Some(why) = self.removed(source, rpc) {
            if self
                .context
                .identity
                .should_log(source, RefusalKind::Removed)
            {
                tracing::info!(candidate = source, reason = %why, "vote refused: the candidate is not a member");
            }
            return Err(refusal(&Refused {
                kind: RefusalKind::Removed,
                message: why,
            }));
        }
        Ok(())
    }

    /// Why `candidate` is not a member any more, if this node knows for sure:
    /// this node is a member, its membership leaves the candidate out, that
    /// membership is applied (committed), and the candidate's log ends before
    /// it (so the candidate cannot have seen it, nor a later one that added
    /// it back).
    fn removed(&self, candidate: NodeId, rpc: &VoteRequest<NodeId>) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        let stored = &metrics.membership_config;
        let membership = stored.membership();
        let in_membership = |id: NodeId| membership.nodes().any(|(n, _)| *n == id);
        let since = stored.log_id().as_ref()?;
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        let candidate_last = rpc.last_log_id.map_or(0, |id| id.index);
        (in_membership(self.id)
            && !in_membership(candidate)
            && since.index <= applied
            && candidate_last < since.index)
            .then(|| {
                format!(
                    "node {candidate} is not a member of this cluster: the membership since log \
                     index {} (node {}'s view) leaves it out. It was removed; to rejoin, empty \
                     its data dir and add it with `raftq cluster add-node {candidate} ADDR`",
                    since.index, self.id
                )
            })
    }
}

/// The status of a refused message.
fn refusal(refused: &Refused) -> Status {
    let mut status = Status::failed_precondition(refused.message.clone());
    status.metadata_mut().insert(
        raftq_proto::REFUSAL_HEADER,
        tonic::metadata::MetadataValue::from_static(refused.kind.as_str()),
    );
    status
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (message, rpc) = self.open(request)?;
        let result = self.raft.append_entries(rpc).await;
        if matches!(
            result,
            Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
        ) {
            self.context.identity.accepted();
        }
        self.reply(message.source, &result)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let (message, rpc) = self.open::<VoteRequest<NodeId>>(request)?;
        self.check_vote(message.source, message.sent_at_ms, &rpc)?;
        let result = self.raft.vote(rpc).await;
        self.reply(message.source, &result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (message, rpc) = self.open(request)?;
        let result = self.raft.install_snapshot(rpc).await;
        self.reply(message.source, &result)
    }
}
