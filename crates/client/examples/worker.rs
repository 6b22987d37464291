//! Consumes a queue with a [`Consumer`]: works on each message, then acks it,
//! or nacks it when the work fails.
//!
//! ```sh
//! cargo run -p raftq-cli -- dev                                # terminal 1
//! cargo run -p raftq-client --example producer -- 1000 jobs    # terminal 2
//! cargo run -p raftq-client --example worker -- 1000 jobs      # terminal 2
//! ```
//!
//! Arguments: how many messages to handle before stopping (default 100) and
//! the queue (default `jobs`). It also stops after [`IDLE`] without a message.
//! The cluster comes from `RAFTQ_CLUSTER` (`host:port,host:port,…`), by
//! default the `raftq dev` cluster.
//!
//! A consumer that ends with an error stays ended, so a long-running worker
//! starts a new one (up to [`MAX_RESTARTS`] times here). Messages the old one
//! had received but not handed out come back when their leases run out.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use raftq_client::{Client, Code, Consumer, ConsumerConfig, Received};

/// The `raftq dev` cluster, used when `RAFTQ_CLUSTER` is unset.
const DEV_CLUSTER: &str = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403";
/// Stop after this long without a message.
const IDLE: Duration = Duration::from_secs(5);
/// Consumers started anew after one ended with an error, before giving up.
const MAX_RESTARTS: u32 = 10;
/// Pause before starting a new consumer.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// The work. A message whose body contains "fail" fails, to show a nack.
fn work(message: &Received) -> Result<(), String> {
    let body = String::from_utf8_lossy(message.body());
    if body.contains("fail") {
        return Err(format!("cannot handle {body:?}"));
    }
    Ok(())
}

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
    let count: u64 = match args.next() {
        Some(text) => text.parse()?,
        None => 100,
    };
    let queue = args.next().unwrap_or_else(|| "jobs".to_string());
    let cluster = std::env::var("RAFTQ_CLUSTER").unwrap_or_else(|_| DEV_CLUSTER.to_string());

    let client = Client::connect(cluster.split(',').map(str::trim))?;
    let config = ConsumerConfig {
        prefetch: 64,
        consumer: format!("worker-{}", std::process::id()),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), &queue, config.clone());
    let mut restarts = 0;
    let (mut acked, mut nacked, mut lost) = (0u64, 0u64, 0u64);
    while acked + nacked + lost < count {
        let message = match tokio::time::timeout(IDLE, consumer.next()).await {
            Err(_) => {
                println!("no message for {IDLE:?}: stopping");
                break;
            }
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(err))) if err.code == Code::NotFound => {
                return Err(
                    format!("{}\nhint: run the producer example first", err.message).into(),
                );
            }
            // The consumer met an error it does not retry by itself, and has
            // stopped: start a new one.
            Ok(Some(Err(err))) if restarts < MAX_RESTARTS => {
                restarts += 1;
                eprintln!("consumer stopped ({err}); starting a new one");
                tokio::time::sleep(RESTART_PAUSE).await;
                consumer = Consumer::new(client.clone(), &queue, config.clone());
                continue;
            }
            Ok(Some(Err(err))) => return Err(err.into()),
            Ok(None) => break,
        };
        let id = message.id();
        let delivery = message.delivery_count();
        let settled = match work(&message) {
            Ok(()) => message.ack().await.map(|()| acked += 1),
            Err(why) => message.nack(None, Some(why)).await.map(|()| nacked += 1),
        };
        // FAILED_PRECONDITION: the lease was lost (it ran out and someone else
        // has the message now), so the work may run twice: at-least-once.
        if let Err(err) = settled {
            lost += 1;
            eprintln!("message {id} (delivery {delivery}): {err}");
        }
    }
    println!("{acked} acked, {nacked} nacked, {lost} not settled on queue {queue}");
    Ok(())
}
