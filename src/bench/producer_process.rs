//! `etl bench e2e --producer process`: the measured stream sent by `etl produce` running as a
//! process of its own, as a user runs it beside `etl kafka-to-postgres`, so the producer's
//! generating, serializing and librdkafka threads do not share the sink's process.
//!
//! The child gets the benchmark's users in a user file of their own and the same seed, ratios,
//! rate and duration as the in-process producer would. What it sent is read from the broker
//! (the topic's high watermarks after it exited, minus those before it started), not from its
//! output; its CPU time from this process's accounting of waited-for children.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::BenchError;
use crate::kafka::KafkaSettings;
use crate::kafka::admin;

/// What one `etl produce` process sent.
pub struct ProcessSent {
    /// Messages the topic gained while the process ran.
    pub sent: u64,
    /// Just before the process was started.
    pub started: DateTime<Utc>,
    /// From its start to its exit: its startup (reading the user file, connecting) and its
    /// final flush are inside.
    pub elapsed: Duration,
    /// User and system CPU time of the process.
    pub cpu: Option<Duration>,
}

/// What the child is told to send.
pub struct ProducerRun<'a> {
    /// The `etl` executable.
    pub etl: &'a Path,
    pub settings: &'a KafkaSettings,
    pub topic: &'a str,
    pub users: &'a [Uuid],
    pub seed: u64,
    pub invalid_ratio: f64,
    pub orphan_ratio: f64,
    pub rate: u32,
    pub duration: Duration,
}

impl ProducerRun<'_> {
    /// Runs `etl produce` to its end, or until `cancel` (which kills it).
    pub async fn run(&self, cancel: &CancellationToken) -> Result<ProcessSent, BenchError> {
        let users_dir = UsersDir::write(self.users)?;
        let before = messages_ever(self.settings, self.topic).await?;
        let children_cpu_before = super::children_cpu_time();
        let started = Utc::now();
        let clock = Instant::now();
        let mut child = self
            .command(&users_dir.path)
            .spawn()
            .map_err(|source| BenchError::Io {
                context: format!("starting {} produce", self.etl.display()),
                source,
            })?;
        // Read stderr as it comes, so the child never blocks on a full pipe.
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let status = wait_or_kill(&mut child, cancel)
            .await
            .map_err(|source| BenchError::Io {
                context: "waiting for etl produce".into(),
                source,
            })?;
        let elapsed = clock.elapsed();
        let cpu = super::cpu_between(children_cpu_before, super::children_cpu_time());
        let stderr = stderr.join().unwrap_or_default();
        if cancel.is_cancelled() {
            return Err(BenchError::Void("interrupted".into()));
        }
        if !status.success() {
            return Err(BenchError::Void(format!(
                "etl produce exited with {status}: {}",
                last_lines(&stderr, 5)
            )));
        }
        let after = messages_ever(self.settings, self.topic).await?;
        Ok(ProcessSent {
            sent: u64::try_from(after - before).unwrap_or(0),
            started,
            elapsed,
            cpu,
        })
    }

    fn command(&self, users_dir: &Path) -> Command {
        let mut command = Command::new(self.etl);
        command
            .arg("produce")
            .arg("--users-dir")
            .arg(users_dir)
            .args(["--topic", self.topic])
            .args(["--rate", &self.rate.to_string()])
            .args(["--duration", &format!("{}ms", self.duration.as_millis())])
            .args(["--seed", &self.seed.to_string()])
            .args(["--invalid-ratio", &self.invalid_ratio.to_string()])
            .args(["--orphan-ratio", &self.orphan_ratio.to_string()]);
        for (key, value) in &self.settings.overrides {
            command.arg("-X").arg(format!("{key}={value}"));
        }
        // The benchmark's broker and only the settings passed here: no PRODUCE_* or
        // KAFKA_CONFIG of the caller's environment. Credentials go by environment, never as
        // arguments, which the process list shows.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("PRODUCE_") || key == "KAFKA_CONFIG" {
                command.env_remove(key.as_ref());
            }
        }
        let s = self.settings;
        command.env("KAFKA_BROKERS", &s.brokers);
        for (key, value) in [
            ("KAFKA_SECURITY_PROTOCOL", &s.security_protocol),
            ("KAFKA_SASL_MECHANISM", &s.sasl_mechanism),
            ("KAFKA_USERNAME", &s.username),
            ("KAFKA_PASSWORD", &s.password),
        ] {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }
}

/// The child's exit status; killed when `cancel` fires first. Polled: the wait is for a process
/// that runs for the benchmark's duration, and std's `wait` would hold a thread that cannot be
/// interrupted.
async fn wait_or_kill(
    child: &mut Child,
    cancel: &CancellationToken,
) -> std::io::Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            () = cancel.cancelled() => {
                child.kill()?;
                return child.wait();
            }
        }
    }
}

/// Σ high watermarks of `topic`: every message it ever got.
async fn messages_ever(settings: &KafkaSettings, topic: &str) -> Result<i64, BenchError> {
    let watermarks = admin::high_watermarks(settings, topic).await?;
    Ok(watermarks.iter().map(|(_, high)| high).sum())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// A temporary folder with one user file holding the benchmark's users, removed on drop.
struct UsersDir {
    path: PathBuf,
}

impl UsersDir {
    fn write(users: &[Uuid]) -> Result<Self, BenchError> {
        let dir = Self {
            path: std::env::temp_dir().join(format!("etl-bench-users-{}", Uuid::new_v4())),
        };
        let io = |source| BenchError::Io {
            context: format!("writing the benchmark's users to {}", dir.path.display()),
            source,
        };
        std::fs::create_dir_all(&dir.path).map_err(io)?;
        // `etl produce` needs only the user_id column of the user files.
        let mut text = String::with_capacity(users.len() * 37 + 8);
        text.push_str("user_id\n");
        for user in users {
            text.push_str(&user.hyphenated().to_string());
            text.push('\n');
        }
        std::fs::write(dir.path.join("user_registrations_2025_01.csv"), text).map_err(io)?;
        Ok(dir)
    }
}

impl Drop for UsersDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_file_holds_every_user_once_under_a_user_id_header() {
        let users = [Uuid::from_u128(1), Uuid::from_u128(2)];
        let dir = UsersDir::write(&users).unwrap();
        let read = crate::generate::user_ids::load_user_ids(&dir.path).unwrap();
        assert_eq!(read.ids, users);
        let path = dir.path.clone();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn the_last_lines_of_the_childs_stderr() {
        assert_eq!(last_lines("a\nb\nc", 2), "b / c");
        assert_eq!(last_lines("a", 5), "a");
    }
}
