-- wrk 4.x done() hook: writes what bench.py needs to a JSON file (path in
-- $BENCH_WRK_OUT).
--
-- Why not just latency:percentile()? In wrk 4.x main() runs
-- stats_correct(latency, runtime / (requests / connections)) before the
-- summary is printed and before done() is called: every sample at least twice
-- that "expected interval" adds synthetic samples below it (coordinated-omission
-- correction). So the printed percentiles and latency:percentile() are the
-- CORRECTED ones. We record those, and also dump the whole (corrected) latency
-- histogram so bench.py can undo the correction exactly and report the
-- per-request latencies wrk actually measured (write of the request to the end
-- of the response, per connection, closed loop).
--
-- The histogram is read through LuaJIT's FFI (wrk links LuaJIT): the stats
-- userdata holds a `stats *` whose layout in wrk 4.x is
--   { uint64_t count, limit, min, max; uint64_t data[]; }
-- with data[] indexed by microseconds. Walking data[min..max] once is O(range);
-- the Lua API (latency(i)) would be O(range) per distinct value. bench.py
-- checks the dump against wrk's own count and the request total.
local ffi = require("ffi")

local function corrected_histogram(latency)
  local s = ffi.cast("uint64_t **", latency)[0]
  local count, lo, hi = tonumber(s[0]), tonumber(s[2]), tonumber(s[3])
  local out, total = {}, 0
  if count > 0 then
    for v = lo, hi do
      local c = tonumber(s[4 + v])
      if c > 0 then
        out[#out + 1] = "[" .. v .. "," .. c .. "]"
        total = total + c
      end
    end
  end
  return count, total, table.concat(out, ",")
end

function done(summary, latency, requests)
  local path = os.getenv("BENCH_WRK_OUT")
  if not path then return end
  local f = assert(io.open(path, "w"))
  local e = summary.errors
  local count, total, hist = corrected_histogram(latency)
  local pct = {}
  for _, p in ipairs({50, 90, 99, 99.9, 99.99}) do
    pct[#pct + 1] = string.format('"%s":%d', tostring(p), latency:percentile(p))
  end
  f:write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"corrected":{"count":%d,"min":%d,"max":%d,"mean":%.3f,"percentiles":{%s}},' ..
    '"corrected_hist_total":%d,"corrected_hist":[%s]}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    count, latency.min, latency.max, latency.mean, table.concat(pct, ","),
    total, hist))
  f:close()
end
