#!/usr/bin/env bash
# scripts/chaos.sh — colloquy's reliability ("chaos") tests; see docs/reliability.md.
#
#   crash     a load client (examples/chaos_client.rs) logs every acknowledged message; the
#             server is killed with SIGKILL in the middle of the load and restarted on the same
#             port while the client keeps going (retrying with the same idempotency key); after
#             every round the database is checked: every acknowledged message stored exactly
#             once, with the acknowledged ticket and created_at, created_at strictly increasing
#             per ticket, each client's sequence in acknowledgement order, ticket counters right.
#   outage    the server runs on a PRIVATE PostgreSQL cluster (.data/chaos-pg, port 55433 —
#             never the shared server on :5432); under load the cluster is stopped
#             (pg_ctl stop -m fast), kept down, started again. While it is down every answer
#             must come within 2 s, be 503 (unavailable/overloaded), never 500/401/timeout;
#             afterwards the same server process must serve again (time to the first 201);
#             nothing acknowledged may be lost.
#   freeze    the same, but the cluster's processes are frozen with SIGSTOP instead (a hung
#             database / network partition: connections open but nothing answers), then
#             SIGCONT; the same checks.
#   overload  far more concurrent clients than the pool and mailboxes hold, on a handful of
#             tickets; answers must come within 2 s (201 or shed with 503/429), no 500, peak RSS
#             bounded, and a light probe client gets a 201 again soon after the load stops.
#   cluster-kill   against scripts/cluster.sh's topology (two nodes with CHANGE_FEED=postgres
#             behind HAProxy): the load goes through the load balancer, node b is killed with
#             SIGKILL, the load balancer routes around it, b is started again and rejoins.
#             Nothing acknowledged may be lost or doubled (the client retries a 502 with the
#             same idempotency key, which may now land on node a); no 5xx outside the 3 s after
#             the kill (in it, HAProxy's 502 for requests that were in flight on b are counted).
#   cluster-feed   the same topology under the same load, plus two feed probes
#             (examples/feed_probe.rs: write through one node, tail-poll the other, both ways);
#             both nodes' feed connections are killed (pg_terminate_backend on application_name
#             'colloquy-feed'). No read may be stale (a message acknowledged by one node and
#             not answered by the other's poll within 1 s), nothing acknowledged lost, and each
#             node must trust its memory again (GET /api/ops/cluster: memory_trusted, after
#             times_distrusted went up): that time is the recovery.
#   cluster-redis  the same topology (its nodes' REDIS_URL: a private redis-server that
#             scripts/cluster.sh started) under the same load; Redis is killed with SIGKILL,
#             kept down 10 s (CHAOS_REDIS_DOWN_SECS), started again (empty). No
#             5xx at all (503 included), nothing acknowledged lost or doubled; both nodes report
#             `fallback` budgets within 1 s of the kill (GET /api/ops/actors) and `cluster`
#             again by themselves after the restart; a team with 10 messages a minute per visitor
#             admits about 10 of 20 POSTs through the load balancer during the outage (each node
#             its share, 10 / 2) and at most 11 after it.
#
# Crash and overload use a fresh database colloquy_chaos_<random> on the server found by
# scripts/dev-db.sh (dropped at the end). Prints a table; exits non-zero if any check fails.
#
# Usage:
#   scripts/chaos.sh              full run (~2.5 minutes after the build)
#   scripts/chaos.sh --short      CI form (~1.5 minutes): 2 crash rounds, 5 s outage and freeze, 200-client overload,
#                                 the two cluster scenarios (~30 s together)
#   scripts/chaos.sh --only crash,outage
#   scripts/chaos.sh --only cluster-kill,cluster-feed,cluster-redis   the cluster scenarios only
#
# Environment (optional):
#   CHAOS_CRASH_ROUNDS       kill -9 rounds (full 5, short 2)
#   CHAOS_WORKERS            concurrent clients of the crash/outage load (default 32)
#   CHAOS_OUTAGE_SECS        how long the database stays down (full 10, short 5)
#   CHAOS_REDIS_DOWN_SECS    how long the cluster's Redis stays down (default 10)
#   CHAOS_OVERLOAD_CONNS     concurrent clients of the overload (full 1500, short 200)
#   CHAOS_OVERLOAD_SECS      overload duration (full 20, short 4)
#   CHAOS_CLIENT_ARGS        extra arguments for the crash/outage/freeze load clients, e.g.
#                            "--no-cmid" (no idempotency keys, no retries)
#   CHAOS_RSS_LIMIT_MB       peak RSS above this fails the overload (default 1024)
#   CHAOS_PG_PORT / CHAOS_PG_DIR   the private cluster (default 55433 / .data/chaos-pg)
#   CHAOS_RELEASE=1          build and test the release binary (default: debug)
#   CHAOS_NO_BUILD=1         use the colloquy and chaos_client binaries already built
#   CHAOS_KEEP=1             keep the run directory (logs, acks, responses) also on success
#   DATABASE_POOL_SIZE, WORKERS, RUST_LOG   passed to colloquy
#   CARGO_TARGET_DIR         default ~/.cache/colloquy/target
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquy/target}"

SHORT=0
ONLY="crash,outage,freeze,overload,cluster-kill,cluster-feed,cluster-redis"
while (($#)); do
    case "$1" in
        --short) SHORT=1 ;;
        --only)
            ONLY="${2:?--only needs a list}"
            shift
            ;;
        --only=*) ONLY="${1#--only=}" ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "chaos: unknown argument '$1' (try --help)" >&2
            exit 2
            ;;
    esac
    shift
done

if ((SHORT)); then
    CRASH_ROUNDS="${CHAOS_CRASH_ROUNDS:-2}"
    OUTAGE_SECS="${CHAOS_OUTAGE_SECS:-5}"
    OVERLOAD_CONNS="${CHAOS_OVERLOAD_CONNS:-200}"
    OVERLOAD_SECS="${CHAOS_OVERLOAD_SECS:-4}"
else
    CRASH_ROUNDS="${CHAOS_CRASH_ROUNDS:-5}"
    OUTAGE_SECS="${CHAOS_OUTAGE_SECS:-10}"
    OVERLOAD_CONNS="${CHAOS_OVERLOAD_CONNS:-1500}"
    OVERLOAD_SECS="${CHAOS_OVERLOAD_SECS:-20}"
fi
LOAD_WORKERS="${CHAOS_WORKERS:-32}"
REDIS_DOWN_SECS="${CHAOS_REDIS_DOWN_SECS:-10}"
RSS_LIMIT_MB="${CHAOS_RSS_LIMIT_MB:-1024}"
PG_PORT="${CHAOS_PG_PORT:-55433}"
PG_DIR="${CHAOS_PG_DIR:-$ROOT/.data/chaos-pg}"

log() { printf 'chaos: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}
section() { printf '\n=== %s ===\n' "$*" >&2; }
now_ms() { date +%s%3N; }
rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
# kv "LINE" KEY — the value of KEY=value in a summary line (empty if absent).
kv() { printf ' %s\n' "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"; }
num() { local v; v="$(kv "$1" "$2")"; printf '%s\n' "${v:-0}"; }

for tool in cargo curl jq; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

# --- state and cleanup --------------------------------------------------------------------
RID="$(rand_hex 4)"
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/colloquy-chaos.XXXXXX")"
SERVER_PID=""
CLIENT_PIDS=()
SAMPLER_PID=""
FROZEN_PIDS=()
SYSTEM_DBS=()
PRIVATE_STARTED=0
PRIVATE_DB=""
CLUSTER_STARTED=0
CLUSTER_NOTES=()
FAILED=0
ROWS=()
FAILS=()

kill_pid() { # kill_pid PID [SIGNAL]
    [[ -n "$1" ]] || return 0
    kill "-${2:-TERM}" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

private_env() { COLLOQUY_DB_DIR="$PG_DIR" COLLOQUY_DB_PORT="$PG_PORT" "$@"; }
PRIVATE_URL="postgres://postgres@127.0.0.1:$PG_PORT"

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local p
    ((${#FROZEN_PIDS[@]})) && kill -CONT "${FROZEN_PIDS[@]}" 2>/dev/null
    for p in "${CLIENT_PIDS[@]}"; do kill_pid "$p" KILL; done
    kill_pid "$SAMPLER_PID" KILL
    kill_pid "$SERVER_PID" KILL
    ((CLUSTER_STARTED)) && cluster_cmd down >/dev/null 2>&1
    for p in "${SYSTEM_DBS[@]}"; do
        colloquy_db_drop "$p" >/dev/null 2>&1 || log "could not drop database $p"
    done
    if ((PRIVATE_STARTED)); then
        if [[ -n "$PRIVATE_DB" ]]; then
            # The cluster may be down if we were interrupted mid-outage: start it to drop.
            private_env _cdb_private_start >/dev/null 2>&1
            PGCONNECT_TIMEOUT=5 "$PSQL" "$PRIVATE_URL/postgres" -w -X -q \
                -c "DROP DATABASE IF EXISTS $PRIVATE_DB WITH (FORCE)" >/dev/null 2>&1
        fi
        private_env colloquy_db_stop_private >/dev/null 2>&1 || log "could not stop the private cluster in $PG_DIR"
    fi
    if ((rc == 0)) && [[ -z "${CHAOS_KEEP:-}" ]]; then
        rm -rf "$RUN_DIR"
    else
        log "run directory kept: $RUN_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { # fail SCENARIO MESSAGE
    FAILED=1
    FAILS+=("$1: $2")
    log "FAIL $1: $2"
}

# --- build --------------------------------------------------------------------------------
section "build"
PROFILE_FLAG=()
PROFILE_DIR=debug
if [[ -n "${CHAOS_RELEASE:-}" ]]; then
    PROFILE_FLAG=(--release)
    PROFILE_DIR=release
fi
if [[ -n "${CHAOS_NO_BUILD:-}" ]]; then
    log "CHAOS_NO_BUILD set: using the binaries already in $CARGO_TARGET_DIR/$PROFILE_DIR"
else
    cargo build "${PROFILE_FLAG[@]}" --bin colloquy --example chaos_client --example feed_probe >&2
fi
BIN="$CARGO_TARGET_DIR/$PROFILE_DIR/colloquy"
CLIENT="$CARGO_TARGET_DIR/$PROFILE_DIR/examples/chaos_client"
PROBE="$CARGO_TARGET_DIR/$PROFILE_DIR/examples/feed_probe"
[[ -x "$BIN" && -x "$CLIENT" ]] || die "build products missing ($BIN, $CLIENT)"

# --- database -----------------------------------------------------------------------------
section "database"
# shellcheck source=scripts/dev-db.sh
source "$ROOT/scripts/dev-db.sh"
DATABASE_URL="$(colloquy_db_url_for "$DATABASE_URL" postgres)"
export DATABASE_URL
PSQL="$(_cdb_psql)" || die "psql not found (Debian: apt-get install postgresql-client)"
log "crash/overload databases on $DATABASE_URL ($COLLOQUY_DB_SOURCE)"

# --- server -------------------------------------------------------------------------------
# start_server DB_URL PORT LOG — starts colloquy (PORT 0: a free port); sets SERVER_PID,
# SERVER_PORT, BASE; waits for /healthz.
start_server() {
    local url="$1" port="$2" logf="$3" deadline
    ADMIN_TOKEN_VALUE="${ADMIN_TOKEN_VALUE:-$(rand_hex 24)}"
    DATABASE_URL="$url" BIND="127.0.0.1:$port" ADMIN_TOKEN="$ADMIN_TOKEN_VALUE" LOG_FORMAT=text \
        NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" "$BIN" serve >>"$logf" 2>&1 8>&- &  # 8: the cluster lock, not for the server to keep
    SERVER_PID=$!
    deadline=$((SECONDS + 30))
    if [[ "$port" == 0 ]]; then port=""; fi
    while ((SECONDS < deadline)); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "the server exited during start-up; its log:"
            tail -n 30 "$logf" >&2
            SERVER_PID=""
            return 1
        fi
        if [[ -z "$port" ]]; then
            port="$(grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$logf" | tail -n 1 | sed 's/.*://')" || true
        fi
        if [[ -n "$port" ]] && curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
            SERVER_PORT="$port"
            BASE="http://127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    log "the server did not answer /healthz within 30 s; its log:"
    tail -n 30 "$logf" >&2
    return 1
}

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        local _
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill_pid "$SERVER_PID" KILL
        SERVER_PID=""
    fi
}

# Rate limits far above the load; the suspicion detector keeps observing and flagging (its
# writes are part of the load) but never blocks: 7 rules x weight 10 < block threshold 100.
create_team() { # prints the public token
    curl -fsS --max-time 10 -X POST "$BASE/api/teams" \
        -H "Authorization: Bearer $ADMIN_TOKEN_VALUE" -H 'Content-Type: application/json' \
        -d '{"name":"chaos","rate_limits":{"message_distinct_id_per_minute":100000000,"message_ip_per_minute":100000000,"message_team_per_hour":100000000,"read_distinct_id_per_minute":100000000,"widget_ip_per_minute":100000000},"suspicion":{"flag_threshold":30,"block_threshold":100,"weights":{"honeypot":10,"repeated_message":10,"repeated_across_visitors":10,"link_density":10,"enumeration":10,"rate_limited":10,"burst_after_creation":10}}}' |
        jq -er .public_token
}

new_system_db() { # sets DB_URL to a fresh database on the found server
    local name
    name="colloquy_chaos_$(rand_hex 5)"
    SYSTEM_DBS+=("$name")
    DB_URL="$(colloquy_db_create "$name")"
}

check_panics() { # check_panics SCENARIO LOG...
    local s="$1"
    shift
    if grep -qiE 'panicked|RUST_BACKTRACE' "$@" 2>/dev/null; then
        fail "$s" "panic in the server log: $(grep -hiE -m1 'panicked' "$@")"
    fi
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# add_row SCENARIO REQUESTS ACKED LOST DUPS 5XX 503 429 CONNERR MAX503 RECOVERY RESULT
add_row() { ROWS+=("$(printf '%s|' "$@")"); }

ms_s() { awk -v m="$1" 'BEGIN { if (m == "none" || m == "") print "none"; else printf "%.2f s", m / 1000 }'; }

# --- crash --------------------------------------------------------------------------------
crash() {
    section "crash: $CRASH_ROUNDS rounds of kill -9 under load"
    local s=crash url logf token r out cpid acks=() t_kill t_restart t_ready load_secs sum vline rc aline
    local req=0 ack=0 bad5=0 n503=0 n429=0 nconn=0 rec_max=0 rec_str="" lost=0 dup=0 ok=1
    new_system_db || { fail $s "could not create a database"; return; }
    url="$DB_URL"
    logf="$RUN_DIR/crash-server.log"
    start_server "$url" 0 "$logf" || { fail $s "server did not start"; return; }
    token="$(create_team)" || { fail $s "could not create the team"; return; }
    for r in $(seq 1 "$CRASH_ROUNDS"); do
        out="$RUN_DIR/crash/r$r"
        mkdir -p "$out"
        # shellcheck disable=SC2086  # CHAOS_CLIENT_ARGS is a list of arguments
        "$CLIENT" load --base "$BASE" --token "$token" --run "crash$r-$RID" --out "$out" \
            --workers "$LOAD_WORKERS" --tickets 8 --new-every 25 --read-every 4 \
            --duration-secs 300 --stop-file "$out/stop" ${CHAOS_CLIENT_ARGS:-} >"$out/summary" 2>"$out/client.err" &
        cpid=$!
        CLIENT_PIDS+=("$cpid")
        if ((SHORT)); then load_secs=2; else load_secs=$((2 + RANDOM % 4)); fi
        sleep "$load_secs"
        t_kill="$(now_ms)"
        kill_pid "$SERVER_PID" KILL
        SERVER_PID=""
        sleep 0.5
        t_restart="$(now_ms)"
        if ! start_server "$url" "$SERVER_PORT" "$logf"; then
            fail $s "round $r: the server did not restart"
            touch "$out/stop"
            wait "$cpid" || true
            ok=0
            break
        fi
        t_ready="$(now_ms)"
        sleep 2
        touch "$out/stop"
        wait "$cpid" || fail $s "round $r: the load client failed ($(tail -n 3 "$out/client.err"))"
        acks+=(--acks "$out/acks.tsv")
        aline="$("$CLIENT" analyze --responses "$out/responses.tsv" --recovery-after-ms "$t_restart")"
        rc=0
        vline="$("$CLIENT" verify --db "$url" "${acks[@]}" 2>"$out/verify.err")" || rc=$?
        log "round $r: load ${load_secs}s, killed at +${load_secs}s, restart to /healthz $((t_ready - t_restart)) ms"
        log "round $r: $(cat "$out/summary")"
        log "round $r: verify (all rounds so far): $vline"
        [[ -s "$out/verify.err" ]] && sed 's/^/  /' "$out/verify.err" | head -n 20 >&2
        if ((rc != 0)); then
            ok=0
            fail $s "round $r: verification failed: $vline"
        fi
        sum="$(cat "$out/summary")"
        req=$((req + $(num "$sum" requests)))
        ack=$((ack + $(num "$sum" acked)))
        bad5=$((bad5 + $(num "$aline" bad_5xx)))
        n503=$((n503 + $(num "$sum" n_503_unavailable) + $(num "$sum" n_503_overloaded) + $(num "$sum" n_503_other)))
        n429=$((n429 + $(num "$sum" n_429)))
        nconn=$((nconn + $(num "$sum" n_conn_error) + $(num "$sum" n_timeout)))
        lost="$(num "$vline" lost)"
        dup="$(num "$vline" duplicates)"
        local recms
        recms="$(kv "$aline" recovery_ms)"
        if [[ "$recms" == none || -z "$recms" ]]; then
            ok=0
            fail $s "round $r: no 201 after the restart"
        elif ((recms > rec_max)); then rec_max=$recms; fi
        rec_str+="${recms:-none} "
        if (($(num "$aline" bad_5xx) > 0)); then
            ok=0
            fail $s "round $r: $(num "$aline" bad_5xx) 5xx answers other than 503"
        fi
        if (($(num "$sum" n_401) > 0)); then
            ok=0
            fail $s "round $r: $(num "$sum" n_401) answers 401 for a valid token"
        fi
        echo "t_kill=$t_kill t_restart=$t_restart t_ready=$t_ready" >"$out/events"
    done
    check_panics $s "$logf" || true
    grep -qiE 'panicked' "$logf" && ok=0
    stop_server
    log "crash: recovery (restart → first 201) per round, ms: $rec_str"
    add_row "crash (${CRASH_ROUNDS}× kill -9)" "$req" "$ack" "$lost" "$dup" "$bad5" "$n503" "$n429" "$nconn" "-" \
        "$(ms_s "$rec_max") (max)" "$( ((ok)) && echo PASS || echo FAIL)"
}

# --- outage -------------------------------------------------------------------------------
outage() { # outage stop|freeze
    local mode="$1" s
    if [[ "$mode" == stop ]]; then
        s=outage
        section "outage: the database stopped for ${OUTAGE_SECS}s under load (private cluster on :$PG_PORT)"
    else
        s=freeze
        section "freeze: the database frozen (SIGSTOP) for ${OUTAGE_SECS}s under load (private cluster on :$PG_PORT)"
    fi
    local url logf token out cpid t_down t_down_done t_up t_up_done vline rc=0 aw ar sum ok=1
    mkdir -p "$PG_DIR"
    # One chaos run at a time per private cluster (fd 8; dev-db.sh uses 9).
    exec 8>"$PG_DIR.lock"
    flock -w 300 8 || { fail $s "another chaos run holds $PG_DIR.lock"; return; }
    PRIVATE_STARTED=1
    private_env _cdb_private_start || { fail $s "could not start the private cluster in $PG_DIR"; return; }
    # The dev cluster turns synchronous_commit off; a 2xx must mean durable here.
    PGCONNECT_TIMEOUT=5 "$PSQL" "$PRIVATE_URL/postgres" -w -X -q \
        -c "ALTER SYSTEM SET synchronous_commit = on" -c "SELECT pg_reload_conf()" >/dev/null ||
        { fail $s "cannot configure the private cluster"; return; }
    PRIVATE_DB="colloquy_chaos_$(rand_hex 5)"
    PGCONNECT_TIMEOUT=5 "$PSQL" "$PRIVATE_URL/postgres" -w -X -q -c "CREATE DATABASE $PRIVATE_DB" >/dev/null ||
        { fail $s "cannot create $PRIVATE_DB"; return; }
    url="$PRIVATE_URL/$PRIVATE_DB"
    logf="$RUN_DIR/$s-server.log"
    out="$RUN_DIR/$s"
    mkdir -p "$out"
    start_server "$url" 0 "$logf" || { fail $s "server did not start"; return; }
    token="$(create_team)" || { fail $s "could not create the team"; return; }
    # shellcheck disable=SC2086  # CHAOS_CLIENT_ARGS is a list of arguments
    "$CLIENT" load --base "$BASE" --token "$token" --run "$s-$RID" --out "$out" \
        --workers "$LOAD_WORKERS" --tickets 8 --new-every 25 --read-every 4 \
        --duration-secs 300 --stop-file "$out/stop" ${CHAOS_CLIENT_ARGS:-} >"$out/summary" 2>"$out/client.err" &
    cpid=$!
    CLIENT_PIDS+=("$cpid")
    sleep 3
    t_down="$(now_ms)"
    if [[ "$mode" == stop ]]; then
        private_env colloquy_db_stop_private || fail $s "pg_ctl stop failed"
    else
        # Every process of the private cluster (found by id: the postmaster and its children).
        local pm
        pm="$(head -n 1 "$PG_DIR/data/postmaster.pid")"
        # shellcheck disable=SC2207
        FROZEN_PIDS=("$pm" $(ps -o pid= --ppid "$pm"))
        kill -STOP "${FROZEN_PIDS[@]}"
    fi
    t_down_done="$(now_ms)"
    log "database $mode in $((t_down_done - t_down)) ms; down for ${OUTAGE_SECS}s"
    sleep "$OUTAGE_SECS"
    t_up="$(now_ms)"
    if [[ "$mode" == stop ]]; then
        private_env _cdb_private_start || fail $s "the private cluster did not start again"
    else
        kill -CONT "${FROZEN_PIDS[@]}" 2>/dev/null || true
        FROZEN_PIDS=()
    fi
    t_up_done="$(now_ms)"
    log "database back in $((t_up_done - t_up)) ms"
    # Keep the load on until the server has written again (at most 30 s), then 2 s more.
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        ar="$("$CLIENT" analyze --responses "$out/responses.tsv" --recovery-after-ms "$t_up_done" 2>/dev/null)" || true
        [[ "$(kv "$ar" recovery_ms)" =~ ^[0-9]+$ ]] && break
        sleep 0.5
    done
    sleep 2
    touch "$out/stop"
    wait "$cpid" || fail $s "the load client failed ($(tail -n 3 "$out/client.err"))"
    sum="$(cat "$out/summary")"
    aw="$("$CLIENT" analyze --responses "$out/responses.tsv" --from-ms "$t_down" --to-ms "$t_up_done")"
    ar="$("$CLIENT" analyze --responses "$out/responses.tsv" --recovery-after-ms "$t_up_done")"
    vline="$("$CLIENT" verify --db "$url" --acks "$out/acks.tsv" 2>"$out/verify.err")" || rc=$?
    log "whole run: $sum"
    log "sent while the database was down: $aw"
    log "after the database was back: $ar"
    log "verify: $vline"
    [[ -s "$out/verify.err" ]] && sed 's/^/  /' "$out/verify.err" | head -n 20 >&2
    echo "t_down=$t_down t_down_done=$t_down_done t_up=$t_up t_up_done=$t_up_done" >"$out/events"
    ((rc == 0)) || { ok=0; fail $s "verification failed: $vline"; }
    local all
    all="$("$CLIENT" analyze --responses "$out/responses.tsv")"
    (($(num "$all" bad_5xx) == 0)) || { ok=0; fail $s "$(num "$all" bad_5xx) 5xx answers other than 503"; }
    (($(num "$all" n_401) == 0)) || { ok=0; fail $s "$(num "$all" n_401) answers 401 for a valid token"; }
    (($(num "$all" slow_over_2s) == 0)) ||
        { ok=0; fail $s "$(num "$all" slow_over_2s) answers slower than 2 s (max $(num "$all" max_latency_ms) ms)"; }
    (($(num "$all" n_timeout) == 0)) || { ok=0; fail $s "$(num "$all" n_timeout) requests without an answer in 5 s"; }
    (($(num "$all" n_conn_error) == 0)) || { ok=0; fail $s "$(num "$all" n_conn_error) connection errors"; }
    local down503=$(($(num "$aw" n_503_unavailable) + $(num "$aw" n_503_overloaded)))
    ((down503 > 0)) || { ok=0; fail $s "no 503 while the database was down (was it down?)"; }
    (($(num "$aw" n_503_other) == 0)) || { ok=0; fail $s "503 with a code other than unavailable/overloaded"; }
    local rec
    rec="$(kv "$ar" recovery_ms)"
    [[ "$rec" =~ ^[0-9]+$ ]] || { ok=0; fail $s "no 201 after the database came back"; }
    kill -0 "$SERVER_PID" 2>/dev/null || { ok=0; fail $s "the server process died"; }
    check_panics $s "$logf"
    grep -qiE 'panicked' "$logf" && ok=0
    stop_server
    local label="outage (DB stopped ${OUTAGE_SECS} s)"
    [[ "$mode" == freeze ]] && label="freeze (DB SIGSTOP ${OUTAGE_SECS} s)"
    add_row "$label" "$(num "$sum" requests)" "$(num "$sum" acked)" \
        "$(num "$vline" lost)" "$(num "$vline" duplicates)" "$(num "$all" bad_5xx)" \
        "$(($(num "$all" n_503_unavailable) + $(num "$all" n_503_overloaded) + $(num "$all" n_503_other)))" \
        "$(num "$all" n_429)" "$(($(num "$all" n_conn_error) + $(num "$all" n_timeout)))" \
        "$(num "$aw" maxms_503_unavailable) ms" "$(ms_s "$rec")" "$( ((ok)) && echo PASS || echo FAIL)"
    PGCONNECT_TIMEOUT=5 "$PSQL" "$PRIVATE_URL/postgres" -w -X -q \
        -c "DROP DATABASE IF EXISTS $PRIVATE_DB WITH (FORCE)" >/dev/null 2>&1 && PRIVATE_DB=""
    private_env colloquy_db_stop_private >/dev/null 2>&1 || true
    PRIVATE_STARTED=0
    exec 8>&-
}

# --- overload -----------------------------------------------------------------------------
overload() {
    section "overload: $OVERLOAD_CONNS concurrent clients on 4 tickets for ${OVERLOAD_SECS}s"
    local s=overload url logf token out probe opid ppid t_end vline rc=0 sum all ar base_kb peak_kb hwm_end rss_end ok=1
    new_system_db || { fail $s "could not create a database"; return; }
    url="$DB_URL"
    logf="$RUN_DIR/overload-server.log"
    out="$RUN_DIR/overload/load"
    probe="$RUN_DIR/overload/probe"
    mkdir -p "$out" "$probe"
    start_server "$url" 0 "$logf" || { fail $s "server did not start"; return; }
    token="$(create_team)" || { fail $s "could not create the team"; return; }
    base_kb="$(rss_kb "$SERVER_PID")"
    (
        pk=0
        while kill -0 "$SERVER_PID" 2>/dev/null; do
            v="$(rss_kb "$SERVER_PID")"
            ((v > pk)) && { pk=$v; echo "$pk" >"$RUN_DIR/overload/peak_rss_kb"; }
            sleep 0.2
        done
    ) &
    SAMPLER_PID=$!
    "$CLIENT" load --base "$BASE" --token "$token" --run "probe-$RID" --out "$probe" \
        --workers 2 --tickets 1 --duration-secs 600 --stop-file "$probe/stop" \
        >"$probe/summary" 2>"$probe/client.err" &
    ppid=$!
    CLIENT_PIDS+=("$ppid")
    "$CLIENT" load --base "$BASE" --token "$token" --run "over-$RID" --out "$out" \
        --workers "$OVERLOAD_CONNS" --tickets 4 --new-every 50 --read-every 10 --backoff-ms 10 \
        --duration-secs "$OVERLOAD_SECS" >"$out/summary" 2>"$out/client.err" &
    opid=$!
    CLIENT_PIDS+=("$opid")
    wait "$opid" || fail $s "the overload client failed ($(tail -n 3 "$out/client.err"))"
    t_end="$(now_ms)"
    rss_end="$(rss_kb "$SERVER_PID")"
    # Recovery: the probe's first 201 sent after the load stopped (wait at most 30 s).
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        ar="$("$CLIENT" analyze --responses "$probe/responses.tsv" --recovery-after-ms "$t_end" 2>/dev/null)" || true
        [[ "$(kv "$ar" recovery_ms)" =~ ^[0-9]+$ ]] && break
        sleep 0.2
    done
    sleep 2
    touch "$probe/stop"
    wait "$ppid" || fail $s "the probe client failed ($(tail -n 3 "$probe/client.err"))"
    sleep 1
    hwm_end="$(hwm_kb "$SERVER_PID")"
    local rss_idle
    rss_idle="$(rss_kb "$SERVER_PID")"
    kill_pid "$SAMPLER_PID" KILL
    SAMPLER_PID=""
    peak_kb="$(cat "$RUN_DIR/overload/peak_rss_kb" 2>/dev/null || echo 0)"
    ((hwm_end > peak_kb)) && peak_kb=$hwm_end
    sum="$(cat "$out/summary")"
    all="$("$CLIENT" analyze --responses "$out/responses.tsv")"
    local pall
    pall="$("$CLIENT" analyze --responses "$probe/responses.tsv" --to-ms "$t_end")"
    ar="$("$CLIENT" analyze --responses "$probe/responses.tsv" --recovery-after-ms "$t_end")"
    vline="$("$CLIENT" verify --db "$url" --acks "$out/acks.tsv" --acks "$probe/acks.tsv" 2>"$out/verify.err")" || rc=$?
    log "overload clients: $all"
    log "probe during the overload: $pall"
    log "probe after the overload: $ar"
    log "RSS: before $((base_kb / 1024)) MiB, peak $((peak_kb / 1024)) MiB, at the end of the load $((rss_end / 1024)) MiB, idle after $((rss_idle / 1024)) MiB"
    log "verify: $vline"
    [[ -s "$out/verify.err" ]] && sed 's/^/  /' "$out/verify.err" | head -n 20 >&2
    echo "t_end=$t_end base_kb=$base_kb peak_kb=$peak_kb rss_end=$rss_end rss_idle=$rss_idle" >"$RUN_DIR/overload/events"
    OVERLOAD_NOTE="peak RSS $((peak_kb / 1024)) MiB (before $((base_kb / 1024)) MiB, idle after $((rss_idle / 1024)) MiB); status mix: $(printf '%s' "$all" | tr ' ' '\n' | grep '^n_' | tr '\n' ' ')"
    ((rc == 0)) || { ok=0; fail $s "verification failed: $vline"; }
    (($(num "$all" bad_5xx) == 0)) || { ok=0; fail $s "$(num "$all" bad_5xx) 5xx answers other than 503"; }
    (($(num "$all" n_401) == 0)) || { ok=0; fail $s "$(num "$all" n_401) answers 401 for a valid token"; }
    (($(num "$all" slow_over_2s) == 0)) ||
        { ok=0; fail $s "$(num "$all" slow_over_2s) of $(num "$all" requests) answers slower than 2 s (max $(num "$all" max_latency_ms) ms; client timeouts $(num "$all" n_timeout))"; }
    (($(num "$all" n_conn_error) == 0)) || { ok=0; fail $s "$(num "$all" n_conn_error) connection errors"; }
    ((peak_kb / 1024 <= RSS_LIMIT_MB)) || { ok=0; fail $s "peak RSS $((peak_kb / 1024)) MiB > $RSS_LIMIT_MB MiB"; }
    local rec
    rec="$(kv "$ar" recovery_ms)"
    [[ "$rec" =~ ^[0-9]+$ ]] || { ok=0; fail $s "the probe got no 201 within 30 s after the load stopped"; }
    kill -0 "$SERVER_PID" 2>/dev/null || { ok=0; fail $s "the server process died"; }
    check_panics $s "$logf"
    grep -qiE 'panicked' "$logf" && ok=0
    stop_server
    add_row "overload ($OVERLOAD_CONNS clients)" "$(num "$all" requests)" "$(num "$sum" acked)" \
        "$(num "$vline" lost)" "$(num "$vline" duplicates)" "$(num "$all" bad_5xx)" \
        "$(($(num "$all" n_503_unavailable) + $(num "$all" n_503_overloaded) + $(num "$all" n_503_other)))" \
        "$(num "$all" n_429)" "$(($(num "$all" n_conn_error) + $(num "$all" n_timeout)))" \
        "$(num "$all" maxms_503_overloaded) ms" "$(ms_s "$rec")" "$( ((ok)) && echo PASS || echo FAIL)"
}

# --- cluster (scripts/cluster.sh) ---------------------------------------------------------
cluster_cmd() { # cluster_cmd ARGS… — scripts/cluster.sh on this run's cluster directory
    # A private redis-server (when installed), which cluster-redis may kill.
    CLUSTER_DIR="$RUN_DIR/cluster" CLUSTER_NO_BUILD=1 CLUSTER_RELEASE="${CHAOS_RELEASE:-}" \
        CLUSTER_REDIS="$(command -v redis-server >/dev/null 2>&1 && echo private || echo off)" \
        "$ROOT/scripts/cluster.sh" "$@"
}

# cluster_up — starts the cluster once for both cluster scenarios; sets BASE (the load
# balancer), NODE_A_URL, NODE_B_URL, NODE_B_PID, CLUSTER_DB_URL, ADMIN_TOKEN_VALUE.
cluster_up() {
    if ((CLUSTER_STARTED)); then
        eval "$(cluster_cmd env)"
    else
        CLUSTER_STARTED=1
        cluster_cmd up 2>"$RUN_DIR/cluster-up.log" || { tail -n 20 "$RUN_DIR/cluster-up.log" >&2; return 1; }
        eval "$(cluster_cmd env)"
    fi
    BASE="$BASE_URL"
    ADMIN_TOKEN_VALUE="$ADMIN_TOKEN"
}

cluster_panics() { check_panics "$1" "$RUN_DIR/cluster/node-a.log" "$RUN_DIR/cluster/node-b.log"; }

cluster_kill() {
    section "cluster-kill: kill -9 one of two nodes behind HAProxy under load"
    local s=cluster-kill token out cpid t_kill t_restart vline rc=0 sum all aw ab aa ok=1
    cluster_up || { fail $s "the cluster did not start"; return; }
    token="$(create_team)" || { fail $s "could not create the team"; return; }
    out="$RUN_DIR/$s"
    mkdir -p "$out"
    # shellcheck disable=SC2086  # CHAOS_CLIENT_ARGS is a list of arguments
    "$CLIENT" load --base "$BASE" --token "$token" --run "$s-$RID" --out "$out" \
        --workers "$LOAD_WORKERS" --tickets 8 --new-every 25 --read-every 4 \
        --duration-secs 300 --stop-file "$out/stop" ${CHAOS_CLIENT_ARGS:-} >"$out/summary" 2>"$out/client.err" &
    cpid=$!
    CLIENT_PIDS+=("$cpid")
    sleep 3
    t_kill="$(now_ms)"
    kill -KILL "$NODE_B_PID" 2>/dev/null || fail $s "node b (pid $NODE_B_PID) was not running"
    log "node b (pid $NODE_B_PID) killed with SIGKILL; the load goes on through the load balancer"
    if ((SHORT)); then sleep 3; else sleep 6; fi
    t_restart="$(now_ms)"
    cluster_cmd start-node b 2>>"$RUN_DIR/cluster-up.log" || { ok=0; fail $s "node b did not start again"; }
    eval "$(cluster_cmd env)"
    sleep 3 # b back in the rotation (2 health checks) and serving
    touch "$out/stop"
    wait "$cpid" || fail $s "the load client failed ($(tail -n 3 "$out/client.err"))"
    sum="$(cat "$out/summary")"
    all="$("$CLIENT" analyze --responses "$out/responses.tsv")"
    # Requests sent from 1 s before the kill (in flight on b when it died) to 3 s after it (b
    # not yet out of the rotation) may fail; none before or after.
    ab="$("$CLIENT" analyze --responses "$out/responses.tsv" --to-ms "$((t_kill - 1000))")"
    aw="$("$CLIENT" analyze --responses "$out/responses.tsv" --from-ms "$((t_kill - 1000))" --to-ms "$((t_kill + 3000))" --recovery-after-ms "$t_kill")"
    aa="$("$CLIENT" analyze --responses "$out/responses.tsv" --from-ms "$((t_kill + 3000))")"
    vline="$("$CLIENT" verify --db "$CLUSTER_DB_URL" --acks "$out/acks.tsv" 2>"$out/verify.err")" || rc=$?
    log "whole run: $sum"
    log "sent from 1 s before to 3 s after the kill: $aw"
    log "verify: $vline"
    [[ -s "$out/verify.err" ]] && sed 's/^/  /' "$out/verify.err" | head -n 20 >&2
    ((rc == 0)) || { ok=0; fail $s "verification failed: $vline"; }
    (($(num "$ab" bad_5xx) + $(num "$aa" bad_5xx) == 0)) ||
        { ok=0; fail $s "5xx other than 503 outside the 3 s after the kill: $(($(num "$ab" bad_5xx) + $(num "$aa" bad_5xx)))"; }
    (($(num "$all" n_401) == 0)) || { ok=0; fail $s "$(num "$all" n_401) answers 401 for a valid token"; }
    (($(num "$ab" n_conn_error) + $(num "$ab" n_timeout) + $(num "$aa" n_conn_error) + $(num "$aa" n_timeout) == 0)) ||
        { ok=0; fail $s "connection errors or timeouts outside [kill - 1 s, kill + 3 s]"; }
    local rec
    rec="$(kv "$aw" recovery_ms)"
    [[ "$rec" =~ ^[0-9]+$ ]] || { ok=0; fail $s "no 201 after the kill"; }
    # Node b rejoined: its own census sees node a, and it answers.
    curl -fsS --max-time 2 -o /dev/null "$NODE_B_URL/readyz" || { ok=0; fail $s "node b does not answer after its restart"; }
    cluster_panics $s
    CLUSTER_NOTES+=("cluster-kill: $(num "$aw" requests) requests sent from 1 s before to 3 s after the kill: $(num "$aw" bad_5xx) 5xx (HAProxy's 502), $(($(num "$aw" n_conn_error) + $(num "$aw" n_timeout))) connection errors/timeouts (requests in flight on b; the client retries them with their idempotency key), max latency $(num "$aw" max_latency_ms) ms")
    add_row "cluster-kill (node b kill -9 behind HAProxy)" "$(num "$all" requests)" "$(num "$sum" acked)" \
        "$(num "$vline" lost)" "$(num "$vline" duplicates)" "$(num "$all" bad_5xx)" \
        "$(($(num "$all" n_503_unavailable) + $(num "$all" n_503_overloaded) + $(num "$all" n_503_other)))" \
        "$(num "$all" n_429)" "$(($(num "$all" n_conn_error) + $(num "$all" n_timeout)))" \
        "-" "$(ms_s "$rec") (first 201 after the kill)" "$( ((ok)) && echo PASS || echo FAIL)"
}

cluster_feed() {
    section "cluster-feed: both nodes' change-feed connections killed under load"
    local s=cluster-feed token out cpid p1 p2 t_kill vline rc=0 sum all ok=1 killed n st
    cluster_up || { fail $s "the cluster did not start"; return; }
    token="$(create_team)" || { fail $s "could not create the team"; return; }
    out="$RUN_DIR/$s"
    mkdir -p "$out"
    # Wait until both nodes trust their memory (after cluster-kill, b may still be starting).
    local deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
        [[ "$(cluster_status "$NODE_A_URL" | jq -r .memory_trusted)$(cluster_status "$NODE_B_URL" | jq -r .memory_trusted)" == truetrue ]] && break
        sleep 0.2
    done
    # shellcheck disable=SC2086  # CHAOS_CLIENT_ARGS is a list of arguments
    "$CLIENT" load --base "$BASE" --token "$token" --run "$s-$RID" --out "$out" \
        --workers "$LOAD_WORKERS" --tickets 8 --new-every 25 --read-every 4 \
        --duration-secs 300 --stop-file "$out/stop" ${CHAOS_CLIENT_ARGS:-} >"$out/summary" 2>"$out/client.err" &
    cpid=$!
    CLIENT_PIDS+=("$cpid")
    "$PROBE" --write "$NODE_A_URL" --read "$NODE_B_URL" --token "$token" --tickets 2 \
        --duration-secs 300 --stop-file "$out/stop" --out "$out/probe-ab.tsv" >"$out/probe-ab" 2>&1 &
    p1=$!
    "$PROBE" --write "$NODE_B_URL" --read "$NODE_A_URL" --token "$token" --tickets 2 \
        --duration-secs 300 --stop-file "$out/stop" --out "$out/probe-ba.tsv" >"$out/probe-ba" 2>&1 &
    p2=$!
    CLIENT_PIDS+=("$p1" "$p2")
    sleep 3
    local before_a before_b
    before_a="$(cluster_status "$NODE_A_URL" | jq -r .times_distrusted)"
    before_b="$(cluster_status "$NODE_B_URL" | jq -r .times_distrusted)"
    t_kill="$(now_ms)"
    killed="$(PGCONNECT_TIMEOUT=5 "$PSQL" "$CLUSTER_DB_URL" -w -X -q -tA -c \
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'colloquy-feed' AND datname = current_database()")" ||
        killed=0
    log "terminated $killed feed connection(s)"
    ((killed == 2)) || { ok=0; fail $s "expected 2 feed connections to terminate, found $killed"; }
    # Recovery: each node distrusted its memory (times_distrusted went up) and trusts it again.
    local rec_a="" rec_b="" deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)) && [[ -z "$rec_a" || -z "$rec_b" ]]; do
        st="$(cluster_status "$NODE_A_URL")"
        if [[ -z "$rec_a" && "$(jq -r '.memory_trusted and .feed_healthy' <<<"$st")" == true ]] &&
            (($(jq -r .times_distrusted <<<"$st") > before_a)); then rec_a=$(($(now_ms) - t_kill)); fi
        st="$(cluster_status "$NODE_B_URL")"
        if [[ -z "$rec_b" && "$(jq -r '.memory_trusted and .feed_healthy' <<<"$st")" == true ]] &&
            (($(jq -r .times_distrusted <<<"$st") > before_b)); then rec_b=$(($(now_ms) - t_kill)); fi
        sleep 0.05
    done
    [[ -n "$rec_a" ]] || { ok=0; fail $s "node a did not trust its memory again within 30 s (or never noticed the loss)"; }
    [[ -n "$rec_b" ]] || { ok=0; fail $s "node b did not trust its memory again within 30 s (or never noticed the loss)"; }
    # The nodes' own account (their logs): from the feed's loss to memory trusted again.
    local own_a own_b
    own_a="$(feed_recovery_ms "$RUN_DIR/cluster/node-a.log")"
    own_b="$(feed_recovery_ms "$RUN_DIR/cluster/node-b.log")"
    log "memory trusted again (seen through /api/ops/cluster, polled from before the kill): node a ${rec_a:-never} ms, node b ${rec_b:-never} ms"
    log "feed lost → memory trusted again (the nodes' logs): node a ${own_a} ms, node b ${own_b} ms"
    sleep 2
    touch "$out/stop"
    wait "$cpid" || fail $s "the load client failed ($(tail -n 3 "$out/client.err"))"
    for n in "$p1" "$p2"; do wait "$n" || true; done
    sum="$(cat "$out/summary")"
    all="$("$CLIENT" analyze --responses "$out/responses.tsv")"
    vline="$("$CLIENT" verify --db "$CLUSTER_DB_URL" --acks "$out/acks.tsv" 2>"$out/verify.err")" || rc=$?
    log "whole run: $sum"
    log "probe a→b: $(cat "$out/probe-ab")"
    log "probe b→a: $(cat "$out/probe-ba")"
    log "verify: $vline"
    ((rc == 0)) || { ok=0; fail $s "verification failed: $vline"; }
    (($(num "$all" bad_5xx) == 0)) || { ok=0; fail $s "$(num "$all" bad_5xx) 5xx answers other than 503"; }
    (($(num "$all" n_401) == 0)) || { ok=0; fail $s "$(num "$all" n_401) answers 401 for a valid token"; }
    local pl stale=0 samples=0
    for pl in "$(cat "$out/probe-ab")" "$(cat "$out/probe-ba")"; do
        stale=$((stale + $(num "$pl" stale) + $(num "$pl" never)))
        samples=$((samples + $(num "$pl" samples)))
    done
    ((samples > 0)) || { ok=0; fail $s "the feed probes got no samples"; }
    ((stale == 0)) || { ok=0; fail $s "$stale stale reads (acknowledged on one node, not answered by the other within 1 s)"; }
    # Stale reads around the kill: the samples acknowledged in [kill - 1 s, recovery + 1 s].
    local win_max
    win_max="$(cat "$out/probe-ab.tsv" "$out/probe-ba.tsv" 2>/dev/null | awk -v a=$((t_kill - 1000)) \
        -v b=$((t_kill + ${rec_a:-0} + ${rec_b:-0} + 1000)) '$1 >= a && $1 <= b { if ($2 > m) m = $2; n++ } END { printf "%d samples, max %.1f ms", n, m }')"
    cluster_panics $s
    CLUSTER_NOTES+=("cluster-feed: feed lost → memory trusted again (node logs): node a ${own_a} ms, node b ${own_b} ms; seen through /api/ops/cluster (polling from before pg_terminate_backend, an upper bound): node a ${rec_a:-never} ms, node b ${rec_b:-never} ms; probes a→b: $(cat "$out/probe-ab"); b→a: $(cat "$out/probe-ba"); around the kill: $win_max")
    add_row "cluster-feed (feed connections killed)" "$(num "$all" requests)" "$(num "$sum" acked)" \
        "$(num "$vline" lost)" "$(num "$vline" duplicates)" "$(num "$all" bad_5xx)" \
        "$(($(num "$all" n_503_unavailable) + $(num "$all" n_503_overloaded) + $(num "$all" n_503_other)))" \
        "$(num "$all" n_429)" "$(($(num "$all" n_conn_error) + $(num "$all" n_timeout)))" \
        "-" "$own_a / $own_b ms (feed lost → trusted, a / b)" \
        "$( ((ok)) && echo PASS || echo FAIL)"
}

feed_recovery_ms() { # feed_recovery_ms LOG — ms from the last "change feed lost" to the next "answering reads from memory"
    local lost back
    lost="$(grep -a 'change feed lost' "$1" | tail -n 1 | cut -d' ' -f1)"
    [[ -n "$lost" ]] || { echo never-lost; return; }
    back="$(awk -v t="$lost" '$1 > t && /answering reads from memory/ { print $1; exit }' "$1")"
    [[ -n "$back" ]] || { echo never; return; }
    echo $(( $(date -d "$back" +%s%3N) - $(date -d "$lost" +%s%3N) ))
}

cluster_status() { curl -sS --max-time 2 -H "Authorization: Bearer $ADMIN_TOKEN_VALUE" "$1/api/ops/cluster" 2>/dev/null || echo '{}'; }

# log_ms_after T LOG PATTERN — ms from T (epoch ms) to the first line of LOG matching
# PATTERN stamped after T, or "never".
log_ms_after() {
    local line at
    while IFS= read -r line; do
        at="$(date -d "${line%% *}" +%s%3N 2>/dev/null)" || continue
        if ((at >= $1)); then
            echo $((at - $1))
            return 0
        fi
    done < <(grep -a "$3" "$2")
    echo never
}

# budgets_mode URL — the node's rate budget mode (local, cluster, fallback) or "?".
budgets_mode() {
    curl -sS --max-time 2 -H "Authorization: Bearer $ADMIN_TOKEN_VALUE" "$1/api/ops/actors" 2>/dev/null |
        jq -r '.rate_limit_budgets.mode // "?"' 2>/dev/null || echo '?'
}

# until_modes MODE SECS — waits until both nodes report MODE; prints the ms it took (or "never").
until_modes() {
    local t0 deadline
    t0="$(now_ms)" deadline=$(($(now_ms) + $2 * 1000))
    while (($(now_ms) < deadline)); do
        if [[ "$(budgets_mode "$NODE_A_URL") $(budgets_mode "$NODE_B_URL")" == "$1 $1" ]]; then
            echo $(($(now_ms) - t0))
            return 0
        fi
        sleep 0.05
    done
    echo never
    return 1
}

# limited_posts TOKEN N — N POSTs by one fresh visitor through the load balancer; prints
# "CREATED OTHER" (201s, and answers neither 201 nor 429).
limited_posts() {
    local who i code created=0 other=0
    who="redis-probe-$(rand_hex 6)@example.com"
    for ((i = 0; i < $2; i++)); do
        code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 3 -X POST "$BASE/api/conversations/widget/message" \
            -H "X-Conversations-Token: $1" -H 'Content-Type: application/json' \
            -d "{\"distinct_id\":\"$who\",\"message\":\"probe $i\"}" 2>/dev/null)" || code=000
        case "$code" in 201) created=$((created + 1)) ;; 429) ;; *) other=$((other + 1)) ;; esac
    done
    echo "$created $other"
}

cluster_redis() {
    section "cluster-redis: the nodes' Redis killed for ${REDIS_DOWN_SECS}s under load"
    local s=cluster-redis token limited out cpid t_kill vline rc=0 sum all ok=1 down_ms up_ms during after
    local seen_ms down_a down_b d
    cluster_up || { fail $s "the cluster did not start"; return; }
    [[ -n "${REDIS_PID:-}" ]] || { fail $s "the cluster has no private redis-server (install Debian's redis-server)"; return; }
    token="$(create_team)" || { fail $s "could not create the team"; return; }
    limited="$(curl -fsS --max-time 10 -X POST "$BASE/api/teams" \
        -H "Authorization: Bearer $ADMIN_TOKEN_VALUE" -H 'Content-Type: application/json' \
        -d '{"name":"chaos-limited","rate_limits":{"message_distinct_id_per_minute":10}}' | jq -er .public_token)" ||
        { fail $s "could not create the limited team"; return; }
    until_modes cluster 10 >/dev/null || { fail $s "the nodes do not use Redis before the kill"; return; }
    out="$RUN_DIR/$s"
    mkdir -p "$out"
    # shellcheck disable=SC2086  # CHAOS_CLIENT_ARGS is a list of arguments
    "$CLIENT" load --base "$BASE" --token "$token" --run "$s-$RID" --out "$out" \
        --workers "$LOAD_WORKERS" --tickets 8 --new-every 25 --read-every 4 \
        --duration-secs 300 --stop-file "$out/stop" ${CHAOS_CLIENT_ARGS:-} >"$out/summary" 2>"$out/client.err" &
    cpid=$!
    CLIENT_PIDS+=("$cpid")
    sleep 2
    t_kill="$(now_ms)"
    kill -KILL "$REDIS_PID" 2>/dev/null || fail $s "redis-server (pid $REDIS_PID) was not running"
    log "redis-server (pid $REDIS_PID) killed with SIGKILL; the load goes on"
    seen_ms="$(until_modes fallback 5)" || { ok=0; fail $s "the nodes did not report fallback budgets"; }
    # When each node switched (its warning's timestamp); the API poll above is an upper bound.
    down_a="$(log_ms_after "$t_kill" "$RUN_DIR/cluster/node-a.log" 'shared rate budgets unreachable')"
    down_b="$(log_ms_after "$t_kill" "$RUN_DIR/cluster/node-b.log" 'shared rate budgets unreachable')"
    for d in "$down_a" "$down_b"; do
        [[ "$d" =~ ^[0-9]+$ ]] && ((d <= 1000)) || { ok=0; fail $s "fallback budgets ${d} ms after the kill (> 1 s)"; }
    done
    down_ms="$down_a / $down_b"
    during="$(limited_posts "$limited" 20)"
    sleep "$(awk -v t="$REDIS_DOWN_SECS" -v e="$(($(now_ms) - t_kill))" 'BEGIN { r = t - e / 1000; print (r > 0 ? r : 0) }')"
    cluster_cmd start-redis 2>>"$RUN_DIR/cluster-up.log" || { ok=0; fail $s "redis-server did not start again"; }
    up_ms="$(until_modes cluster 10)" || { ok=0; fail $s "the nodes did not go back to Redis budgets"; }
    after="$(limited_posts "$limited" 20)"
    sleep 2
    touch "$out/stop"
    wait "$cpid" || fail $s "the load client failed ($(tail -n 3 "$out/client.err"))"
    sum="$(cat "$out/summary")"
    all="$("$CLIENT" analyze --responses "$out/responses.tsv" --recovery-after-ms "$t_kill")"
    vline="$("$CLIENT" verify --db "$CLUSTER_DB_URL" --acks "$out/acks.tsv" 2>"$out/verify.err")" || rc=$?
    log "whole run: $sum"
    log "verify: $vline"
    log "limited team, 20 POSTs by one visitor: during the outage ${during% *} created, after it ${after% *}"
    ((rc == 0)) || { ok=0; fail $s "verification failed: $vline"; }
    local n5xx=$(($(num "$all" bad_5xx) + $(num "$all" n_503_unavailable) + $(num "$all" n_503_overloaded) + $(num "$all" n_503_other)))
    ((n5xx == 0)) || { ok=0; fail $s "$n5xx answers 5xx under the load"; }
    ((${during#* } + ${after#* } == 0)) || { ok=0; fail $s "the limited team's POSTs got answers other than 201/429"; }
    ((${during% *} >= 8 && ${during% *} <= 12)) ||
        { ok=0; fail $s "during the outage ${during% *} of 20 admitted (each node 10 / 2 live nodes: about 10)"; }
    ((${after% *} >= 10 && ${after% *} <= 11)) ||
        { ok=0; fail $s "after Redis returned ${after% *} of 20 admitted (limit 10: at most 11)"; }
    cluster_panics $s
    CLUSTER_NOTES+=("cluster-redis: fallback budgets $down_ms ms after the kill (node logs, a / b; seen through /api/ops/actors on both within $seen_ms ms), Redis budgets again $up_ms ms after the restart (seen through the API); 20 POSTs by one visitor (limit 10/min): ${during% *} admitted during the outage, ${after% *} after it")
    add_row "cluster-redis (Redis kill -9, ${REDIS_DOWN_SECS}s)" "$(num "$all" requests)" "$(num "$sum" acked)" \
        "$(num "$vline" lost)" "$(num "$vline" duplicates)" "$(num "$all" bad_5xx)" \
        "$(($(num "$all" n_503_unavailable) + $(num "$all" n_503_overloaded) + $(num "$all" n_503_other)))" \
        "$(num "$all" n_429)" "$(($(num "$all" n_conn_error) + $(num "$all" n_timeout)))" \
        "-" "${down_ms} ms to fallback (a / b), ${up_ms} ms back" "$( ((ok)) && echo PASS || echo FAIL)"
}

# --- run ----------------------------------------------------------------------------------
T0=$SECONDS
OVERLOAD_NOTE=""
[[ ",$ONLY," == *,crash,* ]] && crash
[[ ",$ONLY," == *,outage,* ]] && outage stop
[[ ",$ONLY," == *,freeze,* ]] && outage freeze
[[ ",$ONLY," == *,overload,* ]] && overload
[[ ",$ONLY," == *,cluster-kill,* ]] && cluster_kill
[[ ",$ONLY," == *,cluster-feed,* ]] && cluster_feed
[[ ",$ONLY," == *,cluster-redis,* ]] && cluster_redis
if ((CLUSTER_STARTED)); then
    cluster_cmd down >/dev/null 2>&1 || log "could not stop the cluster in $RUN_DIR/cluster"
    CLUSTER_STARTED=0
fi

section "results ($(( SECONDS - T0 )) s; $( ((SHORT)) && echo short || echo full) run, $PROFILE_DIR build, $(nproc) cores)"
{
    echo "| scenario | requests | acknowledged | lost | duplicates | 5xx (non-503) | 503 | 429 | conn err/timeout | max 503 latency | recovery | result |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for r in "${ROWS[@]}"; do printf '| %s\n' "${r//|/ | }"; done
} | sed 's/ | $/ |/'
[[ -n "$OVERLOAD_NOTE" ]] && printf '\noverload: %s\n' "$OVERLOAD_NOTE"
for note in "${CLUSTER_NOTES[@]}"; do printf '\n%s\n' "$note"; done
if ((FAILED)); then
    printf '\nFAILED checks:\n' >&2
    for f in "${FAILS[@]}"; do printf '  - %s\n' "$f" >&2; done
    exit 1
fi
printf '\nall checks passed\n' >&2
