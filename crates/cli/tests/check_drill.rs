//! `raftq check`, the failover drill, run as a user would run it: against a
//! cluster of `raftq serve` processes it starts itself (behind its
//! fault-injecting proxies) and faults on a seeded schedule: kill -9,
//! SIGSTOP, partitions, membership changes, lost data dirs. It must find no
//! violation.
//! Longer and larger runs are in `.ci/run` (release build, 60,000
//! operations, 3 and 5 nodes, network namespaces).

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The drills run one at a time: each starts a cluster and a workload, and
/// two at once on 2 cores would measure the machine, not raftq.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn raftq(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftq"))
        .args(args)
        .env_remove("RAFTQ_CLUSTER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start raftq");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("poll").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("raftq {args:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a drill on a local cluster and asserts it is clean; returns stderr
/// (where the faults are logged).
fn clean_drill(args: &[&str], limit: Duration) -> String {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut all = vec!["check", "--nemesis", "local"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = raftq(&all, limit);
    println!("{stdout}");
    assert!(ok, "the drill failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("check: OK"), "{stdout}");
    assert!(stdout.contains("lost: 0"), "{stdout}");
    assert!(stderr.contains("faults planned"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Seed 11's first faults are a kill of the leader, then the leader and a
/// second voter removed at once: the schedule that found openraft's
/// assertion on a leader that had removed itself (see `membership.rs`).
#[test]
fn the_drill_with_every_kind_of_fault_finds_no_violation() {
    let stderr = clean_drill(
        &[
            "--faults",
            "kill,pause,partition,membership",
            "--duration",
            "15s",
            "--seed",
            "11",
        ],
        Duration::from_secs(240),
    );
    assert!(stderr.contains("remove voter"), "{stderr}");
}

/// Nodes lose their data dir and start again under their old id with the
/// same `--initial-cluster` (the leader among them): the cluster refuses
/// them until they are removed and added back, and loses nothing; some of
/// the messages are large (the workload's default).
#[test]
fn the_drill_with_wiped_data_dirs_loses_nothing_acknowledged() {
    let stderr = clean_drill(
        &["--faults", "wipe,kill", "--duration", "30s", "--seed", "1"],
        Duration::from_secs(300),
    );
    assert!(stderr.contains("fault=wipe"), "{stderr}");
}

/// The cluster runs TLS, mutual TLS between its nodes and token auth
/// (`--secure`): the faults' reconnections go through the TLS handshakes
/// and peer checks, the workload and the drill's membership changes carry
/// the admin token.
#[test]
fn the_drill_against_a_secured_cluster_finds_no_violation() {
    let stderr = clean_drill(
        &[
            "--secure",
            "--faults",
            "kill,partition,membership",
            "--duration",
            "15s",
            "--seed",
            "3",
        ],
        Duration::from_secs(240),
    );
    assert!(stderr.contains("secured: TLS"), "{stderr}");
}

#[test]
fn the_drill_with_partitions_finds_no_violation() {
    let stderr = clean_drill(
        &["--faults", "partition", "--duration", "20s", "--seed", "7"],
        Duration::from_secs(240),
    );
    assert!(stderr.contains("fault=partition"), "{stderr}");
}

/// The docker nemesis against a compose project that does not exist: a
/// clear error naming what is missing, no panic, nothing started.
#[test]
fn the_docker_drill_without_its_cluster_says_what_is_missing() {
    let (ok, _, stderr) = raftq(
        &[
            "check",
            "--nemesis",
            "docker",
            "--project",
            "raftq-no-such-project",
        ],
        Duration::from_secs(60),
    );
    assert!(!ok);
    assert!(
        stderr.contains("no container for node 1")
            || stderr.contains("Docker engine does not answer"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_kill_loop_of_40_kills_loses_nothing_acknowledged() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (ok, stdout, stderr) = raftq(
        &[
            "check",
            "--nemesis",
            "local",
            "--kill-loop",
            "40",
            "--seed",
            "5",
        ],
        Duration::from_secs(400),
    );
    println!("{stdout}");
    assert!(ok, "the kill loop found a problem:\n{stdout}\n{stderr}");
    assert!(stdout.contains("failover: 40 faults"), "{stdout}");
    assert!(stdout.contains("lost: 0"), "{stdout}");
}
