//! `raftq check`, the failover drill, run as a user would run it: against a
//! cluster of `raftq serve` processes it starts itself and faults with
//! kill -9 and SIGSTOP on a seeded schedule. It must find no violation.

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

#[test]
fn the_drill_with_kills_and_pauses_finds_no_violation() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (ok, stdout, stderr) = raftq(
        &[
            "check",
            "--nemesis",
            "local",
            "--duration",
            "15s",
            "--seed",
            "11",
        ],
        Duration::from_secs(240),
    );
    println!("{stdout}");
    assert!(ok, "the drill failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("check: OK"), "{stdout}");
    assert!(stdout.contains("lost: 0"), "{stdout}");
    assert!(stderr.contains("faults planned"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_drill_refuses_a_backend_it_does_not_have_yet() {
    let (ok, _, stderr) = raftq(&["check", "--nemesis", "docker"], Duration::from_secs(30));
    assert!(!ok);
    assert!(
        stderr.contains("--nemesis docker is not built yet"),
        "{stderr}"
    );
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
