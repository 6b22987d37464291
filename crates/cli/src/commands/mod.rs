//! One file per command family.

pub mod admin;
pub mod bench;
pub mod check;
pub mod dev;
pub mod queue;
pub mod serve;

use raftq_client::Client;

/// The dev cluster's addresses, the default for `--cluster`.
pub const DEV_CLUSTER: &str = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403";

/// Where client commands connect, and how they print.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// Node addresses (host:port, comma-separated); any node of the cluster works.
    #[arg(long, env = "RAFTQ_CLUSTER", default_value = DEV_CLUSTER, global = true)]
    pub cluster: String,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    /// A client over `--cluster`.
    pub fn client(&self) -> anyhow::Result<Client> {
        let seeds: Vec<String> = self
            .cluster
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Client::connect(seeds)
            .map_err(|err| anyhow::anyhow!("--cluster {:?}: {}", self.cluster, err.message))
    }
}

/// Turns a client error into a message that says what to do.
pub fn explain(err: raftq_client::Error, cluster: &str) -> anyhow::Error {
    match hint(&err, cluster) {
        Some(hint) => anyhow::anyhow!("{}\nhint: {hint}", err.message),
        None => anyhow::anyhow!("{}", err.message),
    }
}

/// What to do about an error, when there is something to say.
pub fn hint(err: &raftq_client::Error, cluster: &str) -> Option<String> {
    use raftq_client::Code;
    let message = err.message.as_str();
    Some(match err.code {
        Code::Unavailable | Code::DeadlineExceeded => format!(
            "no node of {cluster} answered as or through a leader; is the cluster running (`raftq dev`, `raftq cluster status`)?"
        ),
        Code::NotFound if message.contains("queue") => {
            "create it with `raftq queue create NAME`".to_string()
        }
        Code::FailedPrecondition if message.starts_with("stale receipt") => {
            "the message was leased again since; its current holder acks it".to_string()
        }
        Code::FailedPrecondition if message.starts_with("unknown receipt") => {
            "the message is gone (acked, purged, expired or dead-lettered); nothing to do".to_string()
        }
        Code::ResourceExhausted if message.contains("disk alarm") => {
            "free space on that node's data disk (see `raftq cluster status`); receives and acks still work".to_string()
        }
        _ => return None,
    })
}
