//! `etl build-models`

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use crate::db;
use crate::models::{
    self, BuildOptions, LockedBuild, NodeResult, Progress, RunSummary, Schedule, TestScope,
    build_locked, parse_vars, run_scheduled_with,
};
use crate::shutdown;
use crate::telemetry::metrics::ModelMetrics;

use super::GlobalArgs;
use super::produce::parse_duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of the models: *.sql models, tests/*.sql, seeds/*.csv, YAML sources and tests
    #[arg(long, env = "ETL_MODELS_DIR", default_value = models::DEFAULT_MODELS_DIR)]
    pub models_dir: PathBuf,

    /// A dbt project to build (a folder with dbt_project.yml: its model, seed, test and macro
    /// paths and folder configs). Default: the working directory when it holds
    /// dbt_project.yml, else --models-dir. Its database gets only etl's run history
    /// (etl.model_runs, etl.test_results), not etl's landing tables
    #[arg(long, env = "ETL_PROJECT_DIR")]
    pub project_dir: Option<PathBuf>,

    /// The schema models and seeds build into (dbt's target schema); a model configured with
    /// schema='x' builds into <schema>_x, as dbt's default generate_schema_name does
    #[arg(long, env = "ETL_MODELS_SCHEMA", default_value = models::DEFAULT_SCHEMA)]
    pub schema: String,

    /// target.name in templates (the profile target a dbt project expects)
    #[arg(long, env = "ETL_MODELS_TARGET", default_value = models::DEFAULT_TARGET_NAME)]
    pub target: String,

    /// Print what the project holds that this runner ignores or does not honour (dbt
    /// features, configs, tests of packages) and exit without touching the database
    #[arg(long, env = "ETL_MODELS_DBT_COMPAT_REPORT")]
    pub dbt_compat_report: bool,

    /// What to build, repeatable: m, +m (with ancestors), m+ (with descendants), tag:x,
    /// path:models/marts. Everything when not given
    #[arg(long, short = 's', env = "ETL_MODELS_SELECT", num_args = 1.., value_delimiter = ' ')]
    pub select: Vec<String>,

    /// What to leave out, same syntax as --select
    #[arg(long, env = "ETL_MODELS_EXCLUDE", num_args = 1.., value_delimiter = ' ')]
    pub exclude: Vec<String>,

    /// Rebuild incremental models whole and reload every seed (snapshots keep their history)
    #[arg(long, env = "ETL_MODELS_FULL_REFRESH")]
    pub full_refresh: bool,

    /// Seeds, models and tests built at the same time
    #[arg(long, env = "ETL_MODELS_THREADS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,

    /// Values for var('x'), as a YAML mapping: --vars '{start_date: 2025-01-01, days: 7}'
    #[arg(long, env = "ETL_MODELS_VARS")]
    pub vars: Option<String>,

    /// Print the plan in build order and exit without touching the database
    #[arg(long, env = "ETL_MODELS_LIST")]
    pub list: bool,

    /// Build again at this interval until SIGINT/SIGTERM, e.g. 5m or 1h
    #[arg(long, env = "ETL_MODELS_EVERY", value_parser = parse_duration, conflicts_with = "cron")]
    pub every: Option<Duration>,

    /// Build at the times of this cron expression (local time) until SIGINT/SIGTERM,
    /// e.g. "*/5 * * * *"
    #[arg(long, env = "ETL_MODELS_CRON")]
    pub cron: Option<String>,

    /// Where run_results.json and compiled/<model>.sql are written
    #[arg(long, env = "ETL_MODELS_TARGET_DIR", default_value = models::DEFAULT_TARGET_DIR)]
    pub target_dir: PathBuf,

    /// Which rows data tests check: all (every row, every run, as dbt does), or changed: on
    /// models with a loaded_at_field, only the rows loaded since the test last passed (with
    /// the same definition); tests that read no such model still check everything. A run with
    /// all checks what changed misses: parents that lost keys, rows rewritten in place.
    /// Default: all for a single build; changed with --every/--cron, plus a full run every
    /// --full-tests-every
    #[arg(long, env = "ETL_MODELS_TEST_SCOPE", value_enum)]
    pub test_scope: Option<TestScope>,

    /// With --every/--cron and test scope changed: run every test in full on the first build
    /// and then again once this long has passed since the last full run, e.g. 24h, 12h.
    /// 0 turns the full runs off
    #[arg(long, env = "ETL_MODELS_FULL_TESTS_EVERY", value_parser = parse_duration, default_value = "24h")]
    pub full_tests_every: Duration,

    /// With --every/--cron: serve Prometheus /metrics (run durations, outcomes, test
    /// failures), /healthz and /readyz on this address, e.g. 0.0.0.0:9187
    #[arg(long, env = "ETL_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// With --test-scope changed: start this much before the rows a test last checked, for
    /// loads that committed out of order
    #[arg(long, env = "ETL_MODELS_TEST_LOOKBACK", value_parser = parse_duration, default_value = "5m")]
    pub test_lookback: Duration,
}

/// One line per finished node on stdout.
struct PrintProgress;

impl Progress for PrintProgress {
    fn planned(&self, total: usize) {
        println!("Building {total} nodes");
    }

    fn finished(&self, index: usize, total: usize, result: &NodeResult) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", result.progress_line(index, total));
        let _ = out.flush();
    }
}

impl Args {
    /// --project-dir, else the working directory when it is a dbt project, else --models-dir.
    fn project_dir(&self) -> PathBuf {
        if let Some(dir) = &self.project_dir {
            return dir.clone();
        }
        if std::path::Path::new(models::dbt_project::DBT_PROJECT_FILE).is_file() {
            return PathBuf::from(".");
        }
        self.models_dir.clone()
    }

    /// Scheduled builds test the changed rows by default (a full run comes every
    /// --full-tests-every); a single build tests everything, as dbt does.
    pub fn test_scope(&self) -> TestScope {
        self.test_scope.unwrap_or(if self.is_scheduled() {
            TestScope::Changed
        } else {
            TestScope::All
        })
    }

    fn is_scheduled(&self) -> bool {
        self.every.is_some() || self.cron.is_some()
    }

    fn options(&self) -> anyhow::Result<BuildOptions> {
        Ok(BuildOptions {
            models_dir: self.project_dir(),
            schema: self.schema.clone(),
            target_name: self.target.clone(),
            select: self
                .select
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            exclude: self
                .exclude
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            full_refresh: self.full_refresh,
            threads: self.threads as usize,
            vars: parse_vars(self.vars.as_deref().unwrap_or_default())?,
            target_dir: Some(self.target_dir.clone()),
            test_scope: self.test_scope(),
            test_lookback: self.test_lookback,
            ..BuildOptions::default()
        })
    }

    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let options = self.options()?;
        if self.list {
            let plan = models::plan(&options)?;
            print!("{}", plan.listing());
            return Ok(());
        }
        if self.dbt_compat_report {
            let plan = models::plan(&BuildOptions {
                tolerant: true,
                ..options
            })?;
            print!("{}", plan.compat_report());
            return Ok(());
        }
        let schedule = match (&self.every, &self.cron) {
            (Some(every), _) => Some(Schedule::Every(*every)),
            (None, Some(expression)) => Some(Schedule::cron(expression)?),
            (None, None) => None,
        };
        // Fail on a broken project before connecting.
        let plan = models::plan(&options)?;
        if !plan.project.compat.is_empty() {
            tracing::warn!(
                ignored = plan.project.compat.len(),
                "the project uses things this runner ignores; see --dbt-compat-report"
            );
        }
        // etl's own models read etl's landing tables: migrate. A dbt project's database gets
        // only the run history.
        if !plan.project.layout.dbt {
            db::migrate::migrate(&global.database_url).await?;
        }
        // One connection per thread, one for the build lock, one for the history, and one for
        // the readiness probe when /readyz is served, so that a busy build does not fail it.
        let connections = self.threads + 2 + u32::from(self.metrics_addr.is_some());
        let pool = db::connect(&global.database_url, connections).await?;
        if plan.project.layout.dbt {
            models::results::ensure_bookkeeping(&pool).await?;
        }
        match schedule {
            None => {
                let LockedBuild::Built(summary) =
                    build_locked(&pool, &options, &PrintProgress, true).await?
                else {
                    unreachable!("a waiting build always builds");
                };
                report(&summary, &options);
                if !summary.success() {
                    let failed = summary
                        .results
                        .iter()
                        .filter(|r| r.status.is_failure())
                        .count();
                    bail!(
                        "{failed} of {} nodes failed or were skipped (see above)",
                        summary.results.len()
                    );
                }
                Ok(())
            }
            Some(schedule) => {
                let cancel = shutdown::on_signal();
                let metrics = ModelMetrics::new();
                let server = match self.metrics_addr {
                    Some(addr) => Some(serve_metrics(addr, &metrics, &pool, &cancel).await?),
                    None => None,
                };
                let full_tests_every = Some(self.full_tests_every).filter(|every| !every.is_zero());
                run_scheduled_with(
                    &pool,
                    &options,
                    &schedule,
                    full_tests_every,
                    &cancel,
                    &PrintProgress,
                    |outcome| match outcome {
                        Ok(LockedBuild::Built(summary)) => {
                            metrics.record(summary);
                            report(summary, &options);
                        }
                        Ok(LockedBuild::Busy) => {
                            metrics.record_no_build("busy");
                            println!("another scheduler is building, skipping this tick");
                        }
                        Err(error) => {
                            metrics.record_no_build("error");
                            eprintln!("error: {error}");
                        }
                    },
                )
                .await;
                if let Some(server) = server {
                    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
                }
                Ok(())
            }
        }
    }
}

/// Serves the scheduler's metrics until `cancel`; ready while the database answers.
async fn serve_metrics(
    addr: SocketAddr,
    metrics: &ModelMetrics,
    pool: &sqlx::PgPool,
    cancel: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let render = {
        let metrics = metrics.clone();
        Arc::new(move || metrics.render())
    };
    let database: crate::http::ops::Probe = {
        let pool = pool.clone();
        Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                let ping = sqlx::query("SELECT 1").execute(&pool);
                match tokio::time::timeout(Duration::from_secs(2), ping).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(err)) => Err(format!("database: {err}")),
                    Err(_) => Err("database: no answer within 2 s".into()),
                }
            })
        })
    };
    let router = crate::http::ops::router_rendering(render, vec![database]);
    let (bound, handle) = crate::http::ops::serve(addr, router, cancel.clone())
        .await
        .map_err(|err| anyhow::anyhow!("serving /metrics on {addr}: {err}"))?;
    tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    Ok(handle)
}

fn report(summary: &RunSummary, options: &BuildOptions) {
    print!("{}", summary.table());
    if let Some(dir) = &options.target_dir {
        println!("results in {}", dir.join("run_results.json").display());
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::models::TestScope;

    fn scope(args: &[&str]) -> TestScope {
        let cli = Cli::try_parse_from(["etl", "build-models"].iter().chain(args)).unwrap();
        let Command::BuildModels(args) = cli.command else {
            unreachable!()
        };
        args.test_scope()
    }

    #[test]
    fn scheduled_builds_test_the_changed_rows_unless_told_otherwise() {
        assert_eq!(scope(&[]), TestScope::All);
        assert_eq!(scope(&["--every", "5m"]), TestScope::Changed);
        assert_eq!(scope(&["--cron", "*/5 * * * *"]), TestScope::Changed);
        assert_eq!(
            scope(&["--every", "5m", "--test-scope", "all"]),
            TestScope::All
        );
        assert_eq!(scope(&["--test-scope", "changed"]), TestScope::Changed);
    }
}
