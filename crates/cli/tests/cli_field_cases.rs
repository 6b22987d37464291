//! Field cases from other queues' bug reports, replayed on `raftq serve`
//! processes through the `raftq` CLI as a user would type them: large
//! input, partial updates, purge and dedup, receipts that cannot work any
//! more, a hung node first in `--cluster`, and a data disk that fills.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn send_from_stdin_splits_large_lines_into_requests_that_fit() {
    phase("start three serve processes and create big");
    let cluster = Cluster::start();
    cluster
        .cli(&["queue", "create", "big", "--max-message-bytes", "100000"])
        .expect_ok();

    phase("100 lines of 60 KB on stdin: more than one 4 MiB request holds");
    let line = "x".repeat(60_000);
    let input: String = (0..100).map(|_| format!("{line}\n")).collect();
    let run = cluster.cli_stdin(&["send", "big"], &input).expect_ok();
    assert_eq!(run.stdout.lines().count(), 100, "100 ids:\n{}", run.stderr);
    let stats = cluster
        .cli(&["queue", "stats", "big", "--json"])
        .expect_ok()
        .json();
    assert_eq!(stats["ready"], 100, "{stats}");

    phase("a line over one request's 4 MiB is refused by its number; the others are stored");
    let huge = "h".repeat(5_000_000);
    let run = cluster
        .cli_stdin(&["send", "big"], &format!("a\n{huge}\nc\n"))
        .expect_refusal(&["line 2: refused: too large", "1 messages were refused"]);
    assert_eq!(
        run.stdout.lines().count(),
        2,
        "ids of lines 1 and 3:\n{run}"
    );
    let stats = cluster
        .cli(&["queue", "stats", "big", "--json"])
        .expect_ok()
        .json();
    assert_eq!(stats["ready"], 102, "{stats}");
}

#[test]
fn queue_update_changes_only_the_options_it_names_and_purge_forgets_dedup_ids() {
    phase("start three serve processes; jobs dead-letters into dlq after 3 deliveries");
    let cluster = Cluster::start();
    cluster.cli(&["queue", "create", "dlq"]).expect_ok();
    cluster
        .cli(&[
            "queue",
            "create",
            "jobs",
            "--max-deliveries",
            "3",
            "--dead-letter-queue",
            "dlq",
        ])
        .expect_ok();

    phase("queue update jobs --visibility-timeout 1s keeps the limit and the DLQ");
    cluster
        .cli(&["queue", "update", "jobs", "--visibility-timeout", "1s"])
        .expect_ok();
    let config = cluster
        .cli(&["queue", "stats", "jobs", "--json"])
        .expect_ok()
        .json()["config"]
        .clone();
    assert_eq!(config["visibility_timeout_ms"], 1000, "{config}");
    assert_eq!(config["max_deliveries"], 3, "{config}");
    assert_eq!(config["dead_letter_queue"], "dlq", "{config}");

    phase("queue update jobs --reset dead-letter-queue detaches it, and only it");
    cluster
        .cli(&["queue", "update", "jobs", "--reset", "dead-letter-queue"])
        .expect_ok();
    let config = cluster
        .cli(&["queue", "stats", "jobs", "--json"])
        .expect_ok()
        .json()["config"]
        .clone();
    assert!(config["dead_letter_queue"].is_null(), "{config}");
    assert_eq!(config["max_deliveries"], 3, "{config}");
    cluster
        .cli(&["queue", "update", "jobs", "--reset", "no-such-option"])
        .expect_refusal(&["no-such-option"]);

    phase("an option reset twice resets once; an update that changes nothing is refused");
    cluster
        .cli(&[
            "queue",
            "update",
            "jobs",
            "--reset",
            "max-deliveries",
            "--reset",
            "max-deliveries",
        ])
        .expect_ok();
    cluster
        .cli(&["queue", "update", "jobs"])
        .expect_refusal(&["changes nothing"]);
    cluster
        .cli(&["queue", "update", "jobs", "--visibility-timeout", "0s"])
        .expect_refusal(&["--visibility-timeout"]);

    phase("recv refuses a wrong --max or --visibility even when nothing is ready");
    cluster.cli(&["queue", "create", "empty"]).expect_ok();
    cluster
        .cli(&["recv", "empty", "--max", "0"])
        .expect_refusal(&["0"]);
    cluster
        .cli(&["recv", "empty", "--visibility", "0s"])
        .expect_refusal(&["visibility", "--visibility"]);

    phase("recv escapes control characters of a body to keep one line per message");
    cluster
        .cli(&["send", "empty", "a\u{1b}[31mred\tb"])
        .expect_ok();
    let run = cluster.cli(&["recv", "empty"]).expect_ok();
    assert!(
        run.stdout.contains("a\\u{1b}[31mred\\tb") && !run.stdout.contains('\u{1b}'),
        "escaped:\n{run}"
    );

    phase("send with a dedup id, purge, send a fixed job under the same id");
    cluster
        .cli(&["queue", "create", "p", "--retry-backoff-min", "0s"])
        .expect_ok();
    cluster
        .cli(&["send", "p", "job-1", "--dedup-id", "order-1"])
        .expect_ok();
    cluster.cli(&["queue", "purge", "p"]).expect_ok();
    let run = cluster
        .cli(&["send", "p", "job-1-fixed", "--dedup-id", "order-1"])
        .expect_ok();
    assert!(
        !run.stdout.contains("duplicate"),
        "stored, not a duplicate:\n{run}"
    );
    let run = cluster
        .cli(&["recv", "p", "--max", "10", "--json"])
        .expect_ok();
    assert_eq!(run.bodies(), ["job-1-fixed"], "{run}");

    phase("a lease held across a purge can still be acked");
    let receipt = run.json_lines()[0]["receipt"]
        .as_str()
        .expect("a receipt")
        .to_string();
    cluster.cli(&["queue", "purge", "p"]).expect_ok();
    cluster.cli(&["ack", "p", &receipt]).expect_ok();

    phase("acking it again after the window, or a receipt never issued, says it is gone");
    let run = cluster
        .cli(&["ack", "p", "999999-1"])
        .expect_refusal(&["unknown receipt", "gone"]);
    assert!(!run.stderr.contains("receive the message again"), "{run}");
}

#[test]
fn a_hung_node_first_in_cluster_does_not_hold_up_the_cli() {
    phase("start three serve processes and stop node 1 with SIGSTOP");
    let mut cluster = Cluster::start();
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();
    let pid = cluster
        .node(1)
        .child
        .as_ref()
        .expect("node 1 runs")
        .id()
        .to_string();
    signal("-STOP", &pid);

    phase("commands with node 1 first in --cluster");
    let started = Instant::now();
    for _ in 0..3 {
        cluster
            .cli(&["send", "jobs", "while node 1 hangs"])
            .expect_ok();
    }
    cluster.cli(&["queue", "list"]).expect_ok();
    println!(
        "   4 commands took {:?} with node 1 stopped",
        started.elapsed()
    );
    signal("-CONT", &pid);
}

fn signal(which: &str, pid: &str) {
    let sent = Command::new("kill")
        .args([which, pid])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {which} {pid}");
}

// ---------------------------------------------------------------------------
// A data disk that fills: a tmpfs of its own under one node (needs root).
// ---------------------------------------------------------------------------

/// Size of the small filesystem under node 3's data dir.
const SMALL_DISK: &str = "64m";

/// A tmpfs mounted on a directory, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs on `path`, or says why it cannot (not root).
    fn mount(path: &Path) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).expect("create the mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={SMALL_DISK}"), "tmpfs"])
            .arg(path)
            .status();
        match mounted {
            Ok(status) if status.success() => Some(SmallDisk {
                path: path.to_path_buf(),
            }),
            other => {
                println!("   SKIPPED: cannot mount a tmpfs ({other:?}); this test needs root");
                None
            }
        }
    }

    fn free_bytes(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.path).expect("statvfs");
        stat.blocks_available() * stat.fragment_size()
    }

    /// Writes a filler file until at most `leave` bytes are free (0: until
    /// the disk is full).
    fn fill(&self, leave: u64) {
        let chunk = vec![0u8; 256 * 1024];
        let filler = self.path.join("filler");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .expect("open the filler");
        for _ in 0..4096 {
            if leave > 0 && self.free_bytes() <= leave {
                return;
            }
            if std::io::Write::write_all(&mut file, &chunk).is_err() {
                return;
            }
        }
    }

    fn empty(&self) {
        let _ = std::fs::remove_file(self.path.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_node_whose_disk_runs_low_raises_the_alarm_and_a_full_disk_stops_it() {
    phase("three serve processes; node 3's data dir is a 64 MiB tmpfs");
    let mut disk = None;
    let mut cluster = Cluster::start_with(|node, data_dir| {
        if node.id == 3 {
            disk = SmallDisk::mount(data_dir);
            node.args
                .extend(["--min-free-disk-bytes".to_string(), (16 << 20).to_string()]);
        }
    });
    let Some(disk) = disk else {
        return;
    };
    cluster.cli(&["queue", "create", "jobs"]).expect_ok();
    cluster.cli(&["send", "jobs", "before"]).expect_ok();

    phase("fill node 3's disk to below its 16 MiB limit: enqueues are refused, naming it");
    disk.fill(8 << 20);
    let node3 = cluster.node(3).addr.clone();
    let status = wait_for(|| {
        let status = cli(&node3, &["cluster", "status", "--json"])
            .expect_ok()
            .json();
        (status["disk"]["alarm"] == true).then_some(status)
    });
    println!("   node 3: {}", status["disk"]);
    let mut accepted = vec!["before".to_string()];
    let run = wait_for(|| {
        let body = format!("probe-{}", accepted.len());
        let run = cluster.cli(&["send", "jobs", &body]);
        if run.status.success() {
            accepted.push(body);
            return None;
        }
        Some(run)
    });
    assert!(
        run.stderr.contains("disk alarm") && run.stderr.contains("node 3"),
        "{run}"
    );

    phase("receives and acks still drain the queue");
    let run = cluster
        .cli(&["recv", "jobs", "--max", "10", "--ack", "--json"])
        .expect_ok();
    assert_eq!(run.bodies(), accepted, "{run}");

    phase("space is freed: enqueues are taken again");
    disk.empty();
    wait_for(|| {
        cluster
            .cli(&["send", "jobs", "after"])
            .status
            .success()
            .then_some(())
    });

    phase("node 3's disk fills up entirely (alarm off): node 3 exits non-zero");
    let node = cluster.node(3);
    let _ = node.sigterm();
    let limit = node
        .args
        .iter()
        .position(|a| a == "--min-free-disk-bytes")
        .expect("set at the start")
        + 1;
    node.args[limit] = "0".to_string();
    node.spawn();
    wait_until_caught_up(&cluster.node(3).addr.clone(), &cluster.addrs_without(3));
    disk.fill(0);
    let body = format!("{}\n", "y".repeat(200_000));
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        let _ = cluster.cli_stdin(&["send", "jobs"], &body);
        if let Some(status) = cluster
            .node(3)
            .child
            .as_mut()
            .expect("node 3 was started")
            .try_wait()
            .expect("try_wait")
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 kept running on a full disk:\n{}",
            cluster.node(3).log_tail(30)
        );
        thread::sleep(Duration::from_millis(100));
    };
    println!("   node 3 exited: {exit}");
    assert!(!exit.success(), "a full disk is a failure: {exit}");
    cluster.node(3).child = None;
    cluster.cli(&["send", "jobs", "with two nodes"]).expect_ok();

    phase("space is freed and node 3 starts again: it catches up");
    disk.empty();
    cluster.node(3).spawn();
    wait_until_caught_up(&cluster.node(3).addr.clone(), &cluster.addrs_without(3));
}

/// Polls `attempt` until it gives a value, for at most a minute.
fn wait_for<T>(mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(Instant::now() < deadline, "not within a minute");
        thread::sleep(Duration::from_millis(500));
    }
}
