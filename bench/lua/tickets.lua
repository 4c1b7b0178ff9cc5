-- GET /api/conversations/widget/tickets for the visitor of a random row of $BENCH_DATA
-- (each bench visitor has 4 tickets).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
common.install()

request = function()
  local r = rows[math.random(#rows)]
  return wrk.format("GET", "/api/conversations/widget/tickets?distinct_id=" .. common.q(r.did),
    { ["X-Conversations-Token"] = r.token })
end
