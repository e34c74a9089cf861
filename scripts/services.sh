#!/usr/bin/env bash
# Local services for etl: PostgreSQL and a Kafka-protocol broker (DESIGN §7).
#
#   scripts/services.sh install   install what is missing (PostgreSQL binaries, tansu)
#   scripts/services.sh up        start both (idempotent), create the database, write .local/services.env
#   scripts/services.sh down      stop only what `up` started (idempotent)
#   scripts/services.sh test-broker  recreate the integration tests' broker, empty (local path only)
#   scripts/services.sh status    say what runs where
#
# With a Docker engine that answers, `up` runs kafka-docker-compose.yml (Apache Kafka, PostgreSQL,
# Kafdrop); otherwise PostgreSQL runs from the machine's binaries with its data in .local/postgres,
# and tansu runs with its log in the SQLite file .local/tansu/tansu.db, so a restart loses nothing.
# ETL_SERVICES=local forces the second path even where Docker works.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR=${ETL_LOCAL_DIR:-$ROOT/.local}
POSTGRES_HOST=${POSTGRES_HOST:-127.0.0.1}
POSTGRES_PORT=${POSTGRES_PORT:-5432}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-etl}
# The operating-system account that runs the local server: initdb refuses to run as root.
POSTGRES_OS_USER=${POSTGRES_OS_USER:-postgres}
KAFKA_HOST=${KAFKA_HOST:-127.0.0.1}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFDROP_PORT=${KAFDROP_PORT:-9000}
# The integration tests' own broker on the local path (see tansu_up).
KAFKA_TEST_PORT=${KAFKA_TEST_PORT:-9192}
TANSU_VERSION=${TANSU_VERSION:-0.6.0}
COMPOSE_FILE=$ROOT/kafka-docker-compose.yml
SERVICES_ENV=$LOCAL_DIR/services.env
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '%s\n' "services: $*" >&2; }
die() { say "error: $*"; exit 1; }

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_for_port() { # host port what seconds [pid]
  local deadline=$((SECONDS + $4))
  until port_open "$1" "$2"; do
    if [[ -n ${5:-} ]] && ! kill -0 "$5" 2>/dev/null; then return 1; fi
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  say "$3 answers on $1:$2"
}

docker_engine() { [[ ${ETL_SERVICES:-auto} != local ]] && command -v docker >/dev/null && docker info >/dev/null 2>&1; }

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

# ---------------------------------------------------------------- PostgreSQL (local path)

pg_bindir() {
  local dir
  if command -v pg_config >/dev/null && dir=$(pg_config --bindir 2>/dev/null) && [[ -x $dir/initdb ]]; then
    echo "$dir"; return
  fi
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [[ -n $dir && -x $dir/initdb ]] && { echo "$dir"; return; }
  command -v initdb >/dev/null && { dirname "$(readlink -f "$(command -v initdb)")"; return; }
  return 1
}

install_postgres() {
  pg_bindir >/dev/null && return
  say "installing PostgreSQL binaries from the distribution's packages"
  # Debian's package would create and start a cluster of its own on 5432; we only want binaries.
  as_root mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  pg_bindir >/dev/null || die "PostgreSQL binaries still missing after apt-get install"
}

# Runs a PostgreSQL server binary as the account that owns the data directory.
pg_run() {
  if [[ $(id -u) == 0 ]]; then runuser -u "$POSTGRES_OS_USER" -- "$@"; else "$@"; fi
}

pg_dirs() {
  PG_BASE=${POSTGRES_DATA_DIR:-$LOCAL_DIR/postgres}
  PG_DATA=$PG_BASE/data
  PG_SOCKETS=$PG_BASE/sockets
  PG_LOG=$PG_BASE/postgres.log
}

pg_prepare_dirs() {
  mkdir -p "$PG_BASE"
  if [[ $(id -u) == 0 ]]; then
    id "$POSTGRES_OS_USER" >/dev/null 2>&1 ||
      useradd --system --no-create-home --shell /usr/sbin/nologin "$POSTGRES_OS_USER"
    chown "$POSTGRES_OS_USER" "$PG_BASE"
    if ! runuser -u "$POSTGRES_OS_USER" -- test -w "$PG_BASE"; then
      # The checkout sits where that account cannot reach (e.g. under /root): keep the data elsewhere.
      PG_BASE=/var/tmp/etl-postgres-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)
      say "$POSTGRES_OS_USER cannot write under $LOCAL_DIR; PostgreSQL data goes to $PG_BASE"
      mkdir -p "$PG_BASE" && chown "$POSTGRES_OS_USER" "$PG_BASE" && chmod 700 "$PG_BASE"
      echo "$PG_BASE" >"$LOCAL_DIR/postgres.location"
      PG_DATA=$PG_BASE/data PG_SOCKETS=$PG_BASE/sockets PG_LOG=$PG_BASE/postgres.log
    fi
  fi
  pg_run mkdir -p "$PG_SOCKETS"
}

pg_locate() { # a data directory moved aside by pg_prepare_dirs is remembered here
  pg_dirs
  if [[ -z ${POSTGRES_DATA_DIR:-} && -f $LOCAL_DIR/postgres.location ]]; then
    PG_BASE=$(cat "$LOCAL_DIR/postgres.location")
    PG_DATA=$PG_BASE/data PG_SOCKETS=$PG_BASE/sockets PG_LOG=$PG_BASE/postgres.log
  fi
}

pg_up() {
  local bin; bin=$(pg_bindir) || die "no PostgreSQL binaries; run: scripts/services.sh install"
  pg_locate
  if [[ -f $PG_DATA/PG_VERSION ]] && pg_run "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    say "PostgreSQL already running ($PG_DATA)"
  elif port_open "$POSTGRES_HOST" "$POSTGRES_PORT"; then
    say "port $POSTGRES_HOST:$POSTGRES_PORT is taken by a server we did not start; using it as it is"
  else
    pg_prepare_dirs
    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
      say "initialising a PostgreSQL cluster in $PG_DATA"
      pg_run "$bin/initdb" -D "$PG_DATA" -U "$POSTGRES_USER" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    fi
    say "starting PostgreSQL on $POSTGRES_HOST:$POSTGRES_PORT"
    pg_run "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
      -o "-p $POSTGRES_PORT -k $PG_SOCKETS -c listen_addresses=$POSTGRES_HOST -c max_connections=300 -c max_wal_size=4GB -c shared_buffers=512MB" \
      start >/dev/null || { tail -n 20 "$PG_LOG" >&2; die "PostgreSQL did not start (log: $PG_LOG)"; }
    touch "$LOCAL_DIR/postgres.started"
  fi
  pg_create_database "$bin"
}

pg_create_database() {
  local psql=$1/psql
  [[ -x $psql ]] || psql=psql
  local deadline=$((SECONDS + 60))
  until "$psql" -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "PostgreSQL on $POSTGRES_HOST:$POSTGRES_PORT does not accept connections as $POSTGRES_USER"
    sleep 0.5
  done
  if [[ $("$psql" -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$POSTGRES_DB'") != 1 ]]; then
    "$psql" -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d postgres -qc "CREATE DATABASE \"$POSTGRES_DB\"" \
      || die "could not create database $POSTGRES_DB"
    say "created database $POSTGRES_DB"
  fi
}

pg_down() {
  local bin; bin=$(pg_bindir) || return 0
  pg_locate
  if [[ -f $LOCAL_DIR/postgres.started && -f $PG_DATA/PG_VERSION ]] &&
    pg_run "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    pg_run "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
    say "stopped PostgreSQL"
  fi
  rm -f "$LOCAL_DIR/postgres.started"
}

# ---------------------------------------------------------------- tansu (local path)

install_sqlite() {
  command -v sqlite3 >/dev/null && return
  say "installing the sqlite3 command line (to add an index tansu's storage lacks, see tansu_index)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 >/dev/null
}

tansu_bin() { command -v tansu || { [[ -x $HOME/.cargo/bin/tansu ]] && echo "$HOME/.cargo/bin/tansu"; }; }

install_tansu() {
  tansu_bin >/dev/null && return
  say "installing tansu $TANSU_VERSION from crates.io (about 8 minutes once on 2 cores)"
  # libsql gives the sqlite:// storage engine, dynostore the memory:// one; a default build has neither.
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql,dynostore
}

# Two brokers run on the local path: `tansu` for the demo and your own use, and `tansu-test`, which
# the integration tests use and which `test-broker` recreates empty before each test run. Tests
# never delete their topics on it: tansu 0.6 (SQLite storage) loses track of producer state after
# a DeleteTopics and then panics on a later produce, taking the broker down.

tansu_pid() { # instance
  local f=$LOCAL_DIR/$1/tansu.pid pid
  [[ -f $f ]] || return 1
  pid=$(cat "$f")
  # A stale pid file may name a process that reused the number: check it is a tansu.
  [[ $(ps -o comm= -p "$pid" 2>/dev/null) == tansu ]] && echo "$pid"
}

# tansu 0.6's SQLite schema has no index on header(topition, offset_id), and a fetch looks up the
# headers of every record it returns: fetching becomes quadratic in the number of headers stored,
# and after some 10,000 messages with headers a consumer sees nothing for minutes. The index
# makes the lookup a seek. tansu creates its tables on start, so this runs once it answers.
tansu_index() { # instance
  sqlite3 -cmd '.timeout 10000' "$LOCAL_DIR/$1/tansu.db" \
    'CREATE INDEX IF NOT EXISTS etl_header_record_idx ON header (topition, offset_id);' ||
    die "cannot add the header index to $LOCAL_DIR/$1/tansu.db (is sqlite3 installed? scripts/services.sh install)"
}

tansu_up() { # instance port
  local instance=$1 port=$2 dir=$LOCAL_DIR/$1
  if tansu_pid "$instance" >/dev/null; then
    say "$instance already running (pid $(tansu_pid "$instance"))"
  elif port_open "$KAFKA_HOST" "$port"; then
    say "port $KAFKA_HOST:$port is taken by a broker we did not start; using it as it is"
    return
  else
    local bin; bin=$(tansu_bin) || die "tansu is not installed; run: scripts/services.sh install"
    mkdir -p "$dir"
    say "starting $instance on $KAFKA_HOST:$port (log in $dir/tansu.db)"
    # The storage path is resolved against the working directory; setsid keeps the broker out of
    # the caller's process group, so a Ctrl-C in the shell that ran `just up` does not reach it.
    (
      cd "$dir"
      RUST_LOG=${TANSU_LOG:-warn} setsid nohup "$bin" broker \
        --cluster-id etl \
        --listener-url "tcp://$KAFKA_HOST:$port" \
        --advertised-listener-url "tcp://$KAFKA_HOST:$port" \
        --storage-engine "sqlite://tansu.db" >>tansu.log 2>&1 </dev/null &
      echo $! >tansu.pid
    )
  fi
  wait_for_port "$KAFKA_HOST" "$port" "$instance" 60 "$(tansu_pid "$instance" || true)" ||
    { tail -n 20 "$dir/tansu.log" >&2; die "$instance did not start (log: $dir/tansu.log)"; }
  tansu_index "$instance"
}

tansu_down() { # instance
  local pid
  if pid=$(tansu_pid "$1"); then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "stopped $1"
  fi
  rm -f "$LOCAL_DIR/$1/tansu.pid"
}

# A fresh, empty test broker: stop it, drop its storage, start it again.
cmd_test_broker() {
  [[ $(cat "$LOCAL_DIR/mode" 2>/dev/null) == local ]] || return 0
  tansu_down tansu-test
  rm -f "$LOCAL_DIR"/tansu-test/tansu.db* "$LOCAL_DIR"/tansu-test/tansu.log
  tansu_up tansu-test "$KAFKA_TEST_PORT"
}

# ---------------------------------------------------------------- Docker path

compose() {
  POSTGRES_PORT=$POSTGRES_PORT POSTGRES_USER=$POSTGRES_USER POSTGRES_DB=$POSTGRES_DB \
    KAFKA_HOST=$KAFKA_HOST KAFKA_PORT=$KAFKA_PORT KAFDROP_PORT=$KAFDROP_PORT \
    docker compose -f "$COMPOSE_FILE" "$@"
}

docker_up() {
  say "Docker engine found: starting $COMPOSE_FILE"
  compose up -d --wait
  echo docker >"$LOCAL_DIR/mode"
  wait_for_port "$KAFKA_HOST" "$KAFKA_PORT" Kafka 120
  pg_create_database "$(pg_bindir || echo /nonexistent)"
}

# ---------------------------------------------------------------- commands

write_env() {
  local test_brokers=$KAFKA_HOST:$KAFKA_PORT keep_topics=0
  if [[ $(cat "$LOCAL_DIR/mode") == local ]]; then
    test_brokers=$KAFKA_HOST:$KAFKA_TEST_PORT keep_topics=1
  fi
  cat >"$SERVICES_ENV" <<ENV
# Written by scripts/services.sh up: where the local services answer. Tests and the Justfile read it.
DATABASE_URL=postgres://$POSTGRES_USER@$POSTGRES_HOST:$POSTGRES_PORT/$POSTGRES_DB
KAFKA_BROKERS=$KAFKA_HOST:$KAFKA_PORT
# The integration tests' broker, and whether tests leave their topics (tansu: yes, see tansu_up).
ETL_TEST_KAFKA_BROKERS=$test_brokers
ETL_TEST_KEEP_TOPICS=$keep_topics
ENV
}

cmd_up() {
  mkdir -p "$LOCAL_DIR"
  if docker_engine; then
    docker_up
  else
    install_postgres
    install_sqlite
    install_tansu
    echo local >"$LOCAL_DIR/mode"
    pg_up
    tansu_up tansu "$KAFKA_PORT"
    tansu_up tansu-test "$KAFKA_TEST_PORT"
  fi
  write_env
  say "ready: $(grep -v '^#' "$SERVICES_ENV" | tr '\n' ' ')"
}

cmd_down() {
  [[ -d $LOCAL_DIR ]] || return 0
  if [[ $(cat "$LOCAL_DIR/mode" 2>/dev/null) == docker ]]; then
    compose down
  else
    tansu_down tansu
    tansu_down tansu-test
    pg_down
  fi
  rm -f "$LOCAL_DIR/mode"
}

cmd_status() {
  pg_locate
  echo "mode:       $(cat "$LOCAL_DIR/mode" 2>/dev/null || echo stopped)"
  echo "postgres:   $POSTGRES_HOST:$POSTGRES_PORT $(port_open "$POSTGRES_HOST" "$POSTGRES_PORT" && echo up || echo down) (data $PG_DATA)"
  echo "kafka:      $KAFKA_HOST:$KAFKA_PORT $(port_open "$KAFKA_HOST" "$KAFKA_PORT" && echo up || echo down) (tansu pid $(tansu_pid tansu || echo -))"
  echo "test kafka: $KAFKA_HOST:$KAFKA_TEST_PORT $(port_open "$KAFKA_HOST" "$KAFKA_TEST_PORT" && echo up || echo down) (tansu pid $(tansu_pid tansu-test || echo -))"
}

case ${1:-} in
  install) install_postgres; docker_engine || { install_sqlite; install_tansu; } ;;
  up) cmd_up ;;
  test-broker) cmd_test_broker ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
