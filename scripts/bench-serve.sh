#!/usr/bin/env bash
# Benchmark of `etl serve` (issue 14), not a test: `etl serve --scratch ROWS` (a scratch database
# with ROWS stream rows, the models built; dropped on exit), then wrk on loopback against
# GET /transactions/{tx_id} (random tx_ids of the stream rows) and GET /merchants/top (random weeks
# of the last 30 days), each at RATE requests/s offered by CONNECTIONS paced connections for
# DURATION. wrk's --latency percentiles and the achieved rate go to bench-results/serve.md.
# Usage: scripts/bench-serve.sh [ROWS=1000000] [RATE=2000] [DURATION=30s]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z ${DATABASE_URL:-} && -f .local/services.env ]]; then set -a; source .local/services.env; set +a; fi
rows=${1:-1000000}
rate=${2:-2000}
duration=${3:-30s}
connections=${BENCH_CONNECTIONS:-20}
etl=${ETL_BIN:-${CARGO_TARGET_DIR:-target}/release/etl}
command -v wrk >/dev/null || scripts/install-test-tools.sh
port=${BENCH_PORT:-18282}
base=http://127.0.0.1:$port
work=$(mktemp -d)
ids=$work/ids.txt

RUST_LOG=warn "$etl" serve --scratch "$rows" --ids-file "$ids" --addr "127.0.0.1:$port" \
  --db-connections "${BENCH_DB_CONNECTIONS:-8}" >"$work/serve.log" 2>&1 &
server=$!
stop() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
started=$(date +%s)
until curl -sf "$base/healthz" >/dev/null; do
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 2
done
echo "seeded $rows stream rows and built the models in $(($(date +%s) - started)) s"

# Each connection waits this long after a response: CONNECTIONS × 1000 / RATE ms per request,
# less the ~1 ms a request takes, so that together they offer RATE requests/s.
pause=$(( connections * 1000 / rate - 1 ))
(( pause >= 0 )) || pause=0
out=bench-results/serve.md
mkdir -p bench-results
{
  echo "# etl serve benchmark"
  echo
  echo "$(date -u +%FT%TZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $rows stream rows,"
  echo "offered ~$rate requests/s by $connections connections (wrk, pause ${pause} ms), $duration per route."
} >"$out"
for route in tx merchants; do
  path=$([[ $route == tx ]] && echo "/transactions/{tx_id}" || echo "/merchants/top")
  # A short warm-up (caches, connections), then the measured run.
  BENCH_ROUTE=$route BENCH_IDS=$ids BENCH_DELAY_MS=$pause wrk -t1 -c"$connections" -d5s \
    -s scripts/bench-serve.lua "$base" >/dev/null
  result=$(BENCH_ROUTE=$route BENCH_IDS=$ids BENCH_DELAY_MS=$pause wrk -t1 -c"$connections" \
    -d"$duration" --latency -s scripts/bench-serve.lua "$base")
  echo "== $path"
  echo "$result"
  { echo; echo "## $path"; echo; echo '```'; echo "$result"; echo '```'; } >>"$out"
done
{
  echo
  echo "Server-side request counts by status (warm-up runs included):"
  echo
  echo '```'
  curl -s "$base/metrics" | grep -E 'request_duration_seconds_count' || true
  echo '```'
} >>"$out"
echo "figures in $out"
