#!/usr/bin/env bash
# Compares wsauth-server with the Node.js baseline (benches/baseline) under the same
# `wsauth-load connect` run: builds both Rust binaries in release, installs the baseline's
# dependencies (npm ci), starts both servers on loopback with the same secret, loads each in
# turn, prints both reports and the ratios, and writes the charts and JSON under
# target/compare/. Both servers are stopped on exit, whatever happens.
#
# Overridable by environment:
#   N (10000) connections, RATE (2000) per second, CONCURRENCY (256), HOLD (5) seconds,
#   AUTH (message), WSAUTH_PORT (18480), ADMIN_PORT (18491), NODE_PORT (18481),
#   OUT (target/compare), WSAUTH_JWT__HS256_SECRET (a fixed benchmark secret).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

N=${N:-10000}
RATE=${RATE:-2000}
CONCURRENCY=${CONCURRENCY:-256}
HOLD=${HOLD:-5}
AUTH=${AUTH:-message}
WSAUTH_PORT=${WSAUTH_PORT:-18480}
ADMIN_PORT=${ADMIN_PORT:-18491}
NODE_PORT=${NODE_PORT:-18481}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/compare}
export WSAUTH_JWT__HS256_SECRET=${WSAUTH_JWT__HS256_SECRET:-compare-benchmark-secret-0123456789abcdef}
BIN=$TARGET_DIR/release

mkdir -p "$OUT"
# Both servers and the load tool need a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== building wsauth-server and wsauth-load (release)" >&2
cargo build --release -p wsauth-server -p wsauth-load >&2
echo "== installing the baseline's dependencies (npm ci)" >&2
(cd benches/baseline && npm ci --no-audit --no-fund --loglevel=error >&2)

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

start_wsauth "$WSAUTH_PORT" "$ADMIN_PORT" wsauth-server
WSAUTH_PID=$SERVER_PID
PORT=$NODE_PORT HOST=127.0.0.1 node benches/baseline/server.js >"$OUT/baseline.log" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
wait_port "$NODE_PORT" baseline

# Bounded: the ramp, the hold, and a margin for timeouts and closing.
LIMIT=$((N / (RATE > 0 ? RATE : 1) + ${HOLD%.*} + 120))

run() {
    local name=$1 port=$2 pid=$3
    echo "== wsauth-load connect against $name (ws://127.0.0.1:$port/ws): $N connections at $RATE/s" >&2
    timeout --signal=INT --kill-after=10 "$LIMIT" \
        "$BIN/wsauth-load" connect --url "ws://127.0.0.1:$port/ws" \
        --connections "$N" --rate "$RATE" --concurrency "$CONCURRENCY" --auth "$AUTH" --hold "$HOLD" \
        --pid "$pid" --json --svg "$OUT/$name-connect.svg" >"$OUT/$name.json" \
        || echo "wsauth-load against $name exited with $?" >&2
}

run wsauth "$WSAUTH_PORT" "$WSAUTH_PID"
sleep 2
run baseline "$NODE_PORT" "$NODE_PID"

echo >&2
node - "$OUT/wsauth.json" "$OUT/baseline.json" "$OUT/summary.json" <<'EOF'
const fs = require('fs');
const [wPath, bPath, outPath] = process.argv.slice(2);
const read = (p) => {
  try { return JSON.parse(fs.readFileSync(p, 'utf8').trim().split('\n').pop()); } catch (_) { return null; }
};
const w = read(wPath), b = read(bPath);
if (!w || !b) {
  console.log('no comparison: a run produced no report');
  process.exit(1);
}
const fig = (r) => ({
  'successes': r.successes,
  'failures': r.failures_total,
  'connections/s': r.rate_per_s,
  'p50 ms': r.latency_ms.p50,
  'p99 ms': r.latency_ms.p99,
  'p99.9 ms': r.latency_ms.p99_9,
  'RSS KiB/connection': r.rss ? r.rss.per_connection_kib : null,
});
const fw = fig(w), fb = fig(b);
const higherBetter = new Set(['connections/s', 'successes']);
const pad = (s, n) => String(s).padStart(n);
console.log(`${'figure'.padEnd(20)}${pad('wsauth', 12)}${pad('node baseline', 15)}${pad('wsauth/node', 13)}  verdict`);
const ratios = {};
for (const k of Object.keys(fw)) {
  const a = fw[k], c = fb[k];
  let ratio = null, verdict = '';
  if (typeof a === 'number' && typeof c === 'number' && c !== 0 && k !== 'failures' && k !== 'successes') {
    ratio = a / c;
    const better = higherBetter.has(k) ? ratio : 1 / ratio;
    verdict = better >= 1 ? `wsauth ${better.toFixed(2)}x better` : `wsauth ${(1 / better).toFixed(2)}x worse`;
    ratios[k] = Number(ratio.toFixed(4));
  }
  console.log(`${k.padEnd(20)}${pad(a ?? '-', 12)}${pad(c ?? '-', 15)}${pad(ratio === null ? '-' : ratio.toFixed(3), 13)}  ${verdict}`);
}
fs.writeFileSync(outPath, JSON.stringify({ wsauth: w, baseline: b, ratios_wsauth_over_baseline: ratios }, null, 2) + '\n');
EOF
echo >&2
echo "charts: $OUT/wsauth-connect.svg $OUT/baseline-connect.svg" >&2
echo "reports: $OUT/wsauth.json $OUT/baseline.json $OUT/summary.json" >&2
