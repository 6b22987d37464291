#!/usr/bin/env bash
# End-to-end proof that the image and the compose cluster work: build the
# image, start 3 nodes, enqueue 10 messages, kill -9 the leader's container,
# see a new leader, receive and ack all 10, restart the killed node and see it
# catch up, then remove everything.
#
#   deploy/smoke.sh              # builds the image first
#   deploy/smoke.sh --no-build   # uses the raftq:dev image and host binary as they are
#
# Needs docker with docker-compose (or docker compose), jq and curl. Every
# wait is bounded; any failure exits non-zero with the reason, and the
# cluster (compose project "raftq-smoke") is always removed, unless
# SMOKE_KEEP=1. It uses the same fixed subnet and host ports as `just up`, so
# stop that cluster (and `raftq dev`) first.
set -euo pipefail

cd "$(dirname "$0")/.."
export RAFTQ_PROJECT=${RAFTQ_PROJECT:-raftq-smoke}
cluster=deploy/cluster.sh
seeds=127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403
queue=smoke
triple=x86_64-unknown-linux-gnu
t0=$SECONDS

say() { printf 'smoke [%3ds] %s\n' "$((SECONDS - t0))" "$*"; }
fail() {
    printf 'smoke [%3ds] FAILED: %s\n' "$((SECONDS - t0))" "$*" >&2
    exit 1
}

build=1
case "${1:-}" in
    --no-build) build=0 ;;
    "") ;;
    *) fail "unknown argument $1 (usage: $0 [--no-build])" ;;
esac

for tool in docker jq curl timeout; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
docker info >/dev/null 2>&1 || fail "the Docker engine does not answer"

# --- image --------------------------------------------------------------------
if [ "$build" = 1 ]; then
    say "building the image (deploy/build-image.sh)"
    build_started=$SECONDS
    deploy/build-image.sh || fail "the image build failed"
    say "image built in $((SECONDS - build_started))s"
fi
docker image inspect "${RAFTQ_IMAGE:-raftq:dev}" >/dev/null 2>&1 ||
    fail "no image ${RAFTQ_IMAGE:-raftq:dev}: run deploy/build-image.sh"

# The host-side client: the static binary the image was built from.
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
raftq=${RAFTQ_BIN:-${target_dir:-target}/$triple/release/raftq}
[ -x "$raftq" ] || fail "no raftq binary at $raftq (run deploy/build-image.sh, or set RAFTQ_BIN)"

# Every client call is bounded: the client retries for up to 30 s itself.
rq() { timeout 20 "$raftq" "$@"; }

for port in 7401 7402 7403 9401 9402 9403; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "127.0.0.1:$port is in use: stop the other cluster first (just down, or Ctrl-C raftq dev)"
    fi
done

# --- cluster ------------------------------------------------------------------
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" != 0 ]; then
        echo "--- last log lines of each node ---" >&2
        "$cluster" compose logs --no-color --tail 15 >&2 2>/dev/null || true
    fi
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then
        say "SMOKE_KEEP=1: leaving project $RAFTQ_PROJECT running ($cluster down to remove it)"
    else
        say "removing the cluster (down -v)"
        "$cluster" down >/dev/null 2>&1 || echo "smoke: cleanup failed; run RAFTQ_PROJECT=$RAFTQ_PROJECT $cluster down" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting 3 nodes (project $RAFTQ_PROJECT)"
RAFTQ_UP_TIMEOUT=60 "$cluster" up 3 2>&1 | sed 's/^/    /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "the cluster did not start healthy within 60s"

# status_of SEEDS: one node's view as JSON ({} when none answers).
status_of() { rq cluster status --json --cluster "$1" 2>/dev/null || echo '{}'; }

# wait_leader SEEDS NOT SECONDS: the leader id, once a node reached through
# SEEDS names one other than NOT.
wait_leader() {
    local seeds=$1 not=$2 deadline=$((SECONDS + $3)) leader
    while [ "$SECONDS" -lt "$deadline" ]; do
        leader=$(status_of "$seeds" | jq -r '.leader // empty')
        if [ -n "$leader" ] && [ "$leader" != "$not" ]; then
            echo "$leader"
            return 0
        fi
        sleep 0.5
    done
    return 1
}

leader=$(wait_leader "$seeds" none 60) || fail "no leader within 60s"
say "leader is node $leader"

# --- enqueue ------------------------------------------------------------------
rq queue create "$queue" >/dev/null || fail "queue create failed"
sent=$(seq 1 10 | sed 's/^/smoke-message-/' | rq send "$queue" --json) || fail "send failed"
[ "$(jq -s 'map(select(.id != null)) | length' <<<"$sent")" = 10 ] ||
    fail "expected 10 enqueued ids, got: $sent"
say "enqueued 10 messages"

# --- kill the leader -------------------------------------------------------------
victim=$leader
before=$(status_of "127.0.0.1:740$victim" | jq -r '.applied_index // empty')
[ -n "$before" ] || fail "node $victim does not answer before the kill"
container=$("$cluster" container "$victim") || fail "no container for node $victim"
docker kill "$container" >/dev/null || fail "docker kill failed"
killed_at=$SECONDS
say "killed node $victim (container ${container:0:12}, SIGKILL)"

survivors=$(seq 1 3 | grep -vx "$victim" | sed 's/^/127.0.0.1:740/' | paste -sd,)
leader=$(wait_leader "$survivors" "$victim" 30) || fail "no new leader within 30s of killing node $victim"
say "new leader is node $leader ($((SECONDS - killed_at))s after the kill)"

# --- receive and ack ------------------------------------------------------------
declare -A receipts=()
deadline=$((SECONDS + 60))
while [ "${#receipts[@]}" -lt 10 ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "received ${#receipts[@]} of 10 messages within 60s"
    batch=$(rq recv "$queue" --max 10 --wait 2s --json --cluster "$seeds") || {
        sleep 0.5
        continue
    }
    while IFS=$'\t' read -r body receipt; do
        [ -n "$body" ] || continue
        case "$body" in
            smoke-message-*) receipts[$body]=$receipt ;;
            *) fail "unexpected message body: $body" ;;
        esac
    done < <(jq -r '[.body, .receipt] | @tsv' <<<"$batch")
done
for n in $(seq 1 10); do
    [ -n "${receipts[smoke-message-$n]:-}" ] || fail "smoke-message-$n was not received"
done
rq ack "$queue" "${receipts[@]}" --cluster "$seeds" >/dev/null || fail "ack failed"
stats=$(rq queue stats "$queue" --json --cluster "$seeds") || fail "queue stats failed"
read -r ready in_flight acked < <(jq -r '"\(.ready) \(.in_flight) \(.counters.acked)"' <<<"$stats")
[ "$ready $in_flight $acked" = "0 0 10" ] ||
    fail "after acking: ready=$ready in_flight=$in_flight acked=$acked, expected 0 0 10"
say "received and acked all 10 messages; the queue is empty"

# --- the killed node rejoins ----------------------------------------------------
target=$(status_of "127.0.0.1:740$leader" | jq -r '.applied_index // empty')
[ -n "$target" ] || fail "the leader (node $leader) does not answer"
# The acks (and the new leader's first entry) came after the kill, so the
# restarted node has entries to catch up on.
[ "$target" -gt "$before" ] || fail "nothing was committed while node $victim was down (applied $target)"
docker start "$container" >/dev/null || fail "docker start of node $victim failed"
started_at=$SECONDS
deadline=$((SECONDS + 60))
while :; do
    view=$(status_of "127.0.0.1:740$victim")
    if [ "$(jq -r '.node_id // empty' <<<"$view")" = "$victim" ] &&
        [ -n "$(jq -r '.leader // empty' <<<"$view")" ] &&
        [ "$(jq -r '.applied_index // 0' <<<"$view")" -ge "$target" ] &&
        curl -fsS --max-time 2 "http://127.0.0.1:940$victim/ready" >/dev/null 2>&1; then
        break
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
        fail "node $victim did not catch up within 60s of its restart (applied $(jq -r '.applied_index // "?"' <<<"$view") of $target; its view: $view)"
    sleep 0.5
done
say "node $victim rejoined: applied index $before at the kill, now $(jq -r .applied_index <<<"$view") >= $target, /ready OK ($((SECONDS - started_at))s after start)"

# Every replica ends with the same state: equal applied index and digest
# (--digest: the digest is computed only when asked for, else it reads 0).
deadline=$((SECONDS + 30))
while :; do
    views=$(for n in 1 2 3; do
        { rq cluster status --json --digest --cluster "127.0.0.1:740$n" 2>/dev/null || echo '{}'; } |
            jq -c '{node_id, applied_index, state_digest}'
    done)
    distinct=$(jq -s 'map([.applied_index, .state_digest]) | unique | length' <<<"$views")
    answered=$(jq -s 'map(select(.node_id != null)) | length' <<<"$views")
    [ "$answered" = 3 ] && [ "$distinct" = 1 ] && break
    [ "$SECONDS" -lt "$deadline" ] || fail "replicas differ after 30s: $(paste -sd' ' <<<"$views")"
    sleep 0.5
done
say "all 3 replicas: applied $(jq -rs '.[0].applied_index' <<<"$views"), digest $(jq -rs '.[0].state_digest' <<<"$views")"

say "PASSED"
