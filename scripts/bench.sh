#!/usr/bin/env bash
# scripts/bench.sh — colloquy's benchmark, one command.
#
# Builds colloquy and the hello-world floor (examples/hello.rs) in release mode, finds a
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
#   memory        100,000 live ticket actors: RSS before/after polling each ticket once
#
# with wrk (bench/lua/*.lua) and pgbench, sampling colloquy's RSS (VmHWM reset through
# /proc/PID/clear_refs when allowed, plus VmRSS sampling), and writes BENCHMARKS.md.
#
# Usage:
#   scripts/bench.sh            full run (~10 minutes after the build), rewrites BENCHMARKS.md
#   scripts/bench.sh --smoke    CI smoke run (BENCH_SMOKE=1): tiny data, 2 s per point at c=1
#                               and 8; writes the report to a temp file and prints it; exits
#                               non-zero on any non-2xx answer, socket error, or wrk/pgbench
#                               failure
#
# Environment (optional):
#   BENCH_SMOKE=1           same as --smoke
#   BENCH_DURATION          seconds per load point (full 10, smoke 2)
#   BENCH_CONCURRENCY       e.g. "1 8 64 256" (smoke "1 8")
#   BENCH_VISITORS          bench visitors, 4 tickets each (full 25000 = 100k tickets; smoke 256)
#   BENCH_BULK_TEAMS        other teams, 20 tickets each (full 2000; smoke 1)
#   BENCH_OUT               report path (full: BENCHMARKS.md; smoke: a temp file)
#   BENCH_KEEP=1            keep the database and the run directory (wrk/pgbench outputs, logs)
#   DATABASE_POOL_SIZE, WORKERS, RUST_LOG   passed to colloquy (defaults 8, cores, info)
#   BENCH_NO_BUILD=1        skip `cargo build` and use the binaries already built
#   CARGO_TARGET_DIR        default ~/.cache/colloquy/target
#
# Needs: cargo, psql, pgbench, wrk (installed with apt-get when missing and running as root),
# curl, jq.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquy/target}"

SMOKE="${BENCH_SMOKE:-0}"
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
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

if ((SMOKE)); then
    D="${BENCH_DURATION:-2}"
    CONC="${BENCH_CONCURRENCY:-1 8}"
    NV="${BENCH_VISITORS:-256}"
    BULK_TEAMS="${BENCH_BULK_TEAMS:-1}"
else
    D="${BENCH_DURATION:-10}"
    CONC="${BENCH_CONCURRENCY:-1 8 64 256}"
    NV="${BENCH_VISITORS:-25000}"
    BULK_TEAMS="${BENCH_BULK_TEAMS:-2000}"
fi
BULK_TPT=20
MSGS=20
DB_NAME=colloquy_bench
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
COLLOQUY_PID="" HELLO_PID="" SAMPLER_PID="" WALK_PID="" ADMIN_URL="" ERRORS=0 FAILURES=()
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
    stop_pid "$HELLO_PID" 5
    stop_pid "$COLLOQUY_PID" 30
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
    log "building (release): colloquy and examples/hello"
    cargo build --release --quiet --bin colloquy --example hello
fi
BIN="$CARGO_TARGET_DIR/release/colloquy"
HELLO="$CARGO_TARGET_DIR/release/examples/hello"
[[ -x "$BIN" && -x "$HELLO" ]] || die "build produced no $BIN / $HELLO"
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
PORT=""
start_colloquy() {
    : >"$RUN/colloquy.log"
    DATABASE_URL="$DB_URL" BIND=127.0.0.1:0 ADMIN_TOKEN="$ADMIN_TOKEN" \
        DATABASE_POOL_SIZE="$POOL" WORKERS="$WORKERS_N" RUST_LOG="${RUST_LOG:-info}" \
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
log "colloquy pid $COLLOQUY_PID on $BASE (pool $POOL, workers $WORKERS_N)"

# ---------------------------------------------------------------------------------- seed
log "creating 4 bench teams through POST /api/teams (rate limits raised)"
declare -a TEAM_ID TEAM_TOKEN
LIMITS='"rate_limits":{"message_distinct_id_per_minute":100000000,"message_ip_per_minute":100000000,"message_team_per_hour":100000000,"read_distinct_id_per_minute":100000000}'
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
    TEAM_TOKEN[i]="$(jq -r .public_token <<<"$resp")"
done

log "seeding: $BULK_TEAMS bulk teams x $BULK_TPT tickets, $NV bench visitors x 4 tickets, $MSGS messages each"
t0=$SECONDS
"${PSQL[@]}" "$DB_URL" -v bulk_teams="$BULK_TEAMS" -v bulk_tpt="$BULK_TPT" -v nv="$NV" \
    -v msgs="$MSGS" -v team0="${TEAM_ID[0]}" -v team1="${TEAM_ID[1]}" \
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

log "starting the hello-world floor"
: >"$RUN/hello.log"
BIND=127.0.0.1:0 WORKERS="$WORKERS_N" "$HELLO" >>"$RUN/hello.log" 2>&1 &
HELLO_PID=$!
HELLO_PORT="$(wait_port "$HELLO_PID" "$RUN/hello.log")" || die "hello did not start"

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
    if [[ "$2" != 0 || -z "$line" ]]; then
        fail "wrk failed for $3 (rc $2): $(tail -n 3 "$1" | tr '\n' ' ')"
        R_rps=0 R_p50_ms=0 R_p99_ms=0 R_max_ms=0 R_mean_ms=0 R_non2xx=0 R_s5xx=0 R_sock=0 R_requests=0 R_codes=""
        return 0
    fi
    local requests duration_us mean_us p50_us p99_us max_us non2xx s5xx s4xx sock_errors ok
    eval "$(sed 's/^BENCH_RESULT //' <<<"$line" | tr ' ' '\n' | grep -E '^[a-z0-9_]+=[0-9.]+$' | sed 's/^/local /')"
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
log "load average $LOAD_START"
log "warm-up: one poll of every ticket of the poll sets (their actors go live)"
walk tail
walk page

declare -A HELLO_RPS
for c in $CONC; do
    TARGET=hello URL="http://127.0.0.1:$HELLO_PORT" run_wrk hello hello.lua "" "$c"
    HELLO_RPS[$c]="$R_rps"
    record hello "$c" - - ""
done

for c in $CONC; do
    run_pgbench post-spread post_tx.sql "$c" "$POST_LO" "$POST_N"
    run_wrk post-spread post.lua "$RUN/post.tsv" "$c"
    record post-spread "$c" "$(pglabel tx/s "$c")" "$P_tps" "$P_lat_ms"
done
for c in $CONC; do
    run_pgbench post-hot post_tx.sql "$c" "$HOT_V" 4
    run_wrk post-hot post.lua "$RUN/hot.tsv" "$c"
    record post-hot "$c" "$(pglabel tx/s "$c")" "$P_tps" "$P_lat_ms"
done
for c in $CONC; do
    run_wrk poll-tail messages.lua "$RUN/tail.tsv" "$c" BENCH_AFTER=tail
    record poll-tail "$c" "hello req/s" "${HELLO_RPS[$c]}" ""
done
for c in $CONC; do
    run_pgbench poll-new page_query.sql "$c" "$PAGE_LO" "$PAGE_N"
    run_wrk poll-new messages.lua "$RUN/page.tsv" "$c" BENCH_AFTER=mid
    record poll-new "$c" "$(pglabel q/s "$c")" "$P_tps" "$P_lat_ms"
done
for c in $CONC; do
    run_wrk tickets tickets.lua "$RUN/visitors.tsv" "$c"
    record tickets "$c" "hello req/s" "${HELLO_RPS[$c]}" ""
done

# ---------------------------------------------------------------------------------- memory
log "memory: restarting colloquy, then one poll of each of the $((4 * NV)) bench tickets"
stop_pid "$COLLOQUY_PID" 60
start_colloquy
alive() { curl -sS -H "Authorization: Bearer $ADMIN_TOKEN" "$BASE/api/ops/actors" | jq -r '.ticket_actors.alive'; }
# warm the HTTP workers and the pool without starting ticket actors
wrk -t2 -c32 -d2s "$BASE/readyz" >/dev/null 2>&1 || true
sleep 1
MEM_RSS0="$(rss_kb)" MEM_ALIVE0="$(alive)"
walk all
sleep 2
MEM_RSS1="$(rss_kb)" MEM_ALIVE1="$(alive)"
MEM_POLLS="$R_requests"
MEM_D_ACTORS=$((MEM_ALIVE1 - MEM_ALIVE0))
MEM_BYTES_PER="$(awk -v a="$MEM_RSS0" -v b="$MEM_RSS1" -v n="$MEM_D_ACTORS" 'BEGIN {printf "%.0f", (n > 0 ? (b - a) * 1024 / n : 0)}')"
log "memory: RSS $((MEM_RSS0 / 1024)) MB with $MEM_ALIVE0 actors -> $((MEM_RSS1 / 1024)) MB with $MEM_ALIVE1 actors ($MEM_BYTES_PER bytes per idle actor)"
grep -qiE '(^|[^a-z])(panicked|ERROR)([^a-z]|$)' "$RUN/colloquy.log" && log "colloquy logged errors (see $RUN/colloquy.log with BENCH_KEEP=1)"

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
    echo "| CPU | $NPROC cores ($CPU), shared by colloquy, PostgreSQL **and the load generators** (wrk, pgbench) |"
    echo "| RAM | $RAM |"
    echo "| kernel | $(uname -sr) |"
    echo "| load average | $LOAD_START at the start of the loads, $(cut -d' ' -f1-3 /proc/loadavg) at the end (anything above ~0.1 at the start means other work shared the cores) |"
    echo "| PostgreSQL | $PGV; shared_buffers $(pgset shared_buffers), synchronous_commit $(pgset synchronous_commit), fsync $(pgset fsync), max_connections $(pgset max_connections), wal_level $(pgset wal_level) |"
    echo "| colloquy | release build$BUILD_NOTE, \`DATABASE_POOL_SIZE=$POOL\`, \`WORKERS=$WORKERS_N\`, \`RUST_LOG=${RUST_LOG:-info}\` (log to a file), bench teams' rate limits at 100,000,000, $SUSPICION_NOTE |"
    echo "| load | wrk $(wrk -v 2>&1 | head -n 1 | awk '{print $2}') (\`--latency -t2 -c<C> -d${D}s\`, \`-t1\` at c=1, Lua scripts in \`bench/lua/\`), pgbench $(pgbench --version | awk '{print $3}') (\`-M prepared -j2 -T$D\`, scripts in \`bench/pgbench/\`) |"
    echo "| data | $N_TEAMS teams, $N_TICKETS tickets, $N_MESSAGES messages (seeded in ${SEED_SECS}s); bench visitors own 4 tickets of $MSGS messages each |"
    echo
    echo "Each point runs ${D}s. \"mean\" is C × duration / requests (Little's law; pgbench's \"latency average\" is the same"
    echo "quantity, shown with the pgbench ceilings); p50/p99/max are wrk's histogram (not corrected for coordinated omission). \"errors\" counts non-2xx answers"
    echo "plus socket errors/timeouts (status:count in brackets); req/s counts 2xx answers only; \"RSS MB\" is colloquy's peak resident set during the point"
    echo "(VmHWM after resetting it through \`/proc/PID/clear_refs\`, and VmRSS sampled every 0.1 s)."
    echo "Ceilings run right before their load in the same run; pgbench is capped below \`max_connections\`"
    echo "(its client count is shown where it is lower than the load's)."
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
    table post-spread "POST follow-ups spread over many tickets" \
        "\`POST /api/conversations/widget/message\` with a \`ticket_id\` drawn at random from $((4 * POST_N)) tickets of 4 teams. Ceiling: \`bench/pgbench/post_tx.sql\` (BEGIN; SELECT … FOR UPDATE; INSERT … SELECT FROM unnest(…); UPDATE tickets; COMMIT — one transaction per message) on the same tickets (team 0's share) at the same concurrency."
    table post-hot "POST follow-ups to 4 hot tickets" \
        "The same request on 4 tickets (one visitor): many writers per ticket. Ceiling: the same pgbench transaction on those 4 tickets."
    table poll-tail "Polling GET messages at the tail (nothing new)" \
        "\`GET /api/conversations/widget/messages/{id}?distinct_id=…&after=<newest created_at>\` over $((4 * TAIL_N)) tickets whose actors are live (warmed once): answered from the ticket actor's memory. Ceiling: the hello-world floor (\`examples/hello.rs\`, same actix-web build) at the same concurrency."
    table poll-new "GET messages with new messages (database)" \
        "\`after\` = 10 messages before the tail, over $((4 * PAGE_N)) tickets: 10 messages come back from PostgreSQL. Ceiling: \`bench/pgbench/page_query.sql\` (the same paging query) at the same concurrency."
    table tickets "GET tickets" \
        "\`GET /api/conversations/widget/tickets?distinct_id=…\` for $TICK_N visitors of 4 tickets each (a page query and a count, pipelined). Reference: hello-world."
    table hello "HTTP floor: hello-world" \
        "\`examples/hello.rs\`: actix-web with the same features and release profile, a fixed JSON body."

    echo "## Memory: live ticket actors"
    echo
    echo "colloquy restarted, warmed with 2 s of \`/readyz\`, then every one of the $((4 * NV)) bench tickets polled once (\`after\` = tail; each poll loads the ticket and starts its actor, $MEM_POLLS polls)."
    echo
    echo "| | live ticket actors | RSS MB |"
    echo "|---|---:|---:|"
    echo "| before | $MEM_ALIVE0 | $(awk -v k="$MEM_RSS0" 'BEGIN {printf "%.1f", k / 1024}') |"
    echo "| after | $MEM_ALIVE1 | $(awk -v k="$MEM_RSS1" 'BEGIN {printf "%.1f", k / 1024}') |"
    echo
    echo "**$MEM_BYTES_PER bytes per idle actor** (RSS growth / actors started; includes the registry entry, the actor's mailbox and state, and the rate limiter's per-visitor read key — one per 4 tickets)."
    echo

    echo "## Targets"
    echo
    echo "| target | measured | verdict |"
    echo "|---|---|---|"
    a="$(get post-spread "$CREF" 3)" b="$(get post-spread "$CREF" 12)" p99="$(get post-spread "$CREF" 5)"
    v1="$(verdict 'a >= b' "$a" "$b")"
    v2="$(verdict 'a <= 25' "$p99" 0)"
    echo "| POST (spread) ≥ 1.0× pgbench transaction at c=$CREF | $a req/s vs $b tx/s = $(get post-spread "$CREF" 13)× | $v1 |"
    echo "| POST (spread) p99 ≤ 25 ms at c=$CREF | p99 $p99 ms | $v2 |"
    a="$(get post-hot "$CREF" 3)" b="$(get post-hot "$CREF" 12)"
    echo "| (no target) POST to hot tickets vs pgbench on them at c=$CREF | $a req/s vs $b tx/s = $(get post-hot "$CREF" 13)× | - |"
    a="$(get poll-tail "$CREF" 3)" b="$(get poll-tail "$CREF" 12)"
    echo "| polling GET, nothing new ≥ 0.5× hello-world at c=$CREF | $a vs $b req/s = $(get poll-tail "$CREF" 13)× | $(verdict 'a >= 0.5 * b' "$a" "$b") |"
    a="$(get poll-new "$CREF" 3)" b="$(get poll-new "$CREF" 12)"
    echo "| GET with new messages ≥ 0.8× pgbench query at c=$CREF | $a req/s vs $b q/s = $(get poll-new "$CREF" 13)× | $(verdict 'a >= 0.8 * b' "$a" "$b") |"
    mb1="$(awk -v k="$MEM_RSS1" 'BEGIN {printf "%.1f", k / 1024}')"
    if ((MEM_ALIVE1 >= 100000)); then
        echo "| 100,000 live ticket actors ≤ 300 MB RSS | $MEM_ALIVE1 actors, $mb1 MB | $(verdict 'a <= 300' "$mb1" 0) |"
    else
        echo "| 100,000 live ticket actors ≤ 300 MB RSS | only $MEM_ALIVE1 actors live ($mb1 MB) | not measured at 100k |"
    fi
    w="$(get post-spread 1 14)"
    a="${w%%|*}" b="${w#*|}"
    if [[ -n "$w" && -n "$b" ]]; then
        echo "| POST at c=1 within 1 ms of pgbench at c=1 (mean latency) | $a ms vs $b ms (+$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a - b}') ms) | $(verdict 'a - b <= 1' "$a" "$b") |"
    fi
    echo
    if ((${#FAILURES[@]})); then
        echo "## Failures"
        echo
        for f in "${FAILURES[@]}"; do echo "- $f"; done
        echo
    fi
    if [[ -f "$ROOT/bench/NOTES.md" ]] && ! ((SMOKE)); then
        cat "$ROOT/bench/NOTES.md"
    fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"

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
