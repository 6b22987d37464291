//! One node's wrong clock can neither freeze the cluster's time nor
//! fast-forward it: a leader far from its peers' clocks steps aside and is
//! not elected again, and after a leader whose clock ran ahead, time in the
//! state moves on with the time the next leader measures.

use std::time::Duration;

use raftq_client::proto as pb;
use raftq_client::{Message, ReceiveOptions};
use raftq_tests::cluster::{Settings, TestCluster};

const HOUR_MS: i64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_clock_jumps_an_hour_ahead_steps_aside_and_is_not_elected_again() {
    let cluster = TestCluster::start(3).await;
    let skewed = cluster.wait_for_leader().await;
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != skewed)
        .collect();
    let client = cluster.client();
    client
        .create_queue("t", Default::default())
        .await
        .expect("create");

    println!("phase: leader {skewed}'s clock jumps an hour ahead");
    cluster.node(skewed).node.clock.set_offset_ms(HOUR_MS);
    let leader = cluster.wait_for_leader_among(&others).await;
    println!("node {leader} leads");
    let sent_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    client
        .enqueue_one("t", Message::new("a"))
        .await
        .expect("enqueue");
    let got = client
        .receive("t", ReceiveOptions::default())
        .await
        .expect("receive");
    let stamped = got[0].enqueued_at_ms;
    assert!(
        stamped.abs_diff(sent_at) < 60_000,
        "stamped by a clock close to real time: {stamped} vs {sent_at}"
    );
    for _ in 0..50 {
        let view = cluster
            .node(skewed)
            .node
            .raft
            .metrics()
            .borrow()
            .current_leader;
        assert_ne!(view, Some(skewed), "the skewed node must not lead again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = cluster
        .client_of(leader)
        .node_status(&cluster.addr(leader))
        .await
        .expect("status");
    let offset = status
        .members
        .iter()
        .find(|m| m.id == skewed)
        .expect("the skewed member")
        .clock_offset_ms;
    assert!(
        offset > HOUR_MS - 60_000,
        "the offset is measured: {offset} ms"
    );

    println!("phase: its clock is fixed; it may lead again");
    cluster.node(skewed).node.clock.set_offset_ms(0);
    cluster.make_leader(skewed).await;
    client
        .enqueue_one("t", Message::new("b"))
        .await
        .expect("enqueue after the fix");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_leader_with_a_clock_an_hour_ahead_a_lease_still_ends_on_time() {
    // The clock check is off, so the skewed leader may stamp the state, as
    // it did before raftq had the check (or within the allowed skew).
    let settings = Settings {
        max_clock_skew_ms: 0,
        ..Settings::default()
    };
    let mut cluster = TestCluster::start_with(3, settings).await;
    let skewed = cluster.wait_for_leader().await;
    cluster.node(skewed).node.clock.set_offset_ms(HOUR_MS);
    let client = cluster.client();
    client
        .create_queue(
            "t",
            pb::QueueConfig {
                visibility_timeout_ms: Some(5_000),
                retry_backoff_min_ms: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    client
        .enqueue_one("t", Message::new("a"))
        .await
        .expect("enqueue stamped an hour ahead");

    println!("phase: the skewed leader dies; a node with a right clock leads");
    cluster.stop(skewed).await;
    cluster.wait_for_leader().await;
    let first = client
        .receive("t", ReceiveOptions::default())
        .await
        .expect("receive");
    assert_eq!(first.len(), 1);

    println!("phase: the 5 s lease ends, in the state's time, after about 5 s");
    let mut again = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        again = client
            .receive("t", ReceiveOptions::default())
            .await
            .expect("receive");
        if !again.is_empty() {
            break;
        }
    }
    assert_eq!(again.len(), 1, "the lease ended (not an hour later)");
    assert_eq!(again[0].delivery_count, 2);
    cluster.shutdown().await;
}
