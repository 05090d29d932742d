#!/usr/bin/env bash
# Load test of cairn's KServe V2 infer on the digits demo model with wrk.
#
#   benches/load/run.sh http://127.0.0.1:8080 cairn_<id>_<secret> [MODEL]
#
# Runs `wrk -t2 -c16 -d15s --latency` for three bodies: batch 1 JSON, batch 32 JSON and
# batch 32 in Triton's binary tensor extension, and prints wrk's latency distribution and
# one SUMMARY line per case (rps, p50/p90/p99, max, errors). Bodies come from
# make_bodies.py. Override the wrk settings with WRK_ARGS (default "-t2 -c16 -d15s").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${1:?usage: run.sh URL_BASE KEY [MODEL]}
key=${2:?usage: run.sh URL_BASE KEY [MODEL]}
model=${3:-digits}
base=${base%/}
url=$base/v2/models/$model/infer
wrk_args=${WRK_ARGS:--t2 -c16 -d15s}
command -v ${WRK:-wrk} >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
for f in body_b1.json body_b32.json body_b32.bin; do
  [ -f "$here/$f" ] || { echo "$here/$f missing: run python3 $here/make_bodies.py" >&2; exit 1; }
done

# Length of the JSON header of the binary body (everything up to its closing brace).
hlen=$(python3 -c 'import json, sys; d = open(sys.argv[1], "rb").read(); print(json.JSONDecoder().raw_decode(d[:4096].decode("latin-1"))[1])' "$here/body_b32.bin")

# One request per case first: a wrong key or model fails here, not as 15 s of non-2xx.
check() {
  local label=$1; shift
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$@" "$url" || true)
  [ "$code" = 200 ] || { echo "$label: POST $url answered $code" >&2; exit 1; }
}
check b1_json -H 'Content-Type: application/json' --data-binary "@$here/body_b1.json"
check b32_json -H 'Content-Type: application/json' --data-binary "@$here/body_b32.json"
check b32_binary -H 'Content-Type: application/octet-stream' \
  -H "Inference-Header-Content-Length: $hlen" --data-binary "@$here/body_b32.bin"

run() {
  local label=$1 script=$2 body=$3
  echo "== $label: wrk $wrk_args --latency POST $url"
  # shellcheck disable=SC2086
  HEADER="Authorization: Bearer $key" BODY=$here/$body HLEN=$hlen \
    timeout 60 ${WRK:-wrk} $wrk_args --latency -s "$here/$script" "$url" |
    grep -E 'Requests/sec|Non-2xx|Socket errors|^ +(50|75|90|99)%|SUMMARY' | sed "s/^/$label /"
}
run b1_json post.lua body_b1.json
run b32_json post.lua body_b32.json
run b32_binary binary.lua body_b32.bin
