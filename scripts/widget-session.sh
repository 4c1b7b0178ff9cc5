#!/usr/bin/env bash
# scripts/widget-session.sh — the tester's curl session against a running colloquy server.
#
# Creates its own team (POST /api/teams with the admin token), then walks the documented
# widget API as a visitor with a random distinct_id, in seven steps, each printing the
# request, the HTTP status and PASS/FAIL:
#   1 first message -> 201          2 follow-up (with `<b>&`) -> 201, same ticket
#   3 GET messages -> 200, escaped  4 GET tickets -> 200, count 1, message_count 2
#   5 rate limit: 10 posts/minute pass, the 11th -> 429 + Retry-After
#   6 another distinct_id reads the ticket -> 403 forbidden
#   7 invalid token -> 401 invalid_token
# Exits 0 when every step passes, 1 when one fails, 2 when it cannot run at all.
#
# Environment:
#   BASE_URL     server address (default http://127.0.0.1:8080)
#   ADMIN_TOKEN  the server's admin bearer token (required)
#   CURL_MAX_TIME  per-request timeout in seconds (default 10)
#   RATE_LIMIT_NODES  nodes that count rate limits apart behind BASE_URL's load balancer
#                  (default 1; a cluster with REDIS_URL counts together: 1). With N nodes
#                  counting apart in round-robin, step 5 wants posts 1..10 accepted and the
#                  first refusal by post 10*N+1 (docs/scale-out.md).
# Needs bash, curl and jq.
set -euo pipefail

die() {
    printf 'widget-session: %s\n' "$*" >&2
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
RATE_LIMIT_NODES="${RATE_LIMIT_NODES:-1}"
[[ "$RATE_LIMIT_NODES" =~ ^[1-9]$ ]] || die "RATE_LIMIT_NODES must be 1..9"

rand_hex() { od -An -N8 -tx1 /dev/urandom | tr -d ' \n'; }
RUN_ID="$(rand_hex)"
DISTINCT_ID="session-${RUN_ID}@example.com"
OTHER_DISTINCT_ID="intruder-$(rand_hex)@example.com"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/widget-session.XXXXXX")"
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

header() { # header NAME -> value of the last response's header (case-insensitive)
    tr -d '\r' <"$HEADERS" | awk -v n="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" \
        'BEGIN{FS=": *"} tolower($1)==n {sub(/^[^:]*: */, ""); v=$0} END{print v}'
}

FAILED=0
PASSED=0
# report STEP "problems" — problems empty means PASS.
report() {
    local step="$1" problems="$2"
    if [[ -z "$problems" ]]; then
        printf '[%s/7] %-60s -> %s PASS\n' "$step" "$REQ_DESC" "$STATUS"
        PASSED=$((PASSED + 1))
    else
        printf '[%s/7] %-60s -> %s FAIL\n' "$step" "$REQ_DESC" "$STATUS"
        printf '%s' "$problems" | sed 's/^/        - /'
        if [[ "$STATUS" == 000 && -s "$TMP/curl-err" ]]; then
            sed 's/^/        curl: /' "$TMP/curl-err"
        elif [[ -s "$BODY" ]]; then
            printf '        body: %s\n' "$(head -c 600 "$BODY")"
        fi
        FAILED=$((FAILED + 1))
    fi
}

# expect_status WANT -> appends to $P
P=""
want() { P+="$1"$'\n'; }
expect_status() { [[ "$STATUS" == "$1" ]] || want "expected HTTP $1, got $STATUS"; }
expect_eq() { # expect_eq WHAT ACTUAL WANTED
    [[ "$2" == "$3" ]] || want "$1: expected '$3', got '$2'"
}
expect_nonempty() { [[ -n "$2" && "$2" != null ]] || want "$1 missing"; }

printf 'widget-session: %s, distinct_id %s\n' "$BASE_URL" "$DISTINCT_ID"

# --- setup: a team of our own -----------------------------------------------------------
TEAM_NAME="widget-session-$RUN_ID"
request POST /api/teams "$(jq -nc --arg n "$TEAM_NAME" '{name: $n}')" \
    -H "Authorization: Bearer $ADMIN_TOKEN"
PUBLIC_TOKEN="$(jb '.public_token // empty')"
if [[ "$STATUS" != 201 || -z "$PUBLIC_TOKEN" ]]; then
    printf '[setup] %-60s -> %s FAIL (expected 201 with public_token)\n' "$REQ_DESC" "$STATUS"
    [[ ! -s "$TMP/curl-err" ]] || sed 's/^/        curl: /' "$TMP/curl-err"
    [[ ! -s "$BODY" ]] || printf '        body: %s\n' "$(head -c 600 "$BODY")"
    die "cannot create a team; is the server up at $BASE_URL and ADMIN_TOKEN right?"
fi
printf '[setup] %-60s -> %s ok (team %s)\n' "$REQ_DESC" "$STATUS" "$TEAM_NAME"
TOK=(-H "X-Conversations-Token: $PUBLIC_TOKEN")
MSG_PATH=/api/conversations/widget/message
DID_Q="distinct_id=$(jq -rn --arg v "$DISTINCT_ID" '$v|@uri')"

# --- 1: first message -------------------------------------------------------------------
MSG1="Hello, I need help with my order (session $RUN_ID)"
request POST "$MSG_PATH" "$(jq -nc --arg d "$DISTINCT_ID" --arg m "$MSG1" \
    '{distinct_id: $d, message: $m, traits: {name: "Session Tester", email: $d}}')" "${TOK[@]}"
FIRST_POST_AT="$EPOCHREALTIME"
P=""
expect_status 201
TICKET_ID="$(jb '.ticket_id // empty')"
MESSAGE1_ID="$(jb '.message_id // empty')"
expect_nonempty ticket_id "$TICKET_ID"
expect_nonempty message_id "$MESSAGE1_ID"
expect_eq ticket_status "$(jb '.ticket_status')" new
expect_nonempty created_at "$(jb '.created_at // empty')"
report 1 "$P"

# --- 2: follow-up on the ticket, with markup to be escaped --------------------------------
MSG2="Follow-up: is <b>bold</b> & safe?"
MSG2_ESCAPED="Follow-up: is &lt;b&gt;bold&lt;/b&gt; &amp; safe?"
request POST "$MSG_PATH" "$(jq -nc --arg d "$DISTINCT_ID" --arg m "$MSG2" --arg t "$TICKET_ID" \
    '{distinct_id: $d, message: $m, ticket_id: $t, traits: {name: "Session Tester", email: $d}}')" "${TOK[@]}"
P=""
expect_status 201
expect_eq ticket_id "$(jb '.ticket_id // empty')" "$TICKET_ID"
MESSAGE2_ID="$(jb '.message_id // empty')"
expect_nonempty message_id "$MESSAGE2_ID"
[[ "$MESSAGE2_ID" != "$MESSAGE1_ID" ]] || want "message_id repeats the first message's"
report 2 "$P"

# --- 3: the ticket's messages -----------------------------------------------------------
request GET "/api/conversations/widget/messages/$TICKET_ID?$DID_Q" "" "${TOK[@]}"
P=""
expect_status 200
expect_eq ticket_id "$(jb '.ticket_id // empty')" "$TICKET_ID"
expect_eq "number of messages" "$(jb '.messages | length')" 2
expect_eq "messages[0].id" "$(jb '.messages[0].id')" "$MESSAGE1_ID"
expect_eq "messages[1].id" "$(jb '.messages[1].id')" "$MESSAGE2_ID"
expect_eq "messages[0].content" "$(jb '.messages[0].content')" "$MSG1"
expect_eq "messages[1].content (HTML-escaped)" "$(jb '.messages[1].content')" "$MSG2_ESCAPED"
expect_eq "author_type of both" "$(jb '[.messages[].author_type] | join(",")')" "customer,customer"
expect_eq "messages in ascending created_at" \
    "$(jb '[.messages[].created_at] | (. == sort) and (unique | length) == length')" true
expect_eq has_more "$(jb '.has_more')" false
report 3 "$P"

# --- 4: the visitor's tickets -----------------------------------------------------------
request GET "/api/conversations/widget/tickets?$DID_Q" "" "${TOK[@]}"
P=""
expect_status 200
expect_eq count "$(jb '.count')" 1
expect_eq "results[0].id" "$(jb '.results[0].id')" "$TICKET_ID"
expect_eq "results[0].message_count" "$(jb '.results[0].message_count')" 2
report 4 "$P"

# --- 5: rate limit: 10 posts per distinct_id per minute ---------------------------------
# Posts 1 and 2 were steps 1 and 2; posts 3..10 must pass, the 11th must be refused.
# The limit is a token bucket (10/minute = one token per 6 s): if this session was slow
# (more than 6 s since post 1), the refills earned meanwhile are allowed as extra posts.
P=""
post_n=2
first_refusal=0
while ((post_n < 20 + 20 * RATE_LIMIT_NODES)); do
    post_n=$((post_n + 1))
    request POST "$MSG_PATH" "$(jq -nc --arg d "$DISTINCT_ID" --arg t "$TICKET_ID" --arg m "rate-limit probe $post_n" \
        '{distinct_id: $d, message: $m, ticket_id: $t}')" "${TOK[@]}"
    if [[ "$STATUS" != 201 ]]; then
        first_refusal=$post_n
        break
    fi
done
now_us="${EPOCHREALTIME//[.,]/}"
elapsed_ms=$(((now_us - ${FIRST_POST_AT//[.,]/}) / 1000))
extra_allowed=$((RATE_LIMIT_NODES * elapsed_ms / 6000))
REQ_DESC="POST $MSG_PATH x$((post_n - 2)) (post #$post_n)"
if ((first_refusal == 0)); then
    want "no post was refused after $post_n posts in $((elapsed_ms / 1000)) s"
elif ((first_refusal <= 10)); then
    want "post #$first_refusal answered $STATUS; posts up to the 10th must be 201"
elif ((first_refusal > 10 * RATE_LIMIT_NODES + 1 + extra_allowed)); then
    want "post #$((10 * RATE_LIMIT_NODES + 1)) was not refused (first refusal at post #$first_refusal, ${elapsed_ms} ms after post #1)"
fi
if ((first_refusal > 10)); then
    expect_status 429
    retry_after_header="$(header Retry-After)"
    [[ "$retry_after_header" =~ ^[0-9]+$ ]] ||
        want "Retry-After header: expected whole seconds, got '${retry_after_header}'"
    expect_eq code "$(jb '.code')" rate_limited
    expect_eq "retry_after is a number" "$(jb '.retry_after | type')" number
fi
report 5 "$P"

# --- 6: another visitor cannot read the ticket ------------------------------------------
request GET "/api/conversations/widget/messages/$TICKET_ID?distinct_id=$(jq -rn --arg v "$OTHER_DISTINCT_ID" '$v|@uri')" "" "${TOK[@]}"
P=""
expect_status 403
expect_eq code "$(jb '.code')" forbidden
[[ "$(jb '.messages // empty')" == "" ]] || want "the response carries messages"
report 6 "$P"

# --- 7: an invalid token is refused -----------------------------------------------------
request POST "$MSG_PATH" "$(jq -nc --arg d "$DISTINCT_ID" '{distinct_id: $d, message: "with a wrong token"}')" \
    -H "X-Conversations-Token: invalid-$(rand_hex)"
P=""
expect_status 401
expect_eq code "$(jb '.code')" invalid_token
report 7 "$P"

printf 'widget-session: %d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
