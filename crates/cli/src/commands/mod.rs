//! One file per command family.

pub mod admin;
pub mod auth;
pub mod bench;
pub mod check;
pub mod dev;
pub mod queue;
pub mod serve;
pub mod tls;

use std::path::PathBuf;

use raftq_client::{Client, ClientConfig, ClientTls};

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
    /// TLS: the cluster's CA certificate (PEM); connections use TLS when set.
    #[arg(long, env = "RAFTQ_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// TLS: this client's certificate (PEM), for clusters that ask for one.
    #[arg(long, env = "RAFTQ_CERT", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS: the key of --cert (PEM).
    #[arg(long, env = "RAFTQ_KEY", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Bearer token, for clusters with auth on (`raftq auth add-user` makes one).
    /// Prefer RAFTQ_TOKEN or --token-file: a flag shows in `ps`.
    #[arg(long, env = "RAFTQ_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the bearer token (its first line), e.g. a mounted
    /// secret. --token (or RAFTQ_TOKEN) wins when both are given.
    #[arg(long, env = "RAFTQ_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

impl ClientArgs {
    /// A client over `--cluster`, with TLS and the token when given.
    pub fn client(&self) -> anyhow::Result<Client> {
        let seeds: Vec<String> = self
            .cluster
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Client::with_config(seeds, self.config()?)
            .map_err(|err| anyhow::anyhow!("--cluster {:?}: {}", self.cluster, err.message))
    }

    /// The client settings of these flags.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        let tls = match &self.ca {
            Some(ca) => Some(
                ClientTls::from_files(ca, self.cert.as_deref(), self.key.as_deref())
                    .map_err(|err| anyhow::anyhow!("{}", err.message))?,
            ),
            None if self.cert.is_some() => {
                anyhow::bail!("--cert needs --ca (the cluster's CA certificate) too")
            }
            None => None,
        };
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|err| {
                    anyhow::anyhow!("cannot read the token file {}: {err}", path.display())
                })?;
                let token = text.lines().next().unwrap_or_default().trim().to_string();
                if token.is_empty() {
                    anyhow::bail!("the token file {} is empty", path.display());
                }
                Some(token)
            }
            (None, None) => None,
        };
        Ok(ClientConfig {
            tls,
            token,
            ..ClientConfig::default()
        })
    }
}

/// Turns a client error into a message that says what to do.
pub fn explain(err: raftq_client::Error, cluster: &str) -> anyhow::Error {
    match hint(&err, cluster) {
        Some(hint) => anyhow::anyhow!("{}\nhint: {hint}", err.message),
        None => anyhow::anyhow!("{}", err.message),
    }
}

/// Queue and receive options as the API names them (and the server's
/// messages do), with the CLI flag that sets each.
const CONFIG_FLAGS: [(&str, &str); 16] = [
    ("visibility_timeout_ms", "visibility-timeout"),
    ("retry_backoff_min_ms", "retry-backoff-min"),
    ("retry_backoff_max_ms", "retry-backoff-max"),
    ("max_message_bytes", "max-message-bytes"),
    ("dead_letter_queue", "dead-letter-queue"),
    ("default_delay_ms", "default-delay"),
    ("dedup_window_ms", "dedup-window"),
    ("max_deliveries", "max-deliveries"),
    ("message_ttl_ms", "message-ttl"),
    ("max_delay_ms", "max-delay"),
    ("retention_ms", "retention"),
    ("max_length", "max-length"),
    ("max_bytes", "max-bytes"),
    ("overflow", "overflow"),
    ("visibility_ms", "visibility"),
    ("wait_ms", "wait"),
];

/// What to do about an error, when there is something to say.
pub fn hint(err: &raftq_client::Error, cluster: &str) -> Option<String> {
    use raftq_client::Code;
    let message = err.message.as_str();
    Some(match err.code {
        _ if message.contains("h2 protocol error") || message.contains("http2 error") => format!(
            "the connection to {cluster} broke at the HTTP/2 layer: a node with TLS on refuses plaintext; give the cluster's CA with --ca or RAFTQ_CA"
        ),
        Code::Unauthenticated => {
            "pass the token with --token-file, RAFTQ_TOKEN or --token (`raftq dev --secure` prints one; an admin makes them with `raftq auth add-user`)".to_string()
        }
        Code::PermissionDenied => {
            "ask the cluster's admin for the permission (the users file, see docs/SECURITY.md)".to_string()
        }
        Code::FailedPrecondition | Code::Unavailable if message.starts_with("TLS failed") => {
            format!("give the CA that issued the nodes' certificates with --ca or RAFTQ_CA, check that their certificates name the host you dial in --cluster ({cluster}), and leave --ca out for a cluster without TLS")
        }
        Code::Unavailable if message.contains("takes no part") => format!(
            "the node that answered takes no part in the cluster (see the note in `raftq cluster status --cluster {cluster}`); name other nodes in --cluster"
        ),
        Code::Unavailable | Code::DeadlineExceeded if message.contains("did not answer") => format!(
            "a node of {cluster} accepted the connection but did not answer (paused, overloaded or hung?); the client tries the others next, or name other nodes in --cluster"
        ),
        Code::Unavailable | Code::DeadlineExceeded => format!(
            "no node of {cluster} answered as or through a leader; is the cluster running (`raftq dev`, `raftq cluster status`)?"
        ),
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition
            if CONFIG_FLAGS.iter().any(|(field, _)| message.contains(field)) =>
        {
            let named: Vec<String> = CONFIG_FLAGS
                .iter()
                .filter(|(field, _)| message.contains(field))
                .map(|(field, flag)| format!("{field} is --{flag}"))
                .collect();
            format!("on the command line, {}", named.join(", "))
        }
        Code::NotFound if message.contains("queue") => {
            "create it with `raftq queue create NAME`".to_string()
        }
        Code::FailedPrecondition if message.starts_with("stale receipt") => {
            "the message was leased again since; its current holder acks it".to_string()
        }
        Code::FailedPrecondition if message.starts_with("unknown receipt") => {
            "the message is gone (acked, purged, expired or dead-lettered); nothing to do".to_string()
        }
        Code::ResourceExhausted if message.contains("memory alarm") => {
            "the cluster holds as many messages as its memory budget allows: consume or purge, or raise max_state_memory_bytes on every node (`raftq serve --max-state-memory-bytes`); receives and acks still work".to_string()
        }
        Code::ResourceExhausted if message.contains("disk alarm") => {
            "free space on that node's data disk (see `raftq cluster status`); receives and acks still work".to_string()
        }
        _ => return None,
    })
}
