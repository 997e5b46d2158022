-- wrk script for service_bench.py --client wrk: POST each prepared request once (its own patient and JWT).
-- The file named by MASCDS_BENCH_REQUESTS holds one request per line: "<Authorization header>\t<JSON body>".
-- Thread k of n sends lines k+1, k+1+n, ...; a thread that runs out starts again (the server then refuses the
-- replayed tokens, which the benchmark reports as errors: prepare more requests).
local path = os.getenv("MASCDS_BENCH_PATH")
local lines = {}
for line in io.lines(os.getenv("MASCDS_BENCH_REQUESTS")) do lines[#lines + 1] = line end

local made = 0
function setup(thread)
  thread:set("index", made)
  made = made + 1
end

local next_line, step = 0, 1
function init(args)
  next_line = index
  step = tonumber(os.getenv("MASCDS_BENCH_THREADS"))
end

function request()
  local line = lines[(next_line % #lines) + 1]
  next_line = next_line + step
  local tab = line:find("\t", 1, true)
  return wrk.format("POST", path, {["Authorization"] = line:sub(1, tab - 1),
                                   ["Content-Type"] = "application/json"}, line:sub(tab + 1))
end

function done(summary, latency, requests)
  io.write(string.format("MASCDS requests=%d non2xx=%d errors=%d seconds=%.3f median_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.duration / 1e6, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
