//! The internal Raft service: receives a peer's append, vote and snapshot
//! chunk RPCs and hands them to openraft.

use openraft::Raft;
use raftq_proto::internal::raft_service_server::RaftService;
use raftq_proto::internal::RaftMessage;
use raftq_storage::codec;
use raftq_storage::{NodeId, TypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

/// Serves Raft traffic for one node.
pub struct RaftServer {
    id: NodeId,
    raft: Raft<TypeConfig>,
}

impl RaftServer {
    /// The service of node `id`.
    pub fn new(id: NodeId, raft: Raft<TypeConfig>) -> Self {
        RaftServer { id, raft }
    }

    /// Checks the target id and decodes the payload.
    fn open<T: DeserializeOwned>(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<(NodeId, T), Status> {
        let message = request.into_inner();
        if message.target != self.id {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}: the sender's membership has a wrong address",
                self.id, message.target
            )));
        }
        let what = || format!("raft request from node {}", message.source);
        let body = codec::decode(&what, &message.payload)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        Ok((message.source, body))
    }

    fn reply<T: Serialize>(
        &self,
        target: NodeId,
        result: &T,
    ) -> Result<Response<RaftMessage>, Status> {
        let payload = codec::encode(result).map_err(|err| Status::internal(err.to_string()))?;
        Ok(Response::new(RaftMessage {
            target,
            source: self.id,
            payload: payload.into(),
        }))
    }
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (source, rpc) = self.open(request)?;
        let result = self.raft.append_entries(rpc).await;
        self.reply(source, &result)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let (source, rpc) = self.open(request)?;
        let result = self.raft.vote(rpc).await;
        self.reply(source, &result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (source, rpc) = self.open(request)?;
        let result = self.raft.install_snapshot(rpc).await;
        self.reply(source, &result)
    }
}
