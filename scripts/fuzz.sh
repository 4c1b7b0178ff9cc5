#!/usr/bin/env bash
# scripts/fuzz.sh — property-based fuzzing of the HTTP API with schemathesis, against the
# OpenAPI document the server itself serves (GET /api/openapi.json), on a live server with a
# real, fresh database.
#
#   scripts/fuzz.sh            the long run (by hand): many examples per operation
#   scripts/fuzz.sh --short    the CI run (scripts/test.sh): few examples, well under 3 minutes
#
# What it does:
#   1. builds colloquy (debug), finds PostgreSQL via scripts/dev-db.sh, creates a database
#      colloquy_fuzz_<random> and serves colloquy on it on a free port of 127.0.0.1
#   2. creates a team through POST /api/teams (admin bearer) with every rate limit raised
#      (so fuzzing is not all 429s), suspicion weights of 1 (the detector still flags, but
#      never blocks the fuzzer's IP, which would turn the rest of the run into 403s) and
#      allowed_widget_domains ["*.example.com"]
#   3. installs schemathesis (PyPI) into a venv under $HOME/.cache/colloquy/venv (reused)
#   4. runs schemathesis once per group of operations, each with the credentials it needs:
#        widget + widget_v1   X-Conversations-Token: <public token>, Origin: https://shop.example.com
#        operator             Authorization: Bearer <team secret API key>
#        admin + ops          Authorization: Bearer <ADMIN_TOKEN>
#      (the widget groups go first: the operator group may rotate the public token or switch
#      the widget off). Checks: not_a_server_error, status_code_conformance,
#      response_schema_conformance, content_type_conformance.
#   5. stops the server and drops the database (trap); exits non-zero if any group failed.
#
# Environment:
#   CARGO_TARGET_DIR      build directory (default ~/.cache/colloquy/target)
#   FUZZ_MAX_EXAMPLES     examples per operation (default 10 with --short, 200 otherwise)
#   FUZZ_MAX_TIME         time budget per group in seconds (default 35 with --short, none)
#   FUZZ_SEED             schemathesis seed (default: random; printed, to replay a run)
#   FUZZ_REPORT_DIR       keep schemathesis' JUnit reports and the server log here
#   SCHEMATHESIS_SPEC     pip requirement (default "schemathesis>=4.32,<5")
#   COLLOQUY_VENV         venv directory (default ~/.cache/colloquy/venv)
#   SERVER_START_TIMEOUT  seconds to wait for /healthz (default 30)
set -euo pipefail

log() { printf 'fuzz.sh: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

SHORT=0
for arg in "$@"; do
    case "$arg" in
    --short) SHORT=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $arg (try --help)" ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquy/target}"
VENV="${COLLOQUY_VENV:-$HOME/.cache/colloquy/venv}"
if ((SHORT)); then
    MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-10}"
    MAX_TIME="${FUZZ_MAX_TIME:-35}"
else
    MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-200}"
    MAX_TIME="${FUZZ_MAX_TIME:-}"
fi
SEED="${FUZZ_SEED:-$((RANDOM * 32768 + RANDOM))}"

for tool in curl jq python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: apt-get install $tool)"
done

SERVER_PID=""
FUZZ_DB=""
TMP="$(mktemp -d "${TMPDIR:-/tmp}/colloquy-fuzz.XXXXXX")"
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$FUZZ_DB" ]]; then
        colloquy_db_drop "$FUZZ_DB" >/dev/null 2>&1 || log "could not drop database $FUZZ_DB"
    fi
    if [[ -n "${FUZZ_REPORT_DIR:-}" && -f "$TMP/server.log" ]]; then
        if mkdir -p "$FUZZ_REPORT_DIR"; then cp "$TMP/server.log" "$FUZZ_REPORT_DIR/" || true; fi
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# --- 1. build, database, server ---------------------------------------------------------
log "building colloquy"
cargo build --quiet --bin colloquy
BIN="$CARGO_TARGET_DIR/debug/colloquy"

# shellcheck source=scripts/dev-db.sh
source "$ROOT/scripts/dev-db.sh"
FUZZ_DB="colloquy_fuzz_$(rand_hex 6)"
DB_URL="$(colloquy_db_create "$FUZZ_DB")" || die "could not create database $FUZZ_DB"
ADMIN_TOKEN="$(rand_hex 24)"
log "serving on a free port of 127.0.0.1 with database $FUZZ_DB"
DATABASE_URL="$DB_URL" BIND=127.0.0.1:0 ADMIN_TOKEN="$ADMIN_TOKEN" LOG_FORMAT=text NO_COLOR=1 \
    RUST_LOG="${RUST_LOG:-warn,colloquy::startup=info}" "$BIN" serve >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
BASE=""
deadline=$((SECONDS + ${SERVER_START_TIMEOUT:-30}))
while ((SECONDS < deadline)); do
    kill -0 "$SERVER_PID" 2>/dev/null || {
        tail -n 40 "$TMP/server.log" >&2
        die "the server exited during start-up"
    }
    port="$(sed 's/\x1b\[[0-9;]*m//g' "$TMP/server.log" |
        grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' | head -n 1 | sed 's/.*://')" || true
    if [[ -n "$port" ]] && curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
        BASE="http://127.0.0.1:$port"
        break
    fi
    sleep 0.3
done
[[ -n "$BASE" ]] || {
    tail -n 40 "$TMP/server.log" >&2
    die "the server did not answer /healthz within ${SERVER_START_TIMEOUT:-30} s"
}
log "server up at $BASE"

# --- 2. a team with raised limits -------------------------------------------------------
big=100000000
team="$(curl -fsS --max-time 10 -X POST "$BASE/api/teams" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d "$(jq -n --argjson n "$big" '{name: "fuzz", allowed_widget_domains: ["*.example.com"],
        rate_limits: {message_distinct_id_per_minute: $n, message_ip_per_minute: $n,
          message_team_per_hour: $n, read_distinct_id_per_minute: $n,
          widget_session_per_minute: $n, team_reads_per_hour: $n, team_writes_per_hour: $n,
          restore_email_per_hour: $n, restore_ip_per_minute: $n, widget_ip_per_minute: $n},
        suspicion: {flag_threshold: 1, block_threshold: 100,
          weights: {honeypot: 1, repeated_message: 1, repeated_across_visitors: 1,
            link_density: 1, enumeration: 1, rate_limited: 1, burst_after_creation: 1}}}')")" ||
    die "POST /api/teams failed"
PUBLIC_TOKEN="$(jq -er .public_token <<<"$team")"
SECRET_KEY="$(jq -er .secret_api_key <<<"$team")"

# --- 3. schemathesis --------------------------------------------------------------------
SPEC="${SCHEMATHESIS_SPEC:-schemathesis>=4.32,<5}"
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    log "installing $SPEC into $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$SPEC" || die "pip install $SPEC failed"
fi
log "$("$VENV/bin/schemathesis" --version), $MAX_EXAMPLES examples per operation${MAX_TIME:+, at most ${MAX_TIME} s per group}, seed $SEED"

# --- 4. the runs ------------------------------------------------------------------------
FAILED=()
CHECKS="not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
fuzz_group() { # fuzz_group NAME "tag1 tag2" header...
    local name="$1" tags="$2" rc=0 tag
    shift 2
    local args=(run "$BASE/api/openapi.json"
        --checks "$CHECKS"
        --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 1 --request-timeout 10
        --generation-database none --no-color)
    [[ -n "$MAX_TIME" ]] && args+=(--max-time "$MAX_TIME")
    for tag in $tags; do args+=(--include-tag "$tag"); done
    for h in "$@"; do args+=(--header "$h"); done
    if [[ -n "${FUZZ_REPORT_DIR:-}" ]]; then
        mkdir -p "$FUZZ_REPORT_DIR"
        args+=(--report junit --report-junit-path "$FUZZ_REPORT_DIR/$name.xml")
    fi
    printf '\n=== schemathesis: %s ===\n' "$name" >&2
    # Run from the temporary directory so nothing (.hypothesis, reports) lands in the repo.
    (cd "$TMP" && "$VENV/bin/schemathesis" "${args[@]}") || rc=$?
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "the server died during the $name group; last log lines:"
        tail -n 40 "$TMP/server.log" >&2
        rc=1
    fi
    ((rc == 0)) || FAILED+=("$name (exit $rc)")
    return 0
}

fuzz_group widget "widget widget_v1" \
    "X-Conversations-Token: $PUBLIC_TOKEN" "Origin: https://shop.example.com"
fuzz_group operator "operator" "Authorization: Bearer $SECRET_KEY"
fuzz_group admin-ops "admin ops" "Authorization: Bearer $ADMIN_TOKEN"

if grep -qiE 'panicked|internal error' "$TMP/server.log"; then
    log "the server log shows panics or internal errors:"
    grep -iE 'panicked|internal error' "$TMP/server.log" | head -n 20 >&2
    FAILED+=("server log")
fi

if ((${#FAILED[@]})); then
    log "FAILED: ${FAILED[*]} (replay with FUZZ_SEED=$SEED)"
    exit 1
fi
log "all groups passed"
