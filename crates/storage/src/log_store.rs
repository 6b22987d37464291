//! The Raft log: openraft's log storage on its own sled database.
//!
//! The log has a sled `Db` to itself, because sled's flush covers every tree of
//! a `Db`: sharing one with the state machine would make every log flush also
//! write out state-machine pages. Two trees live in it: `log` (entries keyed by
//! big-endian index) and `meta` (vote, committed log id, last purged log id).
//!
//! Durability rules:
//! - an append is reported to openraft ([`LogFlushed::log_io_completed`]) only
//!   after a flush that started after the append's write has returned;
//! - vote and truncation are flushed before their call returns. The
//!   committed index is written but not flushed on its own: openraft saves it
//!   before every apply, and an fsync there would sit on every write's path.
//!   It only tells a restarting node how far to re-apply; a stale one is
//!   safe (the leader tells the node the commit index again), and it is
//!   flushed with the next append or vote;
//! - a purge (the log behind a snapshot) writes `last_purged`, hides the
//!   purged entries from reads at once, and leaves the rest to a background
//!   thread: flush `last_purged`, then remove the entries in chunks of 256
//!   with a 2 ms pause between them. openraft 0.9 awaits `purge` inside its
//!   core, so a purge of tens of thousands of entries with two flushes there
//!   stalled every append and heartbeat for up to a second (the followers'
//!   append timeouts fired); removing them in big batches, even off the
//!   core, still held sled's write lock long enough to do the same. A crash before
//!   the removal is durable leaves entries at or below `last_purged`, which
//!   `open` removes; a crash before `last_purged` is durable leaves the log
//!   as it was before the purge, which is just as consistent (the snapshot
//!   it followed is already durable);
//! - every entry is a checked record ([`crate::codec::encode_checked`]): a torn
//!   or corrupted entry is reported as a storage error when read, never
//!   applied;
//! - a failed flush (a full disk, an I/O error) fails every append from then
//!   on: after a failed fsync the file's state is unknown, so the node must
//!   stop rather than carry on. A flush that does not return at all (sled can
//!   hang on a full disk) is visible in [`LogStore::stalled_for`], vote and
//!   truncate give up after [`SYNC_TIMEOUT`] with an error, so the node stops
//!   instead of hanging, and a failed background purge fails the store;
//! - a truncation that would remove entries this node has already applied is
//!   refused as a storage error ([`Error::LogBelowApplied`]): committed
//!   entries are never overwritten in Raft, so such a request means the
//!   cluster lost acknowledged data, and this replica stops rather than
//!   diverge.
//!
//! The log also holds this node's *incarnation*: a random number chosen when
//! the log is created, so the cluster can tell a node that lost its data
//! from the one it knew under the same id ([`crate::cluster`]). It lives in
//! the log's own database, so it is lost exactly when the log is.
//!
//! Group commit: `append` writes its entries into sled's buffers and hands the
//! callback to the flusher thread. The flusher takes every callback that is
//! waiting, runs one flush (one fdatasync), and completes them all. Under load
//! many appends share each fsync; alone, an append costs one fsync, as it must.
//! openraft does not wait for the callback before calling `append` again, so
//! appends and flushes overlap.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, StorageIOError, Vote};
use tokio::sync::mpsc;

use crate::codec;
use crate::error::{Error, Result};
use crate::fsync::DiskSync;
use crate::timing::Timings;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// sled's segment size for the log database. Values above a quarter of it
/// go to separate blob files; 8 MiB keeps every entry up to 2 MiB inline.
const LOG_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// How many appends may wait for the flusher at once; `append` waits (and so
/// slows openraft down) when the flusher falls this far behind.
pub const FLUSH_QUEUE_CAPACITY: usize = 4096;

/// sled's page cache for the log database. The log is written once and read
/// back mostly while it is recent, so a small cache suffices.
const LOG_CACHE_BYTES: u64 = 64 * 1024 * 1024;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
const INCARNATION: &[u8] = b"incarnation";

/// How long a flush for vote, committed, truncate or purge may take before
/// the call fails (the disk is hung or full).
pub const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Counters of the flusher, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Group-commit flushes run.
    pub flushes: AtomicU64,
    /// Appends completed by those flushes.
    pub flushed_appends: AtomicU64,
    /// Total time spent in those flushes, in microseconds.
    pub flush_micros: AtomicU64,
    /// When the flush under way started (ms since the Unix epoch); 0 when
    /// none is.
    pub flush_started_ms: AtomicU64,
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Inner {
    db: sled::Db,
    disk: Arc<DiskSync>,
    log: sled::Tree,
    meta: sled::Tree,
    /// `None` only while dropping. Each append's callback, with the last
    /// index it wrote.
    flush_tx: Option<mpsc::Sender<(LogFlushed<TypeConfig>, u64)>>,
    flusher: Option<std::thread::JoinHandle<()>>,
    stats: Arc<LogStats>,
    /// Set when a flush failed: every later append fails too.
    failed: Arc<AtomicBool>,
    /// The state machine's applied index, once wired: no truncation below it.
    applied: OnceLock<Arc<AtomicU64>>,
    /// Where appends and flushes are stamped, once wired.
    timings: Arc<OnceLock<Arc<Timings>>>,
    incarnation: u64,
    /// Entries below this index are purged: reads never return them, though
    /// the background removal may not have reached them yet.
    purged_below: AtomicU64,
    /// Held by the background removal, so purges run one after another.
    purging: Arc<std::sync::Mutex<()>>,
}

impl Drop for Inner {
    /// Stops the flusher after it has completed every waiting append, so the
    /// database is closed (and its lock released) when the last clone drops.
    fn drop(&mut self) {
        drop(self.flush_tx.take());
        if let Some(flusher) = self.flusher.take() {
            if flusher.join().is_err() {
                tracing::error!("log flusher thread panicked");
            }
        }
    }
}

/// The sled-backed Raft log store. Cloning shares the same store (the clone is
/// also the log reader openraft's replication tasks use).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl LogStore {
    /// Opens (or creates) the log under `dir` and starts its flusher thread.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = open_sled(
            sled::Config::new()
                .path(dir)
                .cache_capacity(LOG_CACHE_BYTES)
                .segment_size(LOG_SEGMENT_BYTES)
                .mode(sled::Mode::HighThroughput),
        )?;
        let disk = Arc::new(DiskSync::new(db.clone(), dir)?);
        let log = db.open_tree("log")?;
        let meta = db.open_tree("meta")?;
        let stats = Arc::new(LogStats::default());
        let failed = Arc::new(AtomicBool::new(false));
        let incarnation = load_or_create_incarnation(&meta, &disk)?;
        let (flush_tx, flush_rx) = mpsc::channel(FLUSH_QUEUE_CAPACITY);
        let flusher_disk = disk.clone();
        let flusher_stats = stats.clone();
        let flusher_failed = failed.clone();
        let timings: Arc<OnceLock<Arc<Timings>>> = Arc::default();
        let flusher_timings = timings.clone();
        let flusher = std::thread::Builder::new()
            .name("raftq-log-flush".into())
            .spawn(move || {
                flusher(
                    flusher_disk,
                    flush_rx,
                    flusher_stats,
                    flusher_failed,
                    flusher_timings,
                )
            })?;
        let store = LogStore {
            inner: Arc::new(Inner {
                db,
                disk,
                log,
                meta,
                flush_tx: Some(flush_tx),
                flusher: Some(flusher),
                stats,
                failed,
                applied: OnceLock::new(),
                timings,
                incarnation,
                purged_below: AtomicU64::new(0),
                purging: Arc::default(),
            }),
        };
        store.remove_purged_leftovers()?;
        store.remove_gap_tail()?;
        Ok(store)
    }

    /// The flusher's counters.
    pub fn stats(&self) -> Arc<LogStats> {
        self.inner.stats.clone()
    }

    /// This log's incarnation: random, chosen when the log was created, never
    /// 0. A node that lost its data dir comes back with another one.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// Refuses, from now on, any truncation at or below the index `applied`
    /// holds (the state machine's applied index). Call once, at start.
    pub fn guard_applied(&self, applied: Arc<AtomicU64>) {
        let _ = self.inner.applied.set(applied);
    }

    /// Stamps every append and flush in `timings` from now on (the
    /// write-latency breakdown). Call once, at start.
    pub fn record_timings(&self, timings: Arc<Timings>) {
        let _ = self.inner.timings.set(timings);
    }

    /// Whether a flush has failed (the store then refuses every append).
    pub fn has_failed(&self) -> bool {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// How long the group-commit flush under way has been running, if one
    /// is: a flush that does not return means a hung or full disk.
    pub fn stalled_for(&self) -> Option<std::time::Duration> {
        let started = self.inner.stats.flush_started_ms.load(Ordering::Relaxed);
        (started > 0).then(|| std::time::Duration::from_millis(epoch_ms().saturating_sub(started)))
    }

    /// The last log index, or 0 for an empty log (purged entries count).
    pub fn last_index(&self) -> Result<u64> {
        let purged = self.read_meta::<LogId>(LAST_PURGED)?;
        Ok(self
            .last_log_id()?
            .or(purged)
            .map_or(0, |log_id| log_id.index))
    }

    /// Bytes the log database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// A purge writes `last_purged` before it removes entries; a crash in
    /// between leaves entries at or below it, which are removed here.
    fn remove_purged_leftovers(&self) -> Result<()> {
        if let Some(purged) = self.read_meta::<LogId>(LAST_PURGED)? {
            self.remove_range(..=purged.index)?;
            self.inner
                .purged_below
                .store(purged.index + 1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Entries are written in index order and sled recovers a prefix of its
    /// writes, so the log has no holes. Should one appear anyway, everything
    /// after it was never reported durable in order; it is removed, so the
    /// log stays contiguous and openraft fetches it again from the leader.
    fn remove_gap_tail(&self) -> Result<()> {
        let mut expected: Option<u64> = None;
        for key in self.inner.log.iter().keys() {
            let index = decode_index(&key?)?;
            if let Some(expected) = expected {
                if index != expected {
                    tracing::warn!(
                        missing = expected,
                        found = index,
                        "log has a gap; removing the entries after it"
                    );
                    self.remove_range(expected..)?;
                    self.inner.disk.flush()?;
                    return Ok(());
                }
            }
            expected = Some(index + 1);
        }
        Ok(())
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        let what = || format!("log meta {:?}", String::from_utf8_lossy(key));
        self.inner
            .meta
            .get(key)?
            .map(|bytes| codec::decode_checked(&what, &bytes))
            .transpose()
    }

    async fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<()> {
        self.inner.meta.insert(key, codec::encode_checked(value)?)?;
        self.sync().await
    }

    /// Flushes and fsyncs the log database off the async runtime's threads.
    async fn sync(&self) -> Result<()> {
        let disk = self.inner.disk.clone();
        let flush = tokio::task::spawn_blocking(move || disk.flush());
        match tokio::time::timeout(SYNC_TIMEOUT, flush).await {
            Ok(joined) => joined.map_err(|err| Error::Io(std::io::Error::other(err)))?,
            Err(_) => Err(Error::Io(std::io::Error::other(format!(
                "the log did not flush within {SYNC_TIMEOUT:?}: is the disk full or hung?"
            )))),
        }
    }

    /// Makes `last_purged` durable, then removes the entries up to `upto`
    /// in chunks, on a thread of its own (see the module docs). A failed
    /// flush fails the store, as the flusher's does.
    fn remove_in_background(&self, upto: u64) {
        // Small chunks with a pause between them: each batch holds sled's
        // write lock, which appends and the group-commit flush also need.
        const CHUNK: usize = 256;
        const PAUSE: std::time::Duration = std::time::Duration::from_millis(2);
        let disk = self.inner.disk.clone();
        let log = self.inner.log.clone();
        let failed = self.inner.failed.clone();
        let purging = self.inner.purging.clone();
        let remove = move || -> Result<()> {
            let _one_at_a_time = purging.lock().unwrap_or_else(|e| e.into_inner());
            disk.flush()?;
            loop {
                let keys: Vec<sled::IVec> = log
                    .range(be_range(&(..=upto)))
                    .keys()
                    .take(CHUNK)
                    .collect::<std::result::Result<_, _>>()?;
                if keys.is_empty() {
                    return Ok(());
                }
                let mut batch = sled::Batch::default();
                for key in keys {
                    batch.remove(key);
                }
                log.apply_batch(batch)?;
                std::thread::sleep(PAUSE);
            }
        };
        std::thread::Builder::new()
            .name("raftq-log-purge".into())
            .spawn(move || {
                if let Err(err) = remove() {
                    failed.store(true, Ordering::SeqCst);
                    tracing::error!(%err, "purging the log behind a snapshot failed; the log store stops");
                }
            })
            .map(drop)
            .unwrap_or_else(|err| tracing::error!(%err, "could not start the log purge thread"));
    }

    fn remove_range(&self, range: impl RangeBounds<u64>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.inner.log.range(be_range(&range)).keys() {
            batch.remove(key?);
        }
        self.inner.log.apply_batch(batch)?;
        Ok(())
    }

    /// Reads the entries in `range`, verifying each checksum and that the
    /// indexes are contiguous. Purged entries are never returned.
    pub fn read_entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = Vec::new();
        let purged_below = self.inner.purged_below.load(Ordering::SeqCst);
        let start = match range.start_bound() {
            Bound::Included(&i) => i.max(purged_below),
            Bound::Excluded(&i) => i.saturating_add(1).max(purged_below),
            Bound::Unbounded => purged_below,
        };
        let end = range.end_bound().cloned();
        for item in self
            .inner
            .log
            .range(be_range(&(Bound::Included(start), end)))
        {
            let (key, value) = item?;
            let index = decode_index(&key)?;
            let what = || format!("log entry {index}");
            let entry: Entry = codec::decode_checked(&what, &value)?;
            if entry.log_id.index != index {
                return Err(Error::Corrupt {
                    what: what(),
                    why: format!("holds the entry of index {}", entry.log_id.index),
                });
            }
            if let Some(previous) = entries.last() {
                assert_eq!(
                    previous.log_id.index + 1,
                    index,
                    "log indexes are contiguous"
                );
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn last_log_id(&self) -> Result<Option<LogId>> {
        match self.inner.log.last()? {
            None => Ok(None),
            Some((key, value)) => {
                let index = decode_index(&key)?;
                let what = || format!("log entry {index}");
                let entry: Entry = codec::decode_checked(&what, &value)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

/// How long opening a database waits for a lock that a closing handle of
/// this same process still holds: sled's background threads release the
/// database file a moment after the last handle drops.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens a sled database, waiting up to [`LOCK_WAIT`] for its file lock. A
/// lock held longer (another live process on the same directory) is an error.
pub(crate) fn open_sled(config: sled::Config) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(err))
                if err.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return Ok(result?),
        }
    }
}

/// Reads this log's incarnation, choosing one when the log has none (a new
/// log). The choice is flushed before the log is used.
fn load_or_create_incarnation(meta: &sled::Tree, disk: &DiskSync) -> Result<u64> {
    let what = || "log meta incarnation".to_string();
    if let Some(bytes) = meta.get(INCARNATION)? {
        return codec::decode_checked(&what, &bytes);
    }
    let incarnation = crate::cluster::random_id();
    meta.insert(INCARNATION, codec::encode_checked(&incarnation)?)?;
    disk.flush()?;
    tracing::info!(incarnation = %format!("{incarnation:016x}"), "new log: chose this node's incarnation");
    Ok(incarnation)
}

/// The flusher thread: one flush for every append waiting, then completes
/// them. After a failed flush it fails every append, without flushing again.
fn flusher(
    disk: Arc<DiskSync>,
    mut rx: mpsc::Receiver<(LogFlushed<TypeConfig>, u64)>,
    stats: Arc<LogStats>,
    failed: Arc<AtomicBool>,
    timings: Arc<OnceLock<Arc<Timings>>>,
) {
    let mut waiting = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        waiting.push(first);
        while let Ok(next) = rx.try_recv() {
            waiting.push(next);
        }
        if failed.load(Ordering::Relaxed) {
            for (callback, _) in waiting.drain(..) {
                callback.log_io_completed(Err(std::io::Error::other(
                    "an earlier log flush failed; this node must restart",
                )));
            }
            continue;
        }
        let started = std::time::Instant::now();
        stats
            .flush_started_ms
            .store(epoch_ms().max(1), Ordering::Relaxed);
        let result = disk.flush();
        stats.flush_started_ms.store(0, Ordering::Relaxed);
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats
            .flushed_appends
            .fetch_add(waiting.len() as u64, Ordering::Relaxed);
        stats
            .flush_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(_) => {
                if let Some(timings) = timings.get() {
                    let last = waiting.iter().map(|(_, last)| *last).max().unwrap_or(0);
                    timings.flushed(last, std::time::Instant::now());
                }
                for (callback, _) in waiting.drain(..) {
                    callback.log_io_completed(Ok(()));
                }
            }
            Err(err) => {
                failed.store(true, Ordering::Relaxed);
                tracing::error!(error = %err, "log flush failed: this node stops");
                for (callback, _) in waiting.drain(..) {
                    callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
                }
            }
        }
    }
}

fn decode_index(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| Error::Corrupt {
        what: format!("log key {key:02x?}"),
        why: "not 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn be_range(range: &impl RangeBounds<u64>) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let map = |bound: Bound<&u64>| match bound {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (map(range.start_bound()), map(range.end_bound()))
}

fn storage_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, err: &Error) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(err)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        self.read_entries(range)
            .map_err(|err| storage_error(ErrorSubject::Logs, ErrorVerb::Read, &err))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<LogState<TypeConfig>> {
            let last_purged_log_id = self.read_meta::<LogId>(LAST_PURGED)?;
            let last_log_id = self.last_log_id()?.or(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        };
        read().map_err(|err| storage_error(ErrorSubject::Logs, ErrorVerb::Read, &err))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> std::result::Result<(), StorageError> {
        self.write_meta(VOTE, vote)
            .await
            .map_err(|err| storage_error(ErrorSubject::Vote, ErrorVerb::Write, &err))
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE)
            .map_err(|err| storage_error(ErrorSubject::Vote, ErrorVerb::Read, &err))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> std::result::Result<(), StorageError> {
        let write = || -> Result<()> {
            self.inner
                .meta
                .insert(COMMITTED, codec::encode_checked(&committed)?)?;
            Ok(())
        };
        write().map_err(|err| storage_error(ErrorSubject::Store, ErrorVerb::Write, &err))
    }

    async fn read_committed(&mut self) -> std::result::Result<Option<LogId>, StorageError> {
        self.read_meta::<Option<LogId>>(COMMITTED)
            .map(Option::flatten)
            .map_err(|err| storage_error(ErrorSubject::Store, ErrorVerb::Read, &err))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One insert per entry rather than one batch: sled closes its write
        // buffer twice per batch, which costs more than the batch saves. sled
        // recovers a prefix of its log after a crash, so entries written in
        // order survive in order; `remove_gap_tail` guards that at open.
        let received = std::time::Instant::now();
        let write = || -> Result<(u64, u64)> {
            let mut range: Option<(u64, u64)> = None;
            for entry in entries {
                let index = entry.log_id.index;
                if let Some((_, previous)) = range {
                    assert_eq!(previous + 1, index, "appended entries are contiguous");
                }
                range = Some((range.map_or(index, |(first, _)| first), index));
                self.inner
                    .log
                    .insert(index.to_be_bytes(), codec::encode_checked(&entry)?)?;
            }
            Ok(range.unwrap_or((0, 0)))
        };
        if self.has_failed() {
            let err = Error::Io(std::io::Error::other(
                "an earlier log flush failed; this node must restart",
            ));
            return Err(storage_error(ErrorSubject::Logs, ErrorVerb::Write, &err));
        }
        let (first, last) =
            write().map_err(|err| storage_error(ErrorSubject::Logs, ErrorVerb::Write, &err))?;
        if let Some(timings) = self.inner.timings.get() {
            timings.appended(first, last, received);
        }
        let flush_tx = self.inner.flush_tx.as_ref().expect("set until drop");
        flush_tx.send((callback, last)).await.map_err(|_| {
            let err = Error::Io(std::io::Error::other("log flusher thread has stopped"));
            storage_error(ErrorSubject::Logs, ErrorVerb::Write, &err)
        })
    }

    async fn truncate(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        let result = async {
            if let Some(applied) = self.inner.applied.get() {
                let applied = applied.load(Ordering::SeqCst);
                if applied > 0 && log_id.index <= applied {
                    tracing::error!(
                        index = log_id.index,
                        applied,
                        "the leader asks to overwrite entries this node applied: the cluster lost acknowledged entries"
                    );
                    return Err(Error::LogBelowApplied {
                        index: log_id.index,
                        applied,
                    });
                }
            }
            self.remove_range(log_id.index..)?;
            self.sync().await?;
            Ok::<_, Error>(())
        };
        result
            .await
            .map_err(|err| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, &err))
    }

    async fn purge(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        let result = async {
            if let Some(purged) = self.read_meta::<LogId>(LAST_PURGED)? {
                if purged.index >= log_id.index {
                    return Ok(());
                }
            }
            self.inner
                .meta
                .insert(LAST_PURGED, codec::encode_checked(&log_id)?)?;
            self.inner
                .purged_below
                .fetch_max(log_id.index + 1, Ordering::SeqCst);
            self.remove_in_background(log_id.index);
            Ok::<_, Error>(())
        };
        result
            .await
            .map_err(|err| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, &err))
    }
}
