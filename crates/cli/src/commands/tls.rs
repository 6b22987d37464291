//! `raftq tls make-certs`: a CA, node certificates and a client certificate
//! for a cluster, from the names its nodes are reached by.
//!
//! For trying TLS out and for small deployments; a site with its own CA
//! issues certificates with the same names instead (docs/SECURITY.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// `raftq tls` commands.
#[derive(Clone, Debug, clap::Args)]
pub struct TlsArgs {
    #[command(subcommand)]
    command: TlsCommand,
}

#[derive(Clone, Debug, clap::Subcommand)]
enum TlsCommand {
    /// Write a new CA (ca.pem, ca.key), node-ID.pem/.key for every --node
    /// and client.pem/.key into --dir. Each node certificate names
    /// node-ID.raftq (what peers check) and the hosts given.
    MakeCerts {
        /// Directory to write into (created if missing; files of the same
        /// names are replaced).
        #[arg(long)]
        dir: PathBuf,
        /// ID=HOST,HOST…: a node's id and the host names or IP addresses
        /// clients and peers dial it by. Repeat for every node.
        #[arg(long = "node", value_parser = parse_node, required = true)]
        nodes: Vec<(u64, Vec<String>)>,
    },
}

fn parse_node(text: &str) -> Result<(u64, Vec<String>), String> {
    let (id, hosts) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ID=HOST[,HOST…] (say 1=raftq-1,10.0.0.11)"))?;
    let id: u64 = id
        .trim()
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("{id:?} is not a node id (a number from 1)"))?;
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err(format!("node {id} needs at least one host name or address"));
    }
    Ok((id, hosts))
}

/// Runs a tls command.
pub fn run(args: TlsArgs) -> anyhow::Result<()> {
    match args.command {
        TlsCommand::MakeCerts { dir, nodes } => {
            let mut by_id = BTreeMap::new();
            for (id, hosts) in nodes {
                if by_id.insert(id, hosts).is_some() {
                    anyhow::bail!("node {id} is given twice");
                }
            }
            let certs = raftq_raft_node::pki::make_cluster(&dir, &by_id)?;
            println!("CA:     {}", certs.ca.display());
            for (id, paths) in &certs.nodes {
                println!(
                    "node {id}: --tls-cert {} --tls-key {} --tls-client-ca {}",
                    paths.cert.display(),
                    paths.key.display(),
                    paths.client_ca.display()
                );
            }
            println!(
                "client: --ca {} (and, where asked, --cert {} --key {})",
                certs.ca.display(),
                certs.client.0.display(),
                certs.client.1.display()
            );
            Ok(())
        }
    }
}
