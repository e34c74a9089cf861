//! The batch benchmark (not a test): generate a month, then land it twice in a scratch database,
//! once with a bare `COPY` of the files and once with the loader, and compare.
//!
//! The baseline copies each CSV verbatim (`FORMAT csv, HEADER`) into a twin of the landing table
//! (`LIKE … INCLUDING ALL`: same columns, checks and indexes) whose `source_file`/`source_line`
//! have defaults and whose `preferred_categories` is plain text, because a CSV cell "a,b" is not an
//! array literal. That is the least work any loader must make PostgreSQL do for the same rows.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use sqlx::{Connection, PgConnection};
use tracing::info;

use crate::db::{self, DbError};
use crate::generate::files::write_month;
use crate::generate::monthly::MonthlyOptions;

use super::load::copy_in;
use super::{BatchFile, BatchFileKind, LoadOptions, load_all};

/// What to measure. Defaults: a month of 1M users and 1M transactions.
#[derive(Debug, Clone)]
pub struct BatchBenchOptions {
    pub month: MonthlyOptions,
    /// Folder for the generated files (emptied of this month's files first).
    pub dir: PathBuf,
    /// The server to use: a scratch database is created on it and dropped afterwards.
    pub database_url: String,
    /// Rounds of (raw COPY, loader), alternating which goes first; the ratio reported is the
    /// median of the rounds', which tames the noise of a shared machine.
    pub rounds: usize,
}

impl Default for BatchBenchOptions {
    fn default() -> Self {
        Self {
            month: MonthlyOptions {
                users: 1_000_000,
                transactions: 1_000_000,
                ..Default::default()
            },
            dir: std::env::temp_dir().join("etl-bench-batch"),
            database_url: db::DEFAULT_DATABASE_URL.to_string(),
            rounds: 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BatchBenchReport {
    pub generate: Duration,
    /// Peak resident memory of this process after generating (VmHWM), when the OS says.
    pub generate_peak_rss_kib: Option<u64>,
    pub file_bytes: u64,
    pub rows: u64,
    /// One (raw COPY, loader) pair per round.
    pub rounds: Vec<(Duration, Duration)>,
}

impl BatchBenchReport {
    /// Median over the rounds of loader time / raw COPY time.
    pub fn loader_to_copy_ratio(&self) -> f64 {
        let mut ratios: Vec<f64> = self
            .rounds
            .iter()
            .map(|(raw, loader)| loader.as_secs_f64() / raw.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        match ratios.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => ratios[n / 2],
            n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
        }
    }
}

impl std::fmt::Display for BatchBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |d: Duration| d.as_secs_f64();
        writeln!(
            f,
            "generate-monthly: {:.2} s for {} rows ({:.0} rows/s), peak RSS {}",
            secs(self.generate),
            self.rows,
            self.rows as f64 / secs(self.generate),
            self.generate_peak_rss_kib
                .map_or("unknown".to_string(), |k| format!(
                    "{:.0} MiB",
                    k as f64 / 1024.0
                ))
        )?;
        writeln!(
            f,
            "CSV files:        {:.1} MiB",
            self.file_bytes as f64 / (1024.0 * 1024.0)
        )?;
        for (round, (raw, loader)) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "round {}: raw COPY {:.2} s, load-batch {:.2} s, ratio {:.2}x",
                round + 1,
                secs(*raw),
                secs(*loader),
                secs(*loader) / secs(*raw)
            )?;
        }
        writeln!(
            f,
            "loader / raw COPY = {:.2}x (median of {} rounds)",
            self.loader_to_copy_ratio(),
            self.rounds.len()
        )?;
        write!(
            f,
            "note: not like for like. The baseline copies the files verbatim into twins of the \
             landing tables whose preferred_categories is text (a CSV cell \"a,b\" is no array \
             literal) and whose source_file/source_line are defaults; the loader validates every \
             row, builds the text[] and writes both columns itself, so it does more for its time."
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Generate(#[from] crate::generate::files::GenerateError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Load(#[from] super::BatchError),
    #[error("benchmark database step failed while {context}: {source}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the loader landed {landed} rows of {expected} generated ones; the benchmark is void")]
    Lost { landed: u64, expected: u64 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn sql(context: &'static str) -> impl FnOnce(sqlx::Error) -> BenchError {
    move |source| BenchError::Sql { context, source }
}

/// Runs the whole benchmark; the scratch database is dropped even when a step fails.
pub async fn run(
    options: &BatchBenchOptions,
    progress: ProgressBar,
) -> Result<BatchBenchReport, BenchError> {
    let month = options.month.month;
    for name in [month.users_file_name(), month.transactions_file_name()] {
        let _ = std::fs::remove_file(options.dir.join(name));
    }
    let started = Instant::now();
    let generated = {
        let (dir, month_options) = (options.dir.clone(), options.month.clone());
        tokio::task::spawn_blocking(move || write_month(&dir, &month_options, &progress))
            .await
            .expect("the generator does not panic")?
    };
    let generate = started.elapsed();
    let generate_peak_rss_kib = peak_rss_kib();
    info!(seconds = generate.as_secs_f64(), "generated");

    let scratch = format!("etl_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&options.database_url)
        .await
        .map_err(sql("connecting to the server"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{scratch}""#
    )))
    .execute(&mut admin)
    .await
    .map_err(sql("creating the scratch database"))?;
    let url = with_database(&options.database_url, &scratch);
    let result = measure(&url, &options.dir, &generated, options.rounds.max(1)).await;
    // The name is ours (a UUID), so formatting it into the statement is safe.
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)"#
    )))
    .execute(&mut admin)
    .await;
    let rounds = result?;
    let file_bytes = [&generated.users_file, &generated.transactions_file]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(BatchBenchReport {
        generate,
        generate_peak_rss_kib,
        file_bytes,
        rows: generated.user_rows + generated.transaction_rows,
        rounds,
    })
}

async fn measure(
    url: &str,
    dir: &Path,
    generated: &crate::generate::files::MonthlyReport,
    rounds: usize,
) -> Result<Vec<(Duration, Duration)>, BenchError> {
    db::migrate::migrate(url).await?;
    let pool = db::connect(url, 2).await?;
    sqlx::raw_sql(include_str!("bench_tables.sql"))
        .execute(&pool)
        .await
        .map_err(sql("creating the baseline tables"))?;
    let mut results = Vec::with_capacity(rounds);
    for round in 0..rounds {
        sqlx::raw_sql(
            "TRUNCATE bench.users_raw, bench.transactions_batch_raw, public.users_raw, \
             public.transactions_batch_raw, etl.loaded_files, etl.batch_rejects",
        )
        .execute(&pool)
        .await
        .map_err(sql("emptying the tables between rounds"))?;
        // Alternating the order keeps cache warmth and checkpoints from favouring one side.
        let (raw, loader) = if round % 2 == 0 {
            let raw = raw_copy(&pool, generated).await?;
            (raw, loader(&pool, dir, generated).await?)
        } else {
            let loader = loader(&pool, dir, generated).await?;
            (raw_copy(&pool, generated).await?, loader)
        };
        info!(
            round,
            raw = raw.as_secs_f64(),
            loader = loader.as_secs_f64(),
            "bench round"
        );
        results.push((raw, loader));
    }
    pool.close().await;
    Ok(results)
}

/// The baseline: each file verbatim through `COPY … (FORMAT csv)`, one transaction per file.
async fn raw_copy(
    pool: &sqlx::PgPool,
    generated: &crate::generate::files::MonthlyReport,
) -> Result<Duration, BenchError> {
    let mut conn = pool.acquire().await.map_err(sql("connecting"))?;
    let started = Instant::now();
    for (path, table) in [
        (&generated.users_file, "bench.users_raw"),
        (&generated.transactions_file, "bench.transactions_batch_raw"),
    ] {
        let data = tokio::fs::read(path)
            .await
            .map_err(|source| BenchError::Read {
                path: path.clone(),
                source,
            })?;
        let columns = match BatchFile::from_path(path).map(|f| f.kind) {
            Some(BatchFileKind::Users) => crate::domain::user::USER_COLUMNS.join(", "),
            _ => r#"tx_id, user_id, amount, currency, merchant, category, "timestamp""#.to_string(),
        };
        let statement = format!("COPY {table} ({columns}) FROM STDIN (FORMAT csv, HEADER true)");
        let mut tx = conn
            .begin()
            .await
            .map_err(sql("starting the baseline transaction"))?;
        copy_in(&mut tx, &statement, &data)
            .await
            .map_err(sql("raw COPY"))?;
        tx.commit().await.map_err(sql("committing the baseline"))?;
    }
    Ok(started.elapsed())
}

async fn loader(
    pool: &sqlx::PgPool,
    dir: &Path,
    generated: &crate::generate::files::MonthlyReport,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let options = LoadOptions {
        dir: dir.to_path_buf(),
        month: Some(generated_month(generated)),
        reload: false,
        ..LoadOptions::default()
    };
    let mut landed = 0;
    for outcome in load_all(pool, &options).await? {
        landed += outcome?.rows_loaded;
    }
    let elapsed = started.elapsed();
    let expected = generated.user_rows + generated.transaction_rows;
    if landed != expected {
        return Err(BenchError::Lost { landed, expected });
    }
    Ok(elapsed)
}

fn generated_month(
    generated: &crate::generate::files::MonthlyReport,
) -> crate::generate::monthly::Month {
    BatchFile::from_path(&generated.users_file)
        .expect("the generator names its files")
        .month
}

/// `url` with its database name replaced by `database`.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{database}{query}", &base[..path_start])
}

/// Peak resident set size of this process so far, from `/proc/self/status` (Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/etl?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
