//! The harness the `raftq` binary's end-to-end tests share: running client
//! commands under a timeout, and a cluster of `raftq serve` children in a
//! tempdir, killed on drop, whose logs are printed when a test fails.

#![allow(dead_code)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const RAFTQ: &str = env!("CARGO_BIN_EXE_raftq");
/// Longest a single client command may run before it is killed (the client
/// itself gives up retrying after 30 s).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(45);
/// Longest a status probe of one node may run.
pub const STATUS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a `raftq serve` that should refuse to start may run.
pub const SERVE_REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the cluster may take to name a leader.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a node may take to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between polls of a wait loop.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Upper bound on the iterations of any wait loop.
pub const MAX_POLLS: usize = 200;

/// Prints the start of a test phase.
pub fn phase(name: &str) {
    println!("== {name}");
}

// ---------------------------------------------------------------------------
// Running `raftq` client commands.
// ---------------------------------------------------------------------------

/// A finished `raftq` command.
pub struct Run {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "raftq {}\n  exit: {}\n  stdout: {}\n  stderr: {}",
            self.args.join(" "),
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

impl Run {
    pub fn expect_ok(self) -> Self {
        assert!(self.status.success(), "expected success:\n{self}");
        self
    }

    /// Asserts a non-zero exit whose stderr names every one of `says`.
    pub fn expect_refusal(self, says: &[&str]) -> Self {
        assert!(!self.status.success(), "expected a non-zero exit:\n{self}");
        for word in says {
            assert!(
                self.stderr.contains(word),
                "stderr should say {word:?}:\n{self}"
            );
        }
        self
    }

    /// Each stdout line parsed as JSON (lines that are not JSON are skipped).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The single JSON object on stdout.
    pub fn json(&self) -> Value {
        let mut lines = self.json_lines();
        assert_eq!(lines.len(), 1, "expected one JSON line:\n{self}");
        lines.remove(0)
    }

    /// The `body` of each delivery `recv --json` printed.
    pub fn bodies(&self) -> Vec<String> {
        self.json_lines()
            .iter()
            .map(|d| {
                d["body"]
                    .as_str()
                    .expect("a delivery has a body")
                    .to_string()
            })
            .collect()
    }
}

/// Reads a child's pipe to the end on its own thread.
pub fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Removes inherited `RAFTQ_*` variables so only the given flags count.
pub fn clear_raftq_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RAFTQ_") {
            command.env_remove(key);
        }
    }
}

/// Runs `raftq ARGS` with `stdin`, killing it after `timeout`. No command may
/// panic, whatever its exit.
pub fn raftq(args: &[&str], stdin: Option<&str>, timeout: Duration) -> Run {
    try_raftq(args, stdin, timeout).unwrap_or_else(|why| panic!("{why}"))
}

/// Like [`raftq`], but a command still running at `timeout` is killed and
/// reported as `Err`.
pub fn try_raftq(args: &[&str], stdin: Option<&str>, timeout: Duration) -> Result<Run, String> {
    let mut command = Command::new(RAFTQ);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clear_raftq_env(&mut command);
    let mut child = command.spawn().expect("the raftq binary starts");
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        if let Err(err) = pipe.write_all(text.as_bytes()) {
            println!("   (raftq did not read all of stdin: {err})");
        }
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on raftq") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let Some(status) = status else {
        return Err(format!(
            "raftq {args:?} ran past {timeout:?}; killed.\nstdout: {stdout}\nstderr: {stderr}"
        ));
    };
    let run = Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        status,
        stdout,
        stderr,
    };
    assert!(!run.stderr.contains("panicked"), "raftq panicked:\n{run}");
    Ok(run)
}

/// `raftq ARGS --cluster CLUSTER`.
pub fn cli(cluster: &str, args: &[&str]) -> Run {
    cli_stdin(cluster, args, None)
}

/// `raftq ARGS --cluster CLUSTER` with `stdin`.
pub fn cli_stdin(cluster: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut all = args.to_vec();
    all.extend(["--cluster", cluster]);
    raftq(&all, stdin, CLI_TIMEOUT)
}

/// `cluster status --json` through `cluster`, if it answers.
pub fn status(cluster: &str) -> Option<Value> {
    let run = cli(cluster, &["cluster", "status", "--json"]);
    run.status.success().then(|| run.json())
}

/// `cluster status --digest --json` of the first node of `cluster`.
pub fn status_with_digest(cluster: &str) -> Option<Value> {
    let run = cli(cluster, &["cluster", "status", "--digest", "--json"]);
    run.status.success().then(|| run.json())
}

/// `cluster status --json` of the node at `addr` alone, if it answers within
/// `STATUS_PROBE_TIMEOUT` (the client retries a dead address for 30 s).
pub fn probe_status(addr: &str) -> Option<Value> {
    let args = ["cluster", "status", "--json", "--cluster", addr];
    let run = try_raftq(&args, None, STATUS_PROBE_TIMEOUT).ok()?;
    run.status.success().then(|| run.json())
}

/// Polls `cluster status --json` through `cluster` until it names a leader
/// other than `not` and that node, asked directly, says it is the leader
/// (right after a restart a node names the leader it last knew, running or
/// not). Returns the leader's own status.
pub fn wait_for_leader(cluster: &str, not: Option<u64>) -> Value {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let mut last = None;
    for _ in 0..MAX_POLLS {
        if let Some(status) = status(cluster) {
            let named = status["leader"].as_u64().filter(|&id| Some(id) != not);
            let own = match (named, status["leader_addr"].as_str()) {
                (Some(_), Some(addr)) => probe_status(addr),
                _ => None,
            };
            if let Some(own) = own.filter(|own| own["state"] == "leader") {
                assert_eq!(
                    own["node_id"], own["leader"],
                    "a leader names itself: {own}"
                );
                return own;
            }
            last = Some(status);
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(POLL_INTERVAL);
    }
    panic!(
        "no leader (other than {not:?}) through {cluster} within {LEADER_TIMEOUT:?}; \
         last status: {last:?}"
    );
}

// ---------------------------------------------------------------------------
// The cluster of `raftq serve` children.
// ---------------------------------------------------------------------------

/// One `raftq serve` child and the command line that starts it.
pub struct Node {
    pub id: u64,
    pub addr: String,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    /// Node `id` on `addr`, its data and log under `dir`.
    pub fn new(dir: &Path, id: u64, addr: String, initial_cluster: &str) -> Node {
        let data_dir = dir.join(format!("node-{id}"));
        let args = [
            "serve",
            "--id",
            &id.to_string(),
            "--listen",
            &addr,
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--initial-cluster",
            initial_cluster,
            "--heartbeat-ms",
            "200",
            "--election-timeout-min-ms",
            "800",
            "--election-timeout-max-ms",
            "1600",
        ]
        .map(String::from)
        .to_vec();
        Node {
            id,
            addr,
            args,
            log: dir.join(format!("node-{id}.log")),
            child: None,
        }
    }

    /// Starts the node; stdout and stderr append to its log file.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the node's log");
        let mut command = Command::new(RAFTQ);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        clear_raftq_env(&mut command);
        let child = command.spawn().expect("raftq serve starts");
        println!("   node {} on {} is pid {}", self.id, self.addr, child.id());
        self.child = Some(child);
    }

    /// SIGKILL, then reap.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (through `kill`: the crate forbids unsafe code), then waits for
    /// the exit; falls back to SIGKILL past the timeout.
    pub fn sigterm(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("the node is running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait on raftq serve") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Three `raftq serve` children in a tempdir, killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

/// `count` distinct free loopback ports (held together, then released).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl Cluster {
    /// Starts three nodes and waits until the cluster names a leader.
    pub fn start() -> Cluster {
        Cluster::start_with(|_, _| {})
    }

    /// Starts three nodes, letting `setup` change each node's command line
    /// (and prepare its data dir, given as the second argument) first.
    pub fn start_with(mut setup: impl FnMut(&mut Node, &Path)) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("raftq-cli-cluster-")
            .tempdir()
            .expect("tempdir");
        let addrs: Vec<String> = free_ports(3)
            .into_iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let initial_cluster = (1..)
            .zip(&addrs)
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (1..)
            .zip(addrs)
            .map(|(id, addr)| Node::new(dir.path(), id, addr, &initial_cluster))
            .collect();
        let mut cluster = Cluster { dir, nodes };
        println!("   cluster in {}", cluster.dir.path().display());
        for node in &mut cluster.nodes {
            let data_dir = cluster.dir.path().join(format!("node-{}", node.id));
            setup(node, &data_dir);
            node.spawn();
        }
        let status = wait_for_leader(&cluster.addrs(), None);
        println!("   leader is node {}", status["leader"]);
        cluster
    }

    /// Every node's address, `A,B,C`.
    pub fn addrs(&self) -> String {
        self.addrs_without(0)
    }

    /// Every address but node `id`'s.
    pub fn addrs_without(&self, id: u64) -> String {
        self.nodes
            .iter()
            .filter(|n| n.id != id)
            .map(|n| n.addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node of the cluster")
    }

    /// `raftq ARGS --cluster A,B,C`.
    pub fn cli(&self, args: &[&str]) -> Run {
        cli(&self.addrs(), args)
    }

    /// `raftq ARGS --cluster A,B,C` with `stdin`.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Run {
        cli_stdin(&self.addrs(), args, Some(stdin))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            for node in &self.nodes {
                eprintln!("--- node {} log tail ---\n{}", node.id, node.log_tail(40));
            }
        }
        for node in &mut self.nodes {
            node.sigkill();
        }
    }
}

/// Receives with `recv --max 100 --wait 2s --ack --json` through each of
/// `clusters` in turn until `want` distinct bodies were received and acked by
/// a command that exited 0; returns those bodies in the order received.
///
/// A command that printed messages but then failed (its ack did not go
/// through) leaves them leased; `--visibility 5s` brings them back soon.
pub fn receive_until_acked(clusters: &[&str], queue: &str, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked = Vec::new();
    for attempt in 0..30 {
        let cluster = clusters[attempt % clusters.len()];
        let run = cli(
            cluster,
            &[
                "recv",
                queue,
                "--max",
                "100",
                "--wait",
                "2s",
                "--visibility",
                "5s",
                "--ack",
                "--json",
            ],
        );
        let bodies = run.bodies();
        println!(
            "   attempt {attempt} through {cluster}: {}, {} messages",
            run.status,
            bodies.len()
        );
        if run.status.success() {
            acked.extend(bodies);
        } else {
            println!("   (not acked, will come back: {bodies:?})\n{run}");
        }
        if acked.len() >= want || Instant::now() >= deadline {
            break;
        }
    }
    acked
}

/// Polls the node at `own` until it names a leader and has applied as much as
/// the leader seen through `others`, with the same state digest.
pub fn wait_until_caught_up(own: &str, others: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (None, None);
    for _ in 0..MAX_POLLS {
        let mine = status_with_digest(own);
        let theirs = status_with_digest(others);
        if let (Some(mine), Some(theirs)) = (&mine, &theirs) {
            let applied = |s: &Value| s["applied_index"].as_u64().unwrap_or(0);
            if mine["leader"].is_u64() && applied(mine) >= applied(theirs) {
                println!(
                    "   node {} is back: leader {}, applied {} (others {})",
                    mine["node_id"],
                    mine["leader"],
                    applied(mine),
                    applied(theirs)
                );
                if applied(mine) == applied(theirs) {
                    assert_eq!(
                        mine["state_digest"], theirs["state_digest"],
                        "same applied index, same state"
                    );
                }
                return;
            }
        }
        last = (mine, theirs);
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(POLL_INTERVAL);
    }
    panic!("{own} did not catch up with {others}; last (own, others) status: {last:?}");
}
