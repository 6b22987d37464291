//! The `docker` backend: the compose cluster of `deploy/compose.yaml`,
//! already running, faulted from the host with the Docker CLI.
//!
//! - kill is `docker kill` (SIGKILL), start is `docker start`: the node comes
//!   back with its volume, at its fixed address;
//! - pause and resume are `docker pause` / `docker unpause` (the cgroup
//!   freezer: the node keeps its sockets and answers nothing);
//! - a cut is a pair of `DROP` rules, one in each node's network namespace
//!   (`nsenter -t <pid> -n iptables -A INPUT -s <peer> -j DROP`), entered
//!   from the host because the `FROM scratch` image has no iptables. Packets
//!   are dropped, not refused. Clients reach the nodes from the bridge's
//!   gateway, never cut off.
//!
//! Invariants:
//!
//! - every rule this backend added is recorded with the pid whose network
//!   namespace holds it; a container that died took its namespace and its
//!   rules with it, so mending deletes only rules that still exist;
//! - the cuts in force are kept: a node started while cuts are in force gets
//!   its own side of them again (its peers' sides never went away);
//! - every call is idempotent: killing a stopped node, starting a running
//!   one, cutting a cut link do nothing.
//!
//! It does not start or stop the compose project (`deploy/cluster.sh` does),
//! and it needs root on a Linux host whose bridge reaches the containers.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{Backend, Cut};
use crate::error::{Error, Result};

/// The gRPC port every node listens on inside its container.
const NODE_PORT: u16 = 7400;

/// How long `start` waits for Docker to report the container running: a
/// start that takes longer is a broken engine, not a slow one.
const START_LIMIT: Duration = Duration::from_secs(30);

/// One node's container.
struct DockerNode {
    /// The container id.
    container: String,
    /// The node's address on the project network, which peers see as the
    /// source of its packets.
    ip: String,
    /// The DROP rules this backend added in the container's network
    /// namespace: the pid that namespace belongs to, and the peer addresses
    /// dropped there.
    rules: Option<(u32, BTreeSet<String>)>,
}

/// What `docker inspect` says about a container's process.
#[derive(Debug, PartialEq, Eq)]
struct State {
    running: bool,
    paused: bool,
    restarting: bool,
    /// 0 when it is not running.
    pid: u32,
}

/// A running compose project of raftq nodes, faulted through Docker. See the
/// module doc.
pub struct DockerCluster {
    project: String,
    nodes: BTreeMap<u64, DockerNode>,
    /// The links cut now, so that a node started while they are in force
    /// gets them again.
    cuts: BTreeSet<Cut>,
    /// Nodes this backend killed or paused and has not brought back: on
    /// drop they are brought back, so an aborted drill leaves a whole
    /// cluster.
    killed: BTreeSet<u64>,
    paused: BTreeSet<u64>,
}

/// Runs `program args`, returning its output whatever its exit status; an
/// error only when it cannot be run at all.
fn run(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program).args(args).output().map_err(|err| {
        let hint = match program {
            "docker" => "install Docker (apt-get install docker.io) and start dockerd",
            "nsenter" => "apt-get install util-linux",
            _ => "is it installed and on PATH?",
        };
        Error::Setup(format!("cannot run {program}: {err} ({hint})"))
    })
}

/// Runs `program args`; its trimmed stdout, or an error naming the command
/// and what it printed.
fn checked(program: &str, args: &[&str]) -> Result<String> {
    let output = run(program, args)?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_string());
    }
    Err(Error::Setup(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

fn docker(args: &[&str]) -> Result<String> {
    checked("docker", args)
}

/// Reads `running paused restarting pid` as `docker inspect` prints it.
fn parse_state(line: &str) -> Option<State> {
    let mut words = line.split_whitespace();
    let running = words.next()?.parse().ok()?;
    let paused = words.next()?.parse().ok()?;
    let restarting = words.next()?.parse().ok()?;
    let pid = words.next()?.parse().ok()?;
    Some(State {
        running,
        paused,
        restarting,
        pid,
    })
}

/// The node's address among `network=configured/current` words, one per
/// network the container is on (`docker inspect`, see [`DockerCluster::attach`]):
/// the fixed address compose configured (kept while the container is
/// stopped), else the current one, on the network whose name ends in
/// `_raftq`, or on the only network.
fn parse_ip(networks: &str) -> Option<String> {
    let entries: Vec<(&str, &str, &str)> = networks
        .split_whitespace()
        .filter_map(|word| {
            let (name, addrs) = word.split_once('=')?;
            let (configured, current) = addrs.split_once('/')?;
            Some((name, configured, current))
        })
        .collect();
    let entry = match entries.as_slice() {
        [only] => only,
        many => many.iter().find(|(name, _, _)| name.ends_with("_raftq"))?,
    };
    [entry.1, entry.2]
        .into_iter()
        .find(|ip| !ip.is_empty())
        .map(str::to_string)
}

impl DockerCluster {
    /// Attaches to the running compose project `project` of `nodes` nodes
    /// (services `raftq-1` to `raftq-N`), after checking that every
    /// container runs and that iptables works in their network namespaces.
    pub fn attach(project: &str, nodes: u64) -> Result<Self> {
        if !(1..=9).contains(&nodes) {
            return Err(Error::Setup(format!(
                "a compose cluster has 1 to 9 nodes, not {nodes}"
            )));
        }
        let up = format!("start it with `RAFTQ_PROJECT={project} deploy/cluster.sh up {nodes}`");
        docker(&["info", "--format", "{{.ServerVersion}}"]).map_err(|err| {
            Error::Setup(format!(
                "the Docker engine does not answer (is dockerd running, may this user use it?): {err}"
            ))
        })?;
        let mut cluster = DockerCluster {
            project: project.to_string(),
            nodes: BTreeMap::new(),
            cuts: BTreeSet::new(),
            killed: BTreeSet::new(),
            paused: BTreeSet::new(),
        };
        for id in 1..=nodes {
            let project_label = format!("label=com.docker.compose.project={project}");
            let service_label = format!("label=com.docker.compose.service=raftq-{id}");
            let found = docker(&[
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &project_label,
                "--filter",
                &service_label,
            ])?;
            let containers: Vec<&str> = found.lines().collect();
            let container = match containers.as_slice() {
                [one] => one.to_string(),
                [] => {
                    return Err(Error::Setup(format!(
                        "no container for node {id} (service raftq-{id}) in compose project {project}: {up}"
                    )))
                }
                many => {
                    return Err(Error::Setup(format!(
                        "{} containers for service raftq-{id} in compose project {project}; remove the strays (`RAFTQ_PROJECT={project} deploy/cluster.sh down`, then up)",
                        many.len()
                    )))
                }
            };
            let networks = docker(&[
                "inspect",
                "-f",
                "{{range $name, $net := .NetworkSettings.Networks}}{{$name}}={{if $net.IPAMConfig}}{{$net.IPAMConfig.IPv4Address}}{{end}}/{{$net.IPAddress}} {{end}}",
                &container,
            ])?;
            let ip = parse_ip(&networks).ok_or_else(|| {
                Error::Setup(format!(
                    "node {id}'s container {} has no address on the project network ({networks:?})",
                    short(&container)
                ))
            })?;
            let state = state_of(&container)?;
            if !state.running || state.paused {
                return Err(Error::Setup(format!(
                    "node {id}'s container {} is {}: every node must run before the drill ({up}, or `docker start`/`docker unpause` it)",
                    short(&container),
                    if state.paused { "paused" } else { "not running" }
                )));
            }
            cluster.nodes.insert(
                id,
                DockerNode {
                    container,
                    ip,
                    rules: None,
                },
            );
        }
        cluster.preflight()?;
        Ok(cluster)
    }

    /// Fails early, with what to do, when cuts could not be made: no
    /// iptables on the host, no nsenter, not root.
    fn preflight(&self) -> Result<()> {
        if run("iptables", &["--version"]).is_err() {
            return Err(Error::Setup(
                "the docker nemesis cuts links with the host's iptables, run inside each container's network namespace, and there is no iptables: apt-get install iptables".into(),
            ));
        }
        let (id, node) = self
            .nodes
            .iter()
            .next()
            .expect("attach checked that there is at least one node");
        let pid = state_of(&node.container)?.pid.to_string();
        checked("nsenter", &["-t", &pid, "-n", "iptables", "-w", "-S", "INPUT"]).map_err(|err| {
            Error::Setup(format!(
                "cannot list node {id}'s firewall rules in its network namespace; the docker nemesis needs root (nsenter) and the host's iptables: {err}"
            ))
        })?;
        Ok(())
    }

    fn node(&self, id: u64) -> Result<&DockerNode> {
        self.nodes.get(&id).ok_or_else(|| {
            Error::Setup(format!("no node {id} in compose project {}", self.project))
        })
    }

    /// Adds, in node `id`'s namespace, a DROP rule for packets from each
    /// of `peers` that it does not drop yet. A node that is not running has
    /// no namespace: nothing to do until it starts.
    fn drop_from(&mut self, id: u64, peers: &[u64]) -> Result<()> {
        let peer_ips = peers
            .iter()
            .map(|peer| Ok(self.node(*peer)?.ip.clone()))
            .collect::<Result<Vec<String>>>()?;
        let container = self.node(id)?.container.clone();
        let state = state_of(&container)?;
        if !state.running || state.pid == 0 {
            return Ok(());
        }
        let node = self.nodes.get_mut(&id).expect("node() found it");
        if node.rules.as_ref().map(|(pid, _)| *pid) != Some(state.pid) {
            // A new process, a new namespace: whatever was added is gone.
            node.rules = Some((state.pid, BTreeSet::new()));
        }
        let (_, dropped) = node.rules.as_mut().expect("set just above");
        for ip in peer_ips {
            if dropped.contains(&ip) {
                continue;
            }
            iptables(state.pid, "-A", &ip).map_err(|err| {
                Error::Setup(format!("cannot cut node {id} off from {ip}: {err}"))
            })?;
            dropped.insert(ip);
        }
        Ok(())
    }

    /// Gives node `id` its side of every cut in force.
    fn reapply(&mut self, id: u64) -> Result<()> {
        let peers: Vec<u64> = self
            .cuts
            .iter()
            .filter_map(|(a, b)| match (*a == id, *b == id) {
                (true, _) => Some(*b),
                (_, true) => Some(*a),
                _ => None,
            })
            .collect();
        if peers.is_empty() {
            return Ok(());
        }
        self.drop_from(id, &peers)
    }
}

/// Adds (`-A`) or deletes (`-D`) the rule dropping packets from `ip` in the
/// network namespace of process `pid`.
fn iptables(pid: u32, op: &str, ip: &str) -> Result<String> {
    let pid = pid.to_string();
    checked(
        "nsenter",
        &[
            "-t", &pid, "-n", "iptables", "-w", op, "INPUT", "-s", ip, "-j", "DROP",
        ],
    )
}

fn state_of(container: &str) -> Result<State> {
    let line = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.State.Paused}} {{.State.Restarting}} {{.State.Pid}}",
        container,
    ])?;
    parse_state(&line).ok_or_else(|| {
        Error::Setup(format!(
            "cannot read the state of container {}: {line:?}",
            short(container)
        ))
    })
}

fn short(container: &str) -> &str {
    &container[..container.len().min(12)]
}

impl Backend for DockerCluster {
    fn name(&self) -> &'static str {
        "compose cluster"
    }

    fn members(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .map(|(id, node)| (*id, format!("{}:{NODE_PORT}", node.ip)))
            .collect()
    }

    fn kill(&mut self, id: u64) -> Result<()> {
        let container = self.node(id)?.container.clone();
        if state_of(&container)?.running {
            // `docker kill` also ends a paused container. Docker counts a
            // killed container as stopped by hand: `unless-stopped` does not
            // bring it back.
            docker(&["kill", &container])?;
        }
        self.killed.insert(id);
        self.paused.remove(&id);
        self.nodes.get_mut(&id).expect("node() found it").rules = None;
        Ok(())
    }

    fn start(&mut self, id: u64) -> Result<()> {
        let container = self.node(id)?.container.clone();
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let state = state_of(&container)?;
            if state.running && !state.restarting {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Setup(format!(
                    "node {id}'s container {} did not run within {} s of `docker start`; see `docker logs {}`",
                    short(&container),
                    START_LIMIT.as_secs(),
                    short(&container)
                )));
            }
            if !state.restarting {
                docker(&["start", &container])?;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.killed.remove(&id);
        self.reapply(id)
    }

    fn pause(&mut self, id: u64) -> Result<()> {
        let container = self.node(id)?.container.clone();
        let state = state_of(&container)?;
        if state.running && !state.paused {
            docker(&["pause", &container])?;
            self.paused.insert(id);
        }
        Ok(())
    }

    fn resume(&mut self, id: u64) -> Result<()> {
        let container = self.node(id)?.container.clone();
        if state_of(&container)?.paused {
            docker(&["unpause", &container])?;
        }
        self.paused.remove(&id);
        Ok(())
    }

    fn cut(&mut self, cuts: &[Cut]) -> Result<()> {
        for &(a, b) in cuts {
            self.node(a)?;
            self.node(b)?;
            self.cuts.insert((a.min(b), a.max(b)));
            self.drop_from(a, &[b])?;
            self.drop_from(b, &[a])?;
        }
        Ok(())
    }

    fn mend(&mut self) -> Result<()> {
        self.cuts.clear();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.get_mut(&id).expect("ids come from the map");
            let Some((pid, dropped)) = node.rules.take() else {
                continue;
            };
            let state = state_of(&node.container)?;
            if !state.running || state.pid != pid {
                continue; // The namespace and its rules are gone.
            }
            for ip in &dropped {
                iptables(pid, "-D", ip).map_err(|err| {
                    Error::Setup(format!("cannot mend node {id}'s link to {ip}: {err}"))
                })?;
            }
        }
        Ok(())
    }
}

impl Drop for DockerCluster {
    /// Undoes what an aborted drill left in force, as well as it can: the
    /// cluster outlives the drill. After a drill that healed, does nothing.
    fn drop(&mut self) {
        if let Err(err) = self.mend() {
            tracing::warn!(error = %err, "could not mend the compose cluster's links");
        }
        for id in std::mem::take(&mut self.paused) {
            if let Err(err) = self.resume(id) {
                tracing::warn!(node = id, error = %err, "could not resume the node");
            }
        }
        for id in std::mem::take(&mut self.killed) {
            if let Err(err) = self.start(id) {
                tracing::warn!(node = id, error = %err, "could not start the node");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_output_gives_the_state_and_the_project_address() {
        assert_eq!(
            parse_state("true false false 4242"),
            Some(State {
                running: true,
                paused: false,
                restarting: false,
                pid: 4242
            })
        );
        assert_eq!(parse_state("no value"), None);
        // Running: both addresses; stopped: the configured one only.
        assert_eq!(
            parse_ip("raftq-chaos_raftq=172.28.0.12/172.28.0.12 "),
            Some("172.28.0.12".into())
        );
        assert_eq!(
            parse_ip("raftq_raftq=172.28.0.13/ "),
            Some("172.28.0.13".into())
        );
        assert_eq!(
            parse_ip("bridge=/172.17.0.2 raftq_raftq=/172.28.0.140"),
            Some("172.28.0.140".into())
        );
        assert_eq!(parse_ip("bridge=/172.17.0.2 other=/10.0.0.2"), None);
        assert_eq!(parse_ip(""), None);
    }

    /// The compose project the real test starts; not `raftq-chaos`, so it
    /// never removes a drill's cluster.
    const TEST_PROJECT: &str = "raftq-nemesis-test";

    /// A compose cluster started by `deploy/cluster.sh`, removed on drop.
    struct Project(std::path::PathBuf);

    impl Drop for Project {
        fn drop(&mut self) {
            let _ = Command::new(&self.0)
                .arg("down")
                .env("RAFTQ_PROJECT", TEST_PROJECT)
                .output();
        }
    }

    /// Why the real test cannot run here, if it cannot.
    fn skip_reason() -> Option<String> {
        let works = |program: &str, args: &[&str]| {
            run(program, args).is_ok_and(|output| output.status.success())
        };
        if !works("docker", &["info"]) {
            return Some("no Docker engine answers".into());
        }
        if !works("docker", &["image", "inspect", "raftq:dev"]) {
            return Some("no image raftq:dev (deploy/build-image.sh builds it)".into());
        }
        if checked("id", &["-u"]).ok().as_deref() != Some("0") {
            return Some("not root (the cuts need nsenter)".into());
        }
        if !works("iptables", &["--version"]) {
            return Some("no iptables on the host".into());
        }
        let others = docker(&[
            "ps",
            "-q",
            "--filter",
            "label=com.docker.compose.service=raftq-1",
        ]);
        if others.map_or(true, |ids| !ids.is_empty()) {
            return Some("a raftq compose cluster runs already (same subnet and ports)".into());
        }
        None
    }

    /// The peers node `id` drops packets from, as iptables lists them.
    fn dropped_by(cluster: &DockerCluster, id: u64) -> Vec<String> {
        let pid = state_of(&cluster.nodes[&id].container)
            .expect("inspect")
            .pid;
        let rules = checked(
            "nsenter",
            &["-t", &pid.to_string(), "-n", "iptables", "-S", "INPUT"],
        )
        .expect("iptables lists the rules");
        rules
            .lines()
            .filter_map(|line| line.strip_prefix("-A INPUT -s "))
            .filter_map(|rest| rest.strip_suffix("/32 -j DROP"))
            .map(str::to_string)
            .collect()
    }

    /// A real compose cluster: cuts survive a kill and a start of one side,
    /// every call is idempotent, and mending leaves no rule behind. Skips
    /// (prints why, passes) where Docker, the image or root is missing.
    #[test]
    fn cuts_follow_a_restarted_container_and_mend_removes_them() {
        if let Some(reason) = skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/cluster.sh");
        let project = Project(script.clone());
        let up = Command::new(&script)
            .args(["up", "3"])
            .env("RAFTQ_PROJECT", TEST_PROJECT)
            .output()
            .expect("cluster.sh runs");
        assert!(
            up.status.success(),
            "cluster.sh up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        let mut cluster = DockerCluster::attach(TEST_PROJECT, 3).expect("attach");
        let ip = |id: u64| cluster.nodes[&id].ip.clone();
        let (ip1, ip2) = (ip(1), ip(2));

        cluster.cut(&[(1, 2)]).expect("cut");
        cluster.cut(&[(2, 1)]).expect("cutting again adds nothing");
        assert_eq!(dropped_by(&cluster, 1), vec![ip2.clone()]);
        assert_eq!(dropped_by(&cluster, 2), vec![ip1.clone()]);

        cluster.kill(1).expect("kill");
        cluster.kill(1).expect("killing a dead node does nothing");
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            !state_of(&cluster.nodes[&1].container)
                .expect("inspect")
                .running,
            "unless-stopped left it down"
        );
        cluster.start(1).expect("start");
        cluster
            .start(1)
            .expect("starting a running node does nothing");
        assert_eq!(
            dropped_by(&cluster, 1),
            vec![ip2],
            "its side of the cut came back"
        );

        cluster.pause(3).expect("pause");
        assert!(
            state_of(&cluster.nodes[&3].container)
                .expect("inspect")
                .paused
        );
        cluster.resume(3).expect("resume");
        cluster
            .resume(3)
            .expect("resuming a running node does nothing");

        cluster.mend().expect("mend");
        for id in 1..=3 {
            assert!(
                dropped_by(&cluster, id).is_empty(),
                "node {id} still drops packets"
            );
        }
        drop(cluster);
        drop(project);
    }
}
