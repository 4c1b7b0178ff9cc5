#!/usr/bin/env bash
# scripts/test.sh — the project's test command (README) and what CI runs (.ci/run).
#
#   1. checks the tools (cargo, curl, jq; installs curl/jq with apt-get when root on Debian)
#   2. finds PostgreSQL via scripts/dev-db.sh and exports DATABASE_URL pointing at the
#      server's `postgres` maintenance database (integration tests create their own databases
#      from it); drops colloquy_test_* / colloquy_session_* databases older runs left behind
#   3. cargo fmt --check, cargo clippy -D warnings, cargo deny (deny.toml; installs cargo-deny
#      from crates.io when missing; the advisories check needs the RustSec database from
#      github.com and is reported SKIP when it cannot be had), the workspace tests (cargo
#      nextest when installed, plus the doc tests; else cargo test)
#   4. builds the binary, serves it on a fresh database `colloquy_session_<random>` on
#      127.0.0.1:<free port> and runs scripts/widget-session.sh against it, then the
#      operator session, the spam corpus, the browser suites (posthog-js and the console: scripts/e2e.sh,
#      which installs Debian's chromium and the npm lockfile when missing), and the short
#      forms of the API fuzzing (schemathesis, into a venv), chaos and benchmark runs
#   4b. starts a local cluster (scripts/cluster.sh: two nodes with CHANGE_FEED=postgres behind
#      HAProxy, installed with apt-get when missing and running as root) and runs through its
#      load balancer: the widget session, the operator session, the browser suites and the
#      spam corpus round-robin over both nodes, budgets and spam windows shared through Redis
#      (RATE_LIMIT_NODES=1 when the cluster has Redis, whose budgets hold across nodes; 2
#      without; the corpus step is SKIP when no Redis answers on 127.0.0.1:6379 and REDIS_URL
#      is unset); then the Rust API suites widget_post, widget_read, widget_v1, operator and
#      stream with COLLOQUY_TEST_TOPOLOGY=cluster (two nodes and an HAProxy per test)
#   5. prints a summary; exits non-zero if any step failed (every step runs regardless; a
#      SKIP line is not a failure).
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default ~/.cache/colloquy/target)
#   DATABASE_URL       candidate server (see scripts/dev-db.sh for the discovery and its vars)
#   LEFTOVER_DB_MIN_AGE_MINUTES  only drop leftover test databases older than this
#                      (default 30: a concurrent run's fresh databases are left alone)
#   SERVER_START_TIMEOUT  seconds to wait for the server's /healthz (default 30)
set -euo pipefail

log() { printf 'test.sh: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}
section() { printf '\n=== %s ===\n' "$*" >&2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquy/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"

# --- 1. tools ---------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust from https://rustup.rs"
missing=()
for tool in curl jq; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing missing Debian packages: ${missing[*]} (apt-get, running as root)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${missing[@]}" >/dev/null ||
            { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
            die "apt-get install ${missing[*]} failed"
    else
        die "missing tools: ${missing[*]} — install them (Debian: sudo apt-get install ${missing[*]})"
    fi
fi
cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"

# --- bookkeeping ------------------------------------------------------------------------
RESULTS=()
FAILED=0
record() { # record NAME STATUS
    if [[ "$2" == 0 ]]; then
        RESULTS+=("PASS  $1")
    else
        RESULTS+=("FAIL  $1 (exit $2)")
        FAILED=1
    fi
}
run_step() { # run_step NAME command...
    local name="$1" rc=0
    shift
    section "$name"
    "$@" || rc=$?
    record "$name" "$rc"
    return 0
}

SERVER_PID=""
SESSION_DB=""
TMP="$(mktemp -d "${TMPDIR:-/tmp}/colloquy-test.XXXXXX")"
stop_server() { # stop the session server (TERM, then KILL after 10 s) and drop its database
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]]; then wait "$SERVER_PID" 2>/dev/null || true; fi
    SERVER_PID=""
    if [[ -n "$SESSION_DB" ]]; then
        colloquy_db_drop "$SESSION_DB" >/dev/null 2>&1 || log "could not drop database $SESSION_DB"
        SESSION_DB=""
    fi
}
cleanup() {
    local rc=$?
    stop_server
    if ((${CLUSTER_T_UP:-0})); then cluster_t down >/dev/null 2>&1 || true; fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 2. database ------------------------------------------------------------------------
section "database"
# shellcheck source=scripts/dev-db.sh
source "$ROOT/scripts/dev-db.sh"
DATABASE_URL="$(colloquy_db_url_for "$DATABASE_URL" postgres)"
export DATABASE_URL
log "DATABASE_URL=$DATABASE_URL (tests create their own databases from it)"

drop_leftovers() {
    if ! _cdb_psql >/dev/null 2>&1; then
        log "psql not found: not dropping leftover test databases"
        return 0
    fi
    local age="${LEFTOVER_DB_MIN_AGE_MINUTES:-30}" names name
    # Age of a database = mtime of its PG_VERSION file (needs superuser); without that
    # privilege, fall back to "not in use".
    names="$(colloquy_db_psql -tA -v "age=$age" 2>/dev/null <<'SQL'
SELECT d.datname FROM pg_database d
WHERE (d.datname LIKE 'colloquy\_test\_%' OR d.datname LIKE 'colloquy\_session\_%')
  AND (pg_stat_file('base/' || d.oid || '/PG_VERSION')).modification
      < now() - make_interval(mins => :'age'::int)
  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)
SQL
    )" || names="$(colloquy_db_psql -tA <<'SQL'
SELECT d.datname FROM pg_database d
WHERE (d.datname LIKE 'colloquy\_test\_%' OR d.datname LIKE 'colloquy\_session\_%')
  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)
SQL
    )" || { log "could not list leftover databases"; return 0; }
    local n=0
    for name in $names; do
        if colloquy_db_psql -v "name=$name" >/dev/null 2>&1 <<'SQL'
SELECT format('DROP DATABASE IF EXISTS %I', :'name') \gexec
SQL
        then n=$((n + 1)); fi
    done
    log "dropped $n leftover test database(s)"
}
drop_leftovers

# --- 3. static checks and the test suites -----------------------------------------------
run_step "cargo fmt --check" cargo fmt --all -- --check
run_step "cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings

# Supply chain (deny.toml): licenses, duplicate versions and bans, sources always; known
# vulnerabilities (advisories) only with a RustSec database, which lives on github.com — where
# that is unreachable the check is reported as SKIP with the reason, never passed silently.
cargo_deny_ready() {
    cargo deny --version >/dev/null 2>&1 && return 0
    log "installing cargo-deny from crates.io into ~/.cargo/bin (once; later runs reuse it)"
    cargo install --locked cargo-deny && cargo deny --version >/dev/null 2>&1
}
ADVISORY_DB_DIR="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs" # deny.toml's db-path
fetch_failure() { # fetch_failure LOG: why `cargo deny fetch db` failed, in a few words
    grep -m1 -oE 'Could not resolve host: [^ ]+|Connection timed out|Connection refused' "$1" ||
        grep -m1 -E 'fatal:|ERROR' "$1" | cut -c1-160 || echo "no answer within 120 s"
}
advisories_step() { # sets ADVISORIES_SKIPPED when no database can be had
    local fetch_log="$TMP/advisory-db-fetch.log"
    if timeout 120 cargo deny fetch db >"$fetch_log" 2>&1; then
        log "RustSec advisory database fetched"
    elif compgen -G "$ADVISORY_DB_DIR/advisory-db-*/.git" >/dev/null; then
        log "could not refresh the RustSec advisory database ($(fetch_failure "$fetch_log"));"
        log "checking against the local copy in $ADVISORY_DB_DIR (cargo-deny refuses one older than 90 days)"
    else
        ADVISORIES_SKIPPED="no RustSec advisory database: fetching it from github.com failed ($(fetch_failure "$fetch_log")) and none is in $ADVISORY_DB_DIR"
        return 0
    fi
    cargo deny --offline check advisories
}
if cargo_deny_ready; then
    run_step "cargo deny: licenses, bans (duplicate versions), sources" cargo deny check licenses bans sources
    ADVISORIES_SKIPPED=""
    section "cargo deny: advisories"
    advisories_rc=0
    advisories_step || advisories_rc=$?
    if [[ -n "$ADVISORIES_SKIPPED" ]]; then
        log "SKIPPED the advisories check: $ADVISORIES_SKIPPED."
        log "Known vulnerabilities were NOT checked. Run scripts/test.sh where github.com is reachable, or copy $ADVISORY_DB_DIR from such a machine."
        RESULTS+=("SKIP  cargo deny: advisories ($ADVISORIES_SKIPPED)")
    else
        record "cargo deny: advisories" "$advisories_rc"
    fi
else
    record "cargo deny (cargo install --locked cargo-deny failed)" 1
fi
if cargo nextest --version >/dev/null 2>&1; then
    run_step "cargo nextest run" cargo nextest run --workspace --no-tests=warn
    run_step "cargo test --doc" cargo test --workspace --doc
else
    run_step "cargo test" cargo test --workspace
fi

# --- 4. the curl session against a live server ------------------------------------------
rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

start_server() {
    local bin="$CARGO_TARGET_DIR/debug/colloquy" url port="" deadline
    [[ -x "$bin" ]] || { log "no binary at $bin"; return 1; }
    SESSION_DB="colloquy_session_$(rand_hex 6)"
    url="$(colloquy_db_create "$SESSION_DB")" || return 1
    SESSION_ADMIN_TOKEN="$(rand_hex 24)"
    log "serving on a free port of 127.0.0.1 with database $SESSION_DB"
    DATABASE_URL="$url" BIND=127.0.0.1:0 ADMIN_TOKEN="$SESSION_ADMIN_TOKEN" LOG_FORMAT=text \
        NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" "$bin" serve >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    deadline=$((SECONDS + ${SERVER_START_TIMEOUT:-30}))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "the server exited during start-up; its log:"
            tail -n 40 "$TMP/server.log" >&2
            return 1
        fi
        if [[ -z "$port" ]]; then
            port="$(sed 's/\x1b\[[0-9;]*m//g' "$TMP/server.log" |
                grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' | head -n 1 | sed 's/.*://')" || true
        fi
        if [[ -n "$port" ]] && curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
            SESSION_BASE_URL="http://127.0.0.1:$port"
            log "server up at $SESSION_BASE_URL"
            return 0
        fi
        sleep 0.3
    done
    if [[ -z "$port" ]]; then
        log "no 'listening on http://127.0.0.1:PORT' line in the server log within ${SERVER_START_TIMEOUT:-30} s:"
    else
        log "GET http://127.0.0.1:$port/healthz did not answer 200 within ${SERVER_START_TIMEOUT:-30} s:"
    fi
    tail -n 40 "$TMP/server.log" >&2
    return 1
}

widget_session() {
    start_server || return 1
    local rc=0
    BASE_URL="$SESSION_BASE_URL" ADMIN_TOKEN="$SESSION_ADMIN_TOKEN" "$ROOT/scripts/widget-session.sh" || rc=$?
    if ((rc != 0)); then
        log "widget-session failed; last server log lines:"
        tail -n 30 "$TMP/server.log" >&2
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "the server died during the session"
        rc=1
    fi
    stop_server
    return "$rc"
}

run_step "cargo build" cargo build --bin colloquy
if [[ "${RESULTS[-1]}" == PASS* ]]; then
    run_step "widget session (scripts/widget-session.sh)" widget_session
else
    RESULTS+=("SKIP  widget session (no binary)")
    FAILED=1
fi

# --- later suites -----------------------------------------------------------------------
# Each counts in the summary. A suite needing a live server calls start_server (a fresh
# database; sets $SESSION_BASE_URL and $SESSION_ADMIN_TOKEN) and stop_server afterwards.
operator_session() {
    start_server || return 1
    local rc=0
    BASE_URL="$SESSION_BASE_URL" ADMIN_TOKEN="$SESSION_ADMIN_TOKEN" "$ROOT/scripts/operator-session.sh" || rc=$?
    stop_server
    return "$rc"
}
if [[ -x "$CARGO_TARGET_DIR/debug/colloquy" ]]; then
    run_step "operator session (scripts/operator-session.sh)" operator_session
    run_step "spam corpus: precision and recall (scripts/spam-corpus.sh)" "$ROOT/scripts/spam-corpus.sh" --seed 42
    run_step "e2e: the posthog-js widget and the operator console in Chromium (scripts/e2e.sh)" "$ROOT/scripts/e2e.sh"
fi
# --- the same black-box suites through a load balancer ------------------------------------
# One cluster (scripts/cluster.sh) for all of them; torn down by cleanup too.
CLUSTER_T_DIR="$TMP/cluster"
CLUSTER_T_UP=0
cluster_t() { CLUSTER_DIR="$CLUSTER_T_DIR" CLUSTER_NO_BUILD=1 "$ROOT/scripts/cluster.sh" "$@"; }
cluster_up() {
    CLUSTER_T_UP=1
    cluster_t up || return 1
    eval "$(cluster_t env)"
    CLUSTER_BASE_URL="$BASE_URL" CLUSTER_ADMIN_TOKEN="$ADMIN_TOKEN"
    unset BASE_URL ADMIN_TOKEN
}
through_lb() { # through_lb COMMAND…: with the load balancer's BASE_URL and ADMIN_TOKEN
    BASE_URL="$CLUSTER_BASE_URL" ADMIN_TOKEN="$CLUSTER_ADMIN_TOKEN" \
        RATE_LIMIT_NODES="$([[ -n "${CLUSTER_REDIS_URL:-}" ]] && echo 1 || echo 2)" "$@"
}
if [[ -x "$CARGO_TARGET_DIR/debug/colloquy" ]]; then
    run_step "cluster: two nodes behind HAProxy (scripts/cluster.sh up)" cluster_up
    if [[ "${RESULTS[-1]}" == PASS* ]]; then
        run_step "cluster: widget session through the load balancer" through_lb "$ROOT/scripts/widget-session.sh"
        run_step "cluster: operator session through the load balancer" through_lb "$ROOT/scripts/operator-session.sh"
        run_step "cluster: e2e (posthog-js widget, console) in Chromium through the load balancer" \
            through_lb env E2E_BASE_URL="$CLUSTER_BASE_URL" DATABASE_URL="$CLUSTER_DB_URL" "$ROOT/scripts/e2e.sh"
        if [[ -n "${CLUSTER_REDIS_URL:-}" ]]; then
            run_step "cluster: spam corpus round-robin over both nodes, windows shared in Redis (precision, recall)" \
                through_lb python3 "$ROOT/scripts/spam_corpus.py" --seed 42
        else
            RESULTS+=("SKIP  cluster: spam corpus round-robin (no Redis: set REDIS_URL or run one on 127.0.0.1:6379)")
        fi
    fi
    cluster_t down || log "could not stop the cluster in $CLUSTER_T_DIR"
    CLUSTER_T_UP=0
fi
# The Rust black-box suites that make sense through a load balancer, each test against two
# nodes of its own (CHANGE_FEED=postgres) behind its own HAProxy (tests/api/helpers.rs;
# the tests that read one node or count per-node budgets skip themselves, docs/scale-out.md).
CLUSTER_SUITES='test(/^(widget_post|widget_read|widget_v1|operator|stream)::/)'
api_through_lb() {
    command -v haproxy >/dev/null 2>&1 || { log "haproxy is not on PATH (scripts/cluster.sh installs it)"; return 1; }
    if cargo nextest --version >/dev/null 2>&1; then
        COLLOQUY_TEST_TOPOLOGY=cluster cargo nextest run --test api --no-tests=fail -E "$CLUSTER_SUITES"
    else
        COLLOQUY_TEST_TOPOLOGY=cluster cargo test --test api -- widget_post:: widget_read:: widget_v1:: operator:: stream::
    fi
}
run_step "cluster: API suites (widget, v1, operator, stream) through HAProxy (COLLOQUY_TEST_TOPOLOGY=cluster)" api_through_lb

# These build, serve and clean up by themselves (short forms; the full runs are by hand).
run_step "API fuzzing: schemathesis on the OpenAPI document (scripts/fuzz.sh --short)" "$ROOT/scripts/fuzz.sh" --short
run_step "chaos: kill -9, database outage and freeze, overload (scripts/chaos.sh --short)" "$ROOT/scripts/chaos.sh" --short
run_step "benchmark smoke run (scripts/bench.sh --smoke)" "$ROOT/scripts/bench.sh" --smoke

# --- 5. summary -------------------------------------------------------------------------
section "summary"
for r in "${RESULTS[@]}"; do printf '  %s\n' "$r" >&2; done
if ((FAILED)); then
    log "FAILED"
    exit 1
fi
log "all passed"
