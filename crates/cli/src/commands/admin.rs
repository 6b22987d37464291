//! `raftq cluster status|add-node|remove-node`.

use super::{explain, ClientArgs};
use crate::output;

/// `raftq cluster …`
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Clone, Debug, clap::Subcommand)]
enum ClusterCommand {
    /// Members, roles, leader, term, log and applied index, follower lag.
    Status {
        /// Also show the node's state digest (equal on replicas that applied
        /// the same log; a pass over the node's whole state). Asks the first
        /// node of --cluster itself.
        #[arg(long)]
        digest: bool,
    },
    /// Add a node (started with `raftq serve` and no --initial-cluster):
    /// it joins as a learner and becomes a voter once it has caught up.
    AddNode {
        /// The new node's id (unique, never used before).
        id: u64,
        /// Its gRPC address, host:port.
        addr: String,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        /// The node's id.
        id: u64,
    },
}

/// Runs `raftq cluster …`.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let fail = |err| explain(err, &args.client.cluster);
    let status = match args.command {
        ClusterCommand::Status { digest: false } => client.cluster_status().await.map_err(fail)?,
        ClusterCommand::Status { digest: true } => {
            let first = args
                .client
                .cluster
                .split(',')
                .next()
                .unwrap_or_default()
                .trim();
            client.node_status(first).await.map_err(fail)?
        }
        ClusterCommand::AddNode { id, addr } => client.add_node(id, &addr).await.map_err(fail)?,
        ClusterCommand::RemoveNode { id } => client.remove_node(id).await.map_err(fail)?,
    };
    if args.client.json {
        output::print_json(&output::status_json(&status));
    } else {
        print!("{}", output::status_text(&status));
    }
    Ok(())
}
