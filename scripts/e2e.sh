#!/usr/bin/env bash
# scripts/e2e.sh — end-to-end browser tests: the conversations widget of the real posthog-js
# SDK (1.449.2, unmodified) against colloquy, in Debian's headless Chromium (playwright-core).
#
#   1. installs what is missing: Debian's chromium (apt-get, only when root; never a browser
#      downloaded by a test tool), node_modules of tests/e2e (`npm ci` from the lockfile)
#   2. builds colloquy (cargo build --bin colloquy)
#   3. creates a fresh database colloquy_e2e_<random> on the server scripts/dev-db.sh finds
#      (else postgres://postgres@127.0.0.1:5432)
#   4. starts `colloquy serve` on 127.0.0.1:<free port> with a random ADMIN_TOKEN; no SMTP, so
#      restore mails land in the `outbox` table, where the suite reads them
#   5. runs `node tests/e2e/run.mjs` (one PASS/FAIL line per scenario; screenshots and the
#      browser's colloquy traffic in tests/e2e/artifacts/), then `node tests/e2e/console.mjs`
#      (the operator console at /console/: actors, inbox, XSS)
#   6. on exit: stops the server and drops the database. Exits non-zero on any failure.
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default ~/.cache/colloquy/target)
#   DATABASE_URL       candidate PostgreSQL server (see scripts/dev-db.sh)
#   CHROMIUM_PATH      browser (default /usr/bin/chromium)
#   E2E_ONLY           comma-separated scenario names or numbers (node tests/e2e/run.mjs --list)
#   E2E_TIMEOUT_FACTOR multiplies every wait of the suite (default 1)
#   SERVER_START_TIMEOUT  seconds to wait for the server's /healthz (default 30)
#   KEEP_E2E_DB=1      keep the database (its name is printed) for a post-mortem
#   CONSOLE_SCREENSHOTS=docs  the console scenarios rewrite docs/console/*.png
#   E2E_BASE_URL       run against a colloquy already running there (e.g. the load balancer
#                      of scripts/cluster.sh) instead of building and starting one: steps 2-4
#                      and the clean-up of step 6 are skipped. Needs ADMIN_TOKEN (its admin
#                      token) and DATABASE_URL (its database: the restore scenario reads the
#                      outbox). E.g. scripts/cluster.sh --run sh -c \
#                        'E2E_BASE_URL=$BASE_URL DATABASE_URL=$CLUSTER_DB_URL scripts/e2e.sh'
# Arguments are passed to run.mjs and console.mjs (scenario names: `console`, `console-*`
# select console.mjs's, the others run.mjs's).
set -euo pipefail

log() { printf 'e2e.sh: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
E2E="$ROOT/tests/e2e"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquy/target}"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export CHROMIUM_PATH

# --- 1. tools ---------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust from https://rustup.rs"
command -v node >/dev/null 2>&1 || die "node not found (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm not found (Debian: apt-get install npm)"

apt_install() { # apt_install PACKAGE... (root on Debian only)
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing Debian packages: $* (apt-get, running as root)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "$@" >/dev/null ||
            { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; } ||
            die "apt-get install $* failed"
    else
        die "missing: $* — install it (Debian: sudo apt-get install $*)"
    fi
}

if [[ ! -x "$CHROMIUM_PATH" ]]; then
    [[ "$CHROMIUM_PATH" == /usr/bin/chromium ]] || die "CHROMIUM_PATH=$CHROMIUM_PATH is not an executable"
    apt_install chromium
    [[ -x "$CHROMIUM_PATH" ]] || die "apt-get installed chromium but $CHROMIUM_PATH is missing"
fi
command -v psql >/dev/null 2>&1 || apt_install postgresql-client
command -v curl >/dev/null 2>&1 || apt_install curl

# npm ci from the lockfile when node_modules is missing or older than the lockfile.
# playwright-core downloads no browser; nothing here installs `playwright` or `puppeteer`.
if [[ ! -d "$E2E/node_modules/posthog-js" || ! -d "$E2E/node_modules/playwright-core" ||
    "$E2E/package-lock.json" -nt "$E2E/node_modules/.package-lock.json" ]]; then
    log "npm ci in tests/e2e (from package-lock.json)"
    (cd "$E2E" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund) || die "npm ci failed"
fi

if [[ -n "${E2E_BASE_URL:-}" ]]; then
    [[ -n "${ADMIN_TOKEN:-}" ]] || die "E2E_BASE_URL is set but ADMIN_TOKEN (its admin token) is not"
    [[ -n "${DATABASE_URL:-}" ]] || die "E2E_BASE_URL is set but DATABASE_URL (its database) is not"
    curl -fsS --max-time 5 -o /dev/null "${E2E_BASE_URL%/}/readyz" || die "nothing ready at ${E2E_BASE_URL%/}/readyz"
    COLLOQUY_URL="${E2E_BASE_URL%/}"
    DB_URL="$DATABASE_URL"
    SERVER_PID=""
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/colloquy-e2e.XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    log "colloquy at $COLLOQUY_URL (external: E2E_BASE_URL)"
else
# --- 2. build ---------------------------------------------------------------------------
log "cargo build --bin colloquy"
cargo build --bin colloquy || die "cargo build failed"
BIN="$CARGO_TARGET_DIR/debug/colloquy"
[[ -x "$BIN" ]] || die "no binary at $BIN"

# --- 3. database ------------------------------------------------------------------------
SERVER_PID=""
E2E_DB=""
TMP="$(mktemp -d "${TMPDIR:-/tmp}/colloquy-e2e.XXXXXX")"
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
    if [[ -n "$E2E_DB" ]]; then
        if [[ "${KEEP_E2E_DB:-}" == 1 ]]; then
            log "keeping database $E2E_DB (KEEP_E2E_DB=1)"
        else
            colloquy_db_drop "$E2E_DB" >/dev/null 2>&1 || log "could not drop database $E2E_DB"
        fi
    fi
    if ((rc != 0)) && [[ -s "$TMP/server.log" ]]; then
        mkdir -p "$E2E/artifacts" && cp "$TMP/server.log" "$E2E/artifacts/server.log" 2>/dev/null || true
        log "server log kept in tests/e2e/artifacts/server.log"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -f "$ROOT/scripts/dev-db.sh" ]]; then
    # shellcheck source=scripts/dev-db.sh
    source "$ROOT/scripts/dev-db.sh" || die "no usable PostgreSQL server (scripts/dev-db.sh)"
else
    export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    colloquy_db_psql() { psql "${DATABASE_URL%/*}/postgres" -w -X -q -v ON_ERROR_STOP=1 "$@"; }
    colloquy_db_create() {
        colloquy_db_psql -c "CREATE DATABASE \"$1\"" >/dev/null && printf '%s/%s\n' "${DATABASE_URL%/*}" "$1"
    }
    colloquy_db_drop() { colloquy_db_psql -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null; }
fi
rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
E2E_DB="colloquy_e2e_$(rand_hex 6)"
DB_URL="$(colloquy_db_create "$E2E_DB")" || die "could not create database $E2E_DB"
log "database $E2E_DB"

# --- 4. server --------------------------------------------------------------------------
# Serve a private copy of the binary: a concurrent `cargo build`, or another script stopping
# "target/debug/colloquy" processes by name, must not pull the server out from under the suite.
cp "$BIN" "$TMP/colloquy-e2e-server"
BIN="$TMP/colloquy-e2e-server"
ADMIN_TOKEN="e2e-$(rand_hex 24)"
log "starting colloquy serve on a free port of 127.0.0.1"
env -u SMTP_URL DATABASE_URL="$DB_URL" BIND=127.0.0.1:0 ADMIN_TOKEN="$ADMIN_TOKEN" LOG_FORMAT=text \
    NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" "$BIN" serve >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
port=""
deadline=$((SECONDS + ${SERVER_START_TIMEOUT:-30}))
while :; do
    kill -0 "$SERVER_PID" 2>/dev/null || {
        tail -n 40 "$TMP/server.log" >&2
        die "the server exited during start-up"
    }
    if [[ -z "$port" ]]; then
        port="$(sed 's/\x1b\[[0-9;]*m//g' "$TMP/server.log" |
            grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' | head -n 1 | sed 's/.*://')" || true
    fi
    if [[ -n "$port" ]] && curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
        break
    fi
    if ((SECONDS >= deadline)); then
        tail -n 40 "$TMP/server.log" >&2
        die "the server did not come up within ${SERVER_START_TIMEOUT:-30} s"
    fi
    sleep 0.3
done
COLLOQUY_URL="http://127.0.0.1:$port"
log "colloquy at $COLLOQUY_URL"
fi

# --- 5. the suite -----------------------------------------------------------------------
# Scenario names choose the runners: `console` and `console-*` are console.mjs's, the rest
# run.mjs's; without names both run everything.
only="${E2E_ONLY:-}"
if (($#)); then only="$(IFS=,; printf '%s' "$*")"; fi
run_widget=1
run_console=1
if [[ -n "$only" ]]; then
    run_widget=0
    run_console=0
    IFS=, read -ra picks <<<"$only"
    for pick in "${picks[@]}"; do
        case "$pick" in
        console | console-*) run_console=1 ;;
        *) run_widget=1 ;;
        esac
    done
fi
rc=0
if ((run_widget)); then
    COLLOQUY_URL="$COLLOQUY_URL" ADMIN_TOKEN="$ADMIN_TOKEN" DATABASE_URL="$DB_URL" \
        node "$E2E/run.mjs" "$@" || rc=$?
fi
if ((run_console)); then
    COLLOQUY_URL="$COLLOQUY_URL" ADMIN_TOKEN="$ADMIN_TOKEN" \
        node "$E2E/console.mjs" "$@" || rc=$?
fi
if [[ -n "$SERVER_PID" ]] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "the server died during the suite$(grep -q 'SIGTERM received' "$TMP/server.log" && printf ' (it logged a SIGTERM: something outside the suite stopped it)')"
    rc=1
fi
if ((rc != 0)); then
    log "FAILED (exit $rc); last server log lines:"
    [[ -s "$TMP/server.log" ]] && tail -n 25 "$TMP/server.log" >&2
    exit "$rc"
fi
log "all passed"
