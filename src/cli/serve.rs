//! `etl serve`: the REST API, the dashboard and `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::bench::scratch::ScratchDb;
use crate::cli::produce::parse_duration;
use crate::db;
use crate::http::seed::{self, SeedOptions};
use crate::http::{self, AppState, ServeOptions};
use crate::kafka::admin::{self, TopicSpec};
use crate::shutdown;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on
    #[arg(long, env = "ETL_SERVE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Topic `POST /events` produces to
    #[arg(long, env = "KAFKA_TOPIC", default_value = "transactions")]
    pub topic: String,
    /// The sink's consumer group, whose lag the dashboard shows
    #[arg(long, env = "KAFKA_GROUP", default_value = "etl-sink")]
    pub group: String,
    /// The sink's dead-letter topic (stream page)
    #[arg(long, env = "KAFKA_DLQ_TOPIC", default_value = "transactions_error")]
    pub dlq_topic: String,
    /// The anomalies topic (stream page)
    #[arg(long, env = "KAFKA_ANOMALIES_TOPIC", default_value = "anomalies")]
    pub anomalies_topic: String,
    /// When set, `POST /events` needs `Authorization: Bearer <token>`; reads stay open
    #[arg(long, env = "ETL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Longest a database query may run before it is cancelled and answered 503, e.g. 5s
    #[arg(long, env = "ETL_SERVE_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub statement_timeout: Duration,
    /// Longest a Kafka request or delivery may take before it is answered 503
    #[arg(long, env = "ETL_SERVE_KAFKA_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub kafka_timeout: Duration,
    /// Largest accepted request body, in bytes
    #[arg(long, env = "ETL_SERVE_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Database connections
    #[arg(long, env = "ETL_SERVE_DB_CONNECTIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=200))]
    pub db_connections: u32,
    /// Serve a scratch database of demo data instead of DATABASE_URL's: created on its server,
    /// filled with this many stream rows over the last 30 days (plus a month of users and batch
    /// transactions), the models built, dropped on exit; events go to a scratch topic, deleted on
    /// exit. For the contract check and the benchmark
    #[arg(long, value_name = "STREAM_ROWS")]
    pub scratch: Option<u64>,
    /// With --scratch: write up to 10,000 of the stream rows' tx_ids here, one a line
    #[arg(long, requires = "scratch")]
    pub ids_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub rules: super::rules::RulesArgs,
}

impl Args {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        if self.scratch.is_none() {
            db::migrate::migrate(&global.database_url).await?;
        }
        let options = ServeOptions {
            topic: self.topic,
            dlq_topic: self.dlq_topic,
            anomalies_topic: self.anomalies_topic,
            group: self.group,
            api_token: self.api_token.filter(|t| !t.is_empty()),
            statement_timeout: self.statement_timeout,
            kafka_timeout: self.kafka_timeout,
            body_limit: self.body_limit,
            db_connections: self.db_connections,
            rules: self.rules.rules()?,
        };
        let writes = if options.api_token.is_some() {
            "POST /events needs the bearer token"
        } else {
            "POST /events is open (set ETL_API_TOKEN to require a token)"
        };
        let mut options = options;
        let scratch = match self.scratch {
            Some(rows) => {
                // Events posted to a scratch server go to a scratch topic, removed on exit.
                let topic = format!("serve-scratch-{}", uuid::Uuid::new_v4().simple());
                admin::create_topics(&global.kafka(), &[TopicSpec::new(&topic, 3)]).await?;
                let seeded =
                    scratch_database(rows, self.ids_file.as_deref(), &global.database_url).await;
                if seeded.is_err() {
                    let _ = admin::delete_topic(&global.kafka(), &topic).await;
                }
                options.topic = topic;
                Some(seeded?)
            }
            None => None,
        };
        let database_url = scratch
            .as_ref()
            .map_or(global.database_url.as_str(), |s| s.url.as_str());
        let topic = options.topic.clone();
        let served = serve(self.addr, database_url, global, options, writes).await;
        if let Some(scratch) = scratch {
            scratch.drop_now().await;
            if let Err(err) = admin::delete_topic(&global.kafka(), &topic).await {
                tracing::warn!(%err, %topic, "the scratch topic is left behind");
            }
        }
        served
    }
}

async fn serve(
    addr: SocketAddr,
    database_url: &str,
    global: &GlobalArgs,
    options: ServeOptions,
    writes: &str,
) -> anyhow::Result<()> {
    let state = AppState::new(database_url, global.kafka(), options).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    println!(
        "etl serve: dashboard http://{bound}/  stream http://{bound}/stream  API http://{bound}/openapi.json"
    );
    tracing::info!(addr = %bound, "{writes}");
    let cancel = shutdown::on_signal();
    axum::serve(listener, http::app(state))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .context("the HTTP server stopped")?;
    Ok(())
}

/// A scratch database with `rows` stream rows of demo data, the models built.
async fn scratch_database(
    rows: u64,
    ids_file: Option<&std::path::Path>,
    server_url: &str,
) -> anyhow::Result<ScratchDb> {
    let scratch = ScratchDb::create(server_url, 4).await?;
    eprintln!(
        "seeding scratch database {} with {rows} stream rows …",
        scratch.name
    );
    let stream_users = (rows / 100).clamp(100, 20_000);
    let options = SeedOptions {
        users: stream_users.max(500),
        batch_rows: (rows / 10).clamp(1_000, 100_000),
        stream_rows: rows,
        stream_users: stream_users as usize,
        ..Default::default()
    };
    match seed::seed(&scratch.pool, &options).await {
        Ok(ids) => {
            if let Some(path) = ids_file {
                let step = (ids.len() / 10_000).max(1);
                let text: String = ids
                    .iter()
                    .step_by(step)
                    .map(|id| format!("{id}\n"))
                    .collect();
                std::fs::write(path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            scratch.pool.close().await;
            Ok(scratch)
        }
        Err(err) => {
            scratch.drop_now().await;
            Err(err.into())
        }
    }
}
