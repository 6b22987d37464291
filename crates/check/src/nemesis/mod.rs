//! The nemesis: faults injected into a cluster while the workload runs.
//!
//! One seeded schedule ([`schedule`], [`kill_loop`]) drives one [`Backend`];
//! [`run`] applies the planned faults one at a time, each for a bounded
//! while, records each as a window in the history (so the checker can report
//! failover times), and heals everything at the end.
//!
//! The faults:
//!
//! - **kill**: kill -9 a node (no clean shutdown), start it again with its
//!   data when the fault ends;
//! - **pause**: SIGSTOP a node (it keeps its sockets but answers nothing, like
//!   a long GC pause or a frozen VM), SIGCONT it at the end;
//! - **partition**: cut the network between groups of nodes (isolate one
//!   node, isolate the leader, a majority from a minority with the leader in
//!   it, a bridge where one node sees both halves); packets are held, not
//!   refused, as by a firewall that drops them;
//! - **membership**: remove a voter from the cluster (its process runs on),
//!   and add it back when the fault ends;
//! - **wipe**: kill -9 a node, delete its data dir (a lost disk) and start it
//!   again at once under its old id, with the same `--initial-cluster` (as a
//!   Kubernetes pod with a new volume does); the cluster must refuse it until
//!   the fault ends, when it is removed and added back as an operator would;
//! - **combinations** of two of these on different nodes at once.
//!
//! The backends:
//!
//! - [`LocalCluster`] (`--nemesis local`): `raftq serve` processes on
//!   loopback, started by the drill, with a fault-injecting TCP proxy in front
//!   of each node. Nodes connect to their peers from their own loopback
//!   address (`--source-address 127.0.1.ID`), so the proxy knows which peer a
//!   connection comes from; clients are never cut off. No root needed.
//! - [`LocalCluster::start_in_namespaces`] (`--nemesis netns`): the same
//!   processes, each in a network namespace of its own joined by a bridge;
//!   partitions are iptables DROP rules inside the namespaces. Root only.
//! - [`DockerCluster`] (`--nemesis docker`): the running compose cluster of
//!   `deploy/compose.yaml`, faulted from the host with `docker kill`/`start`,
//!   `docker pause`/`unpause`, and DROP rules that the host's iptables puts
//!   in each container's network namespace (through nsenter). Needs root.

mod docker;
mod local;
mod netns;
mod proxy;
mod schedule;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use raftq_client::Client;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::history::History;

pub use docker::DockerCluster;
pub use local::LocalCluster;
pub use proxy::Proxies;
pub use schedule::{kill_loop, schedule, Action, FaultKind, PlannedFault, Shape, Target};

/// A pair of nodes whose network link is cut (both directions).
pub type Cut = (u64, u64);

/// What a nemesis backend does to the cluster it controls. Calls may block
/// (they run processes or shell commands); [`run`] calls them off the async
/// workers.
pub trait Backend: Send {
    /// The backend's name, for messages.
    fn name(&self) -> &'static str;
    /// Every node: its id and the address clients and peers reach it at.
    fn members(&self) -> Vec<(u64, String)>;
    /// kill -9 node `id`.
    fn kill(&mut self, id: u64) -> Result<()>;
    /// Starts node `id` again, with its data, if it is not running.
    fn start(&mut self, id: u64) -> Result<()>;
    /// Stops node `id` in its tracks (SIGSTOP or the like).
    fn pause(&mut self, id: u64) -> Result<()>;
    /// Lets a paused node `id` carry on.
    fn resume(&mut self, id: u64) -> Result<()>;
    /// Cuts the links between every pair in `cuts`, both ways, on top of
    /// the cuts already in place.
    fn cut(&mut self, cuts: &[Cut]) -> Result<()>;
    /// Removes every cut.
    fn mend(&mut self) -> Result<()>;
    /// Whether [`Backend::wipe`] works here.
    fn can_wipe(&self) -> bool {
        false
    }
    /// kill -9 node `id` and delete its data dir; [`Backend::start`] starts
    /// it again, empty.
    fn wipe(&mut self, id: u64) -> Result<()> {
        Err(Error::Setup(format!(
            "the {} backend cannot wipe node {id}'s data dir",
            self.name()
        )))
    }
}

/// Runs `f` where blocking is allowed: outside the async workers on a
/// multi-threaded runtime, in place otherwise.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The state of the faults in force, so that healing undoes exactly them.
#[derive(Default)]
struct InForce {
    killed: BTreeSet<u64>,
    paused: BTreeSet<u64>,
    cut: bool,
    removed: BTreeSet<u64>,
    /// Nodes whose data dir was wiped: removed and added back when healing.
    wiped: BTreeSet<u64>,
    /// Removals still under way when their fault's time was up: healing
    /// waits for them before adding the node back, or the late removal
    /// would undo the re-adding.
    removing: Vec<tokio::task::JoinHandle<()>>,
}

/// The cuts that make `shape` with the nodes `all`, `leader` leading.
/// Returns the cuts and a description of the sides.
pub fn cuts_for(shape: &Shape, all: &[u64], leader: Option<u64>) -> (Vec<Cut>, String) {
    let pick = |target: &Target| match target {
        Target::Leader => leader.unwrap_or(all[0]),
        Target::Node(id) => *id,
    };
    let between = |a: &[u64], b: &[u64]| {
        let mut cuts = Vec::new();
        for x in a {
            for y in b {
                if x != y {
                    cuts.push((*x.min(y), *x.max(y)));
                }
            }
        }
        cuts
    };
    match shape {
        Shape::Isolate(target) => {
            let node = pick(target);
            let rest: Vec<u64> = all.iter().copied().filter(|n| *n != node).collect();
            (
                between(&[node], &rest),
                format!("node {node} cut off from {rest:?}"),
            )
        }
        Shape::LeaderInMinority(order) => {
            // The leader and the first others of the seeded order, up to a
            // minority, against the rest.
            let leader = leader.unwrap_or(all[0]);
            let minority_size = (all.len() - 1) / 2;
            let mut minority = vec![leader];
            minority.extend(
                order
                    .iter()
                    .copied()
                    .filter(|n| *n != leader && all.contains(n))
                    .take(minority_size.saturating_sub(1)),
            );
            let majority: Vec<u64> = all
                .iter()
                .copied()
                .filter(|n| !minority.contains(n))
                .collect();
            (
                between(&minority, &majority),
                format!("minority {minority:?} (the leader's side) | majority {majority:?}"),
            )
        }
        Shape::Bridge(order) => {
            // The seeded order, split in two halves around one middle node
            // that keeps its links to both: each half sees the bridge only.
            let order: Vec<u64> = order.iter().copied().filter(|n| all.contains(n)).collect();
            let half = order.len() / 2;
            let (left, rest) = order.split_at(half);
            let (bridge, right) = rest.split_at(1);
            (
                between(left, right),
                format!("{left:?} | {right:?}, bridged by {bridge:?}"),
            )
        }
    }
}

async fn leader_of(client: &Client) -> Option<u64> {
    client.cluster_status().await.ok().and_then(|s| s.leader_id)
}

/// Applies one action; returns what it did, for the fault's name.
async fn apply(
    backend: &mut dyn Backend,
    client: &Client,
    action: &Action,
    leader: Option<u64>,
    in_force: &mut InForce,
    taken: &mut BTreeSet<u64>,
    limit: Duration,
) -> Result<String> {
    let ids: Vec<u64> = backend.members().into_iter().map(|(id, _)| id).collect();
    // A node target already hit by the other half of a combination moves
    // to the next node, so a combination always hits two nodes.
    let mut resolve = |target: &Target| {
        let wanted = match target {
            Target::Leader => leader.unwrap_or(ids[0]),
            Target::Node(id) => *id,
        };
        let id = if taken.contains(&wanted) {
            ids.iter()
                .copied()
                .find(|n| !taken.contains(n))
                .unwrap_or(wanted)
        } else {
            wanted
        };
        taken.insert(id);
        let role = if Some(id) == leader { " (leader)" } else { "" };
        (id, role)
    };
    match action {
        Action::Kill(target) => {
            let (id, role) = resolve(target);
            blocking(|| backend.kill(id))?;
            in_force.killed.insert(id);
            Ok(format!("kill node {id}{role}"))
        }
        Action::Pause(target) => {
            let (id, role) = resolve(target);
            blocking(|| backend.pause(id))?;
            in_force.paused.insert(id);
            Ok(format!("pause node {id}{role}"))
        }
        Action::Partition(shape) => {
            let (cuts, sides) = cuts_for(shape, &ids, leader);
            blocking(|| backend.cut(&cuts))?;
            in_force.cut = true;
            Ok(format!("partition {sides}"))
        }
        Action::Wipe(target) => {
            let (id, role) = resolve(target);
            blocking(|| backend.wipe(id))?;
            blocking(|| backend.start(id))?;
            in_force.wiped.insert(id);
            Ok(format!(
                "wipe node {id}{role}'s data dir and start it again under its id"
            ))
        }
        Action::Remove(target) => {
            let (id, role) = resolve(target);
            // A removal that fails (no leader at the moment, a change
            // already under way) is reported, and the fault goes on. One
            // that cannot commit (a paused node is in the new majority)
            // blocks every write meanwhile: it is waited for no longer than
            // the fault lasts, so the fault ends when planned.
            let (answer, answered) = tokio::sync::oneshot::channel();
            let removing = client.clone();
            let task = tokio::spawn(async move {
                let _ = answer.send(removing.remove_node(id).await);
            });
            match tokio::time::timeout(limit, answered).await {
                Ok(Ok(Ok(_))) => {
                    in_force.removed.insert(id);
                    Ok(format!("remove voter {id}{role}"))
                }
                Ok(Ok(Err(err))) => Ok(format!("remove voter {id}{role} (refused: {err})")),
                Ok(Err(_)) => Ok(format!(
                    "remove voter {id}{role} (the call ended unanswered)"
                )),
                Err(_) => {
                    // It may still happen: wait for it and add the node
                    // back when healing.
                    in_force.removed.insert(id);
                    in_force.removing.push(task);
                    Ok(format!(
                        "remove voter {id}{role} (no answer in {} ms)",
                        limit.as_millis()
                    ))
                }
            }
        }
    }
}

/// Undoes every fault in force: mends the network, resumes paused nodes,
/// starts killed ones, then adds removed voters back (which needs a leader;
/// it is retried for up to two minutes).
async fn heal(backend: &mut dyn Backend, client: &Client, in_force: &mut InForce) -> Result<()> {
    if in_force.cut {
        blocking(|| backend.mend())?;
        in_force.cut = false;
    }
    for id in std::mem::take(&mut in_force.paused) {
        blocking(|| backend.resume(id))?;
    }
    for id in std::mem::take(&mut in_force.killed) {
        blocking(|| backend.start(id))?;
    }
    for task in std::mem::take(&mut in_force.removing) {
        // The client gives up on its own within its retry budget.
        let _ = tokio::time::timeout(Duration::from_secs(90), task).await;
    }
    let wiped = std::mem::take(&mut in_force.wiped);
    for id in &wiped {
        remove_wiped(client, *id).await?;
    }
    if std::mem::take(&mut in_force.removed).is_empty() && wiped.is_empty() {
        return Ok(());
    }
    // Every node of the backend must be a voter again, whatever became of
    // the removals.
    let members = backend.members();
    for (id, addr) in &members {
        add_back(client, &members, *id, addr).await?;
    }
    Ok(())
}

/// Removes a wiped node from the membership (the operator's first step to
/// bring it back with its new, empty log), retrying for up to two minutes.
async fn remove_wiped(client: &Client, id: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let why = match tokio::time::timeout(Duration::from_secs(30), client.remove_node(id)).await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(err)) if err.is_not_found() => return Ok(()),
            Ok(Err(err)) => err.to_string(),
            Err(_) => "no answer in 30 s".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Setup(format!(
                "could not remove wiped node {id} within 120 s: {why}"
            )));
        }
        tracing::warn!(node = id, %why, "removing the wiped node failed; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether node `id` votes (the status names the leader "leader", the
/// other voters "voter").
fn is_voter(status: &raftq_client::proto::StatusResponse, id: u64) -> bool {
    status
        .members
        .iter()
        .any(|m| m.id == id && (m.role == "voter" || m.role == "leader"))
}

/// The leader and its status, asked of every member by address: among the
/// members that call themselves leader, the one with the highest term. A
/// node that removed itself (or was cut off) may still call itself leader
/// at an older term and list the old membership; asking "the leader" through
/// the client could reach it, and trusting its answer left a removed node out
/// of the cluster (seed 11, seen in CI).
async fn real_leader(
    client: &Client,
    members: &[(u64, String)],
) -> Option<(String, raftq_client::proto::StatusResponse)> {
    let mut best: Option<(String, raftq_client::proto::StatusResponse)> = None;
    for (_, addr) in members {
        let Ok(Ok(status)) =
            tokio::time::timeout(Duration::from_secs(5), client.node_status(addr)).await
        else {
            continue;
        };
        if status.state == "leader" && best.as_ref().is_none_or(|(_, b)| status.term > b.term) {
            best = Some((addr.clone(), status));
        }
    }
    best
}

/// Adds node `id` back as a voter unless it is one, retrying for up to two
/// minutes (it needs a leader, and the node to catch up). Only the real
/// leader's view counts (see [`real_leader`]), and the request goes to that
/// leader's address; `add_node` on the leader is a no-op for a voter.
async fn add_back(client: &Client, members: &[(u64, String)], id: u64, addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let why = match real_leader(client, members).await {
            None => "no member calls itself leader".to_string(),
            Some((_, status)) if is_voter(&status, id) => return Ok(()),
            Some((leader_addr, status)) => {
                let to_leader = client
                    .to_node(&leader_addr, raftq_client::RetryPolicy::default())
                    .map_err(|err| Error::Setup(err.to_string()))?;
                match tokio::time::timeout(Duration::from_secs(70), to_leader.add_node(id, addr))
                    .await
                {
                    Ok(Ok(after)) if after.node_id == status.node_id && is_voter(&after, id) => {
                        return Ok(());
                    }
                    Ok(Ok(_)) => "not a voter after adding".to_string(),
                    Ok(Err(err)) => err.to_string(),
                    Err(_) => "no answer in 70 s".to_string(),
                }
            }
        };
        if Instant::now() >= deadline {
            return Err(Error::Setup(format!(
                "could not add node {id} back as a voter within 120 s: {why}"
            )));
        }
        tracing::warn!(node = id, %why, "adding the node back failed; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sleeps for `ms`, or less if `stop` turns true; returns whether it did.
async fn sleep_unless(ms: u64, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => false,
        _ = stop.wait_for(|stop| *stop) => true,
    }
}

/// Applies `faults` to `backend` one at a time, recording each in `history`,
/// and heals the cluster after each and at the end. `client` finds the
/// leader and changes the membership. When `stop` turns true (the workload
/// is done), the fault in force is healed at once and no other starts.
pub async fn run(
    backend: &mut dyn Backend,
    client: &Client,
    history: &History,
    faults: &[PlannedFault],
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut in_force = InForce::default();
    for fault in faults {
        if sleep_unless(fault.after_ms, &mut stop).await {
            break;
        }
        let leader = leader_of(client).await;
        let mut names = Vec::new();
        let mut taken = BTreeSet::new();
        let window = history.fault_start(String::new());
        let started = Instant::now();
        let lasts = Duration::from_millis(fault.duration_ms);
        for action in &fault.actions {
            let limit = lasts
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(100));
            let applied = apply(
                backend,
                client,
                action,
                leader,
                &mut in_force,
                &mut taken,
                limit,
            )
            .await;
            match applied {
                Ok(name) => names.push(name),
                Err(err) => {
                    heal(backend, client, &mut in_force).await?;
                    return Err(err);
                }
            }
        }
        let name = format!("{} for {} ms", names.join(" + "), fault.duration_ms);
        tracing::info!(fault = %name, "fault starts");
        history.name_fault(&window, name);
        let left = lasts.saturating_sub(started.elapsed());
        let stopped = sleep_unless(left.as_millis() as u64, &mut stop).await;
        heal(backend, client, &mut in_force).await?;
        history.fault_end(window);
        if stopped {
            break;
        }
    }
    heal(backend, client, &mut in_force).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cut_the_links_their_shape_names() {
        let all = [1, 2, 3, 4, 5];
        let (cuts, _) = cuts_for(&Shape::Isolate(Target::Leader), &all, Some(3));
        assert_eq!(cuts, vec![(1, 3), (2, 3), (3, 4), (3, 5)]);
        let (cuts, sides) = cuts_for(&Shape::LeaderInMinority(vec![5, 4, 2, 1, 3]), &all, Some(2));
        assert_eq!(cuts.len(), 2 * 3, "{sides}");
        assert!(cuts.contains(&(2, 4)) && cuts.contains(&(1, 5)) && !cuts.contains(&(2, 5)));
        let (cuts, sides) = cuts_for(&Shape::Bridge(vec![1, 2, 3, 4, 5]), &all, None);
        assert_eq!(cuts, vec![(1, 4), (1, 5), (2, 4), (2, 5)], "{sides}");
        let (cuts, _) = cuts_for(&Shape::Bridge(vec![3, 1, 2]), &[1, 2, 3], None);
        assert_eq!(cuts, vec![(2, 3)], "3 nodes: 3 | 2, bridged by 1");
    }
}
