//! What a build did: one result per seed, model and test, the progress lines and summary table
//! people read, the history rows in `etl.model_runs` / `etl.test_results`, and
//! `<target-dir>/run_results.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::ModelError;
use super::config::Severity;
use super::data_tests::Watermarks;
use super::plan::NodeKind;

const INSERT_MODEL_RUN: &str = include_str!("sql/insert_model_run.sql");
const INSERT_TEST_RESULT: &str = include_str!("sql/insert_test_result.sql");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A seed or model built.
    Success,
    /// A seed or model failed, or a test could not run.
    Error,
    /// Not run because something upstream failed.
    Skipped,
    /// A test found no failing row.
    Pass,
    /// A warn-level test found failing rows.
    Warn,
    /// An error-level test found failing rows.
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Skipped => "skipped",
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }

    /// The word on the progress line.
    pub fn word(self) -> &'static str {
        match self {
            Self::Success => "OK",
            Self::Error => "ERROR",
            Self::Skipped => "SKIP",
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }

    /// Whether this outcome makes the run fail.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Error | Self::Fail | Self::Skipped)
    }
}

/// The outcome of one seed, model or test.
#[derive(Debug, Clone, Serialize)]
pub struct NodeResult {
    pub name: String,
    pub kind: NodeKind,
    pub status: Status,
    /// `view`, `table`, `incremental`, `snapshot`, `seed`; none for tests.
    pub materialization: Option<String>,
    /// `analytics.dim_users`; none for tests.
    pub relation: Option<String>,
    pub file: PathBuf,
    /// Rows written (tables, incremental, snapshot, seeds).
    pub rows: Option<u64>,
    /// Failing rows (tests).
    pub failures: Option<u64>,
    pub severity: Option<Severity>,
    /// For generic tests: the model and column tested.
    pub model: Option<String>,
    pub column: Option<String>,
    pub message: Option<String>,
    /// For tests that read a model by its `loaded_at_field`: which rows they checked.
    pub coverage: Option<TestCoverage>,
    pub started_at: DateTime<Utc>,
    #[serde(with = "seconds")]
    pub duration: Duration,
}

/// Which rows a test checked, and what the next `--test-scope changed` run starts from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestCoverage {
    /// Only rows loaded after this were checked; none: every row.
    pub since: Option<DateTime<Utc>>,
    /// The latest `loaded_at_field` value seen, by relation (`schema.name`).
    pub watermarks: Watermarks,
    /// The hash the marks belong to (see `data_tests::definition_hash`).
    pub definition: String,
}

impl Serialize for NodeKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

mod seconds {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}

const LINE_WIDTH: usize = 64;

impl NodeResult {
    /// `  3/15 OK    table analytics.dim_users ............ 12,345 rows in 0.42s`
    pub fn progress_line(&self, index: usize, total: usize) -> String {
        let width = total.to_string().len();
        let what = match (&self.kind, &self.materialization, &self.relation) {
            (NodeKind::Test, _, _) => format!("test {}", self.name),
            (_, Some(m), Some(r)) => format!("{m} {r}"),
            _ => self.name.clone(),
        };
        let detail = match (self.status, self.rows, self.failures) {
            (Status::Skipped, ..) => String::new(),
            (Status::Error, ..) => format!("in {:.2}s", self.duration.as_secs_f64()),
            (_, _, Some(failures)) if self.kind == NodeKind::Test && failures > 0 => {
                format!(
                    "{} failing rows in {:.2}s",
                    group(failures),
                    self.duration.as_secs_f64()
                )
            }
            (_, Some(rows), _) => format!(
                "{} rows in {:.2}s",
                group(rows),
                self.duration.as_secs_f64()
            ),
            _ if self.coverage.as_ref().is_some_and(|c| c.since.is_some()) => {
                format!("new rows in {:.2}s", self.duration.as_secs_f64())
            }
            (_, None, _) if self.kind == NodeKind::Seed => {
                format!("unchanged in {:.2}s", self.duration.as_secs_f64())
            }
            _ => format!("in {:.2}s", self.duration.as_secs_f64()),
        };
        let dots = LINE_WIDTH.saturating_sub(what.chars().count()).max(3);
        let mut line = format!(
            "{index:>w$}/{total} {:<5} {what} {} {detail}",
            self.status.word(),
            ".".repeat(dots),
            w = width + 2,
        );
        if let Some(message) = self.message.as_ref().filter(|_| self.status.is_failure()) {
            let _ = write!(line, "\n{:w$}{message}", "", w = width * 2 + 4);
        }
        line.trim_end().to_string()
    }
}

/// `12345` → `12,345`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Every result of one invocation.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[serde(with = "seconds")]
    pub elapsed: Duration,
    /// In the order they finished.
    pub results: Vec<NodeResult>,
}

impl RunSummary {
    /// True when nothing failed, errored or was skipped.
    pub fn success(&self) -> bool {
        !self.results.iter().any(|r| r.status.is_failure())
    }

    pub fn get(&self, name: &str) -> Option<&NodeResult> {
        self.results.iter().find(|r| r.name == name)
    }

    pub fn status_of(&self, name: &str) -> Option<Status> {
        self.get(name).map(|r| r.status)
    }

    pub fn count(&self, kind: NodeKind, status: Status) -> usize {
        self.results
            .iter()
            .filter(|r| r.kind == kind && r.status == status)
            .count()
    }

    /// The table printed at the end: counts per kind and status, then every problem.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nFinished in {:.2}s (run {})",
            self.elapsed.as_secs_f64(),
            self.run_id
        );
        let _ = writeln!(
            out,
            "  {:<6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}",
            "", "total", "ok", "pass", "warn", "fail", "error", "skipped"
        );
        for kind in [NodeKind::Seed, NodeKind::Model, NodeKind::Test] {
            let total = self.results.iter().filter(|r| r.kind == kind).count();
            if total == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "  {:<6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}",
                format!("{}s", kind.as_str()),
                total,
                self.count(kind, Status::Success),
                self.count(kind, Status::Pass),
                self.count(kind, Status::Warn),
                self.count(kind, Status::Fail),
                self.count(kind, Status::Error),
                self.count(kind, Status::Skipped),
            );
        }
        let problems: Vec<&NodeResult> = self
            .results
            .iter()
            .filter(|r| matches!(r.status, Status::Error | Status::Fail | Status::Warn))
            .collect();
        if !problems.is_empty() {
            out.push_str("\nProblems:\n");
            for r in problems {
                let _ = writeln!(
                    out,
                    "  {:<5} {} {} ({}): {}",
                    r.status.word(),
                    r.kind.as_str(),
                    r.name,
                    r.file.display(),
                    r.message.as_deref().unwrap_or("")
                );
            }
        }
        let skipped = self.count(NodeKind::Model, Status::Skipped)
            + self.count(NodeKind::Seed, Status::Skipped)
            + self.count(NodeKind::Test, Status::Skipped);
        if skipped > 0 {
            let _ = writeln!(out, "\n{skipped} skipped because something upstream failed");
        }
        let on_new_rows = self.tests_on_new_rows();
        if on_new_rows > 0 {
            let _ = writeln!(
                out,
                "\n{on_new_rows} data tests checked only the rows loaded since they last passed \
                 (--test-scope changed); the others, every row"
            );
        }
        out
    }

    /// Tests that checked only the rows loaded since they last passed (`--test-scope changed`).
    pub fn tests_on_new_rows(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.coverage.as_ref().is_some_and(|c| c.since.is_some()))
            .count()
    }

    /// Writes `run_results.json` into `dir` (created when missing); returns its path.
    pub fn write_json(&self, dir: &Path) -> Result<PathBuf, ModelError> {
        let path = dir.join("run_results.json");
        let write_error = |source| ModelError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(write_error)?;
        let json = serde_json::to_string_pretty(self).map_err(|e| ModelError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&path, json + "\n").map_err(write_error)?;
        Ok(path)
    }
}

/// Key of the transaction-level advisory lock under which [`ensure_bookkeeping`] runs
/// ("etl_book" in ASCII), so that two builds starting together do not both create the tables.
const BOOKKEEPING_LOCK_KEY: i64 = 0x6574_6c5f_626f_6f6b;

/// Creates the history tables (`etl.model_runs`, `etl.test_results`) where they are missing:
/// all the bookkeeping a dbt project's database gets (etl's own database is migrated instead).
pub async fn ensure_bookkeeping(pool: &PgPool) -> Result<(), ModelError> {
    let fail = ModelError::database;
    let mut tx = pool
        .begin()
        .await
        .map_err(fail("creating the run history tables"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BOOKKEEPING_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(fail("creating the run history tables"))?;
    sqlx::raw_sql(include_str!("sql/bookkeeping.sql"))
        .execute(&mut *tx)
        .await
        .map_err(fail("creating the run history tables"))?;
    tx.commit()
        .await
        .map_err(fail("creating the run history tables"))
}

/// Appends one result to the history tables.
pub async fn record(pool: &PgPool, run_id: Uuid, result: &NodeResult) -> Result<(), ModelError> {
    let finished_at = result.started_at
        + chrono::Duration::from_std(result.duration).unwrap_or_else(|_| chrono::Duration::zero());
    match result.kind {
        NodeKind::Seed | NodeKind::Model => {
            let status = match result.status {
                Status::Success | Status::Pass | Status::Warn => "success",
                Status::Skipped => "skipped",
                Status::Error | Status::Fail => "error",
            };
            sqlx::query(INSERT_MODEL_RUN)
                .bind(run_id)
                .bind(&result.name)
                .bind(result.materialization.as_deref().unwrap_or("seed"))
                .bind(status)
                .bind(result.rows.map(|r| r as i64))
                .bind(&result.message)
                .bind(result.started_at)
                .bind(finished_at)
                .execute(pool)
                .await
                .map_err(ModelError::database(
                    "recording a model run in etl.model_runs",
                ))?;
        }
        NodeKind::Test => {
            let status = match result.status {
                Status::Success => "pass",
                other => other.as_str(),
            };
            sqlx::query(INSERT_TEST_RESULT)
                .bind(run_id)
                .bind(&result.name)
                .bind(&result.model)
                .bind(&result.column)
                .bind(result.severity.unwrap_or_default().as_str())
                .bind(status)
                .bind(result.failures.map(|r| r as i64))
                .bind(&result.message)
                .bind(result.started_at)
                .bind(finished_at)
                .bind(
                    result.coverage.as_ref().map(
                        |c| {
                            if c.since.is_some() { "changed" } else { "all" }
                        },
                    ),
                )
                .bind(result.coverage.as_ref().and_then(|c| c.since))
                .bind(
                    result
                        .coverage
                        .as_ref()
                        .map(|c| sqlx::types::Json(c.watermarks.clone())),
                )
                .bind(result.coverage.as_ref().map(|c| c.definition.clone()))
                .execute(pool)
                .await
                .map_err(ModelError::database(
                    "recording a test result in etl.test_results",
                ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_read_well() {
        let result = NodeResult {
            name: "dim_users".into(),
            kind: NodeKind::Model,
            status: Status::Success,
            materialization: Some("table".into()),
            relation: Some("analytics.dim_users".into()),
            file: "models/dim_users.sql".into(),
            rows: Some(12_345),
            failures: None,
            severity: None,
            model: None,
            column: None,
            message: None,
            coverage: None,
            started_at: Utc::now(),
            duration: Duration::from_millis(420),
        };
        let line = result.progress_line(3, 15);
        assert!(
            line.starts_with("   3/15 OK    table analytics.dim_users ..."),
            "{line}"
        );
        assert!(line.ends_with(" 12,345 rows in 0.42s"), "{line}");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(12), "12");
    }
}
