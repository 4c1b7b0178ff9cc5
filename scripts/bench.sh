#!/usr/bin/env bash
# scripts/bench.sh — colloquy's benchmark, one command.
#
# Builds colloquy, the hello-world floor (examples/hello.rs), the SSE client
# (examples/sse_hold.rs) and the SSE floor (examples/sse_floor.rs) in release mode, finds a
# PostgreSQL server (scripts/dev-db.sh, else 127.0.0.1:5432), recreates the database
# `colloquy_bench`, starts colloquy on it, creates the bench teams through the admin API (rate
# limits raised), bulk-seeds thousands of teams and tens of thousands of tickets of ~20
# messages with SQL (bench/seed.sql), then runs, at each concurrency:
#
#   post-spread   POST follow-ups spread over many tickets        ceiling: pgbench bench/pgbench/post_tx.sql
#   post-hot      POST follow-ups to 4 hot tickets                ceiling: the same on those 4 tickets
#   poll-tail     GET messages, after = tail (nothing new: memory) ceiling: hello-world (HTTP floor)
#   poll-new      GET messages, after = 10 messages back (database) ceiling: pgbench bench/pgbench/page_query.sql
#   tickets       GET tickets of a visitor (4 tickets)             reference: hello-world
#   v1-mix        posthog-js surface: 9 polls at the tail : 1 send  reference: hello-world; sends vs post_tx.sql
#
# and once (each after a restart of colloquy):
#
#   memory        100,000 live ticket actors: RSS before/after polling each ticket once
#   sse-memory    10,000 open SSE streams (4 per ticket): RSS before/after, bytes per stream;
#                 floor: the same streams on examples/sse_floor.rs (actix-web alone)
#
# and, only when named in BENCH_LOADS, on scripts/cluster.sh's topology (two nodes with
# CHANGE_FEED=postgres on the bench database, HAProxy round-robin in front; the single node is
# stopped meanwhile), through the load balancer:
#
#   cluster-post-spread  the post-spread load      reference: post-spread on one node, same run
#   cluster-poll-tail    the poll-tail load        reference: poll-tail on one node, same run
#                        (every tail ticket warmed on both nodes first)
#   cluster-feed         the post-spread load again, with examples/feed_probe.rs writing through
#                        node a and tail-polling node b: the feed's write-to-visible latency
#                        p50/p99 under that load (and stale reads: none allowed)
#   lb-post-spread       post-spread through the same HAProxy in front of the single node
#   lb-poll-tail         poll-tail likewise: the balancer's own cost (scripts/cluster.sh lb-only)
#
# (cluster-post-spread and cluster-poll-tail add their single-node load when it is not named.)
#
# with wrk (bench/lua/*.lua), pgbench and examples/sse_hold.rs, sampling colloquy's RSS (VmHWM
# reset through /proc/PID/clear_refs when allowed, plus VmRSS sampling), and writes
# BENCHMARKS.md with the sections and targets of the loads that ran.
#
# Usage:
#   scripts/bench.sh            full run (~12 minutes after the build), rewrites BENCHMARKS.md
#   scripts/bench.sh --instructions
#                               work per request without machine noise: a fixed count of tail
#                               polls and POSTs (after a warm-up) under valgrind's callgrind,
#                               against colloquy and the hello-world floor; instructions per
#                               request and their ratio, written into BENCHMARKS.md's
#                               "Work per request" section (small data set; ~5 minutes)
#   scripts/bench.sh --smoke    CI smoke run (BENCH_SMOKE=1): tiny data, 2 s per point at c=1
#                               and 8; writes the report to a temp file and prints it; exits
#                               non-zero on any non-2xx answer, socket error, or wrk/pgbench
#                               failure
#
# Environment (optional):
#   BENCH_SMOKE=1           same as --smoke
#   BENCH_LOADS             the loads to run, space-separated, from: post-spread post-hot
#                           poll-tail poll-new tickets v1-mix memory sse-memory (default: all;
#                           hello-world runs whenever poll-tail, tickets or v1-mix does); the
#                           report has only their sections and targets. A BENCH_OUT is advised
#                           with a subset, or the full run's BENCHMARKS.md is overwritten
#   BENCH_DURATION          seconds per load point (full 10, smoke 2)
#   BENCH_CONCURRENCY       e.g. "1 8 64 256" (smoke "1 8")
#   BENCH_VISITORS          bench visitors, 4 tickets each (full 25000 = 100k tickets; smoke 256)
#   BENCH_BULK_TEAMS        other teams, 20 tickets each (full 2000; smoke 1)
#   BENCH_V1_SESSIONS       posthog-js widget sessions, 1 ticket each, for v1-mix (default
#                           BENCH_VISITORS / 2; seeded only when v1-mix runs)
#   BENCH_V1_POLLS          v1-mix: polls per send (default 9)
#   BENCH_SSE_STREAMS       sse-memory: streams held open at once (full 10000; smoke 200)
#   BENCH_SSE_PER_TICKET    sse-memory: streams per ticket (default 4)
#   BENCH_OUT               report path (full: BENCHMARKS.md; smoke: a temp file)
#   BENCH_KEEP=1            keep the database and the run directory (wrk/pgbench outputs, logs)
#   BENCH_DB_NAME           the database to recreate (default colloquy_bench)
#   DATABASE_POOL_SIZE, WORKERS, RUST_LOG   passed to colloquy (defaults 8, cores, info)
#   BENCH_NO_BUILD=1        skip `cargo build` and use the binaries already built
#   CARGO_TARGET_DIR        default ~/.cache/colloquy/target
#   BENCH_INSTR_POLLS, BENCH_INSTR_POSTS, BENCH_INSTR_WARMUP, BENCH_INSTR_CONNS
#                           --instructions: measured tail polls (2000), POSTs (1000), warm-up
#                           requests before each (500), keep-alive connections (4)
#
# Needs: cargo, psql, pgbench, wrk (installed with apt-get when missing and running as root),
# curl, jq. sse-memory raises the open-file limit (ulimit -n) up to the hard limit for
# colloquy and the client; with a hard limit below the streams + 1024 it holds fewer streams
# (and says so).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquy/target}"

SMOKE="${BENCH_SMOKE:-0}"
INSTR=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        --instructions) INSTR=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done
[[ "$SMOKE" == 1 ]] || SMOKE=0

if ((INSTR)); then
    # --instructions counts work per request, not throughput: a small data set will do
    SMOKE=0 BENCH_VISITORS="${BENCH_VISITORS:-256}" BENCH_BULK_TEAMS="${BENCH_BULK_TEAMS:-1}"
    BENCH_LOADS="${BENCH_LOADS:- }"
fi
if ((SMOKE)); then
    D="${BENCH_DURATION:-2}"
    CONC="${BENCH_CONCURRENCY:-1 8}"
    NV="${BENCH_VISITORS:-256}"
    BULK_TEAMS="${BENCH_BULK_TEAMS:-1}"
    SSE_N="${BENCH_SSE_STREAMS:-200}"
else
    D="${BENCH_DURATION:-10}"
    CONC="${BENCH_CONCURRENCY:-1 8 64 256}"
    NV="${BENCH_VISITORS:-25000}"
    BULK_TEAMS="${BENCH_BULK_TEAMS:-2000}"
    SSE_N="${BENCH_SSE_STREAMS:-10000}"
fi
SSE_K="${BENCH_SSE_PER_TICKET:-4}"
V1_POLLS="${BENCH_V1_POLLS:-9}"
for v in SSE_N SSE_K V1_POLLS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || {
        echo "bench: $v must be a positive integer" >&2
        exit 2
    }
done

ALL_LOADS="post-spread post-hot poll-tail poll-new tickets v1-mix memory sse-memory"
CLUSTER_LOADS="cluster-post-spread cluster-poll-tail cluster-feed lb-post-spread lb-poll-tail" # opt-in (BENCH_LOADS)
LOADS="${BENCH_LOADS:-$ALL_LOADS}"
# A cluster ratio needs its single-node load in the same run.
[[ " $LOADS " == *" cluster-post-spread "* && " $LOADS " != *" post-spread "* ]] && LOADS="$LOADS post-spread"
[[ " $LOADS " == *" cluster-poll-tail "* && " $LOADS " != *" poll-tail "* ]] && LOADS="$LOADS poll-tail"
[[ " $LOADS " == *" lb-post-spread "* && " $LOADS " != *" post-spread "* ]] && LOADS="$LOADS post-spread"
[[ " $LOADS " == *" lb-poll-tail "* && " $LOADS " != *" poll-tail "* ]] && LOADS="$LOADS poll-tail"
for l in $LOADS; do
    [[ " $ALL_LOADS $CLUSTER_LOADS " == *" $l "* ]] || {
        echo "bench: unknown load '$l' in BENCH_LOADS (loads: $ALL_LOADS $CLUSTER_LOADS)" >&2
        exit 2
    }
done
((INSTR)) || [[ -n "${LOADS// /}" ]] || {
    echo "bench: BENCH_LOADS names no load (loads: $ALL_LOADS)" >&2
    exit 2
}
want() { [[ " $LOADS " == *" $1 "* ]]; }
NEED_HELLO=0
if want poll-tail || want tickets || want v1-mix; then NEED_HELLO=1; fi
NV1=0
if want v1-mix; then NV1="${BENCH_V1_SESSIONS:-$((NV / 2))}"; fi
if want v1-mix && ! [[ "$NV1" =~ ^[0-9]+$ && "$NV1" -ge 4 ]]; then
    echo "bench: BENCH_V1_SESSIONS must be a number of at least 4" >&2
    exit 2
fi
BULK_TPT=20
MSGS=20
DB_NAME="${BENCH_DB_NAME:-colloquy_bench}" # another name lets two runs share a server
((INSTR)) && DB_NAME=colloquy_bench_instr # may run beside a throughput run
ADMIN_TOKEN="bench-admin-token-$(date +%s)-0123456789"
POOL="${DATABASE_POOL_SIZE:-8}"
NPROC="$(nproc)"
WORKERS_N="${WORKERS:-$NPROC}"

log() { printf '\033[1mbench:\033[0m [%4ss] %s\n' "$SECONDS" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Visitor ranges (visitor v owns tickets 4v..4v+3 in bench team v % 4): disjoint sets so that
# writes never move the tails the polls use. Unit U is a multiple of 4.
U=$(((NV / 64) / 4 * 4))
((U >= 4)) || die "BENCH_VISITORS must be at least 256"
POST_LO=0 POST_N=$((16 * U))
HOT_V=$((16 * U))
TAIL_LO=$((20 * U)) TAIL_N=$((12 * U))
PAGE_LO=$((32 * U)) PAGE_N=$((16 * U))
TICK_LO=$((48 * U)) TICK_N=$((16 * U))

# ---------------------------------------------------------------------------------- tools
if ! command -v wrk >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "wrk not found: apt-get install -y wrk"
        DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; } ||
            die "could not install wrk"
    else
        die "wrk not found (Debian: sudo apt-get install wrk)"
    fi
fi
for tool in cargo psql pgbench curl jq; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

RUN="$(mktemp -d "${TMPDIR:-/tmp}/colloquy-bench.XXXXXX")"
if ((SMOKE)); then
    OUT="${BENCH_OUT:-$RUN/BENCHMARKS.smoke.md}"
else
    OUT="${BENCH_OUT:-$ROOT/BENCHMARKS.md}"
fi
export BENCH_LUA_DIR="$ROOT/bench/lua"

# ---------------------------------------------------------------------------------- cleanup
COLLOQUY_PID="" HELLO_PID="" SAMPLER_PID="" WALK_PID="" SSE_PID="" FLOOR_PID="" FLOOR_HOLD_PID=""
ADMIN_URL="" FAILURES=()
stop_pid() { # PID [seconds]
    local pid="$1" secs="${2:-20}" i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "process $pid did not stop in ${secs}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$SAMPLER_PID" 2
    stop_pid "$WALK_PID" 5
    stop_pid "$SSE_PID" 5
    stop_pid "$FLOOR_HOLD_PID" 5
    stop_pid "$FLOOR_PID" 5
    stop_pid "$HELLO_PID" 5
    stop_pid "$COLLOQUY_PID" 30
    [[ -d "$RUN/cluster" ]] && CLUSTER_DIR="$RUN/cluster" "$ROOT/scripts/cluster.sh" down >/dev/null 2>&1
    if [[ -n "$ADMIN_URL" && "${BENCH_KEEP:-0}" != 1 ]]; then
        psql "$ADMIN_URL" -X -q -w -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        log "kept the run directory $RUN and the database $DB_NAME"
    elif ((SMOKE)) && [[ "$OUT" == "$RUN/"* ]]; then
        # the smoke report was printed; drop everything else of the run
        find "$RUN" -mindepth 1 ! -name "$(basename "$OUT")" -delete 2>/dev/null || true
    else
        rm -rf "$RUN"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------- build
if [[ "${BENCH_NO_BUILD:-0}" == 1 ]]; then
    log "BENCH_NO_BUILD=1: using the binaries already in $CARGO_TARGET_DIR/release"
else
    log "building (release): colloquy, examples/hello, examples/sse_hold and examples/sse_floor"
    cargo build --release --quiet --bin colloquy --example hello --example sse_hold --example sse_floor
fi
BIN="$CARGO_TARGET_DIR/release/colloquy"
HELLO="$CARGO_TARGET_DIR/release/examples/hello"
SSE_HOLD="$CARGO_TARGET_DIR/release/examples/sse_hold"
SSE_FLOOR="$CARGO_TARGET_DIR/release/examples/sse_floor"
[[ -x "$BIN" && -x "$HELLO" ]] || die "build produced no $BIN / $HELLO"
if want sse-memory && [[ ! -x "$SSE_HOLD" || ! -x "$SSE_FLOOR" ]]; then
    die "no $SSE_HOLD or $SSE_FLOOR (BENCH_NO_BUILD=1: cargo build --release --example sse_hold --example sse_floor first)"
fi
BUILD_NOTE=""
if [[ "${BENCH_NO_BUILD:-0}" == 1 ]]; then
    BUILD_NOTE=" (BENCH_NO_BUILD=1: binary built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'), possibly from another tree state than the commit named above)"
fi

# ---------------------------------------------------------------------------------- database
if [[ -f "$ROOT/scripts/dev-db.sh" ]]; then
    set +eu
    # shellcheck source=/dev/null
    source "$ROOT/scripts/dev-db.sh"
    found=$?
    set -eu
    ((found == 0)) || die "scripts/dev-db.sh found no PostgreSQL server"
else
    export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
fi
url_for() { # URL NAME: the URL with its database replaced
    if [[ "$1" =~ ^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?]*)(/[^?]*)?(\?.*)?$ ]]; then
        printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$2" "${BASH_REMATCH[3]}"
    else
        die "cannot parse database URL $1"
    fi
}
ADMIN_URL="$(url_for "$DATABASE_URL" postgres)"
DB_URL="$(url_for "$DATABASE_URL" "$DB_NAME")"
PSQL=(psql -X -q -w -v ON_ERROR_STOP=1)
"${PSQL[@]}" "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
"${PSQL[@]}" "$ADMIN_URL" -c "CREATE DATABASE $DB_NAME" >/dev/null
log "database $(url_for "$DATABASE_URL" "$DB_NAME" | sed 's|//[^@]*@|//|')"
pgq() { "${PSQL[@]}" "$DB_URL" -tAc "$1"; }

# ---------------------------------------------------------------------------------- servers
# Open files: colloquy, wrk and the SSE client inherit this shell's limit. sse-memory needs a
# descriptor per stream in colloquy and in the client, plus the pool, wrk's and the logs'.
NOFILE_HARD="$(ulimit -Hn)"
[[ "$NOFILE_HARD" == unlimited ]] && NOFILE_HARD=1048576
NOFILE_WANT=$((SSE_N + 4096 > 65536 ? SSE_N + 4096 : 65536))
NOFILE_WANT=$((NOFILE_WANT < NOFILE_HARD ? NOFILE_WANT : NOFILE_HARD))
NOFILE="$(ulimit -Sn)"
if [[ "$NOFILE" != unlimited ]] && ((NOFILE < NOFILE_WANT)); then
    ulimit -Sn "$NOFILE_WANT" 2>/dev/null || true
    NOFILE="$(ulimit -Sn)"
fi
[[ "$NOFILE" == unlimited ]] && NOFILE=1048576
SSE_NOTE=""
if want sse-memory && ((SSE_N + 1024 > NOFILE)); then
    SSE_NOTE="only $((NOFILE - 1024)) of the $SSE_N streams asked for: the open-file limit is $NOFILE (\`ulimit -Hn\` $(ulimit -Hn))"
    log "sse-memory: $SSE_NOTE"
    SSE_N=$((NOFILE - 1024))
    ((SSE_N > 0)) || die "the open-file limit ($NOFILE) is too low for sse-memory"
fi

PORT=""
start_colloquy() {
    # a restart keeps the previous process's log for the error check at the end
    [[ -s "$RUN/colloquy.log" ]] && cat "$RUN/colloquy.log" >>"$RUN/colloquy.previous.log"
    : >"$RUN/colloquy.log"
    # sse-memory holds all its streams from 127.0.0.1, 2,500 per bench team: the SSE caps
    # (100 per IP by default) are raised above that load.
    DATABASE_URL="$DB_URL" BIND=127.0.0.1:0 ADMIN_TOKEN="$ADMIN_TOKEN" \
        DATABASE_POOL_SIZE="$POOL" WORKERS="$WORKERS_N" RUST_LOG="${RUST_LOG:-info}" \
        STREAMS_PER_IP=1000000 STREAMS_PER_TEAM=1000000 STREAMS_TOTAL=1000000 \
        LOG_FORMAT=text "$BIN" serve >>"$RUN/colloquy.log" 2>&1 &
    COLLOQUY_PID=$!
    PORT="$(wait_port "$COLLOQUY_PID" "$RUN/colloquy.log")" || {
        tail -n 20 "$RUN/colloquy.log" >&2
        die "colloquy did not start"
    }
    BASE="http://127.0.0.1:$PORT"
}
wait_port() { # PID LOGFILE: prints the port once "listening on http://…:PORT" is logged
    local pid="$1" file="$2" i port
    for ((i = 0; i < 600; i++)); do
        port="$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening on http:\/\/[^ ]*:\([0-9][0-9]*\).*/\1/p' "$file" | head -n 1)"
        if [[ -n "$port" ]]; then
            printf '%s\n' "$port"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

log "starting colloquy (migrates $DB_NAME)"
start_colloquy
log "colloquy pid $COLLOQUY_PID on $BASE (pool $POOL, workers $WORKERS_N, open files $NOFILE)"

# ---------------------------------------------------------------------------------- seed
log "creating 4 bench teams through POST /api/teams (rate limits raised)"
declare -a TEAM_ID
LIMITS='"rate_limits":{"message_distinct_id_per_minute":100000000,"message_ip_per_minute":100000000,"message_team_per_hour":100000000,"read_distinct_id_per_minute":100000000,"widget_session_per_minute":100000000,"team_reads_per_hour":100000000,"team_writes_per_hour":100000000,"widget_ip_per_minute":100000000}'
# All load comes from 127.0.0.1, a few visitors writing thousands of messages a second: the
# suspicion detector would (rightly) block the IP. Its rules still run, with zero weights.
SUSPICION='"suspicion":{"weights":{"honeypot":0,"repeated_message":0,"repeated_across_visitors":0,"link_density":0,"enumeration":0,"rate_limited":0,"burst_after_creation":0}}'
SUSPICION_NOTE="suspicion weights set to 0 for the bench teams (no automatic IP blocks)"
for i in 0 1 2 3; do
    resp="$(curl -sS -X POST "$BASE/api/teams" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' -d "{\"name\":\"Bench team $i\",$LIMITS,$SUSPICION}")" || true
    if [[ "$(jq -r '.field // empty' <<<"$resp" 2>/dev/null)" == suspicion* ]]; then
        # a build without per-team suspicion settings
        SUSPICION_NOTE="no per-team suspicion settings in this build"
        resp="$(curl -sS -X POST "$BASE/api/teams" -H "Authorization: Bearer $ADMIN_TOKEN" \
            -H 'Content-Type: application/json' -d "{\"name\":\"Bench team $i\",$LIMITS}")" || true
    fi
    jq -e '.id and .public_token' >/dev/null 2>&1 <<<"$resp" || die "POST /api/teams failed: $resp"
    TEAM_ID[i]="$(jq -r .id <<<"$resp")"
done

log "seeding: $BULK_TEAMS bulk teams x $BULK_TPT tickets, $NV bench visitors x 4 tickets, $NV1 posthog-js tickets, $MSGS messages each"
t0=$SECONDS
"${PSQL[@]}" "$DB_URL" -v bulk_teams="$BULK_TEAMS" -v bulk_tpt="$BULK_TPT" -v nv="$NV" \
    -v nv1="$NV1" -v msgs="$MSGS" -v team0="${TEAM_ID[0]}" -v team1="${TEAM_ID[1]}" \
    -v team2="${TEAM_ID[2]}" -v team3="${TEAM_ID[3]}" -f "$ROOT/bench/seed.sql"
"${PSQL[@]}" "$DB_URL" -c "VACUUM (ANALYZE) teams, ticket_counters, tickets, messages" -c "CHECKPOINT"
read -r N_TEAMS N_TICKETS N_MESSAGES <<<"$(pgq "SELECT (SELECT count(*) FROM teams), (SELECT count(*) FROM tickets), (SELECT count(*) FROM messages)" | tr '|' ' ')"
SEED_SECS=$((SECONDS - t0))
log "seeded $N_TEAMS teams, $N_TICKETS tickets, $N_MESSAGES messages in ${SEED_SECS}s"

hexid() { printf '00000000-0000-4000-8000-%012x' "$1"; }
export_set() { # NAME FIRST_VISITOR VISITORS: ticket rows for the wrk scripts
    local lo hi
    lo="$(hexid $((4 * $2)))"
    hi="$(hexid $((4 * ($2 + $3))))"
    "${PSQL[@]}" "$DB_URL" -c "\\copy (SELECT t.id, t.distinct_id, tm.public_token,
        to_char(t.last_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
        to_char((t.last_created_at - interval '10 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
        FROM tickets t JOIN teams tm ON tm.id = t.team_id
        WHERE t.id >= '$lo' AND t.id < '$hi' ORDER BY t.id) TO '$RUN/$1.tsv'"
    [[ -s "$RUN/$1.tsv" ]] || die "no rows for set $1"
}
export_set post "$POST_LO" "$POST_N"
export_set hot "$HOT_V" 1
export_set tail "$TAIL_LO" "$TAIL_N"
export_set page "$PAGE_LO" "$PAGE_N"
export_set visitors "$TICK_LO" "$TICK_N"
export_set all 0 "$NV"
if want v1-mix; then
    # posthog-js tickets (bench/seed.sql): the widget_session_id in the visitor column, and
    # created_at as the v1 surface writes it (…123456+00:00), which the SDK sends back as after
    "${PSQL[@]}" "$DB_URL" -c "\\copy (SELECT t.id, t.widget_session_id, tm.public_token,
        to_char(t.last_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'),
        to_char((t.last_created_at - interval '10 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')
        FROM tickets t JOIN teams tm ON tm.id = t.team_id
        WHERE t.id >= '00000000-0000-4000-a000-000000000000' AND t.id < '00000000-0000-4000-b000-000000000000'
          AND t.widget_session_id IS NOT NULL ORDER BY t.id) TO '$RUN/v1.tsv'"
    [[ -s "$RUN/v1.tsv" ]] || die "no posthog-js tickets were seeded"
fi

# ---------------------------------------------------------------------------------- instructions
# --instructions: user-space instructions per request under valgrind's callgrind, which do not
# depend on the machine's speed or on what else runs on it. colloquy (and then the hello-world
# floor) runs under callgrind; examples/reqload.rs sends a warm-up, then `callgrind_control -z`
# zeroes the counters, then a fixed count of requests from a few keep-alive connections; then
# `callgrind_control -d` dumps the counts. The same wall time with no requests is measured
# right after (timers: heartbeats, re-authorisation of streams, metrics), and reported apart.
INSTR_POLLS="${BENCH_INSTR_POLLS:-2000}" INSTR_POSTS="${BENCH_INSTR_POSTS:-1000}"
INSTR_WARMUP="${BENCH_INSTR_WARMUP:-500}" INSTR_CONNS="${BENCH_INSTR_CONNS:-4}"
callgrind_start() { # NAME VAR=VALUE… CMD…: sets CG_PID and CG_PORT
    local name="$1" i vars=()
    shift
    while [[ "$1" == *=* ]]; do
        vars+=("$1")
        shift
    done
    : >"$RUN/$name.log"
    env "${vars[@]}" valgrind --tool=callgrind --callgrind-out-file="$RUN/cg-$name.out" "$@" >>"$RUN/$name.log" 2>&1 &
    CG_PID=$!
    for ((i = 0; i < 1200; i++)); do
        CG_PORT="$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening on http:\/\/[^ ]*:\([0-9][0-9]*\).*/\1/p' "$RUN/$name.log" | head -n 1)"
        [[ -n "$CG_PORT" ]] && return 0
        kill -0 "$CG_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$RUN/$name.log" >&2
    die "$name did not start under callgrind"
}
callgrind_dump() { # NAME -> prints the instructions counted since the last zeroing
    local f
    callgrind_control -d "$CG_PID" >/dev/null 2>&1 || die "callgrind_control -d $CG_PID failed"
    f="$(ls -t "$RUN/cg-$1.out".* 2>/dev/null | head -n 1)"
    [[ -n "$f" ]] || die "no callgrind dump for $1"
    awk '/^(totals|summary):/ {print $2; exit}' "$f"
}
instr_phase() { # NAME MODE DATA COUNT: sets I_IR (per request), I_IDLE (per request), I_FILE
    local name="$1" mode="$2" data="$3" count="$4" out secs total idle
    out="$RUN/reqload-$name-$mode.txt"
    "$REQLOAD" "127.0.0.1:$CG_PORT" "$mode" "$data" "$INSTR_WARMUP" "$count" "$INSTR_CONNS" \
        "callgrind_control -z $CG_PID >/dev/null 2>&1" >"$out" 2>&1 || {
        cat "$out" >&2
        die "reqload $mode against $name failed"
    }
    total="$(callgrind_dump "$name")"
    [[ "$total" =~ ^[0-9]+$ ]] || die "no instruction count from callgrind for $name $mode"
    I_FILE="$(ls -t "$RUN/cg-$name.out".* | head -n 1)"
    mv "$I_FILE" "$RUN/cg-$name-$mode.busy" && I_FILE="$RUN/cg-$name-$mode.busy"
    secs="$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' "$out")"
    callgrind_control -z "$CG_PID" >/dev/null 2>&1
    sleep "$secs"
    idle="$(callgrind_dump "$name")"
    [[ "$idle" =~ ^[0-9]+$ ]] || die "no idle instruction count from callgrind for $name $mode"
    f="$(ls -t "$RUN/cg-$name.out".* 2>/dev/null | head -n 1)"
    [[ -n "$f" ]] && mv "$f" "$RUN/cg-$name-$mode.idle"
    rm -f "$RUN/cg-$name.out".*
    I_IR="$(awk -v t="$total" -v n="$count" 'BEGIN {printf "%.0f", t / n}')"
    I_IDLE="$(awk -v t="$idle" -v n="$count" 'BEGIN {printf "%.0f", t / n}')"
    log "instructions: $name $mode: $I_IR per request ($count in ${secs}s; idle for as long: $I_IDLE per request)"
}
run_instructions() {
    command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
        die "--instructions needs valgrind (Debian: apt-get install valgrind)"
    REQLOAD="$CARGO_TARGET_DIR/release/examples/reqload"
    if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
        cargo build --release --quiet --example reqload
    fi
    [[ -x "$REQLOAD" ]] || die "no $REQLOAD (cargo build --release --example reqload)"
    local c_poll c_poll_idle c_post c_post_idle h_poll h_poll_idle
    stop_pid "$COLLOQUY_PID" 30
    COLLOQUY_PID=""
    log "instructions: colloquy under callgrind"
    callgrind_start colloquy DATABASE_URL="$DB_URL" BIND=127.0.0.1:0 ADMIN_TOKEN="$ADMIN_TOKEN" \
        DATABASE_POOL_SIZE="$POOL" WORKERS="$WORKERS_N" RUST_LOG="${RUST_LOG:-info}" LOG_FORMAT=text "$BIN" serve
    COLLOQUY_PID="$CG_PID"
    instr_phase colloquy poll "$RUN/tail.tsv" "$INSTR_POLLS"
    c_poll="$I_IR" c_poll_idle="$I_IDLE"
    instr_phase colloquy post "$RUN/post.tsv" "$INSTR_POSTS"
    c_post="$I_IR" c_post_idle="$I_IDLE"
    stop_pid "$COLLOQUY_PID" 60
    COLLOQUY_PID=""
    log "instructions: the hello-world floor under callgrind"
    callgrind_start hello BIND=127.0.0.1:0 WORKERS="$WORKERS_N" "$HELLO"
    HELLO_PID="$CG_PID"
    instr_phase hello poll "$RUN/tail.tsv" "$INSTR_POLLS"
    h_poll="$I_IR" h_poll_idle="$I_IDLE"
    # no POST to the floor: it answers without reading the body, and actix then closes the
    # connection (a keep-alive load cannot run)
    stop_pid "$HELLO_PID" 30
    HELLO_PID=""
    local ratio section
    ratio="$(awk -v a="$c_poll" -v b="$h_poll" 'BEGIN {printf "%.2f", a / b}')"
    section="$RUN/instructions.md"
    {
        echo "<!-- instructions:begin (scripts/bench.sh --instructions rewrites this section) -->"
        echo "## Work per request (instructions, \`scripts/bench.sh --instructions\`)"
        echo
        echo "Measured on $(date -u '+%Y-%m-%d %H:%M UTC'), colloquy \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$( [[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] || echo ' (working tree with uncommitted changes)'):"
        echo "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), $NPROC cores, kernel $(uname -r), clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown), $(valgrind --version)."
        echo "User-space instructions of the whole server process (all threads) under \`valgrind --tool=callgrind\`,"
        echo "counted after a warm-up of $INSTR_WARMUP requests (counters zeroed with \`callgrind_control -z\`), for $INSTR_POLLS tail polls"
        echo "(\`bench/lua/messages.lua\`'s requests, nothing new) and $INSTR_POSTS POSTs (\`bench/lua/post.lua\`'s follow-ups, spread set) sent by"
        echo "\`examples/reqload.rs\` over $INSTR_CONNS keep-alive connections, one request in flight on each; the hello-world floor"
        echo "(\`examples/hello.rs\`) is sent the same requests. \"idle\" is what the process ran in the same wall time with"
        echo "no requests, per request (timers), included in the first figure. Data: $N_TICKETS tickets; \`WORKERS=$WORKERS_N\`, \`RUST_LOG=${RUST_LOG:-info}\`."
        echo
        echo "| request | colloquy instr/request | (idle) | net of idle | hello-world instr/request | (idle) | ratio | target |"
        echo "|---|---:|---:|---:|---:|---:|---:|---|"
        echo "| tail poll | $c_poll | $c_poll_idle | $((c_poll - c_poll_idle)) | $h_poll | $h_poll_idle | $ratio× | ≤ 1.5× hello-world: $(awk -v a="$ratio" 'BEGIN {print (a <= 1.5 ? "**met**" : "**not met**")}') |"
        echo "| POST (follow-up) | $c_post | $c_post_idle | $((c_post - c_post_idle)) | - | - | - | ≤ 120k: $(awk -v a="$c_post" 'BEGIN {print (a <= 120000 ? "**met**" : "**not met**")}') |"
        echo
        echo "\"idle\" varies with the wall time the requests took (the process's timers ran meanwhile: ticket actors, sweeps,"
        echo "heartbeats), so on a loaded machine the first figure grows; \"net of idle\" is the steadier one. The floor's"
        echo "\`memset\` (actix-http zeroes a 3 KiB header index on every decode call, \`rep stosb\`, which callgrind counts per"
        echo "byte) is about 6.2k of its instructions per request, in both servers."
        echo
        echo "<!-- instructions:end -->"
    } >"$section"
    cat "$section"
    local out="${BENCH_OUT:-$ROOT/BENCHMARKS.md}"
    if [[ -f "$out" ]] && grep -q '^<!-- instructions:begin' "$out"; then
        awk -v f="$section" '/^<!-- instructions:begin/ {while ((getline l < f) > 0) print l; skip = 1; next}
            /^<!-- instructions:end/ {skip = 0; next} !skip' "$out" >"$out.tmp"
    elif [[ -f "$out" ]] && grep -q '^## Targets' "$out"; then
        awk -v f="$section" '/^## Targets/ && !done {while ((getline l < f) > 0) print l; print ""; done = 1} 1' "$out" >"$out.tmp"
    else
        { [[ -f "$out" ]] && cat "$out" && echo; cat "$section"; } >"$out.tmp"
    fi
    mv "$out.tmp" "$out"
    log "wrote the instructions section into $out"
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        log "callgrind profiles: $RUN/cg-*.busy (callgrind_annotate --inclusive=yes FILE)"
    fi
}
if ((INSTR)); then
    run_instructions
    exit 0
fi

HELLO_PORT=""
if ((NEED_HELLO)); then
    log "starting the hello-world floor"
    : >"$RUN/hello.log"
    BIND=127.0.0.1:0 WORKERS="$WORKERS_N" "$HELLO" >>"$RUN/hello.log" 2>&1 &
    HELLO_PID=$!
    HELLO_PORT="$(wait_port "$HELLO_PID" "$RUN/hello.log")" || die "hello did not start"
fi

# ---------------------------------------------------------------------------------- measuring
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$COLLOQUY_PID/status" 2>/dev/null || echo 0; }
CAN_CLEAR_REFS=0
if echo 5 >"/proc/$COLLOQUY_PID/clear_refs" 2>/dev/null; then CAN_CLEAR_REFS=1; fi
start_sampler() {
    if ((CAN_CLEAR_REFS)); then echo 5 >"/proc/$COLLOQUY_PID/clear_refs" 2>/dev/null || true; fi
    (
        max=0
        while :; do
            r="$(awk '/^VmRSS:/ {print $2}' "/proc/$COLLOQUY_PID/status" 2>/dev/null)" || exit 0
            [[ -n "$r" ]] || exit 0
            if ((r > max)); then
                max=$r
                echo "$max" >"$RUN/rss.max"
            fi
            sleep 0.1
        done
    ) &
    SAMPLER_PID=$!
}
stop_sampler() { # sets RSS_PEAK_KB: the peak RSS since start_sampler
    local hwm sampled
    stop_pid "$SAMPLER_PID" 2
    SAMPLER_PID=""
    sampled="$(cat "$RUN/rss.max" 2>/dev/null || echo 0)"
    rm -f "$RUN/rss.max"
    hwm=0
    if ((CAN_CLEAR_REFS)); then
        hwm="$(awk '/^VmHWM:/ {print $2}' "/proc/$COLLOQUY_PID/status" 2>/dev/null || echo 0)"
    fi
    RSS_PEAK_KB=$((hwm > sampled ? hwm : sampled))
}

fail() {
    FAILURES+=("$*")
    log "FAIL: $*"
}

# run_wrk NAME LUA DATA C [ENV=VALUE…]: one wrk load point against URL $TARGET (default colloquy);
# sets R_* (rps, p50_ms, p99_ms, max_ms, mean_ms, non2xx, s5xx, sock, rss_mb).
run_wrk() {
    local name="$1" lua="$2" data="$3" c="$4" t out rc
    shift 4
    t=$((c < 2 ? 1 : 2))
    out="$RUN/wrk-$name-c$c.txt"
    [[ "${TARGET:-colloquy}" == colloquy ]] && start_sampler
    rc=0
    env BENCH_DATA="$data" BENCH_THREADS="$t" "$@" \
        wrk --latency -t"$t" -c"$c" -d"${D}s" --timeout 5s -s "$ROOT/bench/lua/$lua" \
        "${URL:-$BASE}/" >"$out" 2>&1 || rc=$?
    R_rss_mb="-"
    if [[ "${TARGET:-colloquy}" == colloquy ]]; then
        stop_sampler
        R_rss_mb="$(awk -v k="$RSS_PEAK_KB" 'BEGIN {printf "%.1f", k / 1024}')"
    fi
    parse_wrk "$out" "$rc" "$name c=$c" "$c"
}
parse_wrk() { # FILE RC LABEL [C]
    local line
    line="$(grep '^BENCH_RESULT ' "$1" | tail -n 1 || true)"
    R_line="$line"
    if [[ "$2" != 0 || -z "$line" ]]; then
        fail "wrk failed for $3 (rc $2): $(tail -n 3 "$1" | tr '\n' ' ')"
        R_rps=0 R_p50_ms=0 R_p99_ms=0 R_max_ms=0 R_mean_ms=0 R_non2xx=0 R_s5xx=0 R_sock=0 R_requests=0 R_codes=""
        return 0
    fi
    # shellcheck disable=SC2034 # mean_us: set by the eval, kept local
    local requests duration_us mean_us p50_us p99_us max_us non2xx s5xx s4xx sock_errors ok
    eval "$(tr ' ' '\n' <<<"${line#BENCH_RESULT }" | grep -E '^[a-z0-9_]+=[0-9.]+$' | sed 's/^/local /')"
    R_codes="$(sed -n 's/.* codes=\([^ ]*\).*/\1/p' <<<"$line" | sed 's/^-$//')"
    # req/s counts 2xx answers only; the rest is in the errors column
    ok=$((requests - non2xx))
    R_requests="$requests"
    R_rps="$(awk -v r="$ok" -v d="$duration_us" 'BEGIN {printf "%.0f", (d > 0 ? r / (d / 1e6) : 0)}')"
    R_p50_ms="$(awk -v x="$p50_us" 'BEGIN {printf "%.2f", x / 1000}')"
    R_p99_ms="$(awk -v x="$p99_us" 'BEGIN {printf "%.2f", x / 1000}')"
    R_max_ms="$(awk -v x="$max_us" 'BEGIN {printf "%.2f", x / 1000}')"
    # The mean by Little's law, C × duration / requests: what pgbench reports as "latency
    # average". wrk's own mean (mean_us) is kept in the raw output only: on a loaded 2-core VM
    # its per-request samples can add up to more than the run's wall time.
    R_mean_ms="$(awk -v c="${4:-1}" -v d="$duration_us" -v r="$requests" 'BEGIN {printf "%.3f", (r > 0 ? c * d / r / 1000 : 0)}')"
    R_non2xx="$non2xx" R_s5xx="$s5xx" R_sock="$sock_errors"
    if ((s5xx > 0)); then
        fail "$3: $s5xx answers were 5xx"
    fi
    if ((SMOKE)) && ((non2xx + sock_errors > 0)); then
        fail "$3: $non2xx non-2xx answers (4xx $s4xx), $sock_errors socket errors"
    fi
}

# result_rate NAME: a script's extra counter in the last BENCH_RESULT line, per second
result_rate() {
    awk -v name="$1" '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%.0f", (v["duration_us"] > 0 ? v[name] / (v["duration_us"] / 1e6) : 0)
    }' <<<"${R_line:-BENCH_RESULT}"
}

# run_pgbench NAME SQL C VLO VCNT: sets P_tps, P_lat_ms, P_c (the clients actually used)
PG_MAX_C=""
run_pgbench() {
    local name="$1" sql="$2" c="$3" j out rc
    if [[ -z "$PG_MAX_C" ]]; then
        PG_MAX_C="$(pgq "SELECT current_setting('max_connections')::int - (SELECT count(*) FROM pg_stat_activity) - 10")"
    fi
    P_c=$((c < PG_MAX_C ? c : PG_MAX_C))
    j=$((P_c < 2 ? 1 : 2))
    out="$RUN/pgbench-$name-c$c.txt"
    rc=0
    pgbench -n -M prepared -c "$P_c" -j "$j" -T "$D" -f "$ROOT/bench/pgbench/$sql" \
        -D team="${TEAM_ID[0]}" -D vlo="$4" -D vcnt="$5" -D msgs="$MSGS" "$DB_URL" >"$out" 2>&1 || rc=$?
    P_tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out" | head -n 1)"
    P_lat_ms="$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out" | head -n 1)"
    if [[ "$rc" != 0 || -z "$P_tps" ]] || grep -q '^number of failed transactions: [1-9]' "$out"; then
        fail "pgbench $name c=$c failed (rc $rc): $(grep -iE 'error|abort|failed' "$out" | head -n 3 | tr '\n' ' ')"
        P_tps="${P_tps:-0}" P_lat_ms="${P_lat_ms:-0}"
    fi
    P_tps="$(awk -v x="$P_tps" 'BEGIN {printf "%.0f", x}')"
}

pglabel() { # UNIT C: the ceiling's label, naming pgbench's client count when capped
    if [[ "$P_c" == "$2" ]]; then echo "pgbench $1"; else echo "pgbench $1 (c=$P_c)"; fi
}

RESULTS="$RUN/results.tsv"
: >"$RESULTS"
record() { # LOAD C CEILING_LABEL CEILING_VALUE CEILING_LAT_MS
    local ratio="-"
    if [[ "$4" != "-" ]] && awk -v x="$4" 'BEGIN {exit !(x > 0)}'; then
        ratio="$(awk -v a="$R_rps" -v b="$4" 'BEGIN {printf "%.2f", a / b}')"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$R_rps" "$R_p50_ms" \
        "$R_p99_ms" "$R_max_ms" "$R_non2xx" "$R_s5xx" "$R_sock" "$R_rss_mb" "$3" "$4" "$ratio" \
        "$R_mean_ms|${5:-}" "${R_codes:-}" >>"$RESULTS"
    log "$(printf '%-12s c=%-4s %8s req/s  p50 %7s ms  p99 %7s ms  max %8s ms  non-2xx %s (5xx %s) sock %s  RSS %s MB  ceiling %s %s  ratio %s' \
        "$1" "$2" "$R_rps" "$R_p50_ms" "$R_p99_ms" "$R_max_ms" "$R_non2xx" "$R_s5xx" "$R_sock" "$R_rss_mb" "$3" "$4" "$ratio")"
}

# walk SET [ENV…]: poll every ticket of a set once (warm-up / memory), at c=32
walk() {
    local set="$1" out rc=0 i
    shift
    out="$RUN/walk-$set.txt"
    # wrk's main thread sleeps for -d whatever its threads do: each thread leaves a file when
    # it has polled its share, and SIGINT (wrk's Ctrl-C) then ends the run with its report.
    rm -f "$RUN/walk.done".*
    env BENCH_DATA="$RUN/$set.tsv" BENCH_THREADS=2 BENCH_DONE="$RUN/walk.done" "$@" \
        wrk -t2 -c32 -d600s --timeout 5s -s "$ROOT/bench/lua/walk.lua" "$BASE/" >"$out" 2>&1 &
    WALK_PID=$!
    for ((i = 0; i < 6000; i++)); do
        [[ -e "$RUN/walk.done.1" && -e "$RUN/walk.done.2" ]] && break
        kill -0 "$WALK_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -INT "$WALK_PID" 2>/dev/null || true
    wait "$WALK_PID" || rc=$?
    WALK_PID=""
    parse_wrk "$out" "$rc" "walk $set"
    log "walked $set: $R_requests polls, $R_rps/s, non-2xx $R_non2xx"
}

# ---------------------------------------------------------------------------------- loads
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average $LOAD_START; loads: $LOADS"
if want poll-tail || want poll-new || want v1-mix; then
    log "warm-up: one poll of every ticket of the poll sets (their actors go live)"
fi
want poll-tail && walk tail
want poll-new && walk page
want v1-mix && walk v1 BENCH_SURFACE=v1

declare -A HELLO_RPS V1_SENDS V1_POLLS_OK V1_PG V1_PG_LABEL
hello_at() { # C: the HTTP floor at this concurrency, sent exactly the poll-tail requests
    TARGET=hello URL="http://127.0.0.1:$HELLO_PORT" run_wrk hello messages.lua "$RUN/tail.tsv" "$1" BENCH_AFTER=tail
    HELLO_RPS[$1]="$R_rps"
    record hello "$1" - - ""
}
# With poll-tail, the floor runs right before each poll-tail point (as the pgbench ceilings
# run right before their loads), so both see the machine in the same state.
if ((NEED_HELLO)) && ! want poll-tail; then
    for c in $CONC; do hello_at "$c"; done
fi

if want post-spread; then
    for c in $CONC; do
        run_pgbench post-spread post_tx.sql "$c" "$POST_LO" "$POST_N"
        run_wrk post-spread post.lua "$RUN/post.tsv" "$c"
        record post-spread "$c" "$(pglabel tx/s "$c")" "$P_tps" "$P_lat_ms"
    done
fi
if want post-hot; then
    for c in $CONC; do
        run_pgbench post-hot post_tx.sql "$c" "$HOT_V" 4
        run_wrk post-hot post.lua "$RUN/hot.tsv" "$c"
        record post-hot "$c" "$(pglabel tx/s "$c")" "$P_tps" "$P_lat_ms"
    done
fi
if (want post-spread || want post-hot) && (want poll-tail || want poll-new || want tickets || want v1-mix); then
    # The write loads leave dirty pages and dead tuples behind: flush them now, so the read
    # loads do not share the cores with the checkpointer they caused.
    log "checkpoint after the write loads"
    pgq "CHECKPOINT" >/dev/null
    sleep 3
fi
if want poll-tail; then
    for c in $CONC; do
        hello_at "$c"
        run_wrk poll-tail messages.lua "$RUN/tail.tsv" "$c" BENCH_AFTER=tail
        record poll-tail "$c" "hello req/s" "${HELLO_RPS[$c]}" ""
    done
fi
if want poll-new; then
    for c in $CONC; do
        run_pgbench poll-new page_query.sql "$c" "$PAGE_LO" "$PAGE_N"
        run_wrk poll-new messages.lua "$RUN/page.tsv" "$c" BENCH_AFTER=mid
        record poll-new "$c" "$(pglabel q/s "$c")" "$P_tps" "$P_lat_ms"
    done
fi
if want tickets; then
    for c in $CONC; do
        run_wrk tickets tickets.lua "$RUN/visitors.tsv" "$c"
        record tickets "$c" "hello req/s" "${HELLO_RPS[$c]}" ""
    done
fi
if want v1-mix; then
    for c in $CONC; do
        # the ceiling of the sends: the transaction one send commits, on the documented
        # surface's POST set (the same statements; the v1 tickets differ only in their key)
        run_pgbench v1-mix post_tx.sql "$c" "$POST_LO" "$POST_N"
        V1_PG[$c]="$P_tps" V1_PG_LABEL[$c]="$(pglabel tx/s "$c" | sed 's/^pgbench //')"
        run_wrk v1-mix v1mix.lua "$RUN/v1.tsv" "$c" BENCH_V1_POLLS="$V1_POLLS"
        V1_SENDS[$c]="$(result_rate sends)" V1_POLLS_OK[$c]="$(result_rate polls)"
        record v1-mix "$c" "hello req/s" "${HELLO_RPS[$c]}" ""
        log "v1-mix       c=$c: ${V1_POLLS_OK[$c]} polls/s + ${V1_SENDS[$c]} sends/s (pgbench post_tx ${V1_PG[$c]} tx/s)"
        if ((SMOKE)) && [[ "${V1_SENDS[$c]}" == 0 || "${V1_POLLS_OK[$c]}" == 0 ]]; then
            fail "v1-mix c=$c: no answered sends or no answered polls ($R_line)"
        fi
    done
fi

alive() { curl -sS -H "Authorization: Bearer $ADMIN_TOKEN" "$BASE/api/ops/actors" | jq -r '.ticket_actors.alive'; }
streams_open() { curl -sS -H "Authorization: Bearer $ADMIN_TOKEN" "$BASE/metrics" | awk '$1 == "colloquy_sse_streams_open" {print $2; exit}'; }
restart_colloquy() { # a fresh process, its HTTP workers and pool warmed without ticket actors
    stop_pid "$COLLOQUY_PID" 60
    start_colloquy
    wrk -t2 -c32 -d2s "$BASE/readyz" >/dev/null 2>&1 || true
    sleep 1
}

# ------------------------------------------------------------------- one node behind HAProxy
# The cluster's HAProxy configuration (scripts/cluster.sh lb-only) in front of the single
# node: what the balancer's hop costs by itself, to tell it from what the cluster costs.
single_rps() { awk -F'\t' -v l="$1" -v c="$2" '$1 == l && $2 == c { v = $3 } END { print v + 0 }' "$RESULTS"; }
if want lb-post-spread || want lb-poll-tail; then
    lb_sh() { CLUSTER_DIR="$RUN/lb" "$ROOT/scripts/cluster.sh" "$@"; }
    if LB_ONLY_URL="$(lb_sh lb-only "${BASE#http://}" 2>"$RUN/lb-up.log")"; then
        log "one node behind HAProxy: $LB_ONLY_URL -> $BASE"
        if want lb-post-spread; then
            for c in $CONC; do
                TARGET=lb URL="$LB_ONLY_URL" run_wrk lb-post-spread post.lua "$RUN/post.tsv" "$c"
                record lb-post-spread "$c" "one node req/s" "$(single_rps post-spread "$c")" ""
            done
        fi
        if want lb-poll-tail; then
            for c in $CONC; do
                TARGET=lb URL="$LB_ONLY_URL" run_wrk lb-poll-tail messages.lua "$RUN/tail.tsv" "$c" BENCH_AFTER=tail
                record lb-poll-tail "$c" "one node req/s" "$(single_rps poll-tail "$c")" ""
            done
        fi
    else
        fail "scripts/cluster.sh lb-only failed: $(tail -n 3 "$RUN/lb-up.log" | tr '\n' ' ')"
    fi
    lb_sh down 2>>"$RUN/lb-up.log" || true
fi

# ---------------------------------------------------------------------------------- cluster
# Two nodes behind HAProxy on the same (seeded) database: scripts/cluster.sh.
CLUSTER_ROWS=()
if want cluster-post-spread || want cluster-poll-tail || want cluster-feed; then
    if [[ "${BENCH_NO_BUILD:-0}" != 1 ]] && want cluster-feed; then
        cargo build --release --quiet --example feed_probe
    fi
    FEED_PROBE="$CARGO_TARGET_DIR/release/examples/feed_probe"
    want cluster-feed && [[ ! -x "$FEED_PROBE" ]] && die "no $FEED_PROBE (cargo build --release --example feed_probe)"
    log "cluster: stopping the single node; two nodes and HAProxy on $DB_NAME (scripts/cluster.sh)"
    stop_pid "$COLLOQUY_PID" 60
    COLLOQUY_PID=""
    SINGLE_BASE="$BASE"
    cluster_sh() {
        CLUSTER_DIR="$RUN/cluster" CLUSTER_RELEASE=1 CLUSTER_NO_BUILD=1 CLUSTER_DATABASE_URL="$DB_URL" \
            DATABASE_POOL_SIZE="$POOL" WORKERS="$WORKERS_N" RUST_LOG="${RUST_LOG:-info}" \
            "$ROOT/scripts/cluster.sh" "$@"
    }
    if cluster_sh up 2>"$RUN/cluster-up.log"; then
        eval "$(cluster_sh env | grep -E '^export (BASE_URL|NODE_A_URL|NODE_B_URL)=')"
        CLUSTER_ADMIN="$(cluster_sh env | sed -n 's/^export ADMIN_TOKEN=//p')"
        LB_URL="$BASE_URL"
        log "cluster: load balancer $LB_URL, nodes $NODE_A_URL and $NODE_B_URL"
        if want cluster-post-spread; then
            for c in $CONC; do
                TARGET=cluster URL="$LB_URL" run_wrk cluster-post-spread post.lua "$RUN/post.tsv" "$c"
                record cluster-post-spread "$c" "one node req/s" "$(single_rps post-spread "$c")" ""
            done
        fi
        if want cluster-poll-tail; then
            log "cluster: warm-up, one poll of every tail ticket on each node"
            BASE="$NODE_A_URL" walk tail
            BASE="$NODE_B_URL" walk tail
            BASE="$SINGLE_BASE"
            for c in $CONC; do
                TARGET=cluster URL="$LB_URL" run_wrk cluster-poll-tail messages.lua "$RUN/tail.tsv" "$c" BENCH_AFTER=tail
                record cluster-poll-tail "$c" "one node req/s" "$(single_rps poll-tail "$c")" ""
            done
        fi
        if want cluster-feed; then
            FEED_TOKEN="$(curl -fsS -X POST "$LB_URL/api/teams" -H "Authorization: Bearer $CLUSTER_ADMIN" \
                -H 'Content-Type: application/json' -d "{\"name\":\"Bench feed probe\",$LIMITS,$SUSPICION}" | jq -r .public_token)" ||
                FEED_TOKEN=""
            [[ -n "$FEED_TOKEN" ]] || fail "cluster-feed: could not create the probe's team"
            for c in $CONC; do
                [[ -n "$FEED_TOKEN" ]] || break
                "$FEED_PROBE" --write "$NODE_A_URL" --read "$NODE_B_URL" --token "$FEED_TOKEN" --tickets 2 \
                    --duration-secs "$D" >"$RUN/feed-probe-c$c.txt" 2>&1 &
                FEED_PID=$!
                TARGET=cluster URL="$LB_URL" run_wrk cluster-feed post.lua "$RUN/post.tsv" "$c"
                record cluster-feed "$c" "-" "-" ""
                wait "$FEED_PID" || fail "cluster-feed c=$c: stale reads or no answer: $(cat "$RUN/feed-probe-c$c.txt")"
                probe="$(tail -n 1 "$RUN/feed-probe-c$c.txt")"
                CLUSTER_ROWS+=("$c|$R_rps|$(sed -n 's/.*samples=\([0-9]*\).*/\1/p' <<<"$probe")|$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$probe")|$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$probe")|$(sed -n 's/.*max_ms=\([0-9.]*\).*/\1/p' <<<"$probe")|$(sed -n 's/.* stale=\([0-9]*\).*/\1/p' <<<"$probe")")
                log "cluster-feed c=$c: $probe"
            done
        fi
        grep -qiE 'panicked|ERROR' "$RUN/cluster/node-a.log" "$RUN/cluster/node-b.log" &&
            fail "cluster: a node logged ERROR or a panic (see $RUN/cluster/node-*.log)"
    else
        fail "cluster: scripts/cluster.sh up failed: $(tail -n 3 "$RUN/cluster-up.log" | tr '\n' ' ')"
    fi
    cluster_sh down 2>>"$RUN/cluster-up.log" || true
    BASE="$SINGLE_BASE"
    # The single node again, for what follows and for the end-of-run checks.
    start_colloquy
fi

# ---------------------------------------------------------------------------------- memory
if want memory; then
    log "memory: restarting colloquy, then one poll of each of the $((4 * NV)) bench tickets"
    restart_colloquy
    MEM_RSS0="$(rss_kb)" MEM_ALIVE0="$(alive)"
    walk all
    sleep 2
    MEM_RSS1="$(rss_kb)" MEM_ALIVE1="$(alive)"
    MEM_POLLS="$R_requests"
    MEM_D_ACTORS=$((MEM_ALIVE1 - MEM_ALIVE0))
    MEM_BYTES_PER="$(awk -v a="$MEM_RSS0" -v b="$MEM_RSS1" -v n="$MEM_D_ACTORS" 'BEGIN {printf "%.0f", (n > 0 ? (b - a) * 1024 / n : 0)}')"
    log "memory: RSS $((MEM_RSS0 / 1024)) MB with $MEM_ALIVE0 actors -> $((MEM_RSS1 / 1024)) MB with $MEM_ALIVE1 actors ($MEM_BYTES_PER bytes per idle actor)"
fi

# ---------------------------------------------------------------------------------- sse-memory
await_sse_open() { # OUT PID: until the SSE client reported its streams open (or exited; 300 s at most)
    local i
    for ((i = 0; i < 3000; i++)); do
        grep -qs '^BENCH_SSE ' "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 0
        sleep 0.1
    done
}
if want sse-memory; then
    # Stream i goes to ticket i / SSE_K of the bench tickets (4 per visitor): SSE_T tickets
    # with SSE_K subscribers each. colloquy caps subscribers per ticket (20,000),
    # connections per worker (actix-web's 25,000) and streams per IP, team and server
    # (raised for the bench in start_colloquy); each stream takes one unit of its visitor's
    # read budget (raised for the bench teams).
    # The tails are read now: the loads before wrote to some of these tickets, and a stream
    # opened with an older `after` would replay what they wrote.
    SSE_T=$(((SSE_N + SSE_K - 1) / SSE_K))
    "${PSQL[@]}" "$DB_URL" -c "\\copy (SELECT t.id, t.distinct_id, tm.public_token,
        to_char(t.last_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
        to_char(t.last_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
        FROM tickets t JOIN teams tm ON tm.id = t.team_id
        WHERE t.id >= '$(hexid 0)' AND t.id < '$(hexid $((4 * NV)))' ORDER BY t.id LIMIT $SSE_T) TO '$RUN/sse.tsv'"
    SSE_T="$(wc -l <"$RUN/sse.tsv")"
    log "sse-memory: restarting colloquy, starting the actors of $SSE_T tickets, then $SSE_N streams"
    restart_colloquy
    SSE_RSS0="$(rss_kb)" SSE_ALIVE0="$(alive)"
    walk sse
    sleep 2
    SSE_RSS1="$(rss_kb)" SSE_ALIVE1="$(alive)"
    start_sampler
    "$SSE_HOLD" --addr "127.0.0.1:$PORT" --data "$RUN/sse.tsv" --streams "$SSE_N" \
        --per-ticket "$SSE_K" >"$RUN/sse_hold.out" 2>"$RUN/sse_hold.err" &
    SSE_PID=$!
    await_sse_open "$RUN/sse_hold.out" "$SSE_PID"
    SSE_LINE="$(grep -s '^BENCH_SSE ' "$RUN/sse_hold.out" || true)"
    sse_field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
    SSE_OPEN="$(sse_field open "$SSE_LINE")" SSE_FAILED="$(sse_field failed "$SSE_LINE")"
    SSE_OPEN_SECS="$(sse_field secs "$SSE_LINE")"
    SSE_TICKETS="$(sse_field tickets "$SSE_LINE")"
    SSE_FIRST_ERROR="$(sed -n 's/.* first_error="\(.*\)"$/\1/p' <<<"$SSE_LINE")"
    : "${SSE_OPEN:=0}" "${SSE_FAILED:=$SSE_N}" "${SSE_OPEN_SECS:=-}" "${SSE_TICKETS:=0}"
    # let the allocator and the streams' first chunks settle, then read RSS while they are open
    sleep 3
    SSE_RSS2="$(rss_kb)" SSE_ALIVE2="$(alive)" SSE_GAUGE2="$(streams_open)"
    stop_sampler
    SSE_PEAK_KB="$RSS_PEAK_KB"
    rc=0
    if kill -0 "$SSE_PID" 2>/dev/null; then
        kill -TERM "$SSE_PID" 2>/dev/null || true
        wait "$SSE_PID" || rc=$?
    else
        wait "$SSE_PID" || rc=$?
    fi
    SSE_PID=""
    SSE_DONE="$(grep -s '^BENCH_SSE_DONE ' "$RUN/sse_hold.out" || true)"
    SSE_CLOSED_EARLY="$(sse_field closed_early "$SSE_DONE")"
    : "${SSE_CLOSED_EARLY:=-}"
    # colloquy notices a gone client only when writing to it fails: a heartbeat (every 15 s)
    # finds the peer gone, the next one fails, so up to ~30 s
    t_close=$SECONDS
    for ((i = 0; i < 80; i++)); do
        SSE_GAUGE3="$(streams_open)"
        [[ "$SSE_GAUGE3" == 0 ]] && break
        sleep 0.5
    done
    SSE_RELEASE_SECS=$((SECONDS - t_close))
    SSE_RSS3="$(rss_kb)"
    SSE_BYTES_PER="$(awk -v a="$SSE_RSS1" -v b="$SSE_RSS2" -v n="$SSE_OPEN" 'BEGIN {printf "%.0f", (n > 0 ? (b - a) * 1024 / n : 0)}')"
    SSE_BYTES_ALL="$(awk -v a="$SSE_RSS0" -v b="$SSE_RSS2" -v n="$SSE_OPEN" 'BEGIN {printf "%.0f", (n > 0 ? (b - a) * 1024 / n : 0)}')"
    log "sse-memory: $SSE_OPEN streams open ($SSE_FAILED failed) on $SSE_TICKETS tickets in ${SSE_OPEN_SECS}s; colloquy counts $SSE_GAUGE2 open"
    log "sse-memory: RSS $((SSE_RSS0 / 1024)) MB -> $((SSE_RSS1 / 1024)) MB with $SSE_ALIVE1 actors -> $((SSE_RSS2 / 1024)) MB with the streams ($SSE_BYTES_PER bytes per stream; $SSE_BYTES_ALL with its share of the actors); $((SSE_RSS3 / 1024)) MB and $SSE_GAUGE3 streams ${SSE_RELEASE_SECS}s after the client left"
    if [[ -z "$SSE_LINE" ]]; then
        fail "sse-memory: the client reported nothing (rc $rc): $(tail -n 3 "$RUN/sse_hold.err" | tr '\n' ' ')"
    elif ((SSE_FAILED > 0)); then
        fail "sse-memory: $SSE_FAILED of $SSE_N streams did not open (first: $SSE_FIRST_ERROR)"
    elif [[ "$SSE_CLOSED_EARLY" != 0 ]]; then
        fail "sse-memory: colloquy closed $SSE_CLOSED_EARLY streams while they were held"
    elif [[ "$rc" != 0 ]]; then
        fail "sse-memory: the client exited with $rc: $(tail -n 3 "$RUN/sse_hold.err" | tr '\n' ' ')"
    fi
    if [[ "$SSE_GAUGE2" != "$SSE_OPEN" ]]; then
        log "sse-memory: colloquy_sse_streams_open is $SSE_GAUGE2 while the client holds $SSE_OPEN"
    fi

    # The floor: the same client and streams against examples/sse_floor.rs (actix-web alone,
    # same build: one event, then the stream stays open), for actix-web's own share.
    BIND=127.0.0.1:0 WORKERS="$WORKERS_N" "$SSE_FLOOR" >"$RUN/sse_floor.log" 2>&1 &
    FLOOR_PID=$!
    FLOOR_PORT="$(wait_port "$FLOOR_PID" "$RUN/sse_floor.log")" || die "sse_floor did not start"
    floor_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$FLOOR_PID/status" 2>/dev/null || echo 0; }
    FLOOR_RSS0="$(floor_kb)"
    "$SSE_HOLD" --addr "127.0.0.1:$FLOOR_PORT" --data "$RUN/sse.tsv" --streams "$SSE_N" \
        --per-ticket "$SSE_K" >"$RUN/sse_floor_hold.out" 2>"$RUN/sse_floor_hold.err" &
    FLOOR_HOLD_PID=$!
    await_sse_open "$RUN/sse_floor_hold.out" "$FLOOR_HOLD_PID"
    sleep 3
    FLOOR_RSS1="$(floor_kb)"
    FLOOR_LINE="$(grep -s '^BENCH_SSE ' "$RUN/sse_floor_hold.out" || true)"
    FLOOR_OPEN="$(sse_field open "$FLOOR_LINE")"
    kill -TERM "$FLOOR_HOLD_PID" 2>/dev/null || true
    wait "$FLOOR_HOLD_PID" 2>/dev/null || true
    kill -TERM "$FLOOR_PID" 2>/dev/null || true
    wait "$FLOOR_PID" 2>/dev/null || true
    FLOOR_PID="" FLOOR_HOLD_PID=""
    : "${FLOOR_OPEN:=0}"
    FLOOR_BYTES_PER="$(awk -v a="$FLOOR_RSS0" -v b="$FLOOR_RSS1" -v n="$FLOOR_OPEN" 'BEGIN {printf "%.0f", (n > 0 ? (b - a) * 1024 / n : 0)}')"
    log "sse-memory floor (actix-web alone): $FLOOR_OPEN streams, RSS $((FLOOR_RSS0 / 1024)) MB -> $((FLOOR_RSS1 / 1024)) MB ($FLOOR_BYTES_PER bytes per stream)"
    ((FLOOR_OPEN == SSE_OPEN)) || fail "sse-memory floor: $FLOOR_OPEN of $SSE_OPEN streams opened on examples/sse_floor"
fi

ERROR_LINES="$(cat "$RUN/colloquy.previous.log" "$RUN/colloquy.log" 2>/dev/null |
    sed 's/\x1b\[[0-9;]*m//g' | grep -ciE '(^|[^a-z])(panicked|ERROR)([^a-z]|$)' || true)"
if ((ERROR_LINES > 0)); then
    log "colloquy logged $ERROR_LINES error lines (see $RUN/colloquy*.log with BENCH_KEEP=1), e.g.:"
    cat "$RUN/colloquy.previous.log" "$RUN/colloquy.log" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' |
        grep -iE '(^|[^a-z])(panicked|ERROR)([^a-z]|$)' | head -n 3 | cut -c1-300 >&2
fi

# ---------------------------------------------------------------------------------- report
get() { # LOAD C FIELD(3..14)
    awk -F'\t' -v l="$1" -v c="$2" -v f="$3" '$1 == l && $2 == c {print $f}' "$RESULTS" | tail -n 1
}
verdict() { # CONDITION(awk expr over a b) a b -> "met" / "NOT met"
    if awk -v a="$2" -v b="$3" "BEGIN {exit !($1)}"; then echo "**met**"; else echo "**not met**"; fi
}
PGV="$(pgq 'SHOW server_version')"
pgset() { pgq "SELECT setting || COALESCE(' ' || unit, '') FROM pg_settings WHERE name = '$1'" | sed 's/^16384 8kB$/128MB/'; }
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=""
[[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] || DIRTY=" (working tree with uncommitted changes)"
CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)"
RAM="$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
CREF=64
[[ " $CONC " == *" 64 "* ]] || CREF="$(awk '{print $NF}' <<<"$CONC")"

{
    echo "# Benchmarks"
    echo
    if ((SMOKE)); then
        echo "> **Smoke run** (\`scripts/bench.sh --smoke\`): tiny data, ${D}s per point. The numbers say nothing; the run only proves the harness works."
        echo
    fi
    echo "Produced by \`scripts/bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), colloquy \`$COMMIT\`$DIRTY."
    echo
    echo "## Machine and settings"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| CPU | $NPROC cores ($CPU), shared by colloquy, PostgreSQL **and the load generators** (wrk, pgbench, the SSE client) |"
    echo "| RAM | $RAM |"
    echo "| kernel | $(uname -sr), clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown) |"
    echo "| load average | $LOAD_START at the start of the loads, $(cut -d' ' -f1-3 /proc/loadavg) at the end (anything above ~0.1 at the start means other work shared the cores) |"
    echo "| PostgreSQL | $PGV; shared_buffers $(pgset shared_buffers), synchronous_commit $(pgset synchronous_commit), fsync $(pgset fsync), max_connections $(pgset max_connections), wal_level $(pgset wal_level) |"
    echo "| colloquy | release build$BUILD_NOTE, \`DATABASE_POOL_SIZE=$POOL\`, \`WORKERS=$WORKERS_N\`, \`RUST_LOG=${RUST_LOG:-info}\` (log to a file), bench teams' rate limits at 100,000,000, $SUSPICION_NOTE |"
    echo "| load | wrk $(wrk -v 2>&1 | head -n 1 | awk '{print $2}') (\`--latency -t2 -c<C> -d${D}s\`, \`-t1\` at c=1, Lua scripts in \`bench/lua/\`), pgbench $(pgbench --version | awk '{print $3}') (\`-M prepared -j2 -T$D\`, scripts in \`bench/pgbench/\`) |"
    v1_data=""
    ((NV1 > 0)) && v1_data="; $NV1 posthog-js tickets (one per widget session, keyed by \`widget_session_id\`) of $MSGS messages"
    echo "| data | $N_TEAMS teams, $N_TICKETS tickets, $N_MESSAGES messages (seeded in ${SEED_SECS}s); bench visitors own 4 tickets of $MSGS messages each$v1_data |"
    echo "| loads | $LOADS$( ((NEED_HELLO)) && echo ' (and hello-world, their reference)') |"
    echo
    echo "Each point runs ${D}s. \"mean\" is C × duration / requests (Little's law; pgbench's \"latency average\" is the same"
    echo "quantity, shown with the pgbench ceilings); p50/p99/max are wrk's histogram (not corrected for coordinated omission). \"errors\" counts non-2xx answers"
    echo "plus socket errors/timeouts (status:count in brackets); req/s counts 2xx answers only; \"RSS MB\" is colloquy's peak resident set during the point"
    echo "(VmHWM after resetting it through \`/proc/PID/clear_refs\`, and VmRSS sampled every 0.1 s)."
    echo "Ceilings run right before their load in the same run (hello-world right before each poll-tail point); pgbench is capped below \`max_connections\`"
    echo "(its client count is shown where it is lower than the load's). After the write loads a \`CHECKPOINT\` runs before the read loads."
    echo
    table() { # LOAD TITLE TEXT
        echo "## $2"
        echo
        echo "$3"
        echo
        echo "| concurrency | req/s | mean ms | p50 ms | p99 ms | max ms | errors | RSS MB | ceiling | ratio |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        awk -F'\t' -v l="$1" '$1 == l {
            err = $7 + $9; if ($15 != "") err = err " (" $15 ")"
            ceil = ($12 == "-") ? "-" : $12 " " $11
            split($14, m, "|")
            if (m[2] != "") ceil = ceil ", " m[2] " ms avg"
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $2, $3, m[1], $4, $5, $6, err, $10, ceil, $13
        }' "$RESULTS"
        echo
    }
    mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
    want post-spread && table post-spread "POST follow-ups spread over many tickets" \
        "\`POST /api/conversations/widget/message\` with a \`ticket_id\` drawn at random from $((4 * POST_N)) tickets of 4 teams. Ceiling: \`bench/pgbench/post_tx.sql\` (BEGIN; SELECT … FOR UPDATE; INSERT … SELECT FROM unnest(…); UPDATE tickets; COMMIT — one transaction per message) on the same tickets (team 0's share) at the same concurrency."
    want post-hot && table post-hot "POST follow-ups to 4 hot tickets" \
        "The same request on 4 tickets (one visitor): many writers per ticket. Ceiling: the same pgbench transaction on those 4 tickets."
    want poll-tail && table poll-tail "Polling GET messages at the tail (nothing new)" \
        "\`GET /api/conversations/widget/messages/{id}?distinct_id=…&after=<newest created_at>\` over $((4 * TAIL_N)) tickets whose actors are live (warmed once): answered from the ticket actor's memory. Ceiling: the hello-world floor (\`examples/hello.rs\`, same actix-web build) at the same concurrency."
    want poll-new && table poll-new "GET messages with new messages (database)" \
        "\`after\` = 10 messages before the tail, over $((4 * PAGE_N)) tickets: 10 messages come back from PostgreSQL. Ceiling: \`bench/pgbench/page_query.sql\` (the same paging query) at the same concurrency."
    want tickets && table tickets "GET tickets" \
        "\`GET /api/conversations/widget/tickets?distinct_id=…\` for $TICK_N visitors of 4 tickets each (a page query and a count, pipelined). Reference: hello-world."
    if want v1-mix; then
        table v1-mix "posthog-js widget: polls and sends (v1 surface)" \
            "What the posthog-js widget (1.449.x) sends, on $NV1 posthog-js tickets (one per widget session; their actors warmed once): of every $((V1_POLLS + 1)) requests of a wrk thread, $V1_POLLS are polls, \`GET /api/conversations/v1/widget/messages/{id}?widget_session_id=…&after=…\`, and 1 is a send, \`POST /api/conversations/v1/widget/message\` \`{widget_session_id, ticket_id, message, distinct_id, traits: {name: null, email: null}, session_id, session_context}\`, both with \`X-Conversations-Token\` and an \`Origin\`. Each ticket is one widget, owned by one wrk thread, whose \`after\` is the newest \`created_at\` it has seen (\`…+00:00\`, sent back verbatim, as the SDK does): its own sends' and its polls' — no operator answers during the load, so polls find nothing new and are answered from the ticket actor's memory. Why $V1_POLLS:1: an open widget polls every 5 s (and once 1 s after a send), and a visitor in a live conversation writes every minute or so, i.e. ~10–12 polls per send; $V1_POLLS:1 is that conversation's pace, the write-heavy end (an open widget nobody types in, or a closed one polling every 15 s, only polls: that is the poll-tail load). Reference: hello-world at the same concurrency (req/s counts polls and sends)."
        echo "Sends and polls apart (2xx answers per second, counted by the Lua script from the answers), against the ceiling of the sends: \`bench/pgbench/post_tx.sql\` (the transaction one send commits, on the documented surface's POST set) at the same concurrency, run right before:"
        echo
        echo "| concurrency | polls/s | sends/s | pgbench post_tx | sends / pgbench |"
        echo "|---:|---:|---:|---:|---:|"
        for c in $CONC; do
            echo "| $c | ${V1_POLLS_OK[$c]:-0} | ${V1_SENDS[$c]:-0} | ${V1_PG[$c]:-0} ${V1_PG_LABEL[$c]:-} | $(awk -v a="${V1_SENDS[$c]:-0}" -v b="${V1_PG[$c]:-0}" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "-"}') |"
        done
        echo
    fi
    ((NEED_HELLO)) && table hello "HTTP floor: hello-world" \
        "\`examples/hello.rs\`: actix-web with the same features, allocator (mimalloc) and release profile, a fixed JSON body, no routing or middleware; wrk sends it exactly the poll-tail requests (same script, same rows), so both pay the same load-generator and request-size costs."

    if want memory; then
        echo "## Memory: live ticket actors"
        echo
        echo "colloquy restarted, warmed with 2 s of \`/readyz\`, then every one of the $((4 * NV)) bench tickets polled once (\`after\` = tail; each poll loads the ticket and starts its actor, $MEM_POLLS polls)."
        echo
        echo "| | live ticket actors | RSS MB |"
        echo "|---|---:|---:|"
        echo "| before | $MEM_ALIVE0 | $(mb "$MEM_RSS0") |"
        echo "| after | $MEM_ALIVE1 | $(mb "$MEM_RSS1") |"
        echo
        echo "**$MEM_BYTES_PER bytes per idle actor** (RSS growth / actors started; includes the registry entry, the actor's mailbox and state, and the rate limiter's per-visitor read key — one per 4 tickets)."
        echo
    fi

    if want sse-memory; then
        echo "## Memory: open SSE streams"
        echo
        echo "colloquy restarted, warmed with 2 s of \`/readyz\`; the actors of $SSE_T bench tickets started by one poll each; then \`examples/sse_hold.rs\` opened $SSE_N streams at once (raw HTTP/1.1, 64 being opened at a time), $SSE_K per ticket: \`GET /api/conversations/widget/stream/{id}?distinct_id=…&token=…&after=<newest created_at>\` with \`Accept: text/event-stream\` (nothing to replay), checked that each answered \`200\` with \`content-type: text/event-stream\` and sent its first \`status\` event, and held them all while colloquy's RSS was read (3 s after the last one opened). ${SSE_OPEN} opened in ${SSE_OPEN_SECS} s on $SSE_TICKETS tickets, $SSE_FAILED failed${SSE_FIRST_ERROR:+ (first: $SSE_FIRST_ERROR)}; colloquy closed $SSE_CLOSED_EARLY while they were held.${SSE_NOTE:+ Note: $SSE_NOTE.}"
        echo
        echo "| | open streams (\`colloquy_sse_streams_open\`) | live ticket actors | RSS MB |"
        echo "|---|---:|---:|---:|"
        echo "| before | 0 | $SSE_ALIVE0 | $(mb "$SSE_RSS0") |"
        echo "| the streams' tickets live | 0 | $SSE_ALIVE1 | $(mb "$SSE_RSS1") |"
        echo "| $SSE_OPEN streams open | ${SSE_GAUGE2:-?} | $SSE_ALIVE2 | $(mb "$SSE_RSS2") (peak $(mb "$SSE_PEAK_KB") while opening) |"
        echo "| ${SSE_RELEASE_SECS} s after the client left | ${SSE_GAUGE3:-?} | - | $(mb "$SSE_RSS3") |"
        echo
        echo "**$SSE_BYTES_PER bytes per open stream** (RSS growth from opening the streams / streams open: the connection and its actix-web dispatcher and buffers, the stream's state and heartbeat timer, the ticket actor's subscriber entry and channel); **$SSE_BYTES_ALL bytes per stream** with its share of the $((SSE_ALIVE1 - SSE_ALIVE0)) ticket actors. The kernel's socket buffers are not in RSS. colloquy notices that a client has gone only when a write to it fails (the heartbeat every 15 s finds the peer gone, the next one fails): until then the stream, its subscriber and its socket stay."
        echo
        echo "Floor, in the same run: the same client and streams against \`examples/sse_floor.rs\` (actix-web alone, the same build and allocator; one event, then the stream stays open): $FLOOR_OPEN streams, RSS $(mb "$FLOOR_RSS0") → $(mb "$FLOOR_RSS1") MB, **$FLOOR_BYTES_PER bytes per stream** — actix-web's own share (the connection, its dispatcher and its 8 KiB read and write buffers); colloquy's own share is the difference, $((SSE_BYTES_PER - FLOOR_BYTES_PER)) bytes."
        echo
        echo "Caps that apply (none was reached): a ticket takes at most 20,000 subscribers (\`MAX_SUBSCRIBERS\` in \`actors/src/ticket/actor.rs\`; then \`503 overloaded\`); actix-web accepts at most 25,000 connections per worker (its default \`max_connections\`; $WORKERS_N workers); opening a stream spends one unit of the visitor's \`read_distinct_id_per_minute\` budget (default 30 a minute, raised for the bench teams; each bench visitor here opens up to $((4 * SSE_K)) streams). The open-stream caps per IP, per team and per server (\`STREAMS_PER_IP\`, \`STREAMS_PER_TEAM\`, \`STREAMS_TOTAL\`; defaults 100, 5,000, 20,000) are raised for the bench, which holds every stream from 127.0.0.1. Open-file limit (\`ulimit -n\`) for colloquy and the client: $NOFILE."
        echo
    fi

    # the section `--instructions` wrote into the previous report is kept (it is measured apart)
    if [[ -f "$OUT" ]] && grep -q '^<!-- instructions:begin' "$OUT"; then
        sed -n '/^<!-- instructions:begin/,/^<!-- instructions:end/p' "$OUT"
        echo
    fi
    echo "## Targets"
    echo
    echo "| target | measured | verdict |"
    echo "|---|---|---|"
    if want post-spread; then
        a="$(get post-spread "$CREF" 3)" b="$(get post-spread "$CREF" 12)" p99="$(get post-spread "$CREF" 5)"
        v1="$(verdict 'a >= b' "$a" "$b")"
        v2="$(verdict 'a <= 25' "$p99" 0)"
        echo "| POST (spread) ≥ 1.0× pgbench transaction at c=$CREF | $a req/s vs $b tx/s = $(get post-spread "$CREF" 13)× | $v1 |"
        echo "| POST (spread) p99 ≤ 25 ms at c=$CREF | p99 $p99 ms | $v2 |"
    fi
    if want post-hot; then
        a="$(get post-hot "$CREF" 3)" b="$(get post-hot "$CREF" 12)"
        echo "| (no target) POST to hot tickets vs pgbench on them at c=$CREF | $a req/s vs $b tx/s = $(get post-hot "$CREF" 13)× | - |"
    fi
    if want poll-tail; then
        a="$(get poll-tail "$CREF" 3)" b="$(get poll-tail "$CREF" 12)"
        echo "| polling GET, nothing new ≥ 0.5× hello-world at c=$CREF | $a vs $b req/s = $(get poll-tail "$CREF" 13)× | $(verdict 'a >= 0.5 * b' "$a" "$b") |"
    fi
    if want poll-new; then
        a="$(get poll-new "$CREF" 3)" b="$(get poll-new "$CREF" 12)"
        echo "| GET with new messages ≥ 0.8× pgbench query at c=$CREF | $a req/s vs $b q/s = $(get poll-new "$CREF" 13)× | $(verdict 'a >= 0.8 * b' "$a" "$b") |"
    fi
    if want v1-mix; then
        a="$(get v1-mix "$CREF" 3)" b="$(get v1-mix "$CREF" 12)"
        echo "| (no target) posthog-js polls and sends ($V1_POLLS:1) vs hello-world at c=$CREF | $a vs $b req/s = $(get v1-mix "$CREF" 13)× (p99 $(get v1-mix "$CREF" 5) ms) | - |"
    fi
    if want memory; then
        mb1="$(mb "$MEM_RSS1")"
        if ((MEM_ALIVE1 >= 100000)); then
            echo "| 100,000 live ticket actors ≤ 300 MB RSS | $MEM_ALIVE1 actors, $mb1 MB | $(verdict 'a <= 300' "$mb1" 0) |"
        else
            echo "| 100,000 live ticket actors ≤ 300 MB RSS | only $MEM_ALIVE1 actors live ($mb1 MB) | not measured at 100k |"
        fi
    fi
    if want sse-memory; then
        mb2="$(mb "$SSE_RSS2")"
        if ((SSE_OPEN >= 10000)); then
            echo "| 10,000 open SSE streams ≤ 200 MB RSS | $SSE_OPEN streams, $mb2 MB ($SSE_BYTES_PER bytes per stream) | $(verdict 'a <= 200' "$mb2" 0) |"
        else
            echo "| 10,000 open SSE streams ≤ 200 MB RSS | only $SSE_OPEN streams open ($mb2 MB, $SSE_BYTES_PER bytes per stream) | not measured at 10,000 |"
        fi
    fi
    w="$(get post-spread 1 14)"
    a="${w%%|*}" b="${w#*|}"
    if [[ -n "$w" && -n "$b" ]]; then
        echo "| POST at c=1 within 1 ms of pgbench at c=1 (mean latency) | $a ms vs $b ms (+$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a - b}') ms) | $(verdict 'a - b <= 1' "$a" "$b") |"
    fi
    echo
    if ((ERROR_LINES > 0)); then
        echo "colloquy logged $ERROR_LINES lines with ERROR or \"panicked\" during the run."
        echo
    fi
    if ((${#FAILURES[@]})); then
        echo "## Failures"
        echo
        for f in "${FAILURES[@]}"; do echo "- $f"; done
        echo
    fi
    if [[ -f "$ROOT/bench/NOTES.md" ]] && ! ((SMOKE)) && [[ "$(tr ' ' '\n' <<<"$LOADS" | sort -u | xargs)" == "$(tr ' ' '\n' <<<"$ALL_LOADS" | sort -u | xargs)" ]]; then
        cat "$ROOT/bench/NOTES.md"
    fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
if want cluster-post-spread || want cluster-poll-tail || want cluster-feed || want lb-post-spread || want lb-poll-tail; then
    {
        echo
        echo "## Cluster: two nodes behind HAProxy (scripts/cluster.sh)"
        echo
        echo "Both nodes (release, CHANGE_FEED=postgres, pool $POOL and $WORKERS_N workers each) and HAProxy (round-robin, health checks on /readyz) share this machine's $NPROC cores with wrk and PostgreSQL; the single-node figures are this run's. Targets (issue 16): POST ≥ 0.9× one node, tail poll ≥ 0.8× one node."
        echo
        echo "($NPROC cores: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), kernel $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). HAProxy: $(haproxy -v 2>/dev/null | head -n 1 | cut -d' ' -f1-3), nbthread ${CLUSTER_LB_THREADS:-$NPROC}, http-reuse always, no logging. lb-*: one node behind the same HAProxy, the balancer's own cost.)"
        echo
        echo "| load | c | through HAProxy req/s | one node req/s | ratio | p50 ms | p99 ms | non-2xx | 5xx |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        awk -F'\t' '$1 == "cluster-post-spread" || $1 == "cluster-poll-tail" || $1 == "lb-post-spread" || $1 == "lb-poll-tail" { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $12, $13, $4, $5, $7, $8 }' "$RESULTS"
        if ((${#CLUSTER_ROWS[@]})); then
            echo
            echo "The change feed under the POST load (cluster-feed): examples/feed_probe.rs writes through node a (2 visitors, one message at a time) and polls node b's tail every 2 ms until the message is answered; latency from a's 201 to b's answer."
            echo
            echo "| c (POST load) | POST req/s meanwhile | samples | p50 ms | p99 ms | max ms | stale (> 1 s) |"
            echo "|---:|---:|---:|---:|---:|---:|---:|"
            for r in "${CLUSTER_ROWS[@]}"; do printf '| %s |\n' "${r//|/ | }"; done
        fi
    } >>"$OUT"
fi

if ((SMOKE)); then
    cat "$OUT"
    log "smoke report: $OUT"
else
    log "wrote $OUT"
fi
if ((${#FAILURES[@]})); then
    log "${#FAILURES[@]} failure(s):"
    for f in "${FAILURES[@]}"; do log "  $f"; done
    exit 1
fi
log "done"
