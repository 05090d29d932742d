-- wrk -s binary.lua URL ; BODY=path/to/body_b32.bin (Triton binary tensor extension: a JSON
-- header followed by raw tensor bytes); HEADER="Authorization: Bearer ..." optional; HLEN =
-- the JSON header's length in bytes (optional: found by matching the header's braces).
-- Sends Inference-Header-Content-Length and Content-Type: application/octet-stream.
-- Prints one SUMMARY line at the end.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
local h = os.getenv("HEADER")
if h and h ~= "" then
  local k, v = h:match("^([^:]+):%s*(.*)$")
  wrk.headers[k] = v
end
local f = assert(io.open(assert(os.getenv("BODY"), "set BODY"), "rb"))
wrk.body = f:read("*a"); f:close()

local function json_length(s)
  -- The header is one JSON object with no braces inside its strings.
  local depth = 0
  for i = 1, #s do
    local c = s:sub(i, i)
    if c == "{" then depth = depth + 1
    elseif c == "}" then
      depth = depth - 1
      if depth == 0 then return i end
    end
  end
  error("no JSON header in " .. os.getenv("BODY"))
end
local hlen = tonumber(os.getenv("HLEN") or "") or json_length(wrk.body)
wrk.headers["Inference-Header-Content-Length"] = tostring(hlen)

done = function(summary, latency, requests)
  io.write(string.format("SUMMARY rps=%.1f p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms reqs=%d errors(connect/read/write/status/timeout)=%d/%d/%d/%d/%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))
end
