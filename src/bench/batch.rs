//! The batch benchmark (not a test): generate a month, then land it twice in a scratch database,
//! once with a bare `COPY` of the files and once with the loader, and compare.
//!
//! The loader runs as a child process, `etl load-batch`, so that the peak memory reported is the
//! loader's own (the generator in this process holds a month of users; its peak would hide it).
//!
//! The baseline copies each CSV verbatim (`FORMAT csv, HEADER`) into a twin of the landing table
//! (`LIKE … INCLUDING ALL`: same columns, checks and indexes) whose `source_file`/`source_line`
//! have defaults and whose `preferred_categories` is plain text, because a CSV cell "a,b" is not an
//! array literal. That is the least work any loader must make PostgreSQL do for the same rows.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use sqlx::{Connection, PgConnection};
use tracing::info;

use crate::db::{self, DbError};
use crate::generate::files::write_month;
use crate::generate::monthly::MonthlyOptions;

use crate::batch::load::copy_in;
use crate::batch::{BatchFile, BatchFileKind};

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
    /// The `etl` binary that runs `load-batch`: this one unless told otherwise (a test harness
    /// is not `etl`).
    pub etl_binary: PathBuf,
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
            etl_binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("etl")),
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
    /// Peak resident memory of the `etl load-batch` process, per round.
    pub loader_peak_rss_kib: Vec<u64>,
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
                "round {}: raw COPY {:.2} s, load-batch {:.2} s ({:.0} rows/s, peak RSS {}), ratio {:.2}x",
                round + 1,
                secs(*raw),
                secs(*loader),
                self.rows as f64 / secs(*loader),
                self.loader_peak_rss_kib
                    .get(round)
                    .map_or("unknown".to_string(), |k| format!(
                        "{:.0} MiB",
                        *k as f64 / 1024.0
                    )),
                secs(*loader) / secs(*raw)
            )?;
        }
        if let Some(peak) = self.loader_peak_rss_kib.iter().max() {
            writeln!(
                f,
                "load-batch peak RSS: {:.0} MiB (the largest of {} rounds; VmHWM of the loader process)",
                *peak as f64 / 1024.0,
                self.loader_peak_rss_kib.len()
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
    Load(#[from] crate::batch::BatchError),
    #[error("benchmark database step failed while {context}: {source}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the loader landed {landed} rows of {expected} generated ones; the benchmark is void")]
    Lost { landed: u64, expected: u64 },
    #[error("`{binary} load-batch` failed ({status}): {stderr}")]
    Loader {
        binary: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
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
    let generate_peak_rss_kib = crate::telemetry::peak_rss_kib();
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
    let result = measure(&url, options, &generated).await;
    // The name is ours (a UUID), so formatting it into the statement is safe.
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)"#
    )))
    .execute(&mut admin)
    .await;
    let (rounds, loader_peak_rss_kib) = result?;
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
        loader_peak_rss_kib,
    })
}

type Rounds = (Vec<(Duration, Duration)>, Vec<u64>);

async fn measure(
    url: &str,
    options: &BatchBenchOptions,
    generated: &crate::generate::files::MonthlyReport,
) -> Result<Rounds, BenchError> {
    let rounds = options.rounds.max(1);
    db::migrate::migrate(url).await?;
    let pool = db::connect(url, 2).await?;
    sqlx::raw_sql(include_str!("batch_tables.sql"))
        .execute(&pool)
        .await
        .map_err(sql("creating the baseline tables"))?;
    let mut results = Vec::with_capacity(rounds);
    let mut peaks = Vec::with_capacity(rounds);
    for round in 0..rounds {
        sqlx::raw_sql(
            "TRUNCATE bench.users_raw, bench.transactions_batch_raw, public.users_raw, \
             public.transactions_batch_raw, etl.loaded_files, etl.batch_rejects",
        )
        .execute(&pool)
        .await
        .map_err(sql("emptying the tables between rounds"))?;
        // Alternating the order keeps cache warmth and checkpoints from favouring one side.
        let ((raw, loader), peak) = if round % 2 == 0 {
            let raw = raw_copy(&pool, generated).await?;
            let (loader, peak) = loader(&pool, url, options, generated).await?;
            ((raw, loader), peak)
        } else {
            let (loader, peak) = loader(&pool, url, options, generated).await?;
            ((raw_copy(&pool, generated).await?, loader), peak)
        };
        info!(
            round,
            raw = raw.as_secs_f64(),
            loader = loader.as_secs_f64(),
            "bench round"
        );
        results.push((raw, loader));
        peaks.push(peak);
    }
    pool.close().await;
    Ok((results, peaks))
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

/// The loader as a child process; its wall time and its peak resident memory (KiB).
async fn loader(
    pool: &sqlx::PgPool,
    url: &str,
    options: &BatchBenchOptions,
    generated: &crate::generate::files::MonthlyReport,
) -> Result<(Duration, u64), BenchError> {
    let peak_file = options.dir.join(format!(
        "load-batch-peak-rss-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let binary = options.etl_binary.display().to_string();
    let started = Instant::now();
    let mut command = std::process::Command::new(&options.etl_binary);
    command
        .arg("load-batch")
        .arg("--dir")
        .arg(&options.dir)
        .arg("--month")
        .arg(generated_month(generated).to_string())
        .arg("--peak-rss-file")
        .arg(&peak_file)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|source| BenchError::Read {
            path: options.etl_binary.clone(),
            source,
        })?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        return Err(BenchError::Loader {
            binary,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let peak = std::fs::read_to_string(&peak_file).map_err(|source| BenchError::Read {
        path: peak_file.clone(),
        source,
    });
    let _ = std::fs::remove_file(&peak_file);
    let peak = peak?.trim().parse().unwrap_or(0);
    let landed: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(rows_loaded), 0)::bigint FROM etl.loaded_files")
            .fetch_one(pool)
            .await
            .map_err(sql("counting the rows the loader landed"))?;
    let expected = generated.user_rows + generated.transaction_rows;
    if landed as u64 != expected {
        return Err(BenchError::Lost {
            landed: landed as u64,
            expected,
        });
    }
    Ok((elapsed, peak))
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
