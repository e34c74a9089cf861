//! An Apache Kafka broker of a test's own, for tests that stop and start the broker under a
//! running command (the shared broker must stay up for every other test). Runs the same jars as
//! `just up` (`ETL_KAFKA_LIBS` in `.local/services.env`), single-node KRaft, with its log
//! directory in a temporary folder that survives a restart and is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etl::kafka::{KafkaSettings, admin};
use uuid::Uuid;

use crate::helpers::services;

pub struct PrivateKafka {
    dir: PathBuf,
    libs: String,
    child: Option<Child>,
    pub brokers: String,
}

/// How long a starting broker may take to answer metadata requests (a JVM on a busy 2-core
/// machine needs a few seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Attempts at finding two free ports the broker can bind: the OS hands out a free port, but
/// another process may take it before the broker binds it, which the broker's log then says.
const PORT_ATTEMPTS: usize = 5;

fn libs() -> String {
    let libs = services().kafka_libs.clone().unwrap_or_else(|| {
        panic!(
            "ETL_KAFKA_LIBS is not set: run `just up` (or `scripts/services.sh install && \
             scripts/services.sh up`), which fetches Apache Kafka's jars and records where"
        )
    });
    assert!(
        Path::new(&libs).join(".complete").is_file(),
        "no complete Kafka download in {libs}; run `scripts/services.sh install`"
    );
    libs
}

fn java(libs: &str) -> Command {
    let mut command = Command::new("java");
    command.arg("-cp").arg(format!("{libs}/*"));
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

impl PrivateKafka {
    /// Formats a log directory and starts the broker; returns once it answers metadata requests.
    pub async fn start() -> Self {
        let libs = libs();
        let dir = std::env::temp_dir().join(format!("etl-it-kafka-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = java(&libs)
            .args(["kafka.tools.StorageTool", "random-uuid"])
            .stderr(Stdio::null())
            .output()
            .expect("running java (is a JDK installed? `scripts/services.sh install`)");
        let cluster = String::from_utf8_lossy(&cluster.stdout).trim().to_string();
        assert!(
            !cluster.is_empty(),
            "kafka.tools.StorageTool random-uuid printed nothing"
        );
        let mut kafka = Self {
            dir,
            libs,
            child: None,
            brokers: String::new(),
        };
        for _ in 0..PORT_ATTEMPTS {
            let (port, controller) = (free_port(), free_port());
            if port == controller {
                continue;
            }
            kafka.brokers = format!("127.0.0.1:{port}");
            std::fs::remove_dir_all(kafka.data()).ok();
            kafka.write_config(port, controller);
            kafka.format(&cluster);
            if kafka.launch_and_wait().await {
                return kafka;
            }
            if !kafka.log_text().contains("Address already in use") {
                break;
            }
        }
        panic!(
            "the test's Kafka broker did not start; its log:\n{}",
            kafka.log_text()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn write_config(&self, port: u16, controller: u16) {
        let config = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             log.dirs={}\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             auto.create.topics.enable=false\n",
            self.data().display()
        );
        std::fs::write(self.config(), config).unwrap();
    }

    fn format(&self, cluster: &str) {
        let output = java(&self.libs)
            .args([
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster,
                "-c",
            ])
            .arg(self.config())
            .output()
            .expect("running kafka.tools.StorageTool");
        assert!(
            output.status.success(),
            "formatting {} failed: {}",
            self.data().display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the broker process; true once it answers, false when it exited first.
    async fn launch_and_wait(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = java(&self.libs)
            .args(["-Xms128m", "-Xmx384m", "-XX:+UseG1GC"])
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("kafka.Kafka")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the test's Kafka broker");
        self.child = Some(child);
        let settings = KafkaSettings::new(&self.brokers);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("the test's Kafka broker exited: {status}");
                self.child = None;
                return false;
            }
            if admin::describe_topics(&settings, None).await.is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "the test's Kafka broker did not answer within {READY_TIMEOUT:?}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the broker the way `just down` does (SIGTERM: a controlled shutdown) and waits
    /// until the process is gone.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the broker is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .expect("waiting for the broker to stop");
    }

    /// Starts the stopped broker again on the same ports and log directory.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is still running");
        assert!(
            self.launch_and_wait().await,
            "the test's Kafka broker did not start again; its log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- the test's Kafka broker log ({}):\n{}",
                self.log().display(),
                self.log_text()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
