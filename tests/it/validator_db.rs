//! Property (issue 17): the stream validator accepts a message exactly when PostgreSQL's
//! `transactions_sink` takes its values unchanged, for the columns the database checks (amount,
//! currency, merchant, status) and the types it parses (uuid, numeric(14,2), timestamptz, text).
//! "Unchanged" matters for amounts: numeric(14,2) would round 12.345 to 12.35 without a word.
//!
//! The database checks less than the validator in places (category, payment_method, the years of
//! the timestamp, blank merchants have no CHECK): those fields stay valid here, and a blank
//! merchant only has to be refused by the validator.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use uuid::Uuid;

use etl::domain::catalog;
use etl::domain::transaction::validate;

use crate::helpers::TestDb;

const INSERT: &str = "INSERT INTO transactions_sink
    (tx_id, user_id, amount, currency, merchant, category, event_time, status, payment_method,
     kafka_topic, kafka_partition, kafka_offset, user_txn_count, user_running_mean)
    VALUES ($1::uuid, $2::uuid, $3::numeric, $4, $5, $6, $7::timestamptz, $8, $9,
            'transactions', 0, 0, 1, 0)
    RETURNING amount = $3::numeric AND merchant = $5";

#[derive(Debug, Clone)]
struct Case {
    tx_id: String,
    /// The JSON text of the amount, sent to PostgreSQL as is.
    amount: String,
    currency: String,
    merchant: String,
    timestamp: String,
    status: String,
}

impl Case {
    fn message(&self) -> String {
        let s = |v: &str| serde_json::to_string(v).unwrap();
        format!(
            r#"{{"tx_id":{},"user_id":"0b9d2f7a-1c3e-4f5a-8b6c-7d8e9f0a1b2c","amount":{},"currency":{},"merchant":{},"category":"gaming","timestamp":{},"status":{},"payment_method":"debit_card"}}"#,
            s(&self.tx_id),
            self.amount,
            s(&self.currency),
            s(&self.merchant),
            s(&self.timestamp),
            s(&self.status),
        )
    }
}

/// JSON numbers around every edge of the amount rule: zero, ±1,000,000, two and three decimals,
/// exponents.
fn amount() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,6})(\\.[0-9]{1,3})?",
        "-?(999999|1000000)\\.[0-9]{1,2}0?",
        "-?[1-9](\\.[0-9]{1,3})?[eE][-+]?[0-7]",
    ]
}

fn vocabulary_or_not(
    words: &'static [&'static str],
    others: &'static [&'static str],
) -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::sample::select(words.to_vec()).prop_map(String::from),
        1 => proptest::sample::select(others.to_vec()).prop_map(String::from),
    ]
    .boxed()
}

fn merchant() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[^\u{0}]{1,255}",
        1 => "[a-zé]{250,260}",
        1 => "[ \t]{0,3}",
        1 => "[a-z]{0,3}\u{0}[a-z]{0,3}",
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u128>(),
        amount(),
        vocabulary_or_not(&catalog::CURRENCIES, &["usd", "BTC", "", "USD "]),
        merchant(),
        prop_oneof![
            Just("2025-08-15T10:30:00Z".to_string()),
            Just("2100-12-31T23:59:59+14:00".to_string()),
            Just("2000-01-01T00:00:00.5-01:00".to_string()),
        ],
        vocabulary_or_not(&catalog::STATUSES, &["refunded", "Approved", ""]),
    )
        .prop_map(|(tx, amount, currency, merchant, timestamp, status)| Case {
            tx_id: Uuid::from_u128(tx).to_string(),
            amount,
            currency,
            merchant,
            timestamp,
            status,
        })
}

/// Whether PostgreSQL stores the case's values unchanged (the insert is rolled back).
async fn database_accepts(db: &TestDb, case: &Case) -> Result<bool, String> {
    let mut tx = db.pool.begin().await.map_err(|e| e.to_string())?;
    let outcome = sqlx::query_scalar::<_, bool>(INSERT)
        .bind(&case.tx_id)
        .bind("0b9d2f7a-1c3e-4f5a-8b6c-7d8e9f0a1b2c")
        .bind(&case.amount)
        .bind(&case.currency)
        .bind(&case.merchant)
        .bind("gaming")
        .bind(&case.timestamp)
        .bind(&case.status)
        .bind("debit_card")
        .fetch_one(&mut *tx)
        .await;
    match outcome {
        Ok(unchanged) => Ok(unchanged),
        // Refused by a CHECK, a type's input function or the encoding: all are refusals.
        Err(sqlx::Error::Database(_)) => Ok(false),
        Err(other) => Err(other.to_string()),
    }
}

#[test]
fn the_validator_accepts_exactly_what_the_database_stores_unchanged() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::migrated());
    let mut runner = TestRunner::new(Config {
        cases: 200,
        // A failure prints its minimal case; there is no source file to keep it beside.
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        let message = case.message();
        let verdict = validate(message.as_bytes());
        let database = runtime
            .block_on(database_accepts(&db, &case))
            .map_err(TestCaseError::fail)?;
        let blank_merchant = case.merchant.trim().is_empty() && !case.merchant.is_empty();
        if blank_merchant {
            // No CHECK refuses a blank merchant; the validator must.
            prop_assert!(verdict.is_err(), "{message}");
            return Ok(());
        }
        prop_assert_eq!(
            verdict.is_ok(),
            database,
            "validator: {:?}, database stores unchanged: {}, message: {}",
            verdict.as_ref().map(|_| ()).map_err(|r| r.to_string()),
            database,
            message
        );
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
