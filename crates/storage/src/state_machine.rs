//! The state machine: the queue logic of [`crate::queue`], persisted in sled.
//!
//! The state lives twice, by design:
//! - in sled, in one tree with the typed keys of [`crate::keys`]. Applying a
//!   batch of entries writes every record it changed, the new `last_applied`,
//!   the membership and the clock in one atomic `apply_batch`, so after a crash
//!   the tree is exactly the state after some prefix of the log, and openraft
//!   re-applies the rest from the log (whose committed index is durable).
//! - in memory ([`Queues`]), with the indexes that make receive cheap, rebuilt
//!   from the tree at open.
//!
//! The state machine's database is never flushed per apply: the log is the
//! durable record, and a lost tail of applies is re-applied at start. It is
//! flushed before a snapshot is handed to openraft, because openraft purges
//! the log behind a snapshot, and the state covering those entries must then
//! be on disk.
//!
//! Snapshot install writes the new state into a fresh tree, flushes it, and
//! then switches the `active` pointer in the default tree: a crash at any
//! point leaves either the old state or the new one, never a mix. Trees left
//! over by an interrupted install are dropped at open.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncSeekExt;
use tokio::sync::watch;

use crate::codec;
use crate::command::Response;
use crate::error::{Error, Result};
use crate::fsync::DiskSync;
use crate::keys::Key;
use crate::queue::{Globals, Queues, Record};
use crate::snapshot::{self, LoadedState, Loader};
use crate::types::{
    Entry, LogId, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The key in the default tree naming the active state tree.
const ACTIVE_TREE: &[u8] = b"active_tree";
/// Prefix of state tree names.
const STATE_TREE_PREFIX: &str = "state-";
/// Most records written per sled batch while installing a snapshot, so an
/// install never builds one batch of the whole state.
const INSTALL_BATCH_RECORDS: usize = 10_000;
/// sled's page cache for the state database.
const STATE_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// The current snapshot's file name in the snapshot directory.
const CURRENT_SNAPSHOT: &str = "current.snap";

/// What is persisted under [`Key::Applied`].
#[derive(Debug, Serialize, Deserialize)]
struct AppliedRecord {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    globals: Globals,
}

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

    /// Makes the file at `temp` the current snapshot unless a newer one is
    /// already current (then `temp` is removed). Returns whether it became
    /// current.
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

/// The sled-backed queue state machine.
pub struct StateMachine {
    db: sled::Db,
    disk: Arc<DiskSync>,
    tree: sled::Tree,
    state: Arc<RwLock<AppliedState>>,
    snapshots: Arc<SnapshotStore>,
    applied_tx: watch::Sender<u64>,
    /// The last applied index, for the log store's truncation guard.
    applied_index: Arc<AtomicU64>,
}

impl StateMachine {
    /// Opens (or creates) the state machine under `dir`: the state database in
    /// `dir/state`, snapshots in `dir/snapshots`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = crate::log_store::open_sled(
            sled::Config::new()
                .path(dir.join("state"))
                .cache_capacity(STATE_CACHE_BYTES)
                .mode(sled::Mode::HighThroughput),
        )?;
        let disk = Arc::new(DiskSync::new(db.clone(), &dir.join("state"))?);
        let active = match db.get(ACTIVE_TREE)? {
            Some(name) => String::from_utf8_lossy(&name).into_owned(),
            None => format!("{STATE_TREE_PREFIX}0"),
        };
        for name in db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if name.starts_with(STATE_TREE_PREFIX) && name != active {
                tracing::info!(tree = %name, "dropping state tree left by an interrupted snapshot install");
                db.drop_tree(name)?;
            }
        }
        let tree = db.open_tree(&active)?;
        let state = load_tree(&tree)?;
        let snapshots = SnapshotStore::open(dir.join("snapshots"))?;
        let index = state.last_applied.map_or(0, |id| id.index);
        let (applied_tx, _) = watch::channel(index);
        Ok(StateMachine {
            db,
            disk,
            tree,
            state: Arc::new(RwLock::new(state.into())),
            snapshots: Arc::new(snapshots),
            applied_tx,
            applied_index: Arc::new(AtomicU64::new(index)),
        })
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

    /// A read handle on the applied state.
    pub fn reader(&self) -> StateReader {
        StateReader {
            state: self.state.clone(),
            applied: self.applied_tx.subscribe(),
        }
    }

    /// Applies entries and persists the result in one atomic batch.
    pub fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Response>> {
        let mut batch = sled::Batch::default();
        let mut responses = Vec::new();
        {
            let mut state = self.state.write().expect("state lock is never poisoned");
            for entry in entries {
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
            let mut failure = None;
            state.queues.drain_changes(|key, record| {
                let key = key.encode();
                let value = match record {
                    None => {
                        batch.remove(key);
                        return;
                    }
                    Some(Record::Queue(meta)) => codec::encode(meta),
                    Some(Record::Message(message)) => codec::encode(message),
                    Some(Record::Dedup(entry)) => codec::encode(entry),
                };
                match value {
                    Ok(value) => batch.insert(key, value),
                    Err(err) => failure = Some(err),
                }
            });
            if let Some(err) = failure {
                return Err(err);
            }
            let applied = AppliedRecord {
                last_applied: state.last_applied,
                membership: state.membership.clone(),
                globals: state.queues.globals(),
            };
            batch.insert(Key::Applied.encode(), codec::encode(&applied)?);
        }
        self.tree.apply_batch(batch)?;
        let last = self
            .state
            .read()
            .expect("state lock is never poisoned")
            .last_applied;
        self.publish_applied(last.map_or(0, |id| id.index));
        Ok(responses)
    }

    /// Replaces the whole state with the snapshot file at `path`.
    fn install_file(&mut self, path: &Path, meta: &SnapshotMeta) -> Result<()> {
        let active = String::from_utf8_lossy(&self.tree.name()).into_owned();
        let generation: u64 = active
            .strip_prefix(STATE_TREE_PREFIX)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let new_name = format!("{STATE_TREE_PREFIX}{}", generation + 1);
        self.db.drop_tree(&new_name)?;
        let tree = self.db.open_tree(&new_name)?;
        let mut loader = Loader::new();
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        let mut queue = None;
        let file_meta = snapshot::read(path, |record| {
            let key_value = match &record {
                snapshot::SnapshotRecord::Queue(meta) => {
                    queue = Some(meta.name.clone());
                    Some((Key::Queue(meta.name.clone()), codec::encode(meta)?))
                }
                snapshot::SnapshotRecord::Message(message) => {
                    let name = queue
                        .clone()
                        .ok_or_else(|| corrupt_snapshot("message before queue"))?;
                    Some((Key::Message(name, message.id), codec::encode(message)?))
                }
                snapshot::SnapshotRecord::Dedup { dedup_id, entry } => {
                    let name = queue
                        .clone()
                        .ok_or_else(|| corrupt_snapshot("dedup before queue"))?;
                    Some((Key::Dedup(name, dedup_id.clone()), codec::encode(entry)?))
                }
                _ => None,
            };
            if let Some((key, value)) = key_value {
                batch.insert(key.encode(), value);
                pending += 1;
                if pending >= INSTALL_BATCH_RECORDS {
                    tree.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
            loader.record(record)
        })?;
        if file_meta.last_log_id != meta.last_log_id {
            return Err(corrupt_snapshot(
                "file header does not match the snapshot meta",
            ));
        }
        let loaded = loader.finish();
        let applied = AppliedRecord {
            last_applied: loaded.last_applied,
            membership: loaded.membership.clone(),
            globals: loaded.queues.globals(),
        };
        batch.insert(Key::Applied.encode(), codec::encode(&applied)?);
        tree.apply_batch(batch)?;
        self.disk.flush()?;
        // The switch: one key, then flushed. Before it the old tree is the
        // state; after it the new one.
        self.db.insert(ACTIVE_TREE, new_name.as_bytes())?;
        self.disk.flush()?;
        let old = std::mem::replace(&mut self.tree, tree);
        let index = loaded.last_applied.map_or(0, |id| id.index);
        *self.state.write().expect("state lock is never poisoned") = loaded.into();
        self.publish_applied(index);
        self.db.drop_tree(old.name())?;
        Ok(())
    }
}

fn corrupt_snapshot(why: &str) -> Error {
    Error::Corrupt {
        what: "snapshot".into(),
        why: why.into(),
    }
}

/// Reads a whole state tree back into memory.
fn load_tree(tree: &sled::Tree) -> Result<LoadedState> {
    let mut loader = Loader::new();
    for item in tree.iter() {
        let (key_bytes, value) = item?;
        let key = Key::decode(&key_bytes)?;
        let what = || format!("state record {key:?}");
        match &key {
            Key::Applied => {
                let applied: AppliedRecord = codec::decode(&what, &value)?;
                loader.applied(applied.last_applied, applied.membership, applied.globals);
            }
            Key::Queue(_) => loader.queue(codec::decode(&what, &value)?),
            Key::Message(queue, _) => loader.message(queue, codec::decode(&what, &value)?)?,
            Key::Dedup(queue, dedup_id) => {
                loader.dedup(queue, dedup_id.clone(), codec::decode(&what, &value)?)?
            }
        }
    }
    Ok(loader.finish())
}

fn storage_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, err: &Error) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(err)).into()
}

/// Builds a snapshot from a point-in-time copy of the state.
pub struct SnapshotBuilder {
    disk: Arc<DiskSync>,
    queues: Queues,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
}

impl SnapshotBuilder {
    fn build(&self) -> Result<(SnapshotMeta, PathBuf)> {
        // openraft purges the log behind the snapshot: the state it covers
        // must be on disk first.
        self.disk.flush()?;
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
        let records = snapshot::write(&temp, &meta, &self.queues)?;
        tracing::info!(snapshot = %meta.snapshot_id, records, "snapshot built");
        self.snapshots.promote(&temp, &meta)?;
        Ok((meta, self.snapshots.current_path()))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StorageError> {
        let fail = |err: Error| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, &err);
        let builder = SnapshotBuilder {
            disk: self.disk.clone(),
            queues: std::mem::take(&mut self.queues),
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
            disk: self.disk.clone(),
            queues: state.queues.clone(),
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
        self.install_file(&temp, meta).map_err(fail)?;
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
