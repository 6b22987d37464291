#!/usr/bin/env bash
# Makes the secrets of a cluster with TLS, mutual TLS between the nodes and
# token auth: a CA, a certificate and key for each of nodes 1 to 5, a client
# certificate, and a users file with two users. The same set serves the
# compose cluster (deploy/compose.secure.yaml) and the Kubernetes overlay
# (deploy/k8s-secure). See deploy/README.md, "Secured cluster".
#
#   deploy/make-secrets.sh [DIR]                make a new set in DIR
#   deploy/make-secrets.sh --force [DIR]        replace an existing set (a new
#                                               CA and new tokens: every node
#                                               and client must take them)
#   deploy/make-secrets.sh --renew-certs [DIR]  new node and client
#                                               certificates and keys from
#                                               DIR's CA, same names (needs
#                                               openssl); users untouched
#
# DIR defaults to deploy/secrets (git-ignored). It gets:
#   ca.pem, ca.key           the CA (ca.key is needed only by --renew-certs)
#   node-N.pem, node-N.key   node N's certificate: node-N.raftq (what peers
#                            check), raftq-N and 172.28.0.1N (compose),
#                            127.0.0.1 and localhost (health checks, published
#                            ports), and Kubernetes pod raftq-<N-1>'s names
#                            and the client Service's names
#   client.pem, client.key   a client certificate (optional: the nodes do not
#                            ask for one)
#   users.toml               the users file: "admin" (cluster admin, every
#                            permission on every queue) and "probe" (no
#                            permission: health checks only)
#   admin.token              the admin's token
#   probe.token              the probe's token, for the compose health check
#                            (mounted as a secret, read via RAFTQ_TOKEN_FILE)
#
# The directory is 0700. Node keys, users.toml and probe.token are 0644
# inside it: compose bind-mounts them into containers that run as uid 65532,
# which must read them; nobody else on the host can reach them through the
# directory. The CA key, the client key and admin.token stay 0600.
#
# Environment: RAFTQ_BIN (the raftq binary; default: raftq on PATH, else the
# newest one cargo built under target/), RAFTQ_K8S_NAMESPACE (default raftq),
# RAFTQ_K8S_DOMAIN (the cluster's DNS domain, default cluster.local),
# RAFTQ_CERT_DAYS (validity of --renew-certs certificates, default 365).
set -euo pipefail

deploy=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$deploy")
nodes=5
namespace=${RAFTQ_K8S_NAMESPACE:-raftq}
domain=${RAFTQ_K8S_DOMAIN:-cluster.local}

die() { echo "make-secrets: $*" >&2; exit 1; }

mode=new
case "${1:-}" in
    --force) mode=force; shift ;;
    --renew-certs) mode=renew; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (usage: $0 [--force | --renew-certs] [DIR])" ;;
esac
[ $# -le 1 ] || die "usage: $0 [--force | --renew-certs] [DIR]"
dir=${1:-$deploy/secrets}

# The raftq binary: RAFTQ_BIN, else PATH, else the newest one cargo built.
find_raftq() {
    if [ -n "${RAFTQ_BIN:-}" ]; then
        [ -x "$RAFTQ_BIN" ] || die "RAFTQ_BIN=$RAFTQ_BIN is not an executable"
        echo "$RAFTQ_BIN"
        return
    fi
    if command -v raftq >/dev/null 2>&1; then
        command -v raftq
        return
    fi
    local target_dir="" candidate
    if command -v cargo >/dev/null 2>&1; then
        target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    fi
    target_dir=${target_dir:-$repo/target}
    # ls -t: the most recently built of the release, static and debug binaries.
    candidate=$(ls -t "$target_dir/x86_64-unknown-linux-gnu/release/raftq" \
        "$target_dir/release/raftq" "$target_dir/debug/raftq" 2>/dev/null | head -n 1 || true)
    [ -n "$candidate" ] ||
        die "no raftq binary: set RAFTQ_BIN, put raftq on PATH, or build it (cargo build -p raftq-cli)"
    echo "$candidate"
}

# hosts_of N: the names and addresses clients and peers dial node N by,
# comma-separated (node-N.raftq is added by make-certs itself).
hosts_of() {
    local n=$1 pod="raftq-$(($1 - 1))"
    local names=(
        "raftq-$n" "172.28.0.1$n" 127.0.0.1 localhost
        "$pod.raftq-peers" "$pod.raftq-peers.$namespace.svc" "$pod.raftq-peers.$namespace.svc.$domain"
        raftq "raftq.$namespace" "raftq.$namespace.svc" "raftq.$namespace.svc.$domain"
    )
    local IFS=,
    echo "${names[*]}"
}

# add_user RAFTQ NAME TOKEN_FILE ARGS...: a user in DIR's users file, its token
# in TOKEN_FILE.
add_user() {
    local raftq=$1 name=$2 out=$3 err
    shift 3
    err=$("$raftq" auth add-user "$name" --file "$dir/users.toml" "$@" 2>&1 >"$out") ||
        die "raftq auth add-user $name failed: $err"
    [ -s "$out" ] || die "raftq auth add-user $name printed no token"
}

# --- a new set ----------------------------------------------------------------
make_new() {
    local raftq node_args=() n
    raftq=$(find_raftq)
    "$raftq" tls --help >/dev/null 2>&1 ||
        die "$raftq has no 'tls' command (built before TLS support): rebuild it, or set RAFTQ_BIN"
    if [ -e "$dir/ca.pem" ] || [ -e "$dir/users.toml" ]; then
        [ "$mode" = force ] ||
            die "$dir already holds secrets; --force replaces them (a new CA and new tokens), --renew-certs renews the certificates only"
    fi
    mkdir -p "$dir"
    chmod 0700 "$dir"
    for n in $(seq 1 "$nodes"); do
        node_args+=(--node "$n=$(hosts_of "$n")")
    done
    "$raftq" tls make-certs --dir "$dir" "${node_args[@]}" >/dev/null

    # add-user appends, so start from an empty users file. The tokens go to
    # files only the owner can read, never to the terminal.
    # (probe.env: what sets made before probe.token held instead.)
    rm -f "$dir/users.toml" "$dir/admin.token" "$dir/probe.token" "$dir/probe.env"
    (
        umask 077
        add_user "$raftq" admin "$dir/admin.token" --admin --allow '*=send,receive,manage'
        add_user "$raftq" probe "$dir/probe.token"
    )
    chmod 0644 "$dir"/node-*.key "$dir/users.toml" "$dir/probe.token"
    echo "make-secrets: wrote a CA, certificates for nodes 1-$nodes and a client, and users admin and probe to $dir (with $raftq)"
}

# --- renewed certificates from the same CA -------------------------------------
# renew_one FILE CN SANS USAGE: a new key and certificate for FILE.pem/.key,
# written over the old files in place (same inode and mode, so bind mounts of
# running containers see them; a node reads them at its next start).
renew_one() {
    local file=$1 cn=$2 sans=$3 usage=$4
    {
        [ -z "$sans" ] || echo "subjectAltName = $sans"
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature"
        echo "extendedKeyUsage = $usage"
    } >"$work/ext.cnf"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$work/new.key" -subj "/CN=$cn" -out "$work/new.csr" 2>/dev/null ||
        die "openssl could not make a key for $file"
    openssl x509 -req -in "$work/new.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -set_serial "0x$(openssl rand -hex 15)" -days "${RAFTQ_CERT_DAYS:-365}" \
        -extfile "$work/ext.cnf" -out "$work/new.pem" 2>/dev/null ||
        die "openssl could not sign $file with $dir/ca.key"
    openssl verify -CAfile "$dir/ca.pem" "$work/new.pem" >/dev/null ||
        die "the new $file.pem does not verify against $dir/ca.pem"
    cat "$work/new.key" >"$dir/$file.key"
    cat "$work/new.pem" >"$dir/$file.pem"
}

renew() {
    local n sans host
    command -v openssl >/dev/null || die "--renew-certs needs openssl"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    [ -r "$dir/ca.pem" ] && [ -r "$dir/ca.key" ] ||
        die "$dir has no ca.pem and ca.key to sign with (make a set first: $0 $dir)"
    for n in $(seq 1 "$nodes"); do
        sans="DNS:node-$n.raftq"
        for host in $(hosts_of "$n" | tr , ' '); do
            case "$host" in
                *[!0-9.]*) sans="$sans,DNS:$host" ;;
                *) sans="$sans,IP:$host" ;;
            esac
        done
        renew_one "node-$n" "node-$n.raftq" "$sans" "serverAuth, clientAuth"
    done
    renew_one client "raftq client" "DNS:raftq-client" "clientAuth"
    echo "make-secrets: renewed the certificates of nodes 1-$nodes and the client in $dir from its CA (valid ${RAFTQ_CERT_DAYS:-365} days)"
    echo "make-secrets: restart the nodes one at a time to take them (deploy/README.md, \"Rotating\")"
}

case "$mode" in
    new | force) make_new ;;
    renew) renew; exit 0 ;;
esac

abs=$(cd "$dir" && pwd)
cat <<EOF

For the CLI on this host (compose publishes the nodes on 127.0.0.1:7401-7405):

  export RAFTQ_CA=$abs/ca.pem
  export RAFTQ_TOKEN="\$(cat $abs/admin.token)"
  export RAFTQ_CLUSTER=127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403

Compose (from the repository root):

  RAFTQ_SECRETS_DIR=$abs docker-compose -p raftq -f deploy/compose.yaml -f deploy/compose.secure.yaml up -d

Kubernetes (namespace $namespace; then kubectl apply -k deploy/k8s-secure):

  kubectl apply -f deploy/k8s/namespace.yaml
  kubectl -n $namespace create secret generic raftq-tls --from-file=$abs/ca.pem \\
$(for n in $(seq 1 "$nodes"); do printf '    --from-file=%s/node-%s.pem --from-file=%s/node-%s.key \\\n' "$abs" "$n" "$abs" "$n"; done)
    --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n $namespace create secret generic raftq-users --from-file=$abs/users.toml \\
    --dry-run=client -o yaml | kubectl apply -f -
EOF
