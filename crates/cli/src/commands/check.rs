//! `raftq check`: the failover drill against a cluster.
//!
//! Runs the drill's workload (its own queues, deleted afterwards), injects
//! faults with the chosen nemesis, heals, drains every queue, compares the
//! replicas' state digests, and checks the history: lost, unexpected,
//! duplicates by cause, stale receipts accepted, reused ids, order violations.
//! Prints the checker's summary and exits non-zero on any violation.
//!
//! - `--nemesis none` (default): a safe smoke test against any cluster,
//!   production included: no faults, only the workload's own queues.
//! - `--nemesis local`: starts its own cluster of `raftq serve` processes on
//!   loopback, each behind a fault-injecting proxy, and on a seeded schedule
//!   kills (kill -9) and pauses (SIGSTOP) them, cuts the network between
//!   them (one node, the leader's minority, a bridge), removes a voter and
//!   adds it back, and combines two of these.
//! - `--nemesis netns` (root): the same, each node in a network namespace of
//!   its own, the cuts being iptables DROP rules.
//! - `--nemesis docker`: attaches to the running compose cluster of
//!   `deploy/compose.yaml` (`--project`, `--nodes`) and runs the same
//!   schedule on its containers: `docker kill`/`start`, `docker
//!   pause`/`unpause`, and network cuts as DROP rules in the containers'
//!   network namespaces. Needs root and the host's iptables; the cluster is
//!   left running, healed. `deploy/chaos.sh` (`just chaos`) starts a cluster
//!   of its own, runs this and removes it.

use std::path::PathBuf;
use std::time::Duration;

use raftq_check::nemesis::{self, Backend, DockerCluster, FaultKind, LocalCluster};
use raftq_check::{check, replica_digests, History, Workload, WorkloadConfig};
use raftq_client::Client;

use super::{explain, ClientArgs};
use crate::duration;
use crate::output;

/// `raftq check` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {
    /// How long the workload runs.
    #[arg(long, value_parser = duration::parse, default_value = "60s")]
    duration: Duration,
    /// Fault injection: none (a smoke test, safe on production), local
    /// (starts its own cluster of raftq serve processes on loopback and
    /// faults it), netns (the same, each node in a network namespace; root)
    /// or docker (faults the running compose cluster of `--project`; root).
    #[arg(long, default_value = "none", value_parser = ["none", "local", "netns", "docker"])]
    nemesis: String,
    /// Nodes of the cluster `--nemesis local` or `netns` starts, or of the compose
    /// cluster `--nemesis docker` attaches to (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// With `--nemesis docker`: the compose project of the cluster
    /// (`deploy/cluster.sh` uses the same variable).
    #[arg(long, env = "RAFTQ_PROJECT", default_value = "raftq")]
    project: String,
    /// Seed of every random choice (printed; rerun with it to reproduce).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many operations.
    #[arg(long, default_value_t = 100_000)]
    max_ops: u64,
    /// Producer tasks.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Consumer tasks.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// The kinds of fault the schedule draws from, comma-separated: kill,
    /// pause, partition, membership, wipe (a lost data dir; local and netns
    /// only, the docker nemesis leaves it out). Default: all.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,partition,membership,wipe"
    )]
    faults: Vec<FaultKind>,
    /// Most messages enqueued and not yet acked; producers wait above it.
    #[arg(long, default_value_t = 200)]
    max_backlog: u64,
    /// With `--nemesis local`, `netns` or `docker`: instead of the mixed
    /// schedule, kill -9 and restart nodes this many times back to back (the
    /// leader or a seeded node each time). The workload runs until the loop
    /// ends.
    #[arg(long)]
    kill_loop: Option<usize>,
    /// Write the operation history here, as JSON lines.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Keep the local cluster's data directory afterwards.
    #[arg(long)]
    keep: bool,
    /// Run the local cluster with TLS, mutual TLS between the nodes and
    /// token auth (throwaway certificates and an admin token under the
    /// drill's directory). Local nemesis only.
    #[arg(long)]
    secure: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs the drill.
pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "raftq check: seed {seed} (rerun with --seed {seed}), nemesis {}",
        args.nemesis
    );
    let dir = std::env::temp_dir().join(format!("raftq-check-{seed}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = drill(&args, seed, &dir).await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn drill(args: &CheckArgs, seed: u64, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut backend: Option<Box<dyn Backend>> = None;
    let secured = match (args.secure, args.nemesis.as_str()) {
        (false, _) => None,
        (true, "local") => {
            let ids: Vec<u64> = (1..=args.nodes).collect();
            let secured = super::auth::Secured::throwaway(&dir.join("tls"), &ids)?;
            eprintln!("secured: TLS, mutual TLS and token auth (files under {})", dir.join("tls").display());
            Some(secured)
        }
        (true, other) => anyhow::bail!(
            "--secure works with --nemesis local only, not {other}; against a secured cluster of your own, use --nemesis none with --ca and --token"
        ),
    };
    let addrs: Vec<String> = match args.nemesis.as_str() {
        "none" => args
            .client
            .cluster
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        "local" | "netns" => {
            std::fs::create_dir_all(dir)?;
            let exe = std::env::current_exe()?;
            let cluster = if args.nemesis == "local" {
                match &secured {
                    Some(secured) => LocalCluster::start_with(&exe, dir, args.nodes, |id| {
                        secured.serve_args(id)
                    })?,
                    None => LocalCluster::start(&exe, dir, args.nodes)?,
                }
            } else {
                LocalCluster::start_in_namespaces(&exe, dir, args.nodes)?
            };
            eprintln!(
                "{} of {} nodes, data under {}: {}",
                cluster.name(),
                args.nodes,
                dir.display(),
                cluster.addrs().join(",")
            );
            let addrs = cluster.addrs();
            backend = Some(Box::new(cluster));
            addrs
        }
        _ => {
            let cluster = DockerCluster::attach(&args.project, args.nodes)?;
            let addrs: Vec<String> = cluster
                .members()
                .into_iter()
                .map(|(_, addr)| addr)
                .collect();
            eprintln!(
                "compose project {} of {} nodes: {}",
                args.project,
                args.nodes,
                addrs.join(",")
            );
            backend = Some(Box::new(cluster));
            addrs
        }
    };
    let client_config = match &secured {
        Some(secured) => secured.client_config(),
        None => args.client.config()?,
    };
    let client = Client::with_config(addrs.clone(), client_config)
        .map_err(|err| explain(err, &addrs.join(",")))?;
    if raftq_check::wait_for_leader(&client, Duration::from_secs(30))
        .await
        .is_none()
    {
        anyhow::bail!(
            "no leader among {} within 30 s: is the cluster running?",
            addrs.join(",")
        );
    }
    let mut config = WorkloadConfig::new(seed);
    // A kill loop lasts as long as its kills (at most 2.5 s each, and a
    // second more for Docker to kill and start a container).
    config.duration = match (args.nemesis.as_str(), args.kill_loop) {
        ("local" | "netns", Some(kills)) => Duration::from_millis(kills as u64 * 2_500),
        ("docker", Some(kills)) => Duration::from_millis(kills as u64 * 3_500),
        _ => args.duration,
    };
    config.max_ops = args.max_ops;
    config.producers = args.producers;
    config.consumers = args.consumers;
    config.max_backlog = args.max_backlog;
    let workload = Workload::setup(client.clone(), config).await?;
    let history = History::new();
    let progress = |p: raftq_check::Progress| eprint!("\r{p}        ");
    let outcome = match backend.as_mut() {
        Some(cluster) => {
            let ids: Vec<u64> = cluster.members().into_iter().map(|(id, _)| id).collect();
            let mut kinds = args.faults.clone();
            if !cluster.can_wipe() && kinds.contains(&FaultKind::Wipe) {
                eprintln!(
                    "the {} cannot wipe a node's data dir: leaving wipe faults out",
                    cluster.name()
                );
                kinds.retain(|k| *k != FaultKind::Wipe);
            }
            let faults = match args.kill_loop {
                Some(kills) => nemesis::kill_loop(seed, &ids, kills),
                None => nemesis::schedule(seed, &ids, args.duration, &kinds),
            };
            eprintln!("{} faults planned", faults.len());
            // A schedule ends with the workload (it may stop early, at
            // --max-ops); a kill loop runs all its kills.
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let work = async {
                let ran = workload.run(&history, progress).await;
                if args.kill_loop.is_none() {
                    let _ = stop.send(true);
                }
                ran
            };
            let (ran, faulted) = tokio::join!(
                work,
                nemesis::run(cluster.as_mut(), &client, &history, &faults, stopped)
            );
            faulted?;
            ran
        }
        None => workload.run(&history, progress).await,
    };
    eprintln!();
    outcome?;
    eprintln!("healed; draining every queue");
    let drained = workload.drain(&history, Duration::from_secs(120)).await?;
    let digests = replica_digests(&client, &addrs, Duration::from_secs(30)).await;
    let report = check(&history, &digests, &history.fault_windows());
    if let Some(path) = &args.history {
        history.write_jsonl(path)?;
        eprintln!("history written to {}", path.display());
    }
    if let Err(err) = workload.teardown().await {
        eprintln!("warning: could not delete the drill's queues: {err}");
    }
    drop(backend);
    if args.client.json {
        output::print_json(&serde_json::to_value(&report)?);
    } else {
        println!("{report}");
    }
    if !drained.is_complete() {
        anyhow::bail!(
            "the queues did not drain within 120 s after healing: {:?}",
            drained.depths
        );
    }
    if !report.is_ok() {
        anyhow::bail!("the checker found violations (seed {seed})");
    }
    Ok(())
}
