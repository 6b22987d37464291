//! `raftq serve`: run one node until SIGTERM or Ctrl-C.
//!
//! A node that cannot go on never lingers as a zombie:
//! - a panic anywhere (a bug: an assertion, a poisoned lock) is logged and
//!   aborts the process, rather than leaving a node whose Raft core stopped
//!   but whose ports still answer;
//! - a storage failure (a full disk, an I/O error, a log the leader would
//!   overwrite below what this node applied) exits with status 1 at once,
//!   without closing the stores, since closing sled on a full disk can hang;
//! - a clean stop that takes longer than [`SHUTDOWN_GRACE`] is cut short, and
//!   a second SIGTERM or Ctrl-C exits at once.

use std::time::Duration;

use raftq_raft_node::{shutdown, Node, ServeArgs};

/// How long a clean shutdown may take before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Runs a node.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args
        .resolve()
        .map_err(|err| anyhow::anyhow!("{err}\nhint: see `raftq serve --help`"))?;
    abort_on_panic();
    let stop = async {
        shutdown::signal().await;
        std::thread::spawn(|| {
            std::thread::sleep(SHUTDOWN_GRACE);
            tracing::error!("the node did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
            std::process::exit(1);
        });
        tokio::spawn(async {
            shutdown::signal().await;
            tracing::warn!("second stop signal: exiting now");
            std::process::exit(130);
        });
    };
    let handle = Node::start(config, stop).await?;
    let node = &handle.node;
    println!(
        "raftq node {} serving gRPC on {}{}{}{}",
        node.id,
        handle.grpc_addr,
        if node.tls.is_some() {
            " (TLS, peers by certificate)"
        } else {
            " (plaintext)"
        },
        handle
            .http_addr
            .map(|a| format!(
                ", HTTP on {a}{}",
                if node.config.http_tls { " (TLS)" } else { "" }
            ))
            .unwrap_or_default(),
        if node.auth.is_some() {
            ", tokens required"
        } else {
            ", no auth"
        }
    );
    if let Err(err) = handle.wait().await {
        eprintln!("error: {err}");
        tracing::error!(error = %err, "exiting with status 1");
        std::process::exit(1);
    }
    Ok(())
}

/// Makes any panic log its message and abort the process.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "a bug stopped this node; aborting");
        default(info);
        std::process::abort();
    }));
}
