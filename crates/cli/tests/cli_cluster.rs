//! End-to-end tests of the built `raftq` binary.
//!
//! Each test starts three `raftq serve` child processes on free loopback ports
//! in a tempdir and drives them with `raftq` client commands, the way an
//! operator types them. The children are killed on drop, every command runs
//! under a timeout, and every wait is bounded in time and count. When a test
//! fails, the tail of each node's log is printed.
//!
//! Run with `cargo test -p raftq-cli --test cli_cluster -- --test-threads=1`.

use std::collections::BTreeSet;
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
const RAFTQ: &str = env!("CARGO_BIN_EXE_raftq");
/// Longest a single client command may run before it is killed (the client
/// itself gives up retrying after 30 s).
const CLI_TIMEOUT: Duration = Duration::from_secs(45);
/// Longest a status probe of one node may run.
const STATUS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a `raftq serve` that should refuse to start may run.
const SERVE_REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the cluster may take to name a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a node may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between polls of a wait loop.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Upper bound on the iterations of any wait loop.
const MAX_POLLS: usize = 200;

/// Prints the start of a test phase.
fn phase(name: &str) {
    println!("== {name}");
}

// ---------------------------------------------------------------------------
// Running `raftq` client commands.
// ---------------------------------------------------------------------------

/// A finished `raftq` command.
struct Run {
    args: Vec<String>,
    status: ExitStatus,
    stdout: String,
    stderr: String,
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
    fn expect_ok(self) -> Self {
        assert!(self.status.success(), "expected success:\n{self}");
        self
    }

    /// Asserts a non-zero exit whose stderr names every one of `says`.
    fn expect_refusal(self, says: &[&str]) -> Self {
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
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The single JSON object on stdout.
    fn json(&self) -> Value {
        let mut lines = self.json_lines();
        assert_eq!(lines.len(), 1, "expected one JSON line:\n{self}");
        lines.remove(0)
    }

    /// The `body` of each delivery `recv --json` printed.
    fn bodies(&self) -> Vec<String> {
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
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Removes inherited `RAFTQ_*` variables so only the given flags count.
fn clear_raftq_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RAFTQ_") {
            command.env_remove(key);
        }
    }
}

/// Runs `raftq ARGS` with `stdin`, killing it after `timeout`. No command may
/// panic, whatever its exit.
fn raftq(args: &[&str], stdin: Option<&str>, timeout: Duration) -> Run {
    try_raftq(args, stdin, timeout).unwrap_or_else(|why| panic!("{why}"))
}

/// Like [`raftq`], but a command still running at `timeout` is killed and
/// reported as `Err`.
fn try_raftq(args: &[&str], stdin: Option<&str>, timeout: Duration) -> Result<Run, String> {
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
fn cli(cluster: &str, args: &[&str]) -> Run {
    cli_stdin(cluster, args, None)
}

/// `raftq ARGS --cluster CLUSTER` with `stdin`.
fn cli_stdin(cluster: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut all = args.to_vec();
    all.extend(["--cluster", cluster]);
    raftq(&all, stdin, CLI_TIMEOUT)
}

/// `cluster status --json` through `cluster`, if it answers.
fn status(cluster: &str) -> Option<Value> {
    let run = cli(cluster, &["cluster", "status", "--json"]);
    run.status.success().then(|| run.json())
}

/// `cluster status --json` of the node at `addr` alone, if it answers within
/// `STATUS_PROBE_TIMEOUT` (the client retries a dead address for 30 s).
fn probe_status(addr: &str) -> Option<Value> {
    let args = ["cluster", "status", "--json", "--cluster", addr];
    let run = try_raftq(&args, None, STATUS_PROBE_TIMEOUT).ok()?;
    run.status.success().then(|| run.json())
}

/// Polls `cluster status --json` through `cluster` until it names a leader
/// other than `not` and that node, asked directly, says it is the leader
/// (right after a restart a node names the leader it last knew, running or
/// not). Returns the leader's own status.
fn wait_for_leader(cluster: &str, not: Option<u64>) -> Value {
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
struct Node {
    id: u64,
    addr: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Node `id` on `addr`, its data and log under `dir`.
    fn new(dir: &Path, id: u64, addr: String, initial_cluster: &str) -> Node {
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
    fn spawn(&mut self) {
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
    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (through `kill`: the crate forbids unsafe code), then waits for
    /// the exit; falls back to SIGKILL past the timeout.
    fn sigterm(&mut self) -> Option<ExitStatus> {
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
    fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Three `raftq serve` children in a tempdir, killed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

/// `count` distinct free loopback ports (held together, then released).
fn free_ports(count: usize) -> Vec<u16> {
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
    fn start() -> Cluster {
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
            node.spawn();
        }
        let status = wait_for_leader(&cluster.addrs(), None);
        println!("   leader is node {}", status["leader"]);
        cluster
    }

    /// Every node's address, `A,B,C`.
    fn addrs(&self) -> String {
        self.addrs_without(0)
    }

    /// Every address but node `id`'s.
    fn addrs_without(&self, id: u64) -> String {
        self.nodes
            .iter()
            .filter(|n| n.id != id)
            .map(|n| n.addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node of the cluster")
    }

    /// `raftq ARGS --cluster A,B,C`.
    fn cli(&self, args: &[&str]) -> Run {
        cli(&self.addrs(), args)
    }

    /// `raftq ARGS --cluster A,B,C` with `stdin`.
    fn cli_stdin(&self, args: &[&str], stdin: &str) -> Run {
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
fn receive_until_acked(clusters: &[&str], queue: &str, want: usize) -> Vec<String> {
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

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

#[test]
fn the_cli_creates_a_queue_sends_receives_and_acks_against_three_serve_processes() {
    phase("start three serve processes");
    let cluster = Cluster::start();

    phase("queue create jobs");
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();

    phase("send one message as an argument and three as stdin lines");
    let run = cluster.cli(&["send", "jobs", "hello"]).expect_ok();
    assert_eq!(run.stdout.lines().count(), 1, "one id:\n{run}");
    let run = cluster
        .cli_stdin(&["send", "jobs"], "one\ntwo\nthree\n")
        .expect_ok();
    assert_eq!(run.stdout.lines().count(), 3, "three ids:\n{run}");

    phase("recv --max 10 --ack --json returns the four bodies in order");
    let run = cluster
        .cli(&["recv", "jobs", "--max", "10", "--ack", "--json"])
        .expect_ok();
    assert_eq!(run.bodies(), ["hello", "one", "two", "three"], "{run}");
    let deliveries = run.json_lines();
    for delivery in &deliveries {
        assert!(delivery["receipt"].is_string(), "{delivery}");
        assert_eq!(delivery["delivery_count"], 1, "{delivery}");
    }
    let ids: Vec<u64> = deliveries.iter().filter_map(|d| d["id"].as_u64()).collect();
    assert_eq!(ids.len(), 4, "{run}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");

    phase("a second recv --wait 1s finds nothing");
    let run = cluster
        .cli(&["recv", "jobs", "--wait", "1s", "--json"])
        .expect_ok();
    assert!(run.bodies().is_empty(), "{run}");

    phase("queue stats jobs --json counts four acks");
    let stats = cluster
        .cli(&["queue", "stats", "jobs", "--json"])
        .expect_ok()
        .json();
    assert_eq!(stats["counters"]["enqueued"], 4, "{stats}");
    assert_eq!(stats["counters"]["acked"], 4, "{stats}");
    assert_eq!(
        (&stats["ready"], &stats["in_flight"]),
        (&0.into(), &0.into()),
        "{stats}"
    );

    phase("cluster status --json names a leader among three members");
    let status = cluster
        .cli(&["cluster", "status", "--json"])
        .expect_ok()
        .json();
    let members: Vec<u64> = status["members"]
        .as_array()
        .expect("members is an array")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(members, [1, 2, 3], "{status}");
    let leader = status["leader"].as_u64().expect("a leader");
    assert!(members.contains(&leader), "{status}");
}

#[test]
fn after_sigkill_of_the_leader_the_cli_still_works_and_nothing_acknowledged_is_lost() {
    phase("start three serve processes and create jobs");
    let mut cluster = Cluster::start();
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();

    phase("send 20 messages, one per stdin line, all confirmed");
    let sent: Vec<String> = (1..=20).map(|n| format!("message-{n:02}")).collect();
    let run = cluster
        .cli_stdin(&["send", "jobs"], &(sent.join("\n") + "\n"))
        .expect_ok();
    assert_eq!(run.stdout.lines().count(), 20, "twenty ids:\n{run}");

    phase("SIGKILL the leader");
    let killed = wait_for_leader(&cluster.addrs(), None)["leader"]
        .as_u64()
        .expect("a leader");
    let survivors = cluster.addrs_without(killed);
    println!("   killing node {killed}; survivors {survivors}");
    cluster.node(killed).sigkill();

    phase("recv --ack through the survivors and the full list until all 20 are back");
    let acked = receive_until_acked(&[&survivors, &cluster.addrs()], "jobs", sent.len());
    let distinct: BTreeSet<&String> = acked.iter().collect();
    assert_eq!(
        distinct.len(),
        acked.len(),
        "a body was acked twice: {acked:?}"
    );
    let mut sorted = acked.clone();
    sorted.sort();
    assert_eq!(sorted, sent, "exactly the 20 confirmed bodies");

    phase("a new leader, not the killed node, through the survivors and the full list");
    let status = wait_for_leader(&survivors, Some(killed));
    println!("   new leader is node {}", status["leader"]);
    let status = wait_for_leader(&cluster.addrs(), Some(killed));
    assert_ne!(status["leader"].as_u64(), Some(killed), "{status}");

    phase("send and receive one more through the full list, dead address included");
    cluster.cli(&["send", "jobs", "after-failover"]).expect_ok();
    let run = cluster
        .cli(&[
            "recv", "jobs", "--max", "100", "--wait", "2s", "--ack", "--json",
        ])
        .expect_ok();
    assert_eq!(run.bodies(), ["after-failover"], "{run}");
    let stats = cluster
        .cli(&["queue", "stats", "jobs", "--json"])
        .expect_ok()
        .json();
    assert_eq!(stats["counters"]["acked"], 21, "{stats}");
    assert_eq!(
        (&stats["ready"], &stats["in_flight"]),
        (&0.into(), &0.into()),
        "{stats}"
    );

    phase("restart the killed node with the same command line; it rejoins and catches up");
    cluster.node(killed).spawn();
    let own = cluster.node(killed).addr.clone();
    wait_until_caught_up(&own, &survivors);
}

/// Polls the node at `own` until it names a leader and has applied as much as
/// the leader seen through `others`, with the same state digest.
fn wait_until_caught_up(own: &str, others: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (None, None);
    for _ in 0..MAX_POLLS {
        let mine = status(own);
        let theirs = status(others);
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

#[test]
fn bad_input_gets_a_clear_error_and_a_nonzero_exit() {
    phase("start three serve processes and create jobs");
    let cluster = Cluster::start();
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();

    phase("recv from a queue that does not exist");
    cluster.cli(&["recv", "nope"]).expect_refusal(&[
        "nope",
        "does not exist",
        "raftq queue create",
    ]);

    phase("queue create with an invalid name");
    cluster
        .cli(&["queue", "create", "bad name!"])
        .expect_refusal(&["bad name!", "queue name"]);

    phase("ack an unknown receipt");
    cluster
        .cli(&["ack", "jobs", "999-1"])
        .expect_refusal(&["999-1", "receipt"]);

    phase("send --file that cannot be read");
    cluster
        .cli(&["send", "jobs", "--file", "/nonexistent"])
        .expect_refusal(&["cannot read", "/nonexistent"]);

    phase("cluster remove-node of a node that is not a member");
    cluster
        .cli(&["cluster", "remove-node", "42"])
        .expect_refusal(&["42", "not a member"]);

    refusals_of_serve(cluster.dir.path());
}

/// `raftq serve` refuses a broken configuration before it starts anything.
fn refusals_of_serve(dir: &Path) {
    let data_dir = dir.join("refused");
    let data_dir = data_dir.to_string_lossy();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", &data_dir];
        args.extend(extra);
        raftq(&args, None, SERVE_REFUSAL_TIMEOUT)
    };

    phase("serve --id 0");
    serve(&["--id", "0"]).expect_refusal(&["id must be at least 1"]);

    phase("serve --initial-cluster x=y");
    serve(&["--id", "1", "--initial-cluster", "x=y"]).expect_refusal(&[
        "--initial-cluster",
        "x=y",
        "not a node id",
    ]);

    phase("serve --config with an unknown key");
    let config = dir.join("unknown-key.toml");
    std::fs::write(&config, "id = 1\nheartbeat_msec = 200\n").expect("write the config file");
    serve(&["--config", &config.to_string_lossy()])
        .expect_refusal(&["unknown-key.toml", "heartbeat_msec"]);
}

#[test]
fn removing_a_node_that_is_not_a_member_gives_no_queue_hint() {
    // Regression: every NOT_FOUND used to get the hint "create it with
    // `raftq queue create NAME`", including "node 42 is not a member".
    phase("start three serve processes");
    let cluster = Cluster::start();

    phase("cluster remove-node 42");
    let run = cluster
        .cli(&["cluster", "remove-node", "42"])
        .expect_refusal(&["not a member"]);
    assert!(
        !run.stderr.contains("queue create"),
        "misleading hint:\n{run}"
    );
}

#[test]
fn a_second_start_keeps_the_data() {
    phase("start three serve processes, create jobs, send five messages");
    let mut cluster = Cluster::start();
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();
    let sent = ["m1", "m2", "m3", "m4", "m5"];
    cluster
        .cli_stdin(&["send", "jobs"], &(sent.join("\n") + "\n"))
        .expect_ok();

    phase("stop all three with SIGTERM");
    for node in &mut cluster.nodes {
        let status = node.sigterm();
        println!("   node {} exited: {status:?}", node.id);
        let status = status.unwrap_or_else(|| panic!("node {} ignored SIGTERM", node.id));
        assert!(
            status.success(),
            "node {} exited with {status} after SIGTERM",
            node.id
        );
    }

    phase("start them again with the same command lines");
    for node in &mut cluster.nodes {
        node.spawn();
    }
    let status = wait_for_leader(&cluster.addrs(), None);
    println!("   leader is node {}", status["leader"]);

    phase("recv --max 10 --ack --json returns the five bodies");
    let run = cluster
        .cli(&[
            "recv", "jobs", "--max", "10", "--wait", "2s", "--ack", "--json",
        ])
        .expect_ok();
    assert_eq!(run.bodies(), sent, "{run}");
}
