#!/usr/bin/env bash
# The peer benchmark (`just bench-peer`): `etl kafka-to-postgres` and Kafka Connect with the Debezium
# JDBC sink connector, side by side in one run, draining the same pre-filled topic of the local
# Apache Kafka into same-shaped tables of the same PostgreSQL. Not a test: figures go to stdout
# and bench-results/peer.md.
#
#   scripts/bench-peer.sh [COUNT] [PEER_CONFIGS]
#
# COUNT messages (default 1,000,000; all valid, so that the peer, which validates nothing, sees
# the same rows) are produced once to a topic of the run's own (3 partitions). Each contender then
# drains the whole topic with a consumer group of its own into a fresh table, and both are timed
# the same way, from outside: a poller counts the table's rows every 250 ms; the time from the
# first row seen to the last is the drain, rows / drain the rate. Startup (a JVM, a group join) is
# reported apart.
#
# PEER_CONFIGS: space-separated `batch.size:max.poll.records:pool:tasks` to try for the peer
# (its batch.size is capped by the consumer's max.poll.records, so both move together); the best
# counts and every one is reported.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COUNT=${1:-1000000}
PEER_CONFIGS=${2:-"500:500:4:1 3000:3000:4:3 10000:10000:8:3"}
ETL=${ETL_BIN:-$ROOT/target/release/etl}
LOCAL_DIR=${ETL_LOCAL_DIR:-$ROOT/.local}
KAFKA_VERSION=$(scripts/services.sh kafka-version)
RESULTS=${BENCH_PEER_MD:-$ROOT/bench-results/peer.md}

export RUST_LOG=${RUST_LOG:-warn}
say() { printf 'bench-peer: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[[ -f $LOCAL_DIR/services.env ]] || die "the services are not up: run \`just up\`"
set -a; source "$LOCAL_DIR/services.env"; set +a
[[ -x $ETL ]] || die "no $ETL: cargo build --release --bin etl"
command -v psql >/dev/null || die "psql is missing: scripts/services.sh install"

CONNECT_LIBS=$(scripts/services.sh kafka-connect-libs) || die "could not fetch Kafka Connect"

run=peer$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/etl-bench-peer.XXXXXX")
server_url=${DATABASE_URL%/*}
db=etl_bench_$run
db_url=$server_url/$db
topic=etl-bench-$run-transactions
connect_pid=

cleanup() {
  [[ -n $connect_pid ]] && kill -9 "$connect_pid" 2>/dev/null || true
  "$ETL" topics delete "$topic" "$topic-errors" "$topic-anomalies" >/dev/null 2>&1 || true
  psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

sql() { psql "$db_url" -qtAX -c "$1"; }
now() { date +%s.%N; }

# Polls `table` until it holds COUNT rows; prints "first_row_at last_row_at" (epoch seconds).
await_rows() { # table started_at deadline_seconds
  local table=$1 first= n deadline=$(($(date +%s) + $3))
  while :; do
    n=$(sql "SELECT count(*) FROM $table")
    if [[ -z $first && $n -gt 0 ]]; then first=$(now); fi
    if ((n >= COUNT)); then echo "$first $(now)"; return; fi
    (($(date +%s) < deadline)) || die "$table holds $n of $COUNT rows after $3 s"
    sleep 0.25
  done
}

say "producing $COUNT valid messages to $topic"
"$ETL" generate-monthly --year 2025 --month 1 --users 10000 --transactions 1 --out-dir "$work/users" --seed 7 >/dev/null
"$ETL" topics create "$topic" --partitions 3 >/dev/null
"$ETL" topics create "$topic-errors" "$topic-anomalies" --partitions 1 >/dev/null
"$ETL" produce --users-dir "$work/users" --topic "$topic" --count "$COUNT" --seed 1 \
  --invalid-ratio 0 --orphan-ratio 0 --start-time 2025-08-01T00:00:00Z >/dev/null

psql "$server_url/postgres" -qc "CREATE DATABASE \"$db\"" >/dev/null
DATABASE_URL=$db_url "$ETL" migrate >/dev/null
DATABASE_URL=$db_url "$ETL" load-batch --dir "$work/users" >/dev/null
# The peer's table: the message's fields, typed as etl's own table types them.
sql "CREATE TABLE peer_transactions (tx_id uuid PRIMARY KEY, user_id uuid NOT NULL,
  amount numeric(14,2) NOT NULL, currency text NOT NULL, merchant text NOT NULL, category text NOT NULL,
  \"timestamp\" timestamptz NOT NULL, status text, payment_method text, city text, country text,
  source_system text, transaction_type text, processing_time_ms integer)"

# One table row per drain, in a file: report runs in a command substitution (a subshell).
rows_md=$work/rows.md
report() { # name startup drain_seconds settings
  local rate; rate=$(awk -v n="$COUNT" -v s="$3" 'BEGIN { printf "%.0f", n / s }')
  echo "| $1 | $4 | $2 | $3 | $rate |" >>"$rows_md"
  say "$1 ($4): $rate rows/s (drain $3 s, startup $2 s)"
  echo "$rate"
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

say "etl kafka-to-postgres"
started=$(now)
DATABASE_URL=$db_url "$ETL" kafka-to-postgres --topic "$topic" --group "$run-etl" \
  --dlq-topic "$topic-errors" --anomalies-topic "$topic-anomalies" --until-caught-up \
  >"$work/etl.log" 2>&1 &
etl_pid=$!
read -r first last < <(await_rows transactions_sink "$started" 900)
wait "$etl_pid" || die "etl kafka-to-postgres failed: $(tail -n 5 "$work/etl.log")"
etl_rate=$(report "etl kafka-to-postgres" "$(secs "$started" "$first")" "$(secs "$first" "$last")" \
  "defaults: 2 writers, batch up to 50,000; validates, dead-letters, scores, offsets in the transaction")

# The ceiling: the rows etl wrote, copied again with nothing else into a same-shaped table, as
# two plain COPYs at once (one per etl writer), each on a connection of its own. No sink writes
# these rows faster into this table on this machine.
say "raw COPY of the same rows, 2 connections"
sql "CREATE TABLE raw_copy (LIKE transactions_sink INCLUDING ALL)"
psql "$db_url" -qX -c "\\copy (SELECT * FROM transactions_sink) TO '$work/rows.tsv'"
split -n l/2 -d "$work/rows.tsv" "$work/rows.part."
started=$(now)
for part in "$work"/rows.part.*; do
  psql "$db_url" -qX -v ON_ERROR_STOP=1 -c "\\copy raw_copy FROM '$part'" &
done
wait
copy_secs=$(secs "$started" "$(now)")
[[ $(sql "SELECT count(*) FROM raw_copy") -eq $COUNT ]] || die "the raw COPY did not copy every row"
copy_rate=$(report "raw COPY (the ceiling)" "-" "$copy_secs" "the rows etl wrote, 2 files, 2 connections at once, nothing else")
sql "DROP TABLE raw_copy"

schema='{"type":"struct","optional":false,"fields":[
{"field":"tx_id","type":"string","optional":false},{"field":"user_id","type":"string","optional":false},
{"field":"amount","type":"double","optional":false},{"field":"currency","type":"string","optional":false},
{"field":"merchant","type":"string","optional":false},{"field":"category","type":"string","optional":false},
{"field":"timestamp","type":"string","optional":false},{"field":"status","type":"string","optional":true},
{"field":"payment_method","type":"string","optional":true},{"field":"city","type":"string","optional":true},
{"field":"country","type":"string","optional":true},{"field":"source_system","type":"string","optional":true},
{"field":"transaction_type","type":"string","optional":true},{"field":"processing_time_ms","type":"int32","optional":true}]}'
schema=$(tr -d '\n' <<<"$schema")
rest_port=$((20000 + RANDOM % 20000))
best_rate=0 best=
for config in $PEER_CONFIGS; do
  IFS=: read -r batch poll pool tasks <<<"$config"
  settings="batch.size $batch, max.poll.records $poll, pool $pool, tasks $tasks"
  sql "TRUNCATE peer_transactions"
  name=$run-peer-$batch-$poll-$pool-$tasks
  cat >"$work/worker.properties" <<PROPS
bootstrap.servers=$KAFKA_BROKERS
group.id=$name-worker
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=true
value.converter.schema.content=$schema
offset.storage.file.filename=$work/$name.offsets
offset.flush.interval.ms=10000
listeners=http://127.0.0.1:$rest_port
consumer.max.poll.records=$poll
consumer.auto.offset.reset=earliest
PROPS
  cat >"$work/connector.properties" <<PROPS
name=$name
connector.class=io.debezium.connector.jdbc.JdbcSinkConnector
tasks.max=$tasks
topics=$topic
connection.url=jdbc:postgresql://${db_url#postgres://*@}?stringtype=unspecified
connection.username=${PGUSER:-postgres}
connection.password=
connection.pool.min_size=1
connection.pool.max_size=$pool
insert.mode=upsert
primary.key.mode=record_value
primary.key.fields=tx_id
schema.evolution=none
collection.name.format=peer_transactions
batch.size=$batch
PROPS
  say "Kafka Connect + Debezium JDBC sink ($settings)"
  started=$(now)
  java -Xmx1g -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$CONNECT_LIBS/*" \
    org.apache.kafka.connect.cli.ConnectStandalone "$work/worker.properties" "$work/connector.properties" \
    >"$work/$name.log" 2>&1 &
  connect_pid=$!
  if ! read -r first last < <(await_rows peer_transactions "$started" 900); then
    tail -n 30 "$work/$name.log" >&2
    die "the peer did not finish"
  fi
  kill "$connect_pid"; wait "$connect_pid" 2>/dev/null || true; connect_pid=
  rate=$(report "Kafka Connect + Debezium JDBC" "$(secs "$started" "$first")" "$(secs "$first" "$last")" "$settings")
  if ((rate > best_rate)); then best_rate=$rate best=$settings; fi
done

{
  echo "## etl vs Kafka Connect (Debezium JDBC sink): $COUNT messages, one run"
  echo
  echo "| contender | settings | startup s | drain s | rows/s |"
  echo "|---|---|---:|---:|---:|"
  cat "$rows_md"
  echo
  echo "etl / best peer ($best): **$(ratio "$etl_rate" "$best_rate")×** (target ≥ 3×). etl / raw COPY: $(ratio "$etl_rate" "$copy_rate"); best peer / raw COPY: $(ratio "$best_rate" "$copy_rate")."
  echo
  echo "3 × the best peer is $((3 * best_rate)) rows/s; the raw COPY of the same rows, with nothing else to do, managed $copy_rate rows/s here."
  echo
  echo "- Same topic ($topic, 3 partitions, Apache Kafka $KAFKA_VERSION), same PostgreSQL, same-shaped"
  echo "  tables; each drain timed by one poller (count(*) every 250 ms) from the first row to the last."
  echo "- The peer upserts (insert.mode=upsert on tx_id) and nothing else; etl also validates each"
  echo "  message, dead-letters, keeps per-user statistics and anomaly scores, and stores offsets in the"
  echo "  same transaction."
  echo "- $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ), etl $(basename "$ETL")."
} | tee "$RESULTS"
