//! The disk alarm: while a voter's data disk is below its free-space limit,
//! the cluster refuses enqueues with RESOURCE_EXHAUSTED naming the node and
//! its disk, and everything that drains a queue keeps working.

use raftq_client::{Code, Message, ReceiveOptions};
use raftq_tests::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_below_its_disk_limit_makes_the_cluster_refuse_enqueues_but_not_draining() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let full = cluster.follower_of(leader);
    let client = cluster.client();
    client
        .create_queue("q", Default::default())
        .await
        .expect("create");
    let messages = (0..3).map(|i| Message::new(format!("m{i}"))).collect();
    client.enqueue("q", messages).await.expect("enqueue");

    println!("phase: node {full} restarts with a limit its disk cannot meet");
    cluster.stop(full).await;
    cluster.reconfigure(full, |config| config.min_free_disk_bytes = Some(u64::MAX));
    cluster.restart(full).await;
    cluster
        .wait_until("the leader hears of the alarm", |c| {
            c.node(leader).node.disk.peer_alarm(full)
        })
        .await;
    let before = client.get_queue("q").await.expect("stats");
    let refused = client
        .enqueue_one("q", Message::new("refused"))
        .await
        .expect_err("refused in alarm");
    assert_eq!(refused.code, Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message.contains(&format!("node {full}"))
            && refused.message.contains("min_free_disk_bytes"),
        "{refused:?}"
    );
    let after = client.get_queue("q").await.expect("stats");
    assert_eq!(after.counters, before.counters, "nothing was stored");
    let status = client.cluster_status().await.expect("status");
    assert!(
        status.members.iter().any(|m| m.id == full && m.disk_alarm),
        "{status:?}"
    );

    println!("phase: receive, ack and purge drain the queue in alarm");
    let got = client
        .receive(
            "q",
            ReceiveOptions {
                max: 2,
                ..Default::default()
            },
        )
        .await
        .expect("receive works");
    assert_eq!(got.len(), 2);
    for result in client
        .ack("q", got.iter().map(|d| d.receipt.clone()).collect())
        .await
        .expect("ack works")
    {
        result.expect("acked");
    }
    assert_eq!(client.purge("q").await.expect("purge works"), 1);

    println!("phase: the limit is met again; enqueues are taken again");
    cluster.stop(full).await;
    cluster.reconfigure(full, |config| config.min_free_disk_bytes = Some(0));
    cluster.restart(full).await;
    cluster
        .wait_until("the alarm clears", |c| {
            !c.node(leader).node.disk.peer_alarm(full)
        })
        .await;
    client
        .enqueue_one("q", Message::new("accepted"))
        .await
        .expect("enqueue after the alarm");
    cluster.shutdown().await;
}
