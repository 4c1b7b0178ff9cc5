#!/usr/bin/env bash
# scripts/cluster.sh — a local colloquy cluster on one machine (docs/scale-out.md):
#
#   PostgreSQL   the server scripts/dev-db.sh finds (else its private cluster), with a fresh
#                database colloquy_cluster_<random>
#   node a, b    two `colloquy serve` processes on free ports of 127.0.0.1, CHANGE_FEED=postgres,
#                TRUSTED_PROXIES=127.0.0.1 (they see the visitor's address from X-Forwarded-For)
#   HAProxy      Debian's haproxy (installed with apt-get when missing and running as root;
#                otherwise: `sudo apt-get install haproxy`), round-robin over both nodes with
#                health checks on GET /readyz every 500 ms (2 failures: out; 2 passes: in),
#                a refused connection retried on the other node (`option redispatch`)
#
# Usage:
#   scripts/cluster.sh up           build, start everything, print the addresses; the processes
#                                   keep running (state, logs and pids in $CLUSTER_DIR)
#   scripts/cluster.sh env          print `export BASE_URL=… ADMIN_TOKEN=… NODE_A_URL=…` lines
#                                   for the running cluster: eval "$(scripts/cluster.sh env)"
#   scripts/cluster.sh status       each node's /api/ops/cluster and the load balancer
#   scripts/cluster.sh down         stop the nodes and HAProxy, drop the database
#   scripts/cluster.sh start-node a|b   (re)start one node on its port (after a kill -9)
#   scripts/cluster.sh start-redis  (re)start the cluster's private redis-server on its port
#                                   (after scripts/chaos.sh killed it)
#   scripts/cluster.sh lb-only HOST:PORT…   only HAProxy, same configuration, in front of
#                                   servers already running (prints its URL; `down` stops it)
#   scripts/cluster.sh --run CMD [ARG...]
#                                   up, run CMD with BASE_URL (the load balancer), ADMIN_TOKEN,
#                                   NODE_A_URL, NODE_B_URL, CLUSTER_DB_URL, CLUSTER_DIR,
#                                   NODE_A_PID, NODE_B_PID exported, then down (also on
#                                   Ctrl-C); exits with CMD's status
#
# Environment:
#   CLUSTER_DIR          state directory (default <repo>/.data/cluster; one cluster per dir)
#   CLUSTER_RELEASE=1    build and serve the release binary (default: debug)
#   CLUSTER_NO_BUILD=1   use the binary already built
#   CLUSTER_LB_PORT      the load balancer's port (default: a free one)
#   CLUSTER_LB_THREADS   HAProxy's nbthread (default: the number of cores)
#   CLUSTER_FEED         CHANGE_FEED of the nodes (default postgres; `off` shows the fallback)
#   CLUSTER_DATABASE_URL serve this (migrated or empty) database instead of a fresh one; `down`
#                        leaves it in place (scripts/bench.sh: its seeded database)
#   CLUSTER_ADMIN_TOKEN  the nodes' ADMIN_TOKEN (default: a random one)
#   CLUSTER_REDIS        where the nodes' shared rate budgets live (REDIS_URL of both nodes):
#                        `auto` (default) Redis at $REDIS_URL or 127.0.0.1:6379 if it answers,
#                        else a private redis-server on a free port, else none (with a warning:
#                        each node then counts budgets alone); `on` the same but no Redis is an
#                        error; `private` always a private redis-server (scripts/chaos.sh stops
#                        it); `off` none
#   CARGO_TARGET_DIR     default ~/.cache/colloquy/target
#   DATABASE_URL         candidate PostgreSQL server (scripts/dev-db.sh)
#   DATABASE_POOL_SIZE, WORKERS, RUST_LOG   passed to both nodes
#   CLUSTER_REDIS_URL    the nodes' REDIS_URL (spam windows shared across nodes); default
#                        REDIS_URL, else redis://127.0.0.1:6379 when it answers PING, else none
#                        (`none` forces none); keys under REDIS_PREFIX=colloquy:<database>:
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquy/target}"
CLUSTER_DIR="${CLUSTER_DIR:-$ROOT/.data/cluster}"
STATE="$CLUSTER_DIR/state.env"

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}
rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { # a port nothing listens on (a race with another starter is possible, rare)
    local p _
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        if port_free "$p"; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

need_haproxy() {
    command -v haproxy >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing Debian's haproxy (apt-get, running as root)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq haproxy >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; } ||
            die "apt-get install haproxy failed"
        command -v haproxy >/dev/null 2>&1 || die "apt-get installed haproxy but it is not on PATH"
    else
        die "HAProxy is missing: install it (Debian/Ubuntu: sudo apt-get install haproxy; Fedora: sudo dnf install haproxy; macOS: brew install haproxy)"
    fi
}

load_state() { [[ -f "$STATE" ]] && source "$STATE"; }

alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# start_node a|b — starts the node on its recorded port (BIND port 0 the first time).
start_node() {
    local n="$1" port_var="NODE_${1^^}_PORT" pid_var="NODE_${1^^}_PID" port logf deadline pid
    port="${!port_var:-0}"
    logf="$CLUSTER_DIR/node-$n.log"
    # setsid: the node outlives this script (`up`) and gets no Ctrl-C meant for it.
    DATABASE_URL="$CLUSTER_DB_URL" BIND="127.0.0.1:$port" ADMIN_TOKEN="$ADMIN_TOKEN" \
        CHANGE_FEED="${CLUSTER_FEED:-postgres}" TRUSTED_PROXIES=127.0.0.1 LOG_FORMAT=text NO_COLOR=1 \
        REDIS_PREFIX="colloquy:${CLUSTER_DB:-cluster}:" \
        RUST_LOG="${RUST_LOG:-info}" redis_env setsid "$CLUSTER_BIN" serve >>"$logf" 2>&1 </dev/null 8>&- 9>&- &
    pid=$!
    printf -v "$pid_var" '%s' "$pid"
    save_state
    deadline=$((SECONDS + 30))
    [[ "$port" == 0 ]] && port=""
    while ((SECONDS < deadline)); do
        alive "$pid" || { tail -n 30 "$logf" >&2; die "node $n exited during start-up (log: $logf)"; }
        if [[ -z "$port" ]]; then
            port="$(sed 's/\x1b\[[0-9;]*m//g' "$logf" 2>/dev/null | grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' |
                tail -n 1 | sed 's/.*://')" || true
        fi
        if [[ -n "$port" ]] && curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then
            printf -v "$port_var" '%s' "$port"
            save_state
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$logf" >&2
    die "node $n did not answer /readyz within 30 s (log: $logf)"
}

save_state() {
    mkdir -p "$CLUSTER_DIR"
    {
        printf 'CLUSTER_DB=%q\nCLUSTER_DB_URL=%q\nADMIN_TOKEN=%q\nCLUSTER_BIN=%q\n' \
            "${CLUSTER_DB:-}" "${CLUSTER_DB_URL:-}" "${ADMIN_TOKEN:-}" "${CLUSTER_BIN:-}"
        printf 'CLUSTER_FEED=%q\nNODE_A_PORT=%q\nNODE_A_PID=%q\nNODE_B_PORT=%q\nNODE_B_PID=%q\n' \
            "${CLUSTER_FEED:-postgres}" "${NODE_A_PORT:-}" "${NODE_A_PID:-}" "${NODE_B_PORT:-}" "${NODE_B_PID:-}"
        printf 'LB_PORT=%q\nLB_PID=%q\nDB_SERVER_URL=%q\n' "${LB_PORT:-}" "${LB_PID:-}" "${DB_SERVER_URL:-}"
        printf 'CLUSTER_REDIS_URL=%q\nREDIS_PID=%q\nREDIS_PORT=%q\n' \
            "${CLUSTER_REDIS_URL:-}" "${REDIS_PID:-}" "${REDIS_PORT:-}"
    } >"$STATE.tmp"
    mv "$STATE.tmp" "$STATE"
}

write_haproxy_cfg() { # servers: $LB_SERVERS (host:port …), default both nodes
    local servers="${LB_SERVERS:-127.0.0.1:$NODE_A_PORT 127.0.0.1:$NODE_B_PORT}" i=0 s name
    cat >"$CLUSTER_DIR/haproxy.cfg" <<EOF
# Written by scripts/cluster.sh; compose.yaml carries the same settings.
global
    maxconn 8000
    # Threads: one per core by default; on a machine shared with the nodes fewer can do
    # better (docs/scale-out.md, Measured).
    nbthread ${CLUSTER_LB_THREADS:-$(nproc)}
    pidfile $CLUSTER_DIR/haproxy.pid
    # No log lines: a line per request costs the balancer CPU the nodes need.

defaults
    mode http
    maxconn 8000
    option forwardfor
    # Keep-alive on both sides, and any idle connection to a node serves any request: no
    # connect per request on either side.
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 15m
    timeout server 15m
    timeout http-request 10s
    timeout http-keep-alive 30s
    retries 2
    option redispatch

frontend colloquy
    bind 127.0.0.1:$LB_PORT
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
EOF
    for s in $servers; do
        case "$i" in 0) name=a ;; 1) name=b ;; *) name="n$i" ;; esac
        printf '    server %s %s check\n' "$name" "$s" >>"$CLUSTER_DIR/haproxy.cfg"
        i=$((i + 1))
    done
}

start_lb() {
    local logf="$CLUSTER_DIR/haproxy.log" deadline
    haproxy -c -q -f "$CLUSTER_DIR/haproxy.cfg" || die "HAProxy refuses $CLUSTER_DIR/haproxy.cfg"
    setsid haproxy -db -f "$CLUSTER_DIR/haproxy.cfg" >>"$logf" 2>&1 </dev/null 8>&- 9>&- &
    LB_PID=$!
    save_state
    deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
        alive "$LB_PID" || { tail -n 20 "$logf" >&2; die "HAProxy exited (log: $logf)"; }
        # Both nodes in: two answers from different nodes (the round-robin alternates).
        if curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$LB_PORT/readyz" 2>/dev/null; then
            sleep 1.2 # the first health checks (rise 2 x 500 ms) put both servers up
            return 0
        fi
        sleep 0.2
    done
    die "the load balancer did not answer within 15 s (log: $logf)"
}

# ----------------------------------------------------------------------------------- Redis
# The nodes' shared rate budgets (docs/scale-out.md): CLUSTER_REDIS picks where they live;
# CLUSTER_REDIS_URL (empty: none) is what both nodes get as REDIS_URL.

# redis_env CMD… — becomes CMD (exec: run it in the background, `$!` is CMD's pid) with
# REDIS_URL set to the cluster's Redis, or unset without one.
redis_env() {
    if [[ -n "${CLUSTER_REDIS_URL:-}" ]]; then
        REDIS_URL="$CLUSTER_REDIS_URL" exec "$@"
    else
        exec env -u REDIS_URL "$@"
    fi
}

redis_answers() { # HOST PORT: a PING is answered PONG
    local reply
    reply="$( (exec 3<>"/dev/tcp/$1/$2" && printf 'PING\r\n' >&3 && timeout 2 head -c 7 <&3) 2>/dev/null)" || return 1
    [[ "$reply" == "+PONG"* ]]
}

# start_redis — the private redis-server on REDIS_PORT (a free port the first time), no
# persistence: budgets are minutes long, a restarted Redis starts empty like a lost one.
start_redis() {
    command -v redis-server >/dev/null 2>&1 ||
        die "redis-server is missing (Debian/Ubuntu: sudo apt-get install redis-server; or set CLUSTER_REDIS=off)"
    REDIS_PORT="${REDIS_PORT:-$(free_port)}" || die "no free port for redis-server"
    setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        >>"$CLUSTER_DIR/redis.log" 2>&1 </dev/null 8>&- 9>&- &
    REDIS_PID=$!
    CLUSTER_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    save_state
    local deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        alive "$REDIS_PID" || { tail -n 20 "$CLUSTER_DIR/redis.log" >&2; die "redis-server exited (log: $CLUSTER_DIR/redis.log)"; }
        redis_answers 127.0.0.1 "$REDIS_PORT" && return 0
        sleep 0.1
    done
    die "redis-server did not answer on port $REDIS_PORT within 10 s"
}

# pick_redis — sets CLUSTER_REDIS_URL (and starts a private redis-server) per CLUSTER_REDIS.
pick_redis() {
    local mode="${CLUSTER_REDIS:-auto}" hostport host port
    CLUSTER_REDIS_URL="" REDIS_PID="" REDIS_PORT=""
    case "$mode" in
        off) return 0 ;;
        private) start_redis; return 0 ;;
        auto | on) ;;
        *) die "CLUSTER_REDIS must be auto, on, private or off (got '$mode')" ;;
    esac
    if [[ -n "${REDIS_URL:-}" ]]; then
        CLUSTER_REDIS_URL="$REDIS_URL" # the operator's choice: the nodes will say if it is away
        return 0
    fi
    hostport="127.0.0.1:6379" host="${hostport%:*}" port="${hostport##*:}"
    if redis_answers "$host" "$port"; then
        CLUSTER_REDIS_URL="redis://$hostport"
    elif command -v redis-server >/dev/null 2>&1; then
        start_redis
    elif [[ "$mode" == on ]]; then
        die "no Redis: none answers on 127.0.0.1:6379 and redis-server is missing (Debian/Ubuntu: sudo apt-get install redis-server)"
    else
        log "no Redis (none on 127.0.0.1:6379, no redis-server: Debian/Ubuntu: sudo apt-get install redis-server): each node counts rate budgets alone, so every limit is multiplied by 2"
    fi
}

cmd_start_redis() {
    load_state || die "no cluster state in $CLUSTER_DIR"
    [[ -n "${REDIS_PORT:-}" ]] || die "this cluster has no private redis-server (CLUSTER_REDIS=private)"
    alive "${REDIS_PID:-}" && die "redis-server is running (pid $REDIS_PID)"
    start_redis
    log "redis-server up again on port $REDIS_PORT (pid $REDIS_PID)"
}

cmd_up() {
    if load_state && { alive "${NODE_A_PID:-}" || alive "${NODE_B_PID:-}" || alive "${LB_PID:-}"; }; then
        die "a cluster already runs from $CLUSTER_DIR (scripts/cluster.sh down first, or set CLUSTER_DIR)"
    fi
    rm -f "$STATE" "$CLUSTER_DIR"/node-?.log "$CLUSTER_DIR/haproxy.log"
    mkdir -p "$CLUSTER_DIR"
    command -v curl >/dev/null 2>&1 || die "curl is missing (Debian: apt-get install curl)"
    need_haproxy
    local profile=debug flag=()
    if [[ -n "${CLUSTER_RELEASE:-}" ]]; then profile=release flag=(--release); fi
    if [[ -z "${CLUSTER_NO_BUILD:-}" ]]; then
        log "cargo build ${flag[*]} --bin colloquy"
        (cd "$ROOT" && cargo build "${flag[@]}" --bin colloquy >&2) || die "cargo build failed"
    fi
    [[ -x "$CARGO_TARGET_DIR/$profile/colloquy" ]] || die "no binary at $CARGO_TARGET_DIR/$profile/colloquy"
    # A private copy: a concurrent `cargo build` must not replace the binary under the nodes.
    cp "$CARGO_TARGET_DIR/$profile/colloquy" "$CLUSTER_DIR/colloquy"
    CLUSTER_BIN="$CLUSTER_DIR/colloquy"

    # shellcheck source=scripts/dev-db.sh
    source "$ROOT/scripts/dev-db.sh" || die "no usable PostgreSQL server (scripts/dev-db.sh)"
    DB_SERVER_URL="$(colloquy_db_url_for "$DATABASE_URL" postgres)"
    if [[ -n "${CLUSTER_DATABASE_URL:-}" ]]; then
        CLUSTER_DB="" # not ours: never dropped
        CLUSTER_DB_URL="$CLUSTER_DATABASE_URL"
    else
        CLUSTER_DB="colloquy_cluster_$(rand_hex 5)"
        CLUSTER_DB_URL="$(colloquy_db_create "$CLUSTER_DB")" || die "could not create database $CLUSTER_DB"
    fi
    ADMIN_TOKEN="${CLUSTER_ADMIN_TOKEN:-cluster-$(rand_hex 20)}"
    NODE_A_PORT="" NODE_B_PORT=""
    save_state
    # A start that fails half-way leaves nothing running.
    trap 'rc=$?; ((rc == 0)) || cmd_down; exit $rc' EXIT
    pick_redis
    # Node a first: it runs the migrations; b starts on the migrated database.
    start_node a
    start_node b
    LB_PORT="${CLUSTER_LB_PORT:-$(free_port)}" || die "no free port for the load balancer"
    write_haproxy_cfg
    start_lb
    save_state
    trap - EXIT
    cat >&2 <<EOF

================================================================================
 colloquy cluster ($CLUSTER_DIR)
   load balancer (HAProxy, round-robin): http://127.0.0.1:$LB_PORT
   node a:                               http://127.0.0.1:$NODE_A_PORT  (pid $NODE_A_PID)
   node b:                               http://127.0.0.1:$NODE_B_PORT  (pid $NODE_B_PID)
   admin token:                          $ADMIN_TOKEN
   database:                             $CLUSTER_DB_URL
   change feed:                          ${CLUSTER_FEED:-postgres}
   rate budgets (REDIS_URL):             ${CLUSTER_REDIS_URL:-none: each node counts alone}
 eval "\$(scripts/cluster.sh env)"; scripts/cluster.sh status; scripts/cluster.sh down
================================================================================

EOF
}

cmd_env() {
    load_state || die "no cluster state in $CLUSTER_DIR (scripts/cluster.sh up)"
    printf 'export BASE_URL=%q\nexport ADMIN_TOKEN=%q\n' "http://127.0.0.1:$LB_PORT" "$ADMIN_TOKEN"
    printf 'export NODE_A_URL=%q\nexport NODE_B_URL=%q\n' "http://127.0.0.1:$NODE_A_PORT" "http://127.0.0.1:$NODE_B_PORT"
    printf 'export NODE_A_PID=%q\nexport NODE_B_PID=%q\n' "$NODE_A_PID" "$NODE_B_PID"
    printf 'export CLUSTER_DB_URL=%q\nexport CLUSTER_DIR=%q\n' "$CLUSTER_DB_URL" "$CLUSTER_DIR"
    printf 'export CLUSTER_REDIS_URL=%q\nexport REDIS_PID=%q\n' "${CLUSTER_REDIS_URL:-}" "${REDIS_PID:-}"
}

cmd_status() {
    load_state || die "no cluster state in $CLUSTER_DIR"
    local n port pid
    for n in a b; do
        port="NODE_${n^^}_PORT" pid="NODE_${n^^}_PID"
        printf 'node %s (pid %s, %s): ' "$n" "${!pid}" "$(alive "${!pid}" && echo running || echo stopped)"
        curl -sS --max-time 2 -H "Authorization: Bearer $ADMIN_TOKEN" \
            "http://127.0.0.1:${!port}/api/ops/cluster" 2>&1 || true
        echo
    done
    printf 'load balancer (pid %s, %s): http://127.0.0.1:%s\n' "$LB_PID" \
        "$(alive "$LB_PID" && echo running || echo stopped)" "$LB_PORT"
    printf 'rate budgets: %s\n' "${CLUSTER_REDIS_URL:-each node alone (no Redis)}"
}

stop_pid() { # TERM, then KILL after 10 s
    local pid="$1" _
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
    load_state || { log "no cluster state in $CLUSTER_DIR: nothing to stop"; return 0; }
    stop_pid "${LB_PID:-}"
    stop_pid "${NODE_A_PID:-}"
    stop_pid "${NODE_B_PID:-}"
    stop_pid "${REDIS_PID:-}" # only ever the private one
    if [[ -n "${CLUSTER_DB:-}" ]]; then
        [[ -n "${DB_SERVER_URL:-}" ]] && export DATABASE_URL="$DB_SERVER_URL"
        # shellcheck source=scripts/dev-db.sh
        source "$ROOT/scripts/dev-db.sh" &&
            colloquy_db_drop "$CLUSTER_DB" >/dev/null 2>&1 || log "could not drop database $CLUSTER_DB"
    fi
    rm -f "$STATE" "$CLUSTER_DIR/colloquy"
    log "cluster stopped (logs stay in $CLUSTER_DIR)"
}

cmd_start_node() {
    load_state || die "no cluster state in $CLUSTER_DIR"
    local n="${1:-}" pid_var
    [[ "$n" == a || "$n" == b ]] || die "start-node needs a or b"
    pid_var="NODE_${n^^}_PID"
    alive "${!pid_var}" && die "node $n is running (pid ${!pid_var})"
    start_node "$n"
    log "node $n up again (pid ${!pid_var})"
}

# lb-only HOST:PORT…: only HAProxy (the same configuration) in front of servers already
# running, e.g. one node, to tell the balancer's cost from the cluster's (scripts/bench.sh).
cmd_lb_only() {
    (($#)) || die "lb-only needs HOST:PORT of at least one server"
    if load_state && alive "${LB_PID:-}"; then die "a load balancer already runs from $CLUSTER_DIR"; fi
    mkdir -p "$CLUSTER_DIR"
    rm -f "$STATE" "$CLUSTER_DIR/haproxy.log"
    command -v curl >/dev/null 2>&1 || die "curl is missing (Debian: apt-get install curl)"
    need_haproxy
    LB_PORT="${CLUSTER_LB_PORT:-$(free_port)}" || die "no free port for the load balancer"
    LB_SERVERS="$*" write_haproxy_cfg
    start_lb
    save_state
    printf 'http://127.0.0.1:%s\n' "$LB_PORT"
}

cmd_run() {
    (($#)) || die "--run needs a command"
    trap 'exit 130' INT
    trap 'exit 143' TERM
    cmd_up
    trap 'cmd_down' EXIT
    eval "$(cmd_env)"
    local rc=0
    "$@" || rc=$?
    return "$rc"
}

case "${1:-}" in
    up) cmd_up ;;
    env) cmd_env ;;
    status) cmd_status ;;
    down) cmd_down ;;
    start-node) cmd_start_node "${2:-}" ;;
    start-redis) cmd_start_redis ;;
    lb-only)
        shift
        cmd_lb_only "$@"
        ;;
    --run)
        shift
        cmd_run "$@"
        ;;
    -h | --help | "")
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        [[ -n "${1:-}" ]]
        ;;
    *) die "unknown command '$1' (try --help)" ;;
esac
