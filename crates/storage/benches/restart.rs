//! What a restart costs, and what a message costs in memory: builds a state
//! of [`MESSAGES`] messages through real applies, snapshots it, loads the
//! snapshot as a restart does, and re-applies [`REPLAYED_ENTRIES`] log
//! entries of 100 messages after it (openraft's replay at start: the log
//! since the last snapshot). Prints each time and the resident memory the
//! state added per message.
//!
//! Not a criterion benchmark: each step runs once, on a big state.
//! Run with `cargo bench -p raftq-storage --bench restart` (about a minute;
//! `RAFTQ_BENCH_MESSAGES=N` changes the size).

use std::time::Instant;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use raftq_storage::queue::{NewMessage, QueueName, Timestamp};
use raftq_storage::types::Entry;
use raftq_storage::{Command, StateMachine};

/// Messages in the state.
const MESSAGES: u64 = 1_000_000;
/// Log entries re-applied after the snapshot (of 100 messages each).
const REPLAYED_ENTRIES: u64 = 2_000;
/// Messages per enqueue entry while building the state.
const PER_ENTRY: u64 = 100;
/// Body size, bytes.
const BODY_BYTES: usize = 256;

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

/// Resident memory of this process, bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Enqueues of `PER_ENTRY` messages, with client-made dedup ids as the
/// client library sends them, from index `first`.
fn enqueues(first: u64, count: u64, now: u64) -> Vec<Entry> {
    (0..count)
        .map(|n| {
            let messages = (0..PER_ENTRY)
                .map(|m| NewMessage {
                    dedup_id: Some(format!("0123456789abcdef-{}", (first + n) * PER_ENTRY + m)),
                    ..NewMessage::new(vec![b'x'; BODY_BYTES])
                })
                .collect();
            entry(
                first + n,
                Command::Enqueue {
                    queue: QueueName::new("bench"),
                    messages,
                    now: Timestamp(now + n),
                },
            )
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let messages: u64 = std::env::var("RAFTQ_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    let dir = tempfile::Builder::new()
        .prefix("raftq-bench-restart-")
        .tempdir()
        .expect("tempdir");
    let now = 1_700_000_000_000;
    let before = rss_bytes();
    let mut sm = StateMachine::open(dir.path()).expect("open");
    sm.apply_entries(vec![entry(1, Command::create("bench", now))])
        .expect("create");
    let entries = messages / PER_ENTRY;
    let started = Instant::now();
    let mut next = 2;
    while next < 2 + entries {
        let count = 1_000.min(2 + entries - next);
        sm.apply_entries(enqueues(next, count, now)).expect("apply");
        next += count;
    }
    let applied_in = started.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "state: {messages} messages of {BODY_BYTES} bytes applied in {:.2} s ({:.0} messages/s); resident memory +{} MiB = {} bytes per message ({} beyond the body)",
        applied_in.as_secs_f64(),
        messages as f64 / applied_in.as_secs_f64(),
        grown >> 20,
        grown / messages,
        (grown / messages).saturating_sub(BODY_BYTES as u64)
    );

    let started = Instant::now();
    let mut builder = sm.get_snapshot_builder().await;
    let copied_in = started.elapsed();
    let snapshot = builder.build_snapshot().await.expect("build");
    let size = snapshot.snapshot.metadata().await.expect("size").len();
    println!(
        "snapshot: point-in-time copy {:.0} ms (applies wait for this), written and fsynced in {:.2} s, {} MiB",
        copied_in.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64(),
        size >> 20
    );
    drop(builder);
    drop(sm);

    let started = Instant::now();
    let mut sm = StateMachine::open(dir.path()).expect("reopen");
    let loaded_in = started.elapsed();
    let replay = enqueues(next, REPLAYED_ENTRIES, now + entries);
    let replayed: u64 = replay.len() as u64;
    let started_replay = Instant::now();
    for chunk in replay.chunks(64) {
        sm.apply_entries(chunk.to_vec()).expect("replay");
    }
    let replayed_in = started_replay.elapsed();
    let (applied, _) = sm.applied_state().await.expect("applied");
    println!(
        "restart: snapshot loaded in {:.2} s; {} log entries ({} messages) re-applied in {:.2} s; applied index {}",
        loaded_in.as_secs_f64(),
        replayed,
        replayed * PER_ENTRY,
        replayed_in.as_secs_f64(),
        applied.map_or(0, |id| id.index)
    );
}
