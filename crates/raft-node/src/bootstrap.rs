//! Bootstrap: the first start of a node with an empty data dir forms the
//! cluster from `--initial-cluster`; later starts ignore it.
//!
//! Every founding node calls `initialize` with the same membership. openraft
//! accepts that on each node whose log is empty (the nodes then elect a leader
//! among themselves), and refuses it on an initialized one, so a restart, or a
//! node that joined later with `add-node`, never re-forms anything.

use std::collections::BTreeMap;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft};
use raftq_storage::TypeConfig;

use crate::config::NodeConfig;
use crate::error::{Error, Result};

/// Initializes the cluster if this is a founding node's first start.
pub async fn maybe_initialize(raft: &Raft<TypeConfig>, config: &NodeConfig) -> Result<()> {
    if config.initial_cluster.is_empty() {
        tracing::info!(
            node_id = config.id,
            "no initial cluster given: waiting to be added to one"
        );
        return Ok(());
    }
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|err| Error::Internal(format!("raft stopped during start: {err}")))?;
    if initialized {
        tracing::info!(
            node_id = config.id,
            "data dir holds a cluster already: ignoring --initial-cluster"
        );
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> = config
        .initial_cluster
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(node_id = config.id, members = ?config.initial_cluster, "cluster bootstrapped");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(err) => Err(Error::Config(format!(
            "cannot bootstrap from --initial-cluster: {err}"
        ))),
    }
}
