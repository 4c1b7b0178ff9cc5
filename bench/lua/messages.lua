-- GET /api/conversations/widget/messages/{ticket_id} on a random ticket of $BENCH_DATA,
-- with after = $BENCH_AFTER of the row: "tail" (nothing new: answered from the ticket
-- actor's memory) or "mid" (~10 messages: a database query).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local which = os.getenv("BENCH_AFTER") or "tail"
common.install()

request = function()
  local r = rows[math.random(#rows)]
  return wrk.format("GET", "/api/conversations/widget/messages/" .. r.id ..
    "?distinct_id=" .. common.q(r.did) .. "&after=" .. common.q(r[which]),
    { ["X-Conversations-Token"] = r.token })
end
