//! librdkafka client settings shared by every command that talks to Kafka.

use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;

/// Default broker list: the local broker that `just up` starts.
/// The topics and group etl uses unless told otherwise (every command's defaults come from here).
pub const DEFAULT_TOPIC: &str = "transactions";
pub const DEFAULT_DLQ_TOPIC: &str = "transactions_error";
pub const DEFAULT_ANOMALIES_TOPIC: &str = "anomalies";
pub const DEFAULT_GROUP: &str = "etl-sink";

pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// How long metadata and admin requests may take before we call the broker unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection settings for Kafka. `overrides` (from `-X key=value`) are applied last and win.
#[derive(Clone, Default)]
pub struct KafkaSettings {
    pub brokers: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`; librdkafka's default when unset.
    pub security_protocol: Option<String>,
    /// e.g. `PLAIN` for managed Kafka (Confluent Cloud, Aiven, MSK with SASL/SCRAM uses `SCRAM-SHA-512`).
    pub sasl_mechanism: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub overrides: Vec<(String, String)>,
}

impl KafkaSettings {
    /// Settings for a broker list with nothing else set (tests, local use).
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            ..Self::default()
        }
    }

    /// Base client configuration: brokers, security, then `-X` overrides.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        let optional = [
            ("security.protocol", &self.security_protocol),
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.username),
            ("sasl.password", &self.password),
        ];
        for (key, value) in optional {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                config.set(key, value);
            }
        }
        self.apply_overrides(&mut config);
        config
    }

    /// Configuration for a consumer in `group`. Offsets are committed explicitly by our code,
    /// never automatically, and the session timeout is short so that a group forms in seconds.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000");
        self.apply_overrides(&mut config);
        config
    }

    /// Configuration for a producer that loses nothing and still moves a lot: every in-sync
    /// replica acknowledges (`acks=all`), idempotence keeps retries from duplicating or reordering,
    /// lz4 is cheap on the CPU, and a short linger with large batches fills requests.
    /// `-X` overrides still win.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "10")
            .set("batch.size", "1000000")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", "60000");
        self.apply_overrides(&mut config);
        config
    }

    pub(crate) fn apply_overrides(&self, config: &mut ClientConfig) {
        for (key, value) in &self.overrides {
            config.set(key, value);
        }
    }
}

impl fmt::Debug for KafkaSettings {
    // The password never reaches a log line, and neither do `-X` values that look like secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let overrides: Vec<String> = self
            .overrides
            .iter()
            .map(|(k, v)| {
                if is_secret_key(k) {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("overrides", &overrides)
            .finish()
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"]
        .iter()
        .any(|s| key.contains(s))
}

/// Parses one `-X key=value` argument.
pub fn parse_override(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!(
            "`{arg}` is not a librdkafka setting; expected key=value, e.g. -X linger.ms=5"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_defaults() {
        let settings = KafkaSettings {
            overrides: vec![("session.timeout.ms".into(), "45000".into())],
            ..KafkaSettings::new("b:9092")
        };
        let config = settings.consumer_config("g");
        assert_eq!(config.get("session.timeout.ms"), Some("45000"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(config.get("group.id"), Some("g"));
    }

    #[test]
    fn producer_defaults_are_durable_and_overridable() {
        let settings = KafkaSettings {
            overrides: vec![("linger.ms".into(), "50".into())],
            ..KafkaSettings::new("b:9092")
        };
        let config = settings.producer_config();
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("compression.type"), Some("lz4"));
        assert_eq!(config.get("linger.ms"), Some("50"));
    }

    #[test]
    fn sasl_settings_are_passed_through_and_empty_ones_skipped() {
        let settings = KafkaSettings {
            security_protocol: Some("SASL_SSL".into()),
            sasl_mechanism: Some("PLAIN".into()),
            username: Some("user".into()),
            password: Some("hunter2".into()),
            ..KafkaSettings::new("b:9092")
        };
        let config = settings.client_config();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.password"), Some("hunter2"));
        let unset = KafkaSettings {
            username: Some(String::new()),
            ..KafkaSettings::new("b:9092")
        };
        assert_eq!(unset.client_config().get("sasl.username"), None);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let settings = KafkaSettings {
            password: Some("hunter2".into()),
            overrides: vec![("ssl.key.password".into(), "s3cret".into())],
            ..KafkaSettings::new("b:9092")
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn override_parsing() {
        assert_eq!(
            parse_override("linger.ms=5"),
            Ok(("linger.ms".into(), "5".into()))
        );
        assert_eq!(parse_override("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_override("linger.ms").is_err());
        assert!(parse_override("=5").is_err());
    }
}
