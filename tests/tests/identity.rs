//! A node id always speaks for the same log: a node that lost its data, or
//! was removed, cannot take part under its old id, and learns why.

use std::time::Duration;

use raftq_client::proto as pb;
use raftq_client::{Message, ReceiveOptions};
use raftq_raft_node::identity::Standing;
use raftq_tests::cluster::TestCluster;

/// How long the tests watch for something that must not happen: several
/// election timeouts of the test harness (600–1,200 ms).
const WATCH: Duration = Duration::from_secs(5);

fn is_leader(cluster: &TestCluster, id: u64) -> bool {
    let metrics = cluster.node(id).node.raft.metrics();
    let metrics = metrics.borrow();
    metrics.current_leader == Some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_data_was_wiped_never_votes_under_its_old_id_and_nothing_acknowledged_is_lost()
{
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (behind, wiped) = (others[0], others[1]);
    let client = cluster.client();
    client
        .create_queue(
            "jobs",
            pb::QueueConfig {
                max_deliveries: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    // What the guarantee rests on: every voter has applied the leader's
    // registration of every member's log (a tick after the cluster forms).
    cluster
        .wait_until("every node knows every member's log incarnation", |c| {
            c.ids().iter().all(|id| {
                let record = c.node(*id).node.identity.record();
                c.ids()
                    .iter()
                    .all(|member| record.incarnation(*member).is_some())
            })
        })
        .await;

    println!("phase: node {behind} falls behind; 100 sends through leader {leader}");
    cluster.stop(behind).await;
    let mut sent = Vec::new();
    for i in 0..100 {
        let id = client
            .enqueue_one("jobs", Message::new(format!("m{i}")))
            .await
            .expect("confirmed by leader and node {wiped}")
            .id;
        sent.push(id);
    }

    println!("phase: the leader and node {wiped} die; {wiped}'s disk is lost; {wiped} and {behind} start");
    cluster.stop(leader).await;
    cluster.stop(wiped).await;
    cluster.wipe(wiped);
    cluster.restart(wiped).await;
    cluster.restart(behind).await;
    cluster
        .wait_until("the wiped node learns the cluster refuses its log", |c| {
            matches!(c.node(wiped).node.identity.standing(), Standing::Refused(_))
        })
        .await;
    let watch_until = tokio::time::Instant::now() + WATCH;
    while tokio::time::Instant::now() < watch_until {
        assert!(
            !is_leader(&cluster, behind) && !is_leader(&cluster, wiped),
            "the node behind must not lead with the wiped node's vote"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = cluster
        .client_of(wiped)
        .node_status(&cluster.addr(wiped))
        .await
        .expect("status");
    assert_eq!(status.state, "refused", "{status:?}");
    assert!(
        status.note.as_deref().unwrap_or("").contains("remove"),
        "the status says what to do: {status:?}"
    );

    println!(
        "phase: the old leader comes back: with node {behind} it has a majority and every message"
    );
    cluster.restart(leader).await;
    let new_leader = cluster.wait_for_leader_among(&[leader, behind]).await;
    println!("node {new_leader} leads");
    let info = client.get_queue("jobs").await.expect("stats");
    assert_eq!(info.ready, 100, "every acknowledged enqueue survived");

    println!("phase: remove node {wiped} and add it back: it catches up with a new log");
    client.remove_node(wiped).await.expect("remove");
    client
        .add_node(wiped, &cluster.addr(wiped))
        .await
        .expect("add back");
    cluster
        .wait_until("the re-added node takes part again", |c| {
            c.node(wiped).node.identity.standing() == Standing::Member
        })
        .await;
    let digests = cluster.wait_converged().await;
    println!("replicas converged: {digests:?}");
    let mut received = Vec::new();
    while received.len() < 100 {
        let got = client
            .receive(
                "jobs",
                ReceiveOptions {
                    max: 100,
                    ..Default::default()
                },
            )
            .await
            .expect("receive");
        assert!(!got.is_empty(), "all 100 are there: got {}", received.len());
        received.extend(got.into_iter().map(|d| d.id));
    }
    received.sort_unstable();
    assert_eq!(received, sent);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_that_starts_again_learns_it_was_removed_and_stops_campaigning() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let removed = cluster.follower_of(leader);
    let client = cluster.client();
    client
        .create_queue("q", Default::default())
        .await
        .expect("create");

    println!("phase: stop node {removed}, remove it, write, start it with its old data");
    cluster.stop(removed).await;
    client.remove_node(removed).await.expect("remove");
    client
        .enqueue_one("q", Message::new("after the removal"))
        .await
        .expect("enqueue");
    cluster.restart(removed).await;
    cluster
        .wait_until("the removed node learns it was removed", |c| {
            matches!(
                c.node(removed).node.identity.standing(),
                Standing::Removed(_)
            )
        })
        .await;
    let term = cluster
        .node(removed)
        .node
        .raft
        .metrics()
        .borrow()
        .current_term;
    tokio::time::sleep(WATCH).await;
    let after = cluster
        .node(removed)
        .node
        .raft
        .metrics()
        .borrow()
        .current_term;
    assert_eq!(after, term, "it stopped campaigning: its term stays");
    let status = cluster
        .client_of(removed)
        .node_status(&cluster.addr(removed))
        .await
        .expect("status");
    assert_eq!(status.state, "removed", "{status:?}");
    assert!(
        status.note.as_deref().unwrap_or("").contains("add-node"),
        "it says how to rejoin: {status:?}"
    );
    let refused = cluster
        .client_of(removed)
        .enqueue_one("q", Message::new("to a removed node"))
        .await
        .expect_err("a removed node serves nothing");
    assert!(refused.message.contains("takes no part"), "{refused:?}");
    let members = client.cluster_status().await.expect("status").members;
    assert!(members.iter().all(|m| m.id != removed), "{members:?}");
    cluster.shutdown().await;
}

/// Found by review: a node catching up from the start of the log holds, for
/// a while, the incarnation a re-added node had before it was wiped. It must
/// neither refuse that node (now the leader) nor be believed by it; before
/// the fix the leader marked itself refused and the cluster stopped serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_catching_up_from_an_old_record_never_refuses_a_re_added_leader() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let wiped = cluster.follower_of(leader);
    let client = cluster.client();
    client
        .create_queue(
            "big",
            pb::QueueConfig {
                max_message_bytes: Some(1024 * 1024),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let old_incarnation = cluster.node(wiped).node.identity.incarnation();

    println!("phase: node {wiped} loses its data, is refused, removed and added back");
    cluster.stop(wiped).await;
    cluster.wipe(wiped);
    cluster.restart(wiped).await;
    cluster
        .wait_until("the wiped node is refused", |c| {
            matches!(c.node(wiped).node.identity.standing(), Standing::Refused(_))
        })
        .await;
    client.remove_node(wiped).await.expect("remove");
    client
        .add_node(wiped, &cluster.addr(wiped))
        .await
        .expect("add back");
    let new_incarnation = cluster.node(wiped).node.identity.incarnation();
    assert_ne!(new_incarnation, old_incarnation);
    cluster
        .wait_until(
            "the cluster registers the new log of the re-added node",
            |c| {
                c.ids().iter().all(|id| {
                    c.node(*id).node.identity.record().incarnation(wiped) == Some(new_incarnation)
                })
            },
        )
        .await;

    println!("phase: node {wiped} leads; 40 MiB in the log so a new node needs many appends");
    cluster.make_leader(wiped).await;
    let body = vec![b'x'; 1024 * 1024];
    for _ in 0..40 {
        client
            .enqueue_one("big", Message::new(body.clone()))
            .await
            .expect("enqueue");
    }

    println!("phase: new node 4 catches up from index 1 (its record names node {wiped}'s old log)");
    let addr = cluster.start_new_node(4).await;
    client.add_node(4, &addr).await.expect("add node 4");
    let digests = cluster.wait_converged().await;
    println!("replicas converged: {digests:?}");
    let watch_until = tokio::time::Instant::now() + WATCH;
    while tokio::time::Instant::now() < watch_until {
        for id in cluster.ids() {
            assert_eq!(
                cluster.node(id).node.identity.standing(),
                Standing::Member,
                "node {id} is refused by a node with an old record"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(is_leader(&cluster, wiped), "node {wiped} still leads");
    client
        .enqueue_one("big", Message::new("after"))
        .await
        .expect("the cluster still serves");
    let info = client.get_queue("big").await.expect("stats");
    assert_eq!(info.ready, 41);
    cluster.shutdown().await;
}
