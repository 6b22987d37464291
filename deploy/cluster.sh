#!/usr/bin/env bash
# Starts, waits for and stops the compose cluster of deploy/compose.yaml; the
# `just up` / `just down` recipes call it, and so does deploy/smoke.sh.
#
#   deploy/cluster.sh up [3|5]     start 3 (default) or 5 nodes, wait until
#                                  all are healthy, print the cluster status
#   deploy/cluster.sh wait [3|5]   only wait until all are healthy
#   deploy/cluster.sh down         stop and remove containers, network, volumes
#   deploy/cluster.sh container N  the container id of node N
#   deploy/cluster.sh compose ARGS run the compose command on this project
#
# Environment: RAFTQ_PROJECT (compose project, default "raftq"),
# RAFTQ_IMAGE (default raftq:dev), RAFTQ_UP_TIMEOUT (seconds, default 90),
# COMPOSE (the compose command; default docker-compose, else docker compose),
# RAFTQ_SECURE=1 (add compose.secure.yaml: TLS and token auth, with the files
# of deploy/make-secrets.sh in RAFTQ_SECRETS_DIR, default deploy/secrets).
set -euo pipefail

deploy=$(cd "$(dirname "$0")" && pwd)
project=${RAFTQ_PROJECT:-raftq}
up_timeout=${RAFTQ_UP_TIMEOUT:-90}

die() { echo "cluster: $*" >&2; exit 1; }

if [ -n "${COMPOSE:-}" ]; then
    read -r -a compose_cmd <<<"$COMPOSE"
elif command -v docker-compose >/dev/null 2>&1; then
    compose_cmd=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
else
    die "neither docker-compose nor docker compose is installed"
fi

files=(-f "$deploy/compose.yaml")
if [ "${RAFTQ_SECURE:-0}" = 1 ]; then
    secrets=${RAFTQ_SECRETS_DIR:-$deploy/secrets}
    if [ -r "$secrets/probe.token" ]; then
        # Absolute: compose reads relative paths from deploy/, not from here.
        secrets=$(cd "$secrets" && pwd)
        export RAFTQ_SECRETS_DIR=$secrets
        files+=(-f "$deploy/compose.secure.yaml")
    elif [ "${1:-}" = down ]; then
        :
    elif [ -r "$secrets/probe.env" ]; then
        # A set from before the health check read its token from a file.
        die "$secrets has probe.env but no probe.token (an older set): run deploy/make-secrets.sh --force $secrets (a new CA and new tokens), or write the probe's token to $secrets/probe.token (mode 0644)"
    else
        die "no secrets in $secrets: run deploy/make-secrets.sh first"
    fi
fi

# Always name both profiles' services, so `down` and `ps` see nodes 4 and 5.
compose() { "${compose_cmd[@]}" -p "$project" "${files[@]}" --profile five "$@"; }

nodes_arg() {
    case "${1:-3}" in
        3 | 5) echo "${1:-3}" ;;
        *) die "a cluster has 3 or 5 nodes, not ${1}" ;;
    esac
}

container() {
    local id
    id=$(compose ps -q "raftq-$1" 2>/dev/null || true)
    [ -n "$id" ] || die "no container for node $1 in project $project (is the cluster up?)"
    echo "$id"
}

wait_healthy() {
    local nodes=$1 deadline=$((SECONDS + up_timeout)) n state pending
    while :; do
        pending=""
        for n in $(seq 1 "$nodes"); do
            state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' \
                "$(container "$n")" 2>/dev/null || echo missing)
            [ "$state" = running/healthy ] || pending="$pending raftq-$n=$state"
        done
        [ -z "$pending" ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            compose logs --tail 20 >&2 || true
            die "not healthy after ${up_timeout}s:$pending"
        fi
        sleep 1
    done
}

cmd=${1:-}
shift || true
case "$cmd" in
    up)
        nodes=$(nodes_arg "${1:-3}")
        # The founding list counts only on a node's first start: a 3-node
        # cluster does not become a 5-node one by starting nodes 4 and 5
        # (they would found a cluster of their own), nor the reverse.
        if [ -n "$(compose ps -q 2>/dev/null)" ]; then
            have=3
            [ -z "$(compose ps -q raftq-4 2>/dev/null)" ] || have=5
            [ "$have" = "$nodes" ] ||
                die "project $project has a $have-node cluster; remove it first ($0 down, or just down)"
        fi
        if [ "$nodes" = 5 ]; then
            # five.env names all five founding members; --profile adds nodes 4, 5.
            "${compose_cmd[@]}" -p "$project" "${files[@]}" \
                --env-file "$deploy/five.env" --profile five up -d
        else
            "${compose_cmd[@]}" -p "$project" "${files[@]}" up -d
        fi
        started=$SECONDS
        wait_healthy "$nodes"
        echo "cluster: $nodes nodes healthy after $((SECONDS - started))s (project $project)"
        if [ "${RAFTQ_SECURE:-0}" = 1 ] && [ -r "$secrets/admin.token" ]; then
            # The container's own token (RAFTQ_TOKEN_FILE) is the probe's,
            # which sees only the leader. --token-file /dev/stdin hands the
            # admin's over a pipe: not in argv, not in the environment.
            docker exec -i "$(container 1)" /raftq cluster status --token-file /dev/stdin <"$secrets/admin.token"
        else
            docker exec "$(container 1)" /raftq cluster status
        fi
        seeds=$(seq -s, -f '127.0.0.1:740%g' 1 "$nodes")
        echo "cluster: from the host: raftq cluster status --cluster $seeds"
        [ "${RAFTQ_SECURE:-0}" != 1 ] ||
            echo "cluster: with RAFTQ_CA=$secrets/ca.pem and RAFTQ_TOKEN=\"\$(cat $secrets/admin.token)\""
        ;;
    wait)
        wait_healthy "$(nodes_arg "${1:-3}")"
        ;;
    down)
        compose down -v --remove-orphans
        ;;
    container)
        container "${1:?node number}"
        ;;
    compose)
        compose "$@"
        ;;
    *)
        die "usage: $0 up [3|5] | wait [3|5] | down | container N | compose ARGS"
        ;;
esac
