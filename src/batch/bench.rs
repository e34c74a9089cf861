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

/// What to measure. Defaults: the issue's month of 1M users and 1M transactions.
#[derive(Debug, Clone)]
pub struct BatchBenchOptions {
    pub month: MonthlyOptions,
    /// Folder for the generated files (emptied of this month's files first).
    pub dir: PathBuf,
    /// The server to use: a scratch database is created on it and dropped afterwards.
    pub database_url: String,
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
    pub raw_copy: Duration,
    pub loader: Duration,
}

impl BatchBenchReport {
    pub fn loader_to_copy_ratio(&self) -> f64 {
        self.loader.as_secs_f64() / self.raw_copy.as_secs_f64()
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
            "raw COPY:         {:.2} s ({:.1} MiB of CSV)",
            secs(self.raw_copy),
            self.file_bytes as f64 / (1024.0 * 1024.0)
        )?;
        writeln!(f, "load-batch:       {:.2} s", secs(self.loader))?;
        write!(f, "loader / raw COPY = {:.2}x", self.loader_to_copy_ratio())
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
    let result = measure(&url, &options.dir, &generated).await;
    // The name is ours (a UUID), so formatting it into the statement is safe.
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)"#
    )))
    .execute(&mut admin)
    .await;
    let (raw_copy, loader) = result?;
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
        raw_copy,
        loader,
    })
}

async fn measure(
    url: &str,
    dir: &Path,
    generated: &crate::generate::files::MonthlyReport,
) -> Result<(Duration, Duration), BenchError> {
    db::migrate::migrate(url).await?;
    let pool = db::connect(url, 2).await?;
    let mut conn = pool.acquire().await.map_err(sql("connecting"))?;
    sqlx::raw_sql(include_str!("bench_tables.sql"))
        .execute(&mut *conn)
        .await
        .map_err(sql("creating the baseline tables"))?;

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
    let raw_copy = started.elapsed();
    drop(conn);

    let started = Instant::now();
    let options = LoadOptions {
        dir: dir.to_path_buf(),
        month: Some(generated_month(generated)),
        reload: false,
    };
    let mut landed = 0;
    for outcome in load_all(&pool, &options).await? {
        landed += outcome?.rows_loaded;
    }
    let loader = started.elapsed();
    let expected = generated.user_rows + generated.transaction_rows;
    if landed != expected {
        return Err(BenchError::Lost { landed, expected });
    }
    pool.close().await;
    Ok((raw_copy, loader))
}

fn generated_month(
    generated: &crate::generate::files::MonthlyReport,
) -> crate::generate::monthly::Month {
    BatchFile::from_path(&generated.users_file)
        .expect("the generator names its files")
        .month
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
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
