//! A throwaway tansu broker with `memory://` storage on a free port, for benchmarks that measure
//! our code rather than a broker's disk (DESIGN §7). Killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A running broker; the process is killed on drop (its log in the temp folder stays, for
/// post-mortems).
pub struct BenchBroker {
    child: Child,
    pub address: String,
    pub log: PathBuf,
}

impl BenchBroker {
    /// Starts `tansu` on a free local port and waits until it answers.
    pub async fn start(tansu: &Path) -> Result<Self, BenchError> {
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
        let broker = Self {
            child,
            address,
            log,
        };
        tracing::info!(address = %broker.address, pid = broker.child.id(), "started a memory:// tansu broker");
        broker.wait_until_ready().await?;
        Ok(broker)
    }

    /// CPU time the broker used so far (Linux only).
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        super::cpu_time_of(&self.child.id().to_string())
    }

    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings::new(&self.address)
    }

    async fn wait_until_ready(&self) -> Result<(), BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if admin::describe_topics(&self.settings(), None).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BenchError::BrokerNotReady {
                    address: self.address.clone(),
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for BenchBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
