//! Bounded under overload: a backlog past the node's memory budget gets
//! `RESOURCE_EXHAUSTED` on enqueue while receives, acks and purges go on,
//! and writes that arrive faster than the cluster commits are refused
//! (`UNAVAILABLE`, overloaded) instead of queueing without bound. Nothing
//! refused is stored; everything confirmed is.

use std::time::Duration;

use bytes::Bytes;
use raftq_client::proto as pb;
use raftq_client::{Code, Message, ReceiveOptions};
use raftq_proto::v1::queue_service_client::QueueServiceClient;
use raftq_tests::cluster::{Settings, TestCluster};

const KIB: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_past_the_memory_budget_refuses_enqueues_and_everything_else_goes_on() {
    let cluster = TestCluster::start_with(
        3,
        Settings {
            max_state_memory_bytes: Some(2 * 1024 * 1024),
            ..Settings::default()
        },
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client();
    client
        .create_queue("jobs", Default::default())
        .await
        .expect("create");

    println!("phase: 10 KiB messages until the 2 MiB budget refuses one");
    let body = Bytes::from(vec![b'x'; 10 * KIB]);
    let mut accepted = 0u64;
    let refusal = loop {
        assert!(accepted < 1_000, "the budget never refused an enqueue");
        match client.enqueue_one("jobs", Message::new(body.clone())).await {
            Ok(_) => accepted += 1,
            Err(err) => break err,
        }
    };
    println!("{accepted} accepted, then: {}", refusal.message);
    assert_eq!(refusal.code, Code::ResourceExhausted, "{refusal:?}");
    assert!(
        refusal.message.contains("max_state_memory_bytes"),
        "the refusal names the limit: {}",
        refusal.message
    );
    let memory = &cluster.node(leader).node.memory;
    assert!(memory.used() >= memory.limit(), "the gauge shows the use");
    let info = client.get_queue("jobs").await.expect("stats");
    assert_eq!(info.ready, accepted, "the refused message was not stored");

    println!("phase: receives and acks go on");
    let got = client
        .receive(
            "jobs",
            ReceiveOptions {
                max: 10,
                ..Default::default()
            },
        )
        .await
        .expect("receive under the alarm");
    assert_eq!(got.len(), 10);
    for result in client
        .ack("jobs", got.into_iter().map(|d| d.receipt).collect())
        .await
        .expect("ack under the alarm")
    {
        result.expect("acked");
    }

    println!("phase: a purge frees the state and enqueues are taken again");
    client.purge("jobs").await.expect("purge under the alarm");
    cluster
        .wait_until("the estimate drops below the budget", |c| {
            let memory = &c.node(leader).node.memory;
            memory.used() < memory.limit()
        })
        .await;
    client
        .enqueue_one("jobs", Message::new(body.clone()))
        .await
        .expect("enqueue after the purge");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_faster_than_the_cluster_commits_are_refused_not_queued_without_bound() {
    let cluster = TestCluster::start_with(
        3,
        Settings {
            // One default batch may wait; the rest is pushed back.
            proposal_queue_bytes: 4 * 1024 * 1024,
            ..Settings::default()
        },
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client();
    client
        .create_queue("jobs", Default::default())
        .await
        .expect("create");

    println!("phase: 64 enqueues of 100 x 10 KiB at once, straight to the leader");
    let raw = QueueServiceClient::connect(format!("http://{}", cluster.addr(leader)))
        .await
        .expect("connect");
    let request = pb::EnqueueRequest {
        queue: "jobs".into(),
        messages: (0..100)
            .map(|_| pb::NewMessage {
                body: Bytes::from(vec![b'y'; 10 * KIB]),
                ..Default::default()
            })
            .collect(),
    };
    let mut calls = Vec::new();
    for _ in 0..64 {
        let (mut raw, request) = (raw.clone(), request.clone());
        calls.push(tokio::spawn(async move { raw.enqueue(request).await }));
    }
    let (mut stored, mut overloaded) = (0u64, 0u64);
    for call in calls {
        match tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("every call is answered")
            .expect("task")
        {
            Ok(response) => {
                let results = response.into_inner().results;
                assert!(
                    results
                        .iter()
                        .all(|r| matches!(r.result, Some(pb::enqueue_result::Result::Id(_)))),
                    "{results:?}"
                );
                stored += results.len() as u64;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(status.message().contains("overloaded"), "{status:?}");
                overloaded += 1;
            }
        }
    }
    println!("{stored} messages stored, {overloaded} requests refused as overloaded");
    assert!(overloaded > 0, "64 MB at once exceeds what may wait");
    assert!(stored > 0, "what fits is taken");
    let info = client.get_queue("jobs").await.expect("stats");
    assert_eq!(info.ready, stored, "stored exactly what was confirmed");
    cluster.shutdown().await;
}
