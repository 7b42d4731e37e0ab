-- wrk at a fixed request rate (wrk2 is not packaged): each wrk thread keeps a schedule of
-- send times, one every 1000 * threads / rate ms, and delay() holds a connection until the
-- next slot. A thread that falls behind sends at once until it has caught up (at most one
-- second of backlog; older slots are dropped and counted). Requests go to a new path under
-- PREFIX each time, so every request is a first-seen decision to esm, not a memo hit.
-- Args after `--`: RATE_PER_THREAD PREFIX [same]   (same: PREFIX itself on every request)
-- done() prints one line "soak-wrk {json}" with the counts, latency percentiles (µs) and
-- the answers outside 2xx/3xx by status code.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clk_id, soak_timespec *tp);
]]
local ts = ffi.new("soak_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval, prefix, same, nxt, n
-- Globals, not locals: done() reads them from each thread with thread:get().
dropped = 0
-- Answers outside 2xx/3xx by status code, as text "code=count,code=count".
bad = ""
local bad_counts = {}

function init(args)
  local rate = tonumber(args[1]) or 100
  interval = 1000 / rate
  prefix = args[2] or "/hello"
  same = args[3] == "same"
  n = 0
  dropped = 0
end

function delay()
  local now = now_ms()
  if nxt == nil then nxt = now end
  nxt = nxt + interval
  if now - nxt > 1000 then
    local behind = math.floor((now - nxt) / interval)
    dropped = dropped + behind
    nxt = nxt + behind * interval
  end
  local d = nxt - now
  if d < 0 then return 0 end
  return math.floor(d)
end

function request()
  n = n + 1
  if same then return wrk.format("GET", prefix) end
  return wrk.format("GET", prefix .. "/" .. n)
end

function response(status, headers, body)
  if status >= 400 or status < 200 then
    bad_counts[status] = (bad_counts[status] or 0) + 1
    local parts = {}
    for code, count in pairs(bad_counts) do table.insert(parts, code .. "=" .. count) end
    bad = table.concat(parts, ",")
  end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local lost, codes = 0, {}
  for _, t in ipairs(threads) do
    lost = lost + (t:get("dropped") or 0)
    for code, count in string.gmatch(t:get("bad") or "", "(%d+)=(%d+)") do
      codes[code] = (codes[code] or 0) + tonumber(count)
    end
  end
  local bad_json = {}
  for code, count in pairs(codes) do table.insert(bad_json, '"' .. code .. '":' .. count) end
  local e = summary.errors
  io.write(string.format(
    'soak-wrk {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"slots_dropped":%d,"bad_status":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, lost, table.concat(bad_json, ",")))
end
