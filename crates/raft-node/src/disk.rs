//! The disk alarm: a node whose data disk runs low refuses new messages
//! before the disk is full (RabbitMQ's disk alarm).
//!
//! A monitor task checks the free space of the data dir's filesystem every
//! [`DISK_CHECK_INTERVAL`]. Below `min_free_disk_bytes` the node is in
//! alarm: it says so in every Raft message it sends, and a leader refuses
//! enqueues (`RESOURCE_EXHAUSTED`, naming the node and its disk) while it or
//! any voter reports an alarm, because every enqueue is written to every
//! voter's log. Everything that drains a queue keeps working: receives, acks,
//! nacks, purges and deletes. A disk that fills anyway fails the log's
//! flush, and the node stops with a non-zero exit (see `node.rs`).
//!
//! The free space is a metric (`raftq_disk{field="free_bytes"}`, with
//! `min_free_bytes`, `total_bytes` and `alarm`) and in `cluster status`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raftq_storage::NodeId;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// How often the free space is checked.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a peer's alarm report counts.
pub const PEER_ALARM_FRESH_FOR: Duration = Duration::from_secs(5);
/// The default free-space limit: 1 GiB, or 5 % of a smaller filesystem.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1024 * 1024 * 1024;

/// The data disk as last measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskState {
    /// Bytes available to this process.
    pub free_bytes: u64,
    /// The filesystem's size.
    pub total_bytes: u64,
    /// The limit in force.
    pub min_free_bytes: u64,
    /// Free space is below the limit.
    pub alarm: bool,
}

/// Watches the data disk and the alarms peers report.
#[derive(Debug)]
pub struct DiskMonitor {
    node: NodeId,
    path: PathBuf,
    configured_min: Option<u64>,
    state: watch::Sender<DiskState>,
    peers: Mutex<HashMap<NodeId, (bool, Instant)>>,
}

impl DiskMonitor {
    /// A monitor of the filesystem holding `path`; `min_free_bytes` is the
    /// limit (`None`: [`DEFAULT_MIN_FREE_BYTES`] or 5 % of the filesystem,
    /// whichever is smaller; 0: no alarm). Measures once at once.
    pub fn new(node: NodeId, path: &Path, min_free_bytes: Option<u64>) -> Self {
        let monitor = DiskMonitor {
            node,
            path: path.to_path_buf(),
            configured_min: min_free_bytes,
            state: watch::Sender::new(DiskState::default()),
            peers: Mutex::new(HashMap::new()),
        };
        monitor.check();
        monitor
    }

    /// The disk as last measured.
    pub fn state(&self) -> DiskState {
        *self.state.borrow()
    }

    /// Measures the free space again and updates the alarm.
    pub fn check(&self) {
        let (free, total) = match nix::sys::statvfs::statvfs(&self.path) {
            Ok(stat) => (
                stat.blocks_available().saturating_mul(stat.fragment_size()),
                stat.blocks().saturating_mul(stat.fragment_size()),
            ),
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot measure the data disk's free space");
                return;
            }
        };
        let min_free_bytes = self
            .configured_min
            .unwrap_or_else(|| DEFAULT_MIN_FREE_BYTES.min(total / 20));
        let alarm = min_free_bytes > 0 && free < min_free_bytes;
        let next = DiskState {
            free_bytes: free,
            total_bytes: total,
            min_free_bytes,
            alarm,
        };
        let was = self.state.send_replace(next);
        if alarm && !was.alarm {
            tracing::error!(
                path = %self.path.display(), free_bytes = free, min_free_bytes,
                "disk alarm: the data disk is below its free-space limit; enqueues are refused until space is freed"
            );
        } else if !alarm && was.alarm {
            tracing::info!(path = %self.path.display(), free_bytes = free, "disk alarm cleared");
        }
    }

    /// Records the alarm a peer reported in a Raft message.
    pub fn record_peer(&self, peer: NodeId, alarm: bool) {
        self.peers
            .lock()
            .expect("disk lock is never poisoned")
            .insert(peer, (alarm, Instant::now()));
    }

    /// Whether `peer` lately reported an alarm.
    pub fn peer_alarm(&self, peer: NodeId) -> bool {
        self.peers
            .lock()
            .expect("disk lock is never poisoned")
            .get(&peer)
            .is_some_and(|(alarm, at)| *alarm && at.elapsed() < PEER_ALARM_FRESH_FOR)
    }

    /// Refuses an enqueue while this node or a voter is in alarm; the error
    /// names the node and what to do.
    pub fn check_enqueue(&self, voters: impl IntoIterator<Item = NodeId>) -> Result<()> {
        let state = self.state();
        if state.alarm {
            return Err(Error::DiskAlarm(format!(
                "node {}'s data disk ({}) has {} MiB free, below its limit of {} MiB \
                 (min_free_disk_bytes): enqueues are refused until space is freed; receives, \
                 acks, purges and deletes still work",
                self.node,
                self.path.display(),
                state.free_bytes >> 20,
                state.min_free_bytes >> 20
            )));
        }
        if let Some(peer) = voters.into_iter().find(|v| self.peer_alarm(*v)) {
            return Err(Error::DiskAlarm(format!(
                "node {peer}'s data disk is below its free-space limit (min_free_disk_bytes): \
                 enqueues are refused until space is freed there; receives, acks, purges and \
                 deletes still work"
            )));
        }
        Ok(())
    }

    /// Checks the disk every [`DISK_CHECK_INTERVAL`] until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(DISK_CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => self.check(),
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}
