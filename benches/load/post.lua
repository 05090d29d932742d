-- wrk -s post.lua URL ; BODY=path/to/body.json (a V2 JSON infer request);
-- HEADER="Authorization: Bearer ..." optional. Prints one SUMMARY line at the end.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local h = os.getenv("HEADER")
if h and h ~= "" then
  local k, v = h:match("^([^:]+):%s*(.*)$")
  wrk.headers[k] = v
end
local f = assert(io.open(assert(os.getenv("BODY"), "set BODY"), "rb"))
wrk.body = f:read("*a"); f:close()

done = function(summary, latency, requests)
  io.write(string.format("SUMMARY rps=%.1f p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms reqs=%d errors(connect/read/write/status/timeout)=%d/%d/%d/%d/%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))
end
