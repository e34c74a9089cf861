# syntax=docker/dockerfile:1.7
# The `etl` binary in a small runtime image. Build: docker build -t etl .
#
# Stage 1 builds on the official Rust image. rdkafka is built with its bundled librdkafka
# (Cargo.toml: features tokio, libz, ssl; no cmake-build), which runs librdkafka's own configure
# and make: a C/C++ toolchain, make, perl and pkg-config, plus the OpenSSL and zlib headers that
# the ssl/libz features and native-tls link against. The Rust image has the toolchain; the rest
# is listed so that a slimmer base would fail loudly here rather than at link time.
FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config perl libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
# Migrations are embedded at compile time (refinery::embed_migrations!), the dashboard's assets
# and the larger queries through include_str!: all of them must be in the build context.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
# Cargo.toml names the integration-test target; the manifest must find it even for `--bin etl`.
COPY tests ./tests
# Cache mounts keep the registry and the target directory between builds (dependencies take
# most of the build time); the binary is copied out because the mount is gone after this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin etl \
 && install -D -m 0755 target/release/etl /out/etl

# Stage 2: Debian slim (same release as the builder, so the same glibc) with only the shared
# libraries the binary links: libssl3 (native-tls for PostgreSQL, librdkafka's SSL for managed
# Kafka), zlib (already part of the slim base) and the CA certificates that verify both servers.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 etl \
 && useradd --system --uid 10001 --gid etl --home-dir /app --shell /usr/sbin/nologin etl
COPY --from=builder /out/etl /usr/local/bin/etl
WORKDIR /app
# `etl build-models` reads models/ at run time (default --models-dir models, relative to the
# working directory); migrations are inside the binary. data/ is where generate-monthly writes
# and produce/load-batch read, writable by the etl user.
COPY --chown=etl:etl models ./models
RUN mkdir -p /app/data/incoming /app/target && chown -R etl:etl /app/data /app/target
# A numeric user, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# Logs as JSON lines for whatever collects stdout/stderr; override with ETL_LOG_FORMAT=text.
ENV ETL_LOG_FORMAT=json
# 8080: etl serve (API, dashboard, /metrics). 9187: --metrics-addr of sinks and schedulers.
EXPOSE 8080 9187
ENTRYPOINT ["etl"]
CMD ["--help"]
