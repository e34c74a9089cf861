//! SQL models, dbt style (ARCHITECTURE §6): Jinja templates in `models/`, a DAG from `ref`/`source`,
//! four materializations, data tests, CSV seeds, selection, history and a scheduler.
//!
//! [`plan`] reads and orders a models folder without a database; [`build`] runs the plan:
//! seeds, models and tests, in parallel where the DAG allows, appending every result to
//! `etl.model_runs` / `etl.test_results`.

pub mod config;
pub mod data_tests;
pub mod dbt_project;
pub mod ddl;
pub mod error;
pub mod execute;
pub mod graph;
pub mod macros;
pub mod materialize;
pub mod plan;
pub mod project;
pub mod render;
pub mod results;
pub mod schedule;
pub mod seed_types;
pub mod seeds;
pub mod select;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sqlx::PgPool;

pub use config::{Materialization, ModelConfig, Severity};
pub use data_tests::TestScope;
pub use error::ModelError;
pub use plan::{GraphFormat, NodeKind, Plan, plan};
pub use results::{NodeResult, RunSummary, Status};
pub use schedule::{
    DEFAULT_FULL_TESTS_EVERY, LockedBuild, Schedule, build_locked, run_scheduled,
    run_scheduled_with, tick_test_scope,
};

/// The default models folder and target folder, relative to the working directory.
pub const DEFAULT_MODELS_DIR: &str = "models";
pub const DEFAULT_TARGET_DIR: &str = "target";
/// Where models and seeds build (ARCHITECTURE §5); dbt's target schema.
pub const DEFAULT_SCHEMA: &str = "analytics";
/// `target.name` in templates (dbt's profile target).
pub const DEFAULT_TARGET_NAME: &str = "dev";
/// See [`BuildOptions::test_lookback`]; the models' `incremental_lookback` defaults to the same.
pub const DEFAULT_TEST_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// A models folder (our layout) or a dbt project (a folder with `dbt_project.yml`).
    pub models_dir: PathBuf,
    /// Selectors (`m`, `+m`, `m+`, `tag:x`, `path:dir`); empty selects everything.
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    /// Rebuild incremental models and reload seeds whole.
    pub full_refresh: bool,
    /// Nodes built at the same time.
    pub threads: usize,
    /// `var('x')` values.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Where `run_results.json` and `compiled/<model>.sql` go; none writes no files.
    pub target_dir: Option<PathBuf>,
    /// The schema models and seeds build into (dbt's target schema; a custom `schema` config
    /// builds into `<schema>_<custom>`).
    pub schema: String,
    /// `target.name` in templates.
    pub target_name: String,
    /// Which rows data tests check: everything (dbt's way, the default), or on models with a
    /// `loaded_at_field`, the rows loaded since the test last passed.
    pub test_scope: TestScope,
    /// With `TestScope::Changed`: how far before the rows a test last checked it starts again,
    /// for loads that committed out of order (as `incremental_lookback` does for the models).
    pub test_lookback: std::time::Duration,
    /// Plan what can be planned: models and tests whose templates do not render are left out
    /// and reported in the compatibility report instead of failing the plan
    /// (`--dbt-compat-report`).
    pub tolerant: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            models_dir: PathBuf::from(DEFAULT_MODELS_DIR),
            select: Vec::new(),
            exclude: Vec::new(),
            full_refresh: false,
            threads: 4,
            vars: BTreeMap::new(),
            target_dir: None,
            schema: DEFAULT_SCHEMA.to_string(),
            target_name: DEFAULT_TARGET_NAME.to_string(),
            test_scope: TestScope::All,
            test_lookback: DEFAULT_TEST_LOOKBACK,
            tolerant: false,
        }
    }
}

/// Parses `--vars`: a YAML (or JSON) mapping such as `{start_date: '2025-01-01', days: 7}`.
pub fn parse_vars(text: &str) -> Result<BTreeMap<String, serde_json::Value>, ModelError> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let value: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| ModelError::BadVars(e.to_string()))?;
    match value {
        serde_json::Value::Object(map) => Ok(map.into_iter().collect()),
        serde_json::Value::Null => Ok(BTreeMap::new()),
        other => Err(ModelError::BadVars(format!("got {other}"))),
    }
}

/// Hears about each finished node while a build runs (the CLI prints progress lines).
pub trait Progress: Send + Sync {
    /// The number of nodes about to run.
    fn planned(&self, _total: usize) {}
    /// Node number `index` (1-based, in finishing order) of `total` finished.
    fn finished(&self, _index: usize, _total: usize, _result: &NodeResult) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}

/// Plans and builds: seeds, models and data tests. Planning errors (a cycle, an unknown ref,
/// bad YAML) are returned as errors and nothing runs; failures of single nodes are results in
/// the summary (see [`RunSummary::success`]).
pub async fn build(pool: &PgPool, options: &BuildOptions) -> Result<RunSummary, ModelError> {
    build_with_progress(pool, options, &Silent).await
}

/// [`build`], telling `progress` about every node as it finishes.
pub async fn build_with_progress(
    pool: &PgPool,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<RunSummary, ModelError> {
    let plan = plan(options)?;
    execute::execute(pool, Arc::new(plan), options, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_parse_as_yaml() {
        let vars = parse_vars("{start: '2025-01-01', days: 7}").unwrap();
        assert_eq!(vars["days"], serde_json::json!(7));
        assert_eq!(vars["start"], serde_json::json!("2025-01-01"));
        assert!(parse_vars("[1, 2]").is_err());
        assert!(parse_vars("").unwrap().is_empty());
    }
}
