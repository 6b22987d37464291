#!/usr/bin/env bash
# The failover drill on containers: start a compose cluster of its own, run
# `raftq check --nemesis docker` against it (kills, pauses, partitions and
# membership changes on a seeded schedule, while a workload runs and a
# checker reads its history), print the checker's summary, remove the cluster.
#
#   deploy/chaos.sh [3|5] [duration] [seed] [raftq check flags...]
#   deploy/chaos.sh                 # 3 nodes, 60s, a seed from the clock
#   deploy/chaos.sh 5 120s 42       # reproduce seed 42 on 5 nodes
#   deploy/chaos.sh 3 60s 7 --kill-loop 20
#
# Exits non-zero when the checker finds a violation (or the drill cannot run),
# 0 when it finds none. Skips (prints why, exits 0) when there is no Docker
# engine, or no image and CHAOS_NO_BUILD=1; otherwise builds raftq:dev with
# deploy/build-image.sh when it is missing. Needs root: cuts are iptables rules
# put into each container's network namespace with nsenter.
#
# Environment: CHAOS_PROJECT (compose project, default raftq-chaos; not
# RAFTQ_PROJECT, so that an exported everyday project is never removed),
# CHAOS_OUT (where the history and node logs go, default
# <target dir>/chaos/<nodes>-<seed>), CHAOS_KEEP=1 (leave the cluster running),
# RAFTQ_IMAGE, RAFTQ_BIN (the host-side raftq; default the static binary
# build-image.sh built).
#
# The cluster uses the fixed subnet 172.28.0.0/24 and host ports 740N/940N, as
# `just up` and deploy/smoke.sh do: run one of them at a time.
set -euo pipefail

cd "$(dirname "$0")/.."
project=${CHAOS_PROJECT:-raftq-chaos}
export RAFTQ_PROJECT=$project
image=${RAFTQ_IMAGE:-raftq:dev}
cluster=deploy/cluster.sh
triple=x86_64-unknown-linux-gnu
t0=$SECONDS

say() { printf 'chaos [%3ds] %s\n' "$((SECONDS - t0))" "$*"; }
fail() {
    printf 'chaos [%3ds] FAILED: %s\n' "$((SECONDS - t0))" "$*" >&2
    exit 1
}
skip() {
    printf 'chaos: SKIPPED: %s\n' "$*"
    exit 0
}

nodes=${1:-3}
duration=${2:-60s}
seed=${3:-$(date +%s)}
shift $(($# < 3 ? $# : 3))
case "$nodes" in 3 | 5) ;; *) fail "a cluster has 3 or 5 nodes, not $nodes (usage: $0 [3|5] [duration] [seed] [flags])" ;; esac
[[ "$seed" =~ ^[0-9]+$ ]] || fail "the seed is a number, not $seed"

command -v docker >/dev/null || skip "docker is not installed"
docker info >/dev/null 2>&1 || skip "the Docker engine does not answer (is dockerd running, may this user use it?)"
for tool in iptables nsenter timeout; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install iptables util-linux coreutils)"
done
[ "$(id -u)" = 0 ] || fail "run as root: the cuts enter the containers' network namespaces (nsenter)"

# --- image and host binary ---------------------------------------------------
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
raftq=${RAFTQ_BIN:-${target_dir:-target}/$triple/release/raftq}
if ! docker image inspect "$image" >/dev/null 2>&1 || [ ! -x "$raftq" ]; then
    [ "${CHAOS_NO_BUILD:-0}" = 1 ] && skip "no image $image or no binary $raftq, and CHAOS_NO_BUILD=1"
    say "building the image and the static binary (deploy/build-image.sh)"
    build_started=$SECONDS
    deploy/build-image.sh || fail "the image build failed"
    say "built in $((SECONDS - build_started))s"
fi
[ -x "$raftq" ] || fail "no raftq binary at $raftq (run deploy/build-image.sh, or set RAFTQ_BIN)"

# --- a free subnet and free ports ---------------------------------------------
others=$(docker ps --filter label=com.docker.compose.service=raftq-1 \
    --format '{{.Label "com.docker.compose.project"}}' | grep -vx "$project" || true)
[ -z "$others" ] || fail "compose project(s) $others run a raftq cluster on the same subnet and ports: stop it first (just down, or RAFTQ_PROJECT=<name> $cluster down)"
if [ -n "$("$cluster" compose ps -q 2>/dev/null)" ]; then
    say "removing a cluster left by an earlier run (project $project)"
    "$cluster" down >/dev/null 2>&1 || fail "cannot remove the old project $project"
fi
for n in $(seq 1 "$nodes"); do
    for port in "740$n" "940$n"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            fail "127.0.0.1:$port is in use: stop the other cluster first (just down, or Ctrl-C raftq dev)"
        fi
    done
done

out=${CHAOS_OUT:-${target_dir:-target}/chaos/$nodes-$seed}
mkdir -p "$out"

# --- cluster ------------------------------------------------------------------
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # The nodes' logs, for the report of a violation; the cluster dies below.
    for n in $(seq 1 "$nodes"); do
        c=$("$cluster" compose ps -q "raftq-$n" 2>/dev/null || true)
        [ -z "$c" ] || docker logs "$c" >"$out/node-$n.log" 2>&1 || true
    done
    if [ "${CHAOS_KEEP:-0}" = 1 ]; then
        say "CHAOS_KEEP=1: leaving project $project running (RAFTQ_PROJECT=$project $cluster down removes it)"
    else
        say "removing the cluster (down -v)"
        "$cluster" down >/dev/null 2>&1 || echo "chaos: cleanup failed; run RAFTQ_PROJECT=$project $cluster down" >&2
    fi
    say "history and node logs in $out"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting $nodes nodes (project $project, image $image)"
RAFTQ_UP_TIMEOUT=${RAFTQ_UP_TIMEOUT:-90} "$cluster" up "$nodes" 2>&1 | sed 's/^/    /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "the cluster did not start healthy"

# --- the drill ----------------------------------------------------------------
say "raftq check --nemesis docker --nodes $nodes --duration $duration --seed $seed $*"
drill_started=$SECONDS
set +e
"$raftq" check --nemesis docker --project "$project" --nodes "$nodes" \
    --duration "$duration" --seed "$seed" --history "$out/history.jsonl" "$@" |
    tee "$out/summary.txt"
rc=${PIPESTATUS[0]}
set -e
say "the drill took $((SECONDS - drill_started))s"
[ "$rc" = 0 ] || fail "raftq check exited $rc (seed $seed; rerun: $0 $nodes $duration $seed $*)"
say "PASSED: no violations (seed $seed)"
