#!/usr/bin/env bash
# Measures every load target of issue 7 (and the rpc targets) in one run and prints the
# table of docs/performance.md: builds wsauth-server, its app_echo example and wsauth-load in
# release, starts a fresh server (in-memory store) for each scenario — the app_echo example
# for the rpc ones, the binary for the others —, runs wsauth-load against it, and writes
# each report (JSON) and chart (SVG) under target/targets/. Takes about two minutes.
#
# Overridable by environment: N (10000), RATE (2000), PORT (18580), ADMIN_PORT (18591),
# OUT (target/targets), WSAUTH_JWT__HS256_SECRET (a fixed benchmark secret).
# The Node.js comparison is benches/compare.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

N=${N:-10000}
RATE=${RATE:-2000}
PORT=${PORT:-18580}
ADMIN_PORT=${ADMIN_PORT:-18591}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/targets}
BIN=$TARGET_DIR/release
export WSAUTH_JWT__HS256_SECRET=${WSAUTH_JWT__HS256_SECRET:-targets-benchmark-secret-0123456789abcdef}

mkdir -p "$OUT"
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

echo "== building wsauth-server, its app_echo example and wsauth-load (release)" >&2
cargo build --release -p wsauth-server -p wsauth-load --bins --examples >&2

# As start_wsauth (benches/lib.sh), but the server is the app_echo example: wsauth embedded
# in an application with an `echo` handler (adapters/server/examples/app_echo.rs).
start_app_echo() {
    local port=$1 admin=$2 name=$3
    shift 3
    env WSAUTH_ADMIN_KEY="${WSAUTH_ADMIN_KEY:-bench-admin-key-0123456789}" \
        WSAUTH_LIMITS__MAX_UNAUTHENTICATED_PER_IP=100000 \
        WSAUTH_LOG__LEVEL=warn "$@" \
        "$BIN/examples/app_echo" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        >"$OUT/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_port "$port" "$name"
}

# run NAME SERVER_ENV... -- LOAD_ARGS...: a fresh server, one wsauth-load run, the server stopped.
# START=start_app_echo run … starts the app_echo example instead of wsauth-server.
run() {
    local name=$1
    shift
    local env=()
    while [ "$1" != "--" ]; do
        env+=("$1")
        shift
    done
    shift
    "${START:-start_wsauth}" "$PORT" "$ADMIN_PORT" "$name-server" "${env[@]}"
    echo "== $name: wsauth-load $*" >&2
    timeout --signal=INT --kill-after=10 300 \
        "$BIN/wsauth-load" "$@" --url "ws://127.0.0.1:$PORT/ws" --pid "$SERVER_PID" \
        --json --svg "$OUT/$name.svg" >"$OUT/$name.json" \
        || echo "wsauth-load ($name) exited with $?" >&2
    stop_all
    sleep 1
}

FAST_MESSAGES=(WSAUTH_LIMITS__MESSAGES_PER_SECOND=1000000 WSAUTH_LIMITS__MESSAGE_BURST=1000000)

run connect -- connect -n "$N" --rate "$RATE" --concurrency 256 --hold 1
run connect-c8 -- connect -n "$N" --rate "$RATE" --concurrency 8 --hold 1
run resume -- resume -n 1000 --rate 1000
run refresh "${FAST_MESSAGES[@]}" -- refresh -n 1 -m 2000 --rate 0
run refresh-burst "${FAST_MESSAGES[@]}" -- refresh -n 1000 -m 1 --rate 0
run fanout -- fanout -n "$N" -m 10 --interval-ms 1000 --rate "$RATE"
run connect-1k -- connect -n 1000 --rate "$RATE" --concurrency 256 --hold 1
run connect-5k -- connect -n 5000 --rate "$RATE" --concurrency 256 --hold 1
START=start_app_echo run rpc "${FAST_MESSAGES[@]}" -- rpc -n 1 -m 20000 --rate 0
START=start_app_echo run rpc-paced -- rpc -n 1000 --per-second 10 --secs 10 --rate "$RATE"

python3 - "$OUT" "$N" "$RATE" <<'EOF'
import json, pathlib, sys

out, n, rate = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def report(name):
    try:
        return json.loads((out / f"{name}.json").read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None

def lat(r):
    l = r["latency_ms"]
    return f"p50 {l['p50']} ms, p99 **{l['p99']} ms**, p99.9 {l['p99_9']} ms, max {l['max']} ms"

def cpu(r):
    c = r.get("extra", {}).get("cpu") or r.get("cpu") or {}
    if c.get("server_us_per_op") is None:
        return ""
    return f"; CPU per op: server {c['server_us_per_op']} µs, client {c['client_us_per_op']} µs"

def verdict(ok):
    if ok is None:
        return "(not a target)"
    return "met" if ok else "**not met**"

rows = []
def row(target, name, text, ok):
    rows.append(f"| {target} | {text} | {verdict(ok)} | `{name}` |")

c = report("connect")
if c:
    ok_all = c["successes"] == c["attempted"] and c["rate_per_s"] >= float(rate) * 0.98
    row(f"{n} connections at ≥ {rate}/s, all authenticated", "connect",
        f"{c['successes']}/{c['attempted']} at {c['rate_per_s']:.0f}/s, {c['failures_total']} failures", ok_all)
    row("auth latency (TCP connect → `authenticated`) p99 < 2 ms", "connect",
        lat(c) + cpu(c), (c["latency_ms"]["p99"] or 1e9) < 2)
    rss = (c.get("rss") or {}).get("per_connection_kib")
    row("memory per idle authenticated connection < 10 KiB", "connect",
        f"{rss} KiB (RSS delta / connections)", rss is not None and rss < 10)
c8 = report("connect-c8")
if c8:
    row("… the same with `--concurrency 8`", "connect-c8", lat(c8), (c8["latency_ms"]["p99"] or 1e9) < 2)
r = report("resume")
if r:
    row("resume p99 < 2 ms", "resume", lat(r), (r["latency_ms"]["p99"] or 1e9) < 2)
r = report("refresh")
if r:
    row("refresh round trip p99 < 1 ms", "refresh", lat(r) + " (one session, back to back)",
        (r["latency_ms"]["p99"] or 1e9) < 1)
r = report("refresh-burst")
if r:
    row("… 1,000 sessions refreshing at the same instant (a burst queues)", "refresh-burst",
        lat(r), None)
f = report("fanout")
if f:
    all_in = f["successes"] == f["attempted"]
    row("one publish to 10,000 subscribers: all delivered, p99 < 50 ms", "fanout",
        f"{f['successes']}/{f['attempted']} delivered; " + lat(f) + cpu(f),
        all_in and (f["latency_ms"]["p99"] or 1e9) < 50)
r = report("rpc")
if r:
    row("rpc round trip (`rpc` → `rpc_result`, `echo` in the app) p99 < 1 ms", "rpc",
        lat(r) + f" (one session, {r['successes']}/{r['attempted']} back to back)" + cpu(r),
        r["successes"] == r["attempted"] and (r["latency_ms"]["p99"] or 1e9) < 1)
r = report("rpc-paced")
if r:
    row("1,000 sessions × 10 calls/s (10,000 calls/s): p99 < 5 ms", "rpc-paced",
        f"{r['successes']}/{r['attempted']} at {r['rate_per_s']:.0f}/s, "
        f"{r['failures_total']} failures" + (f" {r['failures']}" if r["failures"] else "")
        + "; " + lat(r) + cpu(r),
        r["successes"] == r["attempted"] and (r["latency_ms"]["p99"] or 1e9) < 5)

print("| target | measured | verdict | report |")
print("|---|---|---|---|")
print("\n".join(rows))
print()
print("| connections | p50 | p99 | p99.9 | RSS per connection | server CPU per connection |")
print("|---|---|---|---|---|---|")
for name in ("connect-1k", "connect-5k", "connect"):
    r = report(name)
    if not r:
        continue
    l = r["latency_ms"]
    rss = (r.get("rss") or {}).get("per_connection_kib")
    c = r.get("extra", {}).get("cpu") or r.get("cpu") or {}
    print(f"| {r['attempted']} | {l['p50']} ms | {l['p99']} ms | {l['p99_9']} ms | {rss} KiB | {c.get('server_us_per_op')} µs |")
EOF
echo >&2
echo "reports and charts: $OUT/" >&2
