//! One producer task: publishes until told to stop or the run's message cap
//! is reached, keeping at most `--in-flight` publishes awaiting their
//! confirm, in closed or open loop (see the module root).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use raftq_client::{Client, Message, Producer};
use tokio::sync::watch;
use tokio::time::Instant;

use super::args::Plan;
use super::latency::Latencies;
use super::tally::{Header, Tally};

/// Once publishing stops, how long a producer waits for its publishes still
/// under way; those without a result by then count as failed. The client
/// gives up on a request after 30 s of retries plus one attempt's 15 s.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Open loop: a publish that starts more than this behind its schedule
/// counts as a late send.
const LATE: Duration = Duration::from_millis(5);

/// How a producer's messages reach the cluster.
#[derive(Clone)]
pub enum Sender {
    /// `--batching on`.
    Producer(Producer),
    /// `--batching off`: one `Client::enqueue` request per message.
    Client(Client),
}

impl Sender {
    /// A sender over `client` as the plan says.
    pub fn new(client: Client, plan: &Plan) -> Self {
        match plan.producer {
            Some(config) => Sender::Producer(Producer::new(client, config)),
            None => Sender::Client(client),
        }
    }

    async fn publish(self, queue: Arc<str>, body: Bytes) -> raftq_client::Result<()> {
        let message = Message::new(body);
        match self {
            Sender::Producer(producer) => producer.send(&queue, message).await.map(|_| ()),
            Sender::Client(client) => client.enqueue_one(&queue, message).await.map(|_| ()),
        }
    }
}

/// When each publish of one producer starts.
enum Pacing {
    /// As soon as a publish is confirmed.
    Closed,
    /// On a schedule: the next start, and the time between starts.
    Open { next: Instant, period: Duration },
}

impl Pacing {
    /// Producer `index` of `plan`: open-loop producers share the rate and
    /// are offset from each other by one period of the whole rate.
    fn new(plan: &Plan, index: u32, started: Instant) -> Self {
        match plan.rate {
            None => Pacing::Closed,
            Some(rate) => {
                let rate = rate as f64;
                Pacing::Open {
                    next: started + Duration::from_secs_f64(f64::from(index) / rate),
                    period: Duration::from_secs_f64(f64::from(plan.producers) / rate),
                }
            }
        }
    }

    /// The (scheduled) start of the next publish if it is due by `now`.
    fn due(&mut self, now: Instant) -> Option<Instant> {
        match self {
            Pacing::Closed => Some(now),
            Pacing::Open { next, period } if *next <= now => {
                let due = *next;
                *next += *period;
                Some(due)
            }
            Pacing::Open { .. } => None,
        }
    }

    /// When the next publish is due, in open loop.
    fn next(&self) -> Option<Instant> {
        match self {
            Pacing::Closed => None,
            Pacing::Open { next, .. } => Some(*next),
        }
    }
}

/// Runs producer `index` until `--duration` has passed since the run
/// started, the cap is reached or `stop` turns true (Ctrl-C), then waits up
/// to [`SETTLE_TIMEOUT`] for its publishes under way. Returns its publish →
/// confirm latencies.
pub async fn run(
    plan: Arc<Plan>,
    tally: Arc<Tally>,
    sender: Sender,
    index: u32,
    mut stop: watch::Receiver<bool>,
) -> Latencies {
    let queue: Arc<str> = plan.queue.as_str().into();
    let filler = Bytes::from(vec![b'x'; plan.size]);
    let started = Instant::from_std(tally.started);
    let end = started + plan.duration;
    let mut pacing = Pacing::new(&plan, index, started);
    let mut latencies = Latencies::new();
    let mut in_flight = FuturesUnordered::new();
    let mut stopping = false;
    loop {
        // Start every publish that may start now.
        while !stopping && in_flight.len() < plan.in_flight as usize {
            if *stop.borrow() {
                stopping = true;
                break;
            }
            let now = Instant::now();
            let Some(due) = pacing.due(now) else {
                break;
            };
            if due >= end {
                stopping = true;
                break;
            }
            let Some(seq) = tally.take_seq() else {
                stopping = true;
                break;
            };
            if now.duration_since(due) > LATE {
                tally.late_send();
            }
            let header = Header {
                sent: due.duration_since(started),
                tag: tally.tag,
                seq,
            };
            let publish = sender.clone().publish(queue.clone(), header.body(&filler));
            in_flight.push(async move { (seq, due, publish.await) });
        }
        if stopping {
            break;
        }
        // Wake for a result, the next scheduled start (open loop, room
        // left), the end of the run, or Ctrl-C.
        let full = in_flight.len() >= plan.in_flight as usize;
        let wake = pacing.next().filter(|_| !full).unwrap_or(end).min(end);
        tokio::select! {
            Some((seq, due, result)) = in_flight.next() => {
                settle(&tally, &mut latencies, seq, due, result);
            }
            () = tokio::time::sleep_until(wake) => stopping = Instant::now() >= end,
            changed = stop.changed() => stopping = changed.is_err() || *stop.borrow(),
        }
    }
    let settled = tokio::time::timeout(SETTLE_TIMEOUT, async {
        while let Some((seq, due, result)) = in_flight.next().await {
            settle(&tally, &mut latencies, seq, due, result);
        }
    })
    .await;
    if settled.is_err() {
        let error = format!("no result within {SETTLE_TIMEOUT:?} after publishing stopped");
        tally.failed(in_flight.len() as u64, &error);
    }
    latencies
}

/// Counts one publish's result.
fn settle(
    tally: &Tally,
    latencies: &mut Latencies,
    seq: u32,
    due: Instant,
    result: raftq_client::Result<()>,
) {
    match result {
        Ok(()) => {
            latencies.record(due.elapsed());
            tally.confirmed(seq);
        }
        Err(err) => tally.failed(1, &format!("{:?}: {}", err.code, err.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_producers_share_the_rate_and_are_offset() {
        let plan = |rate| Plan {
            queue: "q".into(),
            producers: 4,
            consumers: 0,
            size: 16,
            rate,
            in_flight: 1,
            duration: Duration::from_secs(1),
            messages: 10,
            producer: None,
            prefetch: 1,
            drain_timeout: Duration::ZERO,
        };
        let start = Instant::now();
        let mut second = Pacing::new(&plan(Some(1000)), 1, start);
        assert_eq!(second.next(), Some(start + Duration::from_millis(1)));
        assert_eq!(second.due(start), None, "not due yet");
        let later = start + Duration::from_millis(10);
        assert_eq!(second.due(later), Some(start + Duration::from_millis(1)));
        assert_eq!(
            second.due(later),
            Some(start + Duration::from_millis(5)),
            "every 4 ms: 1000/s over 4 producers; a late producer catches up"
        );
        let mut closed = Pacing::new(&plan(None), 1, start);
        assert_eq!(closed.due(later), Some(later));
        assert_eq!(closed.next(), None);
    }
}
