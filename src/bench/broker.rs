//! The broker a benchmark runs on (`--broker`): by default a throwaway tansu with `memory://`
//! storage on a free port, so that the figures measure our code rather than a broker's disk
//! (DESIGN §7). Two others make the figures comparable with what a deployment would see:
//! librdkafka's mock cluster, which answers a fetch as soon as data is there, as Apache Kafka
//! does, and a broker that is already running (Apache Kafka from `kafka-docker-compose.yml`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use uuid::Uuid;

use crate::kafka::sink::SinkOptions;
use crate::kafka::{KafkaSettings, admin};

use super::BenchError;

/// How long a fresh broker may take to answer metadata requests.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to find tansu: `TANSU_BIN`, then `~/.cargo/bin/tansu` (where `cargo install` puts it),
/// then whatever `tansu` the PATH has.
pub fn default_tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(path);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let installed = Path::new(&home).join(".cargo/bin/tansu");
        if installed.is_file() {
            return installed;
        }
    }
    PathBuf::from("tansu")
}

/// Which broker a stream benchmark runs on, as `--broker` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerChoice {
    /// `tansu`: a `memory://` tansu of the benchmark's own (the binary is `--tansu`).
    Tansu,
    /// `librdkafka-mock`: librdkafka's mock cluster in this process. It answers a fetch at once
    /// when data is there, as Kafka does, but keeps only the last 5 MB of each partition.
    LibrdkafkaMock,
    /// `HOST:PORT`: a broker that is already running. The benchmark's topics get names of their
    /// own and are deleted afterwards.
    Existing(String),
}

impl FromStr for BrokerChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "tansu" => Ok(Self::Tansu),
            "librdkafka-mock" => Ok(Self::LibrdkafkaMock),
            "" => Err("expected tansu, librdkafka-mock or HOST:PORT of a running broker".into()),
            address if address.contains(':') => Ok(Self::Existing(address.to_string())),
            other => Err(format!(
                "`{other}` is neither tansu, librdkafka-mock nor HOST:PORT of a running broker"
            )),
        }
    }
}

/// A broker for one benchmark run. A tansu process is killed on drop (its log in the temp
/// folder stays, for post-mortems); the mock cluster ends with it.
pub struct BenchBroker {
    pub address: String,
    running: Running,
}

enum Running {
    Tansu { child: Child, log: PathBuf },
    Mock(MockCluster<'static, DefaultProducerContext>),
    Existing,
}

impl BenchBroker {
    /// Starts (or, for an existing one, reaches) the broker and waits until it answers.
    pub async fn start(choice: &BrokerChoice, tansu: &Path) -> Result<Self, BenchError> {
        let broker = match choice {
            BrokerChoice::Tansu => Self::start_tansu(tansu)?,
            BrokerChoice::LibrdkafkaMock => {
                let mock = MockCluster::new(1).map_err(|e| BenchError::MockStart(e.to_string()))?;
                Self {
                    address: mock.bootstrap_servers(),
                    running: Running::Mock(mock),
                }
            }
            BrokerChoice::Existing(address) => Self {
                address: address.clone(),
                running: Running::Existing,
            },
        };
        tracing::info!(address = %broker.address, broker = %broker.describe(), "benchmark broker");
        broker.wait_until_ready().await?;
        Ok(broker)
    }

    fn start_tansu(tansu: &Path) -> Result<Self, BenchError> {
        let port = free_port()?;
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let log = std::env::temp_dir().join(format!("etl-bench-tansu-{port}.log"));
        let log_file = std::fs::File::create(&log).map_err(|source| BenchError::Io {
            context: format!("creating the broker log {}", log.display()),
            source,
        })?;
        let stderr = log_file.try_clone().map_err(|source| BenchError::Io {
            context: format!("opening the broker log {}", log.display()),
            source,
        })?;
        let child = Command::new(tansu)
            .args(["broker", "--cluster-id", "bench", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(std::env::temp_dir())
            // Only trouble is worth logging; per-request lines would cost the broker time.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr)
            .spawn()
            .map_err(|source| BenchError::TansuStart {
                binary: tansu.to_path_buf(),
                source,
            })?;
        tracing::info!(pid = child.id(), "started a memory:// tansu broker");
        Ok(Self {
            address,
            running: Running::Tansu { child, log },
        })
    }

    /// What the reports call this broker.
    pub fn describe(&self) -> String {
        match &self.running {
            Running::Tansu { .. } => "memory:// tansu".into(),
            Running::Mock(_) => "librdkafka mock cluster".into(),
            Running::Existing => format!("the broker at {}", self.address),
        }
    }

    /// CPU time the broker used so far: a tansu of the benchmark's own only (Linux). The mock
    /// cluster's threads are the benchmark process's; an existing broker is out of sight.
    pub fn cpu_time(&self) -> Option<Duration> {
        match &self.running {
            Running::Tansu { child, .. } => super::cpu_time_of(&child.id().to_string()),
            Running::Mock(_) | Running::Existing => None,
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
        if let Running::Existing = self.running {
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
            Running::Tansu { .. } | Running::Existing => {
                admin::create_topics(settings, &topics).await?;
            }
        }
        Ok(())
    }

    /// Deletes the run's topics from an existing broker; the others go with their broker.
    pub async fn remove_topics(&self, settings: &KafkaSettings, sink: &SinkOptions) {
        if let Running::Existing = self.running {
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
                    Running::Tansu { log, .. } => format!("its log is {}", log.display()),
                    Running::Mock(_) => "librdkafka's mock cluster did not come up".into(),
                    Running::Existing => "is it running, and is the address right?".into(),
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

impl Drop for BenchBroker {
    fn drop(&mut self) {
        if let Running::Tansu { child, .. } = &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nobody listens on right now (the OS picks it; there is a small race until tansu binds).
fn free_port() -> Result<u16, BenchError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| BenchError::Io {
            context: "finding a free local port".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_choices_parse_and_nonsense_is_named() {
        assert_eq!("tansu".parse(), Ok(BrokerChoice::Tansu));
        assert_eq!("librdkafka-mock".parse(), Ok(BrokerChoice::LibrdkafkaMock));
        assert_eq!(
            "localhost:9092".parse(),
            Ok(BrokerChoice::Existing("localhost:9092".into()))
        );
        let err = "kafka".parse::<BrokerChoice>().unwrap_err();
        assert!(err.contains("`kafka`"), "{err}");
    }
}
