//! `raftq dev`: a local 3-node cluster for trying raftq out.
//!
//! It starts three `raftq serve` child processes on loopback (gRPC ports
//! 7401–7403, HTTP 9401–9403) with data under `./data/node-N`, prints the
//! addresses, each node's pid (kill one to watch a failover) and three
//! commands to try, and stops them all cleanly on Ctrl-C. A second start
//! keeps the data: the nodes recover their queues from disk. With
//! `--secure` the nodes run TLS, mutual TLS and token auth on throwaway
//! certificates ([`super::auth::Secured`]).

use std::path::PathBuf;
use std::process::Stdio;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// `raftq dev` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct DevArgs {
    /// Where the nodes keep their data (one directory per node).
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Nodes to start (1 to 7; 3 or 5 make a cluster that survives a failure).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// gRPC port of node 1; node N listens on this + N - 1.
    #[arg(long, default_value_t = 7401)]
    pub base_port: u16,
    /// HTTP (metrics) port of node 1; node N listens on this + N - 1.
    #[arg(long, default_value_t = 9401)]
    pub http_base_port: u16,
    /// TLS, mutual TLS between the nodes and token auth: makes a throwaway
    /// CA, node and client certificates and an admin token under
    /// DATA_DIR/tls (kept for the next start) and prints the `export` lines
    /// that point the CLI at them.
    #[arg(long)]
    pub secure: bool,
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if !(1..=7).contains(&args.nodes) {
        anyhow::bail!(
            "--nodes must be 1 to 7 (3 or 5 make sense), not {}",
            args.nodes
        );
    }
    let exe = std::env::current_exe()?;
    let ids: Vec<u16> = (1..=args.nodes).collect();
    let addr = |id: u16| format!("127.0.0.1:{}", args.base_port + id - 1);
    let cluster: Vec<String> = ids.iter().map(|&id| format!("{id}={}", addr(id))).collect();
    std::fs::create_dir_all(&args.data_dir)?;
    if !args.secure && args.data_dir.join("tls").join("users.toml").exists() {
        eprintln!(
            "note: {} was last run with --secure; this start has no TLS and no auth, so anyone \
             who reaches 127.0.0.1 can read its queues (add --secure to keep them protected)",
            args.data_dir.display()
        );
    }
    let secured = if args.secure {
        let ids: Vec<u64> = ids.iter().map(|&id| u64::from(id)).collect();
        Some(super::auth::Secured::throwaway(
            &args.data_dir.join("tls"),
            &ids,
        )?)
    } else {
        None
    };
    let secure_args = |id: u16| {
        secured
            .as_ref()
            .map(|s| s.serve_args(u64::from(id)))
            .unwrap_or_default()
    };
    let mut children: Vec<(u16, Child)> = Vec::new();
    for &id in &ids {
        let dir = args.data_dir.join(format!("node-{id}"));
        let log = std::fs::File::create(args.data_dir.join(format!("node-{id}.log")))?;
        let child = Command::new(&exe)
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--listen", &addr(id)])
            .args([
                "--http-listen",
                &format!("127.0.0.1:{}", args.http_base_port + id - 1),
            ])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--initial-cluster", &cluster.join(",")])
            .args(secure_args(id))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        children.push((id, child));
    }
    let seeds: Vec<String> = ids.iter().map(|&id| addr(id)).collect();
    println!(
        "raftq dev cluster: {} nodes, data under {}",
        ids.len(),
        args.data_dir.display()
    );
    for (id, child) in &children {
        println!(
            "  node {id}: gRPC {}  metrics http://127.0.0.1:{}/metrics  pid {}  log {}",
            addr(*id),
            args.http_base_port + id - 1,
            child.id().unwrap_or(0),
            args.data_dir.join(format!("node-{id}.log")).display()
        );
    }
    let cluster_flag = if args.base_port == 7401 && ids.len() == 3 {
        String::new()
    } else {
        format!(" --cluster {}", seeds.join(","))
    };
    if let Some(secured) = &secured {
        println!(
            "\nSecured: TLS, mutual TLS between the nodes, token auth (files under {}).",
            args.data_dir.join("tls").display()
        );
        println!("Point the CLI at it, in the terminal you use:");
        println!("  export RAFTQ_CA={}", secured.certs.ca.display());
        println!("  export RAFTQ_TOKEN={}", secured.token);
        println!(
            "More users: raftq auth add-user NAME --file {} --allow 'orders.*=send,receive' (the nodes take it within 5 s).",
            secured.users.display()
        );
    }
    println!("\nTry, in another terminal:");
    println!("  raftq queue create jobs{cluster_flag}");
    println!("  echo hello | raftq send jobs{cluster_flag}");
    println!("  raftq recv jobs --ack{cluster_flag}");
    println!("\nCtrl-C stops the cluster (the data stays for the next start).");

    // Wait for Ctrl-C. A node that exits (say, one you killed to watch a
    // failover) is reported; the others keep running.
    let mut stopped = Vec::new();
    loop {
        let running: Vec<&mut (u16, Child)> = children
            .iter_mut()
            .filter(|(id, _)| !stopped.contains(id))
            .collect();
        if running.is_empty() {
            break;
        }
        let exits = futures::future::select_all(running.into_iter().map(|(id, child)| {
            let id = *id;
            Box::pin(async move { (id, child.wait().await) })
        }));
        let exited = tokio::select! {
            _ = raftq_raft_node::shutdown::signal() => None,
            ((id, status), _, _) = exits => Some((id, status)),
        };
        let Some((id, status)) = exited else {
            break;
        };
        stopped.push(id);
        let log_path = args.data_dir.join(format!("node-{id}.log"));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join("\n  ");
        eprintln!("node {id}'s log ({}) ends:\n  {tail}", log_path.display());
        let left = children.len() - stopped.len();
        if left <= children.len() / 2 {
            eprintln!(
                "only {left} of {} nodes run: no majority, so the cluster serves nothing until enough are back",
                children.len()
            );
        }
        eprintln!(
            "node {id} exited ({}); the others keep running. Restart it with:\n  {} serve --id {id} --listen {} --http-listen 127.0.0.1:{} --data-dir {} --initial-cluster {}{}",
            status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            exe.display(),
            addr(id),
            args.http_base_port + id - 1,
            args.data_dir.join(format!("node-{id}")).display(),
            cluster.join(","),
            secure_args(id)
                .iter()
                .map(|a| format!(" {a}"))
                .collect::<String>()
        );
    }
    for (id, child) in &mut children {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("node {id} did not stop in 10 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
    println!("raftq dev cluster stopped");
    Ok(())
}
