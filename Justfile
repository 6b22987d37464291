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
