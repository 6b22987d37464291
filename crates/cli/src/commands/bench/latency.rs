//! Latency histograms: fixed memory however many messages a run measures.
//!
//! Values are recorded in microseconds with three significant digits
//! (hdrhistogram), so a percentile is within 0.1 % of the exact one. Each
//! task keeps its own histogram and the run merges them at the end: no lock
//! on the measured path.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Largest latency recorded: one hour, in microseconds. A longer one is
/// recorded as one hour (no run waits that long for a publish).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One kind of latency, from one task or merged from all.
pub struct Latencies(Histogram<u64>);

/// The percentiles a summary shows, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentiles {
    /// Messages measured.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// The largest.
    pub max: f64,
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        Latencies(
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("1 µs to 1 h at 3 digits are valid histogram bounds"),
        )
    }

    /// Records one latency (under 1 µs counts as 1 µs).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.clamp(1, MAX_LATENCY_US));
    }

    /// Adds another task's latencies.
    pub fn merge(&mut self, other: &Latencies) {
        self.0
            .add(&other.0)
            .expect("histograms with the same bounds always add");
    }

    /// The percentiles, or `None` when nothing was recorded.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        let at = |quantile: f64| ms(self.0.value_at_quantile(quantile));
        Some(Percentiles {
            count: self.0.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p99_9: at(0.999),
            max: ms(self.0.max()),
        })
    }
}

impl Percentiles {
    /// As JSON: `{"count", "p50", "p90", "p99", "p99_9", "max"}` (ms).
    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p99_9": self.p99_9,
            "max": self.max,
        })
    }

    /// One line for people: `p50 1.23  p90 …  max …  (N messages)`.
    pub fn text(&self) -> String {
        format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} messages)",
            self.p50, self.p90, self.p99, self.p99_9, self.max, self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_close_to_the_exact_ones() {
        let mut all = Latencies::new();
        let mut part = Latencies::new();
        assert_eq!(all.percentiles(), None, "nothing recorded, nothing to show");
        for n in 1..=1000u64 {
            all.record(Duration::from_micros(n * 100));
        }
        part.record(Duration::from_secs(2));
        all.merge(&part);
        let p = all.percentiles().expect("recorded");
        assert_eq!(p.count, 1001);
        // The exact ones: the 501st, 991st and 1001st of 1001 values.
        let close = |got: f64, exact: f64| (got - exact).abs() <= exact / 1000.0;
        assert!(close(p.p50, 50.1), "{p:?}");
        assert!(close(p.p99, 99.1), "{p:?}");
        assert!(close(p.max, 2000.0), "{p:?}");
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p99_9 && p.p99_9 <= p.max);
    }

    #[test]
    fn latencies_out_of_range_are_clamped_not_lost() {
        let mut latencies = Latencies::new();
        latencies.record(Duration::ZERO);
        latencies.record(Duration::from_secs(10 * 3600));
        let p = latencies.percentiles().expect("recorded");
        assert_eq!(p.count, 2);
        assert!(p.max >= 3_600_000.0 * 0.999, "{p:?}");
    }
}
