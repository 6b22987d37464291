//! The HTTP port of a node: `/health`, `/ready` and `/metrics` (Prometheus
//! text), read with plain HTTP/1.1 over loopback.

use std::time::Duration;

use raftq_client::Message;
use raftq_tests::cluster::{Settings, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GETs `path` from `addr`; returns the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("answer in time")
    .expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_readiness_and_metrics_report_the_node_and_its_queues() {
    let settings = Settings {
        http: true,
        ..Settings::default()
    };
    let cluster = TestCluster::start_with(3, settings).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client();
    client
        .create_queue("observed", Default::default())
        .await
        .expect("create");
    for i in 0..3 {
        client
            .enqueue_one("observed", Message::new(format!("m{i}")))
            .await
            .expect("enqueue");
    }
    cluster.wait_converged().await;
    for id in cluster.ids() {
        let http = cluster.node(id).http_addr.expect("an HTTP port");
        println!("phase: node {id} at {http}");
        assert_eq!(get(http, "/health").await.0, 200);
        let (ready, why) = get(http, "/ready").await;
        assert_eq!(ready, 200, "node {id}: {why}");
        let (status, metrics) = get(http, "/metrics").await;
        assert_eq!(status, 200);
        for line in [
            "raftq_queue_messages{queue=\"observed\",state=\"ready\"} 3",
            "raftq_queue_events{event=\"enqueued\",queue=\"observed\"} 3",
            "raftq_raft{field=\"leader_id\"}",
            "raftq_log_flushes",
        ] {
            assert!(
                metrics.contains(line),
                "node {id} /metrics lacks {line:?}:\n{metrics}"
            );
        }
        let is_leader = format!(
            "raftq_raft{{field=\"is_leader\"}} {}",
            u8::from(id == leader)
        );
        assert!(metrics.contains(&is_leader), "node {id}: {is_leader}");
        if id == leader {
            assert!(
                metrics.contains("raftq_requests_total{code=\"Ok\",op=\"enqueue\"}"),
                "{metrics}"
            );
            assert!(
                metrics.contains("raftq_proposal_batch_commands_count"),
                "{metrics}"
            );
        }
    }
    assert_eq!(
        get(cluster.node(leader).http_addr.expect("http"), "/nope")
            .await
            .0,
        404
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_majority_is_not_ready() {
    let settings = Settings {
        http: true,
        ..Settings::default()
    };
    let mut cluster = TestCluster::start_with(3, settings).await;
    let leader = cluster.wait_for_leader().await;
    let http = cluster.node(leader).http_addr.expect("an HTTP port");
    assert_eq!(get(http, "/ready").await.0, 200);
    println!("phase: stop both followers of leader {leader}");
    for id in cluster.ids() {
        if id != leader {
            cluster.stop(id).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(http, "/ready").await;
        if status == 503 {
            assert!(
                body.contains("quorum") || body.contains("no leader"),
                "{body}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready without a majority: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(http, "/health").await.0, 200, "alive, just not ready");
    cluster.shutdown().await;
}
