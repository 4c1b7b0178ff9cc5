#!/usr/bin/env bash
# scripts/run.sh — one command from a fresh clone to a running colloquy server.
#
# Builds the release binary, finds (or starts) PostgreSQL via scripts/dev-db.sh, creates the
# database `colloquy` if missing, migrates it, makes sure an admin token and a demo team
# exist, prints the demo team's public token with a ready-to-paste curl example, and then
# replaces itself with `colloquy serve`.
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default ~/.cache/colloquy/target)
#   DATABASE_URL      a database to use as is (else: dev-db.sh discovery + database `colloquy`)
#   ADMIN_TOKEN       admin bearer token (else generated once and kept in .data/admin-token)
#   BIND              listen address (default 127.0.0.1:8080)
#   also passed through to the server: TRUSTED_PROXIES, DATABASE_POOL_SIZE, LOG_FORMAT,
#   and everything scripts/dev-db.sh reads (COLLOQUY_DB_SKIP_SYSTEM, COLLOQUY_DB_PORT, ...).
# Files it keeps (git-ignored): .data/admin-token, .data/demo-team.json (the demo team as
# first created, with its secret API key, which the server only stores hashed).
set -euo pipefail

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquy/target}"

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust from https://rustup.rs"
command -v jq >/dev/null 2>&1 || die "jq not found (Debian: apt-get install jq)"

log "building (cargo build --release, target dir $CARGO_TARGET_DIR)"
cargo build --release
BIN="$CARGO_TARGET_DIR/release/colloquy"
[[ -x "$BIN" ]] || die "the build did not produce $BIN"

# --- database ---------------------------------------------------------------------------
# shellcheck source=scripts/dev-db.sh
source "$ROOT/scripts/dev-db.sh"
db_name="${DATABASE_URL##*/}"
db_name="${db_name%%\?*}"
if [[ "$COLLOQUY_DB_SOURCE" == env && -n "$db_name" && "$db_name" != postgres ]]; then
    log "using DATABASE_URL as given (database '$db_name')"
else
    DATABASE_URL="$(colloquy_db_create colloquy)"
    export DATABASE_URL
    log "database: $DATABASE_URL"
fi

log "migrating"
"$BIN" migrate

# --- admin token ------------------------------------------------------------------------
mkdir -p .data
if [[ -n "${ADMIN_TOKEN:-}" ]]; then
    log "ADMIN_TOKEN taken from the environment"
else
    if [[ ! -s .data/admin-token ]]; then
        (
            umask 077
            od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >.data/admin-token
        )
        log "generated an admin token in .data/admin-token"
    fi
    ADMIN_TOKEN="$(cat .data/admin-token)"
fi
export ADMIN_TOKEN

# --- demo team --------------------------------------------------------------------------
team_json="$("$BIN" team create --name demo --if-not-exists)" ||
    die "colloquy team create --name demo --if-not-exists failed"
team_id="$(jq -r '.id' <<<"$team_json")"
public_token="$(jq -r '.public_token' <<<"$team_json")"
secret_key="$(jq -r '.secret_api_key // empty' <<<"$team_json")"
if [[ -n "$secret_key" ]]; then
    (
        umask 077
        printf '%s\n' "$team_json" >.data/demo-team.json
    )
    log "created the demo team; its JSON (with the secret API key) is in .data/demo-team.json"
elif [[ -s .data/demo-team.json && "$(jq -r '.id' .data/demo-team.json 2>/dev/null)" == "$team_id" ]]; then
    secret_key="$(jq -r '.secret_api_key // empty' .data/demo-team.json)"
else
    secret_key=""
fi

bind="${BIND:-127.0.0.1:8080}"
host="${bind%:*}"
port="${bind##*:}"
case "$host" in 0.0.0.0 | "" | "[::]" | "::") host=127.0.0.1 ;; esac
base="http://$host:$port"

cat >&2 <<EOF

================================================================================
 colloquy — demo team "demo" ($team_id)
   public token (X-Conversations-Token): $public_token
   secret API key (operator API):        ${secret_key:-unknown: shown only at creation; .data/demo-team.json does not have it}
   admin token (POST /api/teams):        $ADMIN_TOKEN
   database:                             $DATABASE_URL

 Try it once the server is up:

   curl -sS -X POST $base/api/conversations/widget/message \\
     -H 'Content-Type: application/json' \\
     -H 'X-Conversations-Token: $public_token' \\
     -d '{"distinct_id": "newcomer@example.com", "message": "Hello!", "traits": {"name": "New Comer"}}'

 and the whole widget walk:  BASE_URL=$base ADMIN_TOKEN=$ADMIN_TOKEN scripts/widget-session.sh

 Operator console:  $base/console/  (actors: the admin token; inbox: the secret API key)
================================================================================

EOF
if [[ "$port" == 0 ]]; then
    log "BIND uses port 0: the real address is in the server's 'listening on' log line"
fi

log "starting: colloquy serve on $bind"
export BIND="$bind"
exec "$BIN" serve
