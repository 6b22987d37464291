//! A run from start to end: prepare the queue, connect every task's client,
//! publish (and consume), drain, stop, purge, print.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use raftq_client::{Client, Code};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::args::{BenchArgs, Plan};
use super::latency::Latencies;
use super::report::Report;
use super::tally::Tally;
use super::{consume, publish};
use crate::commands::explain;
use crate::output;

/// How often the drain checks whether every confirmed message was received.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Arc::new(args.plan()?);
    let cluster = args.client.cluster.as_str();
    let fail = |err| explain(err, cluster);
    let client = args.client.client()?;
    prepare_queue(&client, &plan).await.map_err(fail)?;
    let show_progress = !args.client.json && std::io::stderr().is_terminal();
    if show_progress {
        eprintln!("raftq bench: {}", plan.text());
    }

    // Every task has its own client, which finds the leader before the
    // clock starts.
    let tasks = (plan.producers + plan.consumers) as usize;
    let clients = (0..tasks)
        .map(|_| args.client.client())
        .collect::<anyhow::Result<Vec<Client>>>()?;
    futures::future::try_join_all(clients.iter().map(|c| c.get_queue(&plan.queue)))
        .await
        .map_err(fail)?;
    let (producer_clients, consumer_clients) = clients.split_at(plan.producers as usize);

    let tally = Arc::new(Tally::new(plan.messages));
    let interrupted = watch_ctrl_c();
    let (stop_consumers, consumers_stop) = watch::channel(false);
    let consumers = start_consumers(&plan, &tally, consumer_clients, consumers_stop);
    let progress = show_progress.then(|| tokio::spawn(progress(tally.clone(), plan.consumers)));

    let confirm_latency = publish_phase(&plan, &tally, producer_clients, interrupted.clone()).await;
    let publish_time = tally.elapsed();
    let missing = match plan.consumers {
        0 => None,
        _ => Some(drain(&tally, &plan, &consumers).await),
    };
    stop_consumers.send_replace(true);
    let receive_latency = merge(consumers).await;
    if let Some(progress) = progress {
        progress.abort();
    }
    let total_time = tally.elapsed();

    // The dropped consumers release the messages they held unread in the
    // background; a purge keeps leased messages, so wait (a little) for
    // those releases, or they would come back after it.
    if plan.consumers > 0 {
        await_released(&client, &plan.queue).await;
    }
    let purged = match client.purge(&plan.queue).await {
        Ok(n) => Some(n),
        Err(err) => {
            eprintln!(
                "warning: purging {} after the run failed: {:#}",
                plan.queue,
                fail(err)
            );
            None
        }
    };
    let report = Report {
        plan: Plan::clone(&plan),
        counts: tally.counts(),
        missing: missing.map(|_| tally.missing()),
        interrupted: *interrupted.borrow(),
        publish_time,
        consume_time: tally.last_received(),
        total_time,
        confirm_latency: confirm_latency.percentiles(),
        receive_latency: receive_latency.percentiles(),
        purged,
        errors: tally.first_errors(),
    };
    if args.client.json {
        output::print_json(&report.json());
    } else {
        println!("{}", report.text());
    }
    Ok(())
}

/// Starts the consumers; each runs until `stop` turns true.
fn start_consumers(
    plan: &Plan,
    tally: &Arc<Tally>,
    clients: &[Client],
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<Latencies>> {
    (0..)
        .zip(clients)
        .map(|(index, client)| {
            tokio::spawn(consume::run(
                tally.clone(),
                client.clone(),
                plan.queue.clone(),
                plan.prefetch,
                index,
                stop.clone(),
            ))
        })
        .collect()
}

/// Creates the queue if missing (a queue of that name with another config
/// will do), checks that `--size` fits it, and purges it.
async fn prepare_queue(client: &Client, plan: &Plan) -> raftq_client::Result<()> {
    match client.create_queue(&plan.queue, Default::default()).await {
        Ok(_) => {}
        Err(err) if err.code == Code::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let info = client.get_queue(&plan.queue).await?;
    let limit = info
        .config
        .and_then(|c| c.max_message_bytes)
        .unwrap_or(u64::MAX);
    if plan.size as u64 > limit {
        return Err(raftq_client::Error::new(
            Code::InvalidArgument,
            format!(
                "--size {} is over queue {}'s max_message_bytes ({limit}): use a smaller \
                 --size, or raise it with `raftq queue update {} --max-message-bytes N`",
                plan.size, plan.queue, plan.queue
            ),
        ));
    }
    client.purge(&plan.queue).await?;
    Ok(())
}

/// Starts the producers, which stop at `--duration` or the cap, tells them
/// to stop on Ctrl-C, and waits until each has settled its publishes.
/// Returns their publish → confirm latencies.
async fn publish_phase(
    plan: &Arc<Plan>,
    tally: &Arc<Tally>,
    clients: &[Client],
    mut interrupted: watch::Receiver<bool>,
) -> Latencies {
    let (stop, stopped) = watch::channel(false);
    let producers: Vec<JoinHandle<Latencies>> = (0..)
        .zip(clients)
        .map(|(index, client)| {
            let sender = publish::Sender::new(client.clone(), plan);
            tokio::spawn(publish::run(
                plan.clone(),
                tally.clone(),
                sender,
                index,
                stopped.clone(),
            ))
        })
        .collect();
    let mut all = std::pin::pin!(merge(producers));
    tokio::select! {
        latencies = &mut all => return latencies,
        Ok(_) = interrupted.wait_for(|stop| *stop) => {}
    }
    stop.send_replace(true);
    all.await
}

/// Waits until every confirmed message was received, the drain timeout
/// passes or every consumer has ended. Returns how many confirmed messages
/// were not received.
async fn drain(tally: &Tally, plan: &Plan, consumers: &[JoinHandle<Latencies>]) -> u64 {
    let deadline = tokio::time::Instant::now() + plan.drain_timeout;
    loop {
        let missing = tally.missing();
        let over =
            tokio::time::Instant::now() >= deadline || consumers.iter().all(|c| c.is_finished());
        if missing == 0 || over {
            return missing;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Waits for tasks and merges their latencies; a task that panicked is
/// reported (its latencies are lost, its counts are not).
async fn merge(tasks: Vec<JoinHandle<Latencies>>) -> Latencies {
    let mut all = Latencies::new();
    for task in tasks {
        match task.await {
            Ok(latencies) => all.merge(&latencies),
            Err(err) => eprintln!("warning: a bench task failed: {err}"),
        }
    }
    all
}

/// Turns true on the first Ctrl-C: publishing stops, the consumers drain,
/// the summary follows. A second Ctrl-C exits at once.
fn watch_ctrl_c() -> watch::Receiver<bool> {
    let (interrupt, interrupted) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("interrupted: publishing stops (Ctrl-C again quits at once, without a summary or purge)");
        interrupt.send_replace(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    interrupted
}

/// Prints a line a second on stderr: the counts so far and the rates over
/// the last second.
async fn progress(tally: Arc<Tally>, consumers: u32) {
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.tick().await;
    let (mut confirmed_before, mut received_before) = (0, 0);
    loop {
        ticks.tick().await;
        let counts = tally.counts();
        let mut line = format!(
            "{:>5.0}s  published {}  confirmed {} ({}/s)  failed {}",
            tally.elapsed().as_secs_f64(),
            counts.published,
            counts.confirmed,
            counts.confirmed - confirmed_before,
            counts.failed,
        );
        if consumers > 0 {
            line += &format!(
                "  received {} ({}/s)  acked {}",
                counts.received,
                counts.received - received_before,
                counts.acked
            );
        }
        eprintln!("{line}");
        (confirmed_before, received_before) = (counts.confirmed, counts.received);
    }
}

/// How long the bench waits for its stopped consumers' releases.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Waits, at most [`RELEASE_WAIT`], until `queue` has no leased messages.
async fn await_released(client: &Client, queue: &str) {
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    while tokio::time::Instant::now() < deadline {
        match client.get_queue(queue).await {
            Ok(info) if info.in_flight > 0 => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => return,
        }
    }
}
