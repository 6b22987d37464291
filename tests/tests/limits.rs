//! Byte limits on every path that moves messages: replication to a follower
//! that fell behind, receive answers, consume streams and client batches.
//! The largest allowed message at the largest allowed count flows on each.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use raftq_client::proto as pb;
use raftq_client::{Consumer, ConsumerConfig, Message, ReceiveOptions};
use raftq_tests::cluster::TestCluster;

const MIB: u64 = 1024 * 1024;

fn body(size: usize, seed: u8) -> Bytes {
    Bytes::from(vec![seed; size])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_a_burst_of_large_messages_catches_up() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.follower_of(leader);
    let client = cluster.client();
    client
        .create_queue(
            "big",
            pb::QueueConfig {
                max_message_bytes: Some(4 * MIB),
                ..Default::default()
            },
        )
        .await
        .expect("create");

    println!("phase: node {follower} is down while 40 messages of 3 MB are sent");
    cluster.stop(follower).await;
    for i in 0..40u8 {
        client
            .enqueue_one("big", Message::new(body(3_000_000, i)))
            .await
            .expect("enqueue");
    }
    println!("phase: it comes back and catches up (120 MB, more than one append may carry)");
    cluster.restart(follower).await;
    let digests = cluster.wait_converged().await;
    println!("replicas converged: {digests:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_largest_messages_at_the_largest_count_flow_through_enqueue_receive_and_consume() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client();
    let config = pb::QueueConfig {
        max_deliveries: Some(1),
        retry_backoff_min_ms: Some(0),
        ..Default::default()
    };
    client.create_queue("wide", config).await.expect("create");
    let largest = 1024 * 1024; // the default max_message_bytes
    println!(
        "phase: one client call enqueues 100 messages of 1 MiB (split into requests that fit)"
    );
    let messages: Vec<Message> = (0..100u8).map(|i| Message::new(body(largest, i))).collect();
    let results = client.enqueue("wide", messages).await.expect("enqueue");
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    println!("phase: a receive of 100 gets what fits one answer, and leases only that");
    let first = client
        .receive(
            "wide",
            ReceiveOptions {
                max: 100,
                ..Default::default()
            },
        )
        .await
        .expect("receive");
    let bytes: u64 = first.iter().map(|d| d.body.len() as u64).sum();
    assert!(!first.is_empty() && bytes <= 16 * MIB, "{bytes} bytes");
    let info = client.get_queue("wide").await.expect("stats");
    assert_eq!(
        info.in_flight,
        first.len() as u64,
        "only what was answered is leased"
    );
    let receipts: Vec<String> = first.iter().map(|d| d.receipt.clone()).collect();
    for chunk in receipts.chunks(100) {
        for result in client.ack("wide", chunk.to_vec()).await.expect("ack") {
            result.expect("acked");
        }
    }

    println!("phase: a consumer gets the rest, one delivery each");
    let mut consumer = Consumer::new(
        client.clone(),
        "wide",
        ConsumerConfig {
            prefetch: 100,
            ..Default::default()
        },
    );
    let mut consumed = first.len();
    while consumed < 100 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a message within 30 s")
            .expect("the stream goes on")
            .expect("a message");
        assert_eq!(message.body().len(), largest);
        assert_eq!(message.delivery_count(), 1);
        message.ack().await.expect("ack");
        consumed += 1;
    }
    drop(consumer);
    let info = client.get_queue("wide").await.expect("stats");
    let counters = info.counters.expect("counters");
    assert_eq!((info.ready, info.in_flight, counters.acked), (0, 0, 100));
    assert_eq!(counters.dropped, 0, "nothing reached its delivery limit");
    cluster.shutdown().await;
}
