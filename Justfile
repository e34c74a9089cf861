# etl — every step of the demo and of development, strung together.
# `just` lists the recipes. Services: scripts/services.sh (Docker when an engine answers, else local).

set shell := ["bash", "-euo", "pipefail", "-c"]

etl := "cargo run --quiet --bin etl --"
# What `just up` started and where it answers; recipes that talk to the services load it.
with_services := "set -a; source .local/services.env; set +a;"

# List the recipes
default:
    @just --list --unsorted

# Start PostgreSQL and the broker, create the database and topics, migrate (idempotent)
up:
    scripts/services.sh up
    {{with_services}} {{etl}} topics create
    {{with_services}} {{etl}} migrate

# Stop what `just up` started (idempotent)
down:
    scripts/services.sh down

# Say what runs where
status:
    scripts/services.sh status

# Install what `just up` needs and is missing: PostgreSQL binaries, a JDK and Maven, Kafka's jars
install:
    scripts/services.sh install

# The demo end to end on a fresh machine: three months of batch files generated and loaded, 200,000
# streamed transactions (2 % invalid, 1 % from unknown users) sunk, every model built and tested,
# then one summary that adds up (`etl demo --help` for the knobs)
demo *args: up
    {{with_services}} {{etl}} demo {{args}}

# A live stream: the producer at a steady rate in the background (its log in .local/produce.log),
# the sink in the foreground with one live status line (produced/s, landed/s, lag, rejects,
# anomalies) and metrics on 127.0.0.1:9187. Ctrl-C stops both cleanly. Generates a month of users
# first if there are none.
stream rate="200":
    {{with_services}} ls data/incoming/user_registrations_*.csv >/dev/null 2>&1 || \
        {{etl}} generate-monthly --year 2025 --month 6 --users 2000 --transactions 10000 \
            --out-dir data/incoming --seed 42
    cargo build --quiet --bin etl
    {{with_services}} {{etl}} produce --users-dir data/incoming --rate {{rate}} \
        --invalid-ratio 0.01 --orphan-ratio 0.02 2>.local/produce.log & producer=$!; \
        trap 'kill $producer 2>/dev/null || true; wait $producer 2>/dev/null || true' EXIT; \
        RUST_LOG="${RUST_LOG:-warn}" {{etl}} kafka-to-postgres --metrics-addr 127.0.0.1:9187

# Build the SQL models once (`just models --full-refresh`, `just models --select +top_spenders` …)
models *args:
    {{with_services}} {{etl}} build-models {{args}}

# tests/dbt_project built by etl and by dbt-postgres, compared (installs dbt into .local/dbt-venv)
dbt-compat:
    scripts/install-dbt.sh >/dev/null
    {{with_services}} cargo test --test it models_dbt

# The REST API and the live dashboard against the local services (`just serve --addr 0.0.0.0:8080`);
# prints the dashboard's URL; Ctrl-C stops. ETL_API_TOKEN set: POST /events needs the token
serve *args:
    {{with_services}} {{etl}} serve {{args}}

# Every test: unit tests and integration tests against the services `just up` starts
test: up
    {{with_services}} if cargo nextest --version >/dev/null 2>&1; then \
        cargo nextest run --no-fail-fast; \
    else \
        cargo test --no-fail-fast; \
    fi

# Formatting and lints, as CI checks them; a rustup component that is missing (and cannot be
# fetched) skips its check with a loud warning rather than failing the run
lint:
    if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check;     else echo '!!! WARNING: rustfmt is not installed: the formatting check is SKIPPED !!!' >&2; fi
    if cargo clippy --version >/dev/null 2>&1; then cargo clippy --all-targets -- -D warnings;     else echo '!!! WARNING: clippy is not installed: the lint check is SKIPPED !!!' >&2; fi

# Coverage-guided fuzzing (issue 17): builds fuzz/ (cargo-fuzz on stable, no sanitizer), then runs
# each target `seconds` from its corpus in fuzz/corpus/; `just fuzz 600 validate` for a long local run
fuzz seconds="15" *targets:
    scripts/fuzz.sh run {{seconds}} {{targets}}

# What CI runs: lints, every test, then each fuzz target for 15 s
ci: lint test fuzz

# Run etl with the services' addresses, e.g. `just etl topics tail transactions`
etl *args:
    {{with_services}} {{etl}} {{args}}

# Batch benchmark (not a test): generate-monthly of N users + N transactions (time, peak memory), then
# load-batch against a raw COPY of the same files, in a scratch database. Release build: numbers of an
# unoptimized build say little about the loader (the first release build takes ~15+ minutes on 2 cores).
bench-batch users="1000000" transactions="1000000":
    cargo build --release --bin etl
    {{with_services}} /usr/bin/time -v "${CARGO_TARGET_DIR:-target}/release/etl" bench batch \
        --users {{users}} --transactions {{transactions}} --rounds 3 2>&1 \
        | grep -vE '^\s+(Average|Exit|Swaps|File sys|Socket|Signals|Page size|Minor|Major|Voluntary|Involuntary)'

# Sink benchmark (not a test): `etl bench sink` pre-fills a topic of its own on the local Apache
# Kafka with N messages, then times kafka-to-postgres draining them against a raw COPY of the same
# rows over as many connections as writers, in a scratch database; figures in
# bench-results/sink.{json,md}. Release build.
bench-sink count="1000000" rounds="3":
    cargo build --release --bin etl
    {{with_services}} "${CARGO_TARGET_DIR:-target}/release/etl" bench sink \
        --count {{count}} --rounds {{rounds}}

# End-to-end benchmark (not a test): `etl bench e2e` runs kafka-to-postgres (default settings) while
# a producer sends at a fixed rate, and reports exact produced_at-to-commit percentiles, Kafka's own
# share and the sink's; figures in bench-results/e2e.{json,md}. Release build. broker: the local
# Apache Kafka by default, librdkafka-mock, or HOST:PORT of another running broker.
bench-e2e rate="10000" duration="60s" broker="":
    cargo build --release --bin etl
    {{with_services}} "${CARGO_TARGET_DIR:-target}/release/etl" bench e2e --transport-probe \
        --rate {{rate}} --duration {{duration}} {{ if broker == "" { "" } else { "--broker " + broker } }}

# Peer benchmark (not a test): etl kafka-to-postgres and Kafka Connect with the Debezium JDBC sink
# drain the same pre-filled topic of the local Kafka into the same PostgreSQL, timed alike; figures in
# bench-results/peer.md. configs: the peer's `batch.size:max.poll.records:pool:tasks` to try.
bench-peer count="1000000" configs="500:500:4:1 3000:3000:4:3 10000:10000:8:3":
    cargo build --release --bin etl
    scripts/bench-peer.sh {{count}} "{{configs}}"

# Serve benchmark (not a test): `etl serve --scratch` over ROWS stream rows, then wrk on loopback at
# RATE requests/s against /transactions/{id} and /merchants/top; figures in bench-results/serve.md.
# Release build
bench-serve rows="1000000" rate="2000" duration="30s":
    cargo build --release --bin etl
    scripts/bench-serve.sh {{rows}} {{rate}} {{duration}}
