//! What a run prints: a summary for people, or one JSON object.

use std::time::Duration;

use serde_json::{json, Value};

use super::args::Plan;
use super::latency::Percentiles;
use super::tally::{Counts, FirstErrors};

/// The figures of a finished run.
pub struct Report {
    /// The settings the run used.
    pub plan: Plan,
    /// The counters at the end.
    pub counts: Counts,
    /// Confirmed messages never received; `None` without consumers.
    pub missing: Option<u64>,
    /// Whether publishing was cut short by Ctrl-C.
    pub interrupted: bool,
    /// From the start to the end of the publish phase (every publish settled).
    pub publish_time: Duration,
    /// From the start to the last message received.
    pub consume_time: Duration,
    /// From the start until every task had stopped.
    pub total_time: Duration,
    /// Publish → confirm latency.
    pub confirm_latency: Option<Percentiles>,
    /// Publish → receive latency (first deliveries).
    pub receive_latency: Option<Percentiles>,
    /// Messages the purge after the run removed; `None` if it failed.
    pub purged: Option<u64>,
    /// The first error of each kind.
    pub errors: FirstErrors,
}

impl Report {
    /// Confirmed messages per second of the publish phase.
    pub fn published_per_second(&self) -> f64 {
        per_second(self.counts.confirmed, self.publish_time)
    }

    /// Received messages per second, from the start to the last one.
    pub fn consumed_per_second(&self) -> f64 {
        per_second(self.counts.received, self.consume_time)
    }

    /// One JSON object with every figure.
    pub fn json(&self) -> Value {
        let consuming = self.plan.consumers > 0;
        json!({
            "flags": self.plan.json(),
            "published": self.counts.published,
            "confirmed": self.counts.confirmed,
            "failed": self.counts.failed,
            "late_sends": self.counts.late_sends,
            "received": self.counts.received,
            "acked": self.counts.acked,
            "ack_failed": self.counts.ack_failed,
            "redelivered": self.counts.redelivered,
            "foreign": self.counts.foreign,
            "missing": self.missing,
            "drained": consuming.then_some(self.missing == Some(0)),
            "interrupted": self.interrupted,
            "seconds": self.total_time.as_secs_f64(),
            "publish_seconds": self.publish_time.as_secs_f64(),
            "consume_seconds": consuming.then_some(self.consume_time.as_secs_f64()),
            "published_per_second": self.published_per_second(),
            "consumed_per_second": consuming.then_some(self.consumed_per_second()),
            "publish_to_confirm_ms": self.confirm_latency.map(|p| p.json()),
            "publish_to_receive_ms": self.receive_latency.map(|p| p.json()),
            "purged": self.purged,
            "errors": {
                "publish": self.errors.publish,
                "receive": self.errors.receive,
                "ack": self.errors.ack,
            },
        })
    }

    /// The summary for people.
    pub fn text(&self) -> String {
        let mut out = format!("raftq bench: {}\n", self.plan.text());
        if self.interrupted {
            out += "interrupted (Ctrl-C): publishing stopped early\n";
        }
        out += &format!(
            "published  {} confirmed, {} failed in {:.2} s: {:.0} msgs/s confirmed\n",
            self.counts.confirmed,
            self.counts.failed,
            self.publish_time.as_secs_f64(),
            self.published_per_second()
        );
        if self.counts.late_sends > 0 {
            out += &format!(
                "           {} publishes started more than 5 ms behind schedule\n",
                self.counts.late_sends
            );
        }
        if self.plan.consumers > 0 {
            out += &self.consume_text();
        }
        let latency = |p: Option<Percentiles>| p.map_or("no messages".to_string(), |p| p.text());
        out += &format!("publish → confirm ms:  {}\n", latency(self.confirm_latency));
        if self.plan.consumers > 0 {
            out += &format!("publish → receive ms:  {}\n", latency(self.receive_latency));
        }
        out += &match self.purged {
            Some(n) => format!("queue {} purged ({n} messages left over)", self.plan.queue),
            None => format!("queue {} NOT purged (see above)", self.plan.queue),
        };
        for (kind, error) in [
            ("publish", &self.errors.publish),
            ("receive", &self.errors.receive),
            ("ack", &self.errors.ack),
        ] {
            if let Some(error) = error {
                out += &format!("\nfirst {kind} error: {error}");
            }
        }
        out
    }

    fn consume_text(&self) -> String {
        let mut out = format!(
            "consumed   {} received, {} acked, {} ack failures in {:.2} s: {:.0} msgs/s received\n",
            self.counts.received,
            self.counts.acked,
            self.counts.ack_failed,
            self.consume_time.as_secs_f64(),
            self.consumed_per_second()
        );
        if self.counts.redelivered + self.counts.foreign > 0 {
            out += &format!(
                "           {} redelivered, {} not published by this run\n",
                self.counts.redelivered, self.counts.foreign
            );
        }
        out += &match self.missing {
            Some(0) => "           every confirmed message was received\n".to_string(),
            Some(n) => format!(
                "           {n} confirmed messages were NOT received by the end of the run \
                 (--drain-timeout {})\n",
                seconds(self.plan.drain_timeout)
            ),
            None => String::new(),
        };
        out
    }
}

fn per_second(count: u64, time: Duration) -> f64 {
    if time.is_zero() {
        return 0.0;
    }
    count as f64 / time.as_secs_f64()
}

/// A duration as people write it on the command line: `0s`, `1.5s`, `250ms`.
pub fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) && !duration.is_zero() {
        return format!("{}ms", duration.as_millis());
    }
    format!("{}s", duration.as_secs_f64())
}
