#!/usr/bin/env bash
# Contract check of `etl serve` (issue 14): schemathesis against /openapi.json of a live server
# over a scratch database of demo data (`etl serve --scratch`, dropped on exit, with a scratch
# topic for POST /events). Bounded: CONTRACT_EXAMPLES cases per operation (default 25) and
# CONTRACT_MAX_TIME seconds in all (default 180). Fails on any 5xx and on any response that does
# not match the document. Needs PostgreSQL and Kafka (`just up`) and the tools of
# scripts/install-test-tools.sh; reports go to ${CARGO_TARGET_DIR:-target}/contract/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The services `just up` started, unless the caller (e.g. the test suite) says where they are.
if [[ -z ${DATABASE_URL:-} && -f .local/services.env ]]; then set -a; source .local/services.env; set +a; fi

target=${CARGO_TARGET_DIR:-target}
etl=${ETL_BIN:-$target/debug/etl}
[[ -n ${ETL_BIN:-} ]] || cargo build --quiet --bin etl
schemathesis=.local/venv/bin/schemathesis
[[ -x $schemathesis ]] || scripts/install-test-tools.sh
port=${CONTRACT_PORT:-18181}
base=http://127.0.0.1:$port
reports=$(mkdir -p "$target/contract" && cd "$target/contract" && pwd)

RUST_LOG=${RUST_LOG:-warn} "$etl" serve --scratch "${CONTRACT_ROWS:-3000}" --addr "127.0.0.1:$port" \
  >"$reports/serve.log" 2>&1 &
server=$!
stop() {
  # SIGTERM: the server drops its scratch database and topic before it exits.
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap stop EXIT

for _ in $(seq 1 300); do
  if curl -sf "$base/healthz" >/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "etl serve exited before it answered:" >&2
    cat "$reports/serve.log" >&2
    exit 1
  fi
  sleep 1
done
curl -sf "$base/healthz" >/dev/null || { echo "etl serve did not answer within 300 s" >&2; exit 1; }

# not_a_server_error, status/content-type/header/schema conformance; negative_data_rejection
# too (a value outside the document must be refused with 4xx).
# From the reports folder: schemathesis keeps its cache (.schemathesis/) in the working directory.
schemathesis=$PWD/$schemathesis
cd "$reports"
"$schemathesis" run "$base/openapi.json" \
  --checks all \
  --exclude-checks positive_data_acceptance,use_after_free,ensure_resource_availability,ignored_auth,object_level_authorization \
  --max-examples "${CONTRACT_EXAMPLES:-25}" \
  --max-time "${CONTRACT_MAX_TIME:-180}" \
  --phases examples,coverage,fuzzing \
  --request-timeout 10 \
  --seed "${CONTRACT_SEED:-14}" \
  --workers 2 \
  --no-color \
  --report junit --report-dir .
