//! The gRPC and HTTP services of a node.
//!
//! - [`queue`]: `raftq.v1.QueueService`, the public queue API;
//! - [`cluster`]: `raftq.v1.ClusterService`, status and membership;
//! - [`raft`]: the internal Raft service peers talk to;
//! - [`http`]: `/metrics`, `/health`, `/ready`;
//! - [`status`]: the one place errors become gRPC statuses.
//!
//! [`call`] is the shared shape of a public call: route it (serve here, or
//! forward to the leader), time it, count it.

pub mod cluster;
pub mod http;
pub mod queue;
pub mod raft;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::AUTHORIZATION_HEADER;
use crate::error::Result;
use crate::forward::{Route, FORWARDED_HEADER};
use crate::node::{Node, REQUEST_TIMEOUT};
use crate::wait::MAX_WAIT;
use status::{add_leader, to_status};

/// How long a forwarded call may take: the longest receive wait plus the
/// commit timeout.
pub const FORWARD_TIMEOUT: Duration =
    Duration::from_secs(MAX_WAIT.as_secs() + REQUEST_TIMEOUT.as_secs());

/// The status of an error this node answers with itself, naming the node.
fn node_status(node: &Node, err: crate::error::Error) -> Status {
    let mut status = to_status(err);
    status.metadata_mut().insert(
        raftq_proto::NODE_ID_HEADER,
        tonic::metadata::MetadataValue::from(node.id),
    );
    status
}

/// Whether another node forwarded this request.
pub fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

/// Whether a member forwarded this request: it carries the forwarded mark
/// and, with TLS on, came over a connection with a member's node
/// certificate. Only per-connection limits look at this; permissions never
/// do (a forwarded call is authorized as its own caller).
pub fn from_peer<T>(node: &Node, request: &Request<T>) -> bool {
    if !is_forwarded(request) {
        return false;
    }
    if node.tls.is_none() {
        return true;
    }
    let Some(certs) = crate::tls::caller_certs(request) else {
        return false;
    };
    let metrics = node.raft.metrics();
    let members: Vec<u64> = metrics
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    members
        .into_iter()
        .any(|id| crate::tls::is_node(&certs, id))
}

/// Runs one public call: locally with `local` when this node leads (or when
/// `needs_leader` is false), otherwise forwarded with `forward` over a channel
/// to the leader. Counts and times it under `op`.
pub async fn call<Req, Resp, L, LF, F, FF>(
    node: &Arc<Node>,
    op: &'static str,
    needs_leader: bool,
    request: Request<Req>,
    local: L,
    forward: F,
) -> std::result::Result<Response<Resp>, Status>
where
    L: FnOnce(Arc<Node>, Req) -> LF,
    LF: Future<Output = Result<Resp>>,
    F: FnOnce(Channel, Request<Req>) -> FF,
    FF: Future<Output = std::result::Result<Response<Resp>, Status>>,
{
    let started = Instant::now();
    let route = if needs_leader {
        node.check_standing()
            .and_then(|()| node.forwarder.route(is_forwarded(&request)))
    } else {
        Ok(Route::Local)
    };
    let result = match route {
        Err(err) => Err(node_status(node, err)),
        Ok(Route::Local) => local(node.clone(), request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| node_status(node, err)),
        Ok(Route::Leader { id, addr, channel }) => {
            // The caller's own token goes along: the leader authorizes the
            // call as its caller, never as this node.
            let token = request.metadata().get(AUTHORIZATION_HEADER).cloned();
            let mut forwarded = Request::new(request.into_inner());
            forwarded.metadata_mut().insert(
                FORWARDED_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
            if let Some(token) = token {
                forwarded.metadata_mut().insert(AUTHORIZATION_HEADER, token);
            }
            forwarded.set_timeout(FORWARD_TIMEOUT);
            match forward(channel, forwarded).await {
                Ok(mut response) => {
                    add_leader(response.metadata_mut(), Some(id), Some(&addr));
                    Ok(response)
                }
                Err(mut status) => {
                    add_leader(status.metadata_mut(), Some(id), Some(&addr));
                    Err(status)
                }
            }
        }
    };
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    node.metrics
        .observe(op, code, started.elapsed().as_secs_f64());
    result
}
