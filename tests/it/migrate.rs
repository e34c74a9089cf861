//! `etl migrate`: complete, repeatable, and safe when several processes start at once.

use crate::helpers::{TestDb, run_etl};

/// Every table ARCHITECTURE §5 names, by schema.
const TABLES: &[(&str, &str)] = &[
    ("public", "transactions_sink"),
    ("public", "transactions_rejected"),
    ("public", "users_raw"),
    ("public", "transactions_batch_raw"),
    ("etl", "sink_offsets"),
    ("etl", "user_stats"),
    ("etl", "anomaly_outbox"),
    ("etl", "loaded_files"),
    ("etl", "batch_rejects"),
    ("etl", "model_runs"),
    ("etl", "test_results"),
];

#[tokio::test]
async fn creates_every_table_of_the_design() {
    let db = TestDb::migrated().await;
    for (schema, table) in TABLES {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
        )
        .bind(schema)
        .bind(table)
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        assert!(found.is_some(), "{schema}.{table} missing");
    }
    let analytics: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'analytics')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(analytics, "schema analytics missing");
}

#[tokio::test]
async fn second_run_applies_nothing() {
    let db = TestDb::migrated().await;
    let again = etl::db::migrate::migrate(&db.url).await.unwrap();
    assert!(again.is_empty(), "second run applied {again:?}");
}

#[tokio::test]
async fn concurrent_runs_all_succeed_and_apply_once() {
    let db = TestDb::empty().await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { etl::db::migrate::migrate(&url).await })
        })
        .collect();
    let mut applied = Vec::new();
    for run in runs {
        applied.extend(run.await.unwrap().expect("a concurrent migration failed"));
    }
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM etl.schema_history")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        applied.len() as i64,
        history,
        "each migration applied exactly once"
    );
    assert_eq!(
        history,
        migration_files(),
        "every migration in migrations/ applied"
    );
}

/// The `V{n}__{name}.sql` files in `migrations/`: what a complete migration applies.
fn migration_files() -> i64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with('V') && name.ends_with(".sql")
        })
        .count() as i64
}

#[tokio::test]
async fn the_command_is_a_noop_the_second_time_even_from_two_processes() {
    let db = TestDb::empty().await;
    let url = db.url.clone();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run_etl(&["migrate"], Some(&url)));
        let b = s.spawn(|| run_etl(&["migrate"], Some(&url)));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        a.0 && b.0,
        "concurrent `etl migrate` failed:\n{}\n{}",
        a.2,
        b.2
    );
    let applied_by_either = format!("{}{}", a.1, b.1);
    assert!(
        applied_by_either.contains("applied V1__"),
        "{applied_by_either}"
    );

    let (ok, stdout, stderr) = run_etl(&["migrate"], Some(&url));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("schema is up to date"), "{stdout}");
}

#[tokio::test]
async fn an_unreachable_database_gives_an_actionable_error() {
    let (ok, _, stderr) = run_etl(
        &["migrate"],
        Some("postgres://nobody:secret-pw@127.0.0.1:1/etl"),
    );
    assert!(!ok);
    // Once: the error is returned and printed, not also logged on its way out.
    assert_eq!(
        stderr.matches("cannot connect to PostgreSQL").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("just up"), "{stderr}");
    assert!(!stderr.contains("secret-pw"), "password leaked: {stderr}");
}
