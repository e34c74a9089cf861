#!/usr/bin/env bash
# Local services for etl: PostgreSQL and a Kafka-protocol broker (ARCHITECTURE §7).
#
#   scripts/services.sh install   install what is missing (PostgreSQL binaries, a JDK, Maven, Kafka's jars)
#   scripts/services.sh up        start both (idempotent), create the database, write .local/services.env
#   scripts/services.sh down      stop only what `up` started (idempotent)
#   scripts/services.sh status    say what runs where
#   scripts/services.sh kafka-version       the pinned Kafka version (the compose file's image tag)
#   scripts/services.sh kafka-connect-libs  fetch Kafka Connect + Debezium's jars once, print where
#
# With a Docker engine that answers, `up` runs kafka-docker-compose.yml (Apache Kafka, PostgreSQL,
# Kafdrop); otherwise PostgreSQL runs from the machine's binaries with its data in .local/postgres,
# and Apache Kafka (the version of the compose file's image) runs as a single-node KRaft broker from
# Maven Central's jars, with its log directory in .local/kafka/data, so a restart loses nothing.
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

# ---------------------------------------------------------------- Apache Kafka (local path)

# One version, pinned in one place: the image tag in kafka-docker-compose.yml.
kafka_version() {
  sed -n 's/^[[:space:]]*image:[[:space:]]*apache\/kafka:\([0-9][0-9.]*\)[[:space:]]*$/\1/p' "$COMPOSE_FILE" | head -n1
}

kafka_dirs() {
  KAFKA_VERSION=$(kafka_version)
  [[ -n $KAFKA_VERSION ]] || die "no apache/kafka image tag in $COMPOSE_FILE"
  # The jars, fetched once per version (Maven also keeps them in ~/.m2).
  KAFKA_LIBS=${ETL_KAFKA_LIBS:-$LOCAL_DIR/kafka-$KAFKA_VERSION/libs}
  KAFKA_DIR=$LOCAL_DIR/kafka
  KAFKA_DATA=$KAFKA_DIR/data
  KAFKA_LOG=$KAFKA_DIR/kafka.log
  KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
}

install_java() {
  command -v java >/dev/null && command -v mvn >/dev/null && return
  say "installing OpenJDK and Maven from the distribution's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless maven >/dev/null
  command -v java >/dev/null && command -v mvn >/dev/null || die "java or mvn still missing after apt-get install"
}

# The runtime jars of `pom` (with the Kafka version of the compose file) into `dir`, once: a
# `.complete` marker says a fetch finished.
fetch_jars() { # pom dir what
  [[ -f $2/.complete ]] && return
  install_java
  say "fetching $3 from Maven Central into $2"
  rm -rf "$2"
  mvn -q -B -Dstyle.color=never -f "$1" dependency:copy-dependencies \
    -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime -DoutputDirectory="$2" >&2 ||
    die "could not fetch $3 with Maven (is Maven Central reachable?)"
  touch "$2/.complete"
}

install_kafka() {
  kafka_dirs
  fetch_jars "$ROOT/scripts/kafka/pom.xml" "$KAFKA_LIBS" \
    "Apache Kafka $KAFKA_VERSION (org.apache.kafka:kafka_2.13)"
}

# Kafka Connect with the Debezium JDBC sink, for the peer benchmark (scripts/bench-peer.sh);
# prints where the jars are.
cmd_kafka_connect_libs() {
  kafka_dirs
  local libs=$LOCAL_DIR/kafka-connect-$KAFKA_VERSION/libs
  fetch_jars "$ROOT/benchmarks/kafka-connect/pom.xml" "$libs" \
    "Kafka Connect $KAFKA_VERSION and the Debezium JDBC sink"
  echo "$libs"
}

kafka_java() { java -cp "$KAFKA_LIBS/*" "$@"; }

kafka_pid() {
  local f=$LOCAL_DIR/kafka/kafka.pid pid
  [[ -f $f ]] || return 1
  pid=$(cat "$f")
  # A stale pid file may name a process that reused the number: check it is our broker.
  ps -o args= -p "$pid" 2>/dev/null | grep -q 'kafka\.Kafka' && echo "$pid"
}

# Single-node KRaft: broker and controller in one process. Rewritten at every start, so a changed
# port takes effect; the cluster id lives in the formatted log directory, not here.
kafka_config() {
  cat >"$KAFKA_DIR/server.properties" <<PROPS
# Written by scripts/services.sh: a single-node Apache Kafka $KAFKA_VERSION in KRaft mode.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.bootstrap.servers=$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
log.dirs=$KAFKA_DATA
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# A group forms as soon as its first member joins (Kafka's default waits 3 s for more).
group.initial.rebalance.delay.ms=0
# Topics are created by \`etl topics create\` with the partitions etl expects.
auto.create.topics.enable=false
PROPS
}

kafka_up() {
  kafka_dirs
  if kafka_pid >/dev/null; then
    say "Kafka already running (pid $(kafka_pid))"
  elif port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    say "port $KAFKA_HOST:$KAFKA_PORT is taken by a broker we did not start; using it as it is"
    return
  else
    [[ -f $KAFKA_LIBS/.complete ]] || die "Kafka is not installed; run: scripts/services.sh install"
    mkdir -p "$KAFKA_DIR"
    kafka_config
    if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
      local id; id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null)
      say "formatting Kafka's log directory $KAFKA_DATA (cluster $id)"
      kafka_java kafka.tools.StorageTool format --standalone -t "$id" -c "$KAFKA_DIR/server.properties" \
        >>"$KAFKA_LOG" 2>&1 || { tail -n 20 "$KAFKA_LOG" >&2; die "formatting $KAFKA_DATA failed"; }
    fi
    say "starting Apache Kafka $KAFKA_VERSION on $KAFKA_HOST:$KAFKA_PORT (log $KAFKA_LOG)"
    # setsid keeps the broker out of the caller's process group, so a Ctrl-C in the shell that ran
    # `just up` does not reach it. The heap leaves room for PostgreSQL and the builds beside it.
    (
      cd "$KAFKA_DIR"
      setsid nohup java -Xms256m -Xmx${KAFKA_HEAP:-512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Dorg.slf4j.simpleLogger.defaultLogLevel=${KAFKA_LOG_LEVEL:-warn} \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" >>"$KAFKA_LOG" 2>&1 </dev/null &
      echo $! >kafka.pid
    )
  fi
  wait_for_port "$KAFKA_HOST" "$KAFKA_PORT" "Kafka $KAFKA_VERSION" 120 "$(kafka_pid || true)" ||
    { tail -n 20 "$KAFKA_LOG" >&2; die "Kafka did not start (log: $KAFKA_LOG)"; }
}

kafka_down() {
  local pid
  if pid=$(kafka_pid); then
    # SIGTERM: a controlled shutdown, which flushes the logs so the next start recovers nothing.
    kill "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "stopped Kafka"
  fi
  rm -f "$LOCAL_DIR/kafka/kafka.pid"
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
  local libs=
  [[ $(cat "$LOCAL_DIR/mode") == local ]] && { kafka_dirs; libs=$KAFKA_LIBS; }
  cat >"$SERVICES_ENV" <<ENV
# Written by scripts/services.sh up: where the local services answer. Tests and the Justfile read it.
DATABASE_URL=postgres://$POSTGRES_USER@$POSTGRES_HOST:$POSTGRES_PORT/$POSTGRES_DB
KAFKA_BROKERS=$KAFKA_HOST:$KAFKA_PORT
# Apache Kafka's jars (local path only): the broker-restart test starts a broker of its own from them.
ETL_KAFKA_LIBS=$libs
ENV
}

cmd_up() {
  mkdir -p "$LOCAL_DIR"
  if docker_engine; then
    docker_up
  else
    install_postgres
    install_kafka
    echo local >"$LOCAL_DIR/mode"
    pg_up
    kafka_up
  fi
  write_env
  say "ready: $(grep -v '^#' "$SERVICES_ENV" | tr '\n' ' ')"
}

cmd_down() {
  [[ -d $LOCAL_DIR ]] || return 0
  if [[ $(cat "$LOCAL_DIR/mode" 2>/dev/null) == docker ]]; then
    compose down
  else
    kafka_down
    pg_down
  fi
  rm -f "$LOCAL_DIR/mode"
}

cmd_status() {
  pg_locate
  kafka_dirs
  echo "mode:       $(cat "$LOCAL_DIR/mode" 2>/dev/null || echo stopped)"
  echo "postgres:   $POSTGRES_HOST:$POSTGRES_PORT $(port_open "$POSTGRES_HOST" "$POSTGRES_PORT" && echo up || echo down) (data $PG_DATA, log $PG_LOG)"
  echo "kafka:      $KAFKA_HOST:$KAFKA_PORT $(port_open "$KAFKA_HOST" "$KAFKA_PORT" && echo up || echo down) (Apache Kafka $KAFKA_VERSION, pid $(kafka_pid || echo -), data $KAFKA_DATA, log $KAFKA_LOG)"
}

case ${1:-} in
  install) install_postgres; docker_engine || install_kafka ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kafka-version) kafka_dirs; echo "$KAFKA_VERSION" ;;
  kafka-connect-libs) cmd_kafka_connect_libs ;;
  *) echo "usage: $0 install|up|down|status|kafka-version|kafka-connect-libs" >&2; exit 2 ;;
esac
