//! Raft log append throughput with flush, in entries per second, against the
//! disk's raw fdatasync rate.
//!
//! An append counts once [`LogStore`] reports it durable: each appender task
//! calls openraft's `blocking_append` (append, then wait for the flusher's
//! callback) in a loop with its own clone of the store. With 64 appenders, up
//! to 64 appends wait at once and share each group-commit flush, as openraft's
//! pipelined appends do under load. Each entry is an enqueue of one 256-byte
//! message.
//!
//! The `fdatasync` group is the floor: 256 bytes written plus
//! `File::sync_data()`, in a loop, in the same directory as the logs, once
//! appending to a growing file and once overwriting the same bytes.
//!
//! After the groups, the flusher's counters are printed: appends per flush,
//! the time in sled's flush, and wall time per flush against the raw
//! fdatasync. Logs start over in a fresh directory every
//! [`RESET_AT_ENTRIES`] entries, so disk and memory use stay bounded.
//!
//! Run with `cargo bench -p raftq-storage --bench log_append`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use openraft::storage::RaftLogStorageExt;
use raftq_storage::log_store::LogStats;
use raftq_storage::types::Entry;
use raftq_storage::{Command, LogStore};
use tempfile::TempDir;

/// Size of every message body.
const BODY_BYTES: usize = 256;
/// A log starts over in a fresh directory after this many entries.
const RESET_AT_ENTRIES: u64 = 200_000;
/// The concurrency levels measured.
const APPENDERS: [u64; 2] = [1, 64];

/// Totals over every timed run of one benchmark (warm-up included).
#[derive(Debug, Default)]
struct Totals {
    appends: u64,
    flushes: u64,
    flush_micros: u64,
    wall: Duration,
}

impl Totals {
    fn add_stats(&mut self, before: &StatsSnapshot, after: &StatsSnapshot) {
        self.appends += after.appends - before.appends;
        self.flushes += after.flushes - before.flushes;
        self.flush_micros += after.flush_micros - before.flush_micros;
    }
}

#[derive(Debug, Default)]
struct StatsSnapshot {
    appends: u64,
    flushes: u64,
    flush_micros: u64,
}

impl StatsSnapshot {
    fn of(stats: &LogStats) -> Self {
        StatsSnapshot {
            appends: stats.flushed_appends.load(Ordering::Relaxed),
            flushes: stats.flushes.load(Ordering::Relaxed),
            flush_micros: stats.flush_micros.load(Ordering::Relaxed),
        }
    }
}

/// One log store under a directory of the bench, and the index to go on from.
struct Appender {
    runtime: tokio::runtime::Runtime,
    parent: PathBuf,
    generation: u64,
    store: LogStore,
    next_index: Arc<AtomicU64>,
    body: Bytes,
    totals: Totals,
}

impl Appender {
    fn new(parent: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        Appender {
            runtime,
            parent: parent.to_path_buf(),
            generation: 0,
            store: open_log(parent, 0),
            next_index: Arc::new(AtomicU64::new(1)),
            body: Bytes::from(vec![b'x'; BODY_BYTES]),
            totals: Totals::default(),
        }
    }

    /// Continues in a fresh log (untimed); the old one is closed and removed.
    fn reset(&mut self) {
        let old = self.parent.join(format!("log-{}", self.generation));
        self.generation += 1;
        self.store = open_log(&self.parent, self.generation);
        std::fs::remove_dir_all(old).expect("the old log directory can be removed");
        self.next_index.store(1, Ordering::Relaxed);
    }

    /// Appends `iters` entries from `appenders` concurrent tasks, each append
    /// waiting for its flush, and returns the wall time.
    fn run(&mut self, iters: u64, appenders: u64) -> Duration {
        if self.next_index.load(Ordering::Relaxed) > RESET_AT_ENTRIES {
            self.reset();
        }
        let tasks = appenders.min(iters).max(1);
        let before = StatsSnapshot::of(&self.store.stats());
        let started = Instant::now();
        self.runtime.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|task| {
                    let count = iters / tasks + u64::from(task < iters % tasks);
                    let mut store = self.store.clone();
                    let next_index = self.next_index.clone();
                    let body = self.body.clone();
                    tokio::spawn(async move {
                        for _ in 0..count {
                            let index = next_index.fetch_add(1, Ordering::Relaxed);
                            store
                                .blocking_append([entry(index, &body)])
                                .await
                                .expect("append on a healthy disk succeeds");
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.await.expect("appender tasks do not panic");
            }
        });
        let elapsed = started.elapsed();
        self.totals
            .add_stats(&before, &StatsSnapshot::of(&self.store.stats()));
        self.totals.wall += elapsed;
        elapsed
    }
}

fn open_log(parent: &Path, generation: u64) -> LogStore {
    LogStore::open(&parent.join(format!("log-{generation}"))).expect("a fresh log opens")
}

fn entry(index: u64, body: &Bytes) -> Entry {
    Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(Command::enqueue(
            "bench",
            [body.clone()],
            1_700_000_000_000 + index,
        )),
    }
}

/// The raw sync loop: `count` times, write 256 bytes and `sync_data`.
struct RawSync {
    file: File,
    append: bool,
    syncs: u64,
    wall: Duration,
}

impl RawSync {
    fn new(path: &Path, append: bool) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .expect("a file can be created in the bench directory");
        RawSync {
            file,
            append,
            syncs: 0,
            wall: Duration::ZERO,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let block = [b'x'; BODY_BYTES];
        if self.append {
            // Keep the file small: start again from empty (untimed).
            self.file.set_len(0).expect("the file can be truncated");
            self.file.sync_all().expect("the file can be synced");
        }
        let started = Instant::now();
        for i in 0..iters {
            if self.append {
                self.file
                    .write_all_at(&block, i * BODY_BYTES as u64)
                    .expect("write");
            } else {
                self.file.write_all_at(&block, 0).expect("write");
            }
            self.file.sync_data().expect("sync_data");
        }
        let elapsed = started.elapsed();
        self.syncs += iters;
        self.wall += elapsed;
        elapsed
    }

    fn micros_per_sync(&self) -> f64 {
        self.wall.as_secs_f64() * 1e6 / self.syncs.max(1) as f64
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
}

fn bench_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("raftq-bench-log-")
        .tempdir()
        .expect("a temporary directory can be created")
}

fn log_append(c: &mut Criterion) {
    let dir = bench_dir();

    let mut raw_append = RawSync::new(&dir.path().join("raw-append"), true);
    let mut raw_overwrite = RawSync::new(&dir.path().join("raw-overwrite"), false);
    let mut group = c.benchmark_group("fdatasync");
    configure(&mut group);
    group.bench_function("append_256B", |b| {
        b.iter_custom(|iters| raw_append.run(iters))
    });
    group.bench_function("overwrite_256B", |b| {
        b.iter_custom(|iters| raw_overwrite.run(iters))
    });
    group.finish();

    let mut group = c.benchmark_group("log_append");
    configure(&mut group);
    let mut results = Vec::new();
    for appenders in APPENDERS {
        let mut appender = Appender::new(&dir.path().join(format!("appenders-{appenders}")));
        group.bench_function(format!("appenders/{appenders}"), |b| {
            b.iter_custom(|iters| appender.run(iters, appenders))
        });
        results.push((appenders, appender.totals));
    }
    group.finish();

    for (name, raw) in [("append", &raw_append), ("overwrite", &raw_overwrite)] {
        if raw.syncs > 0 {
            eprintln!(
                "fdatasync/{name}_256B: {} syncs, {:.0} us per sync ({:.0} syncs/s)",
                raw.syncs,
                raw.micros_per_sync(),
                1e6 / raw.micros_per_sync()
            );
        }
    }
    for (appenders, totals) in results {
        if totals.flushes == 0 {
            continue;
        }
        let flushes = totals.flushes as f64;
        let wall_micros_per_flush = totals.wall.as_secs_f64() * 1e6 / flushes;
        eprintln!(
            "log_append/appenders/{appenders}: {} appends in {} flushes = {:.1} appends per flush; \
             {:.0} us in sled flush per flush; {:.0} us wall per flush ({:.0} flushes/s)",
            totals.appends,
            totals.flushes,
            totals.appends as f64 / flushes,
            totals.flush_micros as f64 / flushes,
            wall_micros_per_flush,
            1e6 / wall_micros_per_flush,
        );
        for (name, raw) in [("append", &raw_append), ("overwrite", &raw_overwrite)] {
            if raw.syncs > 0 {
                eprintln!(
                    "log_append/appenders/{appenders}: wall per flush / raw fdatasync ({name}): {:.2}x",
                    wall_micros_per_flush / raw.micros_per_sync()
                );
            }
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().without_plots().configure_from_args();
    log_append(&mut criterion);
    criterion.final_summary();
}
