//! One node: opens its stores, starts openraft, the proposer, the gRPC and
//! HTTP servers, the ticker and the disk monitor, and stops them all on
//! shutdown.
//!
//! [`Node::start`] is the one entry point: `raftq serve` and the tests both
//! call it (tests through [`Node::start_on`] with a listener bound to port 0).
//!
//! A node whose storage fails (a full disk, an I/O error, a log the leader
//! would overwrite below what this node applied) does not linger: openraft
//! stops with a fatal error, [`NodeHandle::wait`] returns it at once, and
//! `raftq serve` exits non-zero without waiting for the stores to close (a
//! full disk can make closing them hang), so a supervisor restarts it or an
//! operator looks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Raft, SnapshotPolicy};
use raftq_proto::internal::raft_service_server::RaftServiceServer;
use raftq_proto::v1::cluster_service_server::ClusterServiceServer;
use raftq_proto::v1::queue_service_server::QueueServiceServer;
use raftq_storage::log_store::LogStats;
use raftq_storage::state_machine::StateReader;
use raftq_storage::{LogStore, NodeId, StateMachine, TypeConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::disk::DiskMonitor;
use crate::error::{Error, Result};
use crate::forward::Forwarder;
use crate::identity::{Identity, Standing};
use crate::metrics::Metrics;
use crate::network::{Channels, Network, PeerContext, MAX_GRPC_MESSAGE_BYTES};
use crate::propose::{BatchLimits, Proposer};
use crate::service::{cluster::ClusterApi, queue::QueueApi, raft::RaftServer};

/// Largest snapshot chunk openraft sends in one RPC.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// Log entries kept behind a snapshot, so a briefly lagging follower catches
/// up from the log instead of a whole snapshot.
pub const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 2_000;
/// Most entries in one append RPC.
pub const MAX_ENTRIES_PER_APPEND: u64 = 256;
/// How long a client request may wait for its entry to commit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the Raft log's flush may run before the node gives up on its
/// disk (a flush that never returns: sled on a full or hung disk).
pub const LOG_FLUSH_STALL_LIMIT: Duration = Duration::from_secs(15);
/// How long openraft's core may take to answer a question about its state
/// before the node gives up on it: a core that does not answer is stuck in
/// a storage call (sled can block forever on a full disk).
pub const RAFT_CORE_ANSWER_LIMIT: Duration = Duration::from_secs(15);

/// A running node's parts, shared by its services.
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// Its configuration.
    pub config: NodeConfig,
    /// openraft.
    pub raft: Raft<TypeConfig>,
    /// The applied queue state.
    pub state: StateReader,
    /// Batches commands into Raft entries.
    pub proposer: Proposer,
    /// Routes requests to the leader.
    pub forwarder: Forwarder,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The log flusher's counters.
    pub log_stats: Arc<LogStats>,
    /// The clock commands are stamped with, and the peers' offsets.
    pub clock: Arc<Clock>,
    /// Cluster id, incarnations, and whether this node takes part.
    pub identity: Arc<Identity>,
    /// The data disk's free space and the alarms peers report.
    pub disk: Arc<DiskMonitor>,
    /// Held across a membership change: this node makes one at a time.
    pub membership_change: tokio::sync::Mutex<()>,
    /// The queue state's memory budget and last estimate.
    pub memory: Arc<crate::memory::MemoryBudget>,
    /// Ready messages already claimed by receives being proposed, per queue:
    /// one ready message wakes one long-polling receiver, not all of them.
    pub receive_claims: crate::wait::Claims,
    /// The users and their permissions, when auth is on.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// This node's TLS material, when TLS is on.
    pub tls: Option<crate::tls::Tls>,
    /// Waiting receives held per client connection.
    pub wait_slots: Arc<crate::limits::WaitSlots>,
    /// Waiting receives this node forwards to the leader at once (they
    /// share one connection to it).
    pub forwarded_waits: Arc<crate::limits::WaitSlots>,
    /// Set when the node cannot go on (its storage failed or hangs);
    /// [`NodeHandle::wait`] returns the reason as an error.
    fatal: watch::Sender<Option<String>>,
    log: LogStore,
    shutdown: watch::Receiver<bool>,
}

impl Node {
    /// Binds `config.listen` and starts the node; it runs until `shutdown`
    /// completes or [`NodeHandle::shutdown`] is called.
    pub async fn start(
        config: NodeConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<NodeHandle> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|err| Error::Config(format!("cannot listen on {}: {err}", config.listen)))?;
        Self::start_on(config, listener, shutdown).await
    }

    /// Starts the node on an already bound gRPC listener.
    pub async fn start_on(
        config: NodeConfig,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<NodeHandle> {
        config.validate()?;
        let grpc_addr = listener.local_addr()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|err| {
            Error::Config(format!(
                "cannot create data dir {}: {err}",
                config.data_dir.display()
            ))
        })?;
        // The state first: a data dir in a format this release cannot read
        // is refused before the log store writes anything into it.
        let mut state_machine = StateMachine::open(&config.data_dir.join("sm"))?;
        let log = LogStore::open(&config.data_dir.join("log"))?;
        let timings = Arc::new(raftq_storage::timing::Timings::new());
        log.record_timings(timings.clone());
        state_machine.record_timings(timings.clone());
        let metrics = Metrics::new();
        let state = state_machine.reader();
        check_log_covers_applied(&log, &state)?;
        log.guard_applied(state_machine.applied_index());
        let log_stats = log.stats();
        let clock = Arc::new(Clock::new(config.clock_offset_ms, config.max_clock_skew_ms));
        let identity = Arc::new(Identity::new(config.id, log.incarnation()));
        let disk = Arc::new(DiskMonitor::new(
            config.id,
            &config.data_dir,
            config.min_free_disk_bytes,
        ));
        observe_state(&state, &clock, &identity);
        let context = PeerContext {
            identity: identity.clone(),
            clock: clock.clone(),
            disk: disk.clone(),
            replicated: metrics.write_stage_seconds.clone(),
            timings: timings.clone(),
        };
        let raft_config = openraft::Config {
            cluster_name: "raftq".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            // openraft's own bound on a snapshot chunk; ours, per chunk, is
            // `network::snapshot_chunk_timeout` (the last one loads it all).
            install_snapshot_timeout: crate::network::SNAPSHOT_INSTALL_MAX_TIMEOUT.as_millis()
                as u64,
            max_payload_entries: MAX_ENTRIES_PER_APPEND,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            max_in_snapshot_log_to_keep: config.log_kept_behind_snapshot,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|err| Error::Config(err.to_string()))?;
        // TLS and users are read before anything listens: a bad file stops
        // the start with its name.
        let tls = config.tls.as_ref().map(crate::tls::Tls::load).transpose()?;
        if let (Some(tls), Some(paths)) = (&tls, &config.tls) {
            tls.check_names(config.id, &paths.cert)?;
        }
        let auth = config
            .auth_file
            .as_deref()
            .map(crate::auth::Auth::load)
            .transpose()?
            .map(Arc::new);
        if auth.is_some() && tls.is_none() {
            tracing::warn!(
                "auth is on without TLS: tokens cross the network in the clear; set tls_cert, \
                 tls_key and tls_client_ca"
            );
        }
        let channels = Channels::new(config.source_address, tls.clone());
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            Network::new(config.id, channels.clone(), context.clone()),
            log.clone(),
            state_machine,
        )
        .await
        .map_err(|err| Error::Internal(format!("raft failed to start: {err}")))?;
        crate::bootstrap::maybe_initialize(&raft, &config).await?;

        let limits = BatchLimits {
            max_commands: config.max_batch_commands,
            max_bytes: config.max_batch_bytes,
            max_inflight: config.max_inflight_proposals,
            queue_bytes: config.proposal_queue_bytes,
            stale_leader_ms: config.election_timeout_max_ms,
        };
        let proposer = Proposer::start(
            raft.clone(),
            limits,
            metrics.clone(),
            clock.clone(),
            timings,
        );
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let node = Arc::new(Node {
            id: config.id,
            forwarder: Forwarder::new(config.id, raft.clone(), channels),
            membership_change: tokio::sync::Mutex::new(()),
            receive_claims: Default::default(),
            auth,
            tls,
            wait_slots: crate::limits::WaitSlots::new(config.max_waits_per_connection),
            forwarded_waits: crate::limits::WaitSlots::new(crate::limits::forwarded_waits(
                config.max_streams_per_connection,
            )),
            memory: Arc::new(crate::memory::MemoryBudget::new(
                config.max_state_memory_bytes,
            )),
            config,
            raft,
            state,
            proposer,
            metrics,
            log_stats,
            clock,
            identity,
            disk,
            fatal: watch::Sender::new(None),
            log,
            shutdown: shutdown_rx,
        });

        let mut tasks = Vec::new();
        tasks.push((
            "gRPC server",
            tokio::spawn(serve_grpc(node.clone(), listener, context)),
        ));
        let http_addr = match node.config.http_listen {
            Some(addr) => {
                let http = TcpListener::bind(addr).await.map_err(|err| {
                    Error::Config(format!("cannot listen on {addr} for HTTP: {err}"))
                })?;
                let bound = http.local_addr()?;
                let tls = match (&node.tls, node.config.http_tls) {
                    (Some(tls), true) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                        crate::tls::http_server_config(tls)?,
                    ))),
                    _ => None,
                };
                tasks.push((
                    "HTTP server",
                    tokio::spawn(crate::service::http::serve(node.clone(), http, tls)),
                ));
                Some(bound)
            }
            None => None,
        };
        tasks.push(("ticker", tokio::spawn(crate::ticker::run(node.clone()))));
        if let Some(auth) = node.auth.clone() {
            tasks.push((
                "users file reload",
                tokio::spawn(reload_users(auth, node.shutdown_signal())),
            ));
        }
        tasks.push(("state watch", tokio::spawn(watch_state(node.clone()))));
        tasks.push(("memory watch", tokio::spawn(watch_memory(node.clone()))));
        tasks.push(("standing watch", tokio::spawn(watch_standing(node.clone()))));
        tasks.push(("storage watch", tokio::spawn(watch_storage(node.clone()))));
        let disk_node = node.clone();
        tasks.push((
            "disk monitor",
            tokio::spawn(async move { disk_node.disk.run(disk_node.shutdown_signal()).await }),
        ));
        let external = shutdown_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = external.send(true);
        });
        tracing::info!(
            node_id = node.id,
            grpc = %grpc_addr,
            http = ?http_addr,
            tls = node.tls.is_some(),
            http_tls = node.config.http_tls,
            auth = node.auth.is_some(),
            "node started"
        );
        Ok(NodeHandle {
            node,
            grpc_addr,
            http_addr,
            shutdown_tx,
            tasks,
        })
    }

    /// A receiver that turns true when the node is shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Whether the node has been told to stop.
    pub fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Bytes the Raft log occupies on disk.
    pub fn log_size(&self) -> Result<u64> {
        Ok(self.log.size_on_disk()?)
    }

    /// Declares that this node cannot go on; [`NodeHandle::wait`] returns.
    pub fn fail(&self, why: String) {
        self.fatal.send_if_modified(|fatal| {
            if fatal.is_none() {
                tracing::error!(node_id = self.id, reason = %why, "this node cannot go on");
                *fatal = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Refuses a request on a node that takes no part in the cluster (it was
    /// removed, or the cluster refuses its log), saying why.
    pub fn check_standing(&self) -> Result<()> {
        match self.identity.standing() {
            Standing::Member => Ok(()),
            Standing::Removed(why) | Standing::Refused(why) => Err(Error::Unavailable(format!(
                "node {} takes no part in the cluster ({why}); use another node",
                self.id
            ))),
        }
    }
}

/// Refuses to start on a data dir whose log ends before what its state has
/// applied: the log was lost or damaged, and openraft would misbehave on it.
fn check_log_covers_applied(log: &LogStore, state: &StateReader) -> Result<()> {
    let applied = state.read().last_applied.map_or(0, |id| id.index);
    let last = log.last_index()?;
    if applied > last {
        return Err(Error::Internal(format!(
            "the Raft log ends at index {last} but the state has applied up to {applied}: the \
             log was lost or damaged. This data dir cannot serve; remove the node from the \
             cluster and add it back with an empty data dir"
        )));
    }
    Ok(())
}

/// Carries what applies change into the clock and the identity checks.
fn observe_state(state: &StateReader, clock: &Clock, identity: &Identity) {
    let state = state.read();
    clock.observe_state(state.queues.clock());
    identity.observe_record(
        state.queues.cluster(),
        state.last_applied.map_or(0, |id| id.index),
    );
}

/// After every apply: the state's clock and cluster record.
async fn watch_state(node: Arc<Node>) {
    let mut applied = node.state.subscribe();
    let mut shutdown = node.shutdown_signal();
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        observe_state(&node.state, &node.clock, &node.identity);
    }
}

/// Re-estimates the queue state's memory every
/// [`crate::memory::MEMORY_CHECK_INTERVAL`] (one pass over the queues).
async fn watch_memory(node: Arc<Node>) {
    let mut interval = tokio::time::interval(crate::memory::MEMORY_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = node.shutdown_signal();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let used = node.state.read().queues.memory_estimate();
        node.memory.set_used(used);
    }
}

/// How long a clean stop may take in all: its tasks (the servers close
/// their connections after [`crate::incoming::CLOSE_GRACE`]), the snapshot
/// before stopping, and the calls still running. Under the 15 s that
/// `raftq serve` gives a clean stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(12);

/// How long past [`STOP_TIMEOUT`] openraft gets to stop its core.
const RAFT_STOP_SLACK: Duration = Duration::from_secs(2);

/// Drops `node` once nothing else holds it (calls that were running when
/// the servers closed end soon after Raft stops), so that its stores close
/// and their file locks are released; waits until `deadline` at most.
async fn release(node: Arc<Node>, deadline: tokio::time::Instant) {
    while Arc::strong_count(&node) > 1 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                node_id = node.id,
                holders = Arc::strong_count(&node) - 1,
                "calls still hold the stopped node; its stores close when they end"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes a snapshot of what this node applied, so that its next start loads
/// it instead of re-applying the log since the last one. Waits until
/// `deadline` at most (the stop's): a stop is never held up for long by it.
async fn snapshot_before_stopping(node: &Node, deadline: tokio::time::Instant) {
    let (applied, snapshot) = {
        let metrics = node.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.last_applied, metrics.snapshot)
    };
    let Some(applied) = applied else {
        return;
    };
    if snapshot.is_some_and(|s| s.index >= applied.index) {
        return;
    }
    if node.raft.trigger().snapshot().await.is_err() {
        return;
    }
    let waited = node
        .raft
        .wait(Some(
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        ))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied.index),
            "a snapshot before stopping",
        )
        .await;
    match waited {
        Ok(_) => tracing::info!(
            node_id = node.id,
            index = applied.index,
            "snapshot taken before stopping"
        ),
        Err(err) => {
            tracing::warn!(node_id = node.id, error = %err, "no snapshot before stopping; the next start re-applies the log")
        }
    }
}

/// Stops the node when its storage hangs: a log flush that never returns,
/// or an openraft core that does not answer (stuck in a storage call), as
/// sled does on a full disk. Without this the node would keep its ports open
/// and answer status while taking no part.
async fn watch_storage(node: Arc<Node>) {
    let mut shutdown = node.shutdown_signal();
    let mut interval = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Some(stalled) = node.log.stalled_for() {
            if stalled > LOG_FLUSH_STALL_LIMIT {
                node.fail(format!(
                    "the Raft log's flush has not returned for {}s: the data disk is full or hung",
                    stalled.as_secs()
                ));
                return;
            }
        }
        let asked = tokio::time::timeout(RAFT_CORE_ANSWER_LIMIT, node.raft.with_raft_state(|_| ()));
        tokio::select! {
            answer = asked => match answer {
                Ok(_) => {}
                Err(_) => {
                    node.fail(format!(
                        "openraft's core has not answered for {}s: a storage call is stuck (is the data disk full or hung?)",
                        RAFT_CORE_ANSWER_LIMIT.as_secs()
                    ));
                    return;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// A node the cluster refuses stops campaigning; one that takes part again
/// campaigns again.
async fn watch_standing(node: Arc<Node>) {
    let mut standing = node.identity.subscribe();
    let mut shutdown = node.shutdown_signal();
    loop {
        let member = *standing.borrow_and_update() == Standing::Member;
        node.raft.runtime_config().elect(member);
        tokio::select! {
            changed = standing.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// How often the users file is checked for a change.
pub const USERS_FILE_CHECK: Duration = Duration::from_secs(5);

/// Re-reads the users file on every `SIGHUP`, and when its modification time
/// or size changes (checked every [`USERS_FILE_CHECK`]: a Kubernetes Secret
/// updated in place, where no one can send a signal). A file that does not
/// parse is logged and the users stay as they were.
async fn reload_users(auth: Arc<crate::auth::Auth>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())
        .inspect_err(|err| tracing::warn!(error = %err, "cannot listen for SIGHUP: the users file is re-read on change only"))
        .ok();
    let stamp = |auth: &crate::auth::Auth| {
        std::fs::metadata(auth.path())
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut seen = stamp(&auth);
    let mut ticks = tokio::time::interval(USERS_FILE_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            Some(()) = async {
                match hangups.as_mut() {
                    Some(hangups) => hangups.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
            _ = ticks.tick() => {
                let now = stamp(&auth);
                if now == seen {
                    continue;
                }
                "the file changed"
            }
        };
        seen = stamp(&auth);
        match auth.reload() {
            Ok(users) => tracing::info!(users, why, "users file read again"),
            Err(err) => {
                tracing::error!(error = %err, why, "the users file was not taken; the users stay as they were")
            }
        }
    }
}

async fn serve_grpc(node: Arc<Node>, listener: TcpListener, context: PeerContext) {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<QueueServiceServer<QueueApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(raftq_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptor set built with the proto crate is valid");
    let mut shutdown = node.shutdown_signal();
    let (close_tx, close_rx) = watch::channel(false);
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(node.config.max_streams_per_connection);
    if let Some(tls) = &node.tls {
        // `Tls::load` built this same configuration at start.
        builder = match builder.tls_config(tls.server_config()) {
            Ok(builder) => builder,
            Err(err) => {
                node.fail(format!("TLS configuration refused: {err}"));
                return;
            }
        };
    }
    let authenticate = crate::auth::Auth::authenticate(node.auth.clone());
    let raft_service = RaftServiceServer::new(RaftServer::new(
        node.id,
        node.raft.clone(),
        context,
        node.tls.is_some(),
    ))
    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let queue_service = QueueServiceServer::new(QueueApi::new(node.clone()))
        .max_decoding_message_size(crate::service::queue::MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let result = builder
        .add_service(raft_service)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            queue_service,
            authenticate.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ClusterServiceServer::new(ClusterApi::new(node.clone())),
            authenticate,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(
            crate::incoming::incoming(listener, close_rx),
            crate::incoming::close_after_grace(
                async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                },
                close_tx,
            ),
        )
        .await;
    if let Err(err) = result {
        tracing::error!(node_id = node.id, error = %err, "gRPC server failed");
    }
}

/// A started node: its addresses, and the way to stop it.
pub struct NodeHandle {
    /// The node's parts.
    pub node: Arc<Node>,
    /// Where its gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where its HTTP server listens, if it has one.
    pub http_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    /// The node's own tasks, by name (for the log when one does not stop).
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl NodeHandle {
    /// Stops the servers, then Raft; returns when the stores are closed.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        self.finish().await;
    }

    /// Waits until the node has been told to stop (its shutdown future
    /// completed), then stops it cleanly. Returns an error at once when Raft
    /// stopped on its own first (a storage failure): the servers are told to
    /// stop, but the stores are not closed (a full disk can make that hang);
    /// the process should exit non-zero right away, so a supervisor restarts
    /// it or an operator looks.
    pub async fn wait(self) -> Result<()> {
        let mut signal = self.node.shutdown_signal();
        let mut metrics = self.node.raft.metrics();
        let mut failed = self.node.fatal.subscribe();
        let fatal = loop {
            let running = metrics.borrow_and_update().running_state.clone();
            if let Err(fatal) = running {
                break Some(fatal.to_string());
            }
            if let Some(why) = failed.borrow_and_update().clone() {
                break Some(why);
            }
            tokio::select! {
                _ = signal.wait_for(|stop| *stop) => break None,
                changed = metrics.changed() => if changed.is_err() {
                    break Some("raft stopped without saying why".to_string());
                },
                _ = failed.changed() => {}
            }
        };
        match fatal {
            Some(fatal) => {
                tracing::error!(node_id = self.node.id, error = %fatal, "raft stopped: this node cannot go on");
                let _ = self.shutdown_tx.send(true);
                Err(Error::Internal(format!("raft stopped: {fatal}")))
            }
            None => {
                self.shutdown().await;
                Ok(())
            }
        }
    }

    async fn finish(self) {
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        for (name, mut task) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(
                    node_id = self.node.id,
                    task = name,
                    "did not stop in time; aborted"
                );
                task.abort();
                let _ = task.await;
            }
        }
        snapshot_before_stopping(&self.node, deadline).await;
        // openraft's core stops between messages: one stuck in a storage
        // call would hold this forever.
        match tokio::time::timeout_at(deadline + RAFT_STOP_SLACK, self.node.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "raft did not stop cleanly"),
            Err(_) => tracing::error!(
                node_id = self.node.id,
                "raft did not stop in time (stuck in a storage call?); its stores stay open"
            ),
        }
        let id = self.node.id;
        release(self.node, deadline).await;
        tracing::info!(node_id = id, "node stopped");
    }
}
