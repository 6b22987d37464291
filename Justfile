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
