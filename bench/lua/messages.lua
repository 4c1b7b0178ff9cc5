-- GET /api/conversations/widget/messages/{ticket_id} on a random ticket of $BENCH_DATA,
-- with after = $BENCH_AFTER of the row: "tail" (nothing new: answered from the ticket
-- actor's memory) or "mid" (~10 messages: a database query).
-- Every row's request is formatted once, in init: the load generator shares the cores with
-- colloquy, so per-request Lua string work would be counted against the server.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local which = os.getenv("BENCH_AFTER") or "tail"
local reqs = {}
common.install(function()
  for i, r in ipairs(rows) do
    reqs[i] = wrk.format("GET", "/api/conversations/widget/messages/" .. r.id ..
      "?distinct_id=" .. common.q(r.did) .. "&after=" .. common.q(r[which]),
      { ["X-Conversations-Token"] = r.token })
  end
end)

request = function()
  return reqs[math.random(#reqs)]
end
