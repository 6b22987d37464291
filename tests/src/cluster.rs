//! An in-process raftq cluster for tests.
//!
//! Each node is a real [`Node`]: its own sled stores in a temp dir, its gRPC
//! server on a loopback port chosen by the OS. Nodes are stopped and started
//! again on the same port and data dir, to test failover and recovery.
//! Timings are shortened (heartbeat 150 ms, elections 600–1200 ms) so a
//! failover takes about a second. Every wait is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use raftq_client::{Client, ClientConfig, ClientTls, RetryPolicy};
use raftq_raft_node::auth::Permission;
use raftq_raft_node::pki::ClusterCerts;
use raftq_raft_node::{Node, NodeConfig, NodeHandle};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// How long any wait of the harness may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A test cluster.
pub struct TestCluster {
    nodes: BTreeMap<u64, Option<NodeHandle>>,
    addrs: BTreeMap<u64, SocketAddr>,
    configs: BTreeMap<u64, NodeConfig>,
    root: tempfile::TempDir,
    certs: Option<ClusterCerts>,
}

/// Settings of the nodes of a test cluster.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Log entries that trigger a snapshot.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot.
    pub log_kept_behind_snapshot: u64,
    /// Give every node an HTTP port (metrics, health, readiness).
    pub http: bool,
    /// Every node's `max_clock_skew_ms` (0 turns the clock check off).
    pub max_clock_skew_ms: u64,
    /// Every node's queue state memory budget (`None`: the default).
    pub max_state_memory_bytes: Option<u64>,
    /// Every node's proposal queue bound, bytes.
    pub proposal_queue_bytes: usize,
    /// TLS, mutual TLS and token auth ([`SECURE_USERS`]) on every node.
    pub secure: bool,
    /// Every node's bound on waiting receives per connection.
    pub max_waits_per_connection: usize,
    /// Serve the HTTP port over TLS (with `secure` and `http`).
    pub http_tls: bool,
    /// Every node's HTTP/2 stream bound per connection.
    pub max_streams_per_connection: u32,
}

/// A test user: name, token, admin, and permissions by queue pattern.
pub type TestUser = (&'static str, &'static str, bool, Grants);
/// Permissions by queue pattern.
pub type Grants = &'static [(&'static str, &'static [Permission])];

/// The users of a secured test cluster: name, token, admin, grants. The
/// harness's own clients use the first (an admin with every permission).
pub const SECURE_USERS: [TestUser; 3] = [
    (
        "admin",
        "admin-token",
        true,
        &[(
            "*",
            &[Permission::Send, Permission::Receive, Permission::Manage],
        )],
    ),
    (
        "orders",
        "orders-token",
        false,
        &[("orders.*", &[Permission::Send, Permission::Receive])],
    ),
    (
        "reader",
        "reader-token",
        false,
        &[("*", &[Permission::Receive])],
    ),
];

/// The users file of [`SECURE_USERS`], with `extra` grants for `orders`.
pub fn users_file(extra_orders: &[(&str, &[Permission])]) -> String {
    SECURE_USERS
        .iter()
        .map(|(name, token, admin, grants)| {
            let mut grants: Vec<(String, Vec<Permission>)> = grants
                .iter()
                .map(|(p, perms)| (p.to_string(), perms.to_vec()))
                .collect();
            if *name == "orders" {
                grants.extend(
                    extra_orders
                        .iter()
                        .map(|(p, perms)| (p.to_string(), perms.to_vec())),
                );
            }
            raftq_raft_node::auth::user_entry(name, token, *admin, &grants).expect("a valid entry")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            snapshot_after_entries: 20_000,
            log_kept_behind_snapshot: 2_000,
            http: false,
            max_clock_skew_ms: NodeConfig::default().max_clock_skew_ms,
            max_state_memory_bytes: None,
            proposal_queue_bytes: NodeConfig::default().proposal_queue_bytes,
            secure: false,
            max_waits_per_connection: NodeConfig::default().max_waits_per_connection,
            http_tls: false,
            max_streams_per_connection: NodeConfig::default().max_streams_per_connection,
        }
    }
}

fn base_config(id: u64, addr: SocketAddr, dir: PathBuf, settings: &Settings) -> NodeConfig {
    NodeConfig {
        id,
        listen: addr,
        data_dir: dir,
        heartbeat_ms: 150,
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1_200,
        snapshot_after_entries: settings.snapshot_after_entries,
        log_kept_behind_snapshot: settings.log_kept_behind_snapshot,
        http_listen: settings.http.then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        max_clock_skew_ms: settings.max_clock_skew_ms,
        max_state_memory_bytes: settings.max_state_memory_bytes,
        proposal_queue_bytes: settings.proposal_queue_bytes,
        max_waits_per_connection: settings.max_waits_per_connection,
        max_streams_per_connection: settings.max_streams_per_connection,
        ..NodeConfig::default()
    }
}

async fn free_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

impl TestCluster {
    /// Starts `size` nodes bootstrapped together and waits for a leader.
    pub async fn start(size: u64) -> Self {
        Self::start_with(size, Settings::default()).await
    }

    /// Starts `size` nodes with `settings`.
    pub async fn start_with(size: u64, settings: Settings) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let mut listeners = BTreeMap::new();
        for id in 1..=size {
            let listener = free_listener().await;
            listeners.insert(id, listener);
        }
        let addrs: BTreeMap<u64, SocketAddr> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().expect("bound")))
            .collect();
        let initial: BTreeMap<u64, String> =
            addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
        let certs = settings.secure.then(|| {
            let hosts = (1..=size)
                .map(|id| (id, vec!["127.0.0.1".to_string()]))
                .collect();
            raftq_raft_node::pki::make_cluster(&root.path().join("tls"), &hosts)
                .expect("make certificates")
        });
        let mut cluster = TestCluster {
            nodes: BTreeMap::new(),
            addrs,
            configs: BTreeMap::new(),
            root,
            certs,
        };
        for (id, listener) in listeners {
            let mut config = base_config(
                id,
                cluster.addrs[&id],
                cluster.root.path().join(format!("node-{id}")),
                &settings,
            );
            config.initial_cluster = initial.clone();
            if let Some(certs) = &cluster.certs {
                // One users file per node, so a test can make them differ.
                let users = cluster.root.path().join(format!("users-{id}.toml"));
                std::fs::write(&users, users_file(&[])).expect("write the users file");
                config.tls = Some(certs.nodes[&id].clone());
                config.auth_file = Some(users);
                config.http_tls = settings.http_tls;
            }
            cluster.configs.insert(id, config.clone());
            let handle = Node::start_on(config, listener, std::future::pending())
                .await
                .expect("node starts");
            cluster.nodes.insert(id, Some(handle));
        }
        cluster.wait_for_leader().await;
        cluster.wait_registered().await;
        cluster
    }

    /// Waits until every running node has applied the registration of
    /// every node's log incarnation (the leader proposes these at once after
    /// the first election), so tests start from a quiet log.
    pub async fn wait_registered(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let ids = self.ids();
            let done = self.nodes.values().flatten().all(|h| {
                let record = h.node.identity.record();
                record.cluster_id.is_some()
                    && ids.iter().all(|id| record.incarnations.contains_key(id))
            });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the members' incarnations were not registered within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ids of every node, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// A node other than `leader` (the lowest such id).
    pub fn follower_of(&self, leader: u64) -> u64 {
        self.ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("a cluster of more than one node has a follower")
    }

    /// A node's gRPC address.
    pub fn addr(&self, id: u64) -> String {
        self.addrs[&id].to_string()
    }

    /// A running node.
    pub fn node(&self, id: u64) -> &NodeHandle {
        self.nodes[&id].as_ref().expect("node is running")
    }

    /// Whether a node is running.
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(Option::is_some)
    }

    /// A client seeded with every node (on a secured cluster: TLS with the
    /// cluster's CA, and the admin's token).
    pub fn client(&self) -> Client {
        let seeds: Vec<String> = self.addrs.values().map(ToString::to_string).collect();
        Client::with_config(
            seeds,
            ClientConfig {
                retry: RetryPolicy {
                    max_elapsed: Duration::from_secs(40),
                    ..RetryPolicy::default()
                },
                ..self.client_config(Some(SECURE_USERS[0].1))
            },
        )
        .expect("valid seeds")
    }

    /// A client that talks only to node `id`.
    pub fn client_of(&self, id: u64) -> Client {
        self.client_of_as(id, Some(SECURE_USERS[0].1))
    }

    /// A client that talks only to node `id` with `token` (TLS on a
    /// secured cluster).
    pub fn client_of_as(&self, id: u64, token: Option<&str>) -> Client {
        Client::with_config(
            [self.addr(id)],
            ClientConfig {
                retry: RetryPolicy {
                    max_elapsed: Duration::ZERO,
                    ..RetryPolicy::default()
                },
                ..self.client_config(token)
            },
        )
        .expect("valid seed")
    }

    /// TLS with the cluster's CA (when secured) and `token`.
    pub fn client_config(&self, token: Option<&str>) -> ClientConfig {
        ClientConfig {
            tls: self.certs.as_ref().map(|certs| ClientTls {
                ca_pem: std::fs::read(&certs.ca).expect("read the CA"),
                ..ClientTls::default()
            }),
            token: self.certs.as_ref().and(token).map(str::to_string),
            ..ClientConfig::default()
        }
    }

    /// The certificates of a secured cluster.
    pub fn certs(&self) -> &ClusterCerts {
        self.certs.as_ref().expect("a secured cluster")
    }

    /// The directory the cluster's files live in.
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }

    /// Node `id`'s users file (secured clusters).
    pub fn users_file(&self, id: u64) -> PathBuf {
        self.configs[&id]
            .auth_file
            .clone()
            .expect("a secured cluster")
    }

    /// The leader as running nodes agree on it, waiting until they do.
    pub async fn wait_for_leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let views: Vec<Option<u64>> = self
                .nodes
                .values()
                .flatten()
                .map(|h| h.node.raft.metrics().borrow().current_leader)
                .collect();
            if let Some(Some(leader)) = views.first() {
                if views.iter().all(|v| *v == Some(*leader)) && self.is_running(*leader) {
                    return *leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader agreed within {WAIT:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader as the running nodes among `ids` agree on it, waiting
    /// until they do (other nodes may not know it: a node the cluster
    /// refuses never hears from the leader).
    pub async fn wait_for_leader_among(&self, ids: &[u64]) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let views: Vec<Option<u64>> = ids
                .iter()
                .filter(|id| self.is_running(**id))
                .map(|id| self.node(*id).node.raft.metrics().borrow().current_leader)
                .collect();
            if let Some(Some(leader)) = views.first() {
                if views.iter().all(|v| *v == Some(*leader)) && ids.contains(leader) {
                    return *leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader agreed among {ids:?} within {WAIT:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `done` holds, checking every 50 ms; fails the test with
    /// `what` after [`WAIT`].
    pub async fn wait_until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops a node (its servers and Raft), as a crash would stop it serving.
    pub async fn stop(&mut self, id: u64) {
        let handle = self
            .nodes
            .get_mut(&id)
            .and_then(Option::take)
            .expect("node is running");
        handle.shutdown().await;
    }

    /// Starts a stopped node again on its port and data dir.
    pub async fn restart(&mut self, id: u64) {
        assert!(!self.is_running(id), "node {id} is running");
        let config = self.configs[&id].clone();
        let listener = bind_again(config.listen).await;
        let handle = Node::start_on(config, listener, std::future::pending())
            .await
            .expect("node restarts");
        self.nodes.insert(id, Some(handle));
    }

    /// A node's data dir.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.configs[&id].data_dir.clone()
    }

    /// Deletes a stopped node's data dir, as a lost disk would.
    pub fn wipe(&mut self, id: u64) {
        assert!(!self.is_running(id), "node {id} is running");
        std::fs::remove_dir_all(self.data_dir(id)).expect("wipe the data dir");
    }

    /// Changes a stopped node's configuration for its next start.
    pub fn reconfigure(&mut self, id: u64, change: impl FnOnce(&mut NodeConfig)) {
        assert!(!self.is_running(id), "node {id} is running");
        change(self.configs.get_mut(&id).expect("a known node"));
    }

    /// Makes node `id` the leader: it starts an election until it wins.
    pub async fn make_leader(&self, id: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.wait_for_leader().await == id {
                return;
            }
            let _ = self.node(id).node.raft.trigger().elect().await;
            assert!(
                Instant::now() < deadline,
                "node {id} did not become leader within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Starts a new, empty node that is not a member yet (no initial cluster).
    pub async fn start_new_node(&mut self, id: u64) -> String {
        let listener = free_listener().await;
        let addr = listener.local_addr().expect("bound");
        let settings = Settings::default();
        let config = base_config(
            id,
            addr,
            self.root.path().join(format!("node-{id}")),
            &settings,
        );
        self.addrs.insert(id, addr);
        self.configs.insert(id, config.clone());
        let handle = Node::start_on(config, listener, std::future::pending())
            .await
            .expect("new node starts");
        self.nodes.insert(id, Some(handle));
        addr.to_string()
    }

    /// Waits until every running node has applied the same index and returns
    /// their state digests (equal on replicas that applied the same log).
    pub async fn wait_converged(&self) -> BTreeMap<u64, (u64, u64)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let views: BTreeMap<u64, (u64, u64)> = self
                .nodes
                .iter()
                .filter_map(|(id, h)| h.as_ref().map(|h| (*id, h)))
                .map(|(id, h)| {
                    let state = h.node.state.read();
                    (
                        id,
                        (
                            state.last_applied.map_or(0, |l| l.index),
                            state.queues.digest(),
                        ),
                    )
                })
                .collect();
            let first = views.values().next().copied();
            if views.values().all(|v| Some(*v) == first) {
                return views;
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge within {WAIT:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for id in self.ids() {
            if self.is_running(id) {
                self.stop(id).await;
            }
        }
    }
}

/// Binds `addr` again after its node stopped (the port may linger briefly).
async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) => {
                assert!(Instant::now() < deadline, "cannot bind {addr} again: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
