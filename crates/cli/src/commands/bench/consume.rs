//! One consumer task: a `Consumer` stream whose every message is counted
//! and acked at once, until told to stop.
//!
//! Acks are not awaited one by one: each is a future of its own, so the
//! client coalesces those issued together into one request, as a service
//! that acks when done with each message does. The consumer's prefetch
//! bounds them: the server sends no more than `--prefetch` messages not yet
//! acked.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use raftq_client::{Client, Consumer, ConsumerConfig};
use tokio::sync::watch;

use super::latency::Latencies;
use super::tally::Tally;

/// Once told to stop, how long a consumer waits for its acks under way;
/// those without a result by then count as failed.
const ACK_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs consumer `index` on `queue` until `stop` turns true or its stream
/// ends (on an error a retry cannot fix, which is reported). Returns its
/// publish → receive latencies (first deliveries of this run's messages).
pub async fn run(
    tally: Arc<Tally>,
    client: Client,
    queue: String,
    prefetch: u32,
    index: u32,
    mut stop: watch::Receiver<bool>,
) -> Latencies {
    let config = ConsumerConfig {
        prefetch,
        consumer: format!("raftq-bench-{index}"),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, &queue, config);
    let mut latencies = Latencies::new();
    let mut acks = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            Some(result) = acks.next() => tally.acked(result),
            next = consumer.next() => match next {
                Some(Ok(received)) => {
                    if let Some(header) = tally.received(received.body()) {
                        latencies.record(tally.elapsed().saturating_sub(header.sent));
                    }
                    acks.push(async move {
                        received
                            .ack()
                            .await
                            .map_err(|err| format!("{:?}: {}", err.code, err.message))
                    });
                }
                Some(Err(err)) => tally.receive_error(&format!("{:?}: {}", err.code, err.message)),
                None => break,
            },
        }
    }
    let settled = tokio::time::timeout(ACK_SETTLE_TIMEOUT, async {
        while let Some(result) = acks.next().await {
            tally.acked(result);
        }
    })
    .await;
    if settled.is_err() {
        let error = format!("no result within {ACK_SETTLE_TIMEOUT:?} after the run");
        for _ in 0..acks.len() {
            tally.acked(Err(error.clone()));
        }
    }
    // Dropping the consumer releases what it received but never handed
    // over; those were not counted.
    drop(consumer);
    latencies
}
