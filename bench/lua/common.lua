-- bench/lua/common.lua — shared by the wrk scripts of scripts/bench.sh.
--
-- Every script reads its rows from the TSV file named by $BENCH_DATA, one ticket a line:
--   ticket_id <TAB> distinct_id <TAB> public_token <TAB> tail <TAB> mid
-- where tail is the ticket's newest created_at (a poll with after=tail finds nothing new)
-- and mid is 10 messages earlier (a poll with after=mid returns ~10 messages).
-- Each wrk thread has its own Lua state: rows are loaded per thread in init().
-- Status classes are counted in response() and summed over threads in done(), which prints
--   BENCH_RESULT requests=… duration_us=… mean_us=… p50_us=… p99_us=… max_us=…
--                non2xx=… s5xx=… s4xx=… sock_errors=… codes=<status:count,…|->
--                [name=… for each of the script's extra counters]
-- for scripts/bench.sh to parse.
local M = {}

function M.load(path)
  local rows = {}
  local f = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  for line in f:lines() do
    local id, did, token, tail, mid = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)$")
    if id then
      rows[#rows + 1] = { id = id, did = did, token = token, tail = tail, mid = mid }
    end
  end
  f:close()
  assert(#rows > 0, "no rows in " .. path)
  return rows
end

-- Percent-encoding for query values (distinct_ids contain '@').
function M.q(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

-- Installs setup/init/response/done with status counting. `on_init(tid, nrows)` runs
-- in each thread after the rows are loaded. `extra` names global per-thread counters (set
-- to 0 before on_init) that done() sums over the threads and appends as name=value.
-- A script may define after_response(status, headers, body), called for every answer.
function M.install(on_init, extra)
  extra = extra or {}
  local threads = {}
  local counter = 0

  setup = function(thread)
    counter = counter + 1
    thread:set("tid", counter)
    threads[#threads + 1] = thread
  end

  init = function(args)
    local data = os.getenv("BENCH_DATA")
    if data and data ~= "" then rows = M.load(data) end
    math.randomseed((tid or 1) * 7919 + os.time())
    s2xx, s4xx, s5xx, other = 0, 0, 0, 0
    codes = {}
    for _, name in ipairs(extra) do _G[name] = 0 end
    if on_init then on_init(tid or 1, #rows) end
  end

  response = function(status, headers, body)
    if status >= 200 and status < 300 then
      s2xx = s2xx + 1
    else
      codes[status] = (codes[status] or 0) + 1
    end
    if status >= 200 and status < 300 then
    elseif status >= 500 then
      s5xx = s5xx + 1
    elseif status >= 400 then
      s4xx = s4xx + 1
    else
      other = other + 1
    end
    if after_response then after_response(status, headers, body) end
  end

  done = function(summary, latency, requests)
    local ok, c4, c5, co = 0, 0, 0, 0
    local all = {}
    for _, t in ipairs(threads) do
      for code, n in pairs(t:get("codes") or {}) do all[code] = (all[code] or 0) + n end
      ok = ok + (t:get("s2xx") or 0)
      c4 = c4 + (t:get("s4xx") or 0)
      c5 = c5 + (t:get("s5xx") or 0)
      co = co + (t:get("other") or 0)
    end
    local e = summary.errors
    local list = {}
    for code, n in pairs(all) do list[#list + 1] = code .. ":" .. n end
    table.sort(list)
    local more = ""
    for _, name in ipairs(extra) do
      local sum = 0
      for _, t in ipairs(threads) do sum = sum + (t:get(name) or 0) end
      more = more .. string.format(" %s=%d", name, sum)
    end
    io.write(string.format(
      "BENCH_RESULT requests=%d duration_us=%d mean_us=%.1f p50_us=%d p99_us=%d max_us=%d " ..
      "non2xx=%d s5xx=%d s4xx=%d sock_errors=%d codes=%s%s\n",
      summary.requests, summary.duration, latency.mean, latency:percentile(50),
      latency:percentile(99), latency.max, c4 + c5 + co, c5, c4,
      e.connect + e.read + e.write + e.timeout, #list > 0 and table.concat(list, ",") or "-",
      more))
  end
end

return M
