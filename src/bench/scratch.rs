//! What the benchmarks share: a scratch database (migrated, dropped afterwards; the models
//! benchmark uses it too), and for the sink benchmarks the users in `users_raw`, the sink's
//! topics on the benchmark's own broker, and the generated traffic.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use super::broker::{BenchBroker, BrokerChoice};
use super::{BenchError, build_profile, cpus, load_average, show_load};
use crate::db;
use crate::generate::stream::{StreamMessage, StreamOptions};
use crate::kafka::KafkaSettings;
use crate::kafka::producer::Outgoing;
use crate::kafka::sink::SinkOptions;

/// What the sink benchmarks (`etl bench sink`, `etl bench e2e`) share: the servers, the
/// generated traffic and the sink's settings.
#[derive(Debug, Clone)]
pub struct StreamBenchOptions {
    /// The server to use: a scratch database is created on it and dropped afterwards.
    pub database_url: String,
    pub partitions: i32,
    /// Distinct users (keys) in the generated traffic.
    pub users: u32,
    pub seed: u64,
    pub invalid_ratio: f64,
    pub orphan_ratio: f64,
    /// The broker to run on.
    pub broker: BrokerChoice,
    /// `-X` settings for every Kafka client of the benchmark, the sink's included.
    pub overrides: Vec<(String, String)>,
    /// The sink's settings.
    pub sink: SinkOptions,
    /// Connections of the sink's pool (`etl kafka-to-postgres` uses 4).
    pub db_connections: u32,
}

impl Default for StreamBenchOptions {
    fn default() -> Self {
        Self {
            database_url: db::DEFAULT_DATABASE_URL.to_string(),
            partitions: 3,
            users: 10_000,
            seed: 1,
            invalid_ratio: 0.01,
            orphan_ratio: 0.02,
            broker: BrokerChoice::Existing(crate::kafka::config::DEFAULT_BROKERS.into()),
            overrides: Vec::new(),
            sink: SinkOptions::default(),
            db_connections: crate::kafka::sink::DEFAULT_DB_CONNECTIONS,
        }
    }
}

impl StreamBenchOptions {
    /// Starts (or reaches) the benchmark's broker and creates `sink`'s topics on it, renaming
    /// them on a broker of others (see [`BenchBroker::create_topics`]); the settings carry the
    /// `-X` overrides.
    pub async fn start_broker(
        &self,
        sink: &mut SinkOptions,
    ) -> Result<(BenchBroker, KafkaSettings), BenchError> {
        let broker = BenchBroker::start(&self.broker).await?;
        let settings = KafkaSettings {
            overrides: self.overrides.clone(),
            ..broker.settings()
        };
        broker
            .create_topics(&settings, sink, self.partitions)
            .await?;
        Ok((broker, settings))
    }

    /// The scratch database, with a pool the size of the sink's (at least 2).
    pub async fn scratch_db(&self) -> Result<ScratchDb, BenchError> {
        ScratchDb::create(&self.database_url, self.db_connections.max(2)).await
    }
}

/// A database of the benchmark's own on the server of `DATABASE_URL`.
pub struct ScratchDb {
    server_url: String,
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl ScratchDb {
    /// Creates and migrates `etl_bench_<uuid>`; `connections` is the pool's size.
    pub async fn create(server_url: &str, connections: u32) -> Result<Self, BenchError> {
        let name = format!("etl_bench_{}", Uuid::new_v4().simple());
        let mut admin = admin_connection(server_url).await?;
        // The name is ours (a UUID), so formatting it into the statement is safe.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .map_err(BenchError::sql("creating the scratch database"))?;
        let _ = admin.close().await;
        let url = crate::bench::batch::with_database(server_url, &name);
        let created = async {
            db::migrate::migrate(&url).await?;
            db::connect(&url, connections).await
        }
        .await;
        let scratch = |pool| Self {
            server_url: server_url.to_string(),
            name: name.clone(),
            url: url.clone(),
            pool,
        };
        match created {
            Ok(pool) => {
                tracing::info!(database = %name, "scratch database created");
                Ok(scratch(pool))
            }
            Err(err) => {
                drop_database(server_url, &name).await;
                Err(err.into())
            }
        }
    }

    /// Closes the pool and drops the database, whatever is still connected to it.
    pub async fn drop_now(self) {
        self.pool.close().await;
        drop_database(&self.server_url, &self.name).await;
    }
}

async fn admin_connection(server_url: &str) -> Result<PgConnection, BenchError> {
    PgConnection::connect(server_url)
        .await
        .map_err(|cause| db::DbError::Connect {
            url: db::redact_url(server_url),
            cause: Box::new(cause),
        })
        .map_err(BenchError::from)
}

async fn drop_database(server_url: &str, name: &str) {
    let statement = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
    let dropped = match admin_connection(server_url).await {
        Ok(mut admin) => sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut admin)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = dropped {
        tracing::warn!(%err, "{statement} failed; drop it by hand");
    }
}

/// When, where and how a sink benchmark ran: the same fields head the JSON of both reports and
/// the same line ends their tables.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRun {
    pub started_at: String,
    pub build_profile: &'static str,
    pub cpus: usize,
    pub load_average_at_start: Option<f64>,
    pub load_average_at_end: Option<f64>,
    /// `tcp host:port` or `unix socket <dir>`: how the sink reached PostgreSQL.
    pub database_transport: String,
    /// Share of the machine's CPU time that the hypervisor gave to other guests during the run
    /// (steal, Linux): on a shared virtual machine, stolen stretches show as latency spikes.
    pub cpu_stolen_share: Option<f64>,
    #[serde(skip)]
    pub(crate) cpu_ticks_at_start: Option<super::CpuTicks>,
}

impl BenchRun {
    /// Taken as the benchmark starts; `finished` adds the load average at the end.
    pub fn start(database_url: &str) -> Self {
        Self {
            started_at: Utc::now().to_rfc3339(),
            build_profile: build_profile(),
            cpus: cpus(),
            load_average_at_start: load_average(),
            load_average_at_end: None,
            database_transport: database_transport(database_url),
            cpu_stolen_share: None,
            cpu_ticks_at_start: super::CpuTicks::now(),
        }
    }

    pub fn finished(self) -> Self {
        let stolen = self
            .cpu_ticks_at_start
            .zip(super::CpuTicks::now())
            .and_then(|(start, end)| end.stolen_share_since(&start));
        Self {
            load_average_at_end: load_average(),
            cpu_stolen_share: stolen,
            ..self
        }
    }

    /// The report's last line.
    pub fn machine_line(&self) -> String {
        format!(
            "- Machine: {} CPUs, load average {} at start, {} at end, CPU stolen by the hypervisor {}; \
             PostgreSQL over {}. Started {}.\n",
            self.cpus,
            show_load(self.load_average_at_start),
            show_load(self.load_average_at_end),
            self.cpu_stolen_share
                .map_or_else(|| "unknown".into(), |s| format!("{:.1} %", s * 100.0)),
            self.database_transport,
            self.started_at,
        )
    }
}

/// How the benchmark reaches PostgreSQL, for the report: `unix socket <dir>` or `tcp host:port`.
/// It can matter: over TCP, a COPY waits for a delayed ACK unless TCP_NODELAY is set
/// (`db::nodelay`).
pub fn database_transport(url: &str) -> String {
    match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(options) => match options.get_socket() {
            Some(dir) => format!("unix socket {}", dir.display()),
            None => format!("tcp {}:{}", options.get_host(), options.get_port()),
        },
        Err(_) => "unknown".into(),
    }
}

/// CPU time used so far by the server processes connected to `database` (the sink's pool,
/// autovacuum), when PostgreSQL runs on this machine (Linux only); for per-row costs that the
/// noise of a shared machine does not blur. Processes that ended since are not counted.
pub async fn backend_cpu_time(pool: &PgPool, database: &str) -> Option<Duration> {
    let pids: Vec<(i32,)> = sqlx::query_as("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .fetch_all(pool)
        .await
        .ok()?;
    let mut total = Duration::ZERO;
    for (pid,) in pids {
        let pid = pid.to_string();
        // A PostgreSQL server elsewhere has pids that mean nothing here.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if comm.trim() != "postgres" {
            return None;
        }
        total += super::cpu_time_of(&pid)?;
    }
    Some(total)
}

/// CPU time of the broker and of the scratch database's server processes, read together.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuReading {
    pub broker: Option<Duration>,
    pub postgres: Option<Duration>,
}

impl CpuReading {
    pub async fn now(broker: &super::broker::BenchBroker, db: &ScratchDb) -> Self {
        Self {
            broker: broker.cpu_time(),
            postgres: backend_cpu_time(&db.pool, &db.name).await,
        }
    }

    /// Seconds used since `earlier`, per process kind.
    pub fn since(&self, earlier: &Self) -> (Option<f64>, Option<f64>) {
        let seconds = |a, b| super::cpu_between(a, b).map(|d| d.as_secs_f64());
        (
            seconds(earlier.broker, self.broker),
            seconds(earlier.postgres, self.postgres),
        )
    }
}

/// The benchmark's users: fixed ids, so every run sends the same keys.
pub fn bench_users(count: u32) -> Vec<Uuid> {
    (0..count)
        .map(|i| Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("bench-user-{i}").as_bytes()))
        .collect()
}

/// Puts `users` into `users_raw`, as the batch files would, so that only the generator's
/// orphans are late-arriving for the sink.
pub async fn insert_users(pool: &PgPool, users: &[Uuid]) -> Result<(), BenchError> {
    sqlx::query(include_str!("bench_users.sql"))
        .bind(users)
        .execute(pool)
        .await
        .map(drop)
        .map_err(BenchError::sql("inserting the benchmark's users"))
}

/// The generator's options for benchmark traffic.
pub fn traffic(seed: u64, invalid_ratio: f64, orphan_ratio: f64) -> StreamOptions {
    StreamOptions {
        seed,
        invalid_ratio,
        orphan_ratio,
        ..StreamOptions::default()
    }
}

/// A generated message sent by reference, so the benchmark keeps the messages it sent.
pub struct Borrowed<'a>(pub &'a StreamMessage);

impl Outgoing for Borrowed<'_> {
    fn key(&self) -> &[u8] {
        self.0.key()
    }
    fn payload(&self) -> &[u8] {
        self.0.payload()
    }
    fn injected(&self) -> Option<&'static str> {
        self.0.injected()
    }
    fn orphan(&self) -> bool {
        self.0.orphan()
    }
}

/// Polls `done` every `every` until it holds or `timeout` passes; says whether it held.
pub async fn wait_for(mut done: impl FnMut() -> bool, every: Duration, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_names_tcp_or_the_socket_folder() {
        assert_eq!(
            database_transport("postgres://postgres@127.0.0.1:5432/etl"),
            "tcp 127.0.0.1:5432"
        );
        assert_eq!(
            database_transport("postgres://postgres@%2Fvar%2Frun%2Fpostgresql/etl"),
            "unix socket /var/run/postgresql"
        );
    }
}
