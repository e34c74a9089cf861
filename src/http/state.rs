//! What every handler shares: the database pool, the Kafka clients and the settings.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::db::{DbError, nodelay, redact_url};
use crate::domain::rules::Rules;
use crate::kafka::{KafkaError, KafkaSettings};
use crate::telemetry::metrics::HttpMetrics;

/// How `etl serve` behaves; tests override what matters.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where `POST /events` produces.
    pub topic: String,
    pub dlq_topic: String,
    pub anomalies_topic: String,
    /// The sink's consumer group, whose lag the dashboard shows.
    pub group: String,
    /// When set, `POST /events` needs `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Longest a database statement may run before it is cancelled and answered 503.
    pub statement_timeout: Duration,
    /// Longest a Kafka metadata request or delivery may take before it is answered 503.
    pub kafka_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    pub db_connections: u32,
    /// What `POST /events` accepts and `/schema/transaction.json` describes (`--extra-categories`).
    pub rules: Arc<Rules>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            topic: "transactions".into(),
            dlq_topic: "transactions_error".into(),
            anomalies_topic: "anomalies".into(),
            group: "etl-sink".into(),
            api_token: None,
            statement_timeout: Duration::from_secs(5),
            kafka_timeout: Duration::from_secs(5),
            body_limit: 64 * 1024,
            db_connections: 8,
            rules: Arc::new(Rules::default()),
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub pool: PgPool,
    pub kafka: KafkaSettings,
    pub producer: FutureProducer,
    /// A group-less client for metadata and watermarks (health, lag, the stream page).
    pub metadata: Arc<BaseConsumer>,
    pub options: ServeOptions,
    pub metrics: HttpMetrics,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

impl AppState {
    /// Connects the pool (so a wrong URL fails at start) and creates the Kafka clients, which
    /// connect on first use: a broker that is down makes `/health` say so, not the start fail.
    pub async fn new(
        database_url: &str,
        kafka: KafkaSettings,
        options: ServeOptions,
    ) -> Result<Self, StartError> {
        let pool = connect(database_url, &options).await?;
        let timeout_ms = options.kafka_timeout.as_millis().max(1).to_string();
        let producer: FutureProducer = {
            let mut config = kafka.producer_config();
            // One event at a time: send at once, and give up within the timeout.
            config
                .set("linger.ms", "1")
                .set("message.timeout.ms", &timeout_ms);
            kafka.apply_overrides(&mut config);
            config
                .create()
                .map_err(KafkaError::client("creating a Kafka producer"))?
        };
        let metadata: BaseConsumer = kafka
            .client_config()
            .create()
            .map_err(KafkaError::client("creating a Kafka client"))?;
        Ok(Self(Arc::new(Inner {
            pool,
            kafka,
            producer,
            metadata: Arc::new(metadata),
            options,
            metrics: HttpMetrics::new(),
        })))
    }
}

/// A pool whose connections carry the statement timeout, so a slow query is cancelled by the
/// server itself and the connection is free again.
async fn connect(url: &str, options: &ServeOptions) -> Result<PgPool, DbError> {
    let failed = |e| DbError::Connect {
        url: redact_url(url),
        cause: Box::new(e),
    };
    let timeout = format!("{}ms", options.statement_timeout.as_millis().max(1));
    let connect = PgConnectOptions::from_str(url)
        .map_err(failed)?
        .application_name("etl serve")
        .options([("statement_timeout", timeout.as_str())])
        .log_slow_statements(log::LevelFilter::Debug, options.statement_timeout);
    let tcp_port = connect.get_socket().is_none().then(|| connect.get_port());
    PgPoolOptions::new()
        .max_connections(options.db_connections)
        .min_connections(1)
        .acquire_timeout(options.statement_timeout)
        .after_connect(move |_conn, _meta| {
            Box::pin(async move {
                if let Some(port) = tcp_port {
                    let _ = nodelay::set_on_connections_to(port);
                }
                Ok(())
            })
        })
        .connect_with(connect)
        .await
        .map_err(failed)
}
