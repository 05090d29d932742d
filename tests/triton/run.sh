#!/usr/bin/env bash
# End-to-end test with NVIDIA's official Triton HTTP client (tritonclient[http]) against a
# real cairn: starts `cairn serve` on a fresh data dir and an ephemeral port, waits for the
# auto-deployed demo model, provisions an API key, runs test_triton_client.py, stops the
# server and propagates the test's exit status.
#
#   CAIRN_BIN=target/debug/cairn tests/triton/run.sh
#
# Needs python3 with tritonclient[http], onnxruntime and numpy, and curl.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${CAIRN_BIN:-target/debug/cairn}
case $bin in /*) ;; */*) bin=$root/$bin ;; esac
model=${CAIRN_MODEL:-digits}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cairn-triton.XXXXXX")
log=$tmp/serve.log
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "triton e2e: FAIL: $*" >&2
  if [ -f "$log" ]; then echo "--- cairn log (last 40 lines) ---" >&2; tail -n 40 "$log" >&2; fi
  exit 1
}

env -u CAIRN_ADMIN_PASSWORD_FILE -u CAIRN_CONFIG CAIRN_ADMIN_PASSWORD='triton-e2e-password-1' \
  "$bin" serve --data-dir "$tmp/data" --http-listen 127.0.0.1:0 --https-listen off \
  --log-format json >"$tmp/serve.out" 2>"$log" &
pid=$!

# The address from the JSON log line {"message":"listening","listener":"http","addr":...}.
addr=
for _ in $(seq 1 300); do
  kill -0 "$pid" 2>/dev/null || fail "cairn exited during startup"
  addr=$(python3 - "$log" "$tmp/serve.out" <<'EOF'
import json, sys
for path in sys.argv[1:]:
    with open(path, errors="replace") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("message") == "listening" \
                    and event.get("listener") == "http" and event.get("addr"):
                print(event["addr"])
                sys.exit(0)
EOF
  ) || true
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || fail "no 'listening' log line for the http listener within 30 s"
echo "cairn listening on $addr"

code=
for _ in $(seq 1 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/health/ready" || true)
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] || fail "GET /v2/health/ready: $code"

# `admin create-key` prints the key (cairn_<16 hex>_<secret>) alone on a line of stdout.
keyout=$("$bin" admin create-key --data-dir "$tmp/data" --user admin --scopes infer,models:read \
  --name triton-e2e) || fail "admin create-key failed"
key=$(printf '%s\n' "$keyout" | grep -oE 'cairn_[0-9a-f]{16}_[A-Za-z0-9_-]+' | tail -n 1 || true)
[ -n "$key" ] || fail "no key in the output of admin create-key: $keyout"

for _ in $(seq 1 120); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
    "http://$addr/v2/models/$model/ready" || true)
  [ "$code" = 200 ] && break
  kill -0 "$pid" 2>/dev/null || fail "cairn exited while waiting for the model"
  sleep 0.5
done
[ "$code" = 200 ] || fail "GET /v2/models/$model/ready: $code after 60 s"

status=0
CAIRN_URL=$addr CAIRN_KEY=$key CAIRN_MODEL=$model \
  CAIRN_MODEL_FILE=${CAIRN_MODEL_FILE:-$root/assets/models/digits.onnx} \
  timeout 300 python3 "$here/test_triton_client.py" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- cairn log (last 40 lines) ---" >&2; tail -n 40 "$log" >&2
fi
exit "$status"
