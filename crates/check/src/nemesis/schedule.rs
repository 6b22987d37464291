//! Seeded fault schedules: the same seed and nodes give the same plan.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::rng::Rng;

/// Which node an action hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Target {
    /// Whoever leads when the fault starts.
    Leader,
    /// A node picked by the seed.
    Node(u64),
}

/// The shape of a network partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Shape {
    /// One node cut off from all the others.
    Isolate(Target),
    /// The leader and (on 5 nodes) one more node, in the seeded order, cut
    /// off from the majority: the old leader must not acknowledge anything
    /// the new one does not know.
    LeaderInMinority(Vec<u64>),
    /// The nodes in the seeded order split into two halves around a middle
    /// node that keeps its links to both (on 3 nodes: two nodes that cannot
    /// see each other, both seeing the third).
    Bridge(Vec<u64>),
}

/// One thing a fault does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    /// kill -9, start again at the end.
    Kill(Target),
    /// SIGSTOP, SIGCONT at the end.
    Pause(Target),
    /// Cut the network, mend it at the end.
    Partition(Shape),
    /// Remove the voter from the cluster, add it back at the end.
    Remove(Target),
    /// kill -9, delete the node's data dir (a lost disk) and start it again
    /// under its old id at once; at the end, remove it from the cluster and
    /// add it back, as an operator would.
    Wipe(Target),
}

/// The kinds of fault a [`schedule`] may draw (`raftq check --faults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FaultKind {
    /// kill -9 and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Pause,
    /// Every partition shape.
    Partition,
    /// A voter removed and added back.
    Membership,
    /// A node's data dir lost, the node restarted under its old id.
    Wipe,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Membership,
        FaultKind::Wipe,
    ];
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "kill" => Ok(FaultKind::Kill),
            "pause" => Ok(FaultKind::Pause),
            "partition" => Ok(FaultKind::Partition),
            "membership" => Ok(FaultKind::Membership),
            "wipe" => Ok(FaultKind::Wipe),
            other => Err(format!(
                "{other:?} is not a fault kind: kill, pause, partition, membership or wipe"
            )),
        }
    }
}

/// One planned fault: one action, or two at once (a combination).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedFault {
    /// What happens, all at the start of the fault.
    pub actions: Vec<Action>,
    /// Quiet time before it starts, ms.
    pub after_ms: u64,
    /// How long it lasts before it is healed, ms.
    pub duration_ms: u64,
}

fn target(rng: &mut Rng, nodes: &[u64]) -> Target {
    if rng.below(2) == 0 {
        Target::Leader
    } else {
        Target::Node(nodes[rng.below(nodes.len() as u64) as usize])
    }
}

fn shuffled(rng: &mut Rng, nodes: &[u64]) -> Vec<u64> {
    let mut order = nodes.to_vec();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// One action of the kind numbered `kind` (see [`schedule`]).
fn action(rng: &mut Rng, nodes: &[u64], kind: u64) -> Action {
    match kind {
        0 => Action::Kill(target(rng, nodes)),
        1 => Action::Pause(target(rng, nodes)),
        2 => Action::Partition(Shape::Isolate(target(rng, nodes))),
        3 => Action::Partition(Shape::LeaderInMinority(shuffled(rng, nodes))),
        4 => Action::Partition(Shape::Bridge(shuffled(rng, nodes))),
        5 => Action::Remove(target(rng, nodes)),
        _ => Action::Wipe(target(rng, nodes)),
    }
}

/// A seeded list of faults of the given `kinds` filling `duration`: each
/// follows a quiet gap of 2–5 s and lasts 1–4 s. With every kind, each is
/// with equal odds a kill, a pause, an isolated node, the leader in a
/// minority, a bridge, a voter removed and added back, a wiped data dir, or
/// a combination of two kills, pauses or removals (a partition or a wipe is
/// never combined with another, so the two actions hit different nodes and
/// a majority keeps its data).
pub fn schedule(
    seed: u64,
    nodes: &[u64],
    duration: Duration,
    kinds: &[FaultKind],
) -> Vec<PlannedFault> {
    // The menu: action numbers of `action`, 7 for a combination.
    let mut menu = Vec::new();
    let mut combinable = Vec::new();
    for kind in FaultKind::ALL.into_iter().filter(|k| kinds.contains(k)) {
        match kind {
            FaultKind::Kill => (menu.push(0), combinable.push(0)),
            FaultKind::Pause => (menu.push(1), combinable.push(1)),
            FaultKind::Partition => (menu.extend([2, 3, 4]), ()),
            FaultKind::Membership => (menu.push(5), combinable.push(5)),
            FaultKind::Wipe => (menu.push(6), ()),
        };
    }
    if !combinable.is_empty() {
        menu.push(7);
    }
    let mut rng = Rng::new(seed);
    let mut faults = Vec::new();
    let mut at = 0;
    let total = duration.as_millis() as u64;
    while !nodes.is_empty() && !menu.is_empty() {
        let after_ms = 2_000 + rng.below(3_000);
        let duration_ms = 1_000 + rng.below(3_000);
        if at + after_ms + duration_ms > total {
            break;
        }
        at += after_ms + duration_ms;
        let kind = menu[rng.below(menu.len() as u64) as usize];
        let actions = if kind == 7 {
            let mut pick = || combinable[rng.below(combinable.len() as u64) as usize];
            let (first, second) = (pick(), pick());
            vec![
                action(&mut rng, nodes, first),
                action(&mut rng, nodes, second),
            ]
        } else {
            vec![action(&mut rng, nodes, kind)]
        };
        faults.push(PlannedFault {
            actions,
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
            actions: vec![Action::Kill(target(&mut rng, nodes))],
            after_ms: 500 + rng.below(1_000),
            duration_ms: 300 + rng.below(700),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_reproducible_from_its_seed_and_fits_its_duration() {
        let a = schedule(42, &[1, 2, 3], Duration::from_secs(60), &FaultKind::ALL);
        let b = schedule(42, &[1, 2, 3], Duration::from_secs(60), &FaultKind::ALL);
        assert_eq!(a, b);
        assert!(a.len() >= 6, "a minute holds several faults: {a:?}");
        let total: u64 = a.iter().map(|f| f.after_ms + f.duration_ms).sum();
        assert!(total <= 60_000);
        assert_ne!(
            a,
            schedule(43, &[1, 2, 3], Duration::from_secs(60), &FaultKind::ALL)
        );
    }

    #[test]
    fn a_long_schedule_holds_every_kind_of_fault() {
        let plan = schedule(
            7,
            &[1, 2, 3, 4, 5],
            Duration::from_secs(600),
            &FaultKind::ALL,
        );
        let has = |f: &dyn Fn(&PlannedFault) -> bool| plan.iter().any(f);
        let first = |f: &PlannedFault| f.actions[0].clone();
        assert!(has(&|f| matches!(first(f), Action::Kill(_))));
        assert!(has(&|f| matches!(first(f), Action::Pause(_))));
        assert!(has(&|f| matches!(first(f), Action::Remove(_))));
        assert!(has(
            &|f| matches!(first(f), Action::Wipe(_)) && f.actions.len() == 1
        ));
        assert!(has(&|f| matches!(
            first(f),
            Action::Partition(Shape::Isolate(Target::Leader))
        )));
        assert!(has(&|f| matches!(
            first(f),
            Action::Partition(Shape::LeaderInMinority(_))
        )));
        assert!(has(&|f| matches!(
            first(f),
            Action::Partition(Shape::Bridge(_))
        )));
        assert!(has(&|f| f.actions.len() == 2));
        for fault in &plan {
            if let Action::Partition(Shape::Bridge(order)) = &fault.actions[0] {
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, vec![1, 2, 3, 4, 5], "a permutation of the nodes");
            }
        }
    }

    #[test]
    fn a_schedule_draws_only_the_kinds_it_is_given() {
        let nodes = [1, 2, 3];
        let long = Duration::from_secs(600);
        let partitions = schedule(3, &nodes, long, &[FaultKind::Partition]);
        assert!(!partitions.is_empty());
        assert!(partitions
            .iter()
            .all(|f| f.actions.len() == 1 && matches!(f.actions[0], Action::Partition(_))));
        let kills = schedule(3, &nodes, long, &[FaultKind::Kill]);
        assert!(kills
            .iter()
            .flat_map(|f| &f.actions)
            .all(|a| matches!(a, Action::Kill(_))));
        assert!(kills.iter().any(|f| f.actions.len() == 2), "kill + kill");
        assert!(schedule(3, &nodes, long, &[]).is_empty());
        assert_eq!("membership".parse(), Ok(FaultKind::Membership));
        assert_eq!("wipe".parse(), Ok(FaultKind::Wipe));
        assert!("flood".parse::<FaultKind>().is_err());
    }
}
