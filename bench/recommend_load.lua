-- wrk script for bench/recommend_load.py: one random customer per request, in a realistic mix
-- of page contexts, optionally paced, and a JSON summary line at the end.
--
-- Environment: BENCH_RESOURCE (path segment after the customer, e.g. "recommendations"),
-- BENCH_CUSTOMERS, BENCH_PRODUCTS, BENCH_INTERVAL_MS (per thread; 0: as fast as it goes).

local resource = os.getenv("BENCH_RESOURCE") or "recommendations"
local customers = tonumber(os.getenv("BENCH_CUSTOMERS") or "100000")
local products = tonumber(os.getenv("BENCH_PRODUCTS") or "20000")
local interval_ms = tonumber(os.getenv("BENCH_INTERVAL_MS") or "0")
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads * 7919 + os.time())
end

function init(args)
  math.randomseed(seed)
end

-- Product pages dominate a storefront's traffic, then the home page, then the cart; a product
-- page names its product, popular ones more often (log-uniform: roughly Zipf's law).
local function query()
  local r = math.random()
  if r < 0.45 then
    local product = math.floor(products ^ math.random())
    return string.format("context=product_page&limit=10&product_id=sku-%05d", product - 1)
  elseif r < 0.80 then
    return "context=home&limit=10"
  elseif r < 0.95 then
    return "context=cart&limit=10"
  end
  return "context=email&limit=5"
end

function request()
  local customer = math.random(customers)
  local path = string.format("/v1/customers/customer-%06d/%s?%s", customer, resource, query())
  return wrk.format("GET", path)
end

-- Pacing: each thread keeps a schedule of one request every `interval_ms` and a connection
-- that asks for its next request waits for the next free slot. A fixed wait per connection
-- would drift below the rate by the latency; this holds the rate while connections are free.
-- A thread that fell behind by more than a few slots does not burst to catch up.
if interval_ms > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock_id, bench_timespec *tp);
  ]]
  local clock_monotonic, now = 1, ffi.new("bench_timespec")
  local next_at = nil

  function delay()
    ffi.C.clock_gettime(clock_monotonic, now)
    local now_ms = tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
    if next_at == nil or next_at < now_ms - 4 * interval_ms then
      next_at = now_ms
    end
    local wait = next_at - now_ms
    next_at = next_at + interval_ms
    return math.floor(wait + 0.5)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
