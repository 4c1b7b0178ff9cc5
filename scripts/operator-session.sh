#!/usr/bin/env bash
# scripts/operator-session.sh — an operator's curl session against a running colloquy server.
#
# Creates its own team (POST /api/teams with the admin token), opens a ticket as a visitor
# with a random distinct_id, then works it through the operator API (bearer secret key) and
# checks what the visitor sees, in eight steps, each printing the request, the HTTP status
# and PASS/FAIL:
#   1 visitor opens a ticket -> 201        2 operator inbox -> 200, lists the ticket
#   3 operator reply (human) -> 201        4 operator private note -> 201
#   5 PATCH status resolved -> 200         6 operator GET ticket -> 3 messages, note included
#   7 visitor GET messages -> the reply (escaped), not the note, status resolved, unread 1
#   8 visitor GET tickets -> message_count 2, last_message the reply, status resolved
# Exits 0 when every step passes, 1 when one fails, 2 when it cannot run at all.
#
# Environment:
#   BASE_URL     server address (default http://127.0.0.1:8080)
#   ADMIN_TOKEN  the server's admin bearer token (required)
#   CURL_MAX_TIME  per-request timeout in seconds (default 10)
# Needs bash, curl and jq.
set -euo pipefail

die() {
    printf 'operator-session: %s\n' "$*" >&2
    exit 2
}

for tool in curl jq; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' is required but not installed (Debian: apt-get install $tool)"
done

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
BASE_URL="${BASE_URL%/}"
[[ -n "${ADMIN_TOKEN:-}" ]] || die "ADMIN_TOKEN is not set (the server's admin bearer token)"
CURL_MAX_TIME="${CURL_MAX_TIME:-10}"
STEPS=8

rand_hex() { od -An -N8 -tx1 /dev/urandom | tr -d ' \n'; }
RUN_ID="$(rand_hex)"
DISTINCT_ID="operator-session-${RUN_ID}@example.com"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/operator-session.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
BODY="$TMP/body"
HEADERS="$TMP/headers"

# request METHOD PATH [JSON_BODY] [curl header args...]
# Sets STATUS (000 when the connection failed); body in $BODY, headers in $HEADERS.
REQ_DESC=""
STATUS=""
request() {
    local method="$1" path="$2" data="${3:-}"
    shift 3 || shift $#
    local args=(-sS -o "$BODY" -D "$HEADERS" -w '%{http_code}' --max-time "$CURL_MAX_TIME"
        -X "$method" -H 'Accept: application/json')
    if [[ -n "$data" ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$data")
    fi
    REQ_DESC="$method $path"
    : >"$BODY"
    : >"$HEADERS"
    STATUS="$(curl "${args[@]}" "$@" "$BASE_URL$path" 2>"$TMP/curl-err")" || true
    [[ "$STATUS" =~ ^[0-9]{3}$ ]] || STATUS=000
}

# jq on the last body; prints nothing (and fails) when the body is not JSON.
jb() { jq -r "$@" "$BODY" 2>/dev/null || true; }

FAILED=0
PASSED=0
# report STEP "problems" — problems empty means PASS.
report() {
    local step="$1" problems="$2"
    local desc="$REQ_DESC"
    ((${#desc} <= 60)) || desc="${desc:0:57}..."
    if [[ -z "$problems" ]]; then
        printf '[%s/%s] %-60s -> %s PASS\n' "$step" "$STEPS" "$desc" "$STATUS"
        PASSED=$((PASSED + 1))
    else
        printf '[%s/%s] %-60s -> %s FAIL\n' "$step" "$STEPS" "$desc" "$STATUS"
        printf '%s' "$problems" | sed 's/^/        - /'
        if [[ "$STATUS" == 000 && -s "$TMP/curl-err" ]]; then
            sed 's/^/        curl: /' "$TMP/curl-err"
        elif [[ -s "$BODY" ]]; then
            printf '        body: %s\n' "$(head -c 600 "$BODY")"
        fi
        FAILED=$((FAILED + 1))
    fi
}

P=""
want() { P+="$1"$'\n'; }
expect_status() { [[ "$STATUS" == "$1" ]] || want "expected HTTP $1, got $STATUS"; }
expect_eq() { # expect_eq WHAT ACTUAL WANTED
    [[ "$2" == "$3" ]] || want "$1: expected '$3', got '$2'"
}
expect_nonempty() { [[ -n "$2" && "$2" != null ]] || want "$1 missing"; }

printf 'operator-session: %s, distinct_id %s\n' "$BASE_URL" "$DISTINCT_ID"

# --- setup: a team of our own -----------------------------------------------------------
TEAM_NAME="operator-session-$RUN_ID"
request POST /api/teams "$(jq -nc --arg n "$TEAM_NAME" '{name: $n}')" \
    -H "Authorization: Bearer $ADMIN_TOKEN"
PUBLIC_TOKEN="$(jb '.public_token // empty')"
SECRET_KEY="$(jb '.secret_api_key // empty')"
if [[ "$STATUS" != 201 || -z "$PUBLIC_TOKEN" || -z "$SECRET_KEY" ]]; then
    printf '[setup] %-60s -> %s FAIL (expected 201 with public_token and secret_api_key)\n' \
        "$REQ_DESC" "$STATUS"
    [[ ! -s "$TMP/curl-err" ]] || sed 's/^/        curl: /' "$TMP/curl-err"
    [[ ! -s "$BODY" ]] || printf '        body: %s\n' "$(head -c 600 "$BODY")"
    die "cannot create a team; is the server up at $BASE_URL and ADMIN_TOKEN right?"
fi
printf '[setup] %-60s -> %s ok (team %s)\n' "$REQ_DESC" "$STATUS" "$TEAM_NAME"
TOK=(-H "X-Conversations-Token: $PUBLIC_TOKEN")
OP=(-H "Authorization: Bearer $SECRET_KEY")
DID_Q="distinct_id=$(jq -rn --arg v "$DISTINCT_ID" '$v|@uri')"

# --- 1: the visitor opens a ticket ------------------------------------------------------
MSG1="My order never arrived (session $RUN_ID)"
request POST /api/conversations/widget/message "$(jq -nc --arg d "$DISTINCT_ID" --arg m "$MSG1" \
    '{distinct_id: $d, message: $m, traits: {name: "Session Visitor"}}')" "${TOK[@]}"
P=""
expect_status 201
TICKET_ID="$(jb '.ticket_id // empty')"
expect_nonempty ticket_id "$TICKET_ID"
expect_eq ticket_status "$(jb '.ticket_status')" new
report 1 "$P"
[[ -n "$TICKET_ID" ]] || die "no ticket to work on"

# --- 2: the operator's inbox ------------------------------------------------------------
request GET "/api/conversations/tickets?status=new&$DID_Q" "" "${OP[@]}"
P=""
expect_status 200
expect_eq count "$(jb '.count')" 1
expect_eq "results[0].id" "$(jb '.results[0].id')" "$TICKET_ID"
expect_eq "results[0].distinct_id" "$(jb '.results[0].distinct_id')" "$DISTINCT_ID"
expect_eq "results[0].status" "$(jb '.results[0].status')" new
expect_eq "results[0].message_count" "$(jb '.results[0].message_count')" 1
report 2 "$P"

# --- 3: a public reply ------------------------------------------------------------------
REPLY="Sorry! <b>Reshipping</b> today & refunding postage."
REPLY_ESCAPED="Sorry! &lt;b&gt;Reshipping&lt;/b&gt; today &amp; refunding postage."
request POST "/api/conversations/tickets/$TICKET_ID/messages" "$(jq -nc --arg c "$REPLY" \
    '{content: $c, author_type: "human", author_name: "Alice (support)", is_private: false}')" "${OP[@]}"
P=""
expect_status 201
REPLY_ID="$(jb '.id // empty')"
expect_nonempty id "$REPLY_ID"
expect_eq content "$(jb '.content')" "$REPLY"
expect_eq author_type "$(jb '.author_type')" human
expect_eq is_private "$(jb '.is_private')" false
report 3 "$P"

# --- 4: a private note ------------------------------------------------------------------
NOTE="PRIVATE: second complaint this month ($RUN_ID)"
request POST "/api/conversations/tickets/$TICKET_ID/messages" "$(jq -nc --arg c "$NOTE" \
    '{content: $c, author_type: "human", author_name: "Alice (support)", is_private: true}')" "${OP[@]}"
P=""
expect_status 201
NOTE_ID="$(jb '.id // empty')"
expect_nonempty id "$NOTE_ID"
expect_eq is_private "$(jb '.is_private')" true
report 4 "$P"

# --- 5: resolve the ticket --------------------------------------------------------------
request PATCH "/api/conversations/tickets/$TICKET_ID" '{"status": "resolved"}' "${OP[@]}"
P=""
expect_status 200
expect_eq status "$(jb '.status')" resolved
report 5 "$P"

# --- 6: the operator sees everything, unescaped ----------------------------------------
request GET "/api/conversations/tickets/$TICKET_ID" "" "${OP[@]}"
P=""
expect_status 200
expect_eq status "$(jb '.status')" resolved
expect_eq "number of messages" "$(jb '.messages | length')" 3
expect_eq "messages[1].content (unescaped)" "$(jb '.messages[1].content')" "$REPLY"
expect_eq "messages[2].id (the note)" "$(jb '.messages[2].id')" "$NOTE_ID"
expect_eq "messages[2].is_private" "$(jb '.messages[2].is_private')" true
report 6 "$P"

# --- 7: the visitor sees the reply, not the note, and the status ------------------------
request GET "/api/conversations/widget/messages/$TICKET_ID?$DID_Q" "" "${TOK[@]}"
P=""
expect_status 200
expect_eq ticket_status "$(jb '.ticket_status')" resolved
expect_eq "number of messages" "$(jb '.messages | length')" 2
expect_eq "messages[1].id" "$(jb '.messages[1].id')" "$REPLY_ID"
expect_eq "messages[1].content (HTML-escaped)" "$(jb '.messages[1].content')" "$REPLY_ESCAPED"
expect_eq "messages[1].author_type" "$(jb '.messages[1].author_type')" human
expect_eq "messages[1].author_name" "$(jb '.messages[1].author_name')" "Alice (support)"
expect_eq "is_private of all" "$(jb '[.messages[].is_private] | any')" false
# shellcheck disable=SC2016 # $n is a jq variable
expect_eq "the note's id is absent" "$(jb --arg n "$NOTE_ID" '[.messages[].id] | index($n)')" null
grep -q "PRIVATE: second complaint" "$BODY" && want "the private note's text is in the visitor's response"
expect_eq unread_count "$(jb '.unread_count')" 1
report 7 "$P"

# --- 8: the visitor's ticket list -------------------------------------------------------
request GET "/api/conversations/widget/tickets?$DID_Q" "" "${TOK[@]}"
P=""
expect_status 200
expect_eq count "$(jb '.count')" 1
expect_eq "results[0].status" "$(jb '.results[0].status')" resolved
expect_eq "results[0].message_count (public only)" "$(jb '.results[0].message_count')" 2
expect_eq "results[0].last_message" "$(jb '.results[0].last_message')" "$REPLY_ESCAPED"
grep -q "PRIVATE: second complaint" "$BODY" && want "the private note's text is in the visitor's response"
report 8 "$P"

printf 'operator-session: %d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
