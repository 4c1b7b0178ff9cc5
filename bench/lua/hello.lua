-- GET / on the hello-world floor (examples/hello.rs), counted like the colloquy loads.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
common.install()
request = function()
  return wrk.format("GET", "/api/conversations/widget/messages/x?distinct_id=bench-1%40example.com")
end
