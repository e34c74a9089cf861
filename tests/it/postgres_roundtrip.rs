//! Rows go into the landing tables and come back with their types intact; constraints hold.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::TestDb;

const INSERT_SINK_ROW: &str = "INSERT INTO transactions_sink
    (tx_id, user_id, amount, currency, merchant, category, event_time, status, payment_method,
     kafka_topic, kafka_partition, kafka_offset, user_txn_count, user_running_mean, z_score)
    VALUES ($1, $2, $3, $4, 'Amazon', 'online_shopping', $5, 'approved', 'credit_card',
            'transactions', 0, $6, 1, 0, NULL)
    ON CONFLICT (tx_id) DO NOTHING";

async fn insert_sink_row(
    db: &TestDb,
    tx_id: Uuid,
    amount: Decimal,
    currency: &str,
    offset: i64,
) -> Result<u64, sqlx::Error> {
    let event_time: DateTime<Utc> = Utc.with_ymd_and_hms(2025, 8, 15, 10, 30, 0).unwrap();
    sqlx::query(INSERT_SINK_ROW)
        .bind(tx_id)
        .bind(Uuid::new_v4())
        .bind(amount)
        .bind(currency)
        .bind(event_time)
        .bind(offset)
        .execute(&db.pool)
        .await
        .map(|r| r.rows_affected())
}

#[tokio::test]
async fn stream_rows_round_trip_and_duplicates_are_ignored() {
    let db = TestDb::migrated().await;
    let tx_id = Uuid::new_v4();
    let amount = Decimal::new(-12345, 2); // a refund of 123.45
    assert_eq!(
        insert_sink_row(&db, tx_id, amount, "EUR", 7).await.unwrap(),
        1
    );
    assert_eq!(
        insert_sink_row(&db, tx_id, amount, "EUR", 8).await.unwrap(),
        0,
        "the primary key on tx_id must swallow a replayed transaction"
    );

    let (amount_back, currency, offset, time, z, anomaly): (
        Decimal,
        String,
        i64,
        DateTime<Utc>,
        Option<f64>,
        bool,
    ) = sqlx::query_as(
        "SELECT amount, currency, kafka_offset, event_time, z_score, is_anomaly
         FROM transactions_sink WHERE tx_id = $1",
    )
    .bind(tx_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(amount_back, amount);
    assert_eq!(currency, "EUR");
    assert_eq!(offset, 7, "the first write wins");
    assert_eq!(time, Utc.with_ymd_and_hms(2025, 8, 15, 10, 30, 0).unwrap());
    assert_eq!(z, None);
    assert!(!anomaly);
}

#[tokio::test]
async fn constraints_refuse_what_the_validator_would_refuse() {
    let db = TestDb::migrated().await;
    for (amount, currency) in [(Decimal::new(100, 2), "XYZ"), (Decimal::ZERO, "USD")] {
        let err = insert_sink_row(&db, Uuid::new_v4(), amount, currency, 1)
            .await
            .expect_err("a bad row must be refused");
        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(
            code.as_deref(),
            Some("23514"),
            "check violation expected: {err}"
        );
    }
}

#[tokio::test]
async fn batch_user_rows_keep_arrays_and_source_lines() {
    let db = TestDb::migrated().await;
    let user_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO users_raw (user_id, first_name, last_name, email, age, income_bracket,
            customer_tier, risk_profile, city, state, country, registration_date,
            preferred_categories, is_active, source_system, source_file, source_line)
         VALUES ($1, 'Ada', 'Lovelace', 'ada.lovelace@example.com', 36, 'high', 'gold', 'moderate',
            'Austin', 'TX', 'US', '2025-08-03T09:15:00', $2, true, 'third_party_registration',
            'user_registrations_2025_08.csv', 2)",
    )
    .bind(user_id)
    .bind(vec!["groceries".to_string(), "travel".to_string()])
    .execute(&db.pool)
    .await
    .unwrap();
    let (categories, line): (Vec<String>, i64) = sqlx::query_as(
        "SELECT preferred_categories, source_line FROM users_raw WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(categories, ["groceries", "travel"]);
    assert_eq!(line, 2);
}
