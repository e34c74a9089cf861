//! `etl build-models`: each test writes its own models folder and builds into its own database.

use std::path::Path;
use std::time::Duration;

use etl::models::{
    self, BuildOptions, LockedBuild, ModelError, NodeKind, Schedule, Silent, Status, build,
    build_locked, plan,
};
use sqlx::PgPool;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestDb, run_etl};

/// A models folder holding `files` (path relative to it, content).
fn project(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temporary models folder");
    write_files(dir.path(), files);
    dir
}

fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn options(dir: &TempDir) -> BuildOptions {
    BuildOptions {
        models_dir: dir.path().to_path_buf(),
        threads: 2,
        ..BuildOptions::default()
    }
}

fn selected(dir: &TempDir, select: &[&str], exclude: &[&str]) -> Vec<String> {
    let options = BuildOptions {
        select: select.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        ..options(dir)
    };
    let planned = plan(&options).unwrap();
    planned
        .ordered_names()
        .into_iter()
        .map(String::from)
        .collect()
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

const SOURCES: &str =
    "version: 2\nsources:\n  - name: raw\n    schema: public\n    tables:\n      - name: events\n";

/// A chain a → b → c, an independent d, a seed, and a test.
fn chain_project() -> TempDir {
    project(&[
        ("seeds/rates.csv", "code,rate\nUSD,1.0\nEUR,1.5\n"),
        ("staging/a.sql", "select 1 as id, 'USD' as code"),
        (
            "marts/b.sql",
            "{{ config(materialized='table', tags=['nightly']) }}\nselect a.id, r.rate from {{ ref('a') }} a join {{ ref('rates') }} r using (code)",
        ),
        ("marts/c.sql", "select * from {{ ref('b') }}"),
        (
            "d.sql",
            "{{ config(tags=['nightly', 'other']) }}\nselect 2 as id",
        ),
    ])
}

#[tokio::test]
async fn builds_in_dependency_order_and_everything_lands() {
    let dir = chain_project();
    let planned = plan(&options(&dir)).unwrap();
    let order = planned.ordered_names();
    let at = |name: &str| order.iter().position(|n| *n == name).unwrap();
    assert!(
        at("a") < at("b") && at("rates") < at("b") && at("b") < at("c"),
        "{order:?}"
    );
    assert_eq!(order.len(), 5);

    let db = TestDb::migrated().await;
    let summary = build(&db.pool, &options(&dir)).await.unwrap();
    assert!(summary.success(), "{}", summary.table());
    // Finishing order respects the DAG too.
    let finished: Vec<&str> = summary.results.iter().map(|r| r.name.as_str()).collect();
    let done = |name: &str| finished.iter().position(|n| *n == name).unwrap();
    assert!(
        done("a") < done("b") && done("b") < done("c"),
        "{finished:?}"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM analytics.c").await, 1);
    let rate: f64 = sqlx::query_scalar("SELECT rate FROM analytics.c")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rate, 1.0);
    assert_eq!(summary.get("b").unwrap().rows, Some(1));
}

#[test]
fn a_cycle_is_an_error_that_prints_it() {
    let dir = project(&[
        ("a.sql", "select * from {{ ref('b') }}"),
        ("b.sql", "select * from {{ ref('c') }}"),
        ("c.sql", "select * from {{ ref('a') }}"),
        ("ok.sql", "select 1"),
    ]);
    let err = plan(&options(&dir)).unwrap_err();
    assert!(matches!(err, ModelError::Cycle { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("c → b → a → c") || message.contains("a → c → b → a"),
        "{message}"
    );
}

#[test]
fn an_unknown_ref_names_the_model_file_and_line() {
    let dir = project(&[
        ("a.sql", "select 1 as id"),
        (
            "marts/b.sql",
            "select *\nfrom {{ ref('a') }}\njoin {{ ref('nope') }} using (id)",
        ),
    ]);
    let message = plan(&options(&dir)).unwrap_err().to_string();
    assert!(message.contains("marts/b.sql line 3"), "{message}");
    assert!(message.contains("model b refs nope"), "{message}");

    // A ref inside a branch that does not render is checked too.
    let dir = project(&[(
        "m.sql",
        "{{ config(materialized='incremental') }}\nselect 1 as id\n{% if is_incremental() %}\nunion all select * from {{ ref('ghost') }}\n{% endif %}",
    )]);
    let message = plan(&options(&dir)).unwrap_err().to_string();
    assert!(
        message.contains("m.sql line 4") && message.contains("ghost"),
        "{message}"
    );
}

#[test]
fn duplicate_model_names_name_both_files() {
    let dir = project(&[
        ("staging/users.sql", "select 1"),
        ("marts/users.sql", "select 2"),
    ]);
    let message = plan(&options(&dir)).unwrap_err().to_string();
    assert!(
        message.contains("marts/users.sql") && message.contains("staging/users.sql"),
        "{message}"
    );
}

#[tokio::test]
async fn a_view_is_replaced_even_when_its_columns_change() {
    let db = TestDb::migrated().await;
    let dir = project(&[
        ("v.sql", "select 1 as a, 2 as b"),
        ("w.sql", "select a from {{ ref('v') }}"),
    ]);
    assert!(build(&db.pool, &options(&dir)).await.unwrap().success());
    // Column b dropped and a retyped: CREATE OR REPLACE VIEW refuses, the swap does it.
    write_files(dir.path(), &[("v.sql", "select 'x'::text as a")]);
    let summary = build(&db.pool, &options(&dir)).await.unwrap();
    assert!(summary.success(), "{}", summary.table());
    let a: String = sqlx::query_scalar("SELECT a FROM analytics.w")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(a, "x");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'analytics' AND table_name = 'v'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_table_swap_keeps_dependent_views_and_a_failed_build_keeps_the_old_table() {
    let db = TestDb::migrated().await;
    exec(
        &db.pool,
        "CREATE TABLE public.events (id bigint, value text); INSERT INTO public.events VALUES (1, 'a')",
    )
    .await;
    let dir = project(&[
        ("sources.yml", SOURCES),
        (
            "t.sql",
            "{{ config(materialized='table') }}\nselect id, value from {{ source('raw', 'events') }}",
        ),
        ("t_view.sql", "select count(*) as n from {{ ref('t') }}"),
    ]);
    assert!(build(&db.pool, &options(&dir)).await.unwrap().success());
    // Views that are not models (an analyst's, in another schema, and one on top of it).
    exec(
        &db.pool,
        "CREATE SCHEMA reports; CREATE VIEW reports.ids AS SELECT id FROM analytics.t; \
         CREATE VIEW reports.id_count AS SELECT count(*) AS n FROM reports.ids",
    )
    .await;
    exec(
        &db.pool,
        "INSERT INTO public.events VALUES (2, 'b'), (3, 'c')",
    )
    .await;
    let summary = build(
        &db.pool,
        &BuildOptions {
            select: vec!["t".into()],
            ..options(&dir)
        },
    )
    .await
    .unwrap();
    assert!(summary.success(), "{}", summary.table());
    assert_eq!(summary.get("t").unwrap().rows, Some(3));
    assert_eq!(count(&db.pool, "SELECT n FROM analytics.t_view").await, 3);
    assert_eq!(count(&db.pool, "SELECT n FROM reports.id_count").await, 3);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%etl_tmp'"
        )
        .await,
        0
    );

    // A model that fails leaves the old table and its views as they were.
    write_files(
        dir.path(),
        &[(
            "t.sql",
            "{{ config(materialized='table') }}\nselect id, value, 1 / (id - id) as boom from {{ source('raw', 'events') }}",
        )],
    );
    let summary = build(&db.pool, &options(&dir)).await.unwrap();
    assert_eq!(summary.status_of("t"), Some(Status::Error));
    assert_eq!(summary.status_of("t_view"), Some(Status::Skipped));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM reports.ids").await, 3);
}

fn incremental_project(strategy: &str) -> TempDir {
    let model = format!(
        "{{{{ config(materialized='incremental', unique_key='id', incremental_strategy='{strategy}',\n\
         post_hook='create index if not exists inc_id_idx on {{{{ this }}}} (id)') }}}}\n\
         select id, upper(value) as value, updated_at\n\
         from {{{{ source('raw', 'events') }}}}\n\
         {{% if is_incremental() %}}\n\
         where updated_at > (select max(updated_at) from {{{{ this }}}})\n\
         {{% endif %}}"
    );
    project(&[("sources.yml", SOURCES), ("inc.sql", &model)])
}

async fn incremental_equals_full_refresh(strategy: &str) {
    let db = TestDb::migrated().await;
    exec(
        &db.pool,
        "CREATE TABLE public.events (id bigint, value text, updated_at timestamptz);
         INSERT INTO public.events VALUES
           (1, 'a', '2025-01-01'), (2, 'b', '2025-01-02'), (3, 'c', '2025-01-03')",
    )
    .await;
    let dir = incremental_project(strategy);
    let first = build(&db.pool, &options(&dir)).await.unwrap();
    assert!(first.success(), "{}", first.table());
    assert_eq!(first.get("inc").unwrap().rows, Some(3));

    // Two new rows and a changed one.
    exec(
        &db.pool,
        "INSERT INTO public.events VALUES (4, 'd', '2025-01-04'), (5, 'e', '2025-01-05');
         UPDATE public.events SET value = 'a2', updated_at = '2025-01-06' WHERE id = 1",
    )
    .await;
    let second = build(&db.pool, &options(&dir)).await.unwrap();
    assert!(second.success(), "{}", second.table());
    // Only the new and changed rows were processed: it really ran incrementally.
    assert_eq!(second.get("inc").unwrap().rows, Some(3));
    let read = || async {
        sqlx::query_as::<_, (i64, String, String)>(
            "SELECT id, value, updated_at::text FROM analytics.inc ORDER BY id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let incremental = read().await;
    assert_eq!(incremental.len(), 5);
    assert_eq!(incremental[0].1, "A2");

    let full = build(
        &db.pool,
        &BuildOptions {
            full_refresh: true,
            ..options(&dir)
        },
    )
    .await
    .unwrap();
    assert_eq!(full.get("inc").unwrap().rows, Some(5));
    assert_eq!(read().await, incremental);
    // The post_hook ran on the rebuilt table.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'analytics' AND indexname = 'inc_id_idx'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn incremental_delete_insert_equals_a_full_refresh() {
    incremental_equals_full_refresh("delete+insert").await;
}

#[tokio::test]
async fn incremental_merge_equals_a_full_refresh() {
    incremental_equals_full_refresh("merge").await;
}

#[tokio::test]
async fn a_snapshot_records_a_change_as_a_new_version() {
    let db = TestDb::migrated().await;
    exec(
        &db.pool,
        "CREATE TABLE public.events (id bigint, value text, noise int);
         INSERT INTO public.events VALUES (1, 'bronze', 0), (2, 'gold', 0)",
    )
    .await;
    let dir = project(&[
        ("sources.yml", SOURCES),
        (
            "users_snapshot.sql",
            "{{ config(materialized='snapshot', unique_key='id', strategy='check', check_cols=['value']) }}\n\
             select id, value, noise from {{ source('raw', 'events') }}",
        ),
    ]);
    assert!(build(&db.pool, &options(&dir)).await.unwrap().success());
    // A change in a check column, one in a column that is not checked, and a new key.
    exec(
        &db.pool,
        "UPDATE public.events SET value = 'silver' WHERE id = 1;
         UPDATE public.events SET noise = 9 WHERE id = 2;
         INSERT INTO public.events VALUES (3, 'bronze', 0)",
    )
    .await;
    let second = build(&db.pool, &options(&dir)).await.unwrap();
    assert!(second.success(), "{}", second.table());
    assert_eq!(second.get("users_snapshot").unwrap().rows, Some(2));
    let versions: Vec<(i64, String, bool)> = sqlx::query_as(
        "SELECT id, value, dbt_valid_to IS NULL FROM analytics.users_snapshot ORDER BY id, dbt_valid_from",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        versions,
        vec![
            (1, "bronze".into(), false),
            (1, "silver".into(), true),
            (2, "gold".into(), true),
            (3, "bronze".into(), true),
        ]
    );
    // The closed version ends where the new one starts; scd ids are distinct.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM analytics.users_snapshot old JOIN analytics.users_snapshot new
               ON new.id = old.id AND new.dbt_valid_from = old.dbt_valid_to"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT dbt_scd_id) FROM analytics.users_snapshot"
        )
        .await,
        4
    );
    // Nothing changed: no new version.
    let third = build(&db.pool, &options(&dir)).await.unwrap();
    assert_eq!(third.get("users_snapshot").unwrap().rows, Some(0));
}

#[tokio::test]
async fn generic_and_singular_tests_pass_warn_and_fail() {
    let db = TestDb::migrated().await;
    let dir = project(&[
        (
            "m.sql",
            "select * from (values (1, 'a', 10), (2, 'b', null), (2, 'z', 10)) as t(id, kind, parent)",
        ),
        ("p.sql", "select 10 as id"),
        (
            "schema.yml",
            "version: 2\nmodels:\n  - name: m\n    columns:\n      - name: id\n        tests: [not_null, unique]\n\
             \x20     - name: kind\n        tests:\n          - accepted_values:\n              values: [a, b]\n              config: {severity: warn}\n\
             \x20     - name: parent\n        tests:\n          - not_null:\n              config: {severity: warn}\n\
             \x20         - relationships:\n              to: ref('p')\n              field: id\n",
        ),
        ("tests/standalone.sql", "select 1 as x where 1 = 2"),
        (
            "tests/no_big_ids.sql",
            "select * from {{ ref('m') }} where id > 100",
        ),
        (
            "tests/ids_below_two.sql",
            "{{ config(severity='error') }}\nselect * from {{ ref('m') }} where id >= 2",
        ),
    ]);
    let summary = build(&db.pool, &options(&dir)).await.unwrap();
    let test = |name: &str| {
        let r = summary.get(name).unwrap_or_else(|| {
            panic!(
                "no result for {name} in {:?}",
                summary.results.iter().map(|r| &r.name).collect::<Vec<_>>()
            )
        });
        (r.status, r.failures)
    };
    assert_eq!(test("not_null_m_id"), (Status::Pass, Some(0)));
    assert_eq!(test("unique_m_id"), (Status::Fail, Some(1)));
    assert_eq!(
        test("accepted_values_m_kind__a__b"),
        (Status::Warn, Some(1))
    );
    assert_eq!(test("not_null_m_parent"), (Status::Warn, Some(1)));
    assert_eq!(
        test("relationships_m_parent__id__ref_p_"),
        (Status::Pass, Some(0))
    );
    assert_eq!(test("no_big_ids"), (Status::Pass, Some(0)));
    assert_eq!(test("standalone"), (Status::Pass, Some(0)));
    assert_eq!(test("ids_below_two"), (Status::Fail, Some(2)));
    assert!(!summary.success());
    assert_eq!(summary.count(NodeKind::Test, Status::Warn), 2);
}

/// raw → bad (an error-level test fails on it) → downstream; ok_branch on its own.
fn failing_test_project() -> TempDir {
    project(&[
        ("raw.sql", "select 1 as id"),
        ("bad.sql", "select null::int as id from {{ ref('raw') }}"),
        ("downstream.sql", "select * from {{ ref('bad') }}"),
        ("downstream_2.sql", "select * from {{ ref('downstream') }}"),
        ("ok_branch.sql", "select * from {{ ref('raw') }}"),
        (
            "schema.yml",
            "models:\n  - name: bad\n    columns:\n      - name: id\n        tests: [not_null]\n",
        ),
    ])
}

#[tokio::test]
async fn a_failing_error_test_skips_only_its_downstream() {
    let db = TestDb::migrated().await;
    let dir = failing_test_project();
    let summary = build(&db.pool, &options(&dir)).await.unwrap();
    assert_eq!(summary.status_of("not_null_bad_id"), Some(Status::Fail));
    assert_eq!(summary.status_of("bad"), Some(Status::Success));
    assert_eq!(summary.status_of("downstream"), Some(Status::Skipped));
    assert_eq!(summary.status_of("downstream_2"), Some(Status::Skipped));
    assert_eq!(summary.status_of("ok_branch"), Some(Status::Success));
    assert!(!summary.success());
    let exists = |name: &'static str| {
        let pool = db.pool.clone();
        async move {
            count(
                &pool,
                &format!("SELECT count(*) FROM pg_views WHERE schemaname = 'analytics' AND viewname = '{name}'"),
            )
            .await
        }
    };
    assert_eq!(exists("downstream").await, 0);
    assert_eq!(exists("ok_branch").await, 1);

    // The same with the binary: non-zero exit, the skip said on the progress line.
    let target = tempfile::tempdir().unwrap();
    let models_dir = dir.path().to_str().unwrap();
    let (ok, stdout, stderr) = run_etl(
        &[
            "build-models",
            "--models-dir",
            models_dir,
            "--target-dir",
            target.path().to_str().unwrap(),
        ],
        Some(&db.url),
    );
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("SKIP  view analytics.downstream"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL  test not_null_bad_id"), "{stdout}");
    assert!(stderr.contains("failed or were skipped"), "{stderr}");

    // A warn-level test lets the downstream build.
    write_files(
        dir.path(),
        &[(
            "schema.yml",
            "models:\n  - name: bad\n    columns:\n      - name: id\n        tests:\n          - not_null:\n              config: {severity: warn}\n",
        )],
    );
    let summary = build(&db.pool, &options(&dir)).await.unwrap();
    assert_eq!(summary.status_of("not_null_bad_id"), Some(Status::Warn));
    assert_eq!(summary.status_of("downstream_2"), Some(Status::Success));
    assert!(summary.success());
}

#[tokio::test]
async fn sql_errors_name_the_model_its_file_and_the_line() {
    let db = TestDb::migrated().await;
    let dir = project(&[("marts/broken.sql", "select 1 as id,\n  no_such_column as x")]);
    let target = tempfile::tempdir().unwrap();
    let summary = build(
        &db.pool,
        &BuildOptions {
            target_dir: Some(target.path().to_path_buf()),
            ..options(&dir)
        },
    )
    .await
    .unwrap();
    let message = summary.get("broken").unwrap().message.clone().unwrap();
    assert!(message.contains("model broken"), "{message}");
    assert!(message.contains("marts/broken.sql"), "{message}");
    assert!(
        message.contains("\"no_such_column\" does not exist"),
        "{message}"
    );
    assert!(message.contains("line 2 of"), "{message}");
    assert!(target.path().join("compiled/broken.sql").exists());
}

#[tokio::test]
async fn every_run_appends_history_and_writes_run_results() {
    let db = TestDb::migrated().await;
    let dir = failing_test_project();
    let target = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        target_dir: Some(target.path().to_path_buf()),
        ..options(&dir)
    };
    let first = build(&db.pool, &options).await.unwrap();
    let second = build(&db.pool, &options).await.unwrap();
    assert_ne!(first.run_id, second.run_id);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT run_id) FROM etl.model_runs"
        )
        .await,
        2
    );
    // Five models per run, skipped ones included.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM etl.model_runs").await,
        10
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM etl.model_runs WHERE status = 'skipped'"
        )
        .await,
        4
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM etl.test_results WHERE test_name = 'not_null_bad_id' AND status = 'fail' AND failures = 1"
        )
        .await,
        2
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(target.path().join("run_results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["run_id"], second.run_id.to_string());
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    let downstream = results.iter().find(|r| r["name"] == "downstream").unwrap();
    assert_eq!(downstream["status"], "skipped");
    assert_eq!(downstream["kind"], "model");
}

#[test]
fn selection_syntaxes() {
    let dir = chain_project();
    let names = |select: &[&str], exclude: &[&str]| {
        let mut names = selected(&dir, select, exclude);
        names.sort();
        names
    };
    assert_eq!(names(&["b"], &[]), ["b"]);
    assert_eq!(names(&["+b"], &[]), ["a", "b", "rates"]);
    assert_eq!(names(&["b+"], &[]), ["b", "c"]);
    assert_eq!(names(&["+b+"], &[]), ["a", "b", "c", "rates"]);
    assert_eq!(names(&["tag:nightly"], &[]), ["b", "d"]);
    assert_eq!(names(&["tag:other", "a"], &[]), ["a", "d"]);
    assert_eq!(names(&["path:marts"], &[]), ["b", "c"]);
    assert_eq!(names(&["path:seeds"], &[]), ["rates"]);
    assert_eq!(names(&[], &["+b"]), ["c", "d"]);
    assert_eq!(names(&["tag:nightly+"], &["c"]), ["b", "d"]);
    // Relative to the working directory as well.
    let from_cwd = format!("path:{}/marts", dir.path().display());
    assert_eq!(names(&[from_cwd.as_str()], &[]), ["b", "c"]);
    let err = plan(&BuildOptions {
        select: vec!["nope+".into()],
        ..options(&dir)
    })
    .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn tests_follow_their_models_in_a_selection() {
    let dir = failing_test_project();
    assert_eq!(selected(&dir, &["bad"], &[]), ["bad", "not_null_bad_id"]);
    assert_eq!(selected(&dir, &["raw"], &[]), ["raw"]);
    assert_eq!(selected(&dir, &["bad"], &["not_null_bad_id"]), ["bad"]);
}

#[tokio::test]
async fn seeds_load_typed_are_referable_and_reload_when_changed() {
    let db = TestDb::migrated().await;
    let dir = project(&[
        (
            "seeds/currency_rates.csv",
            "currency_code,rate_to_usd,is_base,rank\nUSD,1.0,true,1\nEUR,1.08,false,2\n",
        ),
        (
            "seeds.yml",
            "seeds:\n  - name: currency_rates\n    config:\n      column_types: {rank: smallint}\n",
        ),
        (
            "usd.sql",
            "select currency_code from {{ ref('currency_rates') }} where is_base",
        ),
    ]);
    let first = build(&db.pool, &options(&dir)).await.unwrap();
    assert!(first.success(), "{}", first.table());
    assert_eq!(first.get("currency_rates").unwrap().rows, Some(2));
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = 'analytics' AND table_name = 'currency_rates' ORDER BY ordinal_position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        types,
        vec![
            ("currency_code".into(), "text".into()),
            ("rate_to_usd".into(), "double precision".into()),
            ("is_base".into(), "boolean".into()),
            ("rank".into(), "smallint".into()),
        ]
    );
    let base: String = sqlx::query_scalar("SELECT currency_code FROM analytics.usd")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(base, "USD");

    // Unchanged file: left alone. Changed file: reloaded, the view on it keeps working.
    let second = build(&db.pool, &options(&dir)).await.unwrap();
    assert_eq!(second.get("currency_rates").unwrap().rows, None);
    write_files(
        dir.path(),
        &[(
            "seeds/currency_rates.csv",
            "currency_code,rate_to_usd,is_base,rank\nUSD,1.0,false,1\nEUR,1.08,true,2\nGBP,1.27,false,3\n",
        )],
    );
    let third = build(
        &db.pool,
        &BuildOptions {
            select: vec!["currency_rates".into()],
            ..options(&dir)
        },
    )
    .await
    .unwrap();
    assert_eq!(third.get("currency_rates").unwrap().rows, Some(3));
    let base: String = sqlx::query_scalar("SELECT currency_code FROM analytics.usd")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(base, "EUR");
}

#[test]
fn list_prints_the_plan_without_a_database() {
    let dir = chain_project();
    // Nothing listens there: --list must not connect.
    let (ok, stdout, stderr) = run_etl(
        &[
            "build-models",
            "--models-dir",
            dir.path().to_str().unwrap(),
            "--list",
            "--select",
            "+c",
        ],
        Some("postgres://nobody@127.0.0.1:1/none"),
    );
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[3].contains("view analytics.c"), "{stdout}");
    let b = lines
        .iter()
        .position(|l| l.contains("table analytics.b"))
        .unwrap();
    let a = lines
        .iter()
        .position(|l| l.contains("view analytics.a"))
        .unwrap();
    assert!(a < b, "{stdout}");
}

#[test]
fn graph_prints_mermaid_and_dot() {
    let dir = chain_project();
    let models_dir = dir.path().to_str().unwrap();
    let (ok, mermaid, stderr) = run_etl(
        &[
            "models",
            "graph",
            "--models-dir",
            models_dir,
            "--format",
            "mermaid",
        ],
        Some("postgres://nobody@127.0.0.1:1/none"),
    );
    assert!(ok, "{stderr}");
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(mermaid.contains("  a --> b\n"), "{mermaid}");
    assert!(mermaid.contains("  rates --> b\n"), "{mermaid}");
    assert!(mermaid.contains("  b --> c\n"), "{mermaid}");
    assert!(!mermaid.contains("--> a\n"), "{mermaid}");
    let (ok, dot, stderr) = run_etl(
        &[
            "models",
            "graph",
            "--models-dir",
            models_dir,
            "--format",
            "dot",
        ],
        None,
    );
    assert!(ok, "{stderr}");
    assert!(dot.starts_with("digraph models {"), "{dot}");
    assert!(dot.contains("  \"a\" -> \"b\";\n"), "{dot}");
    assert!(
        dot.contains("  \"rates\" [label=\"rates\", shape=cylinder];"),
        "{dot}"
    );
    assert!(dot.trim_end().ends_with('}'), "{dot}");
}

/// Whether this database shows the build lock as granted to some session.
async fn build_lock_held(pool: &PgPool) -> bool {
    count(
        pool,
        &format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((classid::bigint << 32) | objid::bigint) = {}",
            models::schedule::BUILD_LOCK_KEY
        ),
    )
    .await
        > 0
}

#[tokio::test]
async fn two_schedulers_never_build_at_the_same_time() {
    let db = TestDb::migrated().await;
    // The model reads a table the test holds locked: the first build is stuck inside its run,
    // holding the build lock, for exactly as long as the test wants.
    exec(
        &db.pool,
        "CREATE TABLE public.gate (id int); INSERT INTO public.gate VALUES (1)",
    )
    .await;
    let dir = project(&[
        (
            "sources.yml",
            "sources:\n  - name: raw\n    schema: public\n    tables: [{name: gate}]\n",
        ),
        (
            "m.sql",
            "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'gate') }}",
        ),
    ]);
    let mut gate = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE public.gate IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *gate)
        .await
        .unwrap();

    let first = {
        let pool = db.pool.clone();
        let options = options(&dir);
        tokio::spawn(async move { build_locked(&pool, &options, &Silent, false).await })
    };
    // Wait (bounded) until the first scheduler holds the lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !build_lock_held(&db.pool).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first build never took the lock"
        );
        assert!(
            !first.is_finished(),
            "the first build ended before it was observed"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The second scheduler's tick sees the lock and builds nothing.
    // (Bounded: a second build that ignored the lock would block on the gate.)
    let second = tokio::time::timeout(
        Duration::from_secs(30),
        build_locked(&db.pool, &options(&dir), &Silent, false),
    )
    .await
    .expect("the second scheduler waited instead of skipping its tick")
    .unwrap();
    assert!(matches!(second, LockedBuild::Busy), "{second:?}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM etl.model_runs").await,
        0
    );

    gate.commit().await.unwrap();
    let LockedBuild::Built(summary) = first.await.unwrap().unwrap() else {
        panic!("the first build should have built");
    };
    assert!(summary.success(), "{}", summary.table());
    assert!(
        !build_lock_held(&db.pool).await,
        "the lock outlived the build"
    );
    // Free again: the next tick builds.
    let third = build_locked(&db.pool, &options(&dir), &Silent, false)
        .await
        .unwrap();
    assert!(matches!(third, LockedBuild::Built(_)));
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT run_id) FROM etl.model_runs"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn the_scheduler_goes_on_after_a_failed_run() {
    let db = TestDb::migrated().await;
    let dir = project(&[("broken.sql", "select * from nowhere")]);
    let cancel = CancellationToken::new();
    let mut ticks = Vec::new();
    models::run_scheduled(
        &db.pool,
        &options(&dir),
        &Schedule::Every(Duration::from_millis(1)),
        &cancel,
        &Silent,
        |outcome| {
            ticks.push(matches!(outcome, Ok(LockedBuild::Built(s)) if !s.success()));
            if ticks.len() == 3 {
                cancel.cancel();
            }
        },
    )
    .await;
    assert_eq!(ticks, [true, true, true]);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT run_id) FROM etl.model_runs WHERE status = 'error'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn sql_header_runs_with_the_statement_that_computes_the_rows() {
    let db = TestDb::migrated().await;
    exec(
        &db.pool,
        "CREATE TABLE public.events (id bigint, value text, updated_at timestamptz);
         INSERT INTO public.events VALUES (1, 'a', '2025-01-01')",
    )
    .await;
    let header = "sql_header=\"set local work_mem = '7MB'\"";
    let dir = project(&[
        ("sources.yml", SOURCES),
        (
            "t.sql",
            &format!(
                "{{{{ config(materialized='table', {header}) }}}}\n\
                 select id, current_setting('work_mem') as work_mem from {{{{ source('raw', 'events') }}}}"
            ),
        ),
        (
            "inc.sql",
            &format!(
                "{{{{ config(materialized='incremental', unique_key='id', {header}) }}}}\n\
                 select id, current_setting('work_mem') as work_mem from {{{{ source('raw', 'events') }}}}\n\
                 {{% if is_incremental() %}}where id > (select max(id) from {{{{ this }}}}){{% endif %}}"
            ),
        ),
        // Reads the setting after the other two: `set local` did not outlive their builds.
        (
            "after.sql",
            "{{ config(materialized='table') }}\n\
             select current_setting('work_mem') as work_mem from {{ ref('t') }}, {{ ref('inc') }} limit 1",
        ),
    ]);
    let options = BuildOptions {
        threads: 1,
        ..options(&dir)
    };
    let first = build(&db.pool, &options).await.unwrap();
    assert!(first.success(), "{}", first.table());
    exec(
        &db.pool,
        "INSERT INTO public.events VALUES (2, 'b', '2025-01-02')",
    )
    .await;
    let second = build(&db.pool, &options).await.unwrap();
    assert!(second.success(), "{}", second.table());
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT 't', work_mem FROM analytics.t UNION ALL SELECT 'inc ' || id, work_mem FROM analytics.inc \
         UNION ALL SELECT 'after', work_mem FROM analytics.after ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let default: String = sqlx::query_scalar("SELECT current_setting('work_mem')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_ne!(default, "7MB");
    assert_eq!(
        settings,
        vec![
            ("after".to_string(), default),
            ("inc 1".to_string(), "7MB".to_string()),
            ("inc 2".to_string(), "7MB".to_string()),
            ("t".to_string(), "7MB".to_string()),
            ("t".to_string(), "7MB".to_string()),
        ]
    );
}

/// A model with a `loaded_at_field` and tests on it, generic and singular.
/// `accepted_config`: more settings of the accepted_values test (its name stays the same).
fn scoped_tests_project(accepted_config: &str) -> TempDir {
    project(&[
        ("sources.yml", SOURCES),
        (
            "events_clean.sql",
            "{{ config(materialized='view', loaded_at_field='updated_at') }}\n\
             select id, value, updated_at from {{ source('raw', 'events') }}",
        ),
        (
            "schema.yml",
            &format!(
                "version: 2\nmodels:\n  - name: events_clean\n    columns:\n      - name: id\n        tests: [unique]\n      - name: value\n        tests:\n          - not_null\n          - accepted_values:\n              values: ['a', 'b']\n{accepted_config}"
            ),
        ),
        (
            "tests/no_negative_ids.sql",
            "select id from {{ changed_rows(ref('events_clean')) }} as e where id < 0",
        ),
    ])
}

async fn test_results(pool: &PgPool, run_id: uuid::Uuid) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT test_name, status, scope FROM etl.test_results WHERE run_id = $1 ORDER BY test_name",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn tests_in_changed_scope_check_the_rows_loaded_since_they_last_passed() {
    let db = TestDb::migrated().await;
    exec(
        &db.pool,
        "CREATE TABLE public.events (id bigint, value text, updated_at timestamptz);
         INSERT INTO public.events VALUES (1, 'a', '2025-01-01'), (2, 'b', '2025-01-02')",
    )
    .await;
    let dir = scoped_tests_project("");
    let changed = BuildOptions {
        test_scope: models::TestScope::Changed,
        test_lookback: Duration::ZERO,
        ..options(&dir)
    };
    // No mark yet: everything is checked, and the marks are recorded.
    let first = build(&db.pool, &changed).await.unwrap();
    assert!(first.success(), "{}", first.table());
    let scopes: Vec<Option<String>> = test_results(&db.pool, first.run_id)
        .await
        .into_iter()
        .map(|(_, _, scope)| scope)
        .collect();
    assert_eq!(scopes, vec![Some("all".to_string()); 4]);

    // Bad rows from before the marks are not what a changed-scope run looks at; a new bad
    // row is, including a duplicate of an old id (compared with every row).
    exec(
        &db.pool,
        "INSERT INTO public.events VALUES (-7, NULL, '2024-12-31');
         INSERT INTO public.events VALUES (2, 'c', '2025-01-03')",
    )
    .await;
    let second = build(&db.pool, &changed).await.unwrap();
    let results = test_results(&db.pool, second.run_id).await;
    assert_eq!(
        results,
        vec![
            (
                "accepted_values_events_clean_value__a__b".to_string(),
                "fail".to_string(),
                Some("changed".to_string())
            ),
            (
                "no_negative_ids".into(),
                "pass".into(),
                Some("changed".into())
            ),
            (
                "not_null_events_clean_value".into(),
                "pass".into(),
                Some("changed".into())
            ),
            (
                "unique_events_clean_id".into(),
                "fail".into(),
                Some("changed".into())
            ),
        ]
    );
    assert_eq!(
        second.get("unique_events_clean_id").unwrap().failures,
        Some(1)
    );
    assert!(
        second
            .get("unique_events_clean_id")
            .unwrap()
            .coverage
            .as_ref()
            .unwrap()
            .since
            .is_some()
    );

    // The failing tests start again from their last pass, so they fail again; every row is
    // checked with the default scope, and after a change to a test's definition.
    let third = build(&db.pool, &changed).await.unwrap();
    assert_eq!(
        third.status_of("unique_events_clean_id"),
        Some(Status::Fail)
    );
    assert_eq!(
        third.status_of("not_null_events_clean_value"),
        Some(Status::Pass)
    );
    let all = build(&db.pool, &options(&dir)).await.unwrap();
    let results = test_results(&db.pool, all.run_id).await;
    assert!(
        results
            .iter()
            .all(|(_, status, scope)| status == "fail" && scope.as_deref() == Some("all")),
        "{results:?}"
    );

    // A test whose definition changed checks everything again; the others go on.
    exec(
        &db.pool,
        "DELETE FROM public.events WHERE id = -7 OR value = 'c'",
    )
    .await;
    let widened = scoped_tests_project("              config: {where: \"id >= 0\"}\n");
    let after_change = build(
        &db.pool,
        &BuildOptions {
            models_dir: widened.path().to_path_buf(),
            ..changed.clone()
        },
    )
    .await
    .unwrap();
    assert!(after_change.success(), "{}", after_change.table());
    let scopes: Vec<(String, Option<String>)> = test_results(&db.pool, after_change.run_id)
        .await
        .into_iter()
        .map(|(name, _, scope)| (name, scope))
        .collect();
    assert_eq!(
        scopes,
        vec![
            (
                "accepted_values_events_clean_value__a__b".to_string(),
                Some("all".to_string())
            ),
            ("no_negative_ids".into(), Some("changed".into())),
            ("not_null_events_clean_value".into(), Some("changed".into())),
            ("unique_events_clean_id".into(), Some("changed".into())),
        ]
    );
}

#[tokio::test]
async fn a_unique_test_passes_on_a_unique_index_without_reading_the_table() {
    let db = TestDb::migrated().await;
    exec(
        &db.pool,
        "CREATE TABLE public.events (id bigint, value text, updated_at timestamptz);
         INSERT INTO public.events VALUES (1, 'a', '2025-01-01'), (1, 'b', '2025-01-02')",
    )
    .await;
    let schema = "version: 2\nmodels:\n  - name: indexed\n    columns:\n      - name: id\n        tests: [unique]\n  - name: plain\n    columns:\n      - name: id\n        tests: [unique]\n";
    let dir = project(&[
        ("sources.yml", SOURCES),
        ("schema.yml", schema),
        (
            "indexed.sql",
            "{{ config(materialized='table', post_hook='create unique index if not exists indexed_id on {{ this }} (id)') }}\n\
             select distinct id from {{ source('raw', 'events') }}",
        ),
        (
            "plain.sql",
            "{{ config(materialized='table') }}\nselect id from {{ source('raw', 'events') }}",
        ),
    ]);
    let summary = build(&db.pool, &options(&dir)).await.unwrap();
    let indexed = summary.get("unique_indexed_id").unwrap();
    assert_eq!(indexed.status, Status::Pass);
    assert_eq!(
        indexed.message.as_deref(),
        Some("guaranteed by the unique index analytics.indexed_id")
    );
    // Without the index the test reads the table, and finds the duplicate.
    assert_eq!(summary.status_of("unique_plain_id"), Some(Status::Fail));

    // A duplicate cannot get past the index: the build that would write it fails.
    let duplicated = project(&[
        ("sources.yml", SOURCES),
        ("schema.yml", schema),
        (
            "indexed.sql",
            "{{ config(materialized='table', post_hook='create unique index if not exists indexed_id on {{ this }} (id)') }}\n\
             select id from {{ source('raw', 'events') }}",
        ),
        (
            "plain.sql",
            "{{ config(materialized='table') }}\nselect distinct id from {{ source('raw', 'events') }}",
        ),
    ]);
    let summary = build(&db.pool, &options(&duplicated)).await.unwrap();
    assert_eq!(summary.status_of("indexed"), Some(Status::Error));
    assert!(
        summary
            .get("indexed")
            .unwrap()
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("could not create unique index"),
        "{}",
        summary.table()
    );
    assert_eq!(
        summary.status_of("unique_indexed_id"),
        Some(Status::Skipped)
    );
    assert_eq!(summary.status_of("unique_plain_id"), Some(Status::Pass));
}
