//! Everything that talks to Kafka: client settings, topic admin and inspection.

pub mod admin;
pub mod config;
pub mod error;
pub mod lag;
pub mod tail;

pub use config::KafkaSettings;
pub use error::KafkaError;
