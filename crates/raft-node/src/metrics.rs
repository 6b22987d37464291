//! Prometheus metrics, served as text on the HTTP port's `/metrics`.
//!
//! Request counters and latency histograms are updated as requests run.
//! Queue depths and Raft state are read from the node when scraped, so a
//! scrape always shows the current state and nothing is updated per message.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The node's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by operation and result code.
    pub requests: IntCounterVec,
    /// Request latency by operation, seconds.
    pub request_seconds: HistogramVec,
    /// The queue state's memory: `used` (estimate) and `budget` bytes.
    pub state_memory: IntGaugeVec,
    /// Receive entries the leader proposed, by whether they leased a
    /// message (`leased`) or none (`empty`; SQS's NumberOfEmptyReceives).
    pub receives_proposed: IntCounterVec,
    /// Commands folded into each proposed Raft entry.
    pub proposal_batch_commands: Histogram,
    /// Where a write's time goes, by stage (see `propose.rs`).
    pub write_stage_seconds: HistogramVec,
    queue_messages: IntGaugeVec,
    queue_bytes: IntGaugeVec,
    queue_age: GaugeVec,
    queue_events: IntGaugeVec,
    raft: IntGaugeVec,
    log_flushes: IntGauge,
    log_flushed_appends: IntGauge,
    log_flush_micros: IntGauge,
    log_bytes: IntGauge,
    disk: IntGaugeVec,
    clock_offset: IntGaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let latency_buckets = vec![
            0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            5.0, 10.0, 20.0,
        ];
        let metrics = Metrics {
            requests: register(
                r,
                IntCounterVec::new(Opts::new("raftq_requests_total", "Requests by operation and gRPC code"), &["op", "code"])
                    .expect("valid metric"),
            ),
            request_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new("raftq_request_seconds", "Request latency by operation").buckets(latency_buckets),
                    &["op"],
                )
                .expect("valid metric"),
            ),
            state_memory: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "raftq_state_memory_bytes",
                        "Memory of the queue state: used (estimate) and budget (0: none); enqueues are refused at the budget",
                    ),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            receives_proposed: register(
                r,
                IntCounterVec::new(
                    Opts::new("raftq_receives_proposed_total", "Receive entries proposed, by result (leased, empty)"),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            proposal_batch_commands: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("raftq_proposal_batch_commands", "Client commands folded into one Raft entry")
                        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
                )
                .expect("valid metric"),
            ),
            write_stage_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "raftq_write_stage_seconds",
                        "Where a write's time goes on the leader, by stage: queue (waiting for a proposal slot), append (to the leader's log store), flush (the leader's own fsync), send (appended to the first append request carrying it sent to a follower), replicate (one append round trip to a follower, its fsync included), ack_to_commit (the first follower's answer to apply started), commit (appended here to apply started: a majority has it), apply, respond (applied to the caller woken), total",
                    )
                    .buckets(vec![
                        0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.001_5, 0.002,
                        0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                    ]),
                    &["stage"],
                )
                .expect("valid metric"),
            ),
            queue_messages: register(
                r,
                IntGaugeVec::new(
                    Opts::new("raftq_queue_messages", "Messages in a queue by state (ready, in_flight, delayed)"),
                    &["queue", "state"],
                )
                .expect("valid metric"),
            ),
            queue_bytes: register(
                r,
                IntGaugeVec::new(Opts::new("raftq_queue_bytes", "Message bytes held by a queue"), &["queue"])
                    .expect("valid metric"),
            ),
            queue_age: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "raftq_queue_oldest_age_seconds",
                        "Age of the oldest ready message, and how long the oldest lease has been held",
                    ),
                    &["queue", "state"],
                )
                .expect("valid metric"),
            ),
            queue_events: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "raftq_queue_events",
                        "Running totals per queue (enqueued, acked, dead_lettered, expired, dropped, redriven, released), as applied",
                    ),
                    &["queue", "event"],
                )
                .expect("valid metric"),
            ),
            raft: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "raftq_raft",
                        "Raft state: term, leader_id, is_leader, last_log_index, applied_index, snapshot_index, purged_index",
                    ),
                    &["field"],
                )
                .expect("valid metric"),
            ),
            log_flushes: register(r, IntGauge::new("raftq_log_flushes", "Group-commit flushes (fsyncs) of the Raft log").expect("valid metric")),
            log_flushed_appends: register(
                r,
                IntGauge::new("raftq_log_flushed_appends", "Log appends completed by those flushes").expect("valid metric"),
            ),
            log_flush_micros: register(
                r,
                IntGauge::new("raftq_log_flush_micros", "Total time spent flushing the Raft log, microseconds").expect("valid metric"),
            ),
            log_bytes: register(r, IntGauge::new("raftq_log_bytes", "Raft log size on disk").expect("valid metric")),
            disk: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "raftq_disk",
                        "The data disk: free_bytes, min_free_bytes (the alarm's limit), total_bytes, alarm (1 while below the limit: enqueues are refused)",
                    ),
                    &["field"],
                )
                .expect("valid metric"),
            ),
            clock_offset: register(
                r,
                IntGaugeVec::new(
                    Opts::new("raftq_clock_offset_ms", "A peer's wall clock minus this node's, ms, measured from Raft messages"),
                    &["peer"],
                )
                .expect("valid metric"),
            ),
            registry,
        };
        // Both results from the start, so a dashboard sees 0, not nothing.
        for result in ["leased", "empty"] {
            metrics.receives_proposed.with_label_values(&[result]);
        }
        metrics
    }

    /// Counts one finished request.
    pub fn observe(&self, op: &str, code: tonic::Code, seconds: f64) {
        self.requests
            .with_label_values(&[op, &format!("{code:?}")])
            .inc();
        self.request_seconds
            .with_label_values(&[op])
            .observe(seconds);
    }

    /// Refreshes the gauges from `node` and renders the text format.
    pub fn render(&self, node: &crate::node::Node) -> String {
        self.refresh(node);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to a Vec");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    fn refresh(&self, node: &crate::node::Node) {
        let now = node.clock.now();
        self.queue_messages.reset();
        self.queue_bytes.reset();
        self.queue_age.reset();
        self.queue_events.reset();
        {
            // O(queues) under the lock; the pass over the messages after it.
            let view = node.state.read().queues.view();
            for stats in view.stats(now) {
                let name = stats.name.as_str();
                for (label, value) in [
                    ("ready", stats.ready),
                    ("in_flight", stats.in_flight),
                    ("delayed", stats.delayed),
                ] {
                    self.queue_messages
                        .with_label_values(&[name, label])
                        .set(value as i64);
                }
                self.queue_bytes
                    .with_label_values(&[name])
                    .set(stats.bytes as i64);
                self.queue_age
                    .with_label_values(&[name, "ready"])
                    .set(stats.oldest_ready_age_ms as f64 / 1000.0);
                self.queue_age
                    .with_label_values(&[name, "in_flight"])
                    .set(stats.oldest_in_flight_age_ms as f64 / 1000.0);
                let c = &stats.counters;
                for (event, value) in [
                    ("enqueued", c.enqueued),
                    ("acked", c.acked),
                    ("dead_lettered", c.dead_lettered),
                    ("expired", c.expired),
                    ("dropped", c.dropped),
                    ("redriven", c.redriven),
                    ("released", c.released),
                ] {
                    self.queue_events
                        .with_label_values(&[name, event])
                        .set(value as i64);
                }
            }
        }
        self.state_memory
            .with_label_values(&["used"])
            .set(node.memory.used() as i64);
        self.state_memory
            .with_label_values(&["budget"])
            .set(node.memory.limit() as i64);
        let m = node.raft.metrics().borrow().clone();
        let index = |id: Option<openraft::LogId<u64>>| id.map_or(0, |id| id.index) as i64;
        for (field, value) in [
            ("term", m.current_term as i64),
            ("leader_id", m.current_leader.unwrap_or(0) as i64),
            ("is_leader", i64::from(m.current_leader == Some(node.id))),
            ("last_log_index", m.last_log_index.unwrap_or(0) as i64),
            ("applied_index", index(m.last_applied)),
            ("snapshot_index", index(m.snapshot)),
            ("purged_index", index(m.purged)),
        ] {
            self.raft.with_label_values(&[field]).set(value);
        }
        let stats = &node.log_stats;
        use std::sync::atomic::Ordering::Relaxed;
        self.log_flushes.set(stats.flushes.load(Relaxed) as i64);
        self.log_flushed_appends
            .set(stats.flushed_appends.load(Relaxed) as i64);
        self.log_flush_micros
            .set(stats.flush_micros.load(Relaxed) as i64);
        if let Ok(bytes) = node.log_size() {
            self.log_bytes.set(bytes as i64);
        }
        let disk = node.disk.state();
        for (field, value) in [
            ("free_bytes", disk.free_bytes),
            ("min_free_bytes", disk.min_free_bytes),
            ("total_bytes", disk.total_bytes),
            ("alarm", u64::from(disk.alarm)),
        ] {
            self.disk.with_label_values(&[field]).set(value as i64);
        }
        self.clock_offset.reset();
        for (peer, offset) in node.clock.peer_offsets() {
            self.clock_offset
                .with_label_values(&[&peer.to_string()])
                .set(offset);
        }
    }
}
