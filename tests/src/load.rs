//! A producer/consumer load for cluster tests, and the checks of what it saw.
//!
//! Producers enqueue messages with unique bodies through the client library
//! (so its retries and dedup ids are under test); consumers receive, ack, and
//! record every delivery and every successful ack in one ordered history.
//! [`History::check`] then asserts: every acknowledged enqueue was delivered;
//! each body was stored once (no duplicate from a retry); no message was
//! delivered after its ack had succeeded; nothing was delivered that no
//! producer sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftq_client::{Client, Message, ReceiveOptions};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One observed event, in the order it was observed.
#[derive(Clone, Debug)]
pub enum Event {
    /// An enqueue was sent (before its outcome is known).
    Invoked {
        /// The body sent.
        body: String,
    },
    /// An enqueue returned success.
    Enqueued {
        /// The body sent.
        body: String,
        /// The id the cluster gave it.
        id: u64,
    },
    /// An enqueue failed (its outcome is unknown).
    EnqueueFailed {
        /// The body sent.
        body: String,
    },
    /// A message was delivered.
    Delivered {
        /// Its id.
        id: u64,
        /// Its body.
        body: String,
        /// Which delivery.
        count: u32,
    },
    /// An ack returned success.
    Acked {
        /// The message id.
        id: u64,
    },
}

/// The ordered history of a load.
#[derive(Clone, Default)]
pub struct History {
    events: Arc<Mutex<Vec<Event>>>,
}

impl History {
    fn push(&self, event: Event) {
        self.events.lock().expect("history lock").push(event);
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("history lock").clone()
    }

    /// Bodies whose enqueue returned success.
    pub fn acknowledged(&self) -> BTreeSet<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Enqueued { body, .. } => Some(body),
                _ => None,
            })
            .collect()
    }

    /// Checks the history; returns a summary line.
    pub fn check(&self) -> String {
        let events = self.events();
        let mut sent = BTreeSet::new();
        let mut acknowledged = BTreeSet::new();
        let mut ids_of_body: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        let mut acked: BTreeSet<u64> = BTreeSet::new();
        let mut delivered: BTreeSet<String> = BTreeSet::new();
        let mut redeliveries = 0;
        for event in &events {
            match event {
                Event::Invoked { body } => {
                    sent.insert(body.clone());
                }
                Event::Enqueued { body, id } => {
                    acknowledged.insert(body.clone());
                    ids_of_body.entry(body.clone()).or_default().insert(*id);
                }
                Event::EnqueueFailed { .. } => {}
                Event::Delivered { id, body, count } => {
                    assert!(
                        sent.contains(body),
                        "unexpected: delivered {body:?} that no producer sent"
                    );
                    assert!(
                        !acked.contains(id),
                        "message {id} ({body}) delivered after its ack succeeded"
                    );
                    ids_of_body.entry(body.clone()).or_default().insert(*id);
                    delivered.insert(body.clone());
                    if *count > 1 {
                        redeliveries += 1;
                    }
                }
                Event::Acked { id } => {
                    acked.insert(*id);
                }
            }
        }
        let lost: Vec<&String> = acknowledged.difference(&delivered).collect();
        assert!(
            lost.is_empty(),
            "lost: {} acknowledged enqueues never delivered: {lost:?}",
            lost.len()
        );
        for (body, ids) in &ids_of_body {
            assert_eq!(
                ids.len(),
                1,
                "body {body:?} stored as several messages {ids:?}: a retry duplicated it"
            );
        }
        format!(
            "{} sent, {} acknowledged, {} delivered, {} acked, {} redeliveries",
            sent.len(),
            acknowledged.len(),
            delivered.len(),
            acked.len(),
            redeliveries
        )
    }
}

/// A running load.
pub struct Load {
    /// What it observed.
    pub history: History,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    producing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// Starts `producers` tasks sending `per_producer` messages each to
    /// `queue`, and `consumers` tasks receiving and acking.
    pub fn start(
        client: &Client,
        queue: &str,
        producers: usize,
        per_producer: usize,
        consumers: usize,
    ) -> Load {
        let history = History::default();
        let producing = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let producer_tasks = (0..producers)
            .map(|p| {
                let (client, queue, history) = (client.clone(), queue.to_string(), history.clone());
                tokio::spawn(async move {
                    for i in 0..per_producer {
                        let body = format!("p{p}-{i}");
                        history.push(Event::Invoked { body: body.clone() });
                        match client.enqueue_one(&queue, Message::new(body.clone())).await {
                            Ok(enqueued) => history.push(Event::Enqueued {
                                body,
                                id: enqueued.id,
                            }),
                            Err(_) => history.push(Event::EnqueueFailed { body }),
                        }
                    }
                })
            })
            .collect();
        let consumer_tasks = (0..consumers)
            .map(|c| {
                let (client, queue, history, stop) = (
                    client.clone(),
                    queue.to_string(),
                    history.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let options = ReceiveOptions {
                        max: 20,
                        wait: Duration::from_millis(300),
                        consumer: format!("c{c}"),
                        ..ReceiveOptions::default()
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(messages) = client.receive(&queue, options.clone()).await else {
                            continue;
                        };
                        for m in &messages {
                            history.push(Event::Delivered {
                                id: m.id,
                                body: String::from_utf8_lossy(&m.body).into_owned(),
                                count: m.delivery_count,
                            });
                        }
                        if messages.is_empty() {
                            continue;
                        }
                        let receipts = messages.iter().map(|m| m.receipt.clone()).collect();
                        if let Ok(results) = client.ack(&queue, receipts).await {
                            for (m, result) in messages.iter().zip(results) {
                                if result.is_ok() {
                                    history.push(Event::Acked { id: m.id });
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            history,
            producers: producer_tasks,
            consumers: consumer_tasks,
            producing,
            stop,
        }
    }

    /// Waits for the producers to finish, then for the queue to drain (every
    /// message acked), then stops the consumers. Bounded by `limit`.
    pub async fn finish(self, client: &Client, queue: &str, limit: Duration) -> History {
        let deadline = Instant::now() + limit;
        for producer in self.producers {
            tokio::time::timeout_at(deadline, producer)
                .await
                .expect("producers finish in time")
                .expect("producer task");
        }
        self.producing.store(false, Ordering::Relaxed);
        loop {
            if let Ok(info) = client.get_queue(queue).await {
                if info.ready + info.in_flight + info.delayed == 0 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "queue {queue} did not drain in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        for consumer in self.consumers {
            let _ = tokio::time::timeout(Duration::from_secs(20), consumer).await;
        }
        self.history
    }
}
