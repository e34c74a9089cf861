//! Settings every command shares: where PostgreSQL and Kafka are, and how to log.

use clap::Args;

use crate::db::DEFAULT_DATABASE_URL;
use crate::kafka::KafkaSettings;
use crate::kafka::config::{DEFAULT_BROKERS, parse_override};
use crate::telemetry::LogFormat;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connections and logging (every command)")]
pub struct GlobalArgs {
    /// PostgreSQL URL, e.g. postgres://user:password@host:5432/etl?sslmode=require
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true,
          hide_env_values = true, hide_default_value = false)]
    pub database_url: String,

    /// Kafka bootstrap servers, comma-separated
    #[arg(long, env = "KAFKA_BROKERS", default_value = DEFAULT_BROKERS, global = true)]
    pub kafka_brokers: String,

    /// Kafka security protocol: plaintext, ssl, sasl_plaintext or sasl_ssl (managed Kafka)
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", global = true)]
    pub kafka_security_protocol: Option<String>,

    /// SASL mechanism, e.g. PLAIN or SCRAM-SHA-512
    #[arg(long, env = "KAFKA_SASL_MECHANISM", global = true)]
    pub kafka_sasl_mechanism: Option<String>,

    /// SASL user name (API key on Confluent Cloud)
    #[arg(long, env = "KAFKA_USERNAME", global = true)]
    pub kafka_username: Option<String>,

    /// SASL password; prefer the environment variable, a flag is visible in the process list
    #[arg(long, env = "KAFKA_PASSWORD", global = true, hide_env_values = true)]
    pub kafka_password: Option<String>,

    /// Extra librdkafka setting, repeatable: -X linger.ms=5 -X compression.type=zstd.
    /// From the environment: KAFKA_CONFIG="linger.ms=5;compression.type=zstd"
    // Its environment value is never shown in --help: it may hold sasl.password or ssl.key.password.
    #[arg(short = 'X', value_name = "KEY=VALUE", env = "KAFKA_CONFIG", value_delimiter = ';',
          value_parser = parse_override, global = true, hide_env_values = true)]
    pub kafka_config: Vec<(String, String)>,

    /// Log format on stderr (filter with RUST_LOG, default info)
    #[arg(long, env = "ETL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

impl GlobalArgs {
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.kafka_brokers.clone(),
            security_protocol: self.kafka_security_protocol.clone(),
            sasl_mechanism: self.kafka_sasl_mechanism.clone(),
            username: self.kafka_username.clone(),
            password: self.kafka_password.clone(),
            overrides: self.kafka_config.clone(),
        }
    }
}
