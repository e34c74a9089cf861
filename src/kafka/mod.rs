//! Everything that talks to Kafka: client settings, topic admin and inspection, the producer.

pub mod admin;
pub mod config;
pub mod error;
pub mod lag;
pub mod producer;
pub mod replay;
pub mod sink;
pub mod tail;

pub use config::KafkaSettings;
pub use error::KafkaError;
