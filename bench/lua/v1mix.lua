-- The posthog-js widget's traffic on /api/conversations/v1/widget/…, as the SDK (1.449.x)
-- sends it: of every $BENCH_V1_POLLS + 1 requests of a wrk thread (default 9 + 1), one is a
-- send and the others are polls.
--
--   send  POST /api/conversations/v1/widget/message
--         {"widget_session_id", "ticket_id", "message", "distinct_id", "traits": {"name": null,
--          "email": null}, "session_id", "session_context": {"url"}}
--   poll  GET /api/conversations/v1/widget/messages/{ticket_id}?widget_session_id=…&after=…
--
-- both with X-Conversations-Token and the page's Origin. $BENCH_DATA rows are posthog-js
-- tickets (bench/seed.sql): ticket_id, widget_session_id, token, tail, mid, with tail written
-- as the v1 surface writes created_at (…123456+00:00). Each wrk thread owns the rows
-- i ≡ thread (mod $BENCH_THREADS): one widget per ticket, whose `after` is what that widget
-- has seen, like the SDK's: the seeded tail at first, then the created_at of its own sends
-- (the POST's answer) and of the newest message a poll brought back. No operator answers
-- during the load, so a poll finds nothing new (answered from the ticket actor's memory),
-- also right after a send (its created_at is already known), as in the browser; only a poll
-- that overtakes the answer to a send on the same ticket brings that message back.
-- Counts the 2xx answers of each kind: sends (the answer has a message_id) and polls.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local polls_per_send = tonumber(os.getenv("BENCH_V1_POLLS") or "9")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local mine, by_id, n, headers_get, headers_post

common.install(function(t, nrows)
  mine, by_id, n = {}, {}, 0
  for i = t, nrows, nthreads do mine[#mine + 1] = rows[i] end
  if #mine == 0 then mine = rows end -- fewer rows than threads: share them
  for _, r in ipairs(mine) do by_id[r.id] = r end
  headers_get = { ["Origin"] = "https://shop.bench.test" }
  headers_post = { ["Origin"] = "https://shop.bench.test", ["Content-Type"] = "application/json" }
end, { "sends", "polls" })

request = function()
  n = n + 1
  local r = mine[math.random(#mine)]
  if n % (polls_per_send + 1) == 0 then
    headers_post["X-Conversations-Token"] = r.token
    local body = string.format(
      '{"widget_session_id":"%s","ticket_id":"%s","message":"Any news on my order? It was ' ..
      'due on Monday, tracking says it is still in the warehouse (%d/%d).","distinct_id":' ..
      '"ph-anon-%s","traits":{"name":null,"email":null},"session_id":"%s",' ..
      '"session_context":{"url":"https://shop.bench.test/orders"}}',
      r.did, r.id, tid or 1, n, r.did:sub(-12), r.did)
    return wrk.format("POST", "/api/conversations/v1/widget/message", headers_post, body)
  end
  headers_get["X-Conversations-Token"] = r.token
  return wrk.format("GET", "/api/conversations/v1/widget/messages/" .. r.id ..
    "?widget_session_id=" .. r.did .. "&after=" .. common.q(r.tail), headers_get)
end

after_response = function(status, headers, body)
  if status < 200 or status >= 300 or not body then return end
  if body:find('"message_id"', 1, true) then
    sends = sends + 1
  else
    polls = polls + 1
  end
  local r = by_id[body:match('"ticket_id":"([^"]+)"') or ""]
  if not r then return end
  -- the newest created_at of the answer (a send's own, or a poll's last message); the same
  -- fixed-width format, so strings compare as times
  local last
  for at in body:gmatch('"created_at":"([^"]+)"') do last = at end
  if last and last > r.tail then r.tail = last end
end
