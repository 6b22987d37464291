//! A node's configuration: one [`NodeConfig`], from flags, `RAFTQ_*`
//! environment variables and an optional TOML file, in that order of
//! precedence, over the defaults in [`NodeConfig::default`].
//!
//! `validate` runs before anything starts and names the broken rule.
//! `deploy/raftq.toml` is a commented sample of the file.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::tls::TlsPaths;

/// Default gRPC port (clients and peers).
pub const DEFAULT_GRPC_PORT: u16 = 7400;

/// A node's resolved configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id: unique in the cluster, never reused for another disk.
    pub id: u64,
    /// Where the gRPC server (public API and Raft traffic) listens.
    pub listen: SocketAddr,
    /// The address other nodes and clients use to reach this node; defaults to
    /// `listen` (set it when listening on 0.0.0.0 or behind NAT).
    pub advertise: Option<String>,
    /// The local IP address this node's connections to its peers start from;
    /// the system picks one when unset. Set it on hosts with several
    /// addresses, where firewalls between nodes allow one of them.
    pub source_address: Option<IpAddr>,
    /// Where the HTTP server (`/metrics`, `/health`, `/ready`) listens; none
    /// when unset.
    pub http_listen: Option<SocketAddr>,
    /// Where the Raft log, the state and the snapshots live.
    pub data_dir: PathBuf,
    /// The founding members `id -> host:port`, identical on every node. The
    /// first start with an empty data dir bootstraps the cluster from it;
    /// later starts ignore it.
    pub initial_cluster: BTreeMap<u64, String>,
    /// Leader heartbeat, ms. In openraft 0.9 also the append RPC timeout.
    pub heartbeat_ms: u64,
    /// Election timeout range, ms.
    pub election_timeout_min_ms: u64,
    /// Upper end of the election timeout range, ms.
    pub election_timeout_max_ms: u64,
    /// Log entries since the last snapshot that trigger a new one.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower
    /// catches up from the log instead of a whole snapshot.
    pub log_kept_behind_snapshot: u64,
    /// Most client requests folded into one Raft entry.
    pub max_batch_commands: usize,
    /// Most payload bytes folded into one Raft entry.
    pub max_batch_bytes: usize,
    /// Raft entries proposed and not yet committed at once; more requests wait
    /// and are folded into the next entry.
    pub max_inflight_proposals: usize,
    /// Free bytes the data disk must keep: below it the node is in disk
    /// alarm and the cluster refuses enqueues. `None`: 1 GiB, or 5 % of a
    /// smaller filesystem; 0: no alarm.
    pub min_free_disk_bytes: Option<u64>,
    /// How far (ms) this node's wall clock may be from its peers' before it
    /// may not lead (voters refuse it, a leader steps aside). 0: no limit.
    pub max_clock_skew_ms: u64,
    /// Bytes of memory the queue state may use before enqueues are refused
    /// (`RESOURCE_EXHAUSTED`). `None`: 40% of the machine's memory (or of
    /// the cgroup's limit); 0: no limit. See [`crate::memory`].
    pub max_state_memory_bytes: Option<u64>,
    /// Payload bytes of writes that may wait for a proposal slot on the
    /// leader; a write that finds the queue full is refused with
    /// `UNAVAILABLE` (overloaded) so clients back off. See
    /// [`crate::propose`].
    pub proposal_queue_bytes: usize,
    /// Shifts this node's wall clock by this many ms: fault injection for
    /// failover drills and tests (a clock that is wrong), never for use in
    /// production.
    pub clock_offset_ms: i64,
    /// TLS on the gRPC port and mutual TLS between nodes ([`crate::tls`]);
    /// `None`: plaintext.
    pub tls: Option<TlsPaths>,
    /// Serve the HTTP port over TLS too, with the node's certificate
    /// (needs `tls` and `http_listen`).
    pub http_tls: bool,
    /// The users file ([`crate::auth`]); when set, every public call needs a
    /// bearer token and the permission it uses. `None`: auth off.
    pub auth_file: Option<PathBuf>,
    /// Most requests one client connection may have in flight at once
    /// (HTTP/2 concurrent streams; more wait on the client).
    pub max_streams_per_connection: u32,
    /// Most receives one connection may hold waiting (long-polls) at once;
    /// one more is refused with `RESOURCE_EXHAUSTED`.
    pub max_waits_per_connection: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_GRPC_PORT)),
            advertise: None,
            source_address: None,
            http_listen: None,
            data_dir: PathBuf::from("./data"),
            initial_cluster: BTreeMap::new(),
            heartbeat_ms: 300,
            election_timeout_min_ms: 1_200,
            election_timeout_max_ms: 2_400,
            snapshot_after_entries: 20_000,
            log_kept_behind_snapshot: 2_000,
            max_batch_commands: 1_024,
            max_batch_bytes: 4 * 1024 * 1024,
            max_inflight_proposals: 4,
            min_free_disk_bytes: None,
            max_clock_skew_ms: 2_000,
            max_state_memory_bytes: None,
            proposal_queue_bytes: crate::propose::PROPOSAL_QUEUE_BYTES,
            clock_offset_ms: 0,
            tls: None,
            http_tls: false,
            auth_file: None,
            max_streams_per_connection: 1_024,
            max_waits_per_connection: 256,
        }
    }
}

/// The largest `max_batch_bytes`: a Raft entry must fit an append request
/// (`network::MAX_APPEND_BYTES`) with room to spare.
pub const MAX_BATCH_BYTES_LIMIT: usize = 8 * 1024 * 1024;

impl NodeConfig {
    /// The address this node gives to others.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Checks every rule; the error names the first one broken.
    pub fn validate(&self) -> Result<()> {
        let bad = |rule: String| Err(Error::Config(rule));
        if self.id == 0 {
            return bad("id must be at least 1".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir must not be empty".into());
        }
        if !self.initial_cluster.is_empty() && !self.initial_cluster.contains_key(&self.id) {
            return bad(format!(
                "initial_cluster must include this node's id {} (it names {:?})",
                self.id,
                self.initial_cluster.keys().collect::<Vec<_>>()
            ));
        }
        for (id, addr) in &self.initial_cluster {
            check_addr(addr)
                .map_err(|why| Error::Config(format!("initial_cluster {id}={addr}: {why}")))?;
        }
        if let Some(addr) = &self.advertise {
            check_addr(addr).map_err(|why| Error::Config(format!("advertise {addr}: {why}")))?;
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms >= self.election_timeout_min_ms {
            return bad(format!(
                "heartbeat_ms ({}) must be above 0 and below election_timeout_min_ms ({})",
                self.heartbeat_ms, self.election_timeout_min_ms
            ));
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return bad(format!(
                "election_timeout_min_ms ({}) must be below election_timeout_max_ms ({})",
                self.election_timeout_min_ms, self.election_timeout_max_ms
            ));
        }
        if self.snapshot_after_entries < 100 {
            return bad("snapshot_after_entries must be at least 100".into());
        }
        if self.max_batch_commands == 0
            || self.max_batch_commands > raftq_storage::queue::MAX_BATCH_COMMANDS
        {
            return bad(format!(
                "max_batch_commands must be 1 to {}",
                raftq_storage::queue::MAX_BATCH_COMMANDS
            ));
        }
        if !(64 * 1024..=MAX_BATCH_BYTES_LIMIT).contains(&self.max_batch_bytes) {
            return bad(format!(
                "max_batch_bytes must be 65536 to {MAX_BATCH_BYTES_LIMIT}, not {}",
                self.max_batch_bytes
            ));
        }
        if self.max_clock_skew_ms > 0 && self.max_clock_skew_ms < 100 {
            return bad(format!(
                "max_clock_skew_ms must be 0 (no limit) or at least 100, not {}",
                self.max_clock_skew_ms
            ));
        }
        if self.max_inflight_proposals == 0 || self.max_inflight_proposals > 64 {
            return bad("max_inflight_proposals must be 1 to 64".into());
        }
        if self.proposal_queue_bytes < self.max_batch_bytes {
            return bad(format!(
                "proposal_queue_bytes ({}) must be at least max_batch_bytes ({})",
                self.proposal_queue_bytes, self.max_batch_bytes
            ));
        }
        if let Some(bytes @ 1..=0xF_FFFF) = self.max_state_memory_bytes {
            return bad(format!(
                "max_state_memory_bytes must be 0 (no limit) or at least 1 MiB (1048576), not {bytes}"
            ));
        }
        if self.http_tls && (self.tls.is_none() || self.http_listen.is_none()) {
            return bad(
                "http_tls needs tls_cert, tls_key and tls_client_ca (the HTTP port serves the \
                 node's certificate) and http_listen"
                    .into(),
            );
        }
        if self.max_streams_per_connection == 0 || self.max_waits_per_connection == 0 {
            return bad(
                "max_streams_per_connection and max_waits_per_connection must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// Checks a `host:port` address.
pub fn check_addr(addr: &str) -> std::result::Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_string())?;
    if host.is_empty() {
        return Err("empty host".into());
    }
    port.parse::<u16>()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    Ok(())
}

/// Parses `1=host:port,2=host:port,…`.
pub fn parse_initial_cluster(text: &str) -> std::result::Result<BTreeMap<u64, String>, String> {
    let mut members = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} in {part:?} is not a node id (a number)"))?;
        check_addr(addr.trim()).map_err(|why| format!("{part:?}: {why}"))?;
        if members.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node id {id} appears twice"));
        }
    }
    Ok(members)
}

/// `raftq serve` flags. Each may also come from its `RAFTQ_*` variable or the
/// TOML file given with `--config`; flags win over the environment, which
/// wins over the file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// This node's id (a number, unique in the cluster).
    #[arg(long, env = "RAFTQ_ID")]
    pub id: Option<u64>,
    /// gRPC listen address (clients and peers).
    #[arg(long, env = "RAFTQ_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address others use to reach this node (default: --listen).
    #[arg(long, env = "RAFTQ_ADVERTISE")]
    pub advertise: Option<String>,
    /// Local IP address for connections to peers (default: chosen by the system).
    #[arg(long, env = "RAFTQ_SOURCE_ADDRESS")]
    pub source_address: Option<IpAddr>,
    /// HTTP listen address for /metrics, /health and /ready.
    #[arg(long, env = "RAFTQ_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Directory for the Raft log, state and snapshots.
    #[arg(long, env = "RAFTQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Founding members, identical on every node: 1=host:port,2=host:port,3=host:port.
    /// Used on the first start only.
    #[arg(long, env = "RAFTQ_INITIAL_CLUSTER", value_parser = parse_initial_cluster)]
    pub initial_cluster: Option<BTreeMap<u64, String>>,
    /// Leader heartbeat in ms (also the append RPC timeout).
    #[arg(long, env = "RAFTQ_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Lower end of the election timeout in ms.
    #[arg(long, env = "RAFTQ_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    /// Upper end of the election timeout in ms.
    #[arg(long, env = "RAFTQ_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Take a snapshot after this many log entries.
    #[arg(long, env = "RAFTQ_SNAPSHOT_AFTER_ENTRIES")]
    pub snapshot_after_entries: Option<u64>,
    /// Free bytes the data disk must keep; below it the cluster refuses
    /// enqueues (default: 1 GiB, or 5% of a smaller disk; 0: no alarm).
    #[arg(long, env = "RAFTQ_MIN_FREE_DISK_BYTES")]
    pub min_free_disk_bytes: Option<u64>,
    /// Bytes of memory the queue state may use; past it enqueues are refused
    /// (default: 40% of the machine's or cgroup's memory; 0: no limit).
    #[arg(long, env = "RAFTQ_MAX_STATE_MEMORY_BYTES")]
    pub max_state_memory_bytes: Option<u64>,
    /// How far (ms) this node's clock may be from its peers' before it may
    /// not lead (default 2000; 0: no limit).
    #[arg(long, env = "RAFTQ_MAX_CLOCK_SKEW_MS")]
    pub max_clock_skew_ms: Option<u64>,
    /// Shift this node's clock by this many ms (fault injection for drills
    /// and tests; never in production).
    #[arg(
        long,
        env = "RAFTQ_CLOCK_OFFSET_MS",
        hide = true,
        allow_hyphen_values = true
    )]
    pub clock_offset_ms: Option<i64>,
    /// TLS: this node's certificate (PEM), with `node-<ID>.raftq` and the
    /// names clients dial among its subject alternative names. Needs
    /// --tls-key and --tls-client-ca; the node then refuses plaintext.
    #[arg(long, env = "RAFTQ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM).
    #[arg(long, env = "RAFTQ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// TLS: the cluster CA (PEM). Peers must present a certificate from it
    /// naming them (mutual TLS); clients may present one.
    #[arg(long, env = "RAFTQ_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve the HTTP port (--http-listen) over TLS with the node's
    /// certificate (needs --tls-cert). RAFTQ_HTTP_TLS takes true/false,
    /// 1/0, yes/no or on/off.
    #[arg(long, env = "RAFTQ_HTTP_TLS", value_parser = clap::builder::BoolishValueParser::new())]
    pub http_tls: bool,
    /// Users file (TOML: names, token hashes, per-queue permissions; see
    /// `raftq auth add-user`). When set, every call needs a token. Re-read on
    /// SIGHUP and when it changes (checked every 5 s).
    #[arg(long, env = "RAFTQ_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// TOML file with any of the settings above (snake_case keys).
    #[arg(long, env = "RAFTQ_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The TOML file's shape: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    source_address: Option<IpAddr>,
    http_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    initial_cluster: Option<BTreeMap<String, String>>,
    heartbeat_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    snapshot_after_entries: Option<u64>,
    log_kept_behind_snapshot: Option<u64>,
    max_batch_commands: Option<usize>,
    max_batch_bytes: Option<usize>,
    max_inflight_proposals: Option<usize>,
    min_free_disk_bytes: Option<u64>,
    max_clock_skew_ms: Option<u64>,
    max_state_memory_bytes: Option<u64>,
    proposal_queue_bytes: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    auth_file: Option<PathBuf>,
    http_tls: Option<bool>,
    max_streams_per_connection: Option<u32>,
    max_waits_per_connection: Option<usize>,
}

impl ServeArgs {
    /// Resolves flags, environment, file and defaults into a validated config.
    pub fn resolve(&self) -> Result<NodeConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = NodeConfig::default();
        let file_cluster = match file.initial_cluster {
            None => None,
            Some(map) => {
                let mut members = BTreeMap::new();
                for (id, addr) in map {
                    let id: u64 = id.parse().map_err(|_| {
                        Error::Config(format!(
                            "initial_cluster key {id:?} is not a node id (a number)"
                        ))
                    })?;
                    members.insert(id, addr);
                }
                Some(members)
            }
        };
        let config = NodeConfig {
            id: self.id.or(file.id).unwrap_or(defaults.id),
            listen: self.listen.or(file.listen).unwrap_or(defaults.listen),
            advertise: self.advertise.clone().or(file.advertise),
            source_address: self.source_address.or(file.source_address),
            http_listen: self.http_listen.or(file.http_listen),
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(defaults.data_dir),
            initial_cluster: self
                .initial_cluster
                .clone()
                .or(file_cluster)
                .unwrap_or_default(),
            heartbeat_ms: self
                .heartbeat_ms
                .or(file.heartbeat_ms)
                .unwrap_or(defaults.heartbeat_ms),
            election_timeout_min_ms: self
                .election_timeout_min_ms
                .or(file.election_timeout_min_ms)
                .unwrap_or(defaults.election_timeout_min_ms),
            election_timeout_max_ms: self
                .election_timeout_max_ms
                .or(file.election_timeout_max_ms)
                .unwrap_or(defaults.election_timeout_max_ms),
            snapshot_after_entries: self
                .snapshot_after_entries
                .or(file.snapshot_after_entries)
                .unwrap_or(defaults.snapshot_after_entries),
            log_kept_behind_snapshot: file
                .log_kept_behind_snapshot
                .unwrap_or(defaults.log_kept_behind_snapshot),
            max_batch_commands: file
                .max_batch_commands
                .unwrap_or(defaults.max_batch_commands),
            max_batch_bytes: file.max_batch_bytes.unwrap_or(defaults.max_batch_bytes),
            max_inflight_proposals: file
                .max_inflight_proposals
                .unwrap_or(defaults.max_inflight_proposals),
            min_free_disk_bytes: self.min_free_disk_bytes.or(file.min_free_disk_bytes),
            max_clock_skew_ms: self
                .max_clock_skew_ms
                .or(file.max_clock_skew_ms)
                .unwrap_or(defaults.max_clock_skew_ms),
            max_state_memory_bytes: self.max_state_memory_bytes.or(file.max_state_memory_bytes),
            proposal_queue_bytes: file
                .proposal_queue_bytes
                .unwrap_or(defaults.proposal_queue_bytes),
            clock_offset_ms: self.clock_offset_ms.unwrap_or(defaults.clock_offset_ms),
            tls: tls_paths(
                self.tls_cert.clone().or(file.tls_cert),
                self.tls_key.clone().or(file.tls_key),
                self.tls_client_ca.clone().or(file.tls_client_ca),
            )?,
            auth_file: self.auth_file.clone().or(file.auth_file),
            http_tls: self.http_tls || file.http_tls.unwrap_or(false),
            max_streams_per_connection: file
                .max_streams_per_connection
                .unwrap_or(defaults.max_streams_per_connection),
            max_waits_per_connection: file
                .max_waits_per_connection
                .unwrap_or(defaults.max_waits_per_connection),
        };
        config.validate()?;
        Ok(config)
    }
}

/// The TLS files: all three or none.
fn tls_paths(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsPaths>> {
    match (cert, key, client_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(client_ca)) => Ok(Some(TlsPaths {
            cert,
            key,
            client_ca,
        })),
        _ => Err(Error::Config(
            "tls_cert, tls_key and tls_client_ca go together: the node's certificate and key, \
             and the cluster CA that authenticates its peers"
                .into(),
        )),
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        Error::Config(format!("cannot read config file {}: {err}", path.display()))
    })?;
    toml::from_str(&text)
        .map_err(|err| Error::Config(format!("config file {}: {err}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_nonsense_by_name() {
        let members = parse_initial_cluster("1=127.0.0.1:7401, 2=localhost:7402").expect("parses");
        assert_eq!(members[&2], "localhost:7402");
        for (bad, says) in [
            ("1", "ID=HOST:PORT"),
            ("x=a:1", "not a node id"),
            ("1=a", "host:port"),
            ("1=a:99999", "port"),
            ("1=a:1,1=b:2", "twice"),
        ] {
            let err = parse_initial_cluster(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raftq.toml");
        std::fs::write(
            &path,
            "id = 2\nheartbeat_ms = 200\n[initial_cluster]\n1 = \"a:1\"\n2 = \"b:2\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            heartbeat_ms: Some(250),
            config: Some(path),
            ..ServeArgs::default()
        };
        let config = args.resolve().expect("valid");
        assert_eq!((config.id, config.heartbeat_ms), (2, 250));
        assert_eq!(config.initial_cluster.len(), 2);
        assert_eq!(
            config.election_timeout_min_ms,
            NodeConfig::default().election_timeout_min_ms
        );
    }

    #[test]
    fn a_malformed_config_file_is_refused_with_its_name_and_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raftq.toml");
        std::fs::write(&path, "idd = 2\n").expect("write");
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let err = args.resolve().expect_err("unknown key").to_string();
        assert!(err.contains("raftq.toml") && err.contains("idd"), "{err}");
    }

    #[test]
    fn tls_files_go_together_and_http_tls_needs_them() {
        let half = ServeArgs {
            tls_cert: Some("node.pem".into()),
            ..ServeArgs::default()
        };
        let err = half.resolve().expect_err("cert alone").to_string();
        assert!(err.contains("go together"), "{err}");
        let all = ServeArgs {
            tls_cert: Some("node.pem".into()),
            tls_key: Some("node.key".into()),
            tls_client_ca: Some("ca.pem".into()),
            auth_file: Some("users.toml".into()),
            ..ServeArgs::default()
        };
        let config = all.resolve().expect("all three");
        assert_eq!(
            config.tls.map(|t| t.client_ca),
            Some(PathBuf::from("ca.pem"))
        );
        assert_eq!(config.auth_file, Some(PathBuf::from("users.toml")));
        let http_tls = ServeArgs {
            http_tls: true,
            ..ServeArgs::default()
        };
        let err = http_tls.resolve().expect_err("no tls").to_string();
        assert!(err.contains("http_tls"), "{err}");
    }

    #[test]
    fn http_tls_from_the_environment_takes_the_usual_spellings() {
        use clap::{Args, Command, FromArgMatches};
        // The only test that reads RAFTQ_HTTP_TLS (the environment is shared
        // by the tests of this binary).
        let parse = |value: &str| {
            std::env::set_var("RAFTQ_HTTP_TLS", value);
            let matches =
                ServeArgs::augment_args(Command::new("serve")).try_get_matches_from(["serve"]);
            std::env::remove_var("RAFTQ_HTTP_TLS");
            matches
                .map_err(|err| err.to_string())
                .and_then(|m| ServeArgs::from_arg_matches(&m).map_err(|err| err.to_string()))
                .map(|args| args.http_tls)
        };
        for (value, want) in [
            ("1", true),
            ("true", true),
            ("yes", true),
            ("on", true),
            ("0", false),
            ("false", false),
            ("no", false),
        ] {
            assert_eq!(parse(value), Ok(want), "RAFTQ_HTTP_TLS={value}");
        }
        let err = parse("maybe").expect_err("not a boolean");
        assert!(err.contains("maybe"), "{err}");
    }

    #[test]
    fn validate_names_the_broken_rule() {
        let cases = [
            (
                NodeConfig {
                    id: 0,
                    ..NodeConfig::default()
                },
                "id must be",
            ),
            (
                NodeConfig {
                    initial_cluster: BTreeMap::from([(2, "a:1".to_string())]),
                    ..NodeConfig::default()
                },
                "must include this node",
            ),
            (
                NodeConfig {
                    heartbeat_ms: 5_000,
                    ..NodeConfig::default()
                },
                "heartbeat_ms",
            ),
            (
                NodeConfig {
                    election_timeout_max_ms: 1_000,
                    ..NodeConfig::default()
                },
                "election_timeout_min_ms",
            ),
        ];
        for (config, rule) in cases {
            let err = config.validate().expect_err(rule).to_string();
            assert!(err.contains(rule), "{err} should name {rule}");
        }
    }
}
