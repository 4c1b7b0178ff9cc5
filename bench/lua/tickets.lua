-- GET /api/conversations/widget/tickets for the visitor of a random row of $BENCH_DATA
-- (each bench visitor has 4 tickets). Requests are formatted once, in init (as messages.lua).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local reqs = {}
common.install(function()
  for i, r in ipairs(rows) do
    reqs[i] = wrk.format("GET", "/api/conversations/widget/tickets?distinct_id=" .. common.q(r.did),
      { ["X-Conversations-Token"] = r.token })
  end
end)

request = function()
  return reqs[math.random(#reqs)]
end
