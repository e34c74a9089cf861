//! The SQL models (`models/`) on generated data: dim_users versions, point-in-time
//! user keys, incremental runs against full refreshes, late-arriving users, the marts against
//! computations done here in Rust from the landing tables, and the schema tests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use etl::batch::{LoadOptions, load_all};
use etl::bench::models::{ScoredStream, SinkRow, copy_sink_rows};
use etl::domain::user::UserRecord;
use etl::generate::files::write_month;
use etl::generate::monthly::{Month, MonthlyOptions};
use etl::generate::stream::{EventClock, StreamOptions};
use etl::models::{BuildOptions, RunSummary, TestScope};
use indicatif::ProgressBar;
use rust_decimal::{Decimal, RoundingStrategy};
use tempfile::TempDir;
use uuid::Uuid;

use crate::helpers::TestDb;

const SEED: u64 = 11;

fn month(m: u32) -> Month {
    Month::new(2025, m).unwrap()
}

/// Generated monthly files in a folder of their own, with each month's users as written.
struct Files {
    dir: TempDir,
    users: BTreeMap<Month, Vec<UserRecord>>,
}

impl Files {
    /// Months 1..=`months` of 2025; each later month restates ~10 % of earlier users.
    fn generate(months: u32) -> Self {
        let dir = TempDir::new().unwrap();
        let mut users = BTreeMap::new();
        for m in 1..=months {
            let options = MonthlyOptions {
                month: month(m),
                users: 300,
                transactions: 900,
                seed: SEED,
                invalid_ratio: 0.0,
            };
            let report = write_month(dir.path(), &options, &ProgressBar::hidden()).unwrap();
            users.insert(month(m), read_users(&report.users_file));
        }
        Self { dir, users }
    }

    /// Lands one month's files.
    async fn land(&self, db: &TestDb, m: u32) {
        let options = LoadOptions {
            dir: self.dir.path().to_path_buf(),
            month: Some(month(m)),
            ..Default::default()
        };
        for outcome in load_all(&db.pool, &options).await.unwrap() {
            outcome.unwrap();
        }
    }

    fn user_ids(&self) -> Vec<Uuid> {
        let ids: BTreeSet<Uuid> = self.users.values().flatten().map(|u| u.user_id).collect();
        ids.into_iter().collect()
    }
}

fn read_users(path: &Path) -> Vec<UserRecord> {
    csv::ReaderBuilder::new()
        .from_path(path)
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            UserRecord::parse(&r.iter().collect::<Vec<_>>()).unwrap()
        })
        .collect()
}

/// An expected dim_users version, computed from the files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    user_id: Uuid,
    effective_from: NaiveDate,
    effective_to: Option<NaiveDate>,
    customer_tier: String,
    city: String,
    state: String,
    is_active: bool,
}

/// Versions the files call for: a user's first month, then every month whose row differs from
/// the user's row in the previous month that listed them.
fn expected_versions(files: &Files, months: u32) -> Vec<Version> {
    let mut history: BTreeMap<Uuid, Vec<(NaiveDate, &UserRecord)>> = BTreeMap::new();
    for (m, users) in files.users.range(..=month(months)) {
        for user in users {
            history
                .entry(user.user_id)
                .or_default()
                .push((m.first_day(), user));
        }
    }
    let mut versions = Vec::new();
    for rows in history.values() {
        let mut starts: Vec<(NaiveDate, &UserRecord)> = Vec::new();
        for (from, user) in rows {
            if starts.last().is_none_or(|(_, last)| {
                // The row of the previous listing month: the last version's record or a
                // restatement equal to it, so comparing with the last version is the same.
                *last != *user
            }) {
                starts.push((*from, user));
            }
        }
        for (i, (from, user)) in starts.iter().enumerate() {
            versions.push(Version {
                user_id: user.user_id,
                effective_from: *from,
                effective_to: starts.get(i + 1).map(|(to, _)| *to),
                customer_tier: user.customer_tier.to_string(),
                city: user.city.clone(),
                state: user.state.clone(),
                is_active: user.is_active,
            });
        }
    }
    versions.sort();
    versions
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Builds every model and runs every data test; fails the test on any model error or failing
/// test of this run (warnings allowed). Returns the run's id.
async fn build(db: &TestDb, full_refresh: bool) -> Uuid {
    build_with(db, full_refresh, BuildOptions::default())
        .await
        .run_id
}

/// [`build`] with other options (vars, test scope); the models folder and threads are ours.
/// Returns the run's summary.
async fn build_with(db: &TestDb, full_refresh: bool, options: BuildOptions) -> RunSummary {
    let summary = etl::models::build(
        &db.pool,
        &BuildOptions {
            models_dir: models_dir(),
            full_refresh,
            threads: 2,
            ..options
        },
    )
    .await
    .unwrap_or_else(|e| panic!("building the models: {e}"));
    let run_id = summary.run_id;
    let failed_models: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT model, message FROM etl.model_runs WHERE run_id = $1 AND status <> 'success'",
    )
    .bind(run_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        failed_models.is_empty(),
        "models failed: {failed_models:#?}"
    );
    let failed_tests: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT test_name, status, message FROM etl.test_results \
         WHERE run_id = $1 AND status NOT IN ('pass', 'warn')",
    )
    .bind(run_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        failed_tests.is_empty(),
        "data tests failed: {failed_tests:#?}"
    );
    summary
}

/// Valid, scored stream rows over `users` (5 % orphans), events spread over January–March 2025,
/// landed "now".
fn stream_rows(users: &[Uuid], count: usize, seed: u64) -> Vec<SinkRow> {
    let span = Duration::days(90).num_milliseconds() / count as i64;
    let now = Utc::now();
    ScoredStream::new(
        users,
        StreamOptions {
            seed,
            orphan_ratio: 0.05,
            clock: EventClock::Fixed {
                start: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
                step: Duration::milliseconds(span),
            },
            ..Default::default()
        },
    )
    .take(count)
    .map(|row| SinkRow {
        ingested_at: now,
        ..row
    })
    .collect()
}

/// A hand-made stream row (no anomaly score), landed now.
fn sink_row(user_id: Uuid, event_time: DateTime<Utc>, amount: i64, status: &str) -> SinkRow {
    SinkRow {
        tx_id: Uuid::new_v4(),
        user_id,
        amount: Decimal::new(amount * 100, 2),
        currency: "EUR".into(),
        merchant: "Amazon".into(),
        category: "online_shopping".into(),
        event_time,
        status: status.into(),
        payment_method: "apple_pay".into(),
        city: None,
        country: None,
        kafka_partition: 9,
        kafka_offset: 0,
        ingested_at: Utc::now(),
        user_txn_count: 1,
        user_running_mean: amount as f64,
        z_score: None,
        is_anomaly: false,
    }
}

async fn insert(db: &TestDb, rows: Vec<SinkRow>) {
    let mut conn = db.pool.acquire().await.unwrap();
    copy_sink_rows(&mut conn, rows).await.unwrap();
}

fn utc(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0).unwrap().and_utc()
}

/// dim_users as (user_key, Version), the unknown member left out.
async fn dim_users(db: &TestDb) -> Vec<(i64, Version)> {
    type Row = (
        i64,
        Uuid,
        NaiveDate,
        Option<NaiveDate>,
        String,
        String,
        String,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT user_key, user_id, effective_from, effective_to, customer_tier, city, state, \
                is_active \
         FROM analytics.dim_users WHERE user_key <> -1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(key, user_id, from, to, tier, city, state, active)| {
            (
                key,
                Version {
                    user_id,
                    effective_from: from,
                    effective_to: to,
                    customer_tier: tier,
                    city,
                    state,
                    is_active: active,
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn dim_users_versions_follow_the_attribute_changes_of_three_months() {
    let db = TestDb::migrated().await;
    let files = Files::generate(3);
    for m in 1..=3 {
        files.land(&db, m).await;
    }
    build(&db, true).await;

    let expected = expected_versions(&files, 3);
    let mut actual: Vec<Version> = dim_users(&db).await.into_iter().map(|(_, v)| v).collect();
    actual.sort();
    assert_eq!(actual.len(), expected.len());
    assert_eq!(actual, expected);
    let changed_users: HashSet<Uuid> = expected
        .iter()
        .filter(|v| v.effective_from > month(1).first_day())
        .filter(|v| {
            files.users[&month(1)]
                .iter()
                .any(|u| u.user_id == v.user_id)
        })
        .map(|v| v.user_id)
        .collect();
    assert!(
        changed_users.len() >= 40,
        "restatements should give many second versions, got {}",
        changed_users.len()
    );

    let (unknown, current, users): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE user_key = -1), \
                count(*) FILTER (WHERE is_current AND user_key <> -1), \
                count(DISTINCT user_id) FILTER (WHERE user_key <> -1) \
         FROM analytics.dim_users",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(unknown, 1, "one unknown member");
    assert_eq!(current, users, "exactly one current version per user");

    // Keys are a function of the version: a full rebuild gives the same ones.
    let before: BTreeSet<i64> = dim_users(&db).await.into_iter().map(|(k, _)| k).collect();
    build(&db, true).await;
    let after: BTreeSet<i64> = dim_users(&db).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(before, after);
}

#[tokio::test]
async fn user_key_is_the_version_in_effect_at_the_event_time() {
    let db = TestDb::migrated().await;
    let files = Files::generate(3);
    for m in 1..=3 {
        files.land(&db, m).await;
    }
    let expected = expected_versions(&files, 3);
    // A user of January who changed later, with transactions around the change.
    let changed = expected
        .iter()
        .find(|v| v.effective_from == month(1).first_day() && v.effective_to.is_some())
        .expect("a January user with a later version")
        .clone();
    let change = changed.effective_to.unwrap();
    let around_the_change = vec![
        sink_row(
            changed.user_id,
            utc(month(1).first_day()) - Duration::days(20),
            10,
            "approved",
        ),
        sink_row(
            changed.user_id,
            utc(month(1).first_day()) + Duration::days(9),
            11,
            "approved",
        ),
        sink_row(
            changed.user_id,
            utc(change) - Duration::seconds(1),
            12,
            "approved",
        ),
        sink_row(changed.user_id, utc(change), 13, "declined"),
        sink_row(
            changed.user_id,
            utc(change) + Duration::days(70),
            14,
            "approved",
        ),
    ];
    let probes: Vec<Uuid> = around_the_change.iter().map(|r| r.tx_id).collect();
    insert(&db, around_the_change).await;
    insert(&db, stream_rows(&files.user_ids(), 2_000, SEED)).await;
    build(&db, true).await;

    let versions = dim_users(&db).await;
    let key_of = |user_id: Uuid, from: NaiveDate| {
        versions
            .iter()
            .find(|(_, v)| v.user_id == user_id && v.effective_from == from)
            .map(|(k, _)| *k)
            .unwrap()
    };
    let later_from = |at: DateTime<Utc>| {
        let mut from = changed.effective_from;
        for v in expected.iter().filter(|v| v.user_id == changed.user_id) {
            if utc(v.effective_from) <= at {
                from = v.effective_from;
            }
        }
        from
    };
    let facts: HashMap<Uuid, (i64, DateTime<Utc>)> =
        sqlx::query_as::<_, (Uuid, i64, DateTime<Utc>)>(
            "SELECT tx_id, user_key, event_time FROM analytics.fct_transactions WHERE user_id = $1",
        )
        .bind(changed.user_id)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(tx, key, at)| (tx, (key, at)))
        .collect();
    let expected_froms = [
        changed.effective_from, // before any file: the first version
        changed.effective_from,
        changed.effective_from, // one second before the change
        change,                 // the change itself
        later_from(utc(change) + Duration::days(70)),
    ];
    for (tx, from) in probes.iter().zip(expected_froms) {
        assert_eq!(
            facts[tx].0,
            key_of(changed.user_id, from),
            "tx at {}",
            facts[tx].1
        );
    }

    // Every other fact, stream and batch: the version the files put in effect at its time.
    let mut by_user: HashMap<Uuid, Vec<&Version>> = HashMap::new();
    for v in &expected {
        by_user.entry(v.user_id).or_default().push(v);
    }
    let all: Vec<(Uuid, i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT user_id, user_key, event_time FROM analytics.fct_transactions")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let keys: HashMap<(Uuid, NaiveDate), i64> = versions
        .iter()
        .map(|(k, v)| ((v.user_id, v.effective_from), *k))
        .collect();
    let mut unknown = 0;
    for (user_id, key, at) in all {
        let Some(history) = by_user.get(&user_id) else {
            assert_eq!(key, -1, "{user_id} is in no file");
            unknown += 1;
            continue;
        };
        let version = history
            .iter()
            .rev()
            .find(|v| utc(v.effective_from) <= at)
            .unwrap_or(&history[0]);
        assert_eq!(
            key,
            keys[&(user_id, version.effective_from)],
            "{user_id} at {at}"
        );
    }
    assert!(unknown > 0, "the stream has orphans");
}

/// Base tables of `analytics` (models and seeds).
async fn analytics_tables(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'analytics' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_incremental_run_after_new_rows_equals_a_full_refresh() {
    let db = TestDb::migrated().await;
    let files = Files::generate(3);
    files.land(&db, 1).await;
    files.land(&db, 2).await;
    // Stream traffic of every user of the three months: March's new users arrive late.
    let mut stream = stream_rows(&files.user_ids(), 3_000, SEED);
    let later = stream.split_off(2_000);
    insert(&db, stream).await;
    build(&db, true).await;
    let unknown_before = unknown_member_rows(&db).await;

    // New rows of every kind: a month of users (new and restated) and batch transactions, more
    // stream traffic, and a stream row for a transaction the batch files already had.
    files.land(&db, 3).await;
    insert(&db, later).await;
    let batch_tx = supersede_a_batch_row(&db).await;
    build(&db, false).await;

    assert!(
        unknown_member_rows(&db).await < unknown_before,
        "March's users resolve"
    );
    assert_eq!(source_system_of(&db, batch_tx).await, "streaming_kafka");
    assert_incremental_equals_full_refresh(&db).await;
}

/// Without a lookback and with a few changes only, the incremental run reads only what changed
/// (a lookback re-reads all this test landed, and a month of restated users re-resolves most
/// transactions), so each model's narrow path is what gets compared: the days, users and
/// merchant-days that changed, the rolling windows after them, the moving 30-day window of
/// top_spenders, a transaction that moves to another day, one user restated, one arriving late.
/// Its data tests check the new rows only (--test-scope changed), and pass.
#[tokio::test]
async fn a_narrow_incremental_run_without_lookback_equals_a_full_refresh() {
    let db = TestDb::migrated().await;
    let files = Files::generate(3);
    for m in 1..=3 {
        files.land(&db, m).await;
    }
    let mut stream = stream_rows(&files.user_ids(), 3_000, SEED);
    let later = stream.split_off(2_000);
    insert(&db, stream).await;
    build(&db, true).await;
    let (fct_before, dates_before): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM analytics.fct_transactions), \
                (SELECT count(*) FROM analytics.fct_daily_transactions)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();

    // Landed after the first build: the last third of the stream (March), a stream row taking
    // over a January batch row on another day, a transaction on April 20th (which moves the
    // 30-day window by three weeks), an April file restating one user with another tier, and a
    // February line for a user the stream already had (an orphan until now).
    let now = Utc::now();
    insert(
        &db,
        later
            .into_iter()
            .map(|row| SinkRow {
                ingested_at: now,
                ..row
            })
            .collect(),
    )
    .await;
    let batch_tx = supersede_a_batch_row(&db).await;
    // The latest event: three weeks into April, which moves the 30-day window by as much.
    let first_user = files.user_ids()[0];
    insert(
        &db,
        vec![sink_row(
            first_user,
            utc(NaiveDate::from_ymd_opt(2025, 4, 20).unwrap()),
            12,
            "approved",
        )],
    )
    .await;
    let copy_user = |source_file: &str, user_id: &str, tier: &str| {
        format!(
            "INSERT INTO public.users_raw (user_id, first_name, last_name, email, age, \
                 income_bracket, customer_tier, risk_profile, city, state, country, \
                 registration_date, preferred_categories, is_active, source_system, source_file, \
                 source_line) \
             SELECT {user_id}, first_name, last_name, email, age, income_bracket, {tier}, \
                 risk_profile, city, state, country, registration_date, preferred_categories, \
                 is_active, source_system, '{source_file}', 1 \
             FROM public.users_raw ORDER BY source_file DESC, source_line LIMIT 1"
        )
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(copy_user(
        "user_registrations_2025_04.csv",
        "user_id",
        "CASE customer_tier WHEN 'gold' THEN 'silver' ELSE 'gold' END",
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let orphan: Uuid = sqlx::query_scalar(
        "SELECT user_id FROM analytics.fct_transactions WHERE user_key = -1 \
         ORDER BY user_id LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(copy_user(
        "late/user_registrations_2025_02.csv",
        &format!("'{orphan}'::uuid"),
        "customer_tier",
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let summary = build_with(
        &db,
        false,
        BuildOptions {
            vars: [("incremental_lookback".to_string(), "0 seconds".into())]
                .into_iter()
                .collect(),
            test_scope: TestScope::Changed,
            test_lookback: std::time::Duration::ZERO,
            ..Default::default()
        },
    )
    .await;
    let scoped = summary
        .results
        .iter()
        .filter(|r| r.coverage.as_ref().is_some_and(|c| c.since.is_some()))
        .count();
    assert!(
        scoped >= 30,
        "only {scoped} tests checked just the new rows"
    );

    // Narrow indeed: about a third of the facts and a third of the days written again.
    let written = |model: &str| {
        summary
            .results
            .iter()
            .find(|r| r.name == model)
            .and_then(|r| r.rows)
            .unwrap_or_else(|| panic!("{model} wrote no rows"))
    };
    assert!(
        (written("fct_transactions") as i64) < fct_before / 2,
        "fct_transactions wrote {} of {fct_before} rows",
        written("fct_transactions")
    );
    assert!(
        (written("fct_daily_transactions") as i64) < dates_before,
        "fct_daily_transactions wrote {} of {dates_before} rows",
        written("fct_daily_transactions")
    );
    let (orphan_rows, still_unknown): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE user_key = -1) \
         FROM analytics.fct_transactions WHERE user_id = $1",
    )
    .bind(orphan)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(orphan_rows > 0);
    assert_eq!(still_unknown, 0, "the late user's transactions resolve");
    assert_eq!(source_system_of(&db, batch_tx).await, "streaming_kafka");
    assert_incremental_equals_full_refresh(&db).await;
}

async fn unknown_member_rows(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM analytics.fct_transactions WHERE user_key = -1")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn source_system_of(db: &TestDb, tx_id: Uuid) -> String {
    sqlx::query_scalar("SELECT source_system FROM analytics.fct_transactions WHERE tx_id = $1")
        .bind(tx_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Lands a declined stream row for the first batch transaction, on another day (January 1st,
/// 5:00) than the batch row's; returns its tx_id.
async fn supersede_a_batch_row(db: &TestDb) -> Uuid {
    let (batch_tx, batch_user, batch_time): (Uuid, Uuid, DateTime<Utc>) = sqlx::query_as(
        "SELECT tx_id, user_id, \"timestamp\" FROM public.transactions_batch_raw \
         ORDER BY source_file, source_line LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let moved_to = utc(month(1).first_day()) + Duration::hours(5);
    assert_ne!(batch_time.date_naive(), moved_to.date_naive());
    insert(
        db,
        vec![SinkRow {
            tx_id: batch_tx,
            ..sink_row(batch_user, moved_to, 77, "declined")
        }],
    )
    .await;
    batch_tx
}

/// Copies every analytics table, rebuilds everything with --full-refresh, and compares.
async fn assert_incremental_equals_full_refresh(db: &TestDb) {
    sqlx::raw_sql("CREATE SCHEMA incremental")
        .execute(&db.pool)
        .await
        .unwrap();
    let tables = analytics_tables(db).await;
    assert!(tables.contains(&"fct_transactions".to_string()));
    for table in &tables {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            r#"CREATE TABLE incremental."{table}" AS SELECT * FROM analytics."{table}""#
        )))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    build(db, true).await;
    for table in &tables {
        let (only_incremental, only_full, rows): (i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                r#"SELECT
                     (SELECT count(*) FROM (SELECT * FROM incremental."{table}"
                                            EXCEPT ALL SELECT * FROM analytics."{table}") a),
                     (SELECT count(*) FROM (SELECT * FROM analytics."{table}"
                                            EXCEPT ALL SELECT * FROM incremental."{table}") b),
                     (SELECT count(*) FROM analytics."{table}")"#
            )))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            (only_incremental, only_full),
            (0, 0),
            "{table}: rows differ between the incremental run and a full refresh ({rows} rows)"
        );
    }
}

#[tokio::test]
async fn a_late_arriving_user_replaces_the_unknown_member_on_the_next_incremental_run() {
    let db = TestDb::migrated().await;
    let files = Files::generate(2);
    files.land(&db, 1).await;
    let january: HashSet<Uuid> = files.users[&month(1)].iter().map(|u| u.user_id).collect();
    let newcomer = files.users[&month(2)]
        .iter()
        .find(|u| !january.contains(&u.user_id))
        .unwrap()
        .user_id;
    let early = sink_row(
        newcomer,
        utc(month(1).first_day()) + Duration::days(25),
        30,
        "approved",
    );
    let on_time = sink_row(
        newcomer,
        utc(month(2).first_day()) + Duration::days(3),
        40,
        "approved",
    );
    let probes = [early.tx_id, on_time.tx_id];
    insert(&db, vec![early, on_time]).await;
    build(&db, true).await;
    let keys = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT user_key FROM analytics.fct_transactions WHERE tx_id = ANY($1) ORDER BY event_time",
            )
            .bind(&probes[..])
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        keys(&db).await,
        vec![-1, -1],
        "unknown before February's file"
    );

    files.land(&db, 2).await;
    build(&db, false).await;
    let key: i64 = sqlx::query_scalar(
        "SELECT user_key FROM analytics.dim_users WHERE user_id = $1 AND is_current",
    )
    .bind(newcomer)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_ne!(key, -1);
    assert_eq!(
        keys(&db).await,
        vec![key, key],
        "both resolve to the newcomer's (only) version, the early one included"
    );
}

/// A landed transaction as the marts see it, computed here from the landing tables.
#[derive(Debug, Clone)]
struct Tx {
    user_id: Uuid,
    merchant: String,
    category: String,
    event_time: DateTime<Utc>,
    status: String,
    amount_usd: Decimal,
    stream: bool,
    z_score: Option<f64>,
    is_anomaly: bool,
}

fn rates() -> HashMap<String, Decimal> {
    csv::Reader::from_path(models_dir().join("seeds/currency_rates.csv"))
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[1].parse().unwrap())
        })
        .collect()
}

fn cents(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Batch rows, then stream rows replacing batch rows with the same tx_id.
async fn landed_transactions(db: &TestDb) -> Vec<Tx> {
    let rates = rates();
    type Row = (
        Uuid,
        Uuid,
        Decimal,
        String,
        String,
        String,
        DateTime<Utc>,
        Option<String>,
        Option<f64>,
        Option<bool>,
    );
    let batch: Vec<Row> = sqlx::query_as(
        r#"SELECT tx_id, user_id, amount, currency, merchant, category, "timestamp",
                  NULL::text, NULL::float8, NULL::bool
           FROM public.transactions_batch_raw"#,
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let stream: Vec<Row> = sqlx::query_as(
        "SELECT tx_id, user_id, amount, currency, merchant, category, event_time, status, \
                z_score, is_anomaly \
         FROM public.transactions_sink",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut all: HashMap<Uuid, Tx> = HashMap::new();
    for (tx, user_id, amount, currency, merchant, category, at, status, z, anomaly) in
        batch.into_iter().chain(stream)
    {
        all.insert(
            tx,
            Tx {
                user_id,
                merchant,
                category,
                event_time: at,
                stream: status.is_some(),
                status: status.unwrap_or_else(|| "approved".into()),
                amount_usd: cents(amount * rates[&currency]),
                z_score: z,
                is_anomaly: anomaly.unwrap_or(false),
            },
        );
    }
    all.into_values().collect()
}

/// Months of files, stream traffic with anomalies and orphans, a declined refund and a pending
/// purchase, all built.
async fn built_with_everything() -> (TestDb, Files) {
    let db = TestDb::migrated().await;
    let files = Files::generate(3);
    for m in 1..=3 {
        files.land(&db, m).await;
    }
    let users = files.user_ids();
    insert(&db, stream_rows(&users, 4_000, SEED)).await;
    let at = utc(month(2).first_day()) + Duration::hours(12);
    insert(
        &db,
        vec![
            sink_row(users[0], at, -25, "declined"),
            sink_row(users[0], at, 60, "pending"),
            sink_row(users[0], at, -5, "approved"),
        ],
    )
    .await;
    build(&db, true).await;
    (db, files)
}

#[tokio::test]
async fn daily_merchant_revenue_equals_a_computation_from_the_landing_tables() {
    let (db, _files) = built_with_everything().await;
    // (date, merchant) → (count, revenue, users)
    let mut days: BTreeMap<(NaiveDate, String), (i64, Decimal, HashSet<Uuid>)> = BTreeMap::new();
    for tx in landed_transactions(&db).await {
        if tx.status != "approved" {
            continue;
        }
        let day = days
            .entry((tx.event_time.date_naive(), tx.merchant.clone()))
            .or_insert_with(|| (0, Decimal::ZERO, HashSet::new()));
        day.0 += 1;
        day.1 += tx.amount_usd;
        day.2.insert(tx.user_id);
    }
    type Expected = (i64, Decimal, Decimal, i64, Decimal, Option<Decimal>);
    let mut expected: BTreeMap<(NaiveDate, String), Expected> = BTreeMap::new();
    for ((date, merchant), (count, revenue, users)) in &days {
        let revenue_on = |d: NaiveDate| days.get(&(d, merchant.clone())).map(|day| day.1);
        let rolling: Decimal = (0..7)
            .filter_map(|back| revenue_on(*date - Duration::days(back)))
            .sum();
        let dod = revenue_on(*date - Duration::days(1))
            .filter(|previous| !previous.is_zero())
            .map(|previous| cents(Decimal::from(100) * (revenue - previous) / previous.abs()));
        expected.insert(
            (*date, merchant.clone()),
            (
                *count,
                *revenue,
                cents(revenue / Decimal::from(*count)),
                users.len() as i64,
                rolling,
                dod,
            ),
        );
    }
    type Row = (
        NaiveDate,
        String,
        i64,
        Decimal,
        Decimal,
        i64,
        Decimal,
        Option<Decimal>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        r#"SELECT "date", merchant, transaction_count, revenue_usd, avg_transaction_usd,
                  distinct_users, rolling_7d_revenue_usd, dod_growth_pct
           FROM analytics.daily_merchant_revenue"#,
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let actual: BTreeMap<(NaiveDate, String), Expected> = rows
        .into_iter()
        .map(|(d, m, c, r, a, u, roll, dod)| ((d, m), (c, r, a, u, roll, dod)))
        .collect();
    assert_eq!(actual.len(), expected.len());
    for (key, want) in &expected {
        assert_eq!(actual.get(key), Some(want), "{key:?}");
    }
    assert!(
        actual.values().any(|v| v.5.is_some()) && actual.values().any(|v| v.1 < v.4),
        "the data exercises growth and rolling sums"
    );
}

#[tokio::test]
async fn top_spenders_equals_a_computation_from_the_landing_tables() {
    let (db, files) = built_with_everything().await;
    // Latest file row of each user: name and current tier.
    let mut current: HashMap<Uuid, &UserRecord> = HashMap::new();
    for users in files.users.values() {
        for user in users {
            current.insert(user.user_id, user);
        }
    }
    let transactions = landed_transactions(&db).await;
    let latest = transactions.iter().map(|t| t.event_time).max().unwrap();
    let window_start = latest - Duration::days(30);
    let mut spend: HashMap<Uuid, (Decimal, Decimal)> =
        current.keys().map(|id| (*id, Default::default())).collect();
    for tx in transactions.iter().filter(|t| t.status == "approved") {
        if let Some(s) = spend.get_mut(&tx.user_id) {
            s.0 += tx.amount_usd;
            if tx.event_time > window_start {
                s.1 += tx.amount_usd;
            }
        }
    }
    let rank = |value: Decimal, pick: fn(&(Decimal, Decimal)) -> Decimal| {
        1 + spend.values().filter(|s| pick(s) > value).count() as i64
    };
    type Row = (Uuid, String, String, String, Decimal, Decimal, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT user_id, first_name, last_name, customer_tier, total_spend_usd, \
                spend_last_30d_usd, spend_rank, spend_rank_last_30d \
         FROM analytics.top_spenders",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), current.len(), "every known user, once");
    for (user_id, first, last, tier, total, recent, total_rank, recent_rank) in rows {
        let user = current[&user_id];
        let (want_total, want_recent) = spend[&user_id];
        assert_eq!(
            (first.as_str(), last.as_str(), tier.as_str()),
            (
                user.first_name.as_str(),
                user.last_name.as_str(),
                user.customer_tier
            ),
            "{user_id}"
        );
        assert_eq!((total, recent), (want_total, want_recent), "{user_id}");
        assert_eq!(total_rank, rank(want_total, |s| s.0), "{user_id}");
        assert_eq!(recent_rank, rank(want_recent, |s| s.1), "{user_id}");
    }
}

#[tokio::test]
async fn anomaly_summary_equals_a_computation_from_the_landing_tables() {
    let (db, _files) = built_with_everything().await;
    #[derive(Debug, Default)]
    struct Day {
        transactions: i64,
        anomalies: i64,
        users: HashSet<Uuid>,
        flagged: Decimal,
        abs_z: Vec<f64>,
        bands: [i64; 3],
    }
    let mut days: BTreeMap<(NaiveDate, String), Day> = BTreeMap::new();
    for tx in landed_transactions(&db)
        .await
        .into_iter()
        .filter(|t| t.stream)
    {
        let day = days
            .entry((tx.event_time.date_naive(), tx.category.clone()))
            .or_default();
        day.transactions += 1;
        if tx.is_anomaly {
            let z = tx.z_score.unwrap().abs();
            day.anomalies += 1;
            day.users.insert(tx.user_id);
            day.flagged += tx.amount_usd;
            day.abs_z.push(z);
            day.bands[if z <= 4.0 {
                0
            } else if z <= 6.0 {
                1
            } else {
                2
            }] += 1;
        }
    }
    type Row = (
        NaiveDate,
        String,
        i64,
        i64,
        i64,
        Decimal,
        Option<f64>,
        Option<f64>,
        i64,
        i64,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        r#"SELECT "date", category, transaction_count, anomaly_count, affected_users,
                  flagged_amount_usd, avg_abs_z, max_abs_z, mild_count, moderate_count, severe_count
           FROM analytics.anomaly_summary"#,
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), days.len());
    let mut flagged = 0;
    for (date, category, count, anomalies, users, amount, avg, max, mild, moderate, severe) in rows
    {
        let want = &days[&(date, category.clone())];
        let key = format!("{date} {category}");
        assert_eq!(
            (count, anomalies, users, amount),
            (
                want.transactions,
                want.anomalies,
                want.users.len() as i64,
                want.flagged
            ),
            "{key}"
        );
        assert_eq!([mild, moderate, severe], want.bands, "{key}");
        let want_avg = (!want.abs_z.is_empty())
            .then(|| want.abs_z.iter().sum::<f64>() / want.abs_z.len() as f64);
        let want_max = want.abs_z.iter().copied().reduce(f64::max);
        assert!(
            match (avg, want_avg) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                (a, b) => a == b,
            },
            "{key}: avg {avg:?} vs {want_avg:?}"
        );
        assert_eq!(max, want_max, "{key}");
        flagged += anomalies;
    }
    assert!(flagged > 0, "the generated stream has anomalies");
}

#[tokio::test]
async fn every_schema_test_passes_on_generated_data() {
    let (db, _files) = built_with_everything().await;
    let run_id: Uuid =
        sqlx::query_scalar("SELECT run_id FROM etl.model_runs ORDER BY id DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let results: Vec<(String, String)> =
        sqlx::query_as("SELECT test_name, status FROM etl.test_results WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    // `build` already failed the test on any failing one; here: they all ran.
    // The 96 tests of models/schema.yml and the 5 singular tests of models/tests/.
    assert_eq!(results.len(), 96 + 5, "{results:?}");
    for singular in [
        "assert_fct_amount_usd_matches_rate",
        "assert_dim_users_versions_do_not_overlap",
        "assert_fct_user_key_is_point_in_time",
        "assert_unique_grains",
        "assert_anomaly_severity_adds_up",
    ] {
        assert!(
            results
                .iter()
                .any(|(name, status)| name.contains(singular) && status == "pass"),
            "{singular} did not pass: {results:?}"
        );
    }
}
