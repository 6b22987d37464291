//! The nemesis: faults injected into a cluster while the workload runs.
//!
//! One schedule, seeded and printed, drives one backend. The backend here is
//! `local`: `raftq serve` child processes on loopback that the drill starts
//! itself ([`LocalCluster`]), faulted with kill -9 and restart, and
//! SIGSTOP/SIGCONT (a pause: the process keeps its sockets but answers
//! nothing, like a GC pause or an overloaded VM). Faults are applied one at
//! a time, each for a bounded while, then healed; every fault is recorded in
//! the history as a window, so the checker can report failover times.
//!
//! What it does not do yet: network partitions (the issue plans a proxy
//! between peers, network namespaces with iptables, and docker network
//! disconnects), membership changes during faults, and the docker backend.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use raftq_client::Client;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::history::History;
use crate::rng::Rng;

/// One node process of a [`LocalCluster`].
struct LocalNode {
    addr: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A cluster of `raftq serve` processes on loopback, owned by the drill.
/// Dropping it kills every node.
pub struct LocalCluster {
    exe: PathBuf,
    nodes: BTreeMap<u64, LocalNode>,
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|err| Error::Setup(format!("no free port: {err}")))?;
    Ok(listener
        .local_addr()
        .map_err(|err| Error::Setup(format!("no local address: {err}")))?
        .port())
}

impl LocalCluster {
    /// Starts `size` nodes of the `raftq` binary `exe`, with data under `dir`.
    pub fn start(exe: &Path, dir: &Path, size: u64) -> Result<Self> {
        if !(1..=7).contains(&size) {
            return Err(Error::Setup(format!(
                "a local cluster has 1 to 7 nodes, not {size}"
            )));
        }
        let mut addrs = BTreeMap::new();
        for id in 1..=size {
            addrs.insert(id, format!("127.0.0.1:{}", free_port()?));
        }
        let initial: Vec<String> = addrs
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect();
        let mut cluster = LocalCluster {
            exe: exe.to_path_buf(),
            nodes: BTreeMap::new(),
        };
        for (id, addr) in addrs {
            let args = vec![
                "serve".to_string(),
                "--id".into(),
                id.to_string(),
                "--listen".into(),
                addr.clone(),
                "--data-dir".into(),
                dir.join(format!("node-{id}")).display().to_string(),
                "--initial-cluster".into(),
                initial.join(","),
                "--heartbeat-ms".into(),
                "200".into(),
                "--election-timeout-min-ms".into(),
                "800".into(),
                "--election-timeout-max-ms".into(),
                "1600".into(),
            ];
            cluster.nodes.insert(
                id,
                LocalNode {
                    addr,
                    args,
                    log: dir.join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                },
            );
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// Every node's gRPC address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    /// Every node's id and address.
    pub fn members(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    fn node(&mut self, id: u64) -> Result<&mut LocalNode> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| Error::Setup(format!("no node {id} in the local cluster")))
    }

    /// Starts a stopped node again with its data.
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let exe = self.exe.clone();
        let node = self.node(id)?;
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|err| Error::Setup(format!("cannot open {}: {err}", node.log.display())))?;
        let child = Command::new(&exe)
            .args(&node.args)
            .env_remove("RAFTQ_CLUSTER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| Error::Setup(format!("cannot start {}: {err}", exe.display())))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// kill -9: the process dies at once, without a clean shutdown.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        Ok(())
    }

    fn signal(&mut self, id: u64, signal: &str) -> Result<bool> {
        let node = self.node(id)?;
        let Some(child) = &node.child else {
            return Ok(false);
        };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .map_err(|err| Error::Setup(format!("cannot run kill: {err}")))?;
        Ok(status.success())
    }

    /// SIGSTOP: the process stops answering but keeps its sockets and state.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        if self.signal(id, "-STOP")? {
            self.node(id)?.paused = true;
        }
        Ok(())
    }

    /// SIGCONT: a paused process carries on.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        if self.signal(id, "-CONT")? {
            self.node(id)?.paused = false;
        }
        Ok(())
    }

    /// Resumes every paused node and starts every dead one.
    pub fn heal(&mut self) -> Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.node(id)?.paused {
                self.resume(id)?;
            }
            self.start_node(id)?;
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FaultKind {
    /// kill -9 a node, start it again when the fault ends.
    Kill,
    /// SIGSTOP a node, SIGCONT it when the fault ends.
    Pause,
}

/// Which node a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Target {
    /// Whoever leads when the fault starts.
    Leader,
    /// A node picked by the seed.
    Node(u64),
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedFault {
    /// What.
    pub kind: FaultKind,
    /// On whom.
    pub target: Target,
    /// Quiet time before it starts, ms.
    pub after_ms: u64,
    /// How long it lasts, ms.
    pub duration_ms: u64,
}

/// A seeded list of faults filling `duration`: each fault follows a quiet
/// gap of 2–5 s and lasts 1–4 s; kills and pauses, of the leader or of a
/// seeded node, alternate at random.
pub fn schedule(seed: u64, nodes: &[u64], duration: Duration) -> Vec<PlannedFault> {
    let mut rng = Rng::new(seed);
    let mut faults = Vec::new();
    let mut at = 0;
    let total = duration.as_millis() as u64;
    while !nodes.is_empty() {
        let after_ms = 2_000 + rng.below(3_000);
        let duration_ms = 1_000 + rng.below(3_000);
        if at + after_ms + duration_ms > total {
            break;
        }
        at += after_ms + duration_ms;
        let kind = if rng.below(2) == 0 {
            FaultKind::Kill
        } else {
            FaultKind::Pause
        };
        let target = if rng.below(2) == 0 {
            Target::Leader
        } else {
            Target::Node(nodes[rng.below(nodes.len() as u64) as usize])
        };
        faults.push(PlannedFault {
            kind,
            target,
            after_ms,
            duration_ms,
        });
    }
    faults
}

/// A kill -9 loop: `kills` kill-and-restart faults back to back (a quiet gap
/// of 0.5–1.5 s, the node down for 0.3–1 s), each of the leader or of a
/// seeded node. The test that no acknowledged enqueue is lost however often
/// nodes die mid-write.
pub fn kill_loop(seed: u64, nodes: &[u64], kills: usize) -> Vec<PlannedFault> {
    let mut rng = Rng::new(seed);
    (0..kills)
        .filter(|_| !nodes.is_empty())
        .map(|_| PlannedFault {
            kind: FaultKind::Kill,
            target: if rng.below(2) == 0 {
                Target::Leader
            } else {
                Target::Node(nodes[rng.below(nodes.len() as u64) as usize])
            },
            after_ms: 500 + rng.below(1_000),
            duration_ms: 300 + rng.below(700),
        })
        .collect()
}

/// Applies `faults` to `cluster` one at a time, recording each in `history`,
/// and heals the cluster at the end. `client` finds the leader.
pub async fn run(
    cluster: &mut LocalCluster,
    client: &Client,
    history: &History,
    faults: &[PlannedFault],
) -> Result<()> {
    for fault in faults {
        tokio::time::sleep(Duration::from_millis(fault.after_ms)).await;
        let id = match fault.target {
            Target::Node(id) => id,
            Target::Leader => match client.cluster_status().await {
                Ok(status) => match status.leader_id {
                    Some(leader) => leader,
                    None => continue,
                },
                Err(_) => continue,
            },
        };
        let role = if fault.target == Target::Leader {
            " (the leader)"
        } else {
            ""
        };
        let name = format!(
            "{:?} node {id}{role} for {} ms",
            fault.kind, fault.duration_ms
        );
        tracing::info!(fault = %name, "fault starts");
        let window = history.fault_start(name);
        match fault.kind {
            FaultKind::Kill => cluster.kill(id)?,
            FaultKind::Pause => cluster.pause(id)?,
        }
        tokio::time::sleep(Duration::from_millis(fault.duration_ms)).await;
        cluster.heal()?;
        history.fault_end(window);
    }
    cluster.heal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_reproducible_from_its_seed_and_fits_its_duration() {
        let a = schedule(42, &[1, 2, 3], Duration::from_secs(60));
        let b = schedule(42, &[1, 2, 3], Duration::from_secs(60));
        assert_eq!(a, b);
        assert!(a.len() >= 6, "a minute holds several faults: {a:?}");
        let total: u64 = a.iter().map(|f| f.after_ms + f.duration_ms).sum();
        assert!(total <= 60_000);
        assert_ne!(a, schedule(43, &[1, 2, 3], Duration::from_secs(60)));
        assert!(
            a.iter().any(|f| f.kind == FaultKind::Kill)
                && a.iter().any(|f| f.kind == FaultKind::Pause)
        );
    }
}
