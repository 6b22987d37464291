//! `raftq dev --secure` as a newcomer runs it: the cluster starts with TLS,
//! mutual TLS and token auth, prints the `export` lines, and the CLI works
//! with them and only with them; `raftq auth add-user` makes a scoped user
//! the nodes take on SIGHUP.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::*;

/// `count` consecutive free loopback ports (`raftq dev` takes a base port).
fn consecutive_free_ports(count: u16) -> u16 {
    for _ in 0..200 {
        let base = free_ports(1)[0];
        if base > u16::MAX - count {
            continue;
        }
        let held: Vec<_> = (0..count)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
    panic!("no {count} consecutive free loopback ports");
}

/// The dev cluster child, stopped (SIGTERM, then SIGKILL) on drop.
struct Dev {
    child: Child,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `attempt` until it succeeds, at most [`MAX_POLLS`] times.
fn until_ok(what: &str, attempt: impl Fn() -> Run) -> Run {
    let mut last = None;
    for _ in 0..MAX_POLLS {
        let run = attempt();
        if run.status.success() {
            return run;
        }
        last = Some(run);
        std::thread::sleep(POLL_INTERVAL);
    }
    panic!(
        "{what}: never succeeded; last:\n{}",
        last.map(|r| r.to_string()).unwrap_or_default()
    );
}

/// The value of `export NAME=VALUE` in `lines`.
fn export(lines: &[String], name: &str) -> String {
    let prefix = format!("  export {name}=");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no export of {name} in:\n{}", lines.join("\n")))
        .to_string()
}

#[test]
fn dev_secure_starts_a_cluster_the_cli_reaches_only_with_its_ca_and_token() {
    phase("raftq dev --secure");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let base = consecutive_free_ports(3);
    let http = consecutive_free_ports(3);
    let mut command = Command::new(RAFTQ);
    command
        .args(["dev", "--secure", "--data-dir"])
        .arg(&data)
        .args(["--base-port", &base.to_string()])
        .args(["--http-base-port", &http.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clear_raftq_env(&mut command);
    let mut child = command.spawn().expect("raftq dev starts");
    let stdout = child.stdout.take().expect("piped");
    let _stderr = drain(child.stderr.take().expect("piped"));
    let dev = Dev { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + LEADER_TIMEOUT;
    while !lines.iter().any(|l: &String| l.starts_with("Ctrl-C stops")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("raftq dev printed no banner in time:\n{}", lines.join("\n")),
        }
    }
    println!("{}", lines.join("\n"));
    let ca = export(&lines, "RAFTQ_CA");
    let token = export(&lines, "RAFTQ_TOKEN");
    assert!(std::path::Path::new(&ca).is_file(), "{ca}");
    let cluster = (0..3)
        .map(|i| format!("127.0.0.1:{}", base + i))
        .collect::<Vec<_>>()
        .join(",");
    let secure = |args: &[&str], stdin: Option<&str>, token: &str| {
        let mut all = args.to_vec();
        all.extend(["--cluster", &cluster, "--ca", &ca, "--token", token]);
        raftq(&all, stdin, CLI_TIMEOUT)
    };

    phase("the README's tour with the exported CA and token");
    until_ok("the queue is created once a leader is elected", || {
        secure(&["queue", "create", "jobs"], None, &token)
    });
    secure(&["send", "jobs"], Some("hello\n"), &token).expect_ok();
    let run = secure(&["recv", "jobs", "--ack", "--json"], None, &token).expect_ok();
    assert_eq!(run.bodies(), ["hello"], "{run}");

    phase("without the token, or without TLS: refused, with what to do");
    cli(&cluster, &["queue", "list", "--ca", &ca]).expect_refusal(&["needs a token", "--token"]);
    cli(&cluster, &["queue", "list", "--token", &token]).expect_refusal(&["--ca"]);
    secure(&["queue", "list"], None, "rq_wrong").expect_refusal(&["not valid"]);

    phase("auth add-user makes a user scoped to orders.*; SIGHUP makes the nodes take it");
    let users = data.join("tls").join("users.toml");
    let run = raftq(
        &[
            "auth",
            "add-user",
            "orders-svc",
            "--file",
            &users.to_string_lossy(),
            "--allow",
            "orders.*=send",
        ],
        None,
        CLI_TIMEOUT,
    )
    .expect_ok();
    let scoped = run.stdout.trim().to_string();
    assert!(scoped.starts_with("rq_"), "{run}");
    let text = std::fs::read_to_string(&users).expect("read the users file");
    assert!(!text.contains(&scoped), "only the token's hash is stored");
    secure(&["queue", "create", "orders.eu"], None, &token).expect_ok();
    for pid in lines
        .iter()
        .filter_map(|l| l.split("  pid ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
    {
        let sent = Command::new("kill")
            .args(["-HUP", pid])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -HUP {pid}");
    }
    until_ok(
        "the new user sends to orders.* once the nodes re-read the file",
        || secure(&["send", "orders.eu", "x"], None, &scoped),
    );
    secure(&["send", "jobs", "x"], None, &scoped).expect_refusal(&[
        "lacks the send permission",
        "\"jobs\"",
        "hint",
    ]);
    secure(&["recv", "orders.eu"], None, &scoped).expect_refusal(&["lacks the receive permission"]);
    phase("a token from a file; a status cut down for a token that is not an admin's");
    let token_file = dir.path().join("scoped.token");
    std::fs::write(&token_file, format!("{scoped}\n")).expect("write the token file");
    let token_file = token_file.to_string_lossy();
    let run = cli(
        &cluster,
        &[
            "cluster",
            "status",
            "--ca",
            &ca,
            "--token-file",
            &token_file,
        ],
    )
    .expect_ok();
    assert!(
        run.stdout.contains("leader") && run.stdout.contains("admin tokens only"),
        "{run}"
    );
    let run = secure(&["cluster", "status"], None, &token).expect_ok();
    assert!(
        run.stdout.contains("members:"),
        "the admin sees the members:\n{run}"
    );
    let run = secure(&["queue", "list", "--json"], None, &scoped).expect_ok();
    assert!(
        run.stdout.contains("orders.eu") && !run.stdout.contains("\"jobs\""),
        "it lists only what it may see:\n{run}"
    );
    drop(dev);
}

/// `raftq serve --listen 127.0.0.1:0 --data-dir DATA ARGS` must refuse to
/// start, saying every one of `says`.
fn serve_refused(data: &std::path::Path, args: &[&str], says: &[&str]) {
    let data = data.to_string_lossy();
    let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", &data];
    all.extend_from_slice(args);
    raftq(&all, None, SERVE_REFUSAL_TIMEOUT).expect_refusal(says);
}

#[test]
fn tls_make_certs_and_auth_refuse_bad_input_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("certs");
    let out = out.to_string_lossy();
    raftq(
        &["tls", "make-certs", "--dir", &out, "--node", "1"],
        None,
        CLI_TIMEOUT,
    )
    .expect_refusal(&["ID=HOST"]);
    raftq(
        &["tls", "make-certs", "--dir", &out, "--node", "x=h"],
        None,
        CLI_TIMEOUT,
    )
    .expect_refusal(&["not a node id"]);
    let run = raftq(
        &[
            "tls",
            "make-certs",
            "--dir",
            &out,
            "--node",
            "1=raftq-1,10.0.0.1",
            "--node",
            "2=raftq-2",
        ],
        None,
        CLI_TIMEOUT,
    )
    .expect_ok();
    assert!(run.stdout.contains("--tls-client-ca"), "{run}");
    for file in [
        "ca.pem",
        "node-1.pem",
        "node-1.key",
        "node-2.pem",
        "client.pem",
    ] {
        assert!(dir.path().join("certs").join(file).is_file(), "{file}");
    }
    let users = dir.path().join("users.toml");
    let users = users.to_string_lossy();
    raftq(
        &[
            "auth",
            "add-user",
            "a",
            "--file",
            &users,
            "--allow",
            "orders.*=write",
        ],
        None,
        CLI_TIMEOUT,
    )
    .expect_refusal(&["not a permission"]);
    raftq(
        &["auth", "add-user", "a", "--file", &users, "--admin"],
        None,
        CLI_TIMEOUT,
    )
    .expect_ok();
    raftq(
        &["auth", "add-user", "a", "--file", &users],
        None,
        CLI_TIMEOUT,
    )
    .expect_refusal(&["already has a user"]);
    // A file whose last line has no newline gets a well-formed entry; a
    // broken file is not appended to.
    let text = std::fs::read_to_string(dir.path().join("users.toml")).expect("read");
    std::fs::write(dir.path().join("users.toml"), text.trim_end()).expect("write");
    raftq(
        &["auth", "add-user", "b", "--file", &users],
        None,
        CLI_TIMEOUT,
    )
    .expect_ok();
    let text = std::fs::read_to_string(dir.path().join("users.toml")).expect("read");
    assert_eq!(text.matches("[[user]]").count(), 2, "{text}");
    assert!(!text.contains("true[[user]]"), "{text}");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[[user]]\nname = 1\n").expect("write");
    raftq(
        &["auth", "add-user", "c", "--file", &broken.to_string_lossy()],
        None,
        CLI_TIMEOUT,
    )
    .expect_refusal(&["fix the file first"]);
    let run = raftq(&["auth", "hash"], Some("secret\n"), CLI_TIMEOUT).expect_ok();
    assert_eq!(run.stdout.trim().len(), 64, "{run}");
    // A node refuses a users file that does not parse, naming it.
    std::fs::write(dir.path().join("bad.toml"), "[[user]]\nname = \"x\"\n").expect("write");
    let bad = dir.path().join("bad.toml");
    let data = dir.path().join("data");
    serve_refused(
        &data,
        &["--auth-file", &bad.to_string_lossy()],
        &["bad.toml", "token_sha256"],
    );
    // A users file with no users would refuse every call: refused.
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").expect("write");
    serve_refused(
        &data,
        &["--auth-file", &empty.to_string_lossy()],
        &["has no users"],
    );
    // Another node's certificate: refused, naming what the node needs.
    serve_refused(
        &data,
        &[
            "--id",
            "1",
            "--tls-cert",
            &format!("{out}/node-2.pem"),
            "--tls-key",
            &format!("{out}/node-2.key"),
            "--tls-client-ca",
            &format!("{out}/ca.pem"),
        ],
        &["node-1.raftq"],
    );
    // TLS files that do not belong together stop the start too.
    serve_refused(
        &data,
        &[
            "--tls-cert",
            &format!("{out}/node-1.pem"),
            "--tls-key",
            &format!("{out}/node-2.key"),
            "--tls-client-ca",
            &format!("{out}/ca.pem"),
        ],
        &["do not make a usable set"],
    );
}
