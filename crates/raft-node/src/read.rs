//! Linearizable reads: a read reflects every write that completed before it
//! started.
//!
//! The leader confirms with a quorum that it still leads and waits until its
//! state machine has applied up to the commit index it saw (openraft's
//! read-index, `ensure_linearizable`); then it reads its local state. Reads
//! reach the leader through [`crate::forward`] like writes do.

use openraft::error::{CheckIsLeaderError, RaftError};

use crate::error::{Error, Result};
use crate::node::{Node, REQUEST_TIMEOUT};

/// Waits until a read on this node's state is linearizable.
pub async fn barrier(node: &Node) -> Result<()> {
    let result = tokio::time::timeout(REQUEST_TIMEOUT, node.raft.ensure_linearizable())
        .await
        .map_err(|_| Error::Timeout("no quorum confirmed the leader in time".into()))?;
    match result {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
            Err(Error::NotLeader {
                leader_id: forward.leader_id,
                leader_addr: forward.leader_node.map(|node| node.addr),
            })
        }
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(err))) => {
            Err(Error::Unavailable(format!("no quorum: {err}")))
        }
        Err(RaftError::Fatal(fatal)) => Err(Error::Unavailable(format!(
            "raft has stopped on this node: {fatal}"
        ))),
    }
}
