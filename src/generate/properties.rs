//! Property tests tying the generators to the parsers that read what they write (issue 17):
//! every stream message the generator calls valid passes the validator (and every one it spoiled
//! is refused with the kind it announced), and every CSV row `generate-monthly` writes is loaded
//! back with the values it was generated from.
//!
//! Case counts are small on purpose: the suite runs several times in a row, and each case already
//! covers many messages or rows.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use indicatif::ProgressBar;
use proptest::prelude::*;
use uuid::Uuid;

use super::files::write_month;
use super::monthly::{Month, MonthlyOptions, Payer, PriorUsersBuilder, TransactionRows, UserRows};
use super::stream::{EventClock, StreamGenerator, StreamOptions};
use crate::batch::copy_text;
use crate::batch::read::{BatchFileKind, parse_file};
use crate::domain::transaction::{EVENT_YEARS, validate};

/// Messages per generated stream: enough for every injected kind to take its turn.
const MESSAGES: usize = 200;

/// Event clocks whose timestamps all stay within the validator's years.
fn clock() -> impl Strategy<Value = EventClock> {
    let start = (*EVENT_YEARS.start()..*EVENT_YEARS.end(), 0i64..365 * 86_400).prop_map(
        |(year, seconds)| {
            let new_year: DateTime<Utc> = format!("{year}-01-01T00:00:00Z").parse().unwrap();
            new_year + TimeDelta::seconds(seconds)
        },
    );
    prop_oneof![
        Just(EventClock::Now),
        (start.clone(), 0i64..60_000).prop_map(|(start, ms)| EventClock::Fixed {
            start,
            step: TimeDelta::milliseconds(ms),
        }),
        // Backfills end at least a year after 2000 and reach back at most a year.
        (start, 1u32..365).prop_map(|(end, days)| EventClock::Backfill {
            end: end.max("2001-01-01T00:00:00Z".parse().unwrap()),
            days,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_stream_generator_and_the_validator_agree(
        seed in any::<u64>(),
        invalid_ratio in prop_oneof![Just(0.0), 0.0..=1.0f64],
        orphan_ratio in 0.0..=1.0f64,
        users in proptest::collection::vec(any::<u128>().prop_map(Uuid::from_u128), 0..20),
        clock in clock(),
    ) {
        let options = StreamOptions { seed, invalid_ratio, orphan_ratio, clock };
        for message in StreamGenerator::new(&users, options).take(MESSAGES) {
            let verdict = validate(&message.payload);
            let text = String::from_utf8_lossy(&message.payload);
            match (message.injected, verdict) {
                (None, Ok(tx)) => prop_assert_eq!(tx.tx_id, message.tx_id),
                (None, Err(rejection)) => {
                    prop_assert!(false, "generated as valid, refused: {rejection}: {text}")
                }
                (Some(kind), Err(rejection)) => {
                    prop_assert_eq!(rejection.kind.as_str(), kind.as_str(), "{}", text)
                }
                (Some(kind), Ok(_)) => prop_assert!(false, "injected {kind}, accepted: {text}"),
            }
        }
    }
}

/// The COPY text of every row the generator produced for `options` in an empty folder, built
/// from the generator's own records (not from the files).
fn expected_copy(options: &MonthlyOptions, users_file: &str, tx_file: &str) -> (Vec<u8>, Vec<u8>) {
    let prior = PriorUsersBuilder::new(options).build();
    let mut users = Vec::new();
    let mut payers = Vec::new();
    for (index, row) in UserRows::new(options, &prior).enumerate() {
        copy_text::user_row(&mut users, &row.record, users_file, index as u64 + 2);
        payers.push(Payer {
            user_id: row.record.user_id,
            registered: Some(row.record.registration_date),
        });
    }
    let mut transactions = Vec::new();
    let rows = TransactionRows::new(options, &payers, &prior.ids).expect("users to pay");
    for (index, tx) in rows.enumerate() {
        copy_text::transaction_row(&mut transactions, &tx, tx_file, index as u64 + 2);
    }
    (users, transactions)
}

fn load(kind: BatchFileKind, path: &Path) -> Result<(Vec<u8>, u64, u64), TestCaseError> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let data = std::fs::read(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let parsed =
        parse_file(kind, &name, &data).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
    Ok((parsed.rows_copy, parsed.rows_loaded, parsed.rows_rejected))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_generated_csv_row_loads_back_as_generated(
        seed in any::<u64>(),
        year in 2000i32..=2100,
        month in 1u32..=12,
        users in 1u64..40,
        transactions in 0u64..40,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = MonthlyOptions {
            month: Month::new(year, month).unwrap(),
            users,
            transactions,
            seed,
            invalid_ratio: 0.0,
        };
        let report = write_month(dir.path(), &options, &ProgressBar::hidden()).unwrap();
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        let (want_users, want_transactions) =
            expected_copy(&options, &name(&report.users_file), &name(&report.transactions_file));

        let (got, loaded, rejected) = load(BatchFileKind::Users, &report.users_file)?;
        prop_assert_eq!((loaded, rejected), (users, 0));
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want_users));
        let (got, loaded, rejected) = load(BatchFileKind::Transactions, &report.transactions_file)?;
        prop_assert_eq!((loaded, rejected), (transactions, 0));
        prop_assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want_transactions)
        );
    }
}
