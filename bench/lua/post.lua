-- POST /api/conversations/widget/message: a follow-up on a ticket drawn at random from
-- $BENCH_DATA (the spread set: thousands of tickets; the hot set: a few tickets).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local seq = 0
common.install()

request = function()
  local r = rows[math.random(#rows)]
  seq = seq + 1
  local body = string.format(
    '{"distinct_id":"%s","ticket_id":"%s","message":"Any news on my order? It was due on Monday, ' ..
    'tracking says it is still in the warehouse (%d/%d).","_hp":""}',
    r.did, r.id, tid or 1, seq)
  return wrk.format("POST", "/api/conversations/widget/message", {
    ["Content-Type"] = "application/json",
    ["X-Conversations-Token"] = r.token,
  }, body)
end
