//! Demo data for `etl serve` over a scratch database (`etl serve --scratch N`): what the contract
//! check, the benchmark and the tests serve. One month of users and batch transactions through
//! the batch loader, stream rows scored as the sink scores them (COPY, no broker), the models.

use std::path::PathBuf;

use chrono::{Datelike, TimeDelta, Utc};
use indicatif::ProgressBar;
use sqlx::PgPool;
use uuid::Uuid;

use crate::batch::{LoadOptions, load_all};
use crate::bench::models::{ScoredStream, copy_sink_rows};
use crate::generate::files::write_month;
use crate::generate::monthly::{Month, MonthlyOptions};
use crate::generate::stream::{EventClock, StreamOptions};
use crate::models::{BuildOptions, build};

#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Users in the month's file.
    pub users: u64,
    /// Batch transactions in last month's file.
    pub batch_rows: u64,
    /// Stream rows, spread over the last `days` days up to now.
    pub stream_rows: u64,
    /// How many of the users the stream rows belong to: few users, many transactions each, so
    /// that the anomaly rule (from a user's 11th transaction) has something to flag.
    pub stream_users: usize,
    pub days: u32,
    pub seed: u64,
    pub models_dir: PathBuf,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            users: 500,
            batch_rows: 2_000,
            stream_rows: 5_000,
            stream_users: 100,
            days: 30,
            seed: 42,
            models_dir: PathBuf::from(crate::models::DEFAULT_MODELS_DIR),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seeding failed while {context}: {message}")]
    Step {
        context: &'static str,
        message: String,
    },
}

fn step<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> SeedError {
    move |e| SeedError::Step {
        context,
        message: e.to_string(),
    }
}

/// Fills a migrated, empty database and builds the models; returns the stream rows' tx_ids.
pub async fn seed(pool: &PgPool, options: &SeedOptions) -> Result<Vec<Uuid>, SeedError> {
    let dir = tempfile_dir()?;
    let today = Utc::now().date_naive();
    let (year, month) = if today.month() == 1 {
        (today.year() - 1, 12)
    } else {
        (today.year(), today.month() - 1)
    };
    let month = Month::new(year, month).ok_or_else(|| SeedError::Step {
        context: "choosing last month",
        message: format!("{year}-{month} is outside 2000–2100"),
    })?;
    let monthly = MonthlyOptions {
        month,
        users: options.users,
        transactions: options.batch_rows,
        seed: options.seed,
        invalid_ratio: 0.0,
    };
    write_month(&dir, &monthly, &ProgressBar::hidden())
        .map_err(step("writing the monthly files"))?;
    let loaded = load_all(
        pool,
        &LoadOptions {
            dir: dir.clone(),
            ..Default::default()
        },
    )
    .await
    .map_err(step("loading the monthly files"))?;
    for outcome in loaded {
        outcome.map_err(step("loading a monthly file"))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let users: Vec<Uuid> = sqlx::query_scalar(
        "select distinct user_id from public.users_raw order by user_id limit $1",
    )
    .bind(options.stream_users as i64)
    .fetch_all(pool)
    .await
    .map_err(step("reading the users"))?;
    let stream = ScoredStream::new(
        &users,
        StreamOptions {
            seed: options.seed,
            orphan_ratio: 0.01,
            clock: EventClock::Backfill {
                // A minute back, so that ingested_at (event time + processing) is not ahead of now.
                end: Utc::now() - TimeDelta::minutes(1),
                days: options.days,
            },
            ..Default::default()
        },
    );
    let mut tx_ids = Vec::with_capacity(options.stream_rows as usize);
    let rows = stream
        .take(options.stream_rows as usize)
        .inspect(|row| tx_ids.push(row.tx_id));
    let mut conn = pool.acquire().await.map_err(step("connecting"))?;
    copy_sink_rows(&mut conn, rows)
        .await
        .map_err(step("copying the stream rows"))?;
    sqlx::raw_sql(
        "analyze public.transactions_sink, public.users_raw, public.transactions_batch_raw",
    )
    .execute(&mut *conn)
    .await
    .map_err(step("analyzing"))?;
    drop(conn);
    let summary = build(
        pool,
        &BuildOptions {
            models_dir: options.models_dir.clone(),
            threads: 2,
            ..Default::default()
        },
    )
    .await
    .map_err(step("building the models"))?;
    if !summary.success() {
        return Err(SeedError::Step {
            context: "building the models",
            message:
                "a model or data test failed (run `etl build-models` on the database for details)"
                    .into(),
        });
    }
    Ok(tx_ids)
}

fn tempfile_dir() -> Result<PathBuf, SeedError> {
    let dir = std::env::temp_dir().join(format!("etl-serve-seed-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(step("creating a temporary folder"))?;
    Ok(dir)
}
