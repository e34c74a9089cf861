//! The batch path: `generate-monthly` files and `load-batch` landing them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use etl::batch::{BatchError, ChunkOptions, FileStatus, LoadOptions, load_all};
use etl::domain::batch_transaction::BatchTransaction;
use etl::domain::catalog::{TRANSACTIONS_CSV_HEADER, USERS_CSV_HEADER};
use etl::domain::user::UserRecord;
use etl::generate::corrupt::FileKind;
use etl::generate::files::{MonthlyReport, write_month};
use etl::generate::monthly::{Month, MonthlyOptions, restated_count};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use tempfile::TempDir;

use crate::helpers::{TestDb, run_etl};

fn options(month: u32) -> MonthlyOptions {
    MonthlyOptions {
        month: Month::new(2025, month).unwrap(),
        users: 400,
        transactions: 1_200,
        seed: 7,
        invalid_ratio: 0.0,
    }
}

fn generate(dir: &Path, options: &MonthlyOptions) -> MonthlyReport {
    write_month(dir, options, &ProgressBar::hidden()).expect("generating a month")
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// The data rows of a generated file, parsed with the csv crate (independent of the loader).
fn records(path: &Path) -> Vec<csv::StringRecord> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect()
}

fn users(path: &Path) -> Vec<UserRecord> {
    records(path)
        .iter()
        .map(|r| UserRecord::parse(&r.iter().collect::<Vec<_>>()).unwrap())
        .collect()
}

fn transactions(path: &Path) -> Vec<BatchTransaction> {
    records(path)
        .iter()
        .map(|r| BatchTransaction::parse(&r.iter().collect::<Vec<_>>()).unwrap())
        .collect()
}

fn load_options(dir: &Path) -> LoadOptions {
    LoadOptions {
        dir: dir.to_path_buf(),
        ..Default::default()
    }
}

async fn count(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

/// Rows in (users_raw, transactions_batch_raw, etl.batch_rejects).
async fn landed(db: &TestDb) -> (i64, i64, i64) {
    (
        count(db, "SELECT count(*) FROM public.users_raw").await,
        count(db, "SELECT count(*) FROM public.transactions_batch_raw").await,
        count(db, "SELECT count(*) FROM etl.batch_rejects").await,
    )
}

#[test]
fn the_same_arguments_give_byte_identical_files() {
    let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let args = |dir: &Path| {
        vec![
            "generate-monthly".to_string(),
            "--year=2025".into(),
            "--month=3".into(),
            "--users=500".into(),
            "--transactions=1500".into(),
            "--seed=11".into(),
            "--invalid-ratio=0.05".into(),
            format!("--out-dir={}", dir.display()),
        ]
    };
    for dir in [&a, &b] {
        let args = args(dir.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, stderr) = run_etl(&args, None);
        assert!(ok, "{stderr}");
    }
    for name in ["user_registrations_2025_03.csv", "transactions_2025_03.csv"] {
        assert_eq!(
            sha256(&a.path().join(name)),
            sha256(&b.path().join(name)),
            "{name}"
        );
    }
}

#[test]
fn other_months_have_other_new_users() {
    let dir = TempDir::new().unwrap();
    let first = generate(dir.path(), &options(1));
    let other = TempDir::new().unwrap();
    let second = generate(other.path(), &options(2));
    let ids: HashSet<_> = users(&first.users_file).iter().map(|u| u.user_id).collect();
    assert!(
        users(&second.users_file)
            .iter()
            .all(|u| !ids.contains(&u.user_id))
    );
}

#[test]
fn files_start_with_the_exact_headers() {
    let dir = TempDir::new().unwrap();
    let report = generate(dir.path(), &options(1));
    let first_line = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(first_line(&report.users_file), USERS_CSV_HEADER);
    assert_eq!(
        first_line(&report.transactions_file),
        TRANSACTIONS_CSV_HEADER
    );
    assert!(
        report
            .users_file
            .ends_with("user_registrations_2025_01.csv")
    );
    assert!(
        report
            .transactions_file
            .ends_with("transactions_2025_01.csv")
    );
}

#[test]
fn restated_users_appear_from_the_second_month_with_changed_attributes() {
    let dir = TempDir::new().unwrap();
    let first = generate(dir.path(), &options(1));
    assert_eq!(
        first.restated_rows, 0,
        "the first month has nobody to restate"
    );
    let second = generate(dir.path(), &options(2));
    assert_eq!(second.restated_rows as usize, restated_count(400));

    let before: HashMap<_, _> = users(&first.users_file)
        .into_iter()
        .map(|u| (u.user_id, u))
        .collect();
    let restated: Vec<UserRecord> = users(&second.users_file)
        .into_iter()
        .filter(|u| before.contains_key(&u.user_id))
        .collect();
    assert_eq!(
        restated.len(),
        restated_count(400),
        "about 10 % of the rows"
    );
    let mut changed = BTreeSet::new();
    for now in &restated {
        let then = &before[&now.user_id];
        let diffs: Vec<&str> = [
            ("customer_tier", then.customer_tier != now.customer_tier),
            (
                "city_state",
                (&then.city, &then.state) != (&now.city, &now.state),
            ),
            ("is_active", then.is_active != now.is_active),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect();
        assert!(
            !diffs.is_empty(),
            "{} restated without a change",
            now.user_id
        );
        changed.extend(diffs);
        // Everything else is the same person.
        assert_eq!(
            (
                &then.first_name,
                &then.email,
                then.age,
                then.registration_date
            ),
            (&now.first_name, &now.email, now.age, now.registration_date)
        );
    }
    assert_eq!(
        changed.len(),
        3,
        "tier, city/state and is_active all change somewhere"
    );
}

#[test]
fn every_generated_row_is_coherent() {
    let dir = TempDir::new().unwrap();
    let first = generate(dir.path(), &options(1));
    let opts = options(2);
    let second = generate(dir.path(), &opts);

    let earlier: HashMap<_, _> = users(&first.users_file)
        .into_iter()
        .map(|u| (u.user_id, u.registration_date))
        .collect();
    let mut registered = earlier.clone();
    for user in users(&second.users_file) {
        user.check_coherence()
            .unwrap_or_else(|e| panic!("{}: {e}", user.user_id));
        if earlier.contains_key(&user.user_id) {
            assert!(
                user.registration_date < opts.month.start(),
                "a restatement keeps its date"
            );
        } else {
            assert!(opts.month.contains(user.registration_date), "{user:?}");
        }
        assert_eq!(user.source_system, "third_party_registration");
        registered.insert(user.user_id, user.registration_date);
    }
    // Categories are always quoted: the raw lines carry them between double quotes.
    let text = std::fs::read_to_string(&second.users_file).unwrap();
    for line in text.lines().skip(1) {
        assert_eq!(line.matches('"').count(), 2, "{line}");
    }
    for tx in transactions(&second.transactions_file) {
        let at = tx.timestamp.naive_utc();
        let since = registered
            .get(&tx.user_id)
            .unwrap_or_else(|| panic!("{} pays for an unknown user", tx.tx_id));
        assert!(opts.month.contains(at) && at >= *since, "{tx:?}");
    }
}

#[tokio::test]
async fn loaded_rows_equal_file_rows_minus_rejects_and_every_bad_row_is_rejected() {
    every_row_is_loaded_or_rejected_with_its_line(ChunkOptions::default()).await;
}

/// Small chunks, so that a file is read in dozens of pieces and COPY statements alternate between
/// rows and rejects: every row still lands with its own line, every reject with its line, column
/// and raw text, however the chunk boundaries fall.
#[tokio::test]
async fn a_file_read_in_many_small_chunks_keeps_every_line_number() {
    every_row_is_loaded_or_rejected_with_its_line(SMALL_CHUNKS).await;
}

/// About 40 chunks for a test users file, 100 for a transactions file.
const SMALL_CHUNKS: ChunkOptions = ChunkOptions {
    chunk_bytes: 3_000,
    max_record_bytes: 64 << 10,
    output_bytes: 700,
};

async fn every_row_is_loaded_or_rejected_with_its_line(chunks: ChunkOptions) {
    let dir = TempDir::new().unwrap();
    let opts = MonthlyOptions {
        invalid_ratio: 0.1,
        ..options(1)
    };
    let report = generate(dir.path(), &opts);
    assert_eq!(report.bad_user_rows.len(), 40);
    assert_eq!(report.bad_transaction_rows.len(), 120);
    let db = TestDb::migrated().await;

    let options = LoadOptions {
        chunks,
        ..load_options(dir.path())
    };
    let outcomes = load_all(&db.pool, &options).await.unwrap();
    let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(outcomes[0].file, "user_registrations_2025_01.csv");
    assert_eq!(
        (outcomes[0].rows_loaded, outcomes[0].rows_rejected),
        (360, 40)
    );
    assert_eq!(
        (outcomes[1].rows_loaded, outcomes[1].rows_rejected),
        (1_080, 120)
    );

    assert_eq!(
        count(&db, "SELECT count(*) FROM public.users_raw").await,
        360
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM public.transactions_batch_raw").await,
        1_080
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM public.users_raw WHERE loaded_at IS NULL OR source_file <> 'user_registrations_2025_01.csv'").await,
        0
    );

    // Every injected bad row, and nothing else, is in etl.batch_rejects with its line, column and reason.
    for (file, bad_rows, kind) in [
        (
            "user_registrations_2025_01.csv",
            &report.bad_user_rows,
            FileKind::Users,
        ),
        (
            "transactions_2025_01.csv",
            &report.bad_transaction_rows,
            FileKind::Transactions,
        ),
    ] {
        let rejects: Vec<(i64, Option<String>, String, String)> = sqlx::query_as(
            "SELECT source_line, column_name, reason, raw_line FROM etl.batch_rejects \
             WHERE source_file = $1 ORDER BY source_line",
        )
        .bind(file)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(rejects.len(), bad_rows.len(), "{file}");
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (bad, (line, column, reason, raw)) in bad_rows.iter().zip(&rejects) {
            let (expected_column, expected_kind) = bad.kind.expected(kind);
            assert_eq!(*line as u64, bad.line, "{file}");
            assert_eq!(column.as_deref(), expected_column, "{file} line {line}");
            assert!(
                reason.starts_with(&format!("{}: ", expected_kind.code())),
                "{file} line {line}: {reason}"
            );
            assert_eq!(raw, lines[bad.line as usize - 1], "{file} line {line}");
        }
        // Good rows keep their own line numbers.
        let table = match kind {
            FileKind::Users => "SELECT source_line FROM public.users_raw ORDER BY 1",
            FileKind::Transactions => {
                "SELECT source_line FROM public.transactions_batch_raw ORDER BY 1"
            }
        };
        let good: Vec<i64> = sqlx::query_scalar(table).fetch_all(&db.pool).await.unwrap();
        let bad: HashSet<u64> = bad_rows.iter().map(|b| b.line).collect();
        let expected: Vec<i64> = (2..lines.len() as u64 + 1)
            .filter(|l| !bad.contains(l))
            .map(|l| l as i64)
            .collect();
        assert_eq!(good, expected, "{file}");
    }
}

#[tokio::test]
async fn rerunning_the_loader_is_a_no_op() {
    let dir = TempDir::new().unwrap();
    generate(
        dir.path(),
        &MonthlyOptions {
            invalid_ratio: 0.05,
            ..options(1)
        },
    );
    let db = TestDb::migrated().await;
    load_all(&db.pool, &load_options(dir.path())).await.unwrap();
    let snapshot = || async {
        (
            landed(&db).await,
            count(&db, "SELECT count(*) FROM etl.loaded_files").await,
        )
    };
    let before = snapshot().await;
    let again = load_all(&db.pool, &load_options(dir.path())).await.unwrap();
    for outcome in again {
        let outcome = outcome.unwrap();
        assert_eq!(
            outcome.status,
            FileStatus::AlreadyLoaded {
                as_name: outcome.file.clone()
            }
        );
    }
    assert_eq!(snapshot().await, before);
}

#[tokio::test]
async fn a_changed_file_is_refused_without_reload_and_replaced_with_it() {
    let dir = TempDir::new().unwrap();
    generate(
        dir.path(),
        &MonthlyOptions {
            invalid_ratio: 0.05,
            ..options(1)
        },
    );
    let db = TestDb::migrated().await;
    load_all(&db.pool, &load_options(dir.path())).await.unwrap();

    // Same names, other content: fewer users, other seed, no bad rows.
    let changed = MonthlyOptions {
        users: 300,
        seed: 8,
        ..options(1)
    };
    let report = generate(dir.path(), &changed);
    let refused = load_all(&db.pool, &load_options(dir.path())).await.unwrap();
    for outcome in &refused {
        assert!(
            matches!(outcome, Err(BatchError::ContentChanged { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM public.users_raw").await,
        380
    );

    let reload = LoadOptions {
        reload: true,
        ..load_options(dir.path())
    };
    let outcomes = load_all(&db.pool, &reload).await.unwrap();
    for outcome in outcomes {
        assert_eq!(outcome.unwrap().status, FileStatus::Reloaded);
    }
    assert_eq!(landed(&db).await, (300, 1_200, 0));
    let new_ids: HashSet<uuid::Uuid> = users(&report.users_file)
        .iter()
        .map(|u| u.user_id)
        .collect();
    let loaded: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT user_id FROM public.users_raw")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(
        loaded.iter().all(|id| new_ids.contains(id)),
        "old rows survived the reload"
    );
    let hash_rows: i64 = count(
        &db,
        "SELECT count(DISTINCT content_hash) FROM etl.loaded_files",
    )
    .await;
    assert_eq!(hash_rows, 2);
}

#[tokio::test]
async fn two_concurrent_loaders_load_each_file_once() {
    let dir = TempDir::new().unwrap();
    generate(
        dir.path(),
        &MonthlyOptions {
            invalid_ratio: 0.05,
            ..options(1)
        },
    );
    let db = TestDb::migrated().await;
    let other_pool = etl::db::connect(&db.url, 2).await.unwrap();
    let options = load_options(dir.path());
    let (a, b) = tokio::join!(
        load_all(&db.pool, &options),
        load_all(&other_pool, &options)
    );
    let outcomes: Vec<_> = a
        .unwrap()
        .into_iter()
        .chain(b.unwrap())
        .map(Result::unwrap)
        .collect();
    let loaded = outcomes
        .iter()
        .filter(|o| o.status == FileStatus::Loaded)
        .count();
    let skipped = outcomes
        .iter()
        .filter(|o| matches!(o.status, FileStatus::AlreadyLoaded { .. }))
        .count();
    assert_eq!((loaded, skipped), (2, 2), "{outcomes:?}");
    assert_eq!(landed(&db).await, (380, 1_140, 80));
    other_pool.close().await;
}

#[tokio::test]
async fn the_commands_end_to_end_with_exit_codes() {
    let dir = TempDir::new().unwrap();
    let out = format!("--out-dir={}", dir.path().display());
    let (ok, _, stderr) = run_etl(
        &[
            "generate-monthly",
            "--year=2025",
            "--month=4",
            "--users=200",
            "--transactions=400",
            "--invalid-ratio=0.1",
            &out,
        ],
        None,
    );
    assert!(ok, "{stderr}");
    let db = TestDb::migrated().await;
    let dir_arg = format!("--dir={}", dir.path().display());

    // Rejects do not make the run fail; the summary counts them by reason.
    let (ok, stdout, stderr) = run_etl(&["load-batch", &dir_arg, "--month=2025-04"], Some(&db.url));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("user_registrations_2025_04.csv: loaded 180 rows, rejected 20 ("),
        "{stdout}"
    );
    let (ok, stdout, _) = run_etl(&["load-batch", &dir_arg], Some(&db.url));
    assert!(ok && stdout.contains("already loaded"), "{stdout}");

    // A wrong header is a clear error and a non-zero exit.
    std::fs::write(
        dir.path().join("transactions_2025_05.csv"),
        "id,user,amount\n1,2,3\n",
    )
    .unwrap();
    let (ok, _, stderr) = run_etl(&["load-batch", &dir_arg, "--month=2025-05"], Some(&db.url));
    assert!(!ok);
    assert!(
        stderr.contains("transactions_2025_05.csv line 1: the header is"),
        "{stderr}"
    );

    // So is asking for a month that has no file.
    let (ok, _, stderr) = run_etl(&["load-batch", &dir_arg, "--month=2025-06"], Some(&db.url));
    assert!(
        !ok && stderr.contains("no batch file for 2025-06"),
        "{stderr}"
    );
}

/// The race itself, made certain: both loaders are parked on the file's advisory lock (seen in
/// `pg_locks`, no sleeps) before it is released; exactly one of them lands the file.
#[tokio::test]
async fn loaders_waiting_on_the_same_file_land_it_once() {
    let dir = TempDir::new().unwrap();
    let report = generate(dir.path(), &options(1));
    let db = TestDb::migrated().await;
    let file = etl::batch::BatchFile::from_path(&report.users_file).unwrap();
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(etl::batch::load::lock_key(&file.name()))
        .execute(&mut holder)
        .await
        .unwrap();

    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let (pool, file) = (db.pool.clone(), file.clone());
            tokio::spawn(async move {
                etl::batch::load_file(&pool, &file, &LoadOptions::default()).await
            })
        })
        .collect();
    // Only this test's database: other tests and migrations take advisory locks too.
    let both_waiting = async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&mut holder)
            .await
            .unwrap();
            if waiting == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), both_waiting)
        .await
        .expect("both loaders should reach the file's advisory lock");
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();

    let mut statuses = Vec::new();
    for loader in loaders {
        statuses.push(loader.await.unwrap().unwrap().status);
    }
    assert!(statuses.contains(&FileStatus::Loaded), "{statuses:?}");
    assert!(
        statuses.contains(&FileStatus::AlreadyLoaded {
            as_name: file.name()
        }),
        "{statuses:?}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM public.users_raw").await,
        400
    );
}

/// A file that fails half-way (invalid UTF-8 after good rows) leaves nothing behind: one transaction.
#[tokio::test]
async fn a_file_failing_half_way_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let report = generate(dir.path(), &options(1));
    let mut bytes = std::fs::read(&report.users_file).unwrap();
    bytes.extend_from_slice(b"\xff\xfe,broken\n");
    std::fs::write(&report.users_file, bytes).unwrap();
    let db = TestDb::migrated().await;

    let file = etl::batch::BatchFile::from_path(&report.users_file).unwrap();
    // In small chunks, so that hundreds of rows were sent to COPY before the bad line is read.
    let options = LoadOptions {
        chunks: SMALL_CHUNKS,
        ..LoadOptions::default()
    };
    let err = etl::batch::load_file(&db.pool, &file, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BatchError::NotUtf8 { line: 402, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("user_registrations_2025_01.csv line 402"),
        "{err}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM public.users_raw").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM etl.loaded_files").await, 0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM etl.batch_rejects").await,
        0
    );
}
