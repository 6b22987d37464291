//! Crash safety and snapshots of the sled stores, on real temp directories.
//!
//! - A child process appends and applies entries, snapshots every 300, and
//!   reports each append that openraft would have been told is durable; it is
//!   killed with SIGKILL at a seeded moment (between applies and snapshots, or
//!   in the middle of one). Reopened, the log holds every reported entry, and
//!   the state machine (its newest whole snapshot, then the log's tail
//!   replayed) equals a fresh replay of the log.
//! - A corrupted log record is reported as a storage error, never applied.
//! - A snapshot of a state of 100k+ messages installs on a fresh store with
//!   identical stats and identical next deliveries, and survives a reopen.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use openraft::storage::{
    RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use raftq_storage::command::{Command, Response};
use raftq_storage::queue::{NewMessage, QueueName, Receipt, Timestamp};
use raftq_storage::types::Entry;
use raftq_storage::{LogStore, StateMachine};

const CHILD_DIR_ENV: &str = "RAFTQ_CRASH_CHILD_DIR";
/// Upper bounds of the child's loop: it is meant to be killed long before.
const CHILD_MAX_ENTRIES: u64 = 200_000;
const CHILD_MAX_TIME: Duration = Duration::from_secs(60);
/// The child snapshots its state every this many entries.
const SNAPSHOT_EVERY: u64 = 300;

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

/// The workload both the child and the checks use: the command at `index`,
/// given the receipts handed out so far.
fn command_at(index: u64, receipts: &mut Vec<Receipt>) -> Command {
    let now = 1_000_000 + index * 10;
    match index {
        1 => Command::create("jobs", now),
        _ if index.is_multiple_of(4) => Command::Receive {
            queue: QueueName::new("jobs"),
            max: 5,
            visibility_ms: Some(1_000),
            max_bytes: None,
            consumer: "child".into(),
            now: Timestamp(now),
        },
        _ if index % 4 == 1 && !receipts.is_empty() => Command::ack("jobs", receipts.drain(..)),
        _ => Command::Enqueue {
            queue: QueueName::new("jobs"),
            messages: (0..3)
                .map(|n| NewMessage {
                    dedup_id: (n == 0).then(|| format!("d{}", index % 50)),
                    ..NewMessage::new(vec![index as u8; 200])
                })
                .collect(),
            now: Timestamp(now),
        },
    }
}

fn collect_receipts(response: &Response, receipts: &mut Vec<Receipt>) {
    if let Response::Received { deliveries, .. } = response {
        receipts.extend(deliveries.iter().map(|d| d.receipt));
    }
}

/// Runs only as the child of `log_entries_reported_durable_survive_sigkill`.
#[test]
fn child_appends_and_applies_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // Not the child: nothing to do.
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = Path::new(&dir);
        let mut log = LogStore::open(&dir.join("log")).expect("open log");
        let mut sm = StateMachine::open(&dir.join("sm")).expect("open sm");
        let mut receipts = Vec::new();
        let started = Instant::now();
        for index in 1..=CHILD_MAX_ENTRIES {
            if started.elapsed() > CHILD_MAX_TIME {
                break;
            }
            let entry = entry(index, command_at(index, &mut receipts));
            log.blocking_append([entry.clone()]).await.expect("append");
            println!("durable {index}");
            let responses = sm.apply_entries([entry]).expect("apply");
            collect_receipts(&responses[0], &mut receipts);
            if index.is_multiple_of(SNAPSHOT_EVERY) {
                // As openraft's policy would: the kill may land before, in
                // the middle of or after writing it.
                sm.get_snapshot_builder()
                    .await
                    .build_snapshot()
                    .await
                    .expect("snapshot");
            }
        }
    });
}

fn seed() -> u64 {
    let seed = std::env::var("RAFTQ_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
        });
    eprintln!("seed: {seed} (rerun with RAFTQ_TEST_SEED={seed})");
    seed
}

/// Replays `entries` on a fresh state machine and returns its digest.
fn replay_digest(dir: &Path, entries: &[Entry]) -> u64 {
    let mut sm = StateMachine::open(dir).expect("open fresh sm");
    sm.apply_entries(entries.iter().cloned()).expect("replay");
    let reader = sm.reader();
    let digest = reader.read().queues.digest();
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_entries_reported_durable_survive_sigkill_and_the_state_equals_the_log_prefix() {
    let mut rng = seed();
    for round in 0..3 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let kill_after = 100 + (rng >> 33) % 1500;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Process::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "child_appends_and_applies_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut reported = 0u64;
        for line in lines.by_ref() {
            let line = line.expect("read child");
            if let Some(n) = line.strip_prefix("durable ") {
                reported = n.parse().expect("index");
                if reported >= kill_after {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL the child");
        // Lines the child wrote before it died were reported too.
        for line in lines {
            if let Some(n) = line.expect("read child").strip_prefix("durable ") {
                reported = n.parse().expect("index");
            }
        }
        child.wait().expect("reap child");
        assert!(
            reported >= kill_after,
            "round {round}: child stopped early at {reported}"
        );

        let mut log = LogStore::open(&dir.path().join("log")).expect("reopen log");
        let entries = log.try_get_log_entries(1..).await.expect("read log");
        assert!(
            entries.len() as u64 >= reported,
            "round {round}: {} entries on disk, {reported} reported durable",
            entries.len()
        );
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.log_id.index, i as u64 + 1, "contiguous from 1");
        }
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(
            state.last_log_id.map(|id| id.index),
            Some(entries.len() as u64)
        );

        let mut sm = StateMachine::open(&dir.path().join("sm")).expect("reopen sm");
        let (applied, _) = sm.applied_state().await.expect("applied state");
        let applied = applied.map_or(0, |id| id.index);
        assert!(
            applied <= entries.len() as u64,
            "applied only what was logged"
        );
        // Durable reports come after the previous entry's snapshot returned.
        let last_whole_snapshot = (reported - 1) / SNAPSHOT_EVERY * SNAPSHOT_EVERY;
        assert!(
            applied >= last_whole_snapshot && applied.is_multiple_of(SNAPSHOT_EVERY),
            "round {round}: restarted from the snapshot at {applied}, \
             the newest whole one is at {last_whole_snapshot} or later"
        );
        sm.apply_entries(entries[applied as usize..].iter().cloned())
            .expect("replay tail");
        let recovered = sm.reader().read().queues.digest();
        let fresh = replay_digest(&dir.path().join("fresh"), &entries);
        assert_eq!(
            recovered, fresh,
            "round {round}: recovered state equals the log's prefix"
        );
        eprintln!(
            "round {round}: killed after {reported} reported, {} on disk, {applied} applied",
            entries.len()
        );
    }
}

#[tokio::test]
async fn a_corrupted_log_record_is_reported_as_a_storage_error_and_never_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    {
        let mut log = LogStore::open(&path).expect("open");
        let mut receipts = Vec::new();
        for index in 1..=10 {
            log.blocking_append([entry(index, command_at(index, &mut receipts))])
                .await
                .expect("append");
        }
    }
    {
        // Flip one bit of entry 5's payload behind the store's back.
        // The log store's segment size (sled refuses another one).
        let db = sled::Config::new()
            .path(&path)
            .segment_size(8 * 1024 * 1024)
            .open()
            .expect("open raw");
        let tree = db.open_tree("log").expect("tree");
        let key = 5u64.to_be_bytes();
        let mut value = tree.get(key).expect("get").expect("entry 5").to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x10;
        tree.insert(key, value).expect("insert");
        db.flush().expect("flush");
    }
    let mut log = LogStore::open(&path).expect("reopen");
    assert_eq!(
        log.try_get_log_entries(1..5)
            .await
            .expect("entries before it")
            .len(),
        4
    );
    let err = log
        .try_get_log_entries(1..=10)
        .await
        .expect_err("corruption detected");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[tokio::test]
async fn vote_and_committed_index_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let vote = openraft::Vote::new_committed(3, 2);
    let committed = Some(LogId::new(CommittedLeaderId::new(3, 2), 17));
    {
        let mut log = LogStore::open(&path).expect("open");
        log.save_vote(&vote).await.expect("vote");
        log.save_committed(committed).await.expect("committed");
    }
    let mut log = LogStore::open(&path).expect("reopen");
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(log.read_committed().await.expect("committed"), committed);
}

/// Builds a state of `messages` messages across two queues, with leases,
/// groups, delays and dedup ids, through real applies.
fn big_state(sm: &mut StateMachine, messages: u64) -> u64 {
    let mut index = 0;
    let mut next = |command: Command| {
        index += 1;
        entry(index, command)
    };
    let now = 5_000_000;
    let mut entries = vec![
        next(Command::create("orders", now)),
        next(Command::create("audit", now)),
    ];
    let per_entry = 100;
    for batch in 0..messages / per_entry {
        let queue = if batch % 5 == 0 { "audit" } else { "orders" };
        let messages = (0..per_entry)
            .map(|n| {
                let i = batch * per_entry + n;
                NewMessage {
                    group: (i % 7 == 0).then(|| format!("g{}", i % 13)),
                    dedup_id: (i % 11 == 0).then(|| format!("dedup-{i}")),
                    delay_ms: (i % 17 == 0).then_some(60_000),
                    ..NewMessage::new(vec![(i % 251) as u8; 256])
                }
            })
            .collect();
        entries.push(next(Command::Enqueue {
            queue: QueueName::new(queue),
            messages,
            now: Timestamp(now + batch),
        }));
    }
    for _ in 0..20 {
        entries.push(next(Command::Receive {
            queue: QueueName::new("orders"),
            max: 100,
            visibility_ms: Some(30_000),
            max_bytes: None,
            consumer: "snap".into(),
            now: Timestamp(now + 10_000),
        }));
    }
    for chunk in entries.chunks(64) {
        sm.apply_entries(chunk.iter().cloned()).expect("apply");
    }
    index
}

fn receive_all(sm: &mut StateMachine, index: u64, now: u64) -> Vec<Response> {
    let commands = [
        Command::receive("orders", 100, now),
        Command::receive("audit", 100, now),
        Command::receive("orders", 100, now + 40_000),
    ];
    let entries: Vec<Entry> = commands
        .into_iter()
        .enumerate()
        .map(|(n, command)| entry(index + 1 + n as u64, command))
        .collect();
    sm.apply_entries(entries).expect("apply receives")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_100k_messages_installs_with_identical_stats_and_deliveries() {
    let source_dir = tempfile::tempdir().expect("tempdir");
    let target_dir = tempfile::tempdir().expect("tempdir");
    let mut source = StateMachine::open(source_dir.path()).expect("open source");
    let last = big_state(&mut source, 100_000);

    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(snapshot.meta.last_log_id.map(|id| id.index), Some(last));
    let snapshot_bytes = snapshot.snapshot.metadata().await.expect("metadata").len();
    assert!(
        snapshot_bytes > 100_000 * 256,
        "the file holds every body: {snapshot_bytes} bytes"
    );

    let mut target = StateMachine::open(target_dir.path()).expect("open target");
    let mut incoming = target.begin_receiving_snapshot().await.expect("begin");
    let mut data = source
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("some")
        .snapshot;
    tokio::io::copy(&mut data, &mut *incoming)
        .await
        .expect("stream the snapshot");
    target
        .install_snapshot(&snapshot.meta, incoming)
        .await
        .expect("install");

    let stats = |sm: &StateMachine| {
        let reader = sm.reader();
        let state = reader.read();
        let now = Timestamp(5_010_000);
        (
            state.queues.digest(),
            state
                .queues
                .stats(&QueueName::new("orders"), now)
                .expect("orders"),
            state
                .queues
                .stats(&QueueName::new("audit"), now)
                .expect("audit"),
            state.last_applied,
        )
    };
    let (digest, orders, audit, applied) = stats(&source);
    assert_eq!(
        orders.ready + orders.in_flight + orders.delayed + audit.ready + audit.delayed,
        100_000
    );
    assert_eq!(orders.in_flight, 2_000);
    assert_eq!(
        stats(&target),
        (digest, orders.clone(), audit.clone(), applied)
    );

    // The installed state survives a reopen from disk.
    drop(target);
    let mut target = StateMachine::open(target_dir.path()).expect("reopen target");
    assert_eq!(stats(&target).0, digest);
    let cur = target
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("some");
    assert_eq!(cur.meta, snapshot.meta);

    // Both deliver the same messages next.
    let from_source = receive_all(&mut source, last, 5_020_000);
    let from_target = receive_all(&mut target, last, 5_020_000);
    assert_eq!(from_source, from_target);
    let delivered: usize = from_source
        .iter()
        .map(|r| match r {
            Response::Received { deliveries, .. } => deliveries.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(delivered, 300);
}

/// The state lives in memory; a restart loads the newest snapshot, and
/// re-applying the log after it (as openraft does at start) gives the state
/// the node had before: the same digest.
#[tokio::test]
async fn a_restart_loads_the_newest_snapshot_and_the_log_after_it_gives_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (digest, applied, snapshot_index) = {
        let mut sm = StateMachine::open(dir.path()).expect("open");
        let last = big_state(&mut sm, 2_000);
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        receive_all(&mut sm, last, 5_020_000);
        let reader = sm.reader();
        let state = reader.read();
        (
            state.queues.digest(),
            state.last_applied,
            snapshot.meta.last_log_id.map(|id| id.index),
        )
    };
    let mut sm = StateMachine::open(dir.path()).expect("reopen");
    let (reopened_at, _) = sm.applied_state().await.expect("applied");
    assert_eq!(
        reopened_at.map(|id| id.index),
        snapshot_index,
        "the snapshot"
    );
    let last = snapshot_index.expect("a snapshot was taken");
    receive_all(&mut sm, last, 5_020_000);
    assert_eq!(sm.applied_state().await.expect("applied").0, applied);
    assert_eq!(sm.reader().read().queues.digest(), digest);
    let fresh = tempfile::tempdir().expect("tempdir");
    let empty = StateMachine::open(fresh.path()).expect("open empty");
    assert_eq!(
        empty.reader().read().last_applied,
        None,
        "no snapshot: empty"
    );
}

#[tokio::test]
async fn a_truncation_below_the_applied_index_is_refused_and_the_log_keeps_its_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogStore::open(&dir.path().join("log")).expect("open log");
    let mut sm = StateMachine::open(&dir.path().join("sm")).expect("open sm");
    log.guard_applied(sm.applied_index());
    let entries: Vec<Entry> = (1..=5)
        .map(|i| {
            entry(
                i,
                if i == 1 {
                    Command::create("jobs", 1_000)
                } else {
                    Command::enqueue("jobs", ["x"], 1_000 + i)
                },
            )
        })
        .collect();
    log.blocking_append(entries.clone()).await.expect("append");
    sm.apply(entries[..3].to_vec()).await.expect("apply 1..=3");
    let conflict = LogId::new(CommittedLeaderId::new(2, 2), 3);
    let err = log
        .truncate(conflict)
        .await
        .expect_err("entry 3 was applied here");
    assert!(
        err.to_string().contains("applied up to 3"),
        "the error says what was lost: {err}"
    );
    let kept = log.try_get_log_entries(1..=5).await.expect("read");
    assert_eq!(kept.len(), 5, "nothing was removed");
    log.truncate(LogId::new(CommittedLeaderId::new(2, 2), 4))
        .await
        .expect("entries after the applied index may be replaced");
    assert_eq!(log.try_get_log_entries(1..=5).await.expect("read").len(), 3);
    let incarnation = log.incarnation();
    assert_ne!(incarnation, 0);
    drop(log);
    let reopened = LogStore::open(&dir.path().join("log")).expect("reopen");
    assert_eq!(
        reopened.incarnation(),
        incarnation,
        "the incarnation is durable"
    );
}

/// A purge behind a snapshot returns before its entries are removed (the
/// removal runs in the background, so openraft's core, which awaits the
/// purge, never stalls on it): reads never return a purged entry, appends go
/// on meanwhile, and after a reopen the purged entries are gone and the log
/// state is what openraft was told.
#[tokio::test]
async fn a_purge_hides_its_entries_at_once_and_removes_them_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let purged = LogId::new(CommittedLeaderId::new(1, 1), 20_000);
    {
        let mut log = LogStore::open(&path).expect("open");
        let entries: Vec<Entry> = (1..=20_010)
            .map(|i| entry(i, Command::enqueue("jobs", ["x"], i)))
            .collect();
        log.blocking_append(entries).await.expect("append");
        log.purge(purged).await.expect("purge");
        let kept = log.try_get_log_entries(..).await.expect("read");
        assert_eq!(
            kept.first().map(|e| e.log_id.index),
            Some(20_001),
            "no purged entry is returned"
        );
        assert_eq!(kept.len(), 10);
        assert!(log
            .try_get_log_entries(1..=20_000)
            .await
            .expect("read")
            .is_empty());
        log.blocking_append([entry(20_011, Command::enqueue("jobs", ["y"], 1))])
            .await
            .expect("an append right after a purge");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(purged));
        assert_eq!(state.last_log_id.map(|id| id.index), Some(20_011));
    }
    let mut log = LogStore::open(&path).expect("reopen");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(purged));
    assert_eq!(state.last_log_id.map(|id| id.index), Some(20_011));
    let kept = log.try_get_log_entries(..).await.expect("read");
    assert_eq!(
        kept.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (20_001..=20_011).collect::<Vec<_>>()
    );
}
