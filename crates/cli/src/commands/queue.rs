//! Queue commands: `queue create|update|list|stats|purge|delete|redrive`,
//! `send`, `recv`, `ack`, `nack`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use raftq_client::{proto as pb, Message, ReceiveOptions};
use serde_json::json;

use super::{explain, ClientArgs};
use crate::duration;
use crate::output;

/// `raftq queue …`
#[derive(Clone, Debug, clap::Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Clone, Debug, clap::Subcommand)]
enum QueueCommand {
    /// Create a queue (succeeds unchanged if it exists with the same config).
    Create {
        /// ^[A-Za-z0-9._-]{1,128}$
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Change some options of a queue's config; the others keep their values.
    Update {
        /// The queue.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// Set an option back to its default, or remove it (dead-letter-queue,
        /// message-ttl, max-length, max-bytes); repeatable.
        #[arg(long, value_name = "OPTION", value_parser = RESET_OPTIONS)]
        reset: Vec<String>,
    },
    /// List queues with their depth.
    List,
    /// Show one queue's stats and config.
    Stats {
        /// The queue.
        name: String,
    },
    /// Remove every message of a queue.
    Purge {
        /// The queue.
        name: String,
    },
    /// Delete a queue and its messages.
    Delete {
        /// The queue.
        name: String,
    },
    /// Move dead letters back to the queues they came from.
    Redrive {
        /// The dead-letter queue.
        dlq: String,
        /// Most messages to move.
        #[arg(long, default_value_t = 1000)]
        max: u32,
    },
}

/// The options `queue update --reset` takes, as flags are named.
const RESET_OPTIONS: [&str; 14] = [
    "visibility-timeout",
    "max-deliveries",
    "dead-letter-queue",
    "retry-backoff-min",
    "retry-backoff-max",
    "message-ttl",
    "retention",
    "max-length",
    "max-bytes",
    "overflow",
    "max-message-bytes",
    "default-delay",
    "max-delay",
    "dedup-window",
];

/// The API's field name of a `--reset` option.
fn reset_field(option: &str) -> &'static str {
    match option {
        "visibility-timeout" => "visibility_timeout_ms",
        "max-deliveries" => "max_deliveries",
        "dead-letter-queue" => "dead_letter_queue",
        "retry-backoff-min" => "retry_backoff_min_ms",
        "retry-backoff-max" => "retry_backoff_max_ms",
        "message-ttl" => "message_ttl_ms",
        "retention" => "retention_ms",
        "max-length" => "max_length",
        "max-bytes" => "max_bytes",
        "overflow" => "overflow",
        "max-message-bytes" => "max_message_bytes",
        "default-delay" => "default_delay_ms",
        "max-delay" => "max_delay_ms",
        _ => "dedup_window_ms",
    }
}

/// Queue config options: on create, unset ones take the server's defaults;
/// on update, unset ones keep their current values.
#[derive(Clone, Debug, Default, clap::Args)]
struct ConfigArgs {
    /// Lease length (default 30s; 1s to 12h).
    #[arg(long, value_parser = duration::parse)]
    visibility_timeout: Option<Duration>,
    /// Deliveries before dead-lettering (default 20; 0 = never).
    #[arg(long)]
    max_deliveries: Option<u32>,
    /// Dead-letter queue (must exist).
    #[arg(long)]
    dead_letter_queue: Option<String>,
    /// First retry backoff after a nack or lease expiry, doubling per delivery
    /// (default 1s; 0s redelivers at once).
    #[arg(long, value_parser = duration::parse)]
    retry_backoff_min: Option<Duration>,
    /// Longest retry backoff (default 60s).
    #[arg(long, value_parser = duration::parse)]
    retry_backoff_max: Option<Duration>,
    /// Drop messages older than this.
    #[arg(long, value_parser = duration::parse)]
    message_ttl: Option<Duration>,
    /// Keep messages at most this long (default 4 days).
    #[arg(long, value_parser = duration::parse)]
    retention: Option<Duration>,
    /// Most messages held.
    #[arg(long)]
    max_length: Option<u64>,
    /// Most message bytes held.
    #[arg(long)]
    max_bytes: Option<u64>,
    /// At max_length/max_bytes: reject (default) or drop-oldest.
    #[arg(long, value_parser = ["reject", "drop-oldest"])]
    overflow: Option<String>,
    /// Largest message (default 1 MiB).
    #[arg(long)]
    max_message_bytes: Option<u64>,
    /// Delay for messages that name none.
    #[arg(long, value_parser = duration::parse)]
    default_delay: Option<Duration>,
    /// Longest delay a message may ask for (default 15m).
    #[arg(long, value_parser = duration::parse)]
    max_delay: Option<Duration>,
    /// How long dedup ids are remembered (default 5m).
    #[arg(long, value_parser = duration::parse)]
    dedup_window: Option<Duration>,
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

impl ConfigArgs {
    fn to_pb(&self) -> pb::QueueConfig {
        pb::QueueConfig {
            visibility_timeout_ms: ms(self.visibility_timeout),
            max_deliveries: self.max_deliveries,
            dead_letter_queue: self.dead_letter_queue.clone(),
            retry_backoff_min_ms: ms(self.retry_backoff_min),
            retry_backoff_max_ms: ms(self.retry_backoff_max),
            message_ttl_ms: ms(self.message_ttl),
            retention_ms: ms(self.retention),
            max_length: self.max_length,
            max_bytes: self.max_bytes,
            overflow: self.overflow.as_deref().map(|o| match o {
                "drop-oldest" => pb::Overflow::DropOldest as i32,
                _ => pb::Overflow::Reject as i32,
            }),
            max_message_bytes: self.max_message_bytes,
            default_delay_ms: ms(self.default_delay),
            max_delay_ms: ms(self.max_delay),
            dedup_window_ms: ms(self.dedup_window),
        }
    }
}

/// Runs `raftq queue …`.
pub async fn run_queue(args: QueueArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let json = args.client.json;
    let fail = |err| explain(err, &args.client.cluster);
    match args.command {
        QueueCommand::Create { name, config } => {
            let created = client
                .create_queue(&name, config.to_pb())
                .await
                .map_err(fail)?;
            if json {
                output::print_json(&json!({ "queue": name, "created": created }));
            } else if created {
                println!("created queue {name}");
            } else {
                println!("queue {name} already exists with this config");
            }
        }
        QueueCommand::Update {
            name,
            config,
            reset,
        } => {
            let reset: Vec<&str> = reset.iter().map(|r| reset_field(r)).collect();
            let config = client
                .update_queue(&name, config.to_pb(), &reset)
                .await
                .map_err(fail)?;
            if json {
                output::print_json(
                    &json!({ "queue": name, "updated": true, "config": output::config_json(&config) }),
                );
            } else {
                println!("updated queue {name}: {}", output::config_json(&config));
            }
        }
        QueueCommand::List => {
            let queues = client.list_queues().await.map_err(fail)?;
            if json {
                for q in &queues {
                    output::print_json(&output::queue_json(q));
                }
            } else if queues.is_empty() {
                if args.client.token.is_some() || args.client.token_file.is_some() {
                    println!("no queues this token may see (or none yet)");
                } else {
                    println!("no queues yet: create one with `raftq queue create NAME`");
                }
            } else {
                for q in &queues {
                    println!("{}", output::queue_line(q));
                }
            }
        }
        QueueCommand::Stats { name } => {
            let q = client.get_queue(&name).await.map_err(fail)?;
            if json {
                output::print_json(&output::queue_json(&q));
            } else {
                print!("{}", output::queue_text(&q));
            }
        }
        QueueCommand::Purge { name } => {
            let removed = client.purge(&name).await.map_err(fail)?;
            if json {
                output::print_json(&json!({ "queue": name, "purged": removed }));
            } else {
                println!("purged {removed} messages from {name}");
            }
        }
        QueueCommand::Delete { name } => {
            let removed = client.delete_queue(&name).await.map_err(fail)?;
            if json {
                output::print_json(&json!({ "queue": name, "deleted": true, "messages": removed }));
            } else {
                println!("deleted queue {name} ({removed} messages)");
            }
        }
        QueueCommand::Redrive { dlq, max } => {
            let (moved, skipped) = client.redrive(&dlq, max).await.map_err(fail)?;
            if json {
                output::print_json(&json!({ "dlq": dlq, "moved": moved, "skipped": skipped }));
            } else {
                println!("moved {moved} messages back from {dlq} ({skipped} stayed: not dead letters, or their source queue is gone or full)");
            }
        }
    }
    Ok(())
}

/// `raftq send`
#[derive(Clone, Debug, clap::Args)]
pub struct SendArgs {
    /// The queue.
    queue: String,
    /// The message body. Without it (and without --file), each line of
    /// standard input is one message.
    body: Option<String>,
    /// Read the body from this file (one message).
    #[arg(long, conflicts_with = "body")]
    file: Option<PathBuf>,
    /// Idempotency key (for a single message): a repeat within the queue's
    /// dedup window stores nothing.
    #[arg(long)]
    dedup_id: Option<String>,
    /// Do not deliver before this long.
    #[arg(long, value_parser = duration::parse)]
    delay: Option<Duration>,
    /// Message group (FIFO within the group).
    #[arg(long)]
    group: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `raftq send`.
pub async fn run_send(args: SendArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let from_stdin = args.body.is_none() && args.file.is_none();
    let bodies: Vec<Vec<u8>> = match (&args.body, &args.file) {
        (Some(body), _) => vec![body.clone().into_bytes()],
        (None, Some(path)) => vec![std::fs::read(path)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?],
        (None, None) => std::io::stdin()
            .lock()
            .lines()
            .map(|line| line.map(String::into_bytes))
            .collect::<Result<_, _>>()?,
    };
    if bodies.is_empty() {
        anyhow::bail!("nothing to send: give a BODY, --file, or lines on standard input");
    }
    if args.dedup_id.is_some() && bodies.len() > 1 {
        anyhow::bail!(
            "--dedup-id names one message; standard input gave {}",
            bodies.len()
        );
    }
    let messages: Vec<Message> = bodies
        .into_iter()
        .map(|body| Message {
            body: body.into(),
            dedup_id: args.dedup_id.clone(),
            group: args.group.clone(),
            delay: args.delay,
            ..Message::default()
        })
        .collect();
    // The client sends them in requests of at most 100 messages and 4 MiB.
    let mut failed = 0;
    let results = client
        .enqueue(&args.queue, messages)
        .await
        .map_err(|err| explain(err, &args.client.cluster))?;
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(enqueued) if args.client.json => {
                output::print_json(&json!({ "id": enqueued.id, "duplicate": enqueued.duplicate }))
            }
            Ok(enqueued) if enqueued.duplicate => {
                println!("{} (duplicate: already enqueued)", enqueued.id)
            }
            Ok(enqueued) => println!("{}", enqueued.id),
            Err(err) if from_stdin => {
                failed += 1;
                eprintln!("line {}: refused: {}", index + 1, err.message);
            }
            Err(err) => {
                failed += 1;
                eprintln!("refused: {}", err.message);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} messages were refused");
    }
    Ok(())
}

/// `raftq recv`
#[derive(Clone, Debug, clap::Args)]
pub struct RecvArgs {
    /// The queue.
    queue: String,
    /// Most messages (1 to 100).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    max: u32,
    /// Wait up to this long for a message (at most 20s).
    #[arg(long, value_parser = duration::parse, default_value = "0s")]
    wait: Duration,
    /// Lease length (default: the queue's visibility timeout).
    #[arg(long, value_parser = duration::parse)]
    visibility: Option<Duration>,
    /// Ack each message after printing it.
    #[arg(long)]
    ack: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `raftq recv`: prints `id<TAB>delivery-count<TAB>receipt<TAB>body` per
/// message, the body escaped to one line ([`output::printable`]).
pub async fn run_recv(args: RecvArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let fail = |err| explain(err, &args.client.cluster);
    let options = ReceiveOptions {
        max: args.max,
        max_bytes: None,
        wait: args.wait,
        visibility: args.visibility,
        consumer: format!("raftq-cli-{}", std::process::id()),
    };
    let messages = client.receive(&args.queue, options).await.map_err(fail)?;
    for message in &messages {
        if args.client.json {
            output::print_json(&output::delivery_json(message));
        } else {
            println!("{}", output::delivery_line(message));
        }
    }
    if messages.is_empty() && !args.client.json {
        eprintln!("no message ready in {}", args.queue);
    }
    if args.ack && !messages.is_empty() {
        let receipts = messages.iter().map(|m| m.receipt.clone()).collect();
        for result in client.ack(&args.queue, receipts).await.map_err(fail)? {
            result.map_err(fail)?;
        }
    }
    Ok(())
}

/// `raftq ack`
#[derive(Clone, Debug, clap::Args)]
pub struct AckArgs {
    /// The queue.
    queue: String,
    /// Receipts as printed by `raftq recv`.
    #[arg(required = true)]
    receipts: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `raftq ack`.
pub async fn run_ack(args: AckArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let results = client
        .ack(&args.queue, args.receipts.clone())
        .await
        .map_err(|err| explain(err, &args.client.cluster))?;
    report_receipts(&args.receipts, results, "acked", &args.client)
}

/// `raftq nack`
#[derive(Clone, Debug, clap::Args)]
pub struct NackArgs {
    /// The queue.
    queue: String,
    /// Receipts as printed by `raftq recv`.
    #[arg(required = true)]
    receipts: Vec<String>,
    /// Redeliver after this long (default: the queue's retry backoff).
    #[arg(long, value_parser = duration::parse)]
    delay: Option<Duration>,
    /// Why; kept with the message and its dead letter.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `raftq nack`.
pub async fn run_nack(args: NackArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let results = client
        .nack(
            &args.queue,
            args.receipts.clone(),
            args.delay,
            args.reason.clone(),
        )
        .await
        .map_err(|err| explain(err, &args.client.cluster))?;
    report_receipts(&args.receipts, results, "nacked", &args.client)
}

fn report_receipts(
    receipts: &[String],
    results: Vec<raftq_client::Result<()>>,
    verb: &str,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let json = client.json;
    let mut failed = 0;
    for (receipt, result) in receipts.iter().zip(results) {
        match result {
            Ok(()) if json => output::print_json(&json!({ "receipt": receipt, verb: true })),
            Ok(()) => println!("{verb} {receipt}"),
            Err(err) => {
                failed += 1;
                if json {
                    output::print_json(
                        &json!({ "receipt": receipt, verb: false, "error": err.message }),
                    );
                } else {
                    eprintln!("{receipt}: {}", err.message);
                    if let Some(hint) = super::hint(&err, &client.cluster) {
                        eprintln!("  hint: {hint}");
                    }
                }
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} receipts were refused");
    }
    Ok(())
}
