//! End-to-end tests of the built `raftq` binary.
//!
//! Each test starts three `raftq serve` child processes on free loopback ports
//! in a tempdir and drives them with `raftq` client commands, the way an
//! operator types them. The children are killed on drop, every command runs
//! under a timeout, and every wait is bounded in time and count. When a test
//! fails, the tail of each node's log is printed.
//!
//! Run with `cargo test -p raftq-cli --test cli_cluster -- --test-threads=1`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

#[test]
fn the_cli_creates_a_queue_sends_receives_and_acks_against_three_serve_processes() {
    phase("start three serve processes");
    let cluster = Cluster::start();

    phase("queue create jobs");
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();

    phase("send one message as an argument and three as stdin lines");
    let run = cluster.cli(&["send", "jobs", "hello"]).expect_ok();
    assert_eq!(run.stdout.lines().count(), 1, "one id:\n{run}");
    let run = cluster
        .cli_stdin(&["send", "jobs"], "one\ntwo\nthree\n")
        .expect_ok();
    assert_eq!(run.stdout.lines().count(), 3, "three ids:\n{run}");

    phase("recv --max 10 --ack --json returns the four bodies in order");
    let run = cluster
        .cli(&["recv", "jobs", "--max", "10", "--ack", "--json"])
        .expect_ok();
    assert_eq!(run.bodies(), ["hello", "one", "two", "three"], "{run}");
    let deliveries = run.json_lines();
    for delivery in &deliveries {
        assert!(delivery["receipt"].is_string(), "{delivery}");
        assert_eq!(delivery["delivery_count"], 1, "{delivery}");
    }
    let ids: Vec<u64> = deliveries.iter().filter_map(|d| d["id"].as_u64()).collect();
    assert_eq!(ids.len(), 4, "{run}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");

    phase("a second recv --wait 1s finds nothing");
    let run = cluster
        .cli(&["recv", "jobs", "--wait", "1s", "--json"])
        .expect_ok();
    assert!(run.bodies().is_empty(), "{run}");

    phase("queue stats jobs --json counts four acks");
    let stats = cluster
        .cli(&["queue", "stats", "jobs", "--json"])
        .expect_ok()
        .json();
    assert_eq!(stats["counters"]["enqueued"], 4, "{stats}");
    assert_eq!(stats["counters"]["acked"], 4, "{stats}");
    assert_eq!(
        (&stats["ready"], &stats["in_flight"]),
        (&0.into(), &0.into()),
        "{stats}"
    );

    phase("cluster status --json names a leader among three members");
    let status = cluster
        .cli(&["cluster", "status", "--json"])
        .expect_ok()
        .json();
    let members: Vec<u64> = status["members"]
        .as_array()
        .expect("members is an array")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(members, [1, 2, 3], "{status}");
    let leader = status["leader"].as_u64().expect("a leader");
    assert!(members.contains(&leader), "{status}");
}

#[test]
fn after_sigkill_of_the_leader_the_cli_still_works_and_nothing_acknowledged_is_lost() {
    phase("start three serve processes and create jobs");
    let mut cluster = Cluster::start();
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();

    phase("send 20 messages, one per stdin line, all confirmed");
    let sent: Vec<String> = (1..=20).map(|n| format!("message-{n:02}")).collect();
    let run = cluster
        .cli_stdin(&["send", "jobs"], &(sent.join("\n") + "\n"))
        .expect_ok();
    assert_eq!(run.stdout.lines().count(), 20, "twenty ids:\n{run}");

    phase("SIGKILL the leader");
    let killed = wait_for_leader(&cluster.addrs(), None)["leader"]
        .as_u64()
        .expect("a leader");
    let survivors = cluster.addrs_without(killed);
    println!("   killing node {killed}; survivors {survivors}");
    cluster.node(killed).sigkill();

    phase("recv --ack through the survivors and the full list until all 20 are back");
    let acked = receive_until_acked(&[&survivors, &cluster.addrs()], "jobs", sent.len());
    let distinct: BTreeSet<&String> = acked.iter().collect();
    assert_eq!(
        distinct.len(),
        acked.len(),
        "a body was acked twice: {acked:?}"
    );
    let mut sorted = acked.clone();
    sorted.sort();
    assert_eq!(sorted, sent, "exactly the 20 confirmed bodies");

    phase("a new leader, not the killed node, through the survivors and the full list");
    let status = wait_for_leader(&survivors, Some(killed));
    println!("   new leader is node {}", status["leader"]);
    let status = wait_for_leader(&cluster.addrs(), Some(killed));
    assert_ne!(status["leader"].as_u64(), Some(killed), "{status}");

    phase("send and receive one more through the full list, dead address included");
    cluster.cli(&["send", "jobs", "after-failover"]).expect_ok();
    let run = cluster
        .cli(&[
            "recv", "jobs", "--max", "100", "--wait", "2s", "--ack", "--json",
        ])
        .expect_ok();
    assert_eq!(run.bodies(), ["after-failover"], "{run}");
    let stats = cluster
        .cli(&["queue", "stats", "jobs", "--json"])
        .expect_ok()
        .json();
    assert_eq!(stats["counters"]["acked"], 21, "{stats}");
    assert_eq!(
        (&stats["ready"], &stats["in_flight"]),
        (&0.into(), &0.into()),
        "{stats}"
    );

    phase("restart the killed node with the same command line; it rejoins and catches up");
    cluster.node(killed).spawn();
    let own = cluster.node(killed).addr.clone();
    wait_until_caught_up(&own, &survivors);
}

#[test]
fn bad_input_gets_a_clear_error_and_a_nonzero_exit() {
    phase("start three serve processes and create jobs");
    let cluster = Cluster::start();
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();

    phase("recv from a queue that does not exist");
    cluster.cli(&["recv", "nope"]).expect_refusal(&[
        "nope",
        "does not exist",
        "raftq queue create",
    ]);

    phase("queue create with an invalid name");
    cluster
        .cli(&["queue", "create", "bad name!"])
        .expect_refusal(&["bad name!", "queue name"]);

    phase("ack an unknown receipt");
    cluster
        .cli(&["ack", "jobs", "999-1"])
        .expect_refusal(&["999-1", "receipt"]);

    phase("send --file that cannot be read");
    cluster
        .cli(&["send", "jobs", "--file", "/nonexistent"])
        .expect_refusal(&["cannot read", "/nonexistent"]);

    phase("cluster remove-node of a node that is not a member");
    cluster
        .cli(&["cluster", "remove-node", "42"])
        .expect_refusal(&["42", "not a member"]);

    refusals_of_serve(cluster.dir.path());
}

/// `raftq serve` refuses a broken configuration before it starts anything.
fn refusals_of_serve(dir: &Path) {
    let data_dir = dir.join("refused");
    let data_dir = data_dir.to_string_lossy();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", &data_dir];
        args.extend(extra);
        raftq(&args, None, SERVE_REFUSAL_TIMEOUT)
    };

    phase("serve --id 0");
    serve(&["--id", "0"]).expect_refusal(&["id must be at least 1"]);

    phase("serve --initial-cluster x=y");
    serve(&["--id", "1", "--initial-cluster", "x=y"]).expect_refusal(&[
        "--initial-cluster",
        "x=y",
        "not a node id",
    ]);

    phase("serve --config with an unknown key");
    let config = dir.join("unknown-key.toml");
    std::fs::write(&config, "id = 1\nheartbeat_msec = 200\n").expect("write the config file");
    serve(&["--config", &config.to_string_lossy()])
        .expect_refusal(&["unknown-key.toml", "heartbeat_msec"]);
}

#[test]
fn removing_a_node_that_is_not_a_member_gives_no_queue_hint() {
    // Regression: every NOT_FOUND used to get the hint "create it with
    // `raftq queue create NAME`", including "node 42 is not a member".
    phase("start three serve processes");
    let cluster = Cluster::start();

    phase("cluster remove-node 42");
    let run = cluster
        .cli(&["cluster", "remove-node", "42"])
        .expect_refusal(&["not a member"]);
    assert!(
        !run.stderr.contains("queue create"),
        "misleading hint:\n{run}"
    );
}

#[test]
fn a_second_start_keeps_the_data() {
    phase("start three serve processes, create jobs, send five messages");
    let mut cluster = Cluster::start();
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();
    let sent = ["m1", "m2", "m3", "m4", "m5"];
    cluster
        .cli_stdin(&["send", "jobs"], &(sent.join("\n") + "\n"))
        .expect_ok();

    phase("stop all three with SIGTERM");
    for node in &mut cluster.nodes {
        let status = node.sigterm();
        println!("   node {} exited: {status:?}", node.id);
        let status = status.unwrap_or_else(|| panic!("node {} ignored SIGTERM", node.id));
        assert!(
            status.success(),
            "node {} exited with {status} after SIGTERM",
            node.id
        );
    }

    phase("start them again with the same command lines");
    for node in &mut cluster.nodes {
        node.spawn();
    }
    let status = wait_for_leader(&cluster.addrs(), None);
    println!("   leader is node {}", status["leader"]);

    phase("recv --max 10 --ack --json returns the five bodies");
    let run = cluster
        .cli(&[
            "recv", "jobs", "--max", "10", "--wait", "2s", "--ack", "--json",
        ])
        .expect_ok();
    assert_eq!(run.bodies(), sent, "{run}");
}
