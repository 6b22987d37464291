//! Leader loss under load, and a stopped node catching up by log and by
//! snapshot, on an in-process 3-node cluster.

use std::time::Duration;

use raftq_client::proto as pb;
use raftq_client::Message;
use raftq_tests::cluster::{Settings, TestCluster};
use raftq_tests::load::Load;

fn queue_config(visibility_ms: u64) -> pb::QueueConfig {
    pb::QueueConfig {
        visibility_timeout_ms: Some(visibility_ms),
        max_deliveries: Some(0),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_leader_under_load_loses_no_acknowledged_enqueue_and_duplicates_none() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client();
    client
        .create_queue("orders", queue_config(3_000))
        .await
        .expect("create");

    println!("phase: load starts");
    let load = Load::start(&client, "orders", 4, 150, 2);
    while load.history.acknowledged().len() < 150 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = cluster.wait_for_leader().await;
    println!("phase: stop the leader (node {leader})");
    cluster.stop(leader).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader, "a new leader was elected");
    println!("phase: restart node {leader}; node {new_leader} leads");
    cluster.restart(leader).await;

    println!("phase: finish and drain");
    let history = load
        .finish(&client, "orders", Duration::from_secs(90))
        .await;
    println!("checked: {}", history.check());
    assert_eq!(
        history.acknowledged().len(),
        600,
        "every enqueue eventually succeeded through retries"
    );
    let digests = cluster.wait_converged().await;
    println!("replicas converged: {digests:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_follower_catches_up_from_the_log() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client();
    client
        .create_queue("catch-up", Default::default())
        .await
        .expect("create");
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.follower_of(leader);
    println!("phase: stop follower {follower}, write 200 messages");
    cluster.stop(follower).await;
    // Everything the follower applied, and so its own snapshot taken when it
    // stopped, is at most what the leader had logged by then.
    let applied_at_stop = cluster
        .node(leader)
        .node
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    for i in 0..200 {
        client
            .enqueue_one("catch-up", Message::new(format!("m{i}")))
            .await
            .expect("enqueue");
    }
    println!("phase: restart it");
    cluster.restart(follower).await;
    cluster.wait_converged().await;
    let metrics = cluster.node(follower).node.raft.metrics().borrow().clone();
    let snapshot = metrics.snapshot.map_or(0, |id| id.index);
    assert!(
        snapshot <= applied_at_stop,
        "caught up from the log: its only snapshot is its own, taken when it stopped \
         at {applied_at_stop}, not the leader's (at {snapshot})"
    );
    let info = cluster
        .client_of(follower)
        .get_queue("catch-up")
        .await
        .expect("read through the follower");
    assert_eq!(info.ready, 200);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_a_compacted_log_catches_up_from_a_snapshot() {
    let settings = Settings {
        snapshot_after_entries: 100,
        log_kept_behind_snapshot: 0,
        ..Settings::default()
    };
    let mut cluster = TestCluster::start_with(3, settings).await;
    let client = cluster.client();
    client
        .create_queue("compacted", Default::default())
        .await
        .expect("create");
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.follower_of(leader);
    println!(
        "phase: stop follower {follower}, write 400 entries so the leader snapshots and purges"
    );
    cluster.stop(follower).await;
    for i in 0..400 {
        client
            .enqueue_one("compacted", Message::new(format!("m{i}")))
            .await
            .expect("enqueue");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = cluster.node(leader).node.raft.metrics().borrow().clone();
        if m.purged.is_some_and(|p| p.index > 100) {
            println!(
                "leader snapshot at {:?}, purged up to {:?}",
                m.snapshot, m.purged
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leader never purged its log: {:?}",
            m.purged
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("phase: restart the follower");
    cluster.restart(follower).await;
    cluster.wait_converged().await;
    let m = cluster.node(follower).node.raft.metrics().borrow().clone();
    assert!(
        m.snapshot.is_some_and(|s| s.index >= 100),
        "installed a snapshot: {:?}",
        m.snapshot
    );
    let info = cluster
        .client_of(follower)
        .get_queue("compacted")
        .await
        .expect("read through the follower");
    assert_eq!(info.ready, 400);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_and_a_producer_carry_on_across_a_leader_change() {
    use futures::StreamExt;
    use raftq_client::{Consumer, ConsumerConfig, Producer, ProducerConfig};
    use std::collections::BTreeSet;

    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client();
    client
        .create_queue("steady", queue_config(3_000))
        .await
        .expect("create");
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut consumer = Consumer::new(
        client.clone(),
        "steady",
        ConsumerConfig {
            prefetch: 16,
            ..Default::default()
        },
    );

    println!("phase: produce 400 messages while the leader is stopped halfway");
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..400 {
                let body = format!("s{i}");
                producer
                    .send("steady", Message::new(body.clone()))
                    .await
                    .expect("send survives the leader change");
                sent.push(body);
            }
            sent
        })
    };
    let mut seen = BTreeSet::new();
    let mut stopped = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < 400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 400 consumed",
            seen.len()
        );
        let next = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a message in time");
        let received = next
            .expect("the consumer keeps its stream")
            .expect("the consumer reconnects on its own");
        let body = String::from_utf8_lossy(received.body()).into_owned();
        // An ack cut off by the leader's loss may fail; the message comes back.
        if received.ack().await.is_ok() {
            seen.insert(body);
        }
        if seen.len() == 100 && !stopped {
            let leader = cluster.wait_for_leader().await;
            println!("phase: stop the leader (node {leader})");
            cluster.stop(leader).await;
            stopped = true;
        }
    }
    let sent: BTreeSet<String> = sender.await.expect("producer task").into_iter().collect();
    assert_eq!(seen, sent, "every message sent was consumed");
    drop(consumer);
    cluster.shutdown().await;
}

/// A leader cut off from its majority does not hold writes until the
/// client's attempt timeout: a write in flight is given up (UNAVAILABLE,
/// outcome unknown) and a new one is refused without being written, within
/// about an election timeout, so clients go and find the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_majority_gives_up_writes_within_an_election_timeout() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client_of(leader);
    client
        .create_queue("cut-off", pb::QueueConfig::default())
        .await
        .expect("create");
    for id in cluster.ids() {
        if id != leader {
            cluster.stop(id).await;
        }
    }
    let started = std::time::Instant::now();
    let in_flight = client
        .enqueue("cut-off", vec![raftq_client::Message::new("held")])
        .await
        .expect_err("no majority: the write cannot succeed");
    assert_eq!(
        in_flight.code,
        raftq_client::Code::Unavailable,
        "{in_flight}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "given up after {:?}, not at the client's timeout",
        started.elapsed()
    );
    let refused = client
        .enqueue("cut-off", vec![raftq_client::Message::new("refused")])
        .await
        .expect_err("still no majority");
    assert_eq!(refused.code, raftq_client::Code::Unavailable);
    assert!(
        refused.message.contains("has not heard from a majority"),
        "{refused}"
    );
    cluster.shutdown().await;
}
