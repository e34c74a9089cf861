//! Shared test plumbing: where the services are, and a fresh database or topic per test.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use etl::db::redact_url;
use etl::generate::stream::StreamMessage;
use etl::kafka::KafkaSettings;
use etl::kafka::admin::{self, TopicSpec};
use etl::kafka::producer::{ProduceOptions, produce_blocking};
use etl::kafka::sink::{self, SinkOptions, SinkSummary};
use etl::telemetry::metrics::Metrics;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Service addresses: the environment wins, then `.local/services.env` written by `just up`,
/// then the defaults `just up` uses. Tests share the demo's Apache Kafka: every topic a test
/// makes has a name of its own and is deleted when the test ends.
pub struct Services {
    pub database_url: String,
    pub kafka_brokers: String,
    /// Apache Kafka's jars, for tests that run a broker of their own (`private_kafka`).
    pub kafka_libs: Option<String>,
}

pub fn services() -> &'static Services {
    static SERVICES: OnceLock<Services> = OnceLock::new();
    SERVICES.get_or_init(|| {
        trace_to_test_output();
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/services.env");
        let written: HashMap<String, String> = dotenvy::from_path_iter(&file)
            .map(|vars| vars.filter_map(Result::ok).collect())
            .unwrap_or_default();
        let lookup = |key: &str| {
            std::env::var(key)
                .ok()
                .or_else(|| written.get(key).cloned())
                .filter(|v| !v.is_empty())
        };
        Services {
            database_url: lookup("DATABASE_URL")
                .unwrap_or_else(|| etl::db::DEFAULT_DATABASE_URL.into()),
            kafka_brokers: lookup("KAFKA_BROKERS")
                .unwrap_or_else(|| etl::kafka::config::DEFAULT_BROKERS.into()),
            kafka_libs: lookup("ETL_KAFKA_LIBS"),
        }
    })
}

/// The library's logs (what the sink retried, which partitions it got) into the test's output,
/// which the test runner shows when the test fails. Under nextest, where each test is a process
/// of its own, or when `ETL_TEST_LOG` sets the filter; plain `cargo test` runs every test in one
/// process, where logs from tasks on other threads could not be told apart.
fn trace_to_test_output() {
    let filter = match std::env::var("ETL_TEST_LOG") {
        Ok(filter) => filter,
        Err(_) if std::env::var_os("NEXTEST").is_some() => "warn,etl=info".into(),
        Err(_) => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

pub fn kafka() -> KafkaSettings {
    KafkaSettings::new(&services().kafka_brokers)
}

const START_SERVICES: &str = "start the local services with `just up` (or point DATABASE_URL and \
                              KAFKA_BROKERS at running ones)";

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{database}{query}", &base[..path_start])
}

async fn admin_connection() -> PgConnection {
    let url = &services().database_url;
    PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {}: {e}\n{START_SERVICES}",
            redact_url(url)
        )
    })
}

/// A database of its own for one test, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        etl::db::migrate::migrate(&db.url)
            .await
            .expect("migrating a fresh test database");
        db
    }

    /// A fresh database with nothing in it.
    pub async fn empty() -> Self {
        let name = format!("etl_test_{}", Uuid::new_v4().simple());
        let mut admin = admin_connection().await;
        // The name is ours (a UUID), so formatting it into the statement is safe.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("creating a test database");
        let url = with_database(&services().database_url, &name);
        let pool = etl::db::connect(&url, 5)
            .await
            .expect("connecting to the test database");
        Self { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        run_detached(async move {
            let mut admin = admin_connection().await;
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut admin)
                .await
            {
                eprintln!("warning: {sql} failed: {e}");
            }
        });
    }
}

/// A topic of its own for one test (UUID name), deleted when the value is dropped.
pub struct TestTopic {
    pub name: String,
}

impl TestTopic {
    pub async fn new(partitions: i32) -> Self {
        let name = format!("it-{}", Uuid::new_v4().simple());
        admin::create_topics(&kafka(), &[TopicSpec::new(&name, partitions)])
            .await
            .unwrap_or_else(|e| panic!("creating topic {name}: {e}\n{START_SERVICES}"));
        Self { name }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_detached(async move {
            if let Err(e) = admin::delete_topic(&kafka(), &name).await {
                eprintln!("warning: deleting topic {name} failed: {e}");
            }
        });
    }
}

/// Drop cannot be async and may run inside a runtime, so cleanup gets a thread and runtime of its own.
fn run_detached(work: impl Future<Output = ()> + Send + 'static) {
    let handle = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime")
            .block_on(work);
    });
    let _ = handle.join();
}

/// Runs the `etl` binary with the test services in its environment; returns (success, stdout, stderr).
pub fn run_etl(args: &[&str], database_url: Option<&str>) -> (bool, String, String) {
    run_etl_with_brokers(args, database_url, &services().kafka_brokers)
}

/// Like [`run_etl`], against other Kafka brokers (e.g. librdkafka's mock cluster).
pub fn run_etl_with_brokers(
    args: &[&str],
    database_url: Option<&str>,
    kafka_brokers: &str,
) -> (bool, String, String) {
    let output = etl_command(
        database_url.unwrap_or(&services().database_url),
        kafka_brokers,
    )
    .args(args)
    .output()
    .expect("running the etl binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `etl` binary with a database and brokers in its environment, quiet logs, run from a
/// temporary folder (so a `.env` in the checkout cannot leak in).
pub fn etl_command(database_url: &str, kafka_brokers: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_etl"));
    command
        .env("DATABASE_URL", database_url)
        .env("KAFKA_BROKERS", kafka_brokers)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir());
    command
}

#[test]
fn database_name_is_replaced_and_query_kept() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/etl?sslmode=disable", "x"),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}

/// Produces `messages` to `topic` and asserts every one was acknowledged.
pub async fn send(settings: &KafkaSettings, topic: &str, messages: Vec<StreamMessage>) {
    let settings = settings.clone();
    let options = ProduceOptions {
        topic: topic.to_string(),
        ..ProduceOptions::default()
    };
    let summary = tokio::task::spawn_blocking(move || {
        produce_blocking(
            &settings,
            &options,
            messages,
            &CancellationToken::new(),
            |_| {},
        )
    })
    .await
    .unwrap()
    .expect("producing");
    assert!(!summary.has_failures(), "{summary:?}");
}

/// Runs the sink on the shared broker until it has caught up (at most 2 minutes).
pub async fn run_sink(db: &TestDb, options: &SinkOptions, metrics: Metrics) -> SinkSummary {
    run_sink_on(&kafka(), db, options, metrics).await
}

/// Runs the sink on the broker of `settings` until it has caught up (at most 2 minutes).
pub async fn run_sink_on(
    settings: &KafkaSettings,
    db: &TestDb,
    options: &SinkOptions,
    metrics: Metrics,
) -> SinkSummary {
    if std::env::var_os("TEST_LOG").is_some() {
        etl::telemetry::init(etl::telemetry::LogFormat::Text);
    }
    tokio::time::timeout(
        Duration::from_secs(120),
        sink::run(
            settings,
            &db.url,
            db.pool.clone(),
            options,
            metrics,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the sink caught up within 2 minutes")
    .expect("the sink ran")
}
