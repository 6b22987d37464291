#!/usr/bin/env bash
# Builds the raftq container image with no registry: the release binary,
# linked statically against glibc, in a `FROM scratch` image
# (deploy/Dockerfile.scratch). See deploy/README.md.
#
#   deploy/build-image.sh            # tags raftq:dev
#   RAFTQ_IMAGE=raftq:1.2 deploy/build-image.sh
#
# The binary goes to <target dir>/x86_64-unknown-linux-gnu/release/raftq: the
# explicit --target keeps RUSTFLAGS off build scripts and proc macros, and
# keeps this build from invalidating the ordinary target/release one.
set -euo pipefail

cd "$(dirname "$0")/.."
image=${RAFTQ_IMAGE:-raftq:dev}
triple=x86_64-unknown-linux-gnu

die() { echo "build-image: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running, may this user use it?)"

echo "build-image: cargo build --release -p raftq-cli --target $triple (static)"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p raftq-cli --target "$triple"

target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || die "cannot find cargo's target directory"
binary="$target_dir/$triple/release/raftq"
[ -x "$binary" ] || die "no binary at $binary"

# A scratch image has no loader and no libc: the binary must need neither.
ldd_out=$(ldd "$binary" 2>&1 || true)
file_out=$(file -b "$binary" 2>/dev/null || true)
case "$ldd_out $file_out" in
    *"not a dynamic executable"* | *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$binary is not static:
  ldd:  $ldd_out
  file: $file_out" ;;
esac
echo "build-image: $binary is statically linked"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/raftq"
# The image's only files besides the binary: /data (owned by the unprivileged
# user the image runs as, so a fresh named volume inherits that owner) and an
# nsswitch.conf that sends host lookups to /etc/hosts, then DNS.
mkdir -p "$context/data"
printf 'hosts: files dns\n' > "$context/nsswitch.conf"

docker build -t "$image" -f deploy/Dockerfile.scratch "$context"
echo "build-image: built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"
