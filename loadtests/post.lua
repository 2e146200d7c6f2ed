-- wrk script for the benchmark: POST the JSON body in the file named by the first
-- script argument, and print one machine-readable summary line at the end.
--   wrk -t1 -c16 -d3s --latency -s loadtests/post.lua URL -- body.json
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

-- wrk calls this once per thread before it formats the request.
function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.body = f:read("*a")
  f:close()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,' ..
    '"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p95_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read,
    e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean))
end
