#!/usr/bin/env bash
# Serving load benchmark of issue 8, in one run on one machine: cairn (digits demo model),
# the bare-hyper ceiling (benches/ceiling.rs) and Seldon MLServer + onnxruntime on the peers'
# MLP (same input: FP32 [batch, 64]). For each server and case it runs
# `wrk -t2 -c16 -d15s --latency` (override with WRK_ARGS) and samples the server's RSS, then
# prints a markdown table (req/s, p50, p99, server CPU per request, RSS) and the ratios
# against the goals.
#
#   cargo build --release --bin cairn && cargo bench --bench ceiling --no-run
#   benches/load/compare.sh [RESULTS_DIR]
#
# Cases: JSON batch 1, JSON batch 32 (all three servers); binary batch 32 (Triton binary tensor
# extension, cairn only: MLServer's REST has no binary tensors, the ceiling only parses JSON).
# The cases run one after the other, the servers all up and idle when not under load.
#
# Environment: CAIRN_BIN (target/release/cairn), CEILING_BIN (newest
# target/release/deps/ceiling-*), PEERS (../shared/peers), PEERS_VENV (for MLServer),
# WRK_ARGS ("-t2 -c16 -d15s"), WARMUP (seconds of unmeasured load per run, 3),
# DEPLOY (optional JSON for POST /api/v1/models/digits/deploy before measuring, e.g.
# '{"version":1,"instances":2,"max_batch_size":32,"max_batch_delay_us":200}'),
# KEY_RATE (cairn's auth.key_rate_per_second for the run, 0 = unlimited; default: cairn's
# own default), SKIP_MLSERVER=1 (cairn and ceiling only).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
peers=${PEERS:-$(cd "$root/.." && pwd)/shared/peers}
[ -d "$peers" ] || peers=/work/shared/peers
cairn_bin=${CAIRN_BIN:-$root/target/release/cairn}
ceiling_bin=${CEILING_BIN:-$(ls -t "$root"/target/release/deps/ceiling-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)}
wrk_args=${WRK_ARGS:--t2 -c16 -d15s}
warmup=${WARMUP:-3}
model=digits

[ -x "$cairn_bin" ] || { echo "no cairn binary at $cairn_bin (cargo build --release --bin cairn)" >&2; exit 1; }
[ -n "$ceiling_bin" ] && [ -x "$ceiling_bin" ] || { echo "no ceiling binary (cargo bench --bench ceiling --no-run)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not found ($peers/setup.sh)" >&2; exit 1; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cairn-compare.XXXXXX")
out=${1:-$tmp/results}
mkdir -p "$out"
cairn_pid= ceiling_pid= ml_pid=
stop() {
  local p=$1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}
cleanup() {
  stop "$cairn_pid"; stop "$ceiling_pid"
  if [ -n "$ml_pid" ]; then for c in $(pgrep -P "$ml_pid" || true); do stop "$c"; done; stop "$ml_pid"; fi
  wait 2>/dev/null || true
  rm -rf "$tmp/data"
}
trap cleanup EXIT
fail() { echo "compare: $*" >&2; [ -f "$tmp/cairn.log" ] && tail -n 20 "$tmp/cairn.log" >&2; exit 1; }

# RSS in kB of a process and all its descendants (MLServer runs its model in a child).
rss() {
  local t=0 p
  for p in $(descendants "$1"); do
    t=$((t + $(awk '/^VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
# CPU time (user + system, clock ticks) of a process and its descendants.
cputicks() {
  local t=0 p
  for p in $(descendants "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
descendants() { echo "$1"; local c; for c in $(pgrep -P "$1" || true); do descendants "$c"; done; }

# --- cairn ------------------------------------------------------------------------------
# One key drives all the load, under cairn's default per-key rate limit (50 000/s) unless
# KEY_RATE sets another.
env -u CAIRN_ADMIN_PASSWORD_FILE -u CAIRN_CONFIG CAIRN_ADMIN_PASSWORD='compare-bench-password-1' \
  ${KEY_RATE:+CAIRN_AUTH_KEY_RATE_PER_SECOND="$KEY_RATE"} \
  "$cairn_bin" serve --data-dir "$tmp/data" --http-listen 127.0.0.1:0 --https-listen off \
  --log-format json >"$tmp/cairn.out" 2>"$tmp/cairn.log" &
cairn_pid=$!
addr=
for _ in $(seq 1 300); do
  kill -0 "$cairn_pid" 2>/dev/null || fail "cairn exited during startup"
  addr=$(python3 - "$tmp/cairn.log" "$tmp/cairn.out" <<'EOF'
import json, sys
for path in sys.argv[1:]:
    with open(path, errors="replace") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and e.get("message") == "listening" \
                    and e.get("listener") == "http" and e.get("addr"):
                print(e["addr"]); sys.exit(0)
EOF
  ) || true
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || fail "no 'listening' log line from cairn"
keyout=$("$cairn_bin" admin create-key --data-dir "$tmp/data" --user admin \
  --scopes infer,models:read,models:write --name compare) || fail "admin create-key failed"
key=$(printf '%s\n' "$keyout" | grep -oE 'cairn_[0-9a-f]{16}_[A-Za-z0-9_-]+' | tail -n 1 || true)
[ -n "$key" ] || fail "no key in: $keyout"
wait_ready() {
  local code=
  for _ in $(seq 1 120); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
      "http://$addr/v2/models/$model/ready" || true)
    [ "$code" = 200 ] && return 0
    kill -0 "$cairn_pid" 2>/dev/null || fail "cairn exited while waiting for the model"
    sleep 0.5
  done
  fail "GET /v2/models/$model/ready: $code"
}
wait_ready
if [ -n "${DEPLOY:-}" ]; then
  code=$(curl -s -o "$tmp/deploy.out" -w '%{http_code}' -X POST -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' --data "$DEPLOY" "http://$addr/api/v1/models/$model/deploy")
  case $code in 2*) ;; *) fail "deploy $DEPLOY: $code $(cat "$tmp/deploy.out")" ;; esac
  sleep 1; wait_ready
fi
sleep 2
cairn_idle=$(rss "$cairn_pid")
echo "cairn on $addr (pid $cairn_pid, idle RSS ${cairn_idle} kB with $model deployed)" >&2

# --- ceiling ----------------------------------------------------------------------------
"$ceiling_bin" 127.0.0.1:0 >"$tmp/ceiling.out" 2>&1 &
ceiling_pid=$!
caddr=
for _ in $(seq 1 100); do
  caddr=$(sed -n 's/^ceiling listening on //p' "$tmp/ceiling.out")
  [ -n "$caddr" ] && break
  sleep 0.1
done
[ -n "$caddr" ] || fail "ceiling did not start: $(cat "$tmp/ceiling.out")"
ceiling_idle=$(rss "$ceiling_pid")
echo "ceiling on $caddr (pid $ceiling_pid)" >&2

# --- MLServer ---------------------------------------------------------------------------
ml_idle=0
if [ -z "${SKIP_MLSERVER:-}" ]; then
  ml_pid=$(TMPDIR=$tmp "$peers/mlserver/start.sh" | tail -n 1) || fail "MLServer did not start ($tmp/mlserver.log)"
  sleep 2
  ml_idle=$(rss "$ml_pid")
  echo "MLServer on 127.0.0.1:18080 (pid $ml_pid)" >&2
fi

# --- load -------------------------------------------------------------------------------
hlen=$(python3 -c 'import json, sys; d = open(sys.argv[1], "rb").read(); print(json.JSONDecoder().raw_decode(d[:4096].decode("latin-1"))[1])' "$here/body_b32.bin")

# measure LABEL PID URL SCRIPT BODY [HEADER] -> appends "LABEL rps p50 p99 rss_peak_kB errors" to $out/results
measure() {
  local label=$1 pid=$2 url=$3 script=$4 body=$5 hdr=${6:-}
  local code
  if [ "$script" = binary.lua ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$hdr" -H 'Content-Type: application/octet-stream' \
      -H "Inference-Header-Content-Length: $hlen" --data-binary "@$body" "$url" || true)
  else
    code=$(curl -s -o /dev/null -w '%{http_code}' ${hdr:+-H "$hdr"} -H 'Content-Type: application/json' \
      --data-binary "@$body" "$url" || true)
  fi
  [ "$code" = 200 ] || fail "$label: POST $url answered $code"
  if [ "$warmup" != 0 ]; then
    HEADER=$hdr BODY=$body HLEN=$hlen timeout 60 wrk -t2 -c16 -d"${warmup}s" -s "$here/$script" "$url" >/dev/null
  fi
  ( peak=0; while [ ! -f "$tmp/stop" ]; do r=$(rss "$pid"); [ "$r" -gt "$peak" ] && peak=$r; echo "$peak" >"$tmp/peak"; sleep 0.5; done ) &
  local sampler=$!
  local cpu0; cpu0=$(cputicks "$pid")
  # shellcheck disable=SC2086
  HEADER=$hdr BODY=$body HLEN=$hlen timeout 120 wrk $wrk_args --latency -s "$here/$script" "$url" \
    >"$out/$label.wrk" 2>&1 || true
  local cpu1; cpu1=$(cputicks "$pid")
  touch "$tmp/stop"; wait "$sampler" 2>/dev/null || true; rm -f "$tmp/stop"
  local s non2xx
  s=$(grep '^SUMMARY' "$out/$label.wrk" || true)
  [ -n "$s" ] || fail "$label: no SUMMARY from wrk: $(cat "$out/$label.wrk")"
  non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *//p' "$out/$label.wrk"); non2xx=${non2xx:-0}
  local rps p50 p99 errs reqs cpu_us
  rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$s")
  p50=$(sed -E 's/.*p50=([0-9.]+)ms.*/\1/' <<<"$s")
  p99=$(sed -E 's/.*p99=([0-9.]+)ms.*/\1/' <<<"$s")
  errs=$(sed -E 's/.*errors\(connect\/read\/write\/status\/timeout\)=([0-9\/]+).*/\1/' <<<"$s")
  reqs=$(sed -E 's/.* reqs=([0-9]+).*/\1/' <<<"$s")
  # Server CPU per request (user + system), less sensitive than req/s to other load on the box.
  cpu_us=$(awk -v d=$((cpu1 - cpu0)) -v t="$(getconf CLK_TCK)" -v r="$reqs" 'BEGIN { printf "%.1f", (r > 0) ? d / t * 1e6 / r : 0 }')
  echo "$label $rps $p50 $p99 $(cat "$tmp/peak") $errs $non2xx $cpu_us" >>"$out/results"
  echo "$label: $s non2xx=$non2xx rss_peak_kB=$(cat "$tmp/peak")" >&2
}

: >"$out/results"
auth="Authorization: Bearer $key"
cairn_url=http://$addr/v2/models/$model/infer
ceil_url=http://$caddr/v2/models/$model/infer
ml_url=http://127.0.0.1:18080/v2/models/mlp/infer
for case in b1_json b32_json b32_binary; do
  case $case in
    b1_json) mine=$here/body_b1.json peer=$peers/wrk/body_b1.json script=post.lua ;;
    b32_json) mine=$here/body_b32.json peer=$peers/wrk/body_b32.json script=post.lua ;;
    b32_binary) mine=$here/body_b32.bin peer= script=binary.lua ;;
  esac
  measure "cairn_$case" "$cairn_pid" "$cairn_url" "$script" "$mine" "$auth"
  if [ "$script" = post.lua ]; then
    measure "ceiling_$case" "$ceiling_pid" "$ceil_url" "$script" "$mine"
    [ -n "$ml_pid" ] && measure "mlserver_$case" "$ml_pid" "$ml_url" "$script" "$peer"
  fi
done
cairn_after=$(rss "$cairn_pid")
echo "machine: $(nproc) cores, wrk on the same cores; load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/machine"

# --- report -----------------------------------------------------------------------------
python3 - "$out/results" "$cairn_idle" "$ceiling_idle" "$ml_idle" "$cairn_after" "$wrk_args" "${DEPLOY:-}" <<'EOF' | tee "$out/table.md"
import sys
path, cairn_idle, ceil_idle, ml_idle, cairn_after, wrk_args, deploy = sys.argv[1:8]
idle = {"cairn": int(cairn_idle), "ceiling": int(ceil_idle), "mlserver": int(ml_idle)}
rows = {}
for line in open(path):
    label, rps, p50, p99, peak, errs, non2xx, cpu = line.split()
    server, case = label.split("_", 1)
    rows[(server, case)] = dict(rps=float(rps), p50=float(p50), p99=float(p99), peak=int(peak),
                                errs=errs, non2xx=int(non2xx), cpu=float(cpu))
mb = lambda kb: f"{kb / 1024:.1f} MB"
names = {"cairn": "cairn", "ceiling": "bare hyper (ceiling)", "mlserver": "MLServer + onnxruntime"}
cases = {"b1_json": "JSON batch 1", "b32_json": "JSON batch 32", "b32_binary": "binary batch 32"}
print(f"wrk {wrk_args} --latency; RSS: idle after startup / peak during the run"
      + (f"; cairn deploy {deploy}" if deploy else ""))
print()
print("| server | case | req/s | p50 | p99 | server CPU / req | RSS idle | RSS under load | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---|")
for server in ("cairn", "ceiling", "mlserver"):
    for case in cases:
        r = rows.get((server, case))
        if not r:
            continue
        err = "0" if r["errs"] == "0/0/0/0/0" and r["non2xx"] == 0 else f"{r['errs']} non2xx={r['non2xx']}"
        print(f"| {names[server]} | {cases[case]} | {r['rps']:.0f} | {r['p50']:.2f} ms | {r['p99']:.2f} ms "
              f"| {r['cpu']:.0f} µs | {mb(idle[server])} | {mb(r['peak'])} | {err} |")
print(f"\ncairn RSS after the runs: {mb(int(cairn_after))}\n")
def get(s, c):
    return rows.get((s, c))
goals = []
def ratio(a, b, key="rps"):
    return a[key] / b[key] if a and b else None
c1, m1, h1 = get("cairn", "b1_json"), get("mlserver", "b1_json"), get("ceiling", "b1_json")
c32, m32, h32 = get("cairn", "b32_json"), get("mlserver", "b32_json"), get("ceiling", "b32_json")
cb = get("cairn", "b32_binary")
def goal(name, value, target, ok, fmt="{:.2f}×"):
    if value is None:
        goals.append((name, "—", target, "not measured"))
    else:
        goals.append((name, fmt.format(value), target, "met" if ok(value) else "NOT met"))
goal("batch 1 req/s: cairn / MLServer", ratio(c1, m1), "≥ 25×", lambda v: v >= 25)
goal("batch 1 req/s: cairn / ceiling", ratio(c1, h1), "≥ 0.60×", lambda v: v >= 0.6)
goal("batch 1 p99: cairn / ceiling", ratio(c1, h1, "p99"), "≤ 1.5×", lambda v: v <= 1.5)
goal("batch 32 JSON req/s: cairn / MLServer", ratio(c32, m32), "≥ 10×", lambda v: v >= 10)
goal("batch 32 binary req/s: cairn / MLServer (JSON)", ratio(cb, m32), "≥ 20×", lambda v: v >= 20)
goal("idle RSS, demo model deployed", idle["cairn"] / 1024, "≤ 25 MB", lambda v: v <= 25, "{:.1f} MB")
print("| goal | measured | target | |")
print("|---|---:|---:|---|")
for g in goals:
    print("| " + " | ".join(g) + " |")
print()
cpu1 = (h1["cpu"] / c1["cpu"]) if c1 and h1 and c1["cpu"] else None
print("Other ratios (info): batch 1 CPU per request ceiling / cairn "
      + (f"{cpu1:.2f}×" if cpu1 else "—") + "; batch 32 JSON cairn / ceiling "
      + (f"{ratio(c32, h32):.2f}×" if ratio(c32, h32) else "—")
      + "; batch 32 p99 cairn / ceiling " + (f"{ratio(c32, h32, 'p99'):.2f}×" if ratio(c32, h32, 'p99') else "—"))
EOF
echo "raw wrk output: $out" >&2
