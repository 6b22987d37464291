//! Sends N messages to a queue with a batching [`Producer`].
//!
//! ```sh
//! cargo run -p raftq-cli -- dev                                # terminal 1
//! cargo run -p raftq-client --example producer -- 1000 jobs    # terminal 2
//! ```
//!
//! Arguments: how many messages (default 100, at most [`MAX_MESSAGES`]) and
//! the queue (default `jobs`, created when missing). The cluster comes from
//! `RAFTQ_CLUSTER` (`host:port,host:port,…`), by default the `raftq dev`
//! cluster.
//!
//! A `send` waits for its own result, so a producer batches only what is sent
//! concurrently: this example keeps up to [`IN_FLIGHT`] sends under way and
//! the producer folds them into enqueue requests of up to 100 messages. Every
//! message carries a dedup id, so the client's retries (say, across a leader
//! change) never store a message twice.

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use futures::StreamExt;
use raftq_client::{Client, Code, Message, Producer, ProducerConfig};

/// The `raftq dev` cluster, used when `RAFTQ_CLUSTER` is unset.
const DEV_CLUSTER: &str = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403";
/// Most messages one run sends, so a typo cannot flood the cluster.
const MAX_MESSAGES: usize = 1_000_000;
/// Sends under way at once: enough to fill several batches while one commits.
const IN_FLIGHT: usize = 1_000;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = match args.next() {
        Some(text) => text.parse()?,
        None => 100,
    };
    if count > MAX_MESSAGES {
        return Err(format!("send at most {MAX_MESSAGES} messages, not {count}").into());
    }
    let queue = args.next().unwrap_or_else(|| "jobs".to_string());
    let cluster = std::env::var("RAFTQ_CLUSTER").unwrap_or_else(|_| DEV_CLUSTER.to_string());

    let client = Client::connect(cluster.split(',').map(str::trim))?;
    // Same config again is a no-op; a queue that exists with another config
    // answers ALREADY_EXISTS, which is fine here: we only need it to exist.
    match client.create_queue(&queue, Default::default()).await {
        Ok(_) => {}
        Err(err) if err.code == Code::AlreadyExists => {}
        Err(err) => return Err(err.into()),
    }

    let producer = Producer::new(client, ProducerConfig::default());
    let started = Instant::now();
    let mut sends = futures::stream::iter(0..count)
        .map(|n| {
            let message = Message::new(format!("message {n}")).with_attribute("n", n.to_string());
            producer.send(&queue, message)
        })
        .buffer_unordered(IN_FLIGHT);
    let (mut stored, mut duplicates, mut refused) = (0u64, 0u64, 0u64);
    while let Some(result) = sends.next().await {
        match result {
            Ok(enqueued) if enqueued.duplicate => duplicates += 1,
            Ok(_) => stored += 1,
            // A refusal of this one message (too large, queue full, …), or
            // the whole request's error once the client's retries gave up.
            Err(err) => {
                refused += 1;
                eprintln!("refused: {err}");
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{stored} stored, {duplicates} duplicates, {refused} refused in {seconds:.2} s ({:.0} messages/s) on queue {queue}",
        count as f64 / seconds.max(1e-9)
    );
    if refused > 0 {
        return Err(format!("{refused} messages were refused").into());
    }
    Ok(())
}
