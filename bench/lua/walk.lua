-- Polls every ticket of $BENCH_DATA exactly once (after = $BENCH_AFTER, default tail), split
-- over the wrk threads ($BENCH_THREADS of them), then stops: makes those tickets' actors
-- live (warm-up, and the 100k-actor memory measurement). Prints BENCH_RESULT like the others.
-- wrk's main thread sleeps for the whole -d, so each thread, once done, stops and creates
-- the file $BENCH_DONE.<thread number>; scripts/bench.sh then ends wrk with SIGINT.
-- BENCH_SURFACE=v1 polls through the posthog-js surface instead (rows keyed by
-- widget_session_id: GET /api/conversations/v1/widget/messages/{id}?widget_session_id=…).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local which = os.getenv("BENCH_AFTER") or "tail"
local v1 = os.getenv("BENCH_SURFACE") == "v1"
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local next_i, answered, total
common.install(function(t, n)  -- n: rows in $BENCH_DATA
  next_i = t
  answered = 0
  total = 0
  for i = t, n, nthreads do total = total + 1 end
end)

request = function()
  local i = next_i
  if i > #rows then i = ((i - 1) % #rows) + 1 end  -- extra in-flight requests repeat a row
  next_i = next_i + nthreads
  local r = rows[i]
  if v1 then
    return wrk.format("GET", "/api/conversations/v1/widget/messages/" .. r.id ..
      "?widget_session_id=" .. r.did .. "&after=" .. common.q(r[which]),
      { ["X-Conversations-Token"] = r.token })
  end
  return wrk.format("GET", "/api/conversations/widget/messages/" .. r.id ..
    "?distinct_id=" .. common.q(r.did) .. "&after=" .. common.q(r[which]),
    { ["X-Conversations-Token"] = r.token })
end

after_response = function(status)
  answered = answered + 1
  if answered == total then
    local f = io.open(os.getenv("BENCH_DONE") .. "." .. tostring(tid or 1), "w")
    if f then f:close() end
    wrk.thread:stop()
  end
end
