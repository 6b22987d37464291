//! The workload and the checker end to end, against a real in-process
//! 3-node cluster on loopback, with no faults: a short run must show no
//! violation, and its history must read back from JSON lines to the same
//! verdict.
//!
//! The cluster harness is the least of `tests/src/cluster.rs` this needs:
//! real nodes on OS-chosen ports, each with its own sled stores in a temp dir,
//! with shortened Raft timings. The seed comes from `RAFTQ_CHECK_SEED`, or
//! from the clock, and is printed.

use std::collections::BTreeMap;
use std::time::Duration;

use raftq_check::{check, replica_digests, wait_for_leader, History, Workload, WorkloadConfig};
use raftq_client::{Client, RetryPolicy};
use raftq_raft_node::{Node, NodeConfig, NodeHandle};
use tokio::net::TcpListener;

/// How long any wait of the test may take.
const WAIT: Duration = Duration::from_secs(30);

struct Cluster {
    nodes: Vec<NodeHandle>,
    addrs: Vec<String>,
    _root: tempfile::TempDir,
}

async fn start_cluster(size: u64) -> Cluster {
    let root = tempfile::tempdir().expect("temp dir");
    let mut listeners = BTreeMap::new();
    for id in 1..=size {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        listeners.insert(id, listener);
    }
    let initial: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().expect("bound").to_string()))
        .collect();
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        let config = NodeConfig {
            id,
            listen: listener.local_addr().expect("bound"),
            data_dir: root.path().join(format!("node-{id}")),
            initial_cluster: initial.clone(),
            heartbeat_ms: 150,
            election_timeout_min_ms: 600,
            election_timeout_max_ms: 1_200,
            ..NodeConfig::default()
        };
        let handle = Node::start_on(config, listener, std::future::pending())
            .await
            .expect("node starts");
        nodes.push(handle);
    }
    Cluster {
        nodes,
        addrs: initial.into_values().collect(),
        _root: root,
    }
}

fn seed() -> u64 {
    std::env::var("RAFTQ_CHECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_a_healthy_cluster_shows_no_violation() {
    let seed = seed();
    println!("seed {seed} (rerun with RAFTQ_CHECK_SEED={seed})");

    // Phase 1: a 3-node cluster with a leader.
    let cluster = start_cluster(3).await;
    let client = Client::with_retry(
        cluster.addrs.clone(),
        RetryPolicy {
            max_elapsed: Duration::from_secs(20),
            ..RetryPolicy::default()
        },
    )
    .expect("valid seeds");
    let leader = wait_for_leader(&client, WAIT).await;
    assert!(leader.is_some(), "no leader within {WAIT:?}");

    // Phase 2: a short run: holds, nacks and dead letters included.
    let config = WorkloadConfig {
        prefix: format!("e2e-{seed:x}"),
        duration: Duration::from_secs(5),
        max_ops: 800,
        producers: 2,
        consumers: 3,
        hold_per_mille: 40,
        nack_per_mille: 100,
        max_backlog: 50,
        visibility: Duration::from_secs(1),
        receive_wait: Duration::from_millis(200),
        progress_interval: Duration::from_secs(2),
        ..WorkloadConfig::new(seed)
    };
    let workload = Workload::setup(client.clone(), config)
        .await
        .expect("setup");
    let history = History::new();
    let progress = workload
        .run(&history, |p| println!("progress: {p}"))
        .await
        .expect("run");
    assert!(progress.invoked > 0);

    // Phase 3: drain, and read every replica's digest.
    let drain = workload.drain(&history, WAIT).await.expect("drain");
    assert!(drain.is_complete(), "drain: {drain:?}");
    let digests = replica_digests(&client, &cluster.addrs, WAIT).await;
    assert_eq!(digests.len(), 3, "every node answers: {digests:?}");

    // Phase 4: check; the history read back from JSON lines says the same.
    let report = check(&history, &digests, &[]);
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    assert!(report.payloads.acknowledged > 0, "{report}");
    assert_eq!(report.payloads.delivered, report.payloads.acked, "{report}");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.jsonl");
    history.write_jsonl(&path).expect("write history");
    let read = History::read_jsonl(&path).expect("read history");
    assert_eq!(read.records(), history.records());
    assert_eq!(check(&read, &digests, &[]), report);

    // Phase 5: clean up.
    workload.teardown().await.expect("teardown");
    for node in cluster.nodes {
        node.shutdown().await;
    }
}
