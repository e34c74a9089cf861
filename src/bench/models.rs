//! `etl bench models`: a full build of the SQL models over a million stream and a million batch
//! transactions, then an incremental build after ten thousand new stream rows, in a scratch
//! database that is dropped afterwards.
//!
//! Stream rows go straight into `transactions_sink` with COPY, as the sink would have written
//! them: [`ScoredStream`] draws messages from the stream generator, keeps the valid ones and
//! scores them with the anomaly rule of ARCHITECTURE §4 (Welford per user, in offset order). Tests use
//! the same rows to fill the sink without a broker.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use indicatif::ProgressBar;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sqlx::{PgConnection, PgPool};
use tracing::info;
use uuid::Uuid;

use crate::batch::copy_text::text;
use crate::batch::{LoadOptions, load_all};
use crate::db::{self, DbError};
use crate::domain::transaction::validate;
use crate::generate::files::write_month;
use crate::generate::monthly::{Month, MonthlyOptions};
use crate::generate::stream::{EventClock, StreamGenerator, StreamOptions};
use crate::models::data_tests::UNIQUE_INDEX_PASS;
use crate::models::{BuildOptions, ModelError, NodeKind, RunSummary, TestScope, build};

use super::scratch::ScratchDb;
use super::{BenchError, load_average};

/// Threshold of the anomaly rule (ARCHITECTURE §4).
pub const ANOMALY_Z: f64 = 3.0;

/// One row of `transactions_sink` as the sink writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRow {
    pub tx_id: Uuid,
    pub user_id: Uuid,
    pub amount: Decimal,
    pub currency: String,
    pub merchant: String,
    pub category: String,
    pub event_time: DateTime<Utc>,
    pub status: String,
    pub payment_method: String,
    pub city: Option<String>,
    pub country: Option<String>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub ingested_at: DateTime<Utc>,
    pub user_txn_count: i64,
    pub user_running_mean: f64,
    pub z_score: Option<f64>,
    pub is_anomaly: bool,
}

/// Welford's running count, mean and sum of squared deviations of one user's amounts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Welford {
    pub count: i64,
    pub mean: f64,
    pub m2: f64,
}

impl Welford {
    /// Adds `amount` first, then scores it: `None` before the second transaction or while the
    /// sample standard deviation is 0.
    pub fn score(&mut self, amount: f64) -> Option<f64> {
        self.count += 1;
        let delta = amount - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (amount - self.mean);
        if self.count < 2 {
            return None;
        }
        let stddev = (self.m2 / (self.count - 1) as f64).sqrt();
        (stddev > 0.0).then(|| (amount - self.mean) / stddev)
    }
}

/// Valid generated stream transactions, scored as the sink scores them. Offsets count up on one
/// partition, so offset order is generation order.
pub struct ScoredStream {
    generator: StreamGenerator,
    stats: HashMap<Uuid, Welford>,
    offset: i64,
}

impl ScoredStream {
    pub fn new(users: &[Uuid], options: StreamOptions) -> Self {
        Self {
            generator: StreamGenerator::new(
                users,
                StreamOptions {
                    invalid_ratio: 0.0,
                    ..options
                },
            ),
            stats: HashMap::new(),
            offset: 0,
        }
    }
}

impl Iterator for ScoredStream {
    type Item = SinkRow;

    fn next(&mut self) -> Option<SinkRow> {
        loop {
            let message = self.generator.next()?;
            let Ok(tx) = validate(&message.payload) else {
                continue;
            };
            let offset = self.offset;
            self.offset += 1;
            let stats = self.stats.entry(tx.user_id).or_default();
            let z_score = stats.score(tx.amount.to_f64().unwrap_or(0.0));
            // The sink writes a row a moment after the event: its processing time.
            let ingested_at = tx.event_time
                + TimeDelta::milliseconds(i64::from(tx.processing_time_ms.unwrap_or(100)));
            return Some(SinkRow {
                tx_id: tx.tx_id,
                user_id: tx.user_id,
                amount: tx.amount,
                currency: tx.currency.to_string(),
                merchant: tx.merchant,
                category: tx.category.to_string(),
                event_time: tx.event_time,
                status: tx.status.to_string(),
                payment_method: tx.payment_method.to_string(),
                city: tx.city,
                country: tx.country,
                kafka_partition: 0,
                kafka_offset: offset,
                ingested_at,
                user_txn_count: stats.count,
                user_running_mean: stats.mean,
                z_score,
                is_anomaly: z_score.is_some_and(|z| z.abs() > ANOMALY_Z),
            });
        }
    }
}

/// Columns written by [`sink_copy_row`], in order.
pub const SINK_COLUMNS: &str = r#""tx_id", "user_id", "amount", "currency", "merchant", "category", "event_time", "status", "payment_method", "city", "country", "source_system", "transaction_type", "processing_time_ms", "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at", "user_txn_count", "user_running_mean", "z_score", "is_anomaly""#;

/// Appends `row` in COPY text format.
pub fn sink_copy_row(out: &mut Vec<u8>, row: &SinkRow) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{}\t{}\t{}\t",
        row.tx_id.hyphenated(),
        row.user_id.hyphenated(),
        row.amount
    );
    for value in [&row.currency, &row.merchant, &row.category] {
        text(out, value);
        out.push(b'\t');
    }
    let _ = write!(
        out,
        "{}\t",
        row.event_time.to_rfc3339_opts(SecondsFormat::Micros, true)
    );
    for value in [&row.status, &row.payment_method] {
        text(out, value);
        out.push(b'\t');
    }
    for value in [&row.city, &row.country] {
        match value {
            Some(v) => text(out, v),
            None => out.extend_from_slice(b"\\N"),
        }
        out.push(b'\t');
    }
    let _ = write!(
        out,
        "streaming_kafka\treal_time\t\\N\ttransactions\t{}\t{}\t{}\t{}\t{}\t",
        row.kafka_partition,
        row.kafka_offset,
        row.ingested_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        row.user_txn_count,
        row.user_running_mean
    );
    match row.z_score {
        Some(z) => {
            let _ = write!(out, "{z}");
        }
        None => out.extend_from_slice(b"\\N"),
    }
    let _ = writeln!(out, "\t{}", row.is_anomaly);
}

/// Writes `rows` into `transactions_sink` with one COPY.
pub async fn copy_sink_rows(
    conn: &mut PgConnection,
    rows: impl IntoIterator<Item = SinkRow>,
) -> Result<u64, sqlx::Error> {
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY public.transactions_sink ({SINK_COLUMNS}) FROM STDIN"
        ))
        .await?;
    let mut buffer = Vec::with_capacity(1 << 20);
    for row in rows {
        sink_copy_row(&mut buffer, &row);
        if buffer.len() >= 1 << 20 {
            if let Err(e) = copy.send(buffer.as_slice()).await {
                let _ = copy.abort("sending rows failed").await;
                return Err(e);
            }
            buffer.clear();
        }
    }
    if !buffer.is_empty()
        && let Err(e) = copy.send(buffer.as_slice()).await
    {
        let _ = copy.abort("sending rows failed").await;
        return Err(e);
    }
    copy.finish().await
}

/// What to measure. Defaults: a million stream and a million batch transactions.
#[derive(Debug, Clone)]
pub struct ModelsBenchOptions {
    /// The server to use: a scratch database is created on it and dropped afterwards.
    pub database_url: String,
    pub models_dir: PathBuf,
    /// Stream transactions in `transactions_sink` before the full build.
    pub stream: u64,
    /// Batch transactions, spread over `months` monthly files.
    pub batch: u64,
    /// User rows over all monthly files (restatements included).
    pub users: u64,
    pub months: u32,
    /// New stream rows before the incremental build.
    pub new_rows: u64,
    pub seed: u64,
    /// Folder for the generated files (its earlier month files are removed first).
    pub dir: PathBuf,
    pub threads: usize,
    /// Leave the scratch database in place (for inspection) instead of dropping it.
    pub keep_database: bool,
    /// Which rows the incremental build's data tests check (the full build checks all).
    pub test_scope: TestScope,
}

impl Default for ModelsBenchOptions {
    fn default() -> Self {
        Self {
            database_url: db::DEFAULT_DATABASE_URL.to_string(),
            models_dir: PathBuf::from("models"),
            stream: 1_000_000,
            batch: 1_000_000,
            users: 300_000,
            months: 3,
            new_rows: 10_000,
            seed: 42,
            dir: std::env::temp_dir().join("etl-bench-models"),
            threads: 4,
            keep_database: false,
            test_scope: TestScope::Changed,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelsBenchReport {
    pub options: ModelsBenchOptions,
    pub fill: Duration,
    pub full: Duration,
    pub incremental: Duration,
    pub fct_rows: i64,
    /// What each build ran and where its time went.
    pub full_breakdown: Breakdown,
    pub incremental_breakdown: Breakdown,
    /// The 1-minute load average before the full build and after the incremental one (Linux).
    pub load: (Option<f64>, Option<f64>),
}

/// What a build ran, and where its time went.
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    pub models: usize,
    /// Summed over models (they overlap when several threads run).
    pub model_time: Duration,
    pub tests: usize,
    /// Summed over tests.
    pub test_time: Duration,
    /// Tests that checked only the rows loaded since they last passed (`--test-scope changed`).
    pub tests_on_new_rows: usize,
    /// `unique` tests that a unique index answered without reading the table.
    pub tests_by_unique_index: usize,
    /// The five slowest seeds, models and tests.
    pub slowest: Vec<(String, Duration)>,
}

impl Breakdown {
    fn of(summary: &RunSummary) -> Self {
        let of_kind = |kind: NodeKind| summary.results.iter().filter(move |r| r.kind == kind);
        let mut slowest: Vec<(String, Duration)> = summary
            .results
            .iter()
            .map(|r| (r.name.clone(), r.duration))
            .collect();
        slowest.sort_by_key(|(_, duration)| std::cmp::Reverse(*duration));
        slowest.truncate(5);
        Self {
            models: of_kind(NodeKind::Model).count(),
            model_time: of_kind(NodeKind::Model).map(|r| r.duration).sum(),
            tests: of_kind(NodeKind::Test).count(),
            test_time: of_kind(NodeKind::Test).map(|r| r.duration).sum(),
            tests_on_new_rows: summary.tests_on_new_rows(),
            tests_by_unique_index: of_kind(NodeKind::Test)
                .filter(|r| {
                    r.message
                        .as_deref()
                        .is_some_and(|m| m.starts_with(UNIQUE_INDEX_PASS))
                })
                .count(),
            slowest,
        }
    }
}

impl std::fmt::Display for Breakdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let every_row = self.tests - self.tests_on_new_rows - self.tests_by_unique_index;
        write!(
            f,
            "  includes {} models ({:.2} s summed) and {} data tests ({:.2} s summed): ",
            self.models,
            self.model_time.as_secs_f64(),
            self.tests,
            self.test_time.as_secs_f64(),
        )?;
        if self.tests_on_new_rows > 0 {
            write!(
                f,
                "{} over the rows loaded since they last passed, ",
                self.tests_on_new_rows
            )?;
        }
        writeln!(
            f,
            "{every_row} over every row, {} unique tests answered by a unique index",
            self.tests_by_unique_index
        )?;
        write!(f, "  slowest:")?;
        for (i, (name, duration)) in self.slowest.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{name} {:.2} s", duration.as_secs_f64())?;
        }
        Ok(())
    }
}

impl ModelsBenchReport {
    pub fn ratio(&self) -> f64 {
        self.incremental.as_secs_f64() / self.full.as_secs_f64()
    }
}

impl std::fmt::Display for ModelsBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "data:        {} stream + {} batch transactions, {} user rows over {} months ({:.1} s to generate and land)",
            o.stream,
            o.batch,
            o.users,
            o.months,
            self.fill.as_secs_f64()
        )?;
        writeln!(
            f,
            "fct_transactions rows after both builds: {}",
            self.fct_rows
        )?;
        writeln!(
            f,
            "full build:        {:.2} s (--full-refresh, {} threads, after VACUUM (ANALYZE) and CHECKPOINT)",
            self.full.as_secs_f64(),
            o.threads
        )?;
        writeln!(f, "{}", self.full_breakdown)?;
        writeln!(
            f,
            "incremental build: {:.2} s after {} new stream rows, VACUUM (ANALYZE) and CHECKPOINT (--test-scope {}, default lookbacks of 5 min)",
            self.incremental.as_secs_f64(),
            o.new_rows,
            o.test_scope.as_str()
        )?;
        writeln!(f, "{}", self.incremental_breakdown)?;
        let load = |l: Option<f64>| l.map_or_else(|| "?".to_string(), |l| format!("{l:.2}"));
        writeln!(
            f,
            "load average (1 min): {} before the full build, {} after the incremental one",
            load(self.load.0),
            load(self.load.1)
        )?;
        write!(
            f,
            "incremental / full = {:.1} % (target ≤ 10 %); both are whole `build-models` runs: every model and every data test",
            100.0 * self.ratio()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelsBenchError {
    #[error(transparent)]
    Generate(#[from] crate::generate::files::GenerateError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Scratch(#[from] BenchError),
    #[error(transparent)]
    Load(#[from] crate::batch::BatchError),
    #[error(transparent)]
    Models(#[from] ModelError),
    #[error("benchmark database step failed while {context}: {source}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the {which} build reported failures; the figures would be meaningless")]
    BuildFailed { which: &'static str },
}

fn sql(context: &'static str) -> impl FnOnce(sqlx::Error) -> ModelsBenchError {
    move |source| ModelsBenchError::Sql { context, source }
}

/// Runs the whole benchmark; the scratch database is dropped even when a step fails.
pub async fn run(
    options: &ModelsBenchOptions,
    progress: ProgressBar,
) -> Result<ModelsBenchReport, ModelsBenchError> {
    let scratch = ScratchDb::create(&options.database_url, options.threads as u32 + 2).await?;
    let result = measure(&scratch.pool, options, progress).await;
    if options.keep_database {
        scratch.pool.close().await;
        info!(database = %scratch.name, "the scratch database is kept");
        eprintln!("scratch database kept: {}", scratch.name);
    } else {
        scratch.drop_now().await;
    }
    result
}

async fn measure(
    pool: &PgPool,
    options: &ModelsBenchOptions,
    progress: ProgressBar,
) -> Result<ModelsBenchReport, ModelsBenchError> {
    let started = Instant::now();
    let (users, first_month) = generate_and_land(pool, options, progress).await?;
    let months = options.months.max(1);
    // Stream events spread evenly over the same months as the files.
    let span = (0..months)
        .fold((first_month, 0i64), |(m, s), _| (m.next(), s + m.seconds()))
        .1;
    let step_us = (span * 1_000_000 / options.stream.max(1) as i64).max(1);
    let mut stream = ScoredStream::new(
        &users,
        StreamOptions {
            seed: options.seed,
            orphan_ratio: 0.01,
            clock: EventClock::Fixed {
                start: first_month.start().and_utc(),
                step: TimeDelta::microseconds(step_us),
            },
            ..Default::default()
        },
    );
    let mut conn = pool.acquire().await.map_err(sql("connecting"))?;
    copy_sink_rows(&mut conn, stream.by_ref().take(options.stream as usize))
        .await
        .map_err(sql("copying stream rows into transactions_sink"))?;
    // Everything so far landed "earlier": in steady state an incremental run sees only what
    // arrived since the previous run, not the last minutes' loads its lookback re-reads.
    sqlx::raw_sql(
        "UPDATE public.users_raw SET loaded_at = loaded_at - interval '1 day';
         UPDATE public.transactions_batch_raw SET loaded_at = loaded_at - interval '1 day';",
    )
    .execute(&mut *conn)
    .await
    .map_err(sql("backdating the landed rows"))?;
    let fill = started.elapsed();
    info!(seconds = fill.as_secs_f64(), "landing tables filled");

    // Both builds run under the same conditions: the default lookbacks (models'
    // `incremental_lookback` and the tests' `--test-lookback`, 5 minutes), and right after an
    // untimed VACUUM (ANALYZE) and CHECKPOINT, as in steady state minutes after the last load
    // or build, when autovacuum and the checkpointer are long done. The landed batch rows were
    // loaded "a day ago" (above) and the stream rows when their events happened, so the
    // lookback re-reads nothing old; the new rows arrive just before the incremental build.
    let build_options = |full_refresh| BuildOptions {
        models_dir: options.models_dir.clone(),
        full_refresh,
        threads: options.threads,
        test_scope: options.test_scope,
        ..Default::default()
    };
    settle(&mut conn, "before the full build").await?;
    let load_before = load_average();
    let started = Instant::now();
    let summary = build(pool, &build_options(true)).await?;
    let full = started.elapsed();
    if !summary.success() {
        return Err(ModelsBenchError::BuildFailed { which: "full" });
    }
    let full_breakdown = Breakdown::of(&summary);
    info!(seconds = full.as_secs_f64(), "full build");

    // New rows arrive now, after the full build.
    let now = Utc::now();
    let new_rows: Vec<SinkRow> = stream
        .by_ref()
        .take(options.new_rows as usize)
        .map(|row| SinkRow {
            ingested_at: now,
            ..row
        })
        .collect();
    copy_sink_rows(&mut conn, new_rows)
        .await
        .map_err(sql("copying the new stream rows"))?;
    settle(&mut conn, "before the incremental build").await?;
    drop(conn);

    let started = Instant::now();
    let summary = build(pool, &build_options(false)).await?;
    let incremental = started.elapsed();
    if !summary.success() {
        return Err(ModelsBenchError::BuildFailed {
            which: "incremental",
        });
    }
    let incremental_breakdown = Breakdown::of(&summary);
    let load_after = load_average();
    info!(seconds = incremental.as_secs_f64(), "incremental build");
    let fct_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.fct_transactions")
        .fetch_one(pool)
        .await
        .map_err(sql("counting fct_transactions"))?;
    Ok(ModelsBenchReport {
        options: options.clone(),
        fill,
        full,
        incremental,
        fct_rows,
        full_breakdown,
        incremental_breakdown,
        load: (load_before, load_after),
    })
}

/// VACUUM (ANALYZE) and CHECKPOINT, untimed: what autovacuum and the checkpointer have done in
/// steady state, minutes after a load or a build.
async fn settle(conn: &mut sqlx::PgConnection, when: &'static str) -> Result<(), ModelsBenchError> {
    sqlx::raw_sql("VACUUM (ANALYZE)")
        .execute(&mut *conn)
        .await
        .map_err(sql("vacuuming"))?;
    // CHECKPOINT needs pg_checkpoint (or superuser); without it the build just runs.
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&mut *conn).await {
        info!(error = %e, when, "no checkpoint");
    }
    Ok(())
}

/// Writes `months` monthly files from January 2025 and lands them; returns every user id and
/// the first month.
async fn generate_and_land(
    pool: &PgPool,
    options: &ModelsBenchOptions,
    progress: ProgressBar,
) -> Result<(Vec<Uuid>, Month), ModelsBenchError> {
    let months = options.months.max(1);
    let first = Month::new(2025, 1).expect("a valid month");
    if let Ok(entries) = std::fs::read_dir(&options.dir) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "csv") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let mut month = first;
    for _ in 0..months {
        let month_options = MonthlyOptions {
            month,
            users: options.users / u64::from(months),
            transactions: options.batch / u64::from(months),
            seed: options.seed,
            invalid_ratio: 0.0,
        };
        let (dir, progress) = (options.dir.clone(), progress.clone());
        tokio::task::spawn_blocking(move || write_month(&dir, &month_options, &progress))
            .await
            .expect("the generator does not panic")?;
        month = month.next();
    }
    for outcome in load_all(
        pool,
        &LoadOptions {
            dir: options.dir.clone(),
            ..Default::default()
        },
    )
    .await?
    {
        outcome?;
    }
    let users: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT user_id FROM public.users_raw")
        .fetch_all(pool)
        .await
        .map_err(sql("reading the landed user ids"))?;
    Ok((users, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_scores_from_the_second_amount_with_the_current_one_included() {
        let mut w = Welford::default();
        assert_eq!(w.score(10.0), None);
        // Two equal amounts: stddev 0, no score.
        assert_eq!(w.score(10.0), None);
        let z = w.score(40.0).unwrap();
        // mean 20, sample stddev sqrt(300): z = 20 / 17.32…
        assert!((z - 20.0 / 300f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn nothing_is_flagged_before_the_eleventh_transaction() {
        let mut w = Welford::default();
        for _ in 0..9 {
            w.score(1.0);
        }
        let z = w.score(1_000_000.0).unwrap();
        assert!(z.abs() <= 3.0, "{z}");
    }
}
