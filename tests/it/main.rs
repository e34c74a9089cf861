//! Integration tests: one binary, real PostgreSQL and a real Kafka-protocol broker.
//! Start them with `just up`; every test makes its own database and topics and drops them.

mod batch;
mod bench;
mod compose_file;
mod demo;
mod deploy;
mod dlq_replay;
mod helpers;
mod kafka_roundtrip;
mod migrate;
mod models_dbt;
mod models_marts;
mod models_runner;
mod postgres_roundtrip;
mod private_kafka;
mod private_postgres;
mod produce;
mod schema;
mod secrets;
mod serve;
mod sink;
mod topics;
mod validator_db;
