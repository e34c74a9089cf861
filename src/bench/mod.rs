//! The benchmark harness behind `etl bench`: reusable pieces (a throwaway broker) and one module
//! per benchmark.

pub mod broker;
pub mod models;
pub mod produce;

use std::path::PathBuf;

use crate::kafka::KafkaError;
use crate::kafka::producer::ProduceError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "cannot start the tansu broker `{}` ({source}); install it with `just install` \
         (or `cargo install tansu --locked --features libsql,dynostore`), or set TANSU_BIN",
        binary.display()
    )]
    TansuStart {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the benchmark broker at {address} did not answer within 30 s; its log is {}",
        log.display()
    )]
    BrokerNotReady { address: String, log: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(
        "{failed} of {sent} messages were not delivered in the `{phase}` phase ({first_error}); the figures would be meaningless"
    )]
    Undelivered {
        phase: String,
        sent: u64,
        failed: u64,
        first_error: String,
    },
}
