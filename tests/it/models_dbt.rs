//! dbt compatibility (issue 15): the project in `tests/dbt_project/` (seeds with dates,
//! integers and decimals, staging views, marts with Jinja loops and macros, tests in both
//! argument styles, a project-defined generic test, folder configs, custom schemas) is built by
//! `etl build-models` and by dbt-postgres, each into a database of its own, twice (the second
//! build runs the incremental model incrementally). Both must give the same relations, the same
//! column types, the same rows and the same test outcomes.
//!
//! dbt comes from PyPI through `scripts/install-dbt.sh` (a virtualenv under `.local/`); the test
//! fails with the script's message when it cannot install it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{TestDb, run_etl};

/// The schema both tools build into (the seeds go to `analytics_raw`, the marts to
/// `analytics_marts`).
const TARGET_SCHEMA: &str = "analytics";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `dbt` executable, installed by the script when missing.
fn dbt() -> PathBuf {
    let output = Command::new(repo().join("scripts/install-dbt.sh"))
        .output()
        .expect("running scripts/install-dbt.sh");
    assert!(
        output.status.success(),
        "scripts/install-dbt.sh could not install dbt-core and dbt-postgres from PyPI (needs \
         python3 with venv and access to PyPI):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        path.is_file(),
        "install-dbt.sh printed {path:?}, not a dbt executable"
    );
    path
}

/// A copy of the project (dbt writes target/ and logs/ into it).
fn project_copy(into: &Path) -> PathBuf {
    let to = into.join("shop");
    copy_dir(&repo().join("tests/dbt_project"), &to);
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// profiles.yml pointing dbt at `url` (trust or password auth as the URL says).
fn write_profile(dir: &Path, url: &str) {
    let options = PgConnectOptions::from_str(url).expect("DATABASE_URL parses");
    let user = options.get_username();
    let profile = format!(
        "shop:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n      host: '{}'\n      \
         port: {}\n      user: '{user}'\n      password: \"{{{{ env_var('PGPASSWORD', '') }}}}\"\n      \
         dbname: '{}'\n      schema: {TARGET_SCHEMA}\n      threads: 4\n",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres"),
    );
    std::fs::write(dir.join("profiles.yml"), profile).unwrap();
}

/// A test's status and failure count.
type Outcome = (String, Option<i64>);

/// Runs `dbt build` and returns each test's outcome by name (from run_results.json).
fn dbt_build(dbt: &Path, project: &Path, profiles: &Path) -> BTreeMap<String, Outcome> {
    let output = Command::new(dbt)
        .args(["build", "--project-dir"])
        .arg(project)
        .arg("--profiles-dir")
        .arg(profiles)
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .env("DO_NOT_TRACK", "1")
        .output()
        .expect("running dbt");
    assert!(
        output.status.success(),
        "dbt build failed:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(project.join("target/run_results.json")).expect("dbt's run_results.json"),
    )
    .unwrap();
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let id = r["unique_id"].as_str()?;
            let name = id.strip_prefix("test.shop.")?.split('.').next()?;
            let outcome = (r["status"].as_str()?.to_string(), r["failures"].as_i64());
            Some((name.to_string(), outcome))
        })
        .collect()
}

/// Runs `etl build-models --project-dir` and returns each test's outcome by name.
async fn etl_build(db: &TestDb, project: &Path, target: &Path) -> BTreeMap<String, Outcome> {
    let project_dir = project.to_str().unwrap();
    let target_dir = target.to_str().unwrap();
    let (ok, stdout, stderr) = run_etl(
        &[
            "build-models",
            "--project-dir",
            project_dir,
            "--schema",
            TARGET_SCHEMA,
            "--target-dir",
            target_dir,
        ],
        Some(&db.url),
    );
    assert!(ok, "etl build-models failed:\n{stdout}\n{stderr}");
    sqlx::query_as::<_, (String, String, Option<i64>)>(
        "SELECT test_name, status, failures FROM etl.test_results \
         WHERE run_id = (SELECT run_id FROM etl.test_results ORDER BY id DESC LIMIT 1)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(name, status, failures)| (name, (status, failures)))
    .collect()
}

/// Every relation in the target's schemas: kind, and its columns with their types.
async fn relations(pool: &PgPool) -> BTreeMap<String, (String, Vec<(String, String)>)> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, c.relkind::text, a.attname, \
                format_type(a.atttypid, a.atttypmod) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE n.nspname LIKE $1 AND c.relkind IN ('r', 'v', 'm') \
         ORDER BY 1, a.attnum",
    )
    .bind(format!("{TARGET_SCHEMA}%"))
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: BTreeMap<String, (String, Vec<(String, String)>)> = BTreeMap::new();
    for (relation, kind, column, sql_type) in rows {
        out.entry(relation)
            .or_insert_with(|| (kind, Vec::new()))
            .1
            .push((column, sql_type));
    }
    out
}

/// Row count and an order-independent checksum of each relation's rows.
async fn checksums(
    pool: &PgPool,
    names: impl Iterator<Item = &String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in names {
        let (schema, table) = name.split_once('.').unwrap();
        let relation = format!(
            "{}.{}",
            etl::models::render::quote_ident(schema),
            etl::models::render::quote_ident(table)
        );
        let (rows, sum): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(string_agg(t::text, E'\\n' ORDER BY t::text)) FROM {relation} AS t"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        out.insert(
            name.clone(),
            format!("{rows} rows, md5 {}", sum.unwrap_or_default()),
        );
    }
    out
}

async fn assert_identical(etl_db: &TestDb, dbt_db: &TestDb, build: &str) {
    let etl_relations = relations(&etl_db.pool).await;
    let dbt_relations = relations(&dbt_db.pool).await;
    assert!(
        dbt_relations.len() >= 10,
        "dbt built too little: {dbt_relations:?}"
    );
    assert_eq!(
        etl_relations, dbt_relations,
        "{build}: relations and column types"
    );
    let etl_rows = checksums(&etl_db.pool, etl_relations.keys()).await;
    let dbt_rows = checksums(&dbt_db.pool, dbt_relations.keys()).await;
    assert_eq!(etl_rows, dbt_rows, "{build}: rows");
}

#[tokio::test]
async fn a_dbt_project_builds_as_dbt_postgres_builds_it() {
    let dbt = dbt();
    let scratch = tempfile::tempdir().unwrap();
    let etl_db = TestDb::empty().await;
    let dbt_db = TestDb::empty().await;
    let dbt_project = project_copy(&scratch.path().join("dbt"));
    let etl_project = project_copy(&scratch.path().join("etl"));
    write_profile(scratch.path(), &dbt_db.url);

    for build in ["first build", "second build (incremental)"] {
        let dbt_tests = dbt_build(&dbt, &dbt_project, scratch.path());
        let etl_tests = etl_build(&etl_db, &etl_project, &scratch.path().join("target")).await;
        assert_identical(&etl_db, &dbt_db, build).await;
        assert_eq!(etl_tests, dbt_tests, "{build}: test outcomes");
        // Two warn-level tests fail (two failing values each), so the comparison sees failures.
        let warned: Vec<&Outcome> = etl_tests.values().filter(|o| o.0 == "warn").collect();
        assert_eq!(
            warned,
            [
                &("warn".to_string(), Some(2)),
                &("warn".to_string(), Some(2))
            ],
            "{build}: {etl_tests:?}"
        );
    }

    // A foreign project's database gets the run history and nothing of etl's own.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables \
         WHERE table_schema NOT LIKE $1 AND table_schema NOT IN ('pg_catalog', 'information_schema') \
         ORDER BY 1",
    )
    .bind(format!("{TARGET_SCHEMA}%"))
    .fetch_all(&etl_db.pool)
    .await
    .unwrap();
    assert_eq!(tables, ["etl.model_runs", "etl.test_results"]);
}
