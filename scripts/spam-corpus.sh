#!/usr/bin/env bash
# scripts/spam-corpus.sh — measure the suspicion detector on a reproducible spam corpus.
#
# Builds colloquy, serves it on a fresh database (found by scripts/dev-db.sh) with
# TRUSTED_PROXIES=127.0.0.1 so each simulated client can have its own IP, and runs
# scripts/spam_corpus.py: normal conversations mixed with floods, link spam, enumeration
# sweeps and honeypot bots; it prints precision and recall of the flags and whether any
# legitimate visitor was blocked, and exits non-zero if the targets are missed.
#
# With --cluster it sends the corpus through the load balancer of a local two-node cluster
# instead (scripts/cluster.sh: round-robin, so every client's requests alternate between the
# nodes, which share their spam windows through Redis when one is found).
#
# Usage: scripts/spam-corpus.sh [--cluster] [--seed N] ...   (other arguments go to spam_corpus.py)
# Environment: CARGO_TARGET_DIR (default ~/.cache/colloquy/target), DATABASE_URL (see dev-db.sh);
#              with --cluster also CLUSTER_DIR (default .data/spam-cluster), CLUSTER_REDIS_URL
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquy/target}"
command -v python3 >/dev/null || { echo "spam-corpus: python3 is needed" >&2; exit 1; }
if [[ "${1:-}" == --cluster ]]; then
    shift
    export CLUSTER_DIR="${CLUSTER_DIR:-$ROOT/.data/spam-cluster}"
    exec scripts/cluster.sh --run python3 scripts/spam_corpus.py "$@"
fi
# shellcheck source=scripts/dev-db.sh
source scripts/dev-db.sh
cargo build --quiet --bin colloquy
DB="colloquy_spam_$RANDOM$RANDOM"
URL="$(colloquy_db_create "$DB")"
ADMIN="spam-corpus-$RANDOM$RANDOM$RANDOM"
LOG="$(mktemp)"
DATABASE_URL="$URL" BIND=127.0.0.1:0 ADMIN_TOKEN="$ADMIN" TRUSTED_PROXIES=127.0.0.1 NO_COLOR=1 \
    "$CARGO_TARGET_DIR/debug/colloquy" serve >"$LOG" 2>&1 &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    colloquy_db_drop "$DB" >/dev/null 2>&1 || true
    rm -f "$LOG"
}
trap cleanup EXIT
PORT=""
for _ in $(seq 1 100); do
    PORT="$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$LOG" | head -n1)"
    [[ -n "$PORT" ]] && break
    kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
    sleep 0.2
done
[[ -n "$PORT" ]] || { echo "spam-corpus: the server did not start" >&2; cat "$LOG" >&2; exit 1; }
BASE_URL="http://127.0.0.1:$PORT" ADMIN_TOKEN="$ADMIN" python3 scripts/spam_corpus.py "$@"
