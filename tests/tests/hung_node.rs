//! A node that accepts connections but never answers (stopped with SIGSTOP,
//! hung) must not cost every client call its whole attempt timeout: the
//! client tries the other seeds at once and skips the hung one for a while.

use std::time::Duration;

use raftq_client::{Client, Message, RetryPolicy};
use raftq_tests::cluster::TestCluster;
use tokio::net::TcpListener;

/// A socket that accepts TCP connections and never reads or writes, as a
/// stopped process's listening socket does (the kernel completes the
/// handshake; nobody answers).
async fn hung_node() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound").to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_first_seed_is_skipped_and_calls_succeed_within_the_retry_budget() {
    let cluster = TestCluster::start(3).await;
    let (hung, task) = hung_node().await;
    let mut seeds = vec![hung.clone()];
    seeds.extend(cluster.ids().into_iter().map(|id| cluster.addr(id)));
    // An attempt may take a minute, but all retries together only 10 s: a
    // client that waited on the hung seed for a whole attempt would fail.
    let client = Client::with_retry(
        seeds,
        RetryPolicy {
            attempt_timeout: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(10),
            ..RetryPolicy::default()
        },
    )
    .expect("valid seeds");
    client
        .create_queue("q", Default::default())
        .await
        .expect("created through a node that answers");
    for i in 0..5 {
        client
            .enqueue_one("q", Message::new(format!("m{i}")))
            .await
            .expect("enqueue");
    }
    assert_eq!(client.get_queue("q").await.expect("stats").ready, 5);
    // A fresh client, as each CLI command is, finds its way too.
    let fresh = Client::with_retry(
        [hung, cluster.addr(1)],
        RetryPolicy {
            attempt_timeout: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(10),
            ..RetryPolicy::default()
        },
    )
    .expect("valid seeds");
    assert_eq!(fresh.list_queues().await.expect("list").len(), 1);
    task.abort();
    cluster.shutdown().await;
}
