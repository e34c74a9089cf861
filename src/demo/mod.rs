//! `etl demo`: the whole pipeline once, on the services `just up` started, ending in one summary
//! that adds up. Batch: months of users and transactions generated and loaded. Stream: the sink
//! first catches up with whatever earlier runs left, then a generated stream with invalid and
//! orphan messages is produced and sunk until caught up. Models: every model built and tested.
//!
//! Each figure comes from the step that made it (the generator's record of what it injected,
//! the sink's count of duplicates) or from the tables, read by this run's offsets, so the
//! summary's checks compare independent counts.

pub mod summary;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use indicatif::ProgressBar;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::batch::{FileStatus, LoadOptions, load_all};
use crate::generate::files::write_month;
use crate::generate::monthly::{Month, MonthlyOptions};
use crate::generate::stream::{EventClock, StreamGenerator, StreamOptions};
use crate::generate::user_ids::load_user_ids;
use crate::kafka::producer::{ProduceOptions, produce_blocking};
use crate::kafka::sink::{self, SinkOptions, SinkSummary};
use crate::kafka::{KafkaSettings, admin};
use crate::models::{self, BuildOptions, NodeKind, Status};
use crate::telemetry::metrics::Metrics;

pub use summary::DemoSummary;
use summary::{Anomaly, BatchFigures, ModelFigures, StreamFigures, TopMerchant};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub data_dir: PathBuf,
    pub months: Vec<Month>,
    pub users: u64,
    pub transactions: u64,
    /// Share of bad rows in each batch file.
    pub batch_invalid_ratio: f64,
    /// Seed of the batch files (same seed, same files: a second run loads nothing new).
    pub seed: u64,
    pub stream_count: u64,
    pub invalid_ratio: f64,
    pub orphan_ratio: f64,
    /// Seed of the stream; a new one each run unless given, so each run lands new rows.
    pub stream_seed: u64,
    /// Event times spread over the past days, for the daily charts.
    pub backfill_days: u32,
    pub models_dir: PathBuf,
    /// Topics and group; `until_caught_up` is set by the demo.
    pub sink: SinkOptions,
    pub dashboard_url: String,
}

/// Runs the demo; `step` is told what starts, for the user watching.
pub async fn run(
    kafka: &KafkaSettings,
    database_url: &str,
    pool: &PgPool,
    options: &DemoOptions,
    cancel: &CancellationToken,
    step: &dyn Fn(&str),
) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    step(&format!(
        "generating {} month(s) of users and transactions into {}",
        options.months.len(),
        options.data_dir.display()
    ));
    generate(options).await?;
    step("loading the batch files");
    let mut batch = load(pool, options).await?;
    batch_totals(pool, &mut batch).await?;

    let sink_options = SinkOptions {
        until_caught_up: true,
        ..options.sink.clone()
    };
    step("catching the sink up with earlier messages");
    let drained = run_sink(kafka, database_url, pool, &sink_options, cancel).await?;
    let first_offsets = admin::high_watermarks(kafka, &options.sink.topic).await?;

    step(&format!(
        "producing {} transactions to {} ({:.0} % invalid, {:.0} % from unknown users)",
        options.stream_count,
        options.sink.topic,
        options.invalid_ratio * 100.0,
        options.orphan_ratio * 100.0
    ));
    let mut stream = produce(kafka, options, cancel).await?;
    stream.drained_before = drained.consumed;
    step("sinking the stream into PostgreSQL until caught up");
    let sink_started = Instant::now();
    let sunk = run_sink(kafka, database_url, pool, &sink_options, cancel).await?;
    stream.sink_seconds = sink_started.elapsed().as_secs_f64();
    stream.duplicates = sunk.duplicates;
    stream.late_arriving = sunk.late_arriving;
    stream.anomalies = sunk.anomalies;
    where_it_landed(pool, &options.sink.topic, &first_offsets, &mut stream).await?;

    step("building and testing every model");
    let models = build_models(pool, options).await?;
    let summary = DemoSummary {
        batch,
        stream,
        models,
        top_merchants: top_merchants(pool).await?,
        anomalies: latest_anomalies(pool).await?,
        dashboard_url: options.dashboard_url.clone(),
        elapsed: started.elapsed(),
    };
    Ok(summary)
}

async fn generate(options: &DemoOptions) -> anyhow::Result<()> {
    for &month in &options.months {
        let monthly = MonthlyOptions {
            month,
            users: options.users,
            transactions: options.transactions,
            seed: options.seed,
            invalid_ratio: options.batch_invalid_ratio,
        };
        let dir = options.data_dir.clone();
        tokio::task::spawn_blocking(move || write_month(&dir, &monthly, &ProgressBar::hidden()))
            .await
            .context("the generator stopped unexpectedly")??;
    }
    Ok(())
}

async fn load(pool: &PgPool, options: &DemoOptions) -> anyhow::Result<BatchFigures> {
    let load = LoadOptions {
        dir: options.data_dir.clone(),
        ..LoadOptions::default()
    };
    let mut figures = BatchFigures::default();
    for outcome in load_all(pool, &load).await? {
        let outcome = outcome?;
        match outcome.status {
            FileStatus::AlreadyLoaded { .. } => figures.files_already_loaded += 1,
            FileStatus::Loaded | FileStatus::Reloaded => figures.files_loaded += 1,
        }
        figures.rows_loaded += outcome.rows_loaded;
        figures.rows_rejected += outcome.rows_rejected;
    }
    Ok(figures)
}

async fn batch_totals(pool: &PgPool, figures: &mut BatchFigures) -> anyhow::Result<()> {
    (
        figures.users_in_table,
        figures.transactions_in_table,
        figures.rejects_in_table,
    ) = sqlx::query_as(include_str!("sql/batch_totals.sql"))
        .fetch_one(pool)
        .await
        .context("counting the batch tables")?;
    Ok(())
}

async fn run_sink(
    kafka: &KafkaSettings,
    database_url: &str,
    pool: &PgPool,
    options: &SinkOptions,
    cancel: &CancellationToken,
) -> anyhow::Result<SinkSummary> {
    let summary = sink::run(
        kafka,
        database_url,
        pool.clone(),
        options,
        Metrics::new(),
        cancel.clone(),
    )
    .await?;
    if cancel.is_cancelled() {
        bail!("interrupted");
    }
    Ok(summary)
}

async fn produce(
    kafka: &KafkaSettings,
    options: &DemoOptions,
    cancel: &CancellationToken,
) -> anyhow::Result<StreamFigures> {
    let users = load_user_ids(&options.data_dir)?;
    let generator = StreamGenerator::new(
        &users.ids,
        StreamOptions {
            seed: options.stream_seed,
            invalid_ratio: options.invalid_ratio,
            orphan_ratio: options.orphan_ratio,
            clock: EventClock::Backfill {
                end: Utc::now(),
                days: options.backfill_days,
            },
        },
    );
    let produce = ProduceOptions {
        topic: options.sink.topic.clone(),
        count: Some(options.stream_count),
        ..ProduceOptions::default()
    };
    let (kafka, cancel) = (kafka.clone(), cancel.clone());
    let summary = tokio::task::spawn_blocking(move || {
        produce_blocking(&kafka, &produce, generator, &cancel, |_| {})
    })
    .await
    .context("the producer stopped unexpectedly")??;
    if summary.has_failures() {
        bail!(
            "{} of {} messages were not delivered to {}: {}",
            summary.sent - summary.delivered,
            summary.sent,
            summary.topic,
            summary.first_error.as_deref().unwrap_or("interrupted")
        );
    }
    Ok(StreamFigures {
        topic: summary.topic.clone(),
        produced: summary.delivered,
        injected: summary
            .injected
            .iter()
            .map(|(kind, n)| (kind.to_string(), *n))
            .collect(),
        orphans: summary.orphans,
        produce_seconds: summary.elapsed.as_secs_f64(),
        ..StreamFigures::default()
    })
}

/// Rows and rejects of the messages at or after `first_offsets`: this run's.
async fn where_it_landed(
    pool: &PgPool,
    topic: &str,
    first_offsets: &[(i32, i64)],
    stream: &mut StreamFigures,
) -> anyhow::Result<()> {
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = first_offsets.iter().copied().unzip();
    stream.landed = sqlx::query_scalar(include_str!("sql/landed.sql"))
        .bind(topic)
        .bind(&partitions)
        .bind(&offsets)
        .fetch_one(pool)
        .await
        .context("counting the run's rows")?;
    let rejected: Vec<(String, i64)> = sqlx::query_as(include_str!("sql/rejected_by_kind.sql"))
        .bind(topic)
        .bind(&partitions)
        .bind(&offsets)
        .fetch_all(pool)
        .await
        .context("counting the run's rejects")?;
    stream.rejected = rejected.into_iter().collect::<BTreeMap<_, _>>();
    Ok(())
}

async fn build_models(pool: &PgPool, options: &DemoOptions) -> anyhow::Result<ModelFigures> {
    let build = BuildOptions {
        models_dir: options.models_dir.clone(),
        ..BuildOptions::default()
    };
    let run = models::build(pool, &build).await?;
    let mut figures = ModelFigures {
        seconds: run.elapsed.as_secs_f64(),
        ..ModelFigures::default()
    };
    for result in &run.results {
        match (result.kind, result.status) {
            (NodeKind::Test, Status::Pass | Status::Warn) => figures.tests_passed += 1,
            (NodeKind::Test, _) => {
                figures.tests_failed += 1;
                figures
                    .failures
                    .push((result.name.clone(), result.failures));
            }
            (NodeKind::Model, status) => {
                if status.is_failure() {
                    figures.models_failed += 1;
                }
                figures.models.push((
                    result.name.clone(),
                    result.materialization.clone().unwrap_or_default(),
                    result.rows,
                ));
            }
            (NodeKind::Seed, _) => {}
        }
    }
    Ok(figures)
}

async fn top_merchants(pool: &PgPool) -> anyhow::Result<Vec<TopMerchant>> {
    let rows: Vec<(NaiveDate, String, f64, i64)> =
        sqlx::query_as(include_str!("sql/top_merchants_last_day.sql"))
            .bind(5_i64)
            .fetch_all(pool)
            .await
            .context("reading the top merchants")?;
    Ok(rows
        .into_iter()
        .map(|(date, merchant, revenue_usd, transactions)| TopMerchant {
            date,
            merchant,
            revenue_usd,
            transactions,
        })
        .collect())
}

type AnomalyRow = (
    Uuid,
    Uuid,
    f64,
    String,
    String,
    DateTime<Utc>,
    Option<f64>,
    i64,
);

async fn latest_anomalies(pool: &PgPool) -> anyhow::Result<Vec<Anomaly>> {
    let rows: Vec<AnomalyRow> = sqlx::query_as(include_str!("sql/latest_anomalies.sql"))
        .bind(5_i64)
        .fetch_all(pool)
        .await
        .context("reading the latest anomalies")?;
    Ok(rows
        .into_iter()
        .map(
            |(tx_id, user_id, amount, currency, merchant, event_time, z_score, user_txn_count)| {
                Anomaly {
                    tx_id,
                    user_id,
                    amount,
                    currency,
                    merchant,
                    event_time,
                    z_score,
                    user_txn_count,
                }
            },
        )
        .collect())
}
