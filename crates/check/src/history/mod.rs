//! The operation history: everything the workload asked the cluster and what
//! it answered, in the order it was observed.
//!
//! Each operation is two records: an *invoke* when a process (one workload
//! worker) sends it, and a *completion* when the answer arrives, in one of
//! three phases:
//!
//! - `ok`: the call returned; per-item results (an enqueued message's id, a
//!   receipt refused as stale) are inside the operation;
//! - `fail`: the server definitely refused it, nothing happened;
//! - `unknown`: a timeout or a broken connection; it may or may not have
//!   happened, and the checker must allow both.
//!
//! Real-time order comes from the sequence numbers: operation A *happened
//! before* B when A's completion has a lower `seq` than B's invoke. The
//! millisecond timestamps are for liveness figures (failover time), never for
//! safety decisions, except where the checker says so (lease length).
//!
//! Invariants (asserted by [`History::from_records`], kept by construction in
//! [`History::invoke`] and [`History::complete`]):
//! - `seq` strictly increases and `time_ms` never decreases along the records;
//! - a completion names the `seq` of an earlier invoke of the same process,
//!   and an invoke is completed at most once;
//! - a process has at most one operation in flight (workers are sequential).
//!
//! What it does not do: it does not stream to disk while it runs (the file is
//! written with [`History::write_jsonl`] at the end), and it keeps at most
//! [`MAX_RECORDS`] records in memory; past that, records are counted as
//! dropped and the checker calls the run inconclusive. Faults a nemesis injects
//! can be recorded as [`Op::Fault`] so that a history file carries its fault
//! windows ([`History::fault_windows`]).
//!
//! The operations themselves (what an enqueue, a receive, an ack carries)
//! are in `op.rs`.

mod op;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use op::{DeliveryRecord, EnqueueResult, NewPayload, Op, Origin, PayloadId, ReceiptResult};

/// Most records a history keeps in memory (two per operation). At the limit
/// new records are dropped and counted; the workload stops before it, and the
/// checker reports a truncated history as inconclusive. A record is a few
/// hundred bytes, so this bounds a history to a few hundred MB.
pub const MAX_RECORDS: usize = 1_000_000;
/// Who performed an operation: one sequential worker, such as `producer-3`,
/// `consumer-1`, `drain` or `nemesis`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Process(pub String);

impl Process {
    /// A process named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Process(name.into())
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
/// Where an operation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Sent; the outcome is not known yet.
    Invoke,
    /// Returned; per-item results are in the operation.
    Ok,
    /// Definitely refused by the server: it did not happen.
    Fail,
    /// Timed out or cut off: it may or may not have happened.
    Unknown,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the history, strictly increasing from 0.
    pub seq: u64,
    /// Milliseconds since the history started.
    pub time_ms: u64,
    /// The worker that performed it.
    pub process: Process,
    /// The node it went to, when known (the client routes calls itself and
    /// does not say where; node status calls know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Invoke, or how it completed.
    pub phase: Phase,
    /// For a completion, the `seq` of its invoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke_seq: Option<u64>,
    /// The operation.
    pub op: Op,
    /// The error of a `fail` or `unknown` completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An operation in flight: what [`History::invoke`] returns and
/// [`History::complete`] takes.
#[derive(Debug)]
#[must_use = "an invoked operation must be completed"]
pub struct Invocation {
    seq: u64,
    process: Process,
    node: Option<String>,
}

impl Invocation {
    /// The `seq` of the invoke record.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// A window in which a fault was active, in ms since the history started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// When the fault began.
    pub start_ms: u64,
    /// When it was healed (`u64::MAX` if never).
    pub end_ms: u64,
}

impl FaultWindow {
    /// Whether `time_ms` falls inside the window.
    pub fn contains(&self, time_ms: u64) -> bool {
        (self.start_ms..=self.end_ms).contains(&time_ms)
    }
}

/// Live counts of a history, for a progress line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Milliseconds since the history started.
    pub elapsed_ms: u64,
    /// Cluster calls sent.
    pub invoked: u64,
    /// Calls that returned.
    pub ok: u64,
    /// Calls the server refused.
    pub fail: u64,
    /// Calls whose outcome is unknown.
    pub unknown: u64,
}

impl Progress {
    /// Calls completed in any phase.
    pub fn done(&self) -> u64 {
        self.ok + self.fail + self.unknown
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>6.1}s  {} ops  {} ok  {} fail  {} unknown",
            self.elapsed_ms as f64 / 1000.0,
            self.done(),
            self.ok,
            self.fail,
            self.unknown
        )
    }
}

#[derive(Default)]
struct Counters {
    invoked: AtomicU64,
    ok: AtomicU64,
    fail: AtomicU64,
    unknown: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    records: Vec<Record>,
    next_seq: u64,
}

struct Inner {
    started: Instant,
    state: Mutex<State>,
    counters: Counters,
}

/// An append-only, shared operation history. Cheap to clone; clones append to
/// the same records.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("records", &self.len())
            .finish()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        History {
            inner: Arc::new(Inner {
                started: Instant::now(),
                state: Mutex::default(),
                counters: Counters::default(),
            }),
        }
    }

    /// A history of given records (read from a file, or made by hand in a
    /// test), after checking its invariants.
    pub fn from_records(records: Vec<Record>) -> Result<Self> {
        validate(&records)?;
        let history = History::new();
        for record in &records {
            history.count(record);
        }
        let mut state = history.lock();
        state.next_seq = records.last().map_or(0, |r| r.seq + 1);
        state.records = records;
        drop(state);
        Ok(history)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .expect("history lock: appends do not panic while holding it")
    }

    /// Milliseconds since the history started.
    pub fn elapsed_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    /// Records an operation being sent.
    pub fn invoke(&self, process: &Process, node: Option<String>, op: Op) -> Invocation {
        let seq = self.append(process, node.clone(), Phase::Invoke, None, op, None);
        Invocation {
            seq,
            process: process.clone(),
            node,
        }
    }

    /// Records how an operation ended. `op` is the request with its results
    /// filled in; `error` says why a `fail` or `unknown` ended.
    pub fn complete(&self, invocation: Invocation, phase: Phase, op: Op, error: Option<String>) {
        assert!(
            phase != Phase::Invoke,
            "a completion is ok, fail or unknown"
        );
        let Invocation { seq, process, node } = invocation;
        self.append(&process, node, phase, Some(seq), op, error);
    }

    fn append(
        &self,
        process: &Process,
        node: Option<String>,
        phase: Phase,
        invoke_seq: Option<u64>,
        op: Op,
        error: Option<String>,
    ) -> u64 {
        let mut state = self.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        let time_ms = self.elapsed_ms();
        let record = Record {
            seq,
            time_ms,
            process: process.clone(),
            node,
            phase,
            invoke_seq,
            op,
            error,
        };
        self.count(&record);
        if state.records.len() >= MAX_RECORDS {
            // The sequence still advances, so that the records kept keep
            // their meaning; the record itself is only counted.
            self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return seq;
        }
        state.records.push(record);
        seq
    }

    fn count(&self, record: &Record) {
        if !record.op.is_client_call() {
            return;
        }
        let counter = match record.phase {
            Phase::Invoke => &self.inner.counters.invoked,
            Phase::Ok => &self.inner.counters.ok,
            Phase::Fail => &self.inner.counters.fail,
            Phase::Unknown => &self.inner.counters.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a fault's start; complete it with [`History::fault_end`].
    pub fn fault_start(&self, name: impl Into<String>) -> Invocation {
        self.invoke(
            &Process::new("nemesis"),
            None,
            Op::Fault { name: name.into() },
        )
    }

    /// Names a fault recorded by [`History::fault_start`] once it is known
    /// what it hit (a fault is recorded before its actions run, so that its
    /// window starts when they do).
    pub fn name_fault(&self, fault: &Invocation, name: impl Into<String>) {
        let name = name.into();
        if let Some(record) = self
            .lock()
            .records
            .iter_mut()
            .rev()
            .find(|r| r.seq == fault.seq)
        {
            record.op = Op::Fault { name };
        }
    }

    /// Records a fault's end (the cluster healed from it).
    pub fn fault_end(&self, fault: Invocation) {
        let op = self
            .lock()
            .records
            .iter()
            .rev()
            .find(|r| r.seq == fault.seq)
            .map(|r| r.op.clone())
            .unwrap_or(Op::Fault {
                name: String::new(),
            });
        self.complete(fault, Phase::Ok, op, None);
    }

    /// The windows of the faults recorded in this history; a fault never
    /// healed lasts to `u64::MAX`.
    pub fn fault_windows(&self) -> Vec<FaultWindow> {
        let state = self.lock();
        let records = &state.records;
        let ends: BTreeMap<u64, u64> = records
            .iter()
            .filter(|r| matches!(r.op, Op::Fault { .. }))
            .filter_map(|r| r.invoke_seq.map(|seq| (seq, r.time_ms)))
            .collect();
        records
            .iter()
            .filter(|r| matches!(r.op, Op::Fault { .. }) && r.phase == Phase::Invoke)
            .map(|r| FaultWindow {
                start_ms: r.time_ms,
                end_ms: ends.get(&r.seq).copied().unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// Live counts, for a progress line.
    pub fn progress(&self) -> Progress {
        let c = &self.inner.counters;
        Progress {
            elapsed_ms: self.elapsed_ms(),
            invoked: c.invoked.load(Ordering::Relaxed),
            ok: c.ok.load(Ordering::Relaxed),
            fail: c.fail.load(Ordering::Relaxed),
            unknown: c.unknown.load(Ordering::Relaxed),
        }
    }

    /// Records kept so far.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no record was kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the history is within `reserve` records of [`MAX_RECORDS`]:
    /// the workload stops invoking then.
    pub fn is_nearly_full(&self, reserve: usize) -> bool {
        self.len() + reserve >= MAX_RECORDS
    }

    /// Records dropped because the history was full.
    pub fn dropped(&self) -> u64 {
        self.inner.counters.dropped.load(Ordering::Relaxed)
    }

    /// A copy of the records, in order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// Writes the records as JSON lines.
    pub fn write_to(&self, writer: impl Write) -> Result<()> {
        let mut writer = BufWriter::new(writer);
        for record in self.lock().records.iter() {
            serde_json::to_writer(&mut writer, record)
                .map_err(|source| Error::Json { line: 0, source })?;
            writer.write_all(b"\n")?;
        }
        writer.flush()?;
        Ok(())
    }

    /// Writes the records as JSON lines to a file, replacing it.
    pub fn write_jsonl(&self, path: impl AsRef<Path>) -> Result<()> {
        self.write_to(File::create(path)?)
    }

    /// Reads a history written by [`History::write_to`]. Blank lines are
    /// skipped.
    pub fn read_from(reader: impl Read) -> Result<Self> {
        let mut records = Vec::new();
        for (index, line) in BufReader::new(reader).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            if records.len() >= MAX_RECORDS {
                return Err(Error::Malformed(format!("more than {MAX_RECORDS} records")));
            }
            let record = serde_json::from_str(&line).map_err(|source| Error::Json {
                line: index + 1,
                source,
            })?;
            records.push(record);
        }
        History::from_records(records)
    }

    /// Reads a history from a JSON lines file.
    pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Self> {
        Self::read_from(File::open(path)?)
    }
}

/// Checks the invariants listed in the module doc.
fn validate(records: &[Record]) -> Result<()> {
    let mut open: BTreeMap<u64, &Process> = BTreeMap::new();
    let mut in_flight: BTreeMap<&Process, u64> = BTreeMap::new();
    let mut previous: Option<&Record> = None;
    for record in records {
        if let Some(previous) = previous {
            if record.seq <= previous.seq || record.time_ms < previous.time_ms {
                return Err(Error::Malformed(format!(
                    "record {} (at {} ms) follows record {} (at {} ms)",
                    record.seq, record.time_ms, previous.seq, previous.time_ms
                )));
            }
        }
        previous = Some(record);
        match (record.phase, record.invoke_seq) {
            (Phase::Invoke, None) => {
                if let Some(other) = in_flight.insert(&record.process, record.seq) {
                    return Err(Error::Malformed(format!(
                        "process {} invokes {} while {other} is in flight",
                        record.process, record.seq
                    )));
                }
                open.insert(record.seq, &record.process);
            }
            (Phase::Invoke, Some(_)) => {
                return Err(Error::Malformed(format!(
                    "invoke {} names an invoke_seq",
                    record.seq
                )))
            }
            (_, None) => {
                return Err(Error::Malformed(format!(
                    "completion {} names no invoke",
                    record.seq
                )))
            }
            (_, Some(invoke)) => {
                if open.remove(&invoke) != Some(&record.process) {
                    return Err(Error::Malformed(format!(
                        "completion {} of {} matches no open invoke of that process",
                        record.seq, record.process
                    )));
                }
                in_flight.remove(&record.process);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enqueue(payload: &str) -> Op {
        Op::Enqueue {
            queue: "q".into(),
            messages: vec![NewPayload {
                payload: PayloadId::new(payload),
                group: Some("g".into()),
            }],
            results: vec![],
        }
    }

    #[test]
    fn records_round_trip_through_json_lines() {
        let history = History::new();
        let p = Process::new("producer-0");
        let invocation = history.invoke(&p, None, enqueue("a"));
        let mut done = enqueue("a");
        if let Op::Enqueue { results, .. } = &mut done {
            results.push(EnqueueResult {
                payload: PayloadId::new("a"),
                id: Some(7),
                duplicate: false,
                refused: None,
            });
        }
        history.complete(invocation, Phase::Ok, done, None);
        let c = Process::new("consumer-0");
        let receive = Op::Receive {
            queue: "q".into(),
            max: 10,
            visibility_ms: Some(2_000),
            deliveries: vec![],
        };
        let invocation = history.invoke(&c, Some("127.0.0.1:1".into()), receive.clone());
        history.complete(invocation, Phase::Unknown, receive, Some("timeout".into()));
        let fault = history.fault_start("kill node 1");
        history.fault_end(fault);

        let mut bytes = Vec::new();
        history.write_to(&mut bytes).expect("write");
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 6);
        assert!(text.contains(r#""type":"enqueue""#), "{text}");
        let read = History::read_from(bytes.as_slice()).expect("read");
        assert_eq!(read.records(), history.records());
        assert_eq!(read.fault_windows().len(), 1);
        assert_eq!(read.progress().ok, 1);
        assert_eq!(read.progress().unknown, 1);

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("history.jsonl");
        history.write_jsonl(&path).expect("write file");
        let read = History::read_jsonl(&path).expect("read file");
        assert_eq!(read.records(), history.records());
    }

    #[test]
    fn malformed_histories_are_refused() {
        let history = History::new();
        let p = Process::new("p");
        let invocation = history.invoke(&p, None, enqueue("a"));
        history.complete(invocation, Phase::Fail, enqueue("a"), Some("no".into()));
        let mut records = history.records();
        records[1].invoke_seq = Some(5);
        assert!(History::from_records(records).is_err());

        let mut records = history.records();
        records.swap(0, 1);
        assert!(History::from_records(records).is_err());

        let line = "{\"seq\": 0}\n";
        match History::read_from(line.as_bytes()) {
            Err(Error::Json { line: 1, .. }) => {}
            other => panic!("expected a JSON error on line 1, got {other:?}"),
        }
    }
}
