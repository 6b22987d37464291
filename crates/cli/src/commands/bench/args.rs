//! The flags of `raftq bench`, and the checked [`Plan`] they make.
//!
//! Every flag is bounded, and a flag that means nothing with the others
//! (`--prefetch` without consumers, `--batch` with batching off) is refused
//! with a sentence that says why, before anything connects.

use std::time::Duration;

use raftq_client::client::MAX_ENQUEUE_BYTES;
use raftq_client::ProducerConfig;
use serde_json::{json, Value};

use super::report::seconds;
use super::tally::{HEADER_BYTES, MAX_MESSAGES};
use crate::commands::ClientArgs;
use crate::duration;

/// Most producers or consumers of a run (each holds its own connections).
const MAX_TASKS: u32 = 1000;
/// Most publishes a producer may keep awaiting their confirm.
const MAX_IN_FLIGHT: u32 = 10_000;
/// A producer's in-flight bound in open loop when `--in-flight` is not
/// given: a bound on memory, not a window; a run that reaches it shows
/// `late_sends`.
const OPEN_LOOP_IN_FLIGHT: u32 = 10_000;
/// Highest `--rate`, in messages per second.
const MAX_RATE: u64 = 10_000_000;
/// Longest `--duration` and `--drain-timeout`.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Longest `--linger`.
const MAX_LINGER: Duration = Duration::from_secs(10);
/// Most enqueue requests a `Producer` may keep under way (`--max-requests`).
const MAX_REQUESTS: u32 = 1000;
/// Most messages a consumer may hold unacked; the client's own limit.
const MAX_PREFETCH: u32 = 1000;
/// How long the consumers wait, by default, for every confirmed message.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The client's `ConsumerConfig::prefetch` default, shown in `--help`.
const DEFAULT_PREFETCH: u32 = 32;

/// Whether producers batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Batching {
    /// Through `Producer`: at once while a request slot is free, batched
    /// while every slot is busy.
    On,
    /// Each message is its own `Client::enqueue` request.
    Off,
}

/// `raftq bench` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Publishing tasks, each with its own client and connections (1 to 1000).
    #[arg(long, default_value_t = 1, value_name = "N")]
    producers: u32,
    /// Consuming tasks, each a Consumer stream with its own client (0 to
    /// 1000; 0 = publish only).
    #[arg(long, default_value_t = 0, value_name = "N")]
    consumers: u32,
    /// Body size in bytes (0 to 4194304; the queue's max_message_bytes, 1 MiB
    /// by default, applies too). With consumers at least 16: the first 16
    /// bytes carry the send time and a sequence number.
    #[arg(long, default_value_t = 256, value_name = "BYTES")]
    size: usize,
    /// Open loop: start this many publishes per second in all, spread evenly
    /// over the producers, whatever the latency (1 to 10000000). Without it,
    /// closed loop: each producer publishes as fast as its confirms come back.
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<u64>,
    /// Publishes awaiting their confirm at once, per producer (1 to 10000)
    /// [default: 1, a synchronous publisher; with --rate, 10000, a bound
    /// rather than a window].
    #[arg(long, visible_alias = "concurrency", value_name = "N")]
    in_flight: Option<u32>,
    /// Stop publishing after this long (e.g. 500ms, 10s, 5m; at most 24h).
    #[arg(long, value_parser = duration::parse, default_value = "10s")]
    duration: Duration,
    /// Stop publishing after this many messages in all (1 to 100000000).
    #[arg(long, default_value_t = 10_000_000, value_name = "N")]
    messages: u64,
    /// on: publish through the client's Producer, which sends a message at
    /// once while one of its request slots is free and batches the messages
    /// that wait while all are busy; off: each message is its own enqueue
    /// request.
    #[arg(long, value_enum, default_value = "on")]
    batching: Batching,
    /// The same as --batching off.
    #[arg(long, conflicts_with = "batching")]
    no_batching: bool,
    /// Batching on: most messages in one enqueue request (1 to 100)
    /// [default: 100].
    #[arg(long, value_name = "N")]
    batch: Option<u32>,
    /// Batching on: enqueue requests each producer keeps under way at once
    /// (the Producer's max_inflight; 1 to 1000) [default: 16].
    #[arg(long, value_name = "N")]
    max_requests: Option<u32>,
    /// Batching on: how long a batch formed while every request slot is busy
    /// waits for more messages (the Producer's linger; at most 10s)
    /// [default: 0s].
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    linger: Option<Duration>,
    /// Messages each consumer may hold unacked (1 to 1000) [default: 32].
    #[arg(long, value_name = "N")]
    prefetch: Option<u32>,
    /// With consumers: once publishing stops, how long the consumers may go
    /// on until they have received every confirmed message (0s = stop at
    /// once; at most 24h) [default: 10s].
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    drain_timeout: Option<Duration>,
    /// The queue (created if missing; purged before and after the run).
    #[arg(long, default_value = "raftq-bench", value_name = "NAME")]
    queue: String,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// A run, checked: what each task does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The queue.
    pub queue: String,
    /// Producer tasks.
    pub producers: u32,
    /// Consumer tasks.
    pub consumers: u32,
    /// Body bytes.
    pub size: usize,
    /// Open loop's rate in messages per second; `None` = closed loop.
    pub rate: Option<u64>,
    /// Publishes awaiting their confirm per producer.
    pub in_flight: u32,
    /// How long publishing lasts at most.
    pub duration: Duration,
    /// How many messages are published at most.
    pub messages: u64,
    /// The producers' config with batching on; `None` with batching off.
    pub producer: Option<ProducerConfig>,
    /// Each consumer's prefetch.
    pub prefetch: u32,
    /// How long the consumers may drain after publishing.
    pub drain_timeout: Duration,
}

impl BenchArgs {
    /// Checks the flags together; the error names the flag and the rule.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        check_range("--producers", self.producers.into(), 1, MAX_TASKS.into())?;
        check_range("--consumers", self.consumers.into(), 0, MAX_TASKS.into())?;
        check_range("--size", self.size as u64, 0, MAX_ENQUEUE_BYTES as u64)?;
        if self.consumers > 0 && self.size < HEADER_BYTES {
            anyhow::bail!(
                "--size {} is too small for a run with consumers: each body must carry \
                 its send time and sequence number in its first {HEADER_BYTES} bytes; \
                 use --size {HEADER_BYTES} or more, or --consumers 0",
                self.size
            );
        }
        if let Some(rate) = self.rate {
            check_range("--rate", rate, 1, MAX_RATE)?;
        }
        let in_flight = match (self.in_flight, self.rate) {
            (Some(n), _) => n,
            (None, Some(_)) => OPEN_LOOP_IN_FLIGHT,
            (None, None) => 1,
        };
        check_range("--in-flight", in_flight.into(), 1, MAX_IN_FLIGHT.into())?;
        check_duration("--duration", self.duration, MAX_DURATION)?;
        check_range("--messages", self.messages, 1, MAX_MESSAGES)?;
        let producer = self.producer_config(in_flight)?;
        let prefetch = self.consumer_option("--prefetch", self.prefetch)?;
        let prefetch = prefetch.unwrap_or(DEFAULT_PREFETCH);
        check_range("--prefetch", prefetch.into(), 1, MAX_PREFETCH.into())?;
        let drain_timeout = self.consumer_option("--drain-timeout", self.drain_timeout)?;
        let drain_timeout = drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        if drain_timeout > MAX_DURATION {
            anyhow::bail!("--drain-timeout must be at most 24h");
        }
        Ok(Plan {
            queue: self.queue.clone(),
            producers: self.producers,
            consumers: self.consumers,
            size: self.size,
            rate: self.rate,
            in_flight,
            duration: self.duration,
            messages: self.messages,
            producer,
            prefetch,
            drain_timeout,
        })
    }

    /// The `Producer`'s config with batching on, `None` with it off.
    fn producer_config(&self, in_flight: u32) -> anyhow::Result<Option<ProducerConfig>> {
        if self.no_batching || self.batching == Batching::Off {
            for (flag, given) in [
                ("--batch", self.batch.is_some()),
                ("--max-requests", self.max_requests.is_some()),
                ("--linger", self.linger.is_some()),
            ] {
                if given {
                    anyhow::bail!(
                        "{flag} sets how the Producer batches, and with batching off \
                         there is no Producer: each message is its own enqueue request; \
                         drop {flag} or use --batching on"
                    );
                }
            }
            return Ok(None);
        }
        let defaults = ProducerConfig::default();
        let batch = self.batch.map_or(defaults.max_batch as u64, u64::from);
        check_range("--batch", batch, 1, 100)?;
        let requests = self
            .max_requests
            .map_or(defaults.max_inflight as u64, u64::from);
        check_range("--max-requests", requests, 1, MAX_REQUESTS.into())?;
        let linger = self.linger.unwrap_or(defaults.linger);
        if linger > MAX_LINGER {
            anyhow::bail!("--linger must be at most 10s, not {linger:?}");
        }
        Ok(Some(ProducerConfig {
            linger,
            max_batch: batch as usize,
            max_inflight: requests as usize,
            // Each producer task keeps at most `in_flight` publishes, so the
            // Producer never holds more waiting messages than that.
            max_pending: in_flight as usize,
            ..defaults
        }))
    }

    /// A consumer's option: refused when the run has no consumers.
    fn consumer_option<T: Copy>(&self, flag: &str, value: Option<T>) -> anyhow::Result<Option<T>> {
        if self.consumers == 0 && value.is_some() {
            anyhow::bail!("{flag} applies to consumers, and this run has none: add --consumers N");
        }
        Ok(value)
    }
}

impl Plan {
    /// "open" with `--rate`, "closed" without.
    pub fn mode(&self) -> &'static str {
        if self.rate.is_some() {
            "open"
        } else {
            "closed"
        }
    }

    /// The settings the run used, as JSON.
    pub fn json(&self) -> Value {
        let producer = self.producer.as_ref();
        json!({
            "queue": self.queue,
            "producers": self.producers,
            "consumers": self.consumers,
            "size": self.size,
            "mode": self.mode(),
            "rate": self.rate,
            "in_flight": self.in_flight,
            "duration_s": self.duration.as_secs_f64(),
            "messages": self.messages,
            "batching": producer.is_some(),
            "batch": producer.map(|p| p.max_batch),
            "max_requests": producer.map(|p| p.max_inflight),
            "linger_ms": producer.map(|p| p.linger.as_secs_f64() * 1000.0),
            "prefetch": (self.consumers > 0).then_some(self.prefetch),
            "drain_timeout_s": (self.consumers > 0).then_some(self.drain_timeout.as_secs_f64()),
        })
    }

    /// The settings in a sentence.
    pub fn text(&self) -> String {
        let pacing = match self.rate {
            Some(rate) => format!("open loop at {rate} msgs/s"),
            None => "closed loop".to_string(),
        };
        let batching = match &self.producer {
            Some(p) => format!(
                "batching on: at most {} messages per request, {} requests, linger {}",
                p.max_batch,
                p.max_inflight,
                seconds(p.linger)
            ),
            None => "batching off".to_string(),
        };
        let consumers = match self.consumers {
            0 => "no consumers".to_string(),
            n => format!("{} (prefetch {})", count(n, "consumer"), self.prefetch),
        };
        format!(
            "{} ({} in flight per producer; {batching}), {consumers}, {} B bodies, {pacing}, \
             for {} or {} messages",
            count(self.producers, "producer"),
            self.in_flight,
            self.size,
            seconds(self.duration),
            self.messages
        )
    }
}

/// `1 producer`, `2 producers`.
fn count(n: u32, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

fn check_range(flag: &str, value: u64, min: u64, max: u64) -> anyhow::Result<()> {
    if !(min..=max).contains(&value) {
        anyhow::bail!("{flag} must be {min} to {max}, not {value}");
    }
    Ok(())
}

fn check_duration(flag: &str, value: Duration, max: Duration) -> anyhow::Result<()> {
    if value.is_zero() || value > max {
        anyhow::bail!("{flag} must be more than 0s and at most {max:?}, not {value:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        cli.bench.plan()
    }

    fn refusal(args: &[&str]) -> String {
        format!("{:#}", plan(args).expect_err("refused"))
    }

    #[test]
    fn defaults_are_a_synchronous_batching_publisher_and_the_client_defaults() {
        let plan = plan(&[]).expect("defaults are valid");
        assert_eq!((plan.producers, plan.consumers, plan.in_flight), (1, 0, 1));
        assert_eq!(plan.mode(), "closed");
        let producer = plan.producer.expect("batching is on by default");
        let defaults = ProducerConfig::default();
        assert_eq!(producer.max_batch, defaults.max_batch, "--help says 100");
        assert_eq!(producer.max_batch, 100);
        assert_eq!(producer.max_inflight, defaults.max_inflight);
        assert_eq!(producer.max_inflight, 16, "--help says 16");
        assert_eq!(producer.linger, Duration::ZERO, "--help says 0s");
        assert_eq!(
            DEFAULT_PREFETCH,
            raftq_client::ConsumerConfig::default().prefetch,
            "--help says 32"
        );
    }

    #[test]
    fn open_loop_bounds_in_flight_and_concurrency_is_an_alias() {
        let open = plan(&["--rate", "1000"]).expect("valid");
        assert_eq!((open.mode(), open.in_flight), ("open", OPEN_LOOP_IN_FLIGHT));
        let alias = plan(&["--concurrency", "8"]).expect("valid");
        assert_eq!(alias.in_flight, 8);
        let off = plan(&["--no-batching", "--consumers", "2", "--prefetch", "100"]).expect("valid");
        assert!(off.producer.is_none());
        assert_eq!(off.prefetch, 100);
        assert!(plan(&["--batching", "off"])
            .expect("valid")
            .producer
            .is_none());
    }

    #[test]
    fn bad_combinations_are_refused_with_a_reason() {
        let small = refusal(&["--consumers", "1", "--size", "8"]);
        assert!(small.contains("--size 8 is too small"), "{small}");
        assert!(plan(&["--consumers", "0", "--size", "8"]).is_ok());
        let batch = refusal(&["--no-batching", "--batch", "10"]);
        assert!(batch.contains("with batching off"), "{batch}");
        let prefetch = refusal(&["--prefetch", "10"]);
        assert!(prefetch.contains("add --consumers"), "{prefetch}");
        let drain = refusal(&["--drain-timeout", "1s"]);
        assert!(
            drain.contains("--drain-timeout applies to consumers"),
            "{drain}"
        );
        assert!(refusal(&["--rate", "0"]).contains("--rate must be 1 to"));
        assert!(refusal(&["--in-flight", "0"]).contains("--in-flight must be 1 to"));
        assert!(refusal(&["--producers", "0"]).contains("--producers must be 1 to"));
        assert!(refusal(&["--duration", "0s"]).contains("--duration must be more than 0s"));
        assert!(refusal(&["--size", "5000000"]).contains("--size must be 0 to 4194304"));
        assert!(refusal(&["--batch", "101"]).contains("--batch must be 1 to 100"));
        let both = refusal(&["--batching", "on", "--no-batching"]);
        assert!(both.contains("cannot be used with"), "{both}");
    }
}
