//! Who may take part: the checks every Raft message passes, so that a node
//! id always speaks for the same log.
//!
//! Three kinds of identity can outlive what they named, and each is caught
//! here (see `raftq_storage::cluster` for the replicated record):
//!
//! - **A node that lost its data** and came back under its old id (a wiped
//!   data dir, a new volume under a Kubernetes pod that sets the same
//!   `--initial-cluster`). Its log has a new *incarnation*. Every message
//!   carries the sender's incarnation and the incarnation the sender has
//!   registered for the receiver; a message whose incarnation disagrees with
//!   the record is refused on either side, so the node neither votes nor
//!   counts toward a quorum, and it learns why (state `refused`): remove it
//!   and add it again, which registers its new log.
//! - **A removed node** that starts again with its old data: it is not in
//!   the membership any more, so it never hears of a leader and campaigns
//!   forever. A member refuses its vote requests, saying it was removed, when
//!   its log ends before the membership that left it out; the node then
//!   stops campaigning and says so (state `removed`).
//! - **Another cluster's node** (a wrong address in a membership): messages
//!   carry the cluster id, and a mismatch is refused.
//!
//! A node that is refused stops taking part (no elections) until a leader's
//! append succeeds on it again, which happens once it is a member again.
//!
//! The record is the one this node has applied, which is old on a node that
//! is catching up: it may still name a node's incarnation from before that
//! node was removed, wiped and added back. Every message therefore carries
//! the log index its sender's record was applied up to, and an incarnation
//! is only judged by the side whose record is at least as new: a node never
//! refuses a peer whose record is newer than its own, and never takes a
//! peer's word about itself from an older record.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use raftq_storage::cluster::ClusterRecord;
use raftq_storage::NodeId;
use tokio::sync::watch;

/// Why a Raft message was refused; sent as the `raftq-refusal` metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The sender is not a member any more.
    Removed,
    /// The sender's log is not the one registered for its id: it lost its data.
    LostData,
    /// The receiver's log is not the one the sender registered for it: the
    /// receiver lost its data.
    StaleRecord,
    /// The sender belongs to another cluster.
    OtherCluster,
    /// A candidate's clock is too far from the voter's.
    ClockSkew,
}

impl RefusalKind {
    /// The metadata value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Removed => "removed",
            RefusalKind::LostData => "lost-data",
            RefusalKind::StaleRecord => "stale-record",
            RefusalKind::OtherCluster => "other-cluster",
            RefusalKind::ClockSkew => "clock-skew",
        }
    }

    /// Parses the metadata value.
    pub fn parse(text: &str) -> Option<Self> {
        [
            RefusalKind::Removed,
            RefusalKind::LostData,
            RefusalKind::StaleRecord,
            RefusalKind::OtherCluster,
            RefusalKind::ClockSkew,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// A refused message: the kind and a sentence for the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub kind: RefusalKind,
    /// What happened and what to do.
    pub message: String,
}

/// Whether this node takes part in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// It does (or has not been told otherwise).
    Member,
    /// The cluster removed it; the text says how to rejoin.
    Removed(String),
    /// The cluster refuses its log; the text says what to do.
    Refused(String),
}

/// This node's identity and what it knows of the others'.
#[derive(Debug)]
pub struct Identity {
    id: NodeId,
    incarnation: u64,
    record: RwLock<ClusterRecord>,
    /// The log index `record` was applied up to.
    record_index: AtomicU64,
    observed: Mutex<BTreeMap<NodeId, u64>>,
    standing: watch::Sender<Standing>,
    logged: Mutex<HashMap<(NodeId, &'static str), Instant>>,
}

/// How often the same refusal about the same peer is logged.
const LOG_EVERY: Duration = Duration::from_secs(30);

impl Identity {
    /// Node `id`, whose log has `incarnation`.
    pub fn new(id: NodeId, incarnation: u64) -> Self {
        Identity {
            id,
            incarnation,
            record: RwLock::new(ClusterRecord::default()),
            record_index: AtomicU64::new(0),
            observed: Mutex::new(BTreeMap::new()),
            standing: watch::Sender::new(Standing::Member),
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to log a refusal of `kind` about `peer` now: once per
    /// 30 s, so a refused peer's heartbeats do not flood the log.
    pub fn should_log(&self, peer: NodeId, kind: RefusalKind) -> bool {
        let mut logged = self.logged.lock().expect("identity lock is never poisoned");
        let key = (peer, kind.as_str());
        if logged.get(&key).is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return false;
        }
        logged.insert(key, Instant::now());
        true
    }

    /// This log's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The cluster id, once known.
    pub fn cluster_id(&self) -> Option<u64> {
        self.record().cluster_id
    }

    /// The replicated record as last applied here.
    pub fn record(&self) -> ClusterRecord {
        self.record
            .read()
            .expect("identity lock is never poisoned")
            .clone()
    }

    /// Takes the record from the applied state, applied up to log index
    /// `applied` (after every apply).
    pub fn observe_record(&self, record: &ClusterRecord, applied: u64) {
        let current = self.record.read().expect("identity lock is never poisoned");
        if &*current != record {
            // A node the record forgot (it left the membership) is
            // registered again only from what it says after that, never
            // from what an earlier log under its id said.
            let forgotten: Vec<NodeId> = current
                .incarnations
                .keys()
                .filter(|node| record.incarnation(**node).is_none())
                .copied()
                .collect();
            drop(current);
            *self
                .record
                .write()
                .expect("identity lock is never poisoned") = record.clone();
            if !forgotten.is_empty() {
                let mut observed = self
                    .observed
                    .lock()
                    .expect("identity lock is never poisoned");
                for node in forgotten {
                    observed.remove(&node);
                }
            }
        }
        // After the record: a reader may pair the new record with the old
        // index, which only makes it judge fewer peers.
        self.record_index.fetch_max(applied, Ordering::Release);
    }

    /// What an outgoing message to `target` carries: the cluster id (0 when
    /// unknown), this node's incarnation, the target's registered one (0
    /// when none), and the log index the record was applied up to.
    pub fn outgoing(&self, target: NodeId) -> (u64, u64, u64, u64) {
        let index = self.record_index.load(Ordering::Acquire);
        let record = self.record.read().expect("identity lock is never poisoned");
        (
            record.cluster_id.unwrap_or(0),
            self.incarnation,
            record.incarnation(target).unwrap_or(0),
            index,
        )
    }

    /// Checks a message from `source` (a request here, or a reply to one of
    /// ours): same cluster, the source's incarnation as registered (when
    /// this node's record is at least as new as the source's, applied up to
    /// `source_record_index`), and this node as the source registered it
    /// (when the source's record is at least as new as this node's). The
    /// source's incarnation is remembered, passed or not, for the leader to
    /// register once the id is a member without one.
    pub fn check(
        &self,
        source: NodeId,
        cluster_id: u64,
        source_incarnation: u64,
        target_incarnation: u64,
        source_record_index: u64,
    ) -> Result<(), Refused> {
        let own_index = self.record_index.load(Ordering::Acquire);
        let record = self.record.read().expect("identity lock is never poisoned");
        if let Some(ours) = record.cluster_id {
            if cluster_id != 0 && cluster_id != ours {
                return Err(Refused {
                    kind: RefusalKind::OtherCluster,
                    message: format!(
                        "node {source} belongs to cluster {cluster_id:016x}, node {} to cluster \
                         {ours:016x}: check the addresses in the membership",
                        self.id
                    ),
                });
            }
        }
        if source_incarnation != 0 {
            // The latest log heard under this id, refused or not: what the
            // leader registers once the id is a member again.
            self.observed
                .lock()
                .expect("identity lock is never poisoned")
                .insert(source, source_incarnation);
        }
        if let Some(known) = record
            .incarnation(source)
            .filter(|_| own_index >= source_record_index)
        {
            if source_incarnation != 0 && source_incarnation != known {
                return Err(Refused {
                    kind: RefusalKind::LostData,
                    message: format!(
                        "node {source}'s log (incarnation {source_incarnation:016x}) is not the \
                         one the cluster registered for it ({known:016x}): it lost its data. \
                         Remove and re-add this node (`raftq cluster remove-node {source}`, then \
                         `raftq cluster add-node {source} ADDR`)"
                    ),
                });
            }
        }
        if target_incarnation != 0
            && target_incarnation != self.incarnation
            && source_record_index >= own_index
        {
            return Err(Refused {
                kind: RefusalKind::StaleRecord,
                message: format!(
                    "node {source} knows node {} by incarnation {target_incarnation:016x}, but \
                     this log is {:016x}: node {} lost its data. Remove and re-add this node \
                     (`raftq cluster remove-node {}`, then `raftq cluster add-node {} ADDR`)",
                    self.id, self.incarnation, self.id, self.id, self.id
                ),
            });
        }
        Ok(())
    }

    /// Incarnations heard from nodes the record does not hold yet, for the
    /// leader to register.
    pub fn unregistered(&self) -> Vec<(NodeId, u64)> {
        let record = self.record.read().expect("identity lock is never poisoned");
        let mut out: Vec<(NodeId, u64)> = self
            .observed
            .lock()
            .expect("identity lock is never poisoned")
            .iter()
            .filter(|(node, _)| record.incarnation(**node).is_none())
            .map(|(node, inc)| (*node, *inc))
            .collect();
        if record.incarnation(self.id).is_none() {
            out.push((self.id, self.incarnation));
        }
        out
    }

    /// This node's standing.
    pub fn standing(&self) -> Standing {
        self.standing.borrow().clone()
    }

    /// A receiver of standing changes.
    pub fn subscribe(&self) -> watch::Receiver<Standing> {
        self.standing.subscribe()
    }

    /// Acts on a refusal this node received (as sender) or made about itself.
    pub fn refused(&self, refusal: &Refused) {
        let next = match refusal.kind {
            RefusalKind::Removed => Standing::Removed(refusal.message.clone()),
            RefusalKind::LostData | RefusalKind::StaleRecord => {
                Standing::Refused(refusal.message.clone())
            }
            RefusalKind::OtherCluster | RefusalKind::ClockSkew => return,
        };
        self.standing.send_if_modified(|standing| {
            if *standing == Standing::Member {
                tracing::error!(node_id = self.id, reason = %refusal.message, "the cluster refuses this node; it stops campaigning");
                *standing = next;
                true
            } else {
                false
            }
        });
    }

    /// A leader's append succeeded here: this node is a member again.
    pub fn accepted(&self) {
        self.standing.send_if_modified(|standing| {
            if *standing != Standing::Member {
                tracing::info!(
                    node_id = self.id,
                    "a leader's append succeeded: this node takes part again"
                );
                *standing = Standing::Member;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(record: &[(NodeId, u64)]) -> ClusterRecord {
        ClusterRecord {
            cluster_id: Some(7),
            incarnations: record.iter().copied().collect(),
        }
    }

    #[test]
    fn a_message_whose_incarnations_disagree_with_the_record_is_refused_by_kind() {
        let me = Identity::new(1, 11);
        me.observe_record(&registered(&[(1, 11), (2, 22)]), 50);
        assert_eq!(me.check(2, 7, 22, 11, 50), Ok(()));
        assert_eq!(
            me.check(2, 7, 23, 11, 50).map_err(|r| r.kind),
            Err(RefusalKind::LostData),
            "node 2 came back with a new log"
        );
        assert_eq!(
            me.check(2, 7, 22, 12, 50).map_err(|r| r.kind),
            Err(RefusalKind::StaleRecord),
            "this node is not the log node 2 registered"
        );
        assert_eq!(
            me.check(2, 8, 22, 11, 50).map_err(|r| r.kind),
            Err(RefusalKind::OtherCluster)
        );
        assert_eq!(me.check(3, 7, 33, 0, 50), Ok(()), "not registered yet");
        assert_eq!(me.unregistered(), vec![(3, 33)]);
    }

    /// Found by the drill: a node removed and added back was registered
    /// under the incarnation heard from it before it lost its data.
    #[test]
    fn a_re_added_node_is_registered_by_the_log_it_speaks_for_now() {
        let me = Identity::new(1, 11);
        me.observe_record(&registered(&[(1, 11), (2, 22)]), 50);
        assert_eq!(me.check(2, 7, 22, 11, 50), Ok(()));
        // Node 2 is wiped and speaks for a new log: refused, but heard.
        assert!(me.check(2, 7, 23, 0, 0).is_err());
        me.observe_record(&registered(&[(1, 11)]), 60);
        assert_eq!(me.unregistered(), vec![], "nothing heard since it left");
        assert_eq!(me.check(2, 7, 23, 0, 0), Ok(()));
        assert_eq!(me.unregistered(), vec![(2, 23)]);
    }

    #[test]
    fn only_the_side_with_the_newer_record_judges_an_incarnation() {
        // This node is catching up: its record (applied to 50) still names
        // node 2's log from before it was wiped and added back.
        let me = Identity::new(1, 11);
        me.observe_record(&registered(&[(1, 11), (2, 22)]), 50);
        assert_eq!(
            me.check(2, 7, 23, 11, 400),
            Ok(()),
            "node 2's record is newer: this node's idea of node 2 is stale"
        );
        assert_eq!(
            me.check(2, 7, 23, 11, 40).map_err(|r| r.kind),
            Err(RefusalKind::LostData),
            "this node's record is the newer: it judges node 2"
        );
        assert_eq!(
            me.check(2, 7, 22, 99, 40),
            Ok(()),
            "node 2's record of this node is older than this node's own: not taken"
        );
        assert_eq!(
            me.check(2, 7, 22, 12, 50).map_err(|r| r.kind),
            Err(RefusalKind::StaleRecord),
            "records as new as each other: node 2's word about this node counts"
        );
    }

    #[test]
    fn a_refused_node_stands_aside_until_a_leader_reaches_it_again() {
        let me = Identity::new(2, 22);
        let refusal = Refused {
            kind: RefusalKind::Removed,
            message: "removed".into(),
        };
        me.refused(&refusal);
        assert_eq!(me.standing(), Standing::Removed("removed".into()));
        me.accepted();
        assert_eq!(me.standing(), Standing::Member);
        me.refused(&Refused {
            kind: RefusalKind::ClockSkew,
            message: "skew".into(),
        });
        assert_eq!(
            me.standing(),
            Standing::Member,
            "clock skew is not a refusal of the node"
        );
    }
}
