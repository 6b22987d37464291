//! The single `raftq` binary: parse, set up logging, dispatch.

mod commands;
mod duration;
mod output;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: under load the node spent
/// ~14% of its CPU in glibc's malloc and free (perf, workload B; see
/// docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// raftq: a replicated message queue. Every enqueue, lease and ack is fsynced
/// on a majority of nodes before it is confirmed.
#[derive(Parser)]
#[command(name = "raftq", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one cluster node.
    Serve(raftq_raft_node::ServeArgs),
    /// Start a local 3-node cluster on loopback (data under ./data); Ctrl-C stops it.
    Dev(commands::dev::DevArgs),
    /// Create, change, list, inspect, purge, delete and redrive queues.
    Queue(commands::queue::QueueArgs),
    /// Enqueue messages: a BODY, --file, or one message per line of stdin.
    Send(commands::queue::SendArgs),
    /// Receive (lease) messages and print them, one per line: id, delivery
    /// count, receipt and body (control characters and bytes that are not
    /// UTF-8 escaped; --json for the exact bytes); --ack acks them too.
    Recv(commands::queue::RecvArgs),
    /// Ack messages by receipt.
    Ack(commands::queue::AckArgs),
    /// Nack messages by receipt (redelivered after --delay or the backoff).
    Nack(commands::queue::NackArgs),
    /// Cluster status and membership changes.
    Cluster(commands::admin::ClusterArgs),
    /// Users and tokens for clusters with auth on (`add-user`, `hash`).
    Auth(commands::auth::AuthArgs),
    /// Certificates for a cluster with TLS (`make-certs`).
    Tls(commands::tls::TlsArgs),
    /// Measure a cluster with producers and consumers through the client library:
    /// throughput, publish → confirm and publish → receive latency.
    Bench(commands::bench::BenchArgs),
    /// The failover drill: a workload, faults, and a consistency check.
    Check(commands::check::CheckArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => commands::serve::run(args).await,
            Command::Auth(args) => commands::auth::run(args),
            Command::Tls(args) => commands::tls::run(args),
            Command::Dev(args) => commands::dev::run(args).await,
            Command::Queue(args) => commands::queue::run_queue(args).await,
            Command::Send(args) => commands::queue::run_send(args).await,
            Command::Recv(args) => commands::queue::run_recv(args).await,
            Command::Ack(args) => commands::queue::run_ack(args).await,
            Command::Nack(args) => commands::queue::run_nack(args).await,
            Command::Cluster(args) => commands::admin::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Check(args) => commands::check::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
