//! The broker a benchmark runs on (`--broker`): by default the Apache Kafka that `just up`
//! started (`KAFKA_BROKERS`), or any other running broker given as HOST:PORT; the benchmark's
//! topics get names of their own there and are deleted afterwards. librdkafka's mock cluster, in
//! the benchmark's own process, is the other choice: it answers a fetch as soon as data is there,
//! as Kafka does, but keeps only the last 5 MB of each partition.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use uuid::Uuid;

use crate::kafka::sink::SinkOptions;
use crate::kafka::{KafkaSettings, admin};

use super::BenchError;

/// How long a broker may take to answer metadata requests.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where `scripts/services.sh` keeps the pid of the local Apache Kafka it started.
const LOCAL_KAFKA_PID_FILE: &str = ".local/kafka/kafka.pid";

/// Which broker a stream benchmark runs on, as `--broker` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerChoice {
    /// `librdkafka-mock`: librdkafka's mock cluster in this process.
    LibrdkafkaMock,
    /// `HOST:PORT[,HOST:PORT…]`: a broker that is already running.
    Existing(String),
}

impl FromStr for BrokerChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "librdkafka-mock" => Ok(Self::LibrdkafkaMock),
            "" => Err("expected librdkafka-mock or HOST:PORT of a running broker".into()),
            address if address.contains(':') => Ok(Self::Existing(address.to_string())),
            other => Err(format!(
                "`{other}` is neither librdkafka-mock nor HOST:PORT of a running broker"
            )),
        }
    }
}

impl std::fmt::Display for BrokerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LibrdkafkaMock => f.write_str("librdkafka mock cluster"),
            Self::Existing(address) => write!(f, "the broker at {address}"),
        }
    }
}

/// A broker for one benchmark run; the mock cluster ends with it.
pub struct BenchBroker {
    pub address: String,
    running: Running,
}

enum Running {
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// With the pid of the local Kafka when that is the one (its CPU time goes in the reports).
    Existing {
        local_pid: Option<u32>,
    },
}

impl BenchBroker {
    /// Starts (the mock) or reaches (an existing one) the broker and waits until it answers.
    pub async fn start(choice: &BrokerChoice) -> Result<Self, BenchError> {
        let broker = match choice {
            BrokerChoice::LibrdkafkaMock => {
                let mock = MockCluster::new(1).map_err(|e| BenchError::MockStart(e.to_string()))?;
                Self {
                    address: mock.bootstrap_servers(),
                    running: Running::Mock(mock),
                }
            }
            BrokerChoice::Existing(address) => Self {
                address: address.clone(),
                running: Running::Existing {
                    local_pid: local_kafka_pid(Path::new(LOCAL_KAFKA_PID_FILE)),
                },
            },
        };
        tracing::info!(address = %broker.address, broker = %broker.describe(), "benchmark broker");
        broker.wait_until_ready().await?;
        Ok(broker)
    }

    /// What the reports call this broker.
    pub fn describe(&self) -> String {
        match &self.running {
            Running::Mock(_) => "librdkafka mock cluster".into(),
            Running::Existing {
                local_pid: Some(pid),
            } => format!("the local Apache Kafka at {} (pid {pid})", self.address),
            Running::Existing { local_pid: None } => format!("the broker at {}", self.address),
        }
    }

    /// CPU time the broker used so far: the local Kafka's only (Linux). The mock cluster's
    /// threads are the benchmark process's; another broker is out of sight.
    pub fn cpu_time(&self) -> Option<Duration> {
        match &self.running {
            Running::Existing {
                local_pid: Some(pid),
            } => super::cpu_time_of(&pid.to_string()),
            Running::Mock(_) | Running::Existing { .. } => None,
        }
    }

    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings::new(&self.address)
    }

    /// Creates `sink`'s topics. On an existing broker, which others may use, they get names of
    /// this run's own first, and [`BenchBroker::remove_topics`] deletes them afterwards.
    pub async fn create_topics(
        &self,
        settings: &KafkaSettings,
        sink: &mut SinkOptions,
        partitions: i32,
    ) -> Result<(), BenchError> {
        if let Running::Existing { .. } = self.running {
            let run = Uuid::new_v4().simple().to_string();
            let prefix = format!("etl-bench-{}", &run[..8]);
            for topic in [
                &mut sink.topic,
                &mut sink.dlq_topic,
                &mut sink.anomalies_topic,
            ] {
                *topic = format!("{prefix}-{topic}");
            }
        }
        let topics = [
            admin::TopicSpec::new(&sink.topic, partitions),
            admin::TopicSpec::new(&sink.dlq_topic, 1),
            admin::TopicSpec::new(&sink.anomalies_topic, 1),
        ];
        match &self.running {
            // The mock cluster has no CreateTopics with configs; it makes them itself.
            Running::Mock(mock) => {
                for topic in &topics {
                    mock.create_topic(&topic.name, topic.partitions, 1)
                        .map_err(|e| BenchError::MockStart(e.to_string()))?;
                }
            }
            Running::Existing { .. } => {
                admin::create_topics(settings, &topics).await?;
            }
        }
        Ok(())
    }

    /// Deletes the run's topics from an existing broker; the others go with their broker.
    pub async fn remove_topics(&self, settings: &KafkaSettings, sink: &SinkOptions) {
        if let Running::Existing { .. } = self.running {
            for topic in [&sink.topic, &sink.dlq_topic, &sink.anomalies_topic] {
                if let Err(err) = admin::delete_topic(settings, topic).await {
                    tracing::warn!(%err, topic, "cannot delete the benchmark's topic; delete it by hand");
                }
            }
        }
    }

    async fn wait_until_ready(&self) -> Result<(), BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if admin::describe_topics(&self.settings(), None).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let hint = match &self.running {
                    Running::Mock(_) => "librdkafka's mock cluster did not come up".into(),
                    Running::Existing { .. } => {
                        "is it running (`just up`), and is the address right?".into()
                    }
                };
                return Err(BenchError::BrokerNotReady {
                    address: self.address.clone(),
                    hint,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The pid in `file` when it names a running Apache Kafka broker (`kafka.Kafka`); a stale file
/// may name a process that reused the number.
fn local_kafka_pid(file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    command_line
        .split(|b| *b == 0)
        .any(|arg| arg == b"kafka.Kafka")
        .then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_choices_parse_and_nonsense_is_named() {
        assert_eq!("librdkafka-mock".parse(), Ok(BrokerChoice::LibrdkafkaMock));
        assert_eq!(
            "localhost:9092".parse(),
            Ok(BrokerChoice::Existing("localhost:9092".into()))
        );
        let err = "kafka".parse::<BrokerChoice>().unwrap_err();
        assert!(err.contains("`kafka`"), "{err}");
    }

    #[test]
    fn a_pid_file_counts_only_when_it_names_a_kafka_broker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kafka.pid");
        assert_eq!(local_kafka_pid(&file), None);
        // This test process is alive but is no Kafka broker.
        std::fs::write(&file, std::process::id().to_string()).unwrap();
        assert_eq!(local_kafka_pid(&file), None);
        std::fs::write(&file, "not a pid").unwrap();
        assert_eq!(local_kafka_pid(&file), None);
    }
}
