//! `etl`: monthly CSV files and a Kafka transaction stream into a PostgreSQL star schema.
//!
//! The binary in `src/main.rs` only parses and dispatches; everything it runs lives here so that
//! the integration tests in `tests/it/` call the same code.

pub mod batch;
pub mod bench;
pub mod cli;
pub mod db;
pub mod demo;
pub mod domain;
pub mod generate;
pub mod http;
pub mod kafka;
pub mod models;
pub mod shutdown;
pub mod telemetry;
