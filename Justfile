# Everyday recipes. `just` is optional (`cargo install just`): each recipe is
# a plain cargo command you can run by hand.

# List the recipes.
default:
    @just --list

# Build everything.
build:
    cargo build --workspace

# Run every test (the README's test command).
test:
    cargo test --workspace

# The checks CI runs; never edits files.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# Format and apply clippy's fixes.
fix:
    cargo fmt --all
    cargo clippy --workspace --all-targets --fix --allow-dirty

# Format the code.
fmt:
    cargo fmt --all

# Storage benchmarks (apply and log append throughput); see docs/BENCHMARKS.md.
bench:
    cargo bench -p raftq-storage

# raftq alone through ../shared/peerbench: workloads A-D, 5 s each, one run
# (about 3 minutes); prints one Markdown table. See docs/BENCHMARKS.md.
peerbench:
    cargo build --release -p raftq-cli
    RAFTQ_SRC=. SYSTEMS=raftq REPEATS=1 DURATION=5 ../shared/peerbench/run-all.sh

# raftq, RabbitMQ quorum queues and NATS JetStream (default and fsync always)
# through ../shared/peerbench in one run (about 15 minutes). Installs Debian's
# rabbitmq-server when missing (root) and fetches nats-server 2.14 from PyPI.
peerbench-all:
    ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin >/dev/null 2>&1 || (apt-get update && apt-get install -y rabbitmq-server)
    cargo build --release -p raftq-cli
    NATS=$(../shared/peerbench/nats/get-upstream.sh) && RAFTQ_SRC=. SYSTEMS="raftq nats rabbitmq" NATS_SERVER_BIN="$NATS" NATS_SYNC_ALWAYS=1 REPEATS=2 DURATION=10 ../shared/peerbench/run-all.sh

# `raftq bench` runs like peerbench's workloads A-D (256-byte bodies): A one
# synchronous publisher, B 256 publishes in flight, C B plus a consumer
# (prefetch 256) acking each message, D 1,000 publishes/s open loop. Against
# a `raftq dev` cluster of its own (ports 17501-17503, data in a temporary
# directory, stopped afterwards), or a running one: `just cluster-bench 10s
# 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403`.
cluster-bench duration="10s" cluster="":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p raftq-cli
    raftq="${CARGO_TARGET_DIR:-target}/release/raftq"
    cluster="{{cluster}}"
    if [[ -z "$cluster" ]]; then
        dir=$(mktemp -d)
        "$raftq" dev --data-dir "$dir/data" --base-port 17501 --http-base-port 19501 >"$dir/dev.log" 2>&1 &
        dev=$!
        trap 'kill -TERM $dev; wait $dev || true; rm -rf "$dir"' EXIT
        cluster=127.0.0.1:17501,127.0.0.1:17502,127.0.0.1:17503
        for _ in $(seq 60); do
            timeout 5 "$raftq" cluster status --cluster "$cluster" >/dev/null 2>&1 && break
            sleep 0.5
        done
    fi
    bench() { echo "== $1"; shift; "$raftq" bench --cluster "$cluster" --duration "{{duration}}" "$@"; echo; }
    bench "A: one synchronous publisher" --in-flight 1
    bench "B: 256 publishes in flight" --in-flight 256
    bench "C: 256 publishes in flight, one consumer (prefetch 256) acking each" --in-flight 256 --consumers 1 --prefetch 256
    bench "D: 1,000 publishes/s, open loop" --rate 1000

# The failover drill on a cluster of its own (kill -9, pause, partitions,
# membership changes): `just drill 600s 5`, `just drill 60s 3 netns` (root),
# seed optional. See docs/FAILOVER.md.
drill duration="60s" nodes="3" nemesis="local" seed="":
    cargo run --release -p raftq-cli -- check --nemesis {{nemesis}} --nodes {{nodes}} --duration {{duration}} --producers 16 --consumers 32 --max-backlog 2000 --max-ops 100000000 $([ -n "{{seed}}" ] && echo --seed "{{seed}}")

# kill -9 the leader or a node, restart it, N times back to back under load.
kill-loop kills="200" nodes="3":
    cargo run --release -p raftq-cli -- check --nemesis local --nodes {{nodes}} --kill-loop {{kills}}

# Start a local 3-node cluster on loopback (data under ./data).
dev:
    cargo run -p raftq-cli -- dev

# Build the container image raftq:dev (static binary, FROM scratch); see deploy/README.md.
image:
    deploy/build-image.sh

# Start the compose cluster (`just up 5` for five nodes) and wait until all are healthy.
up nodes="3":
    deploy/cluster.sh up {{nodes}}

# Stop the compose cluster and delete its volumes (all its data).
down:
    deploy/cluster.sh down

# The failover drill on containers: a compose cluster of its own (project
# raftq-chaos), faulted by `raftq check --nemesis docker`, removed afterwards.
# Needs root; `just down` first. See deploy/README.md.
chaos nodes="3" duration="60s":
    deploy/chaos.sh {{nodes}} {{duration}}
