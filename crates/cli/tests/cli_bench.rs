//! End-to-end tests of `raftq bench` against three `raftq serve` processes.
//!
//! The runs are short and bounded (`--duration`, `--messages`,
//! `--drain-timeout`, and a timeout on the command itself). The tests assert
//! what the bench reports about the cluster's behaviour — every confirmed
//! message received, every received message acked, percentiles in order, the
//! queue purged — and never how fast anything was.
//!
//! Run with `cargo test -p raftq-cli --test cli_bench`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Longest one bench run of these tests may take: a few seconds of load,
/// the settling of the last publishes and the drain, on a busy machine.
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

/// `raftq bench ARGS --json --cluster …` (ARGS split at spaces), which must
/// succeed; its JSON.
fn bench_json(cluster: &Cluster, args: &str) -> Value {
    let mut all = vec!["bench", "--json"];
    all.extend(args.split_whitespace());
    let addrs = cluster.addrs();
    all.extend(["--cluster", &addrs]);
    let run = raftq(&all, None, BENCH_TIMEOUT).expect_ok();
    let report = run.json();
    println!("   {report}");
    report
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a count: {report}"))
}

/// Asserts the percentiles at `key` exist, count `at_least` messages or more,
/// and are in order.
fn assert_percentiles(report: &Value, key: &str, at_least: u64) {
    let p = &report[key];
    let count = p["count"].as_u64().unwrap_or(0);
    assert!(
        count >= at_least,
        "{key} counts {count} < {at_least}: {report}"
    );
    let values: Vec<f64> = ["p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|q| p[*q].as_f64().unwrap_or(-1.0))
        .collect();
    assert!(values[0] > 0.0, "{key} p50 is a positive time: {report}");
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "{key} percentiles are ordered: {values:?}"
    );
}

/// Every confirmed message was received, every received one acked, and the
/// counts add up.
fn assert_drained(report: &Value) {
    let confirmed = count(report, "confirmed");
    assert!(confirmed > 0, "some publishes were confirmed: {report}");
    assert_eq!(
        count(report, "published"),
        confirmed + count(report, "failed"),
        "every publish settled: {report}"
    );
    assert_eq!(
        report["missing"], 0,
        "every confirmed message was received: {report}"
    );
    assert_eq!(report["drained"], true, "{report}");
    assert_eq!(
        count(report, "received"),
        count(report, "acked"),
        "every received message was acked: {report}"
    );
    assert_eq!(count(report, "ack_failed"), 0, "{report}");
    assert_eq!(
        count(report, "foreign"),
        0,
        "the queue was purged first: {report}"
    );
    assert_percentiles(report, "publish_to_confirm_ms", confirmed);
    assert_percentiles(report, "publish_to_receive_ms", confirmed);
}

/// The bench queue is empty after a run: everything was acked or purged.
fn assert_queue_empty(cluster: &Cluster, queue: &str) {
    let stats = cluster
        .cli(&["queue", "stats", queue, "--json"])
        .expect_ok()
        .json();
    assert_eq!(
        (&stats["ready"], &stats["in_flight"]),
        (&0.into(), &0.into()),
        "{stats}"
    );
}

#[test]
fn bench_with_producers_and_consumers_receives_every_confirmed_message() {
    phase("start three serve processes");
    let cluster = Cluster::start();

    // Consumers with a prefetch of 4 fall behind 2 × 16 publishes in flight,
    // so the run ends with a backlog the drain has to receive.
    phase("closed loop, batching on: 2 producers × 16 in flight, 2 slow consumers, drained");
    let report = bench_json(
        &cluster,
        "--producers 2 --consumers 2 --in-flight 16 --prefetch 4 --size 64 --duration 3s \
         --messages 3000 --drain-timeout 60s --queue bench-closed",
    );
    assert_drained(&report);
    let flags = &report["flags"];
    assert_eq!(
        (
            &flags["producers"],
            &flags["consumers"],
            &flags["in_flight"]
        ),
        (&2.into(), &2.into(), &16.into()),
        "{report}"
    );
    assert_eq!(
        (&flags["mode"], &flags["batching"]),
        (&"closed".into(), &true.into())
    );
    assert!(
        count(&report, "published") <= 3000,
        "--messages caps the run: {report}"
    );
    assert!(
        report["published_per_second"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(
        report["consumed_per_second"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(report["seconds"].as_f64() > Some(0.0), "{report}");
    assert_queue_empty(&cluster, "bench-closed");

    phase("open loop, batching off: 200 msgs/s, 1 consumer, drained");
    let report = bench_json(
        &cluster,
        "--rate 200 --no-batching --consumers 1 --size 16 --duration 2s \
         --drain-timeout 60s --queue bench-open",
    );
    assert_drained(&report);
    let flags = &report["flags"];
    assert_eq!(
        (&flags["mode"], &flags["batching"]),
        (&"open".into(), &false.into())
    );
    assert_eq!(flags["rate"], 200, "{report}");
    assert_queue_empty(&cluster, "bench-open");

    phase("a consumer stopped without a drain: what it held is released, then purged");
    bench_json(
        &cluster,
        "--consumers 1 --prefetch 32 --in-flight 64 --duration 2s --drain-timeout 0s \
         --queue bench-undrained",
    );
    assert_queue_empty(&cluster, "bench-undrained");

    phase("publish only, capped at 50 messages: exactly 50 published, the rest purged");
    let report = bench_json(
        &cluster,
        "--messages 50 --in-flight 4 --duration 60s --queue bench-cap",
    );
    assert_eq!(count(&report, "published"), 50, "{report}");
    assert_eq!(
        count(&report, "confirmed") + count(&report, "failed"),
        50,
        "{report}"
    );
    assert_eq!(count(&report, "received"), 0, "{report}");
    assert!(report["publish_to_receive_ms"].is_null(), "{report}");
    assert!(
        report["missing"].is_null(),
        "no consumers, no check: {report}"
    );
    assert_percentiles(
        &report,
        "publish_to_confirm_ms",
        count(&report, "confirmed"),
    );
    let purged = count(&report, "purged");
    assert!(
        (count(&report, "confirmed")..=50).contains(&purged),
        "the purge took every confirmed message: {report}"
    );
    assert_queue_empty(&cluster, "bench-cap");

    phase("the human summary names the figures");
    let args = "bench --consumers 1 --messages 20 --duration 10s --drain-timeout 20s \
                --queue bench-text";
    let run = cluster
        .cli(&args.split_whitespace().collect::<Vec<_>>())
        .expect_ok();
    for says in [
        "published",
        "publish → confirm ms",
        "publish → receive ms",
        "every confirmed message was received",
        "purged",
    ] {
        assert!(
            run.stdout.contains(says),
            "the summary says {says:?}:\n{run}"
        );
    }
}

#[test]
fn bench_refuses_bad_flags_before_it_connects() {
    // Nothing listens on this address: a refusal that came from connecting
    // would take the client's 30 s of retries and say so.
    let nowhere = "127.0.0.1:1";
    let refused = |args: &str, says: &[&str]| {
        phase(&format!("bench {args}"));
        let mut all = vec!["bench"];
        all.extend(args.split_whitespace());
        all.extend(["--cluster", nowhere]);
        raftq(&all, None, Duration::from_secs(10)).expect_refusal(says);
    };
    refused("--consumers 1 --size 8", &["--size 8 is too small", "16"]);
    refused("--no-batching --batch 10", &["--batch", "batching off"]);
    refused("--batching off --linger 5ms", &["--linger", "batching off"]);
    refused("--prefetch 10", &["--prefetch applies to consumers"]);
    refused("--rate 0", &["--rate must be 1 to"]);
    refused("--in-flight 0", &["--in-flight must be 1 to"]);
    refused("--duration 0s", &["--duration must be more than 0s"]);
    refused("--batching maybe", &["invalid value", "maybe"]);
    refused("--batching on --no-batching", &["cannot be used with"]);
}
