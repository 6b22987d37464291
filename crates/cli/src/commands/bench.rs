//! `raftq bench`: confirmed-enqueue throughput and latency against a cluster.
//!
//! Closed loop (default): `--concurrency` workers each keep one enqueue
//! request of `--batch` messages in flight until `--messages` are confirmed or
//! `--duration` passes. Open loop (`--rate`): requests start on a fixed
//! schedule whatever the latency, which is how p99 at a given load is
//! measured. Every confirmed enqueue was fsynced by a majority. The bench
//! queue is purged afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftq_client::{Client, Message};
use serde_json::json;

use super::{explain, ClientArgs};
use crate::duration;
use crate::output;

/// `raftq bench` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// The queue to enqueue into (created if missing, purged afterwards).
    #[arg(long, default_value = "raftq-bench")]
    queue: String,
    /// Messages to confirm in all.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Requests in flight at once (closed loop).
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
    /// Messages per enqueue request (1 to 100).
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Open loop: start this many requests per second instead.
    #[arg(long)]
    rate: Option<u64>,
    /// Stop after this long in any case.
    #[arg(long, value_parser = duration::parse, default_value = "60s")]
    duration: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

struct Totals {
    confirmed: AtomicU64,
    failed: AtomicU64,
    latencies: std::sync::Mutex<Vec<Duration>>,
}

async fn one_request(
    client: &Client,
    queue: &str,
    batch: u64,
    body: &bytes::Bytes,
    totals: &Totals,
) {
    let messages = (0..batch).map(|_| Message::new(body.clone())).collect();
    let started = Instant::now();
    match client.enqueue(queue, messages).await {
        Ok(results) => {
            let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
            totals.confirmed.fetch_add(ok, Ordering::Relaxed);
            totals
                .failed
                .fetch_add(results.len() as u64 - ok, Ordering::Relaxed);
            totals
                .latencies
                .lock()
                .expect("latency lock")
                .push(started.elapsed());
        }
        Err(_) => {
            totals.failed.fetch_add(batch, Ordering::Relaxed);
        }
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !(1..=100).contains(&args.batch) {
        anyhow::bail!("--batch must be 1 to 100");
    }
    if args.concurrency == 0 || args.concurrency > 10_000 {
        anyhow::bail!("--concurrency must be 1 to 10000");
    }
    let client = args.client.client()?;
    let fail = |err| explain(err, &args.client.cluster);
    client
        .create_queue(&args.queue, Default::default())
        .await
        .map_err(fail)?;
    let body = bytes::Bytes::from(vec![b'x'; args.size]);
    let totals = Arc::new(Totals {
        confirmed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies: std::sync::Mutex::new(Vec::new()),
    });
    let requests = args.messages.div_ceil(args.batch);
    let started = Instant::now();
    let deadline = started + args.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    match args.rate {
        None => {
            for _ in 0..args.concurrency {
                let (client, queue, body, totals, issued) = (
                    client.clone(),
                    args.queue.clone(),
                    body.clone(),
                    totals.clone(),
                    issued.clone(),
                );
                let batch = args.batch;
                tasks.push(tokio::spawn(async move {
                    while issued.fetch_add(1, Ordering::Relaxed) < requests
                        && Instant::now() < deadline
                    {
                        one_request(&client, &queue, batch, &body, &totals).await;
                    }
                }));
            }
        }
        Some(rate) => {
            let rate = rate.max(1);
            let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for _ in 0..requests {
                interval.tick().await;
                if Instant::now() >= deadline {
                    break;
                }
                let (client, queue, body, totals) = (
                    client.clone(),
                    args.queue.clone(),
                    body.clone(),
                    totals.clone(),
                );
                let batch = args.batch;
                tasks.push(tokio::spawn(async move {
                    one_request(&client, &queue, batch, &body, &totals).await;
                }));
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let mut latencies = std::mem::take(&mut *totals.latencies.lock().expect("latency lock"));
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    let confirmed = totals.confirmed.load(Ordering::Relaxed);
    let failed = totals.failed.load(Ordering::Relaxed);
    let throughput = confirmed as f64 / elapsed.as_secs_f64();
    let purged = client.purge(&args.queue).await.map_err(fail)?;
    let report = json!({
        "queue": args.queue,
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "concurrency": args.concurrency,
        "rate": args.rate,
        "batch": args.batch,
        "size": args.size,
        "confirmed": confirmed,
        "failed": failed,
        "seconds": elapsed.as_secs_f64(),
        "messages_per_second": throughput,
        "latency_ms": { "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0) },
        "purged": purged,
    });
    if args.client.json {
        output::print_json(&report);
    } else {
        println!(
            "{confirmed} messages confirmed ({failed} failed) in {:.2} s: {throughput:.0} msg/s\nrequest latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}\n({} mode, concurrency {}, batch {}, {} B bodies)",
            elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0),
            if args.rate.is_some() { "open-loop" } else { "closed-loop" },
            args.concurrency,
            args.batch,
            args.size
        );
    }
    Ok(())
}
