//! The counts every producer and consumer of a run adds to, and the body
//! header that ties a received message to its publish.
//!
//! Invariants:
//!
//! - a sequence number is handed out once (`take_seq`), and never at or past
//!   the run's `--messages` cap, so the bitmaps, sized for the cap, hold
//!   every one;
//! - `published = confirmed + failed` once every producer has finished;
//! - `received = acked + ack_failed` once every consumer has finished;
//! - a sequence number is marked received at most once: later deliveries of
//!   it count as `redelivered`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes at the start of each body: the send time (u64, ns since the run
/// started), the run's tag (u32) and the sequence number (u32), little
/// endian.
pub const HEADER_BYTES: usize = 16;

/// Most messages a run may publish: each bitmap takes one bit per message
/// (12.5 MB at this cap), and sequence numbers fit the header's u32.
pub const MAX_MESSAGES: u64 = 100_000_000;

/// What a body's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// When the publish started (was scheduled, in open loop), since the run
    /// started.
    pub sent: Duration,
    /// The run's tag: tells this run's messages from any other's.
    pub tag: u32,
    /// The message's sequence number in the run.
    pub seq: u32,
}

impl Header {
    /// A body of `size` bytes that starts with this header; a body shorter
    /// than the header carries none (publish-only runs allow it).
    pub fn body(&self, filler: &Bytes) -> Bytes {
        if filler.len() < HEADER_BYTES {
            return filler.clone();
        }
        let mut body = BytesMut::with_capacity(filler.len());
        body.put_u64_le(u64::try_from(self.sent.as_nanos()).unwrap_or(u64::MAX));
        body.put_u32_le(self.tag);
        body.put_u32_le(self.seq);
        body.extend_from_slice(&filler[HEADER_BYTES..]);
        body.freeze()
    }

    /// The header a body starts with, if it is long enough to carry one.
    pub fn read(body: &[u8]) -> Option<Header> {
        let sent = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
        let tag = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
        let seq = u32::from_le_bytes(body.get(12..16)?.try_into().ok()?);
        Some(Header {
            sent: Duration::from_nanos(sent),
            tag,
            seq,
        })
    }
}

/// One bit per sequence number, set from any task.
struct Bitmap(Vec<AtomicU64>);

impl Bitmap {
    fn new(bits: u64) -> Self {
        Bitmap((0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    /// Sets bit `n`; true when it was not set before. Bits past the end are
    /// ignored, reported as already set (callers check the cap first).
    fn set(&self, n: u64) -> bool {
        let Some(word) = self.0.get((n / 64) as usize) else {
            return false;
        };
        let mask = 1 << (n % 64);
        word.fetch_or(mask, Ordering::Relaxed) & mask == 0
    }
}

/// The first error of each kind a run saw, shown in the summary.
#[derive(Clone, Debug, Default)]
pub struct FirstErrors {
    /// The first failed publish.
    pub publish: Option<String>,
    /// The first error the consumers' streams reported.
    pub receive: Option<String>,
    /// The first failed ack.
    pub ack: Option<String>,
}

/// A snapshot of a run's counters (see [`Tally`] for each).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Publishes started.
    pub published: u64,
    /// Publishes confirmed (fsynced on a majority).
    pub confirmed: u64,
    /// Publishes that failed or had no result.
    pub failed: u64,
    /// Open loop: publishes started more than 5 ms behind schedule.
    pub late_sends: u64,
    /// Messages the consumers received (every delivery).
    pub received: u64,
    /// Acks that succeeded.
    pub acked: u64,
    /// Acks that failed.
    pub ack_failed: u64,
    /// Deliveries of a message already received.
    pub redelivered: u64,
    /// Messages received that this run did not publish.
    pub foreign: u64,
}

/// What a run counted so far. Shared by every task; all counters only grow.
pub struct Tally {
    /// When the clock started (after every client found the leader).
    pub started: Instant,
    /// This run's tag, written into every body.
    pub tag: u32,
    /// The `--messages` cap.
    cap: u64,
    /// Sequence numbers handed out, the cap not counted past.
    next_seq: AtomicU64,
    /// Publishes started.
    published: AtomicU64,
    /// Publishes confirmed.
    confirmed: AtomicU64,
    /// Publishes that failed (after the client's retries) or had no result
    /// in time.
    failed: AtomicU64,
    /// Open loop: publishes that started more than 5 ms behind schedule.
    late_sends: AtomicU64,
    /// Messages the consumers handed over (every delivery, this run's or
    /// not).
    received: AtomicU64,
    /// Deliveries of a message of this run already received before.
    redelivered: AtomicU64,
    /// Messages received that this run did not publish (left by an earlier
    /// run, or sent by someone else); acked like the others.
    foreign: AtomicU64,
    /// Acks that succeeded.
    acked: AtomicU64,
    /// Acks that failed or had no result in time.
    ack_failed: AtomicU64,
    /// When the latest message was received, in ns since `started`.
    last_received_ns: AtomicU64,
    confirmed_seqs: Bitmap,
    received_seqs: Bitmap,
    errors: Mutex<FirstErrors>,
}

impl Tally {
    /// A tally for a run of at most `cap` messages whose clock starts now.
    pub fn new(cap: u64) -> Self {
        assert!(
            cap <= MAX_MESSAGES,
            "the cap was checked against MAX_MESSAGES"
        );
        Tally {
            started: Instant::now(),
            tag: random_tag(),
            cap,
            next_seq: AtomicU64::new(0),
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            late_sends: AtomicU64::new(0),
            received: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ack_failed: AtomicU64::new(0),
            last_received_ns: AtomicU64::new(0),
            confirmed_seqs: Bitmap::new(cap),
            received_seqs: Bitmap::new(cap),
            errors: Mutex::default(),
        }
    }

    /// The next sequence number, or `None` once the cap is reached.
    pub fn take_seq(&self) -> Option<u32> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if seq >= self.cap {
            self.next_seq.store(self.cap, Ordering::Relaxed);
            return None;
        }
        self.published.fetch_add(1, Ordering::Relaxed);
        Some(u32::try_from(seq).expect("the cap is below u32::MAX"))
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counts {
            published: load(&self.published),
            confirmed: load(&self.confirmed),
            failed: load(&self.failed),
            late_sends: load(&self.late_sends),
            received: load(&self.received),
            acked: load(&self.acked),
            ack_failed: load(&self.ack_failed),
            redelivered: load(&self.redelivered),
            foreign: load(&self.foreign),
        }
    }

    /// An open-loop publish started more than 5 ms behind its schedule.
    pub fn late_send(&self) {
        self.late_sends.fetch_add(1, Ordering::Relaxed);
    }

    /// Time since the clock started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A publish was confirmed.
    pub fn confirmed(&self, seq: u32) {
        self.confirmed_seqs.set(u64::from(seq));
        self.confirmed.fetch_add(1, Ordering::Relaxed);
    }

    /// `count` publishes failed with `error`.
    pub fn failed(&self, count: u64, error: &str) {
        self.failed.fetch_add(count, Ordering::Relaxed);
        self.note(|e| &mut e.publish, error);
    }

    /// A message was received. Returns its header when it is this run's and
    /// its first delivery: only those count toward latency.
    pub fn received(&self, body: &[u8]) -> Option<Header> {
        self.received.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_received_ns.fetch_max(now, Ordering::Relaxed);
        let header =
            Header::read(body).filter(|h| h.tag == self.tag && u64::from(h.seq) < self.cap);
        let Some(header) = header else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if !self.received_seqs.set(u64::from(header.seq)) {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(header)
    }

    /// An ack succeeded (`Ok`) or failed (`Err` with why).
    pub fn acked(&self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.ack_failed.fetch_add(1, Ordering::Relaxed);
                self.note(|e| &mut e.ack, &error);
            }
        }
    }

    /// A consumer's stream reported an error.
    pub fn receive_error(&self, error: &str) {
        self.note(|e| &mut e.receive, error);
    }

    /// When the latest message was received, since the clock started.
    pub fn last_received(&self) -> Duration {
        Duration::from_nanos(self.last_received_ns.load(Ordering::Relaxed))
    }

    /// Confirmed messages not received (yet). Walks both bitmaps up to the
    /// last sequence number handed out: 1.25 M words at the cap.
    pub fn missing(&self) -> u64 {
        let issued = self.next_seq.load(Ordering::Relaxed).min(self.cap);
        let words = issued.div_ceil(64) as usize;
        self.confirmed_seqs.0[..words]
            .iter()
            .zip(&self.received_seqs.0[..words])
            .map(|(confirmed, received)| {
                let confirmed = confirmed.load(Ordering::Relaxed);
                let received = received.load(Ordering::Relaxed);
                u64::from((confirmed & !received).count_ones())
            })
            .sum()
    }

    /// The first error of each kind.
    pub fn first_errors(&self) -> FirstErrors {
        self.errors
            .lock()
            .expect("the errors lock is never poisoned")
            .clone()
    }

    fn note(&self, kind: impl FnOnce(&mut FirstErrors) -> &mut Option<String>, error: &str) {
        let mut errors = self
            .errors
            .lock()
            .expect("the errors lock is never poisoned");
        kind(&mut errors).get_or_insert_with(|| error.to_string());
    }
}

/// A tag unlikely to repeat between runs (std's hasher is seeded at random).
fn random_tag() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (seed ^ (seed >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_carries_its_header_and_keeps_its_size() {
        let header = Header {
            sent: Duration::from_nanos(123_456_789),
            tag: 0xdead_beef,
            seq: 42,
        };
        let body = header.body(&Bytes::from(vec![b'x'; 256]));
        assert_eq!(body.len(), 256);
        assert_eq!(Header::read(&body), Some(header));
        assert!(body[HEADER_BYTES..].iter().all(|&b| b == b'x'));
        let exact = header.body(&Bytes::from(vec![b'x'; HEADER_BYTES]));
        assert_eq!(Header::read(&exact), Some(header));
        let short = header.body(&Bytes::from(vec![b'x'; 8]));
        assert_eq!(short.len(), 8, "a short body keeps its size");
        assert_eq!(Header::read(&short), None, "and carries no header");
    }

    #[test]
    fn the_cap_bounds_sequence_numbers_and_missing_counts_confirmed_not_received() {
        let tally = Tally::new(3);
        let seqs: Vec<Option<u32>> = (0..5).map(|_| tally.take_seq()).collect();
        assert_eq!(seqs, [Some(0), Some(1), Some(2), None, None]);
        assert_eq!(tally.counts().published, 3);
        tally.confirmed(0);
        tally.confirmed(2);
        assert_eq!(tally.missing(), 2);
        let body = |seq| {
            Header {
                sent: Duration::ZERO,
                tag: tally.tag,
                seq,
            }
            .body(&Bytes::from(vec![0; 32]))
        };
        assert!(tally.received(&body(2)).is_some(), "first delivery");
        assert!(tally.received(&body(2)).is_none(), "a redelivery");
        assert!(
            tally.received(&body(1)).is_some(),
            "received, not confirmed"
        );
        assert!(tally.received(b"someone else's").is_none());
        assert_eq!(tally.missing(), 1, "seq 0 was confirmed, never received");
        assert_eq!(tally.counts().received, 4);
        assert_eq!(tally.counts().redelivered, 1);
        assert_eq!(tally.counts().foreign, 1);
    }

    #[test]
    fn a_corrupt_sequence_number_past_the_cap_is_ignored() {
        let tally = Tally::new(10);
        let body = Header {
            sent: Duration::ZERO,
            tag: tally.tag,
            seq: 1_000_000,
        }
        .body(&Bytes::from(vec![0; 16]));
        assert!(tally.received(&body).is_none());
        assert_eq!(tally.counts().foreign, 1, "not this run's");
        assert_eq!(tally.missing(), 0);
    }
}
