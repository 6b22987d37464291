//! `raftq serve`: run one node until SIGTERM or Ctrl-C.

use raftq_raft_node::{shutdown, Node, ServeArgs};

/// Runs a node.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args
        .resolve()
        .map_err(|err| anyhow::anyhow!("{err}\nhint: see `raftq serve --help`"))?;
    let handle = Node::start(config, shutdown::signal()).await?;
    println!(
        "raftq node {} serving gRPC on {}{}",
        handle.node.id,
        handle.grpc_addr,
        handle
            .http_addr
            .map(|a| format!(", HTTP on {a}"))
            .unwrap_or_default()
    );
    handle.wait().await?;
    Ok(())
}
