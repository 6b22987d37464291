//! The state machine: the queue logic of [`crate::queue`], held in memory.
//!
//! The queue state lives in memory only; the Raft log is its durability.
//! Applying an entry changes memory and nothing else: no write, no fsync.
//! The state is persisted by snapshots:
//!
//! - **Built** on openraft's snapshot policy (every `snapshot_after_entries`
//!   entries), on demand (a clean shutdown asks for one), and when a
//!   follower needs one. `get_snapshot_builder`, which openraft calls
//!   between applies with the state machine to itself, takes a
//!   point-in-time view of the state ([`crate::queue::Queues::view`]: the
//!   message and dedup maps are persistent, so the view shares them and
//!   costs almost nothing); the builder then writes it to a file off the
//!   async workers while applies go on, fsyncs it and its directory, and
//!   only then hands it to openraft, which may purge the log behind it.
//! - **Streamed and checksummed**: a snapshot is a file of framed records,
//!   each with a CRC-32 ([`crate::snapshot`]); openraft sends it to
//!   followers in chunks.
//! - **Loaded at start**: `open` reads the newest snapshot into memory; then
//!   openraft re-applies the committed log after it (the log store keeps the
//!   committed index). The result equals what the other replicas hold: the
//!   state digest is the same.
//! - **Installed** from a leader: the received file is read into a new state
//!   off the async workers, which then replaces the old one in one step.
//!
//! What a crash costs is time, not data: the entries since the last snapshot
//! are re-applied from the log at the next start.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, StorageIOError};
use tokio::io::AsyncSeekExt;
use tokio::sync::watch;

use crate::command::Response;
use crate::error::{Error, Result};
use crate::queue::{Queues, StateView};
use crate::snapshot::{self, LoadedState};
use crate::timing::Timings;
use crate::types::{
    Entry, LogId, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The current snapshot's file name in the snapshot directory.
const CURRENT_SNAPSHOT: &str = "current.snap";
/// The directory where releases before format 3 kept a sled database of the
/// state; a data dir that has one was written by such a release.
const OLD_STATE_DB: &str = "state";

/// The applied state, shared between the state machine (which writes it) and
/// the node's readers (stats, waiting receivers).
#[derive(Debug, Default)]
pub struct AppliedState {
    /// Every queue.
    pub queues: Queues,
    /// The last log id applied.
    pub last_applied: Option<LogId>,
    /// The membership as of the last membership entry applied.
    pub membership: StoredMembership,
}

impl From<LoadedState> for AppliedState {
    fn from(loaded: LoadedState) -> Self {
        AppliedState {
            queues: loaded.queues,
            last_applied: loaded.last_applied,
            membership: loaded.membership,
        }
    }
}

/// A read handle on the applied state.
#[derive(Clone, Debug)]
pub struct StateReader {
    state: Arc<RwLock<AppliedState>>,
    applied: watch::Receiver<u64>,
}

impl StateReader {
    /// A receiver that sees the last applied log index change after every
    /// apply (and snapshot install): long-polling receivers wait on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Locks the state for reading. Hold it briefly: applies wait meanwhile.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.state
            .read()
            .expect("state lock is never poisoned: apply does not panic while holding it")
    }
}

/// The current snapshot, shared with snapshot builders.
#[derive(Debug)]
struct SnapshotStore {
    dir: PathBuf,
    current: Mutex<Option<SnapshotMeta>>,
    next_id: AtomicU64,
}

impl SnapshotStore {
    fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "tmp") {
                std::fs::remove_file(&path)?;
            }
        }
        let path = dir.join(CURRENT_SNAPSHOT);
        let current = if path.exists() {
            Some(snapshot::read_meta(&path)?)
        } else {
            None
        };
        Ok(SnapshotStore {
            dir,
            current: Mutex::new(current),
            next_id: AtomicU64::new(1),
        })
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT_SNAPSHOT)
    }

    fn temp_path(&self, purpose: &str) -> PathBuf {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{purpose}-{n}.snap.tmp"))
    }

    fn current(&self) -> Option<SnapshotMeta> {
        self.current
            .lock()
            .expect("snapshot lock is never poisoned")
            .clone()
    }

    /// Makes the file at `temp` the current snapshot unless a newer one is
    /// already current (then `temp` is removed). Returns whether it became
    /// current. The rename is made durable (directory fsync) before return.
    fn promote(&self, temp: &Path, meta: &SnapshotMeta) -> Result<bool> {
        let mut current = self
            .current
            .lock()
            .expect("snapshot lock is never poisoned");
        if current
            .as_ref()
            .is_some_and(|cur| cur.last_log_id > meta.last_log_id)
        {
            std::fs::remove_file(temp)?;
            return Ok(false);
        }
        std::fs::rename(temp, self.current_path())?;
        File::open(&self.dir)?.sync_all()?;
        *current = Some(meta.clone());
        Ok(true)
    }
}

/// The in-memory queue state machine, persisted by snapshots.
pub struct StateMachine {
    state: Arc<RwLock<AppliedState>>,
    snapshots: Arc<SnapshotStore>,
    applied_tx: watch::Sender<u64>,
    /// The last applied index, for the log store's truncation guard.
    applied_index: Arc<AtomicU64>,
    /// Where applies are stamped (the write-latency breakdown), if wired.
    timings: Option<Arc<Timings>>,
}

impl StateMachine {
    /// Opens the state machine under `dir`: loads the newest snapshot in
    /// `dir/snapshots`, if any (the log after it is re-applied by openraft).
    pub fn open(dir: &Path) -> Result<Self> {
        if dir.join(OLD_STATE_DB).exists() {
            return Err(Error::OldStateDatabase {
                path: dir.join(OLD_STATE_DB).display().to_string(),
            });
        }
        let snapshots = SnapshotStore::open(dir.join("snapshots"))?;
        let state = match snapshots.current() {
            Some(meta) => {
                let loaded = snapshot::load(&snapshots.current_path())?;
                if loaded.last_applied != meta.last_log_id {
                    return Err(corrupt_snapshot("header and contents disagree"));
                }
                tracing::info!(
                    snapshot = %meta.snapshot_id,
                    last_applied = ?loaded.last_applied,
                    "state loaded from the snapshot; the log after it is applied next"
                );
                AppliedState::from(loaded)
            }
            None => AppliedState::default(),
        };
        let index = state.last_applied.map_or(0, |id| id.index);
        let (applied_tx, _) = watch::channel(index);
        Ok(StateMachine {
            state: Arc::new(RwLock::new(state)),
            snapshots: Arc::new(snapshots),
            applied_tx,
            applied_index: Arc::new(AtomicU64::new(index)),
            timings: None,
        })
    }

    /// Stamps every apply in `timings` from now on.
    pub fn record_timings(&mut self, timings: Arc<Timings>) {
        self.timings = Some(timings);
    }

    /// A read handle on the applied state.
    pub fn reader(&self) -> StateReader {
        StateReader {
            state: self.state.clone(),
            applied: self.applied_tx.subscribe(),
        }
    }

    /// The last applied index, kept current after every apply and install:
    /// the log store refuses to truncate at or below it
    /// ([`crate::LogStore::guard_applied`]).
    pub fn applied_index(&self) -> Arc<AtomicU64> {
        self.applied_index.clone()
    }

    fn publish_applied(&self, index: u64) {
        self.applied_index.store(index, Ordering::SeqCst);
        self.applied_tx.send_replace(index);
    }

    /// Applies entries to the state in memory.
    pub fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Response>> {
        let mut responses = Vec::new();
        let started = std::time::Instant::now();
        let mut first = None;
        let last = {
            let mut state = self.state.write().expect("state lock is never poisoned");
            for entry in entries {
                first.get_or_insert(entry.log_id.index);
                if let Some(last) = state.last_applied {
                    assert!(
                        entry.log_id.index > last.index,
                        "the applied index only grows"
                    );
                }
                state.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Normal(command) => state.queues.apply(command),
                    EntryPayload::Membership(membership) => {
                        let members = membership.nodes().map(|(id, _)| *id).collect();
                        state.queues.retain_members(&members);
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Response::None
                    }
                };
                responses.push(response);
            }
            state.last_applied
        };
        let last = last.map_or(0, |id| id.index);
        if let (Some(timings), Some(first)) = (&self.timings, first) {
            let done = std::time::Instant::now();
            for index in first..=last {
                timings.apply_started(index, started);
                timings.applied(index, done);
            }
        }
        self.publish_applied(last);
        Ok(responses)
    }

    /// Replaces the whole state with the snapshot file at `path`.
    async fn install_file(&mut self, path: PathBuf, meta: &SnapshotMeta) -> Result<()> {
        let loaded = tokio::task::spawn_blocking(move || snapshot::load(&path))
            .await
            .map_err(|err| Error::Io(std::io::Error::other(err)))??;
        if loaded.last_applied != meta.last_log_id {
            return Err(corrupt_snapshot(
                "file header does not match the snapshot meta",
            ));
        }
        let index = loaded.last_applied.map_or(0, |id| id.index);
        let old = std::mem::replace(
            &mut *self.state.write().expect("state lock is never poisoned"),
            loaded.into(),
        );
        self.publish_applied(index);
        // The old state may be large: free it off the async workers.
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }
}

fn corrupt_snapshot(why: &str) -> Error {
    Error::Corrupt {
        what: "snapshot".into(),
        why: why.into(),
    }
}

fn storage_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, err: &Error) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(err)).into()
}

/// Builds a snapshot from a point-in-time copy of the state.
pub struct SnapshotBuilder {
    view: StateView,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
}

impl SnapshotBuilder {
    fn build(&self) -> Result<(SnapshotMeta, PathBuf)> {
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.last_applied.map_or(0, |id| id.index),
                self.snapshots.next_id.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let temp = self.snapshots.temp_path("build");
        let started = std::time::Instant::now();
        let records = snapshot::write(&temp, &meta, &self.view)?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            records,
            ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        self.snapshots.promote(&temp, &meta)?;
        Ok((meta, self.snapshots.current_path()))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StorageError> {
        let fail = |err: Error| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, &err);
        let builder = SnapshotBuilder {
            view: std::mem::take(&mut self.view),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
        };
        let (meta, path) = tokio::task::spawn_blocking(move || builder.build())
            .await
            .map_err(|err| fail(Error::Io(std::io::Error::other(err))))?
            .map_err(fail)?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|err| fail(err.into()))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.reader();
        let state = state.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> std::result::Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        self.apply_entries(entries)
            .map_err(|err| storage_error(ErrorSubject::StateMachine, ErrorVerb::Write, &err))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let state = self.reader();
        let state = state.read();
        SnapshotBuilder {
            view: state.queues.view(),
            last_applied: state.last_applied,
            membership: state.membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<tokio::fs::File>, StorageError> {
        let path = self.snapshots.temp_path("incoming");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|err| {
                storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, &err.into())
            })?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<tokio::fs::File>,
    ) -> std::result::Result<(), StorageError> {
        let fail = |err: Error| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                &err,
            )
        };
        // Copy the received data into a file of our own, so the snapshot
        // stays ours to serve whatever handle we were given.
        let temp = self.snapshots.temp_path("install");
        let result = async {
            snapshot.seek(std::io::SeekFrom::Start(0)).await?;
            let mut file = tokio::fs::File::create(&temp).await?;
            tokio::io::copy(&mut *snapshot, &mut file).await?;
            file.sync_all().await?;
            Ok::<_, std::io::Error>(())
        };
        result.await.map_err(|err| fail(err.into()))?;
        self.install_file(temp.clone(), meta).await.map_err(fail)?;
        self.snapshots.promote(&temp, meta).map_err(fail)?;
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Open the file while holding the lock, so that meta and file agree
        // even if a newer snapshot is being promoted right now.
        let current = self
            .snapshots
            .current
            .lock()
            .expect("snapshot lock is never poisoned");
        let Some(meta) = current.clone() else {
            return Ok(None);
        };
        let file = File::open(self.snapshots.current_path()).map_err(|err| {
            storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &err.into())
        })?;
        drop(current);
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_from_a_release_with_a_state_database_is_refused_by_name_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join(OLD_STATE_DB);
        std::fs::create_dir_all(&old).expect("old state dir");
        std::fs::write(old.join("db"), b"old state").expect("old state file");

        let Err(err) = StateMachine::open(dir.path()) else {
            panic!("a data dir with an old state database was opened");
        };

        assert!(matches!(err, Error::OldStateDatabase { .. }), "{err}");
        assert!(err.is_version());
        assert!(err.to_string().contains("empty data dir"), "{err}");
        assert_eq!(
            std::fs::read(old.join("db")).expect("old state file kept"),
            b"old state"
        );
        assert!(!dir.path().join("snapshots").exists());
    }
}
