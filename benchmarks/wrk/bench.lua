-- wrk script for benchmarks/run.py: shapes the request and prints a JSON
-- summary that run.py parses.
--
--   wrk ... -s bench.lua URL -- MODE [N]
--
--   get             the URL as is (wrk builds the request once: no per-request
--                   Lua call, so wrk stays as fast as without a script)
--   post N          POST an N-byte body (also built once)
--   http10          GET with HTTP/1.0 and no keep-alive: a connection each
--   pipeline N      N GETs written back to back on each connection
--
-- Extra headers (for example "Connection: close") are given with wrk -H.

local mode = "get"
local depth = 1

local function host_header()
   local host = wrk.headers["Host"]
   if host then
      return host
   end
   if wrk.port then
      return wrk.host .. ":" .. wrk.port
   end
   return wrk.host
end

function init(args)
   mode = args[1] or "get"
   if mode == "post" then
      local size = tonumber(args[2]) or 65536
      wrk.method = "POST"
      wrk.body = string.rep("x", size)
      wrk.headers["Content-Type"] = "application/octet-stream"
      -- wrk adds Content-Length itself when there is a body.
   elseif mode == "http10" then
      local req = "GET " .. wrk.path .. " HTTP/1.0\r\nHost: " .. host_header()
         .. "\r\n\r\n"
      request = function()
         return req
      end
   elseif mode == "pipeline" then
      depth = tonumber(args[2]) or 16
      local one = wrk.format("GET", wrk.path)
      local req = string.rep(one, depth)
      request = function()
         return req
      end
   elseif mode ~= "get" then
      error("bench.lua: unknown mode " .. mode)
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, '
      .. '"connect": %d, "read": %d, "write": %d, "status": %d, '
      .. '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "mean_us": %.1f}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean))
end
